// DOM building and formatting helpers.
//
// Every text the broker sends (queue names, message bodies, log lines) goes
// into the page as text nodes: nothing is parsed as HTML (the CSP enforces
// Trusted Types, so an innerHTML assignment would throw anyway).

/** Build an element: h("td", {class: "num"}, "12"). Event handlers as onclick: fn. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** Set an element's text only when it changed (keeps selections and avoids layout work). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1, minimumFractionDigits: 1 });

export function fmtInt(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

export function fmtRate(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value >= 100 ? integer.format(value) : decimal.format(value);
}

export function fmtPercent(value) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : `${decimal.format(value)}%`;
}

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? integer.format(value) : decimal.format(value)} ${units[unit]}`;
}

/** Seconds as "1h 2m", "3m 4s" or "5.2s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${decimal.format(seconds)}s`;
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  return `${mm}m ${ss}s`;
}

/** An ISO 8601 instant in the viewer's local time. */
export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** "how long ago" of an ISO instant. */
export function fmtAgo(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  return Number.isNaN(ms) ? "–" : `${fmtDuration(Math.max(0, ms / 1000))} ago`;
}

/** A short one-line preview of a JSON value. */
export function preview(value, max = 160) {
  let text;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Transient feedback in the corner. */
export function toast(message, kind = "ok") {
  const box = $("#toasts");
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : null }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmDialog(message, confirmLabel) {
  const dialog = $("#confirm");
  setText($("#confirm-text"), message);
  setText($("#confirm-ok"), confirmLabel);
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

/** Call fn at most once per `ms`, the last call winning (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  return (...args) => {
    pending = true;
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      if (pending) {
        pending = false;
        fn(...args);
      }
    }, ms);
  };
}

const labelCache = new WeakMap();

/**
 * Give each cell of `tr` its column's header as data-label: on a phone the
 * tables turn into one card per row, each cell labelled (app.css).
 */
export function labelRow(table, tr) {
  let labels = labelCache.get(table);
  if (!labels) {
    labels = $$("thead th", table).map((th) => (th.querySelector(".sr-only") ? "" : th.textContent.trim()));
    labelCache.set(table, labels);
  }
  [...tr.children].forEach((td, i) => {
    td.dataset.label = labels[i] ?? "";
  });
  return tr;
}
