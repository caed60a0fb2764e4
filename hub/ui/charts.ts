import type uPlotType from 'uplot'
import { clock, day, h, when } from './dom.js'

/**
 * One time-series chart per sensor, drawn by uPlot (loaded by index.html as
 * a classic script: 50 kB, canvas, fast with tens of thousands of points).
 * The container carries `data-points`, the number of points drawn, and
 * `data-unit`, the unit shown, which the browser test reads.
 *
 * The unit is the one the device declared in its birth (docs/protocol.md):
 * in the caption and on every tick of the value axis. Times on the time axis
 * are 24-hour local, as everywhere in the dashboard (dom.ts). Instead of
 * uPlot's legend, which reads "--" until the pointer is over the plot, the
 * caption shows the latest value, or the one under the pointer.
 */

const uPlot = (window as unknown as { uPlot: typeof uPlotType }).uPlot

export interface SensorChart {
  readonly el: HTMLElement
  /** Replaces the series: times in ms, values. */
  set(ts: readonly number[], values: readonly number[]): void
  /** Adds points (any order; kept sorted) and drops those before `fromMs`. */
  add(points: ReadonlyArray<{ ts: number; value: number }>, fromMs: number): void
  dispose(): void
}

/** How a unit is shown: values times `factor`, followed by `suffix`; `label` goes in the caption. */
interface UnitDisplay { readonly factor: number; readonly suffix: string; readonly label: string }

/**
 * A declared unit as people read it:
 * - `ratio` (a fraction 0..1, e.g. the agent's mem.used) as a percentage;
 * - a symbol (up to 3 characters: `°C`, `%`, `hPa`, `s`) in the caption and
 *   after every value, on the axis and in the readout; `%` and `°C` hug the
 *   number, others get a space;
 * - a word (`load`, `requests`) in the caption only: "7 load" on an axis
 *   reads as a typo;
 * - no unit, nothing.
 */
export function unitDisplay(unit: string | undefined): UnitDisplay {
  if (unit === undefined || unit === '') return { factor: 1, suffix: '', label: '' }
  if (unit === 'ratio') return { factor: 100, suffix: '%', label: '%' }
  if (unit.length > 3) return { factor: 1, suffix: '', label: unit }
  return { factor: 1, suffix: unit === '%' || unit.startsWith('°') ? unit : ` ${unit}`, label: unit }
}

/** uPlot's axis font (its default), to measure tick labels with. */
const AXIS_FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif'
let measurer: CanvasRenderingContext2D | null | undefined
function textWidth(s: string): number {
  if (measurer === undefined) {
    measurer = document.createElement('canvas').getContext('2d')
    if (measurer) measurer.font = AXIS_FONT
  }
  return measurer ? measurer.measureText(s).width : 7 * s.length
}

/** Digits after the point that tell ticks `step` apart: the step's own (0.05 → 2, 2.5 → 1, 5 → 0). */
function decimalsFor(step: number): number {
  if (!(step > 0) || !Number.isFinite(step)) return 2
  const s = String(Number(step.toPrecision(10)))
  if (s.includes('e')) return 6
  const dot = s.indexOf('.')
  return dot < 0 ? 0 : Math.min(6, s.length - dot - 1)
}

const formats = new Map<number, Intl.NumberFormat>()
function num(v: number, decimals: number): string {
  let f = formats.get(decimals)
  if (!f) formats.set(decimals, f = new Intl.NumberFormat(undefined, { minimumFractionDigits: 0, maximumFractionDigits: decimals }))
  return f.format(v)
}

/** A reading with about 3 significant digits, never in exponent notation. */
function reading(v: number): string {
  const a = Math.abs(v)
  return num(v, a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3)
}

/**
 * Time-axis ticks, 24-hour local: `HH:MM` (`HH:MM:SS` when ticks are under a
 * minute apart), with the date `YYYY-MM-DD` under the first tick and wherever
 * the day changes; ticks a day or more apart show `MM-DD`, the year under the first.
 */
function timeTicks(_u: uPlotType, splits: number[], _axis: number, _space: number, incrS: number): string[] {
  let prevDay = ''
  return splits.map((s, i) => {
    const d = new Date(s * 1000)
    const dd = day(d)
    const newDay = i === 0 || dd !== prevDay
    prevDay = dd
    if (incrS >= 86_400) return i === 0 ? `${dd.slice(5)}\n${dd.slice(0, 4)}` : dd.slice(5)
    const t = clock(d, incrS < 60)
    return newDay ? `${t}\n${dd}` : t
  })
}

