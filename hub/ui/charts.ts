import type uPlotType from 'uplot'
import { h } from './dom.js'

/**
 * One time-series chart per sensor, drawn by uPlot (loaded by index.html as
 * a classic script: 50 kB, canvas, fast with tens of thousands of points).
 * The container carries `data-points`, the number of points drawn, which the
 * browser test reads.
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

/**
 * `window` gives the time span the x axis shows (ms), so a chart covers the
 * chosen range even where there is no data yet, and moves with the clock.
 */
export function sensorChart(sensor: string, window: () => { from: number; to: number }): SensorChart {
  const plotBox = h('div', { class: 'plot' })
  const el = h('figure', { class: 'chart', 'data-sensor': sensor, 'data-points': '0' }, h('figcaption', {}, sensor), plotBox)
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
  function draw(): void {
    el.dataset.points = String(xs.length)
    const data: uPlotType.AlignedData = [xs.map((t) => t / 1000), ys]
    if (plot) {
      plot.setData(data, false)
      showWindow()
      return
    }
    plot = new uPlot({
      width: width(), height: 180,
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      series: [{ value: '{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}' }, { label: 'value', stroke: '#2563eb', width: 1.5, points: { show: xs.length < 120 } }],
      axes: [{ stroke: '#64748b' }, { stroke: '#64748b', size: 56 }],
      // A drag that selects a span zooms into it (uPlot's default); only the user makes one.
      hooks: { setSelect: [(u) => { if (u.select.width > 0) zoomed = true }] },
    }, data, plotBox)
    // uPlot's own double-click (zoom out) runs first; then the chart goes back to following the range.
    plot.over.addEventListener('dblclick', () => {
      zoomed = false
      showWindow()
    })
    showWindow()
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
