// Dashboard: job counts by status, recent jobs, failing tasks, worker health.

import { badge, clear, el, fmtAgo, getJSON, jobsTable, poll, table, taskLink } from "./lib.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled", "skipped"];

async function counts() {
  const answers = await Promise.all(STATUSES.map((s) => getJSON(`/api/jobs?status=${s}&limit=0`)));
  const box = document.getElementById("counts");
  clear(box, STATUSES.map((s, i) => el("a", { class: "count", href: `/jobs?status=${s}`, dataset: { status: s } },
    el("span", { class: "n" }, String(answers[i].total ?? 0)), el("span", { class: "label" }, s))));
  box.removeAttribute("aria-busy");
}

async function recent() {
  const { data } = await getJSON("/api/jobs?limit=12");
  clear(document.getElementById("recent"), jobsTable(data, { caption: "Recent jobs" }));
}

async function failing() {
  const { data } = await getJSON("/api/jobs?status=failed&limit=200");
  const byTask = new Map();
  for (const job of data) {
    const key = `${job.workspace}\u0000${job.task_name}`;
    const entry = byTask.get(key) || { workspace: job.workspace, task: job.task_name, count: 0, last: job };
    entry.count += 1;
    byTask.set(key, entry);
  }
  const rows = [...byTask.values()].sort((a, b) => b.count - a.count).slice(0, 8);
  clear(document.getElementById("failing"), table([
    { label: "Task", cell: (r) => el("span", null, taskLink(r.workspace, r.task), el("span", { class: "muted" }, ` · ${r.workspace}`)) },
    { label: "Failures", cell: (r) => String(r.count) },
    { label: "Last", cell: (r) => el("a", { href: `/jobs/${r.last.job_id}` }, fmtAgo(r.last.created_at)) },
  ], rows, { empty: "No failed jobs.", caption: "Failing tasks" }));
}

async function workers() {
  const { data } = await getJSON("/api/workers");
  clear(document.getElementById("workers"), table([
    { label: "Worker", cell: (w) => el("span", { class: "mono" }, w.name || w.worker_id) },
    { label: "Status", cell: (w) => badge(w.status) },
    { label: "Busy", cell: (w) => `${w.busy ?? "?"} / ${w.concurrency ?? "?"}` },
    { label: "Seen", cell: (w) => fmtAgo(w.last_seen_at) },
  ], data, { empty: "No workers registered.", caption: "Workers" }));
}

poll(() => Promise.all([counts(), recent(), failing(), workers()]), 5000);
