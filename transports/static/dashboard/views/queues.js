// Queues: the table of the queues the user can see, the queue actions their
// permissions allow, and one queue's detail (publish a test message, browse
// its messages by status, retry or redrive failed and dead-lettered ones).
//
// Live: the `stats` subscription refreshes the counts every second (and, from
// consecutive snapshots, each queue's rates over the last ten seconds); while
// this view is shown, the `queueEvents` subscription triggers a fresh
// GET /queues (at most twice a second) when queues appear, change or vanish.

import { explain } from "../lib/api.js";
import { toggleTimeline } from "./timeline.js";
import {
  $,
  $$,
  confirmDialog,
  fmtInt,
  fmtRate,
  fmtTime,
  h,
  labelRow,
  preview,
  setText,
  throttle,
  toast,
} from "../lib/dom.js";
import { SchedulesPanel } from "./schedules.js";

const PAGE_SIZE = 25;
const RATE_WINDOW = 11; // snapshots: rates over the last ten seconds
const EVENTS_QUERY = "subscription QueueEvents { queueEvents { type queue at messageId detail missed } }";
const COUNT_FIELDS = ["pending", "processing", "processed", "failed", "delayed", "consumers"];

export function optionsText(q) {
  const parts = [`lease ${q.lease}s`];
  if (q.max_attempts) parts.push(`max ${q.max_attempts} attempts`);
  if (q.dead_letter_queue) parts.push(`DLQ ${q.dead_letter_queue}`);
  if (q.message_ttl_ms) parts.push(`TTL ${fmtInt(q.message_ttl_ms)} ms`);
  if (q.max_length) parts.push(`max ${fmtInt(q.max_length)} msgs`);
  if (q.max_bytes) parts.push(`max ${fmtInt(q.max_bytes)} B`);
  if (q.max_length || q.max_bytes) parts.push(q.overflow === "drop_head" ? "drops head" : "rejects when full");
  if (q.retry) parts.push(retryText(q.retry));
  if (q.paused) parts.push(q.paused_until ? `paused until ${fmtTime(q.paused_until)}` : "paused");
  if (q.group_concurrency > 1) parts.push(`${q.group_concurrency} per group`);
  if (q.single_active_consumer) parts.push("single active consumer");
  if (q.groups) {
    // The largest groups' backlogs: where one key piles up.
    const largest = Object.entries(q.largest_groups ?? {}).slice(0, 5);
    parts.push(`${fmtInt(q.groups)} groups (${largest.map(([g, n]) => `${g}: ${fmtInt(n)}`).join(", ")})`);
  }
  return parts.join(" · ");
}

// The retry policy in a few words: "retry exponential 1000-600000 ms ×2 ±10% on nack, expired".
export function retryText(r) {
  const growth = r.backoff === "exponential" ? ` ×${r.multiplier}` : "";
  const range = r.backoff === "fixed" ? `${fmtInt(r.min_ms)} ms` : `${fmtInt(r.min_ms)}-${fmtInt(r.max_ms)} ms`;
  const jitter = r.jitter ? ` ±${Math.round(r.jitter * 100)}%` : "";
  return `retry ${r.backoff} ${range}${growth}${jitter} on ${r.on.join(", ")}`;
}

const queuePath = (name) => `/queues/${encodeURIComponent(name)}`;

export class QueuesView {
  constructor(app) {
    this.app = app;
    this.visible = false;
    this.queues = new Map(); // name -> QueueInfo (REST), counts refreshed from stats
    this.samples = new Map(); // name -> [{t, published, delivered, acked}]
    this.rows = new Map(); // name -> {tr, cells}
    this.order = "";
    this.filter = "";
    this.selected = null;
    this.status = "";
    this.cursors = [null];
    this.pageIndex = 0;
    this.nextCursor = null;
    this.unsubscribe = null;
    this.fetching = null;
    this.refetchSoon = throttle(() => this.refetch(), 500);
    this.reloadMessagesSoon = throttle(() => {
      if (this.selected && this.pageIndex === 0) this.loadMessages();
    }, 1500);
    this.wire();
    this.schedules = new SchedulesPanel(app);
  }

  get perms() {
    return this.app.perms;
  }

