// Overview: the /stats figures at a glance and live charts, fed by the
// GraphQL `stats` subscription (one snapshot a second, pushed by the broker).
//
// The rate chart plots the broker's own rates (brokerSpecific.rates: a
// moving average over its last minute); the depth chart plots each visible
// queue's pending count. Ten minutes of snapshots are kept in memory.

import { $, fmtBytes, fmtInt, fmtPercent, fmtRate, fmtTime, h, setText } from "../lib/dom.js";
import { COLORS, TimeChart } from "../lib/charts.js";

const HISTORY = 600; // points: ten minutes at one snapshot a second
const MAX_DEPTH_SERIES = 8;
const RATE_SERIES = [
  { key: "publishPerS", label: "publish", color: COLORS[0] },
  { key: "deliverPerS", label: "deliver", color: COLORS[1] },
  { key: "ackPerS", label: "ack", color: COLORS[2] },
  { key: "nackPerS", label: "nack", color: COLORS[3] },
];

function card(key, title) {
  const value = h("div", { class: "value" }, "–");
  const detail = h("div", { class: "detail" });
  const el = h("article", { class: "card kpi", dataset: { kpi: key } }, h("h3", null, title), value, detail);
  return { el, value, detail };
}

function pair(key, label) {
  const value = h("b", { dataset: { kpi: key } }, "–");
  return { el: h("span", null, `${label} `, value), value };
}

export class OverviewView {
  constructor() {
    this.visible = false;
    this.times = [];
    this.rates = RATE_SERIES.map(() => []);
    this.depths = new Map(); // queue -> pending per snapshot (null where it did not exist)
    this.lastRequests = null;
    this.rateChart = null;
    this.depthChart = null;
    this.depthNames = [];
    this.buildCards();
  }

  buildCards() {
    const root = $("#kpis");
    this.cards = {
      uptime: card("uptime", "Uptime"),
      requests: card("requests", "Requests"),
      errors: card("errors", "Error rate"),
      messages: card("messages", "Messages"),
      queues: card("queues", "Queues"),
      process: card("process", "Broker process"),
      host: card("host", "Host"),
      storage: card("storage", "Storage"),
    };
    const statuses = ["pending", "processing", "processed", "failed"].map((s) => pair(s, s));
    this.statusPairs = Object.fromEntries(statuses.map((p, i) => [["pending", "processing", "processed", "failed"][i], p]));
    this.cards.messages.detail.classList.add("split");
    this.cards.messages.detail.append(...statuses.map((p) => p.el));
    root.replaceChildren(...Object.values(this.cards).map((c) => c.el));
  }

  show() {
    this.visible = true;
    if (!this.rateChart) {
      this.rateChart = new TimeChart($("#chart-rates"), RATE_SERIES, { unit: "/s" });
      this.depthChart = new TimeChart($("#chart-depth"), []);
      this.buildReadouts();
    }
    this.render();
  }

  hide() {
    this.visible = false;
  }

  destroy() {
    this.rateChart?.destroy();
    this.depthChart?.destroy();
    this.rateChart = this.depthChart = null;
  }

  /** A snapshot from the `stats` subscription (called whether shown or not). */
  onStats(stats) {
    const now = Date.now() / 1000;
    const requestRate = this.requestRate(stats.requestsTotal, now);
    this.stats = stats;
    this.requestsPerS = requestRate;
    this.times.push(now);
    const rates = stats.brokerSpecific.rates;
    RATE_SERIES.forEach((s, i) => this.rates[i].push(rates[s.key]));
    const present = new Map(stats.brokerSpecific.queues.map((q) => [q.name, q.pending]));
    for (const [name, pending] of present) {
      if (!this.depths.has(name)) this.depths.set(name, new Array(this.times.length - 1).fill(null));
      this.depths.get(name).push(pending);
    }
    for (const [name, series] of this.depths) {
      if (!present.has(name)) series.push(null);
    }
    if (this.times.length > HISTORY) {
      const drop = this.times.length - HISTORY;
      this.times.splice(0, drop);
      this.rates.forEach((series) => series.splice(0, drop));
      for (const [name, series] of this.depths) {
        series.splice(0, drop);
        if (series.every((v) => v === null)) this.depths.delete(name);
      }
    }
    if (this.visible) this.render();
  }

  requestRate(total, now) {
    const last = this.lastRequests;
    this.lastRequests = { total, now };
    if (!last || now <= last.now) return this.requestsPerS ?? null;
    // The snapshot counts the requests before it; a snapshot isn't a request.
    return Math.max(0, (total - last.total) / (now - last.now));
  }

  render() {
    const s = this.stats;
    if (!s) return;
    this.renderCards(s);
    this.renderCharts();
  }

