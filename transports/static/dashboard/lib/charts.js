// Time-series charts on the vendored uPlot (vendor/uplot, MIT): small, fast
// on canvas, and CSP-clean (no eval, no inline styles in markup).

export const COLORS = ["#2f6fde", "#23855b", "#b7791f", "#c2352b", "#7b4fd6", "#1c9aa8", "#d0578f", "#6b7280"];

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * A chart over time (x in Unix seconds) that follows its container's width.
 * series: [{label, color}]; kind "line" or "bars" (bars: one per `bucketS`).
 */
export class TimeChart {
  constructor(container, series, { height = 220, kind = "line", bucketS = 60, unit = "" } = {}) {
    this.container = container;
    this.height = height;
    this.kind = kind;
    this.bucketS = bucketS;
    this.unit = unit;
    this.plot = null;
    this.data = null;
    this.series = series;
    this.observer = new ResizeObserver(() => this.fit());
    this.observer.observe(container);
    this.build();
  }

  build() {
    if (this.plot) this.plot.destroy();
    const muted = cssVar("--muted", "#667085");
    const line = cssVar("--line", "#dde1e8");
    const axis = { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    const bars = this.kind === "bars" ? uPlot.paths.bars({ size: [0.8, 48], align: 0 }) : null;
    const half = this.bucketS / 2;
    const options = {
      width: Math.max(this.container.clientWidth, 200),
      height: this.height,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: {
          time: true,
          // Bars get half a bucket of room each side; lines show at least a minute.
          range: (u, min, max) => {
            if (min === null || max === null) {
              const now = Date.now() / 1000;
              return [now - 60, now];
            }
            return bars ? [min - half, max + half] : [Math.min(min, max - 60), max];
          },
        },
        y: { range: (u, min, max) => [0, Math.max(1, (max ?? 0) * 1.15)] },
      },
      axes: [
        // Bars count per bucket: ticks on whole buckets, and whole counts.
        bars ? { ...axis, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 360, 720].map((n) => n * this.bucketS) } : axis,
        {
          ...axis,
          size: 56,
          incrs: bars ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] : undefined,
          values: (u, ticks) => ticks.map((v) => shortNumber(v) + this.unit),
        },
      ],
      series: [
        {},
        ...this.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: bars ? 0 : 2,
          fill: bars ? s.color : undefined,
          paths: bars ?? undefined,
          points: { show: false },
          spanGaps: false,
        })),
      ],
    };
    const empty = [[], ...this.series.map(() => [])];
    this.plot = new uPlot(options, this.data ?? empty, this.container);
    this.container.dataset.series = this.series.map((s) => s.label).join(",");
  }

  /** Replace the series (labels and colors); the chart is built again. */
  setSeries(series) {
    this.series = series;
    this.data = null;
    this.build();
  }

  /** data: [xs, ys of series 0, ys of series 1, ...], as uPlot takes it. */
  setData(data) {
    this.data = data;
    this.container.dataset.points = String(data[0].length);
    this.plot.setData(data);
  }

  fit() {
    const width = this.container.clientWidth;
    if (this.plot && width > 0 && width !== this.plot.width) {
      this.plot.setSize({ width, height: this.height });
    }
  }

  destroy() {
    this.observer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

function shortNumber(value) {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${+(value / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  return `${+value.toFixed(2)}`;
}
