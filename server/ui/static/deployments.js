// Deployments of the cloud API (/v1/deployments/list): status, workflows, build errors.
// A server without the route (404) or without its implementation (501) gets a
// "not available" box instead of a table.

import { UNAVAILABLE, badge, clear, el, fmtTime, poll, table, unavailableBox, v1 } from "./lib.js";

const box = document.getElementById("deployments");
let stop = null;

async function load() {
  let answer;
  try {
    answer = await v1("deployments/list");
  } catch (err) {
    if (!UNAVAILABLE.has(err.status)) throw err;
    clear(box, unavailableBox("Deployments", err));
    box.removeAttribute("aria-busy");
    if (stop) stop();
    return;
  }
  clear(box, table([
    { label: "Deployment", cell: (d) => el("span", { class: "mono", title: d.id }, d.id) },
    { label: "Description", cell: (d) => d.description || "—" },
    { label: "Status", cell: (d) => badge(d.status) },
    { label: "Workflows", cell: (d) => (d.workflows.length ? d.workflows.join(", ") : "—") },
    { label: "Created", cell: (d) => fmtTime(d.created_at) },
    { label: "Built", cell: (d) => fmtTime(d.built_at) },
    { label: "Build error", cell: (d) => (d.build_error ? el("span", { class: "fail-text" }, d.build_error) : "—") },
  ], answer.deployments || [], { empty: "No deployments yet.", caption: "Deployments",
    rowAttrs: (d) => ({ dataset: { id: d.id } }) }));
  box.removeAttribute("aria-busy");
}

stop = poll(load, 5000);
