// A message's life story (GET /messages/{id}/history) drawn as a timeline under its row,
// with its ack's result (GET /messages/{id}/result) when it has one.
import { explain } from "../lib/api.js";
import { fmtTime, h, preview, toast } from "../lib/dom.js";

const SKIP = new Set(["at", "event"]);

function details(event) {
  return Object.entries(event)
    .filter(([key, value]) => !SKIP.has(key) && value !== null && value !== undefined)
    .map(([key, value]) => `${key} ${typeof value === "object" ? preview(value, 80) : value}`)
    .join(" · ");
}

// Toggle the timeline of message `id` below `tr` (a row of a table with `columns` cells).
export async function toggleTimeline(session, tr, id, columns) {
  const next = tr.nextElementSibling;
  if (next && next.dataset.timelineOf === String(id)) {
    next.remove();
    return;
  }
  let history;
  let result = null;
  try {
    history = await session.request("GET", `/messages/${id}/history`);
    const outcome = await session.request("GET", `/messages/${id}/result`);
    if (outcome && outcome.result !== null && outcome.result !== undefined) result = outcome.result;
  } catch (error) {
    toast(`could not read the history of message ${id}: ${explain(error)}`, "error");
    return;
  }
  const items = history.events.map((event) =>
    h(
      "li",
      { class: `timeline-event ${event.event}` },
      h("time", { datetime: event.at, title: event.at }, fmtTime(event.at)),
      " ",
      h("span", { class: `badge ${event.event}` }, event.event),
      " ",
      h("span", { class: "notes" }, details(event)),
    ),
  );
  if (!items.length) items.push(h("li", { class: "notes" }, "no history recorded (BROKER_HISTORY off, or older than it)"));
  const cell = h(
    "td",
    { colspan: String(columns) },
    h("ol", { class: "timeline", "aria-label": `History of message ${id}` }, ...items),
    result === null ? "" : h("div", { class: "mono notes" }, `result: ${preview(result, 400)}`),
  );
  tr.after(h("tr", { class: "timeline-row", dataset: { timelineOf: String(id) } }, cell));
}
