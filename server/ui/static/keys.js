// API-key settings: the caller's keys by prefix (revoke), and a form for a new key whose
// secret is shown once, with a copy button.

import { badge, clear, deleteJSON, el, fmtTime, getJSON, postJSON, showError, table, toast } from "./lib.js";

const box = document.getElementById("keys");
const form = document.getElementById("key-form");
const error = document.getElementById("key-error");
const shown = document.getElementById("new-key");
const value = document.getElementById("new-key-value");

function keyStatus(k) {
  if (k.revoked) return "revoked";
  if (k.expires_at && Date.parse(k.expires_at) <= Date.now()) return "expired";
  return "active";
}

async function load() {
  const { data } = await getJSON("/api/auth/keys");
  clear(box, table([
    { label: "Prefix", cell: (k) => el("code", null, k.prefix) },
    { label: "Name", cell: (k) => k.name },
    { label: "Created", cell: (k) => fmtTime(k.created_at) },
    { label: "Expires", cell: (k) => (k.expires_at ? fmtTime(k.expires_at) : "never") },
    { label: "Status", cell: (k) => badge(keyStatus(k)) },
    { label: "", cell: (k) => (k.revoked ? "" : el("button", {
      type: "button", class: "danger", "aria-label": `Revoke key ${k.prefix}`,
      onclick: () => revoke(k),
    }, "Revoke")) },
  ], data, { empty: "No API keys yet.", caption: "API keys", rowAttrs: (k) => ({ dataset: { prefix: k.prefix } }) }));
  box.removeAttribute("aria-busy");
}

async function revoke(key) {
  if (!window.confirm(`Revoke key ${key.prefix} (${key.name})? Anything using it stops working at once.`)) return;
  try {
    await deleteJSON(`/api/auth/keys/${encodeURIComponent(key.prefix)}`);
    toast(`Key ${key.prefix} revoked`);
    await load();
  } catch (err) { showError(err); }
}

/** The end of the chosen day in the browser's time zone, as ISO 8601 UTC. */
function expiry(day) {
  return day ? new Date(`${day}T23:59:59`).toISOString() : null;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = form.elements.name.value.trim();
  error.textContent = "";
  if (!name) { error.textContent = "Give the key a name."; form.elements.name.focus(); return; }
  const body = { name };
  const expires = expiry(form.elements.expires.value);
  if (expires) {
    if (Date.parse(expires) <= Date.now()) { error.textContent = "The expiry must lie in the future."; return; }
    body.expires_at = expires;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const created = await postJSON("/api/auth/keys", body);
    value.textContent = created.key;
    shown.hidden = false;
    form.reset();
    document.getElementById("copy-key").focus();
    await load();
  } catch (err) {
    error.textContent = err.issues.length ? err.issues.map((i) => i.message).join("; ") : err.message;
  } finally { button.disabled = false; }
});

document.getElementById("copy-key").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(value.textContent);
    toast("Key copied");
  } catch {
    // No clipboard access (plain HTTP off localhost): select it for Ctrl+C instead.
    getSelection().selectAllChildren(value);
    toast("Press Ctrl+C to copy the selected key");
  }
});

load().catch(showError);
