// Browser sessions of the cloud API: the caller's sessions (/v1/sessions/list, polled
// every 5 s: status, start, end, a link to the live view) and a live view of the session
// selected or opened by id (/v1/sessions/get, polled every 2 s; its signed live-view page
// in a frame). Whatever the server answers with 404 (no such route) or 501 (not
// implemented) gets a "not available" box instead.

import { UNAVAILABLE, badge, clear, el, fmtAgo, fmtTime, poll, table, unavailableBox, v1 } from "./lib.js";

const box = document.getElementById("sessions");
const view = document.getElementById("live-view");
const liveStatus = document.getElementById("live-status");
let stopList = null;
let stopLive = null;
let selected = null;

const idOf = (s) => s.session_id || s.id;

function renderLive(s) {
  liveStatus.replaceChildren(badge(s.status));
  const url = s.live_view_url;
  if (url) {
    const frame = view.querySelector("iframe");
    if (!frame || frame.dataset.src !== url) {
      clear(view, el("iframe", { src: url, title: `Live view of session ${idOf(s)}`, dataset: { src: url } }));
    }
  } else {
    clear(view, el("p", { class: "muted" }, s.closed_at
      ? `Session ${idOf(s)} closed ${fmtAgo(s.closed_at)}${s.close_reason ? ` (${s.close_reason})` : ""}.`
      : `Session ${idOf(s)} has no live view.`));
  }
}

function watch(id) {
  selected = id;
  if (stopLive) stopLive();
  for (const row of box.querySelectorAll("tr[data-id]")) row.classList.toggle("selected", row.dataset.id === id);
  clear(view, el("p", { class: "muted" }, `Opening session ${id}…`));
  stopLive = poll(async () => {
    try {
      renderLive(await v1("sessions/get", { session_id: id }));
    } catch (err) {
      if (stopLive) stopLive();
      liveStatus.replaceChildren();
      clear(view, err.status === 501
        ? unavailableBox("Browser sessions", err)
        : el("p", { class: "error-box" }, err.message));
    }
  }, 2000);
}

async function load() {
  let answer;
  try {
    answer = await v1("sessions/list");
  } catch (err) {
    if (!UNAVAILABLE.has(err.status)) throw err;
    if (stopList) stopList();
    clear(box, unavailableBox("Session lists", err));
    box.removeAttribute("aria-busy");
    return;
  }
  const time = (iso, text) => el("time", { datetime: iso, title: iso }, text);
  clear(box, table([
    { label: "Session", cell: (s) => el("button", { type: "button", class: "link mono", onclick: () => watch(idOf(s)), "aria-label": `Watch session ${idOf(s)}` }, idOf(s)) },
    { label: "Status", cell: (s) => badge(s.status) },
    { label: "Started", cell: (s) => time(s.created_at, fmtAgo(s.created_at)) },
    { label: "Ends", cell: (s) => (s.closed_at
      ? el("span", null, "closed ", time(s.closed_at, fmtAgo(s.closed_at)), s.close_reason ? ` (${s.close_reason})` : "")
      : time(s.expires_at, fmtTime(s.expires_at))) },
    { label: "Live view", cell: (s) => (s.live_view_url
      ? el("a", { href: s.live_view_url, target: "_blank", rel: "noopener", "aria-label": `Live view of session ${idOf(s)} in a new tab` }, "open")
      : "—") },
  ], answer.sessions || [], { empty: "No browser sessions.", caption: "Browser sessions",
    rowAttrs: (s) => ({ dataset: { id: idOf(s) }, class: idOf(s) === selected ? "selected" : null }) }));
  box.removeAttribute("aria-busy");
}

document.getElementById("open-session").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = event.target.elements.session_id.value.trim();
  if (id) watch(id);
});

stopList = poll(load, 5000);
