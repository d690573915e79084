// Workers list: every registered worker with its status, load and tags.

import { badge, clear, el, fmtAgo, fmtTime, getJSON, poll, table } from "./lib.js";

poll(async () => {
  const { data } = await getJSON("/api/workers?limit=1000");
  const box = document.getElementById("workers");
  clear(box, table([
    { label: "Worker", cell: (w) => el("span", { class: "mono" }, w.name || w.worker_id) },
    { label: "Kind", cell: (w) => w.kind || "—" },
    { label: "Status", cell: (w) => badge(w.status) },
    { label: "Busy", cell: (w) => `${w.busy ?? "?"} / ${w.concurrency ?? "?"}` },
    { label: "Tags", cell: (w) => (w.tags || []).join(", ") || "—" },
    { label: "Started", cell: (w) => fmtTime(w.started_at) },
    { label: "Last seen", cell: (w) => fmtAgo(w.last_seen_at) },
  ], data, { empty: "No workers registered.", caption: "Workers" }));
  box.removeAttribute("aria-busy");
}, 5000);
