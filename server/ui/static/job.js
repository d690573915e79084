// The job page, live: flow graph, steps, step detail, approvals, logs, event timeline and
// artifacts. One WebSocket (`?format=events`) drives it: log frames feed the log viewer,
// step/job frames repaint states at once and schedule a (throttled) refetch of the job
// detail and the new events. DOM work is batched into one requestAnimationFrame.

import { drawDag } from "./dag.js";
import { buildForm } from "./form.js";
import { wsURL } from "./auth.js";
import {
  authedImage, authedLink, badge, clear, el, fmtClock, shortId, fmtDuration, fmtTime, getJSON,
  postJSON, pretty, showError, span, taskLink, throttle, toast,
} from "./lib.js";

const root = document.getElementById("job-root");
const jobId = root.dataset.jobId;
const api = `/api/jobs/${encodeURIComponent(jobId)}`;
const MAX_LOG_NODES = 5000;
const TERMINAL = new Set(["completed", "failed", "cancelled", "skipped"]);

const state = {
  job: null,
  steps: new Map(),      // name → step view (detail, patched by frames)
  order: [],             // step names in plan order
  plan: null,            // the plan from JobCreated (approval schemas)
  logs: [],
  events: [],
  lastVersion: 0,
  cursor: "",
  selected: null,
  ended: false,
  approvalsKey: "",
};
let dag = null;
let dagKey = "";
const stepRows = new Map();

// ---------------------------------------------------------------- frame batching

const queue = [];
let frameScheduled = false;
function enqueue(frame) {
  queue.push(frame);
  if (!frameScheduled) { frameScheduled = true; requestAnimationFrame(flush); }
}

function flush() {
  frameScheduled = false;
  const frames = queue.splice(0);
  const newLines = [];
  let statusChanged = false;
  for (const f of frames) {
    if (f.type === "log") {
      const line = { ts: f.ts, step: f.step, stream: f.stream, line: f.line };
      state.logs.push(line);
      newLines.push(line);
    } else if (f.type === "step") {
      const step = state.steps.get(f.step) || { step_name: f.step, depends_on: [] };
      step.status = f.status;
      step.attempt = f.attempt;
      if (f.error) step.error_message = f.error;
      if (!state.steps.has(f.step)) { state.steps.set(f.step, step); state.order.push(f.step); }
      statusChanged = true;
    } else if (f.type === "job") {
      if (state.job) state.job.status = f.status;
      statusChanged = true;
    } else if (f.type === "end") {
      state.ended = true;
      state.finalStatus = f.status;
      if (state.job && f.status) state.job.status = f.status;
      statusChanged = true;
    }
  }
  if (newLines.length) appendLogs(newLines);
  if (statusChanged) {
    renderStates();
    if (state.ended) doRefresh(); else refresh();
  }
}

// ---------------------------------------------------------------- live stream

let retry = 0;
async function connect() {
  const q = new URLSearchParams({ format: "events" });
  if (state.cursor) q.set("after", state.cursor);
  setLive("connecting…");
  let url;
  try {
    url = await wsURL(`${api}/logs/stream?${q}`); // with auth: a fresh single-use ticket
  } catch {
    retry = Math.min(retry + 1, 6);
    setTimeout(connect, 250 * 2 ** retry);
    return;
  }
  const ws = new WebSocket(url);
  ws.addEventListener("open", () => { retry = 0; setLive("● live"); });
  ws.addEventListener("message", (msg) => {
    let frame;
    try { frame = JSON.parse(msg.data); } catch { return; }
    if (frame.cursor) state.cursor = frame.cursor;
    enqueue(frame);
  });
  ws.addEventListener("close", (event) => {
    if (event.code === 1000 || state.ended) { setLive(""); return; }
    if (event.code === 4404) { setLive("job not found"); return; }
    if (state.job && TERMINAL.has(state.job.status)) { setLive(""); return; }
    // Lost or told to slow down: resume from the cursor, nothing missed or repeated.
    retry = Math.min(retry + 1, 6);
    setLive("reconnecting…");
    setTimeout(connect, 250 * 2 ** retry);
  });
  window.addEventListener("pagehide", () => ws.close(), { once: true });
}

