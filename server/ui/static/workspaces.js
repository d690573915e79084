// Workspaces and their tasks as a folder tree (a task's `folder` is a /-separated path).

import { clear, el, getJSON, showError } from "./lib.js";

function tree(tasks) {
  const root = { folders: new Map(), tasks: [] };
  for (const task of tasks) {
    let node = root;
    for (const part of (task.folder || "").split("/").filter(Boolean)) {
      if (!node.folders.has(part)) node.folders.set(part, { folders: new Map(), tasks: [] });
      node = node.folders.get(part);
    }
    node.tasks.push(task);
  }
  return root;
}

function renderNode(node, ws) {
  const list = el("ul", { class: "tree" });
  for (const [name, child] of [...node.folders].sort(([a], [b]) => a.localeCompare(b))) {
    list.append(el("li", { class: "folder" }, el("details", { open: true },
      el("summary", null, `${name}/`), renderNode(child, ws))));
  }
  for (const task of [...node.tasks].sort((a, b) => a.name.localeCompare(b.name))) {
    list.append(el("li", { class: "task", dataset: { search: `${task.folder || ""}/${task.name}`.toLowerCase() } },
      el("a", { href: `/workspaces/${encodeURIComponent(ws)}/tasks/${encodeURIComponent(task.name)}` }, task.name),
      task.has_triggers ? el("span", { class: "tag", title: "has enabled triggers" }, "triggered") : null,
      task.description ? el("span", { class: "muted" }, ` — ${task.description}`) : null));
  }
  return list;
}

async function load() {
  const box = document.getElementById("workspaces");
  const { data: workspaces } = await getJSON("/api/workspaces");
  const sections = await Promise.all(workspaces.map(async (ws) => {
    const head = el("h2", null, ws.name, el("span", { class: "stats" },
      `${ws.tasks_count} tasks · ${ws.actions_count} actions · ${ws.triggers_count} triggers${ws.revision ? ` · rev ${ws.revision.slice(0, 8)}` : ""}`));
    const section = el("section", { class: "card", "aria-label": `workspace ${ws.name}` }, head);
    if (ws.load_error) section.append(el("pre", { class: "error-box" }, ws.load_error));
    if (ws.revision) {
      try {
        const { data: tasks } = await getJSON(`/api/workspaces/${encodeURIComponent(ws.name)}/tasks`);
        section.append(tasks.length ? renderNode(tree(tasks), ws.name) : el("p", { class: "muted" }, "No tasks."));
      } catch (err) { section.append(el("p", { class: "error-box" }, err.message)); }
    }
    return section;
  }));
  clear(box, sections.length ? sections : el("p", { class: "muted" }, "No workspaces configured."));
  box.removeAttribute("aria-busy");
  applyFilter();  // a filter typed while the tasks were loading
}

const filterInput = document.getElementById("task-filter");

function applyFilter() {
  const q = filterInput.value.trim().toLowerCase();
  for (const li of document.querySelectorAll("li.task")) li.hidden = q !== "" && !li.dataset.search.includes(q);
}

filterInput.addEventListener("input", applyFilter);

load().catch(showError);
