// The login page (auth on only): email and password → tokens in sessionStorage, then
// back to the page that sent you here (`?next=`).

import { safeNext, saveSession } from "./auth.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const next = safeNext(new URLSearchParams(location.search).get("next"));

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  if (!email || !password) {
    error.textContent = "Enter your email and password.";
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  error.textContent = "";
  try {
    const res = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ email, password }),
    });
    const data = await res.json().catch(() => null);
    if (res.ok) {
      saveSession(data);
      location.assign(next);
      return;
    }
    error.textContent = res.status === 401 ? "Wrong email or password."
      : res.status === 429 ? "Too many attempts: wait a minute and try again."
        : (data && data.error) || `${res.status} ${res.statusText}`;
    form.elements.password.select();
  } catch (err) {
    error.textContent = `The server could not be reached (${err.message}).`;
  } finally {
    button.disabled = false;
  }
});

form.elements.email.focus();