function setLive(text) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.dataset.on = text === "● live" ? "1" : "0";
}

// ---------------------------------------------------------------- fetching

async function loadDetail() {
  const { data } = await getJSON(api);
  if (state.finalStatus) data.status = state.finalStatus; // the stream's last word stands
  state.job = data;
  for (const s of data.steps) {
    const known = state.steps.get(s.step_name);
    if (known) Object.assign(known, s); else { state.steps.set(s.step_name, s); }
  }
  state.order = data.steps.map((s) => s.step_name).concat(state.order.filter((n) => !data.steps.some((s) => s.step_name === n)));
}

async function loadEvents() {
  const { data } = await getJSON(`${api}/events`);
  const fresh = data.filter((e) => e.version > state.lastVersion);
  if (!fresh.length) return;
  state.lastVersion = fresh[fresh.length - 1].version;
  if (!state.plan) {
    const created = data.find((e) => e.type === "JobCreated");
    state.plan = created && created.data.plan;
  }
  state.events.push(...fresh);
  appendEvents(fresh);
}

async function loadArtifacts() {
  const { data } = await getJSON(`${api}/artifacts`);
  renderArtifacts(data);
}

let refreshing = false;
let again = false;
async function doRefresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    await Promise.all([loadDetail(), loadEvents()]);
    renderAll();
    if (state.job && (TERMINAL.has(state.job.status) || state.steps.size < 200)) await loadArtifacts();
  } catch (err) { showError(err); } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}
const refreshFast = throttle(doRefresh, 600);
const refreshSlow = throttle(doRefresh, 2500);
function refresh() { (state.steps.size > 300 ? refreshSlow : refreshFast)(); }

// ---------------------------------------------------------------- rendering

function renderAll() {
  renderHeader();
  renderDag();
  renderStates();
  renderApprovals();
  renderRerunOptions();
  if (state.selected) renderDetail();
}

function renderHeader() {
  const job = state.job;
  document.title = `${job.task_name} ${job.status} · Partitur`;
  document.getElementById("job-title").textContent = `${job.task_name} · ${shortId(job.job_id)}`;
  clear(document.getElementById("crumb-task"), taskLink(job.workspace, job.task_name));
  const status = document.getElementById("job-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  document.getElementById("cancel").hidden = TERMINAL.has(job.status);
  // What the last full render showed: tests (and scripts) can wait for it.
  root.dataset.rendered = job.status;
  const items = [
    ["Job", el("code", null, job.job_id)],
    ["Workspace", job.workspace],
    ["Source", job.source_id ? `${job.source_type} (${job.source_id})` : job.source_type],
    ["Created", fmtTime(job.created_at)],
    ["Started", fmtTime(job.started_at)],
    ["Finished", fmtTime(job.completed_at)],
    ["Duration", el("span", { id: "job-duration" }, fmtDuration(span(job.started_at, job.completed_at)))],
    ["Revision", job.revision ? el("code", null, job.revision.slice(0, 12)) : "—"],
  ];
  if (job.parent_job_id) items.push(["Parent", el("a", { href: `/jobs/${job.parent_job_id}` }, shortId(job.parent_job_id))]);
  if (job.retry_of_job_id) items.push(["Re-run of", el("a", { href: `/jobs/${job.retry_of_job_id}` }, shortId(job.retry_of_job_id))]);
  const meta = document.getElementById("job-meta");
  clear(meta, items.map(([k, v]) => el("div", null, el("dt", null, k), el("dd", null, v))),
    el("div", { class: "wide" }, el("dt", null, "Input"), el("dd", null, el("details", null, el("summary", null, "show"), pretty(job.input)))),
    job.output ? el("div", { class: "wide" }, el("dt", null, "Output"), el("dd", null, el("details", null, el("summary", null, "show"), pretty(job.output)))) : null,
    job.error ? el("div", { class: "wide" }, el("dt", null, "Error"), el("dd", null, el("pre", { class: "error-box" }, job.error))) : null);
}

function renderDag() {
  const nodes = state.order.map((name) => {
    const s = state.steps.get(name);
    const deps = [...(s.depends_on || [])];
    if (s.loop_of && !deps.includes(s.loop_of)) deps.push(s.loop_of);
    return { name, deps, status: s.status, kind: s.action_type };
  });
  const key = nodes.map((n) => `${n.name}<${n.deps.join(",")}`).join(";");
  if (key === dagKey) return;
  dagKey = key;
  dag = drawDag(document.getElementById("dag"), nodes, { onSelect: select, label: `Flow of job ${shortId(jobId)}` });
  if (state.selected) dag.select(state.selected);
  buildStepRows();
}

function buildStepRows() {
  stepRows.clear();
  const body = el("tbody");
  for (const name of state.order) {
    const button = el("button", { type: "button", class: "link", "aria-label": `Step ${name} details` }, name);
    const cells = { status: el("td", { "data-label": "Status" }), attempt: el("td", { "data-label": "Attempt" }), dur: el("td", { "data-label": "Duration" }) };
    const tr = el("tr", { dataset: { step: name } }, el("td", { "data-label": "Step" }, button), cells.status, cells.attempt, cells.dur);
    stepRows.set(name, { tr, ...cells, last: "" });
    body.append(tr);
  }
  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr && event.target.closest("button")) select(tr.dataset.step);
  });
  const tableEl = el("table", null, el("thead", null, el("tr", null, ["Step", "Status", "Attempt", "Duration"].map((h) => el("th", { scope: "col" }, h)))), body);
  clear(document.getElementById("steps"), tableEl);
}

