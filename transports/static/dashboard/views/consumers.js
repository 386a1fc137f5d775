// Consumers: the push consumers of the queues the user can see (GET /consumers).
//
// No subscription carries consumers, so while this view is shown the list is
// fetched again on the `stats` snapshots, at most every two seconds.

import { explain } from "../lib/api.js";
import { $, fmtAgo, fmtDuration, fmtInt, h, labelRow, setText, toast } from "../lib/dom.js";

const REFRESH_MS = 2000;

export class ConsumersView {
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
      const consumers = await this.app.session.request("GET", "/consumers");
      this.render(consumers);
    } catch (error) {
      toast(`could not list consumers: ${explain(error)}`, "error");
    } finally {
      this.loading = false;
    }
  }

  render(consumers) {
    consumers.sort((a, b) => (a.queue < b.queue ? -1 : a.queue > b.queue ? 1 : a.consumer_id - b.consumer_id));
    const table = $("#consumers-table");
    const rows = consumers.map((c) =>
      labelRow(table, h(
        "tr",
        { dataset: { consumer: c.consumer_id, queue: c.queue } },
        h("td", null, c.queue),
        h("td", null, c.label),
        h("td", { class: "num" }, String(c.consumer_id)),
        h("td", { class: "num" }, fmtInt(c.prefetch)),
        h("td", { class: "num" }, fmtInt(c.unacked)),
        h("td", { title: c.connected_at }, fmtAgo(c.connected_at)),
        h("td", { class: "num" }, c.oldest_lease_held_s === null ? "–" : fmtDuration(c.oldest_lease_held_s)),
      )),
    );
    $("#consumers-table tbody").replaceChildren(...rows);
    $("#consumers-empty").hidden = rows.length > 0;
    setText($("#consumers-count"), `${fmtInt(rows.length)} connected`);
  }
}
