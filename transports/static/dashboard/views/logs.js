// Logs (admins): pick a JSON log file from GET /logs, filter its records by
// minimum level and text (GET /logs/{file}?level=&search=, filtered by the
// broker), page through it by line number, and follow the newest records.
//
// There is no log subscription: while "Follow" is on and this view is shown,
// the page asks every two seconds for the records after the last line it has
// (`start` + `tail`), and every few ticks whether a newer hourly file began.

import { explain } from "../lib/api.js";
import { $, fmtInt, h, labelRow, setText, toast } from "../lib/dom.js";
import { COLORS, TimeChart } from "../lib/charts.js";

const PAGE = 100;
const FOLLOW_MS = 2000;
const FOLLOW_TAIL = 500;
const MAX_ROWS = 1000;
const FILES_EVERY = 5; // follow ticks between two looks at the file list
// Stacked bottom to top; loguru's TRACE counts as DEBUG and SUCCESS as INFO.
const LEVELS = [
  { name: "DEBUG", color: COLORS[7], swatch: "c7" },
  { name: "INFO", color: COLORS[0], swatch: "c0" },
  { name: "WARNING", color: COLORS[2], swatch: "c2" },
  { name: "ERROR", color: COLORS[3], swatch: "c3" },
  { name: "CRITICAL", color: COLORS[4], swatch: "c4" },
];
const SEVERITY = { TRACE: 5, DEBUG: 10, INFO: 20, SUCCESS: 25, WARNING: 30, ERROR: 40, CRITICAL: 50 };

function levelGroup(level) {
  let n = SEVERITY[level];
  if (n === undefined) {
    const match = /^Level (\d+)$/.exec(String(level));
    n = match ? Number(match[1]) : 20;
  }
  if (n >= 50) return 4;
  if (n >= 40) return 3;
  if (n >= 30) return 2;
  if (n >= 20) return 1;
  return 0;
}

export class LogsView {
  constructor(app) {
    this.app = app;
    this.visible = false;
    this.files = [];
    this.file = null;
    this.records = [];
    this.nextStart = null;
    this.truncated = false;
    this.follow = false;
    this.timer = null;
    this.ticks = 0;
    this.chart = null;
    this.request = 0;
    this.wire();
  }