function renderStates() {
  if (!state.job) return;
  if (!dag || state.order.some((n) => !dag.has(n))) { renderDag(); }
  const statuses = new Map();
  const counts = {};
  for (const name of state.order) {
    const s = state.steps.get(name);
    statuses.set(name, s.status);
    counts[s.status] = (counts[s.status] || 0) + 1;
    const row = stepRows.get(name);
    if (!row) continue;
    const dur = stepDuration(s);
    const sig = `${s.status}|${s.attempt}|${dur}`;
    if (row.last === sig) continue;
    row.last = sig;
    row.status.replaceChildren(badge(s.status));
    row.attempt.textContent = s.attempt ? String(s.attempt) : "—";
    row.dur.textContent = dur;
    row.tr.dataset.status = s.status;
  }
  dag.update(statuses);
  document.getElementById("step-counts").textContent = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(" · ");
  const status = document.getElementById("job-status");
  status.textContent = state.job.status;
  status.dataset.status = state.job.status;
  document.getElementById("cancel").hidden = TERMINAL.has(state.job.status);
  renderApprovals();
}

function stepDuration(s) {
  if (!s.started_at) return "—";
  if (s.status === "running") return fmtDuration(span(s.started_at, null));
  return s.completed_at ? fmtDuration(span(s.started_at, s.completed_at)) : "—";
}

function select(name) {
  state.selected = name;
  if (dag) dag.select(name);
  for (const [n, row] of stepRows) row.tr.classList.toggle("selected", n === name);
  renderDetail();
}

