// The one modal dialog (a native <dialog>: focus is trapped, Escape closes, the opener
// gets focus back), the toast line, and error wording.

import { clear, h } from "./dom.js";

const $ = (id) => document.getElementById(id);
let onClose = null;

export function openDialog(title, ...content) {
  const dialog = $("dialog");
  const redraw = dialog.open;
  // Redrawn while open (a live change): keep what the person typed, and their focus.
  const typed = new Map();
  let focused = null;
  if (redraw) {
    for (const input of $("dialog-body").querySelectorAll("input[id], textarea[id]")) typed.set(input.id, input.value);
    const active = document.activeElement;
    if (active && $("dialog-body").contains(active)) {
      if (active.id) focused = `#${CSS.escape(active.id)}`;
      else if (active.getAttribute("aria-label")) focused = `[aria-label="${CSS.escape(active.getAttribute("aria-label"))}"]`;
      else if (active.textContent) focused = active.textContent;
    }
  }
  $("dialog-title").textContent = title;
  const body = clear($("dialog-body"));
  body.append(...content.flat());
  for (const [id, value] of typed) {
    const input = body.querySelector(`#${CSS.escape(id)}`);
    if (input) input.value = value;
  }
  if (!redraw) {
    const opener = document.activeElement;
    dialog.showModal();
    onClose = () => {
      if (opener && opener.isConnected) opener.focus();
    };
  }
  let again = null;
  if (focused && (focused.startsWith("#") || focused.startsWith("["))) again = body.querySelector(focused);
  else if (focused) again = [...body.querySelectorAll("button")].find((b) => b.textContent === focused);
  const first = again || body.querySelector("input, select, textarea, button");
  if (first && (again || !redraw || !body.contains(document.activeElement))) first.focus();
  return body;
}

export function closeDialog() {
  const dialog = $("dialog");
  if (dialog.open) dialog.close();
}

export function dialogBody() {
  return $("dialog").open ? $("dialog-body") : null;
}

$("dialog").addEventListener("close", () => {
  clear($("dialog-body"));
  if (onClose) onClose();
  onClose = null;
});

let toastTimer = null;
export function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 3500);
}

export function describe(err) {
  const fields = err.details && err.details.fields;
  if (fields && fields.length) {
    return `${err.message}: ${fields.map((f) => `${f.field || "input"} ${f.message}`).join("; ")}`;
  }
  return err.message || String(err);
}

/** A labelled input: [label, input]. */
export function field(id, label, attrs = {}) {
  return [h("label", { for: id }, label), h("input", { id, name: id, ...attrs })];
}

export function errorLine() {
  return h("p", { class: "error", role: "alert" });
}