/**
 * `window` gives the time span the x axis shows (ms), so a chart covers the
 * chosen range even where there is no data yet, and moves with the clock.
 */
export function sensorChart(sensor: string, unit: string | undefined, window: () => { from: number; to: number }): SensorChart {
  const u = unitDisplay(unit)
  const plotBox = h('div', { class: 'plot' })
  const readout = h('span', { class: 'readout muted' })
  const el = h('figure', { class: 'chart', 'data-sensor': sensor, 'data-points': '0', 'data-unit': u.label },
    h('figcaption', {}, h('span', { class: 'sensor' }, sensor), u.label ? h('span', { class: 'unit' }, ` (${u.label})`) : null, readout),
    plotBox)
  let xs: number[] = []
  let ys: number[] = []
  let plot: uPlotType | undefined
  // While the user has zoomed in (dragged a selection), new data keeps the zoom; a double-click ends it.
  let zoomed = false

  const width = () => Math.max(240, plotBox.clientWidth || 600)
  function showWindow(): void {
    if (!plot || zoomed) return
    const w = window()
    // The chosen range, not the data's extent: a device minutes old does not stretch "7 days" over years.
    plot.setScale('x', { min: w.from / 1000, max: w.to / 1000 })
  }
  /** The point under the pointer, else the latest; none before the first point. */
  function showReadout(idx: number | null | undefined): void {
    const i = idx ?? xs.length - 1
    const t = xs[i]
    const v = ys[i]
    if (t === undefined || v === undefined) {
      readout.textContent = ''
      return
    }
    readout.textContent = `${idx === null || idx === undefined ? 'latest ' : ''}${reading(v * u.factor)}${u.suffix} at ${when(t)}`
  }
  function draw(): void {
    el.dataset.points = String(xs.length)
    const data: uPlotType.AlignedData = [xs.map((t) => t / 1000), u.factor === 1 ? ys : ys.map((v) => v * u.factor)]
    if (plot) {
      plot.setData(data, false)
      showWindow()
      showReadout(plot.cursor.idx)
      return
    }
    plot = new uPlot({
      width: width(), height: 180,
      legend: { show: false },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      series: [{}, { label: sensor, stroke: '#2563eb', width: 1.5, points: { show: xs.length < 120 } }],
      axes: [
        { stroke: '#64748b', space: 70, values: timeTicks },
        {
          stroke: '#64748b',
          values: (_self, splits, _axis, _space, incr) => splits.map((v) => `${num(v, decimalsFor(incr))}${u.suffix}`),
          // As wide as the longest tick label, so "12,345 kWh" fits: the label, uPlot's gap (5) and tick (10), a margin.
          size: (_self, values) => Math.max(40, Math.ceil(Math.max(0, ...(values ?? []).map(textWidth))) + 20),
        },
      ],
      hooks: {
        // A drag that selects a span zooms into it (uPlot's default); only the user makes one.
        setSelect: [(p) => { if (p.select.width > 0) zoomed = true }],
        setCursor: [(p) => { showReadout(p.cursor.idx) }],
      },
    }, data, plotBox)
    // uPlot's own double-click (zoom out) runs first; then the chart goes back to following the range.
    plot.over.addEventListener('dblclick', () => {
      zoomed = false
      showWindow()
    })
    showWindow()
    showReadout(undefined)
  }
  const resize = new ResizeObserver(() => plot?.setSize({ width: width(), height: 180 }))
  resize.observe(plotBox)

  return {
    el,
    set(ts, values) {
      xs = [...ts]
      ys = [...values]
      draw()
    },
    add(points, fromMs) {
      if (points.length === 0) return
      const merged = xs.map((t, i) => ({ ts: t, value: ys[i]! })).concat(points).filter((p) => p.ts >= fromMs)
      // Late samples (a device that was offline) land in their place, not at the end.
      if (points.some((p, i) => p.ts < (i === 0 ? (xs[xs.length - 1] ?? -Infinity) : points[i - 1]!.ts))) merged.sort((a, b) => a.ts - b.ts)
      xs = merged.map((p) => p.ts)
      ys = merged.map((p) => p.value)
      draw()
    },
    dispose() {
      resize.disconnect()
      plot?.destroy()
    },
  }
}