function renderDetail() {
  const s = state.steps.get(state.selected);
  const box = document.getElementById("detail");
  if (!s) { clear(box, el("p", { class: "muted" }, "Unknown step.")); return; }
  document.getElementById("detail-h").textContent = `Step ${s.step_name}`;
  const rows = [
    ["Status", badge(s.status)],
    ["Action", `${s.action_name || "—"} (${s.action_type || "?"})`],
    ["Attempt", s.attempt ? String(s.attempt) : "—"],
    ["Started", fmtTime(s.started_at)],
    ["Finished", fmtTime(s.completed_at)],
    ["Duration", stepDuration(s)],
    ["Worker", s.worker_id || "—"],
  ];
  if (s.exit_code !== null && s.exit_code !== undefined) rows.push(["Exit code", String(s.exit_code)]);
  if (s.retry_at) rows.push(["Retry at", fmtTime(s.retry_at)]);
  if (s.skip_reason) rows.push(["Skipped", s.skip_reason]);
  if (s.child_job_id) rows.push(["Child job", el("a", { href: `/jobs/${s.child_job_id}` }, shortId(s.child_job_id))]);
  if (s.message) rows.push(["Message", s.message]);
  const attempts = state.events.filter((e) => e.data && e.data.step === s.step_name && /^Step(Started|Failed|Completed|RetryScheduled)$/.test(e.type));
  clear(box,
    el("dl", { class: "meta compact" }, rows.map(([k, v]) => el("div", null, el("dt", null, k), el("dd", null, v)))),
    s.error_message ? el("div", null, el("h3", null, "Error", s.error_kind ? el("span", { class: "stats" }, s.error_kind) : null), el("pre", { class: "error-box" }, s.error_message)) : null,
    el("h3", null, "Input"), pretty(s.input),
    el("h3", null, "Output"), pretty(s.output),
    attempts.length ? el("div", null, el("h3", null, "Attempts"), el("ol", { class: "plain attempts" }, attempts.map((e) =>
      el("li", null, el("time", { datetime: e.time }, fmtClock(e.time)), " ", e.type.replace(/^Step/, ""),
        e.data.attempt ? ` #${e.data.attempt}` : "", e.data.error ? ` — ${String(e.data.error).split("\n")[0]}` : "")))) : null,
    el("div", { class: "buttons" },
      el("button", { type: "button", onclick: () => showStepLogs(s.step_name) }, "Show logs"),
      el("button", { type: "button", onclick: () => rerun(s.step_name) }, "Re-run from here")),
  );
}

function renderApprovals() {
  const waiting = state.order.map((n) => state.steps.get(n)).filter((s) => s.status === "suspended");
  const key = waiting.map((s) => `${s.step_name}#${s.attempt}`).join(",") + (state.plan ? "+plan" : "");
  if (key === state.approvalsKey) return;
  state.approvalsKey = key;
  const box = document.getElementById("approvals");
  clear(box, waiting.map((s) => approvalCard(s)));
}

function approvalCard(step) {
  const planStep = state.plan && state.plan.steps && state.plan.steps[step.step_name];
  const declared = (planStep && planStep.action && planStep.action.input) || {};
  // The approval's input starts from what the step was given; the approver may change it.
  const given = step.input || {};
  const schema = Object.fromEntries(Object.entries(declared).map(([k, spec]) =>
    [k, k in given && given[k] !== null ? { ...spec, default: given[k] } : spec]));
  const form = el("form", { class: "approval-form", "aria-label": `Approve ${step.step_name}`, novalidate: true });
  const reason = el("input", { type: "text", id: `reject-${step.step_name}`, placeholder: "why not (optional)" });
  const reject = el("button", { type: "button", class: "danger" }, "Reject");
  const built = buildForm(form, schema, { submitLabel: "Approve", extraButtons: [
    el("label", { class: "inline", for: `reject-${step.step_name}` }, "Reason"), reason, reject] });
  const send = async (body) => {
    built.submit.disabled = true; reject.disabled = true;
    try {
      await postJSON(`${api}/steps/${encodeURIComponent(step.step_name)}/approve`, body);
      toast(body.approved ? `Approved ${step.step_name}` : `Rejected ${step.step_name}`);
      refresh();
    } catch (err) {
      built.showIssues(err.issues, err.message);
      built.submit.disabled = false; reject.disabled = false;
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { values, problems } = built.read();
    if (problems.length) { built.showIssues(problems, "Fix the fields marked below."); return; }
    send({ approved: true, input: values });
  });
  reject.addEventListener("click", () => send({ approved: false, rejection_reason: reason.value || null }));
  return el("section", { class: "card approval", "aria-label": `Approval: ${step.step_name}` },
    el("h2", null, "Waiting for approval: ", el("code", null, step.step_name)),
    step.message ? el("p", { class: "message" }, step.message) : null, form);
}

