// Webhooks: the HTTP endpoints the visible queues push to (GET /queues/{name}/webhooks
// for each queue the user may manage and consume), with their state, counters,
// last error and recent attempts, and a Pause/Resume button.
//
// Refreshed on the `stats` snapshots while shown, at most every two seconds.

import { explain } from "../lib/api.js";
import { $, fmtInt, fmtTime, h, labelRow, setText, toast } from "../lib/dom.js";

const REFRESH_MS = 2000;
const hooksPath = (queue) => `/queues/${encodeURIComponent(queue)}/webhooks`;

export class WebhooksView {
  constructor(app) {
    this.app = app;
    this.visible = false;
    this.loadedAt = 0;
    this.loading = false;
  }

  show() {
    this.visible = true;
    this.load();
  }

  hide() {
    this.visible = false;
  }

  destroy() {
    this.hide();
  }

  onStats() {
    if (this.visible && Date.now() - this.loadedAt >= REFRESH_MS) this.load();
  }

  async load() {
    if (this.loading) return;
    this.loading = true;
    this.loadedAt = Date.now();
    try {
      const queues = await this.app.session.request("GET", "/queues");
      const names = queues
        .map((q) => q.name)
        .filter((name) => this.app.perms.allowed("manage", name) && this.app.perms.allowed("consume", name));
      const lists = await Promise.all(names.map((name) => this.app.session.request("GET", hooksPath(name))));
      this.render(lists.flat());
    } catch (error) {
      toast(`could not list webhooks: ${explain(error)}`, "error");
    } finally {
      this.loading = false;
    }
  }

  async toggle(hook) {
    const paused = hook.state === "active";
    try {
      await this.app.session.request("PATCH", `${hooksPath(hook.queue)}/${encodeURIComponent(hook.id)}`, {
        body: { paused },
      });
      toast(`${paused ? "paused" : "resumed"} webhook ${hook.id}`);
    } catch (error) {
      toast(`could not change webhook ${hook.id}: ${explain(error)}`, "error");
    }
    this.loadedAt = 0;
    this.load();
  }

  render(hooks) {
    const table = $("#webhooks-table");
    const rows = hooks.map((w) => {
      const recent = w.recent
        .slice(-5)
        .map((a) => `${a.status ?? "—"} ${Math.round(a.latency_ms)} ms (#${a.message_id})`)
        .join(", ");
      return labelRow(table, h(
        "tr",
        { dataset: { webhook: w.id, queue: w.queue } },
        h("td", null, w.queue),
        h("td", { title: w.id }, w.url),
        h("td", { class: "state" }, h("span", { class: `badge ${w.state === "active" ? "processed" : "failed"}` }, w.state)),
        h("td", { class: "num" }, `${w.in_flight}/${w.concurrency}`),
        h("td", { class: "num" }, fmtInt(w.deliveries)),
        h("td", { class: "num" }, fmtInt(w.failures)),
        h("td", { class: "last-error" }, w.last_error ?? "–"),
        h("td", { class: "recent", title: w.recent.map((a) => `${fmtTime(new Date(a.at * 1000).toISOString())} ${a.outcome} ${a.error ?? ""}`).join("\n") }, recent || "–"),
        h("td", null, h(
          "button",
          { type: "button", class: "small", dataset: { action: "toggle" }, "aria-label": `Pause or resume webhook ${w.id}`, onclick: () => this.toggle(w) },
          w.state === "active" ? "Pause" : "Resume",
        )),
      ));
    });
    $("#webhooks-table tbody").replaceChildren(...rows);
    $("#webhooks-empty").hidden = rows.length > 0;
    setText($("#webhooks-count"), `${fmtInt(rows.length)} webhooks`);
  }
}
