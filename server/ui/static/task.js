// Task page: the run form from the input schema, the flow graph, triggers with their
// next runs, and recent jobs with p50/p95 durations computed here.

import { drawDag } from "./dag.js";
import { buildForm } from "./form.js";
import { clear, el, fmtDuration, fmtTime, getJSON, jobsTable, poll, postJSON, quantile, showError, span, table } from "./lib.js";

const root = document.getElementById("task-root");
const ws = root.dataset.workspace;
const name = root.dataset.task;
const base = `/api/workspaces/${encodeURIComponent(ws)}/tasks/${encodeURIComponent(name)}`;

function stepKind(step) {
  return step.action ? `action ${step.action}` : step.type || "inline";
}

async function load() {
  const { data: task } = await getJSON(base);
  if (task.folder) document.getElementById("crumb-folder").textContent = ` / ${task.folder}`;
  document.getElementById("task-desc").textContent = task.description || "";

  const form = document.getElementById("run-form");
  form.setAttribute("aria-label", `Run ${name}`);
  const built = buildForm(form, task.input, { submitLabel: `Run ${name}` });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { values, problems } = built.read();
    if (problems.length) { built.showIssues(problems, "Fix the fields marked below."); return; }
    built.submit.disabled = true;
    try {
      const { job_id } = await postJSON(`${base}/execute`, { input: values });
      location.assign(`/jobs/${encodeURIComponent(job_id)}`);
    } catch (err) {
      built.showIssues(err.issues, err.message);
      built.submit.disabled = false;
    }
  });

  const nodes = Object.entries(task.flow || {}).map(([step, spec]) => ({
    name: step, deps: spec.depends_on || [], status: "idle", kind: stepKind(spec),
  }));
  drawDag(document.getElementById("dag"), nodes, { label: `Flow of ${name}` });

  clear(document.getElementById("triggers"), table([
    { label: "Trigger", cell: (t) => t.name },
    { label: "Type", cell: (t) => t.type },
    { label: "Schedule", cell: (t) => t.cron ? el("code", null, `${t.cron}${t.timezone ? ` (${t.timezone})` : ""}`) : "—" },
    { label: "Enabled", cell: (t) => t.enabled ? "yes" : "no" },
    { label: "Next runs", cell: (t) => t.next_runs && t.next_runs.length
      ? el("ul", { class: "plain" }, t.next_runs.map((r) => el("li", null, el("time", { datetime: r }, fmtTime(r)))))
      : "—" },
  ], task.triggers || [], { empty: "No triggers target this task.", caption: "Triggers" }));
}

async function recent() {
  const q = new URLSearchParams({ workspace: ws, task_name: name, limit: "200" });
  const { data, total } = await getJSON(`/api/jobs?${q}`);
  const done = data.filter((j) => j.status === "completed").map((j) => span(j.started_at, j.completed_at)).filter((d) => d !== null);
  const p50 = quantile(done, 0.5), p95 = quantile(done, 0.95);
  document.getElementById("stats").textContent = done.length
    ? `p50 ${fmtDuration(p50)} · p95 ${fmtDuration(p95)} over ${done.length} completed of ${total ?? data.length}`
    : `${total ?? data.length} jobs`;
  clear(document.getElementById("recent"), jobsTable(data.slice(0, 20), { hideTask: true, caption: "Recent jobs of this task" }));
}

load().then(() => poll(recent, 5000)).catch(showError);
