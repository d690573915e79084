// Shared helpers of the UI pages: /api and /v1 calls, DOM building, formatting.

import { AUTH_ON, apiFetch } from "./auth.js";

/** GET a JSON resource; returns {data, total} (total from X-Total-Count when sent). */
export async function getJSON(path) {
  const res = await apiFetch(path, { headers: { Accept: "application/json" } });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw apiError(res, data);
  const total = res.headers.get("X-Total-Count");
  return { data, total: total === null ? null : Number(total) };
}

/** POST a JSON body; resolves to the JSON answer, rejects with an Error carrying `issues`. */
export async function postJSON(path, body, method = "POST") {
  const res = await apiFetch(path, {
    method,
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw apiError(res, data);
  return data;
}

/** DELETE a resource; resolves to the JSON answer (or null). */
export async function deleteJSON(path) {
  const res = await apiFetch(path, { method: "DELETE", headers: { Accept: "application/json" } });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw apiError(res, data);
  return data;
}

function apiError(res, data) {
  const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
  err.status = res.status;
  err.issues = (data && data.issues) || [];
  return err;
}

/** Statuses of a /v1 route this server does not have (or has not implemented). */
export const UNAVAILABLE = new Set([404, 501]);

/** Call the cloud API: POST /v1/<noun>/<verb> with {"json": data}; resolves to the inner
 * answer, rejects with an Error carrying `status` (the error envelope's message). */
export async function v1(route, data = {}) {
  const res = await apiFetch(`/v1/${route}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ json: data }),
  });
  const body = await res.json().catch(() => null);
  const inner = body && typeof body === "object" ? body.json : null;
  if (!res.ok) {
    const err = new Error((inner && inner.message) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    err.issues = (inner && inner.data && inner.data.issues) || [];
    throw err;
  }
  return inner;
}

/** The box shown when the server answers a /v1 route with 404 or 501. */
export function unavailableBox(what, err) {
  return el("div", { class: "card unavailable", role: "status", dataset: { unavailable: "1" } },
    el("h2", null, `${what} are not available on this server`),
    el("p", { class: "muted" }, `The cloud API answered ${err.status}: ${err.message}`));
}

/** Point an <img> at an /api URL: directly when auth is off, else fetched with the token
 * (an <img> cannot send one) and shown from a blob URL. */
export function authedImage(img, url) {
  if (!AUTH_ON) { img.src = url; return img; }
  apiFetch(url).then((res) => (res.ok ? res.blob() : null)).then((blob) => {
    if (blob) img.src = URL.createObjectURL(blob);
  }).catch(() => null);
  return img;
}

/** A link to an /api file; with auth on, a click downloads it with the token. */
export function authedLink(url, text, attrs = {}) {
  const link = el("a", { href: url, ...attrs }, text);
  if (AUTH_ON) {
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const res = await apiFetch(url);
      if (!res.ok) { toast(`${res.status} ${res.statusText}`, "error"); return; }
      const blobUrl = URL.createObjectURL(await res.blob());
      window.open(blobUrl, "_blank", "noopener");
    });
  }
  return link;
}

/** Build an element: el("a", {href: "/x", class: "y"}, "text", child…). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** A status badge. */
export function badge(status) {
  return el("span", { class: "badge", dataset: { status: status || "unknown" } }, status || "—");
}

export function parseTime(iso) {
  return iso ? Date.parse(iso) : null;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return sameDay ? time : `${d.toLocaleDateString()} ${time}`;
}

/** Precise time of day with milliseconds (the event timeline). */
export function fmtClock(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** Duration of something with started/completed ISO times (running: until now). */
export function span(started, completed) {
  const a = parseTime(started);
  if (a === null) return null;
  const b = parseTime(completed) ?? Date.now();
  return b - a;
}

/** The q-th quantile (0..1) of numbers, nearest-rank. */
export function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil(q * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

/** A short form of a job id: its random tail (ids are time-ordered, so heads repeat). */
export function shortId(jobId) {
  return jobId.replace(/-/g, "").slice(-8);
}

export function jobLink(jobId) {
  return el("a", { href: `/jobs/${encodeURIComponent(jobId)}`, class: "mono", title: jobId }, shortId(jobId));
}

export function taskLink(ws, task) {
  return el("a", { href: `/workspaces/${encodeURIComponent(ws)}/tasks/${encodeURIComponent(task)}` }, task);
}

/** A table from column definitions [{label, cell(row) → node|string}]. */
export function table(columns, rows, { caption, empty = "Nothing yet.", rowAttrs } = {}) {
  if (!rows.length) return el("p", { class: "muted empty" }, empty);
  const head = el("tr", null, columns.map((c) => el("th", { scope: "col" }, c.label)));
  const body = el("tbody");
  for (const row of rows) {
    body.append(el("tr", rowAttrs ? rowAttrs(row) : null, columns.map((c) => el("td", { "data-label": c.label }, c.cell(row)))));
  }
  return el("table", null, caption ? el("caption", { class: "visually-hidden" }, caption) : null, el("thead", null, head), body);
}

export function jobsTable(jobs, opts = {}) {
  const cols = [
    { label: "Job", cell: (j) => jobLink(j.job_id) },
    { label: "Task", cell: (j) => el("span", null, taskLink(j.workspace, j.task_name), el("span", { class: "muted" }, ` · ${j.workspace}`)) },
    { label: "Status", cell: (j) => badge(j.status) },
    { label: "Source", cell: (j) => j.source_type },
    { label: "Created", cell: (j) => el("time", { datetime: j.created_at, title: j.created_at }, fmtTime(j.created_at)) },
    { label: "Duration", cell: (j) => fmtDuration(span(j.started_at, j.completed_at)) },
  ];
  return table(opts.hideTask ? cols.filter((c) => c.label !== "Task") : cols, jobs, { empty: "No jobs.", caption: opts.caption });
}

let toastTimer = 0;
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = message;
  box.dataset.kind = kind;
  box.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("show"), 4000);
}

/** Run `fn` at most once per `ms`, trailing call included. */
export function throttle(fn, ms) {
  let timer = 0;
  let last = 0;
  return (...args) => {
    const wait = Math.max(0, last + ms - Date.now());
    clearTimeout(timer);
    timer = setTimeout(() => { last = Date.now(); fn(...args); }, wait);
  };
}

/** Poll `fn` every `ms` while the tab is visible (and once right away). */
export function poll(fn, ms) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch (err) { showError(err); }
    }
    setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; };
}

export function showError(err) {
  toast(err && err.message ? err.message : String(err), "error");
}

export function pretty(value) {
  return el("pre", { class: "json" }, value === undefined ? "—" : JSON.stringify(value, null, 2));
}
