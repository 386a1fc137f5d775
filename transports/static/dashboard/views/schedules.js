// Schedules: the recurring schedules of the queue shown in the queue view
// (name, expression, time zone, next and last fire, paused), with pause,
// resume and delete for users who may manage the queue. Read with
// GET /queues/{name}/schedules (needs consume or manage, as browsing).

import { explain } from "../lib/api.js";
import { $, confirmDialog, fmtTime, h, labelRow, toast } from "../lib/dom.js";

const schedulesPath = (queue) => `/queues/${encodeURIComponent(queue)}/schedules`;

export class SchedulesPanel {
  constructor(app) {
    this.app = app;
    this.queue = null;
    $("#schedules-refresh").addEventListener("click", () => this.load());
  }

  /** Show the schedules of `queue` (null hides the panel). */
  show(queue) {
    this.queue = queue;
    const readable = queue !== null && this.app.perms.canBrowse(queue);
    $("#schedules").hidden = !readable;
    if (!readable) return;
    $("#schedules-table tbody").replaceChildren();
    this.load();
  }

  async load() {
    const queue = this.queue;
    if (queue === null) return;
    let schedules;
    try {
      schedules = await this.app.session.request("GET", schedulesPath(queue));
    } catch (error) {
      if (queue === this.queue) toast(`could not list the schedules of ${queue}: ${explain(error)}`, "error");
      return;
    }
    if (queue !== this.queue) return;
    $("#schedules-table tbody").replaceChildren(...schedules.map((s) => this.row(queue, s)));
    $("#schedules-empty").hidden = schedules.length > 0;
  }

  row(queue, s) {
    const actions = h("td", { class: "actions" });
    if (this.app.perms.allowed("manage", queue)) {
      actions.append(
        h(
          "button",
          { type: "button", class: "small", dataset: { action: s.paused ? "resume" : "pause" }, "aria-label": `${s.paused ? "Resume" : "Pause"} schedule ${s.name}`, onclick: () => this.setPaused(queue, s.name, !s.paused) },
          s.paused ? "Resume" : "Pause",
        ),
        h(
          "button",
          { type: "button", class: "small danger", dataset: { action: "delete" }, "aria-label": `Delete schedule ${s.name}`, onclick: () => this.remove(queue, s.name) },
          "Delete",
        ),
      );
    }
    const expression = s.cron ?? `every ${s.every_ms} ms`;
    const tr = h(
      "tr",
      { dataset: { schedule: s.name, paused: String(s.paused) } },
      h("td", { class: "name" }, s.name),
      h("td", { class: "mono" }, expression),
      h("td", null, s.timezone),
      h("td", { title: s.next_fire_at ?? "" }, s.next_fire_at ? fmtTime(s.next_fire_at) : "–"),
      h("td", { title: s.last_fired_at ?? "" }, s.last_fired_at ? fmtTime(s.last_fired_at) : "–"),
      h("td", null, h("span", { class: `badge ${s.paused ? "failed" : "processed"}` }, s.paused ? "paused" : "active")),
      actions,
    );
    return labelRow($("#schedules-table"), tr);
  }

  async setPaused(queue, name, paused) {
    try {
      await this.app.session.request("PATCH", `${schedulesPath(queue)}/${encodeURIComponent(name)}`, { body: { paused } });
      toast(`schedule ${name} ${paused ? "paused" : "resumed"}`);
    } catch (error) {
      toast(`could not change schedule ${name}: ${explain(error)}`, "error");
    }
    this.load();
  }

  async remove(queue, name) {
    if (!(await confirmDialog(`Delete schedule ${name} of ${queue}?`, "Delete"))) return;
    try {
      await this.app.session.request("DELETE", `${schedulesPath(queue)}/${encodeURIComponent(name)}`);
      toast(`schedule ${name} deleted`);
    } catch (error) {
      toast(`could not delete schedule ${name}: ${explain(error)}`, "error");
    }
    this.load();
  }
}

