// Topics: each topic with its bindings (pattern -> queue), create, bind,
// unbind and delete, and a "test routing" box that asks the broker which
// queues a routing key would reach now (GET /topics/{name}/route; nothing is
// published). Everything goes through the REST routes of /topics.

import { explain } from "../lib/api.js";
import { $, confirmDialog, fmtAgo, h, labelRow, setText, toast } from "../lib/dom.js";

export class TopicsView {
  constructor(app) {
    this.app = app;
    this.topics = [];
    $("#create-topic").hidden = !app.perms.any("manage");
    $("#bind-topic").hidden = !app.perms.any("manage");
    $("#create-topic-form").addEventListener("submit", (event) => this.create(event));
    $("#bind-topic-form").addEventListener("submit", (event) => this.bind(event));
    $("#route-form").addEventListener("submit", (event) => this.route(event));
  }

  show() {
    this.load();
  }

  hide() {}

  destroy() {}

  async load() {
    try {
      this.topics = await this.app.session.request("GET", "/topics");
      this.render();
    } catch (error) {
      toast(`could not list topics: ${explain(error)}`, "error");
    }
  }

  render() {
    const table = $("#topics-table");
    const perms = this.app.perms;
    const rows = [];
    for (const topic of this.topics) {
      const manage = perms.allowed("manage", topic.name);
      rows.push(
        labelRow(table, h(
          "tr",
          { class: "topic-row", dataset: { topic: topic.name } },
          h("td", null, h("strong", null, topic.name)),
          h("td", { class: "muted" }, `${topic.bindings.length} binding${topic.bindings.length === 1 ? "" : "s"}`),
          h("td", { class: "muted" }, ""),
          h("td", { title: topic.created_at }, fmtAgo(topic.created_at)),
          h("td", null, manage ? h("button", { type: "button", class: "danger", onclick: () => this.remove(topic.name) }, "Delete") : null),
        )),
      );
      for (const binding of topic.bindings) {
        rows.push(
          labelRow(table, h(
            "tr",
            { class: "binding-row", dataset: { topic: topic.name, queue: binding.queue } },
            h("td", null, ""),
            h("td", null, h("code", null, binding.pattern === "" ? "(empty)" : binding.pattern)),
            h("td", null, h("a", { href: `#/queues/${encodeURIComponent(binding.queue)}` }, binding.queue)),
            h("td", { title: binding.created_at }, fmtAgo(binding.created_at)),
            h("td", null, manage && perms.allowed("manage", binding.queue)
              ? h("button", { type: "button", onclick: () => this.unbind(topic.name, binding) }, "Unbind")
              : null),
          )),
        );
      }
    }
    $("#topics-table tbody").replaceChildren(...rows);
    $("#topics-empty").hidden = this.topics.length > 0;
    const names = this.topics.map((topic) => h("option", { value: topic.name }, topic.name));
    for (const select of [$("#bind-topic-form select[name=topic]"), $("#route-form select[name=topic]")]) {
      const chosen = select.value;
      select.replaceChildren(...names.map((option) => option.cloneNode(true)));
      if (this.topics.some((topic) => topic.name === chosen)) select.value = chosen;
    }
  }

  async create(event) {
    event.preventDefault();
    const form = event.target;
    const name = form.elements.name.value.trim();
    try {
      await this.app.session.request("POST", "/topics", { body: { name } });
      toast(`topic ${name} created`);
      form.reset();
      await this.load();
    } catch (error) {
      toast(`could not create topic: ${explain(error)}`, "error");
    }
  }

  async bind(event) {
    event.preventDefault();
    const form = event.target;
    const topic = form.elements.topic.value;
    const body = { queue: form.elements.queue.value.trim(), pattern: form.elements.pattern.value.trim() };
    try {
      await this.app.session.request("POST", `/topics/${encodeURIComponent(topic)}/bindings`, { body });
      toast(`${body.queue} bound to ${topic} by ${body.pattern}`);
      form.elements.queue.value = "";
      form.elements.pattern.value = "";
      await this.load();
    } catch (error) {
      toast(`could not bind: ${explain(error)}`, "error");
    }
  }

  async unbind(topic, binding) {
    if (!(await confirmDialog(`Unbind ${binding.queue} from ${topic} (${binding.pattern})?`, "Unbind"))) return;
    try {
      await this.app.session.request("DELETE", `/topics/${encodeURIComponent(topic)}/bindings`, {
        body: { queue: binding.queue, pattern: binding.pattern },
      });
      await this.load();
    } catch (error) {
      toast(`could not unbind: ${explain(error)}`, "error");
    }
  }

  async remove(topic) {
    if (!(await confirmDialog(`Delete topic ${topic} and its bindings? Its queues stay.`, "Delete topic"))) return;
    try {
      await this.app.session.request("DELETE", `/topics/${encodeURIComponent(topic)}`);
      toast(`topic ${topic} deleted`);
      await this.load();
    } catch (error) {
      toast(`could not delete topic: ${explain(error)}`, "error");
    }
  }

  async route(event) {
    event.preventDefault();
    const form = event.target;
    const topic = form.elements.topic.value;
    const key = form.elements.routing_key.value;
    const out = $("#route-result");
    try {
      const result = await this.app.session.request("GET", `/topics/${encodeURIComponent(topic)}/route`, {
        query: { routing_key: key === "" ? undefined : key },
      });
      out.replaceChildren(
        result.queues.length
          ? h("span", null, `${key === "" ? "(empty key)" : key} reaches: `, ...result.queues.flatMap((queue, i) => [i ? ", " : "", h("strong", null, queue)]))
          : h("span", { class: "muted" }, `${key === "" ? "(empty key)" : key} reaches no queue`),
      );
    } catch (error) {
      out.replaceChildren(h("span", { class: "error" }, explain(error)));
    }
    setText($("#route-topic"), topic);
  }
}
