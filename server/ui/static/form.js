// Forms generated from an input schema ({name: {type, required, default, options,
// multiple, secret, description, min, max, pattern}}): task run forms and approvals.

import { el } from "./lib.js";

const present = (v) => v !== null && v !== undefined;
let counter = 0;

function control(name, spec, id) {
  const type = spec.type || "string";
  const def = spec.default;
  const common = { id, name, required: spec.required && !present(def) ? true : null };
  if (Array.isArray(spec.options) && spec.options.length) {
    const chosen = new Set((Array.isArray(def) ? def : present(def) ? [def] : []).map(String));
    const select = el("select", { ...common, multiple: spec.multiple ? true : null, size: spec.multiple ? Math.min(6, spec.options.length) : null });
    if (!spec.multiple && !(spec.required && present(def))) select.append(el("option", { value: "" }, "—"));
    for (const opt of spec.options) {
      select.append(el("option", { value: String(opt), selected: chosen.has(String(opt)) ? true : null }, String(opt)));
    }
    return select;
  }
  if (type === "boolean") {
    return el("input", { ...common, type: "checkbox", checked: def === true ? true : null, required: null });
  }
  if (type === "text" || type === "object" || type === "array" || spec.multiple) {
    let value = "";
    if (present(def)) value = type === "text" ? String(def) : spec.multiple && type !== "array" && type !== "object" && Array.isArray(def) ? def.join("\n") : JSON.stringify(def, null, 2);
    const placeholder = type === "object" ? "{ JSON object }" : type === "array" ? "[ JSON array ]" : spec.multiple ? "one value per line" : null;
    const area = el("textarea", { ...common, rows: type === "text" ? 4 : 3, placeholder, spellcheck: type === "text" ? null : "false" });
    area.value = value;
    return area;
  }
  const input = el("input", { ...common, autocomplete: spec.secret ? "new-password" : "off" });
  if (spec.secret) input.type = "password";
  else if (type === "integer" || type === "number") {
    input.type = "number";
    input.step = type === "integer" ? "1" : "any";
    if (present(spec.min)) input.min = String(spec.min);
    if (present(spec.max)) input.max = String(spec.max);
  } else if (type === "date") input.type = "date";
  else if (type === "datetime") input.type = "datetime-local";
  else input.type = "text";
  if (present(def)) input.value = type === "datetime" ? String(def).replace(/Z$|[+-]\d\d:\d\d$/, "").slice(0, 19) : String(def);
  return input;
}

/** Fill `form` with one field per schema entry; returns {read(), showIssues(issues)}. */
export function buildForm(form, schema, { submitLabel = "Run", extraButtons = [] } = {}) {
  const prefix = `f${++counter}`;
  const fields = [];
  form.replaceChildren();
  const entries = Object.entries(schema || {});
  if (!entries.length) form.append(el("p", { class: "muted" }, "This takes no input."));
  for (const [name, raw] of entries) {
    const spec = Object.fromEntries(Object.entries(raw || {}).filter(([, v]) => present(v)));
    const id = `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const input = control(name, spec, id);
    const typeNote = `${spec.type || "string"}${spec.multiple ? "[]" : ""}${spec.secret ? " · secret" : ""}`;
    const label = el("label", { for: id }, name, spec.required ? el("span", { class: "req", "aria-hidden": "true" }, " *") : null,
      el("span", { class: "type" }, typeNote));
    const hintText = [spec.description, spec.pattern ? `pattern ${spec.pattern}` : null,
      present(spec.min) || present(spec.max) ? `range ${spec.min ?? "…"}–${spec.max ?? "…"}` : null].filter(Boolean).join(" · ");
    if (hintText) input.setAttribute("aria-describedby", `${id}-hint`);
    const error = el("div", { class: "field-error", id: `${id}-err`, role: "alert" });
    const row = el("div", { class: `field${spec.type === "boolean" ? " check" : ""}` }, label, input,
      hintText ? el("div", { class: "hint", id: `${id}-hint` }, hintText) : null, error);
    form.append(row);
    fields.push({ name, spec, input, error });
  }
  const formError = el("div", { class: "form-error", role: "alert" });
  const submit = el("button", { type: "submit", class: "primary" }, submitLabel);
  form.append(formError, el("div", { class: "buttons" }, submit, ...extraButtons));

  function read() {
    const values = {};
    const problems = [];
    for (const { name, spec, input } of fields) {
      const type = spec.type || "string";
      if (input instanceof HTMLSelectElement) {
        const chosen = [...input.selectedOptions].map((o) => o.value).filter((v) => v !== "");
        if (spec.multiple) { if (chosen.length) values[name] = chosen; }
        else if (chosen.length) values[name] = chosen[0];
        continue;
      }
      if (type === "boolean") { values[name] = input.checked; continue; }
      const text = input.value;
      if (text.trim() === "") continue; // absent: the server applies defaults and `required`
      if (type === "object" || type === "array") {
        try { values[name] = JSON.parse(text); }
        catch { problems.push({ path: name, message: `not valid JSON` }); }
      } else if (spec.multiple) {
        values[name] = text.split("\n").map((s) => s.trim()).filter(Boolean);
      } else if (type === "integer" || type === "number") {
        values[name] = Number(text);
      } else values[name] = text;
    }
    return { values, problems };
  }

  function showIssues(issues, message) {
    for (const f of fields) { f.error.textContent = ""; f.input.removeAttribute("aria-invalid"); }
    formError.textContent = message || "";
    for (const issue of issues || []) {
      const path = String(issue.path || "").replace(/^input\./, "").split(".")[0];
      const field = fields.find((f) => f.name === path);
      if (field) {
        field.error.textContent = issue.message;
        field.input.setAttribute("aria-invalid", "true");
      } else formError.textContent += ` ${issue.path ? `${issue.path}: ` : ""}${issue.message}`;
    }
  }
  return { read, showIssues, submit };
}