  wire() {
    $("#log-file").addEventListener("change", (event) => {
      this.file = event.target.value || null;
      this.loadNewest();
    });
    $("#log-level").addEventListener("change", () => this.loadNewest());
    let debounce = null;
    $("#log-search").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.loadNewest(), 400);
    });
    $("#log-search").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        clearTimeout(debounce);
        this.loadNewest();
      }
    });
    $("#log-follow").addEventListener("change", (event) => {
      this.follow = event.target.checked;
      if (this.follow) {
        this.loadNewest().then(() => this.startFollowing());
      } else {
        this.stopFollowing();
      }
      this.renderPager();
    });
    $("#log-oldest").addEventListener("click", () => this.load({ start: 1, limit: PAGE }));
    $("#log-newest").addEventListener("click", () => this.loadNewest());
    $("#log-older").addEventListener("click", () => {
      const first = this.records[0]?.line_number;
      if (first > 1) this.load({ end: first - 1, tail: PAGE });
    });
    $("#log-newer").addEventListener("click", () => this.loadNewer());
  }

  async show() {
    this.visible = true;
    if (!this.chart) {
      this.chart = new TimeChart(
        $("#chart-logs"),
        [...LEVELS].reverse().map((l) => ({ label: l.name, color: l.color })),
        { height: 160, kind: "bars", bucketS: 60 },
      );
    }
    await this.loadFiles();
    if (this.file && !this.loaded) await this.loadNewest();
    if (this.follow) this.startFollowing();
  }

  hide() {
    this.visible = false;
    this.stopFollowing();
  }

  destroy() {
    this.hide();
    this.chart?.destroy();
    this.chart = null;
  }

  async loadFiles() {
    try {
      this.files = await this.app.session.request("GET", "/logs");
    } catch (error) {
      toast(`could not list log files: ${explain(error)}`, "error");
      return;
    }
    const select = $("#log-file");
    if (!this.file || !this.files.some((f) => f.name === this.file)) this.file = this.files[0]?.name ?? null;
    select.replaceChildren(
      ...this.files.map((f) => h("option", { value: f.name, selected: f.name === this.file }, `${f.name} (${fmtInt(Math.ceil(f.size_bytes / 1024))} KiB)`)),
    );
    if (!this.files.length) select.append(h("option", { value: "" }, "no log files"));
    select.value = this.file ?? "";
    if (!this.file) this.display([], false, null);
  }

  filters() {
    return { level: $("#log-level").value, search: $("#log-search").value.trim() };
  }

  loadNewest() {
    return this.load({ tail: PAGE });
  }

  async loadNewer() {
    const last = this.records[this.records.length - 1]?.line_number ?? 0;
    const start = this.nextStart ?? last + 1;
    const page = await this.fetch({ start, limit: PAGE });
    if (!page) return;
    if (!page.records.length) {
      toast("no newer records");
      return;
    }
    this.display(page.records, page.truncated, page.next_start);
  }

  async load(range) {
    const page = await this.fetch(range);
    if (page) this.display(page.records, page.truncated, page.next_start ?? null);
  }

  /** GET one page of the selected file; null when it failed or a later request superseded it. */
  async fetch(range) {
    if (!this.file) return null;
    const id = ++this.request;
    const file = this.file;
    try {
      const page = await this.app.session.request("GET", `/logs/${encodeURIComponent(file)}`, {
        query: { ...this.filters(), ...range },
      });
      return id === this.request && file === this.file ? page : null;
    } catch (error) {
      if (id === this.request) toast(`could not read ${file}: ${explain(error)}`, "error");
      return null;
    }
  }

  display(records, truncated, nextStart) {
    this.loaded = true;
    this.records = records;
    this.truncated = truncated;
    this.nextStart = nextStart;
    $("#log-table tbody").replaceChildren(...records.map((r) => this.row(r)));
    this.renderAll();
    if (this.follow) this.scrollToEnd();
  }

  renderAll() {
    $("#logs-empty").hidden = this.records.length > 0;
    this.renderPager();
    this.renderChart();
  }

  renderPager() {
    const first = this.records[0]?.line_number;
    const last = this.records[this.records.length - 1]?.line_number;
    $("#log-older").disabled = this.follow || !(first > 1);
    $("#log-oldest").disabled = this.follow || !this.file;
    $("#log-newer").disabled = this.follow || !this.file;
    $("#log-newest").disabled = this.follow || !this.file;
    setText(
      $("#log-range"),
      this.records.length ? `lines ${fmtInt(first)}–${fmtInt(last)} · ${fmtInt(this.records.length)} records` : "",
    );
  }

  row(record) {
    const time = record.time ? new Date(record.time) : null;
    const context = [record.logger, record.extra && Object.keys(record.extra).length ? JSON.stringify(record.extra) : null]
      .filter(Boolean)
      .join(" ");
    const message = h("td", { class: "msg" }, String(record.message ?? ""));
    if (record.exception) {
      message.append(h("details", null, h("summary", null, "exception"), h("pre", null, String(record.exception))));
    }
    const tr = h(
      "tr",
      { dataset: { line: record.line_number, level: record.level } },
      h("td", { class: "num" }, String(record.line_number)),
      h("td", { title: record.time ?? "" }, time && !Number.isNaN(time.getTime()) ? time.toLocaleTimeString() : ""),
      h("td", null, h("span", { class: `badge ${record.level}` }, String(record.level ?? ""))),
      message,
      h("td", { class: "ctx" }, context),
    );
    return labelRow($("#log-table"), tr);
  }

  renderChart() {
    const buckets = new Map();
    const totals = LEVELS.map(() => 0);
    for (const record of this.records) {
      const t = Date.parse(record.time);
      if (Number.isNaN(t)) continue;
      const minute = Math.floor(t / 60000) * 60;
      let counts = buckets.get(minute);
      if (!counts) buckets.set(minute, (counts = LEVELS.map(() => 0)));
      const group = levelGroup(record.level);
      counts[group] += 1;
      totals[group] += 1;
    }
    const minutes = [...buckets.keys()].sort((a, b) => a - b);
    const xs = [];
    if (minutes.length) {
      const from = minutes[0];
      const to = minutes[minutes.length - 1];
      const step = Math.max(60, Math.ceil((to - from) / 60 / 1440) * 60);
      for (let m = from; m <= to; m += step) xs.push(m);
    }
    // Stacked by drawing cumulative sums, tallest first (series are CRITICAL ... DEBUG).
    const stacks = LEVELS.map(() => []);
    for (const x of xs) {
      const counts = buckets.get(x) ?? LEVELS.map(() => 0);
      let sum = 0;
      counts.forEach((n, i) => {
        sum += n;
        stacks[i].push(sum);
      });
    }
    if (this.chart) this.chart.setData([xs, ...stacks.reverse()]);
    $("#logs-now").replaceChildren(
      ...LEVELS.map((l, i) =>
        h("span", { class: "readout", dataset: { level: l.name } }, h("span", { class: `swatch ${l.swatch}` }), `${l.name} `, h("b", null, fmtInt(totals[i]))),
      ),
    );
  }

  scrollToEnd() {
    const box = $("#log-scroll");
    box.scrollTop = box.scrollHeight;
  }

  // -- follow ------------------------------------------------------------------

  startFollowing() {
    if (this.timer !== null || !this.visible || !this.follow) return;
    this.timer = setTimeout(() => this.tick(), FOLLOW_MS);
  }

  stopFollowing() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  async tick() {
    this.timer = null;
    if (!this.visible || !this.follow) return;
    this.ticks += 1;
    try {
      if (this.ticks % FILES_EVERY === 0) await this.switchToNewerFile();
      await this.pollNewRecords();
    } finally {
      this.startFollowing();
    }
  }

  async switchToNewerFile() {
    const newest = this.files[0]?.name;
    await this.loadFiles();
    if (this.files[0] && this.files[0].name !== newest && newest === this.file) {
      this.file = this.files[0].name;
      $("#log-file").value = this.file;
      await this.loadNewest();
    }
  }

  async pollNewRecords() {
    const last = this.records[this.records.length - 1]?.line_number;
    const page = await this.fetch(last ? { start: last + 1, tail: FOLLOW_TAIL } : { tail: PAGE });
    if (!page || !page.records.length) return;
    const body = $("#log-table tbody");
    body.append(...page.records.map((r) => this.row(r)));
    this.records.push(...page.records);
    const excess = this.records.length - MAX_ROWS;
    if (excess > 0) {
      this.records.splice(0, excess);
      for (let i = 0; i < excess; i += 1) body.firstElementChild?.remove();
    }
    this.renderAll();
    this.scrollToEnd();
  }
}