function renderRerunOptions() {
  const select = document.getElementById("rerun-from");
  const names = state.order.filter((n) => !state.steps.get(n).loop_of);
  const key = names.join(",");
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, "the start"), ...names.map((n) => el("option", { value: n }, n)));
  select.value = current;
  const logStep = document.getElementById("log-step");
  const chosen = logStep.value;
  logStep.replaceChildren(el("option", { value: "" }, "all steps"), el("option", { value: "_server" }, "_server (engine notes)"),
    ...state.order.map((n) => el("option", { value: n }, n)));
  logStep.value = chosen;
}

// ---------------------------------------------------------------- logs

const logBox = document.getElementById("logs");
const filters = {
  step: document.getElementById("log-step"),
  stream: document.getElementById("log-stream"),
  search: document.getElementById("log-search"),
  server: document.getElementById("log-server"),
  follow: document.getElementById("log-follow"),
};
let shownLines = 0;

function matches(line) {
  const step = filters.step.value;
  if (step && line.step !== step) return false;
  if (!step && !filters.server.checked && line.step === "_server") return false;
  if (filters.stream.value && line.stream !== filters.stream.value) return false;
  const q = filters.search.value.trim().toLowerCase();
  return !q || line.line.toLowerCase().includes(q) || line.step.toLowerCase().includes(q);
}

function lineNode(line) {
  const q = filters.search.value.trim();
  const text = el("span", { class: "text" });
  if (q) {
    const lower = line.line.toLowerCase(), needle = q.toLowerCase();
    let at = 0;
    for (let i = lower.indexOf(needle); i !== -1; i = lower.indexOf(needle, at)) {
      text.append(line.line.slice(at, i), el("mark", null, line.line.slice(i, i + q.length)));
      at = i + q.length;
    }
    text.append(line.line.slice(at));
  } else text.textContent = line.line;
  return el("div", { class: `line ${line.stream}${line.step === "_server" ? " server" : ""}` },
    el("time", { datetime: line.ts }, fmtClock(line.ts)), el("span", { class: "step" }, line.step), text);
}

function appendLogs(lines) {
  const frag = document.createDocumentFragment();
  for (const line of lines) if (matches(line)) { frag.append(lineNode(line)); shownLines++; }
  logBox.append(frag);
  while (logBox.childElementCount > MAX_LOG_NODES) logBox.firstElementChild.remove();
  updateLogCount();
  if (filters.follow.checked) logBox.scrollTop = logBox.scrollHeight;
}

function rerenderLogs() {
  const picked = state.logs.filter(matches);
  shownLines = picked.length;
  const frag = document.createDocumentFragment();
  for (const line of picked.slice(-MAX_LOG_NODES)) frag.append(lineNode(line));
  logBox.replaceChildren(frag);
  updateLogCount();
  if (filters.follow.checked) logBox.scrollTop = logBox.scrollHeight;
}

function updateLogCount() {
  const more = shownLines > MAX_LOG_NODES ? ` (last ${MAX_LOG_NODES} shown)` : "";
  document.getElementById("log-count").textContent = `${shownLines} of ${state.logs.length} lines${more}`;
  if (!logBox.childElementCount) logBox.dataset.empty = state.logs.length ? "No lines match." : "No output yet.";
}

function showStepLogs(step) {
  filters.step.value = step;
  rerenderLogs();
  logBox.scrollIntoView({ block: "nearest" });
}

for (const input of [filters.step, filters.stream, filters.server]) input.addEventListener("change", rerenderLogs);
filters.search.addEventListener("input", throttle(rerenderLogs, 150));
logBox.addEventListener("scroll", () => {
  const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 24;
  if (filters.follow.checked !== atBottom && document.activeElement !== filters.follow) filters.follow.checked = atBottom;
}, { passive: true });

// ---------------------------------------------------------------- events and artifacts

const eventsBody = el("tbody");
document.getElementById("events").append(el("table", { class: "events" },
  el("thead", null, el("tr", null, ["Time", "#", "Event", "Step", "Summary"].map((h) => el("th", { scope: "col" }, h)))), eventsBody));

