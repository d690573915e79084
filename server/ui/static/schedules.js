// Schedules: the cron triggers of every workspace (/api) and the cloud API's schedules
// (/v1/schedules/list), each with its next fire time. The cloud part shows a "not
// available" box when the server has no such route (404) or has not implemented it (501).

import {
  UNAVAILABLE, badge, clear, el, fmtAgo, fmtTime, getJSON, poll, table, taskLink, unavailableBox, v1,
} from "./lib.js";

const triggersBox = document.getElementById("triggers");
const cloudBox = document.getElementById("cloud-schedules");
let cloudAvailable = true;

function nextRun(iso) {
  return iso ? el("time", { datetime: iso, title: iso }, fmtTime(iso)) : "—";
}

async function loadTriggers() {
  const { data: workspaces } = await getJSON("/api/workspaces");
  const lists = await Promise.all(workspaces.filter((w) => !w.load_error).map(async (w) => {
    const { data } = await getJSON(`/api/workspaces/${encodeURIComponent(w.name)}/triggers`);
    return data.map((t) => ({ ...t, workspace: w.name }));
  }));
  const rows = lists.flat();
  clear(triggersBox, table([
    { label: "Trigger", cell: (t) => el("span", { class: "mono" }, t.name) },
    { label: "Workspace", cell: (t) => t.workspace },
    { label: "Task", cell: (t) => taskLink(t.workspace, t.task) },
    { label: "Type", cell: (t) => t.type },
    { label: "Cron", cell: (t) => (t.cron ? el("code", null, t.cron) : "—") },
    { label: "Enabled", cell: (t) => badge(t.enabled === false ? "disabled" : "enabled") },
    { label: "Next run", cell: (t) => nextRun((t.next_runs || [])[0]) },
  ], rows, { empty: "No triggers in any workspace.", caption: "Workspace triggers" }));
  triggersBox.removeAttribute("aria-busy");
}

async function loadCloud() {
  if (!cloudAvailable) return;
  let answer;
  try {
    answer = await v1("schedules/list", { limit: 200 });
  } catch (err) {
    if (!UNAVAILABLE.has(err.status)) throw err;
    cloudAvailable = false;
    clear(cloudBox, unavailableBox("Cloud schedules", err));
    cloudBox.removeAttribute("aria-busy");
    return;
  }
  clear(cloudBox, table([
    { label: "Schedule", cell: (s) => el("span", { class: "mono", title: s.id }, s.id) },
    { label: "Workflow", cell: (s) => s.workflow },
    { label: "Cron", cell: (s) => el("span", null, el("code", null, s.cron_expr), el("span", { class: "muted" }, ` ${s.timezone || "UTC"}`)) },
    { label: "Enabled", cell: (s) => badge(s.enabled ? "enabled" : "disabled") },
    { label: "Next fire", cell: (s) => nextRun(s.next_fire_at) },
    { label: "Last fire", cell: (s) => (s.last_fire_at ? fmtAgo(s.last_fire_at) : "—") },
    { label: "Failures", cell: (s) => (s.last_error ? el("span", { title: s.last_error, class: "fail-text" }, `${s.consecutive_failures} · ${s.last_error}`) : String(s.consecutive_failures ?? 0)) },
  ], answer.schedules || [], { empty: "No cloud schedules.", caption: "Cloud schedules" }));
  cloudBox.removeAttribute("aria-busy");
}

poll(() => Promise.all([loadTriggers(), loadCloud()]), 30_000);
