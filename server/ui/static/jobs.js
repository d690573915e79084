// Jobs list: filter by workspace, task, status and source; paged with limit/offset and
// X-Total-Count; the filters live in the URL so a view can be shared.

import { clear, el, getJSON, jobsTable, poll, showError } from "./lib.js";

const LIMIT = 25;
const STATUSES = ["pending", "running", "completed", "failed", "cancelled", "skipped"];
const SOURCES = ["api", "user", "trigger", "webhook", "hook", "task"];
const form = document.getElementById("filters");
const params = new URLSearchParams(location.search);
let offset = Number(params.get("offset") || 0);

for (const s of STATUSES) form.status.append(el("option", { value: s }, s));
for (const s of SOURCES) form.source_type.append(el("option", { value: s }, s));

function query() {
  const q = new URLSearchParams();
  for (const name of ["workspace", "task_name", "status", "source_type"]) {
    const value = form[name].value.trim();
    if (value) q.set(name, value);
  }
  return q;
}

async function load() {
  const q = query();
  // The API wants a workspace with a task name; without one, filter nothing by task.
  if (q.has("task_name") && !q.has("workspace")) q.delete("task_name");
  const shown = new URLSearchParams(q);
  if (offset) shown.set("offset", String(offset));
  history.replaceState(null, "", `${location.pathname}${shown.size ? `?${shown}` : ""}`);
  q.set("limit", String(LIMIT));
  q.set("offset", String(offset));
  const { data, total } = await getJSON(`/api/jobs?${q}`);
  clear(document.getElementById("jobs"), jobsTable(data, { caption: "Jobs" }));
  const count = total ?? data.length;
  document.getElementById("page-info").textContent = count
    ? `${offset + 1}–${offset + data.length} of ${count}` : "no jobs";
  document.getElementById("prev").disabled = offset === 0;
  document.getElementById("next").disabled = offset + LIMIT >= count;
}

async function init() {
  const { data: workspaces } = await getJSON("/api/workspaces");
  for (const ws of workspaces) form.workspace.append(el("option", { value: ws.name }, ws.name));
  for (const name of ["workspace", "task_name", "status", "source_type"]) {
    if (params.get(name)) form[name].value = params.get(name);
  }
  poll(load, 4000);
}

form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load().catch(showError); });
form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") { offset = 0; load().catch(showError); } });
document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - LIMIT); load().catch(showError); });
document.getElementById("next").addEventListener("click", () => { offset += LIMIT; load().catch(showError); });
init().catch(showError);