function summary(e) {
  const d = e.data || {};
  const parts = [];
  for (const key of ["status", "attempt", "kind", "error", "reason", "by", "worker_id", "pid", "exit_code", "task", "source_type"]) {
    if (d[key] !== undefined && d[key] !== null && d[key] !== "") parts.push(`${key}: ${typeof d[key] === "object" ? JSON.stringify(d[key]) : String(d[key]).split("\n")[0]}`);
  }
  return parts.join(" · ").slice(0, 160);
}

function appendEvents(events) {
  const frag = document.createDocumentFragment();
  for (const e of events) {
    const details = el("details", null, el("summary", null, summary(e) || "data"));
    details.addEventListener("toggle", () => {
      if (details.open && details.childElementCount === 1) details.append(pretty(e.data));
    }, { once: true });
    frag.append(el("tr", { dataset: { type: e.type } },
      el("td", { "data-label": "Time" }, el("time", { datetime: e.time, title: e.time }, fmtClock(e.time))),
      el("td", { "data-label": "#" }, String(e.version)),
      el("td", { "data-label": "Event" }, el("span", { class: "etype" }, e.type)),
      el("td", { "data-label": "Step" }, e.data && e.data.step ? e.data.step : ""),
      el("td", { "data-label": "Summary" }, details)));
  }
  eventsBody.append(frag);
  document.getElementById("event-count").textContent = `${state.events.length} events`;
}

function renderArtifacts(items) {
  const box = document.getElementById("artifacts");
  if (!items.length) { clear(box, el("p", { class: "muted" }, "No artifacts.")); return; }
  clear(box, el("ul", { class: "artifacts" }, items.map((a) => {
    const isImage = a.content_type.startsWith("image/");
    return el("li", null,
      el("div", null, authedLink(a.url, a.name, { target: "_blank", rel: "noopener" }),
        el("span", { class: "muted" }, ` · ${a.step} · ${a.size} B`),
        // A browser step's trace: Partitur's own trace viewer on a signed link (no token
        // needed, so it works with auth on; the link expires, a refresh makes a new one).
        a.viewer_url ? el("a", { class: "more", href: a.viewer_url, target: "_blank", rel: "noopener", "aria-label": `Open ${a.name} of ${a.step} in the trace viewer` }, " open in trace viewer") : null),
      isImage ? authedImage(el("img", { alt: `${a.name} from ${a.step}`, loading: "lazy" }), a.url) : null);
  })));
}

// ---------------------------------------------------------------- actions

async function rerun(fromStep) {
  try {
    const { job_id } = await postJSON(`${api}/rerun`, fromStep ? { from_step: fromStep } : {});
    location.assign(`/jobs/${encodeURIComponent(job_id)}`);
  } catch (err) { showError(err); }
}

document.getElementById("rerun").addEventListener("click", () => rerun(document.getElementById("rerun-from").value || null));
document.getElementById("cancel").addEventListener("click", async (event) => {
  event.target.disabled = true;
  try {
    await postJSON(`${api}/cancel`, { reason: "cancelled from the web UI" });
    toast("Cancel requested");
    refresh();
  } catch (err) { showError(err); } finally { event.target.disabled = false; }
});

setInterval(() => {
  if (!state.job || TERMINAL.has(state.job.status)) return;
  const d = document.getElementById("job-duration");
  if (d) d.textContent = fmtDuration(span(state.job.started_at, state.job.completed_at));
  for (const [name, row] of stepRows) {
    const s = state.steps.get(name);
    if (s && s.status === "running" && s.started_at) row.dur.textContent = fmtDuration(span(s.started_at, null));
  }
}, 1000);

// ---------------------------------------------------------------- start

async function start() {
  await Promise.all([loadDetail(), loadEvents()]);
  renderAll();
  updateLogCount();
  loadArtifacts().catch(showError);
  connect();
}
start().catch((err) => {
  setLive("");
  clear(root, el("h1", null, "Job not available"), el("p", { class: "error-box" }, err.message));
});