  renderCards(s) {
    const c = this.cards;
    setText(c.uptime.value, s.uptimeHuman);
    setText(c.uptime.detail, `since ${fmtTime(s.startTime)} · wsbroker ${s.brokerSpecific.version}`);

    setText(c.requests.value, fmtInt(s.requestsTotal));
    setText(c.requests.detail, `${fmtRate(this.requestsPerS)} requests/s now`);

    let server = 0;
    let client = 0;
    for (const [status, count] of Object.entries(s.requestsByStatus ?? {})) {
      const code = Number(status);
      if (code >= 500) server += count;
      else if (code >= 400) client += count;
    }
    const total = s.requestsTotal || 0;
    const share = (n) => (total ? (100 * n) / total : 0);
    setText(c.errors.value, fmtPercent(share(server)));
    const lastError = s.lastError ? ` · last: ${s.lastError} (${fmtTime(s.lastErrorTimestamp)})` : "";
    setText(
      c.errors.detail,
      `5xx ${fmtInt(server)} · 4xx ${fmtInt(client)} (${fmtPercent(share(client))}) of all requests${lastError}`,
    );
    c.errors.el.classList.toggle("bad", server > 0);

    setText(c.messages.value, fmtInt(s.messagesTotal));
    setText(this.statusPairs.pending.value, fmtInt(s.messagesPending));
    setText(this.statusPairs.processing.value, fmtInt(s.messagesProcessing));
    setText(this.statusPairs.processed.value, fmtInt(s.messagesProcessed));
    setText(this.statusPairs.failed.value, fmtInt(s.messagesFailed));

    setText(c.queues.value, fmtInt(s.queuesTotal));
    const seen = s.brokerSpecific.queues.length;
    setText(
      c.queues.detail,
      `${seen === s.queuesTotal ? "all" : fmtInt(seen)} visible to you · ${fmtInt(s.brokerSpecific.consumers)} push consumers on them`,
    );

    const sys = s.system;
    setText(c.process.value, `${fmtPercent(sys.processCpuPercent)} CPU`);
    const extras = [
      `RSS ${fmtBytes(sys.memoryRssBytes)} (${fmtPercent(sys.memoryPercent)} of host)`,
      `${fmtInt(sys.threads)} threads`,
    ];
    if (sys.openFiles !== null && sys.openFiles !== undefined) extras.push(`${fmtInt(sys.openFiles)} fds`);
    if (sys.openConnections !== null && sys.openConnections !== undefined) {
      extras.push(`${fmtInt(sys.openConnections)} sockets`);
    }
    setText(c.process.detail, extras.join(" · "));

    setText(c.host.value, `${fmtPercent(sys.hostCpuPercent)} CPU`);
    setText(
      c.host.detail,
      `${fmtInt(sys.cpuCount)} cores · memory ${fmtPercent(sys.hostMemoryPercent)} of ${fmtBytes(sys.hostMemoryTotalBytes)}` +
        ` · disk ${fmtPercent(sys.diskPercent)} of ${fmtBytes(sys.diskTotalBytes)}`,
    );

    const st = s.brokerSpecific.storage;
    setText(c.storage.value, st.backend);
    const degraded = st.degraded ? ` · DEGRADED: ${st.degraded}` : "";
    setText(
      c.storage.detail,
      `${fmtBytes(st.sizeBytes)} · ${fmtInt(st.batches)} commits of ${fmtInt(st.ops)} ops · ${fmtInt(st.failures)} failures${degraded}`,
    );
    c.storage.el.classList.toggle("bad", Boolean(st.degraded));
  }

  buildReadouts() {
    this.rateReadouts = RATE_SERIES.map((s, i) => {
      const value = h("b", null, "–");
      $("#rates-now").append(
        h("span", { class: "readout", dataset: { series: s.label } }, h("span", { class: `swatch c${i}` }), `${s.label} `, value, "/s"),
      );
      return value;
    });
  }

  renderCharts() {
    if (!this.rateChart) return;
    this.rateChart.setData([this.times.slice(), ...this.rates.map((r) => r.slice())]);
    const last = this.rates.map((r) => r[r.length - 1]);
    this.rateReadouts.forEach((el, i) => setText(el, fmtRate(last[i])));

    const names = this.pickDepthNames();
    if (names.join("\u0000") !== this.depthNames.join("\u0000")) {
      this.depthNames = names;
      this.depthChart.setSeries(names.map((name, i) => ({ label: name, color: COLORS[i % COLORS.length] })));
      const readouts = $("#depth-now");
      this.depthReadouts = names.map((name, i) => {
        const value = h("b", null, "–");
        return { name, value, el: h("span", { class: "readout", dataset: { queue: name } }, h("span", { class: `swatch c${i}` }), `${name} `, value) };
      });
      readouts.replaceChildren(...this.depthReadouts.map((r) => r.el));
    }
    this.depthChart.setData([this.times.slice(), ...names.map((name) => this.depths.get(name).slice())]);
    for (const readout of this.depthReadouts ?? []) {
      const series = this.depths.get(readout.name);
      setText(readout.value, fmtInt(series[series.length - 1]));
    }
  }

  /** The queues on the depth chart: all while few, else the deepest of the window. */
  pickDepthNames() {
    const current = this.stats ? this.stats.brokerSpecific.queues.map((q) => q.name) : [];
    const live = [...this.depths.keys()].filter((name) => current.includes(name));
    if (live.length <= MAX_DEPTH_SERIES) return live.sort();
    const peak = (name) => Math.max(...this.depths.get(name).map((v) => v ?? 0));
    return live
      .sort((a, b) => peak(b) - peak(a) || (a < b ? -1 : 1))
      .slice(0, MAX_DEPTH_SERIES)
      .sort();
  }
}
