// The one modal dialog (a native <dialog>: focus is trapped, Escape closes, the opener
// gets focus back), the toast line, and error wording.

import { clear, h } from "./dom.js";

const $ = (id) => document.getElementById(id);
let onClose = null;

export function openDialog(title, ...content) {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  const body = clear($("dialog-body"));
  body.append(...content.flat());
  const opener = document.activeElement;
  if (!dialog.open) dialog.showModal();
  onClose = () => {
    if (opener && opener.isConnected) opener.focus();
  };
  const first = body.querySelector("input, select, textarea, button");
  if (first) first.focus();
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
