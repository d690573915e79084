// Credentials of the UI when the server has an `auth` section (body[data-auth="on"]).
//
// The login answer (access + refresh token, expiry, user) is kept in sessionStorage:
// it survives moving between pages of one tab and a reload, and is gone when the tab
// closes; other tabs log in on their own (docs/ui.md explains the choice). Every /api
// and /v1 call goes through `apiFetch`, which sends the access token, renews it shortly
// before it expires (so an expired token never costs a failed request), renews it once
// more on a 401, and sends the browser to /login when renewing fails. WebSockets get a
// single-use ticket (`wsURL`): a token never goes into a URL.

export const AUTH_ON = document.body.dataset.auth === "on";
const STORE_KEY = "partitur.session";
const RENEW_MARGIN_MS = 30_000;

function load() {
  try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch { return null; }
}

/** Keep a login or refresh answer ({access_token, refresh_token, expires_in, user}). */
export function saveSession(answer) {
  const previous = load();
  sessionStorage.setItem(STORE_KEY, JSON.stringify({
    access: answer.access_token,
    refresh: answer.refresh_token,
    expires: Date.now() + Number(answer.expires_in) * 1000,
    user: answer.user || (previous && previous.user) || null,
  }));
}

export function clearSession() {
  sessionStorage.removeItem(STORE_KEY);
}

export function currentUser() {
  const s = load();
  return s ? s.user : null;
}

/** Where /login sends you back to: a path on this server, never /login itself. */
export function safeNext(raw) {
  if (!raw || !raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) return "/";
  return raw.startsWith("/login") ? "/" : raw;
}

const never = () => new Promise(() => {});

/** Forget the session and open the login page (coming back here afterwards). */
export function toLogin() {
  clearSession();
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
  return never(); // nothing after this should run or report an error
}

let renewing = null;
/** Trade the refresh token for new tokens (one request at a time); true on success. */
function renew() {
  if (!renewing) {
    renewing = (async () => {
      const s = load();
      if (!s || !s.refresh) return false;
      const res = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh_token: s.refresh }),
      });
      if (!res.ok) return false;
      saveSession(await res.json());
      return true;
    })().catch(() => false).finally(() => { renewing = null; });
  }
  return renewing;
}

function withToken(init, token) {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

/** fetch() for /api and /v1: the access token when auth is on, renewed as needed. */
export async function apiFetch(path, init = {}) {
  if (!AUTH_ON) return fetch(path, init);
  let s = load();
  if (!s) return toLogin();
  if (s.expires - Date.now() < RENEW_MARGIN_MS) {
    if (!(await renew())) return toLogin();
    s = load();
  }
  const res = await fetch(path, withToken(init, s.access));
  if (res.status !== 401) return res;
  // Revoked, or the server's clock disagrees with ours: renew once and try again.
  if (!(await renew())) return toLogin();
  const again = await fetch(path, withToken(init, load().access));
  return again.status === 401 ? toLogin() : again;
}

/** The ws:// URL of an /api path, with a fresh single-use ticket when auth is on. */
export async function wsURL(pathAndQuery) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const url = new URL(`${proto}://${location.host}${pathAndQuery}`);
  if (AUTH_ON) {
    const res = await apiFetch("/api/auth/ws-ticket", { method: "POST" });
    if (!res.ok) throw new Error(`no WebSocket ticket (${res.status})`);
    url.searchParams.set("ticket", (await res.json()).ticket);
  }
  return url.href;
}

/** Log out: revoke this login's refresh tokens, forget them, open the login page. */
export async function logout() {
  const s = load();
  if (s) {
    await apiFetch("/api/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refresh }),
    }).catch(() => null);
  }
  clearSession();
  location.assign("/login");
}

/** Fill the header's account slot: who is logged in, and a Log out button. */
function renderAccount() {
  const slot = document.getElementById("account");
  if (!AUTH_ON || !slot || document.body.dataset.page === "login") return;
  const user = currentUser();
  if (!user) return;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = user.email;
  who.title = user.name ? `${user.name} <${user.email}>` : user.email;
  const out = document.createElement("button");
  out.type = "button";
  out.textContent = "Log out";
  out.addEventListener("click", () => { out.disabled = true; logout(); });
  slot.replaceChildren(who, out);
}

// A page of a server with auth, opened with no session: straight to the login page,
// before any request can fail.
if (AUTH_ON && document.body.dataset.page !== "login" && !load()) toLogin();
else renderAccount();
