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

export function sensorChart(sensor: string): SensorChart {
  const plotBox = h('div', { class: 'plot' })
  const el = h('figure', { class: 'chart', 'data-sensor': sensor, 'data-points': '0' }, h('figcaption', {}, sensor), plotBox)
  let xs: number[] = []
  let ys: number[] = []
  let plot: uPlotType | undefined

  const width = () => Math.max(240, plotBox.clientWidth || 600)
  function draw(): void {
    el.dataset.points = String(xs.length)
    const data: uPlotType.AlignedData = [xs.map((t) => t / 1000), ys]
    if (plot) {
      plot.setData(data)
      return
    }
    plot = new uPlot({
      width: width(), height: 180,
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      series: [{}, { label: sensor, stroke: '#2563eb', width: 1.5, points: { show: xs.length < 120 } }],
      axes: [{ stroke: '#64748b' }, { stroke: '#64748b', size: 56 }],
    }, data, plotBox)
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