  wire() {
    $("#create-queue").hidden = !this.perms.any("manage");
    $("#create-queue-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create(event.target);
    });
    $("#queue-filter").addEventListener("input", (event) => {
      this.filter = event.target.value.trim().toLowerCase();
      this.renderTable();
    });
    $("#publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.publish(event.target);
    });
    for (const button of $$("#status-filter button")) {
      button.addEventListener("click", () => {
        this.status = button.dataset.status;
        for (const other of $$("#status-filter button")) {
          other.setAttribute("aria-pressed", String(other === button));
        }
        this.resetPages();
        this.loadMessages();
      });
    }
    $("#browse-refresh").addEventListener("click", () => this.loadMessages());
    $("#redrive").addEventListener("click", () => this.redrive());
    $("#page-next").addEventListener("click", () => {
      if (this.nextCursor === null) return;
      this.cursors = this.cursors.slice(0, this.pageIndex + 1);
      this.cursors.push(this.nextCursor);
      this.pageIndex += 1;
      this.loadMessages();
    });
    $("#page-prev").addEventListener("click", () => {
      if (this.pageIndex === 0) return;
      this.pageIndex -= 1;
      this.loadMessages();
    });
  }

  show(param) {
    this.visible = true;
    if (!this.unsubscribe) this.subscribeEvents();
    this.refetch();
    this.select(param ?? null);
  }

  hide() {
    this.visible = false;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  destroy() {
    this.hide();
  }

  subscribeEvents() {
    this.unsubscribe = this.app.socket.subscribe(EVENTS_QUERY, {}, {
      next: (data) => this.onEvent(data.queueEvents),
      error: () => {
        // Refused (rate limited, say): try again in a while if still shown.
        this.unsubscribe = null;
        setTimeout(() => {
          if (this.visible && !this.unsubscribe) this.subscribeEvents();
        }, 5000);
      },
    });
  }

  onEvent(event) {
    this.refetchSoon();
    if (event.queue !== this.selected) return;
    if (event.type === "queue_deleted") {
      toast(`queue ${event.queue} was deleted`);
      location.hash = "#/queues";
    } else {
      this.reloadMessagesSoon();
    }
  }

  /** GET /queues, one at a time; a call while one runs queues one more. */
  async refetch() {
    if (this.fetching) {
      this.fetchAgain = true;
      return this.fetching;
    }
    this.fetching = (async () => {
      try {
        const list = await this.app.session.request("GET", "/queues");
        const fresh = new Map(list.map((q) => [q.name, q]));
        this.queues = fresh;
        for (const name of this.samples.keys()) if (!fresh.has(name)) this.samples.delete(name);
        this.renderTable();
        this.renderDetailHead();
      } catch (error) {
        if (this.visible) toast(`could not list queues: ${explain(error)}`, "error");
      } finally {
        this.fetching = null;
        if (this.fetchAgain) {
          this.fetchAgain = false;
          this.refetch();
        }
      }
    })();
    return this.fetching;
  }

  /** A snapshot from the `stats` subscription: counts and rates of the visible queues. */
  onStats(stats) {
    const t = Date.now() / 1000;
    const seen = new Set();
    let changed = false;
    for (const q of stats.brokerSpecific.queues) {
      seen.add(q.name);
      const ring = this.samples.get(q.name) ?? [];
      const sample = { t, published: q.publishedTotal, delivered: q.deliveredTotal, acked: q.ackedTotal };
      const last = ring[ring.length - 1];
      if (last && sample.published < last.published) ring.length = 0; // deleted and created again
      ring.push(sample);
      if (ring.length > RATE_WINDOW) ring.shift();
      this.samples.set(q.name, ring);
      const info = this.queues.get(q.name);
      if (!info) {
        changed = true;
        continue;
      }
      for (const field of COUNT_FIELDS) info[field] = q[field];
    }
    for (const name of this.queues.keys()) if (!seen.has(name)) changed = true;
    if (changed) this.refetchSoon();
    if (this.visible) this.renderTable();
  }

  rates(name) {
    const ring = this.samples.get(name);
    if (!ring || ring.length < 2) return null;
    const first = ring[0];
    const last = ring[ring.length - 1];
    const dt = last.t - first.t;
    if (dt <= 0) return null;
    return {
      published: (last.published - first.published) / dt,
      delivered: (last.delivered - first.delivered) / dt,
      acked: (last.acked - first.acked) / dt,
    };
  }

  // -- the table ---------------------------------------------------------------

  makeRow(name) {
    const link = h("a", { href: `#/queues/${encodeURIComponent(name)}` }, name);
    const cells = {
      name: h("td", { class: "name" }, link),
      pending: h("td", { class: "num", dataset: { col: "pending" } }),
      processing: h("td", { class: "num", dataset: { col: "processing" } }),
      processed: h("td", { class: "num", dataset: { col: "processed" } }),
      failed: h("td", { class: "num", dataset: { col: "failed" } }),
      delayed: h("td", { class: "num", dataset: { col: "delayed" } }),
      consumers: h("td", { class: "num", dataset: { col: "consumers" } }),
      inRate: h("td", { class: "num", dataset: { col: "in" } }),
      outRate: h("td", { class: "num", dataset: { col: "out" } }),
      ackRate: h("td", { class: "num", dataset: { col: "ack" } }),
      options: h("td", { class: "opts" }),
      actions: h("td", { class: "actions" }),
    };
    let pause = null;
    if (this.perms.allowed("manage", name)) {
      pause = h(
        "button",
        { type: "button", class: "small", dataset: { action: "pause" }, "aria-label": `Pause or resume ${name}`, onclick: () => this.togglePause(name) },
        "Pause",
      );
      cells.actions.append(
        pause,
        h(
          "button",
          { type: "button", class: "small", dataset: { action: "purge" }, "aria-label": `Purge ${name}`, onclick: () => this.purge(name) },
          "Purge",
        ),
        h(
          "button",
          { type: "button", class: "small danger", dataset: { action: "delete" }, "aria-label": `Delete ${name}`, onclick: () => this.remove(name) },
          "Delete",
        ),
      );
    }
    const tr = labelRow($("#queues-table"), h("tr", { dataset: { queue: name } }, ...Object.values(cells)));
    return { tr, cells, pause };
  }

  renderTable() {
    const names = [...this.queues.keys()].filter((n) => !this.filter || n.toLowerCase().includes(this.filter)).sort();
    const shown = new Set(names);
    for (const [name, row] of this.rows) {
      if (!shown.has(name)) {
        row.tr.remove();
        this.rows.delete(name);
      }
    }
    for (const name of names) {
      let row = this.rows.get(name);
      if (!row) {
        row = this.makeRow(name);
        this.rows.set(name, row);
      }
      const q = this.queues.get(name);
      const c = row.cells;
      for (const field of COUNT_FIELDS) setText(c[field], fmtInt(q[field]));
      const rates = this.rates(name);
      setText(c.inRate, fmtRate(rates?.published));
      setText(c.outRate, fmtRate(rates?.delivered));
      setText(c.ackRate, fmtRate(rates?.acked));
      setText(c.options, optionsText(q));
      if (row.pause) setText(row.pause, q.paused ? "Resume" : "Pause");
      row.tr.classList.toggle("paused", Boolean(q.paused));
      c.failed.classList.toggle("bad", q.failed > 0);
      row.tr.classList.toggle("selected", name === this.selected);
    }
    const order = names.join("\u0000");
    if (order !== this.order) {
      this.order = order;
      $("#queues-table tbody").replaceChildren(...names.map((n) => this.rows.get(n).tr));
    }
    $("#queues-empty").hidden = names.length > 0;
  }

  // -- queue actions -----------------------------------------------------------

  async create(form) {
    const data = new FormData(form);
    const body = { name: String(data.get("name")).trim() };
    for (const field of ["lease", "max_attempts", "message_ttl_ms", "max_length", "max_bytes"]) {
      const value = String(data.get(field) ?? "").trim();
      if (value) body[field] = Number(value);
    }
    const dlq = String(data.get("dead_letter_queue") ?? "").trim();
    if (dlq) body.dead_letter_queue = dlq;
    body.overflow = data.get("overflow");
    try {
      const created = await this.app.session.request("POST", "/queues", { body });
      toast(`queue ${created.name} created`);
      form.reset();
      this.queues.set(created.name, created);
      this.renderTable();
      this.refetch();
    } catch (error) {
      toast(`could not create the queue: ${explain(error)}`, "error");
    }
  }

  async togglePause(name) {
    const resume = Boolean(this.queues.get(name)?.paused);
    try {
      const info = await this.app.session.request("POST", `${queuePath(name)}/${resume ? "resume" : "pause"}`);
      this.queues.set(name, info);
      toast(`${name} ${resume ? "resumed" : "paused: publishes are accepted, nothing is delivered"}`);
      this.renderTable();
    } catch (error) {
      toast(`could not ${resume ? "resume" : "pause"} ${name}: ${explain(error)}`, "error");
    }
  }

  async cancel(queue, id) {
    if (!(await confirmDialog(`Cancel message ${id} of ${queue}?`, "Cancel message"))) return;
    try {
      await this.app.session.request("DELETE", `${queuePath(queue)}/messages/${id}`);
      toast(`message ${id} cancelled`);
      this.loadMessages();
    } catch (error) {
      toast(`could not cancel message ${id}: ${explain(error)}`, "error");
    }
  }

  async purge(name) {
    if (!(await confirmDialog(`Delete every pending message of ${name}?`, "Purge"))) return;
    try {
      const result = await this.app.session.request("POST", `${queuePath(name)}/purge`);
      toast(`purged ${fmtInt(result.purged)} messages from ${name}`);
      await this.refetch();
      if (name === this.selected) this.loadMessages();
    } catch (error) {
      toast(`could not purge ${name}: ${explain(error)}`, "error");
    }
  }

  async remove(name) {
    if (!(await confirmDialog(`Delete queue ${name} and all its messages?`, "Delete"))) return;
    try {
      await this.app.session.request("DELETE", queuePath(name));
      toast(`queue ${name} deleted`);
      this.queues.delete(name);
      this.renderTable();
      if (name === this.selected) location.hash = "#/queues";
      this.refetch();
    } catch (error) {
      toast(`could not delete ${name}: ${explain(error)}`, "error");
    }
  }

  // -- one queue ---------------------------------------------------------------

  select(name) {
    const changed = name !== this.selected;
    this.selected = name;
    $("#queue-detail").hidden = name === null;
    if (changed) this.schedules.show(name);
    for (const [rowName, row] of this.rows) row.tr.classList.toggle("selected", rowName === name);
    if (name === null) return;
    $("#publish-form").hidden = !this.perms.allowed("publish", name);
    const browse = this.perms.canBrowse(name);
    $("#browser").hidden = !browse;
    $("#redrive").hidden = !this.perms.allowed("manage", name);
    this.renderDetailHead();
    if (changed) this.loadBindings(name);
    if (changed) {
      this.status = "";
      for (const b of $$("#status-filter button")) b.setAttribute("aria-pressed", String(b.dataset.status === ""));
      this.resetPages();
      $("#messages-table tbody").replaceChildren();
    }
    if (browse) this.loadMessages();
  }

  renderDetailHead() {
    if (this.selected === null) return;
    setText($("#detail-name"), this.selected);
    const q = this.queues.get(this.selected);
    setText($("#detail-options"), q ? optionsText(q) : "");
  }

  /** "Bound by": the topic bindings that route to the queue (from GET /topics). */
  async loadBindings(name) {
    const out = $("#detail-topics");
    out.replaceChildren();
    let topics;
    try {
      topics = await this.app.session.request("GET", "/topics");
    } catch {
      return; // a listing the user may not read: nothing to show
    }
    if (this.selected !== name) return;
    const bound = topics.flatMap((topic) =>
      topic.bindings.filter((b) => b.queue === name).map((b) => `${topic.name} (${b.pattern === "" ? "empty key" : b.pattern})`),
    );
    if (bound.length) out.replaceChildren(h("a", { href: "#/topics" }, "bound by"), ` ${bound.join(", ")}`);
  }

  resetPages() {
    this.cursors = [null];
    this.pageIndex = 0;
    this.nextCursor = null;
  }

  async loadMessages() {
    const name = this.selected;
    if (name === null || !this.perms.canBrowse(name)) return;
    const index = this.pageIndex;
    const status = this.status;
    let page;
    try {
      page = await this.app.session.request("GET", `${queuePath(name)}/messages`, {
        query: { status, limit: PAGE_SIZE, cursor: this.cursors[index] },
      });
    } catch (error) {
      if (error.status === 404 && name === this.selected) {
        toast(`queue ${name} no longer exists`, "error");
        location.hash = "#/queues";
        return;
      }
      toast(`could not browse ${name}: ${explain(error)}`, "error");
      return;
    }
    // A later click may have moved on while this page loaded.
    if (name !== this.selected || index !== this.pageIndex || status !== this.status) return;
    this.nextCursor = page.next_cursor ?? null;
    $("#messages-table tbody").replaceChildren(...page.messages.map((m) => this.messageRow(name, m)));
    $("#messages-empty").hidden = page.messages.length > 0;
    $("#page-prev").disabled = index === 0;
    $("#page-next").disabled = this.nextCursor === null;
    setText($("#page-label"), `page ${index + 1}`);
  }

  messageRow(queue, m) {
    const notes = [];
    if (m.dead_lettered_from) notes.push(`dead-lettered from ${m.dead_lettered_from}`);
    if (m.last_error) notes.push(m.last_error);
    if (m.redelivered) notes.push("redelivered");
    if (m.group) notes.push(`group ${m.group}`);
    if (m.waiting === "group") notes.push(`waits for its group (behind #${m.blocked_by})`);
    if (m.waiting === "retry_backoff") notes.push(`in back-off until ${fmtTime(m.deliver_at)}`);
    else if (m.deliver_at) notes.push(`delivers ${fmtTime(m.deliver_at)}`);
    if (m.waiting && m.waiting !== "retry_backoff") notes.push(`waiting: ${m.waiting}${m.blocked_by ? ` (behind ${m.blocked_by})` : ""}`);
    if (m.lease_expires_at) notes.push(`leased until ${fmtTime(m.lease_expires_at)}`);
    if (m.headers && Object.keys(m.headers).length) notes.push(`headers ${preview(m.headers, 80)}`);
    const retryable = m.status === "failed" || (m.status === "pending" && m.dead_lettered_from);
    const actions = h("td", { class: "actions" });
    actions.append(
      h(
        "button",
        { type: "button", class: "small", dataset: { action: "history" }, "aria-label": `History of message ${m.message_id}`, onclick: (event) => toggleTimeline(this.app.session, event.target.closest("tr"), m.message_id, 8) },
        "History",
      ),
    );
    if (retryable && this.perms.allowed("manage", queue)) {
      actions.append(
        h(
          "button",
          { type: "button", class: "small", dataset: { action: "retry" }, "aria-label": `Retry message ${m.message_id}`, onclick: () => this.retry(queue, m.message_id) },
          "Retry",
        ),
      );
    }
    if (m.status === "pending" && !m.dead_lettered_from && this.perms.allowed("manage", queue)) {
      actions.append(
        h(
          "button",
          { type: "button", class: "small danger", dataset: { action: "cancel" }, "aria-label": `Cancel message ${m.message_id}`, onclick: () => this.cancel(queue, m.message_id) },
          "Cancel",
        ),
      );
    }
    const badge = m.waiting === "retry_backoff" ? "backoff" : m.status;
    const tr = h(
      "tr",
      { dataset: { message: m.message_id, status: m.status } },
      h("td", { class: "num" }, String(m.message_id)),
      h("td", null, h("span", { class: `badge ${badge}`, title: m.waiting ?? "" }, badge)),
      h("td", { class: "num" }, fmtInt(m.attempt)),
      h("td", { class: "num" }, String(m.priority)),
      h("td", { title: m.created_at }, fmtTime(m.created_at)),
      h("td", { class: "content mono", title: preview(m.content, 2000) }, preview(m.content)),
      h("td", { class: "notes" }, notes.join(" · ")),
      actions,
    );
    return labelRow($("#messages-table"), tr);
  }

  async publish(form) {
    const name = this.selected;
    const data = new FormData(form);
    const raw = String(data.get("content") ?? "");
    let content;
    try {
      content = JSON.parse(raw);
    } catch {
      content = raw;
    }
    const body = { content };
    const priority = String(data.get("priority") ?? "").trim();
    if (priority) body.priority = Number(priority);
    const delay = String(data.get("delay_ms") ?? "").trim();
    if (delay) body.delay_ms = Number(delay);
    try {
      const result = await this.app.session.request("POST", `${queuePath(name)}/messages`, { body });
      toast(`published message ${result.message_id} to ${name}`);
      this.loadMessages();
    } catch (error) {
      toast(`could not publish to ${name}: ${explain(error)}`, "error");
    }
  }

  async retry(queue, id) {
    try {
      const message = await this.app.session.request("POST", `${queuePath(queue)}/messages/${id}/retry`);
      const where = message.queue === queue ? "" : ` in ${message.queue}`;
      toast(`message ${id} is ${message.status} again${where}`);
    } catch (error) {
      toast(`could not retry message ${id}: ${explain(error)}`, "error");
    }
    this.loadMessages();
    this.refetch();
  }

  async redrive() {
    const name = this.selected;
    try {
      const result = await this.app.session.request("POST", `${queuePath(name)}/redrive`);
      toast(`moved ${fmtInt(result.moved)} messages of ${name} back to pending`);
    } catch (error) {
      toast(`could not redrive ${name}: ${explain(error)}`, "error");
    }
    this.loadMessages();
    this.refetch();
  }
}
