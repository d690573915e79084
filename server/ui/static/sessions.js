// Browser sessions of the cloud API (/v1/sessions/list) with a live view of the one
// selected (/v1/sessions/get, polled every 2 s: its signed live-view page in a frame, or
// its latest screenshot). A server without these routes (404) or without their
// implementation (501) gets a "not available" box.

import { UNAVAILABLE, badge, clear, el, fmtAgo, fmtTime, poll, table, unavailableBox, v1 } from "./lib.js";

const box = document.getElementById("sessions");
const view = document.getElementById("live-view");
const liveStatus = document.getElementById("live-status");
let stopList = null;
let stopLive = null;
let selected = null;

function unavailable(err) {
  if (stopList) stopList();
  if (stopLive) stopLive();
  clear(box, unavailableBox("Browser sessions", err));
  clear(view, el("p", { class: "muted" }, "No live view without sessions."));
  box.removeAttribute("aria-busy");
}

function idOf(s) {
  return s.session_id || s.id;
}

function liveURL(s) {
  return s.live_view_url || null;
}

function renderLive(s) {
  liveStatus.replaceChildren(badge(s.status));
  const url = liveURL(s);
  if (url) {
    const frame = view.querySelector("iframe");
    if (!frame || frame.dataset.src !== url) {
      clear(view, el("iframe", { src: url, title: `Live view of session ${idOf(s)}`, dataset: { src: url } }));
    }
  } else if (s.screenshot) {
    const src = s.screenshot.startsWith("data:") ? s.screenshot : `data:image/png;base64,${s.screenshot}`;
    clear(view, el("img", { src, alt: `Latest screen of session ${idOf(s)}` }));
  } else {
    clear(view, el("p", { class: "muted" }, s.current_url ? `At ${s.current_url}` : "This session has no live view."));
  }
}

function watch(s) {
  selected = idOf(s);
  if (stopLive) stopLive();
  for (const row of box.querySelectorAll("tr[data-id]")) row.classList.toggle("selected", row.dataset.id === selected);
  renderLive(s);
  stopLive = poll(async () => {
    try {
      const answer = await v1("sessions/get", { id: idOf(s) });
      renderLive(answer.session || answer);
    } catch (err) {
      if (UNAVAILABLE.has(err.status)) { unavailable(err); return; }
      throw err;
    }
  }, 2000);
}

async function load() {
  let answer;
  try {
    answer = await v1("sessions/list");
  } catch (err) {
    if (UNAVAILABLE.has(err.status)) { unavailable(err); return; }
    throw err;
  }
  const sessions = answer.sessions || [];
  clear(box, table([
    { label: "Session", cell: (s) => el("button", { type: "button", class: "link mono", onclick: () => watch(s), "aria-label": `Watch session ${idOf(s)}` }, idOf(s)) },
    { label: "Status", cell: (s) => badge(s.status) },
    { label: "Started", cell: (s) => fmtAgo(s.created_at) },
    { label: "Ends", cell: (s) => (s.closed_at ? `closed ${fmtAgo(s.closed_at)}` : fmtTime(s.expires_at)) },
  ], sessions, { empty: "No browser sessions.", caption: "Browser sessions",
    rowAttrs: (s) => ({ dataset: { id: idOf(s) }, class: idOf(s) === selected ? "selected" : null }) }));
  box.removeAttribute("aria-busy");
}

stopList = poll(load, 5000);
