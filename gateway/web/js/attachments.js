// Attachments in the client: the composer's uploads (chosen files, their progress and
// errors) and how a message shows its attachments. Images show their thumbnail and
// other files a download button; both are fetched with the Authorization header (an
// <img src> or <a href> cannot carry the bearer token) and shown through blob: URLs,
// which are revoked once no shown message needs them.

import { clear, h } from "./dom.js";
import { describe } from "./dialogs.js";

/** Media types the server makes thumbnails of (docs/media.md). */
const THUMBNAIL_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"]);

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function errorText(err) {
  if (err.status === 413) return `Too large to send: ${err.message}`;
  return describe(err);
}

/** The files chosen in the composer: each is uploaded at once, then sent by id. */
export class Uploads extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.items = []; // {key, file, state: "uploading"|"ready"|"failed", progress, ref, error, abort}
    this.next = 0;
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  add(files) {
    for (const file of files) {
      const item = { key: ++this.next, file, state: "uploading", progress: 0, ref: null, error: null, abort: null };
      this.items.push(item);
      this.start(item);
    }
    this.changed();
  }

  start(item) {
    Object.assign(item, { state: "uploading", progress: 0, error: null });
    const { promise, abort } = this.api.upload(item.file, (fraction) => {
      item.progress = fraction;
      this.changed();
    });
    item.abort = abort;
    promise.then((ref) => {
      Object.assign(item, { state: "ready", ref, abort: null });
      this.changed();
    }, (err) => {
      if (!this.items.includes(item)) return;
      Object.assign(item, { state: "failed", error: errorText(err), abort: null });
      this.changed();
    });
  }

  remove(key) {
    const item = this.items.find((i) => i.key === key);
    if (!item) return;
    if (item.abort) item.abort();
    this.items = this.items.filter((i) => i !== item);
    this.changed();
  }

  get busy() { return this.items.some((i) => i.state === "uploading"); }
  get failed() { return this.items.some((i) => i.state === "failed"); }

  /** The uploaded attachments as message views carry them, and empties the tray. */
  take() {
    const refs = this.items.filter((i) => i.state === "ready").map((i) => ({
      id: i.ref.id,
      size: i.ref.size,
      content_type: i.ref.content_type,
      name: i.ref.name ?? i.file.name ?? null,
      width: i.ref.width ?? null,
      height: i.ref.height ?? null,
    }));
    this.items = [];
    this.changed();
    return refs;
  }

  clearAll() {
    for (const item of this.items) if (item.abort) item.abort();
    this.items = [];
    this.changed();
  }
}

/** The tray above the message box: one row per chosen file. */
export function renderTray(el, uploads) {
  clear(el);
  el.hidden = uploads.items.length === 0;
  for (const item of uploads.items) {
    const name = item.file.name || "file";
    let state;
    if (item.state === "uploading") {
      const percent = Math.round(item.progress * 100);
      state = h("progress", { max: "100", value: String(percent), "aria-label": `Uploading ${name}` });
    } else if (item.state === "ready") {
      state = h("span", { class: "upload-ready" }, "ready");
    } else {
      state = h("span", { class: "error", role: "alert" }, item.error,
        h("button", { type: "button", class: "retry", onclick: () => uploads.start(item) }, "Retry"));
    }
    el.append(h("li", { class: "upload", dataset: { state: item.state } },
      h("span", { class: "upload-name" }, `${name} (${formatSize(item.file.size)})`),
      state,
      h("button", {
        type: "button", class: "icon", "aria-label": `Remove ${name}`,
        onclick: () => uploads.remove(item.key),
      }, "✕")));
  }
}

/** blob: URLs of thumbnails, per attachment id, kept while a shown message needs them. */
export class Previews {
  constructor(api) {
    this.api = api;
    this.urls = new Map(); // id -> Promise<string> (the object URL)
    this.used = new Set();
  }

  url(id) {
    this.used.add(id);
    if (!this.urls.has(id)) {
      const p = this.api.blob(`/v1/attachments/${encodeURIComponent(id)}/thumbnail`)
        .then((blob) => URL.createObjectURL(blob));
      p.catch(() => this.urls.delete(id));
      this.urls.set(id, p);
    }
    return this.urls.get(id);
  }

  /** Call before a render; `sweep()` after it revokes the URLs the render did not use. */
  begin() { this.used = new Set(); }

  sweep() {
    for (const [id, p] of this.urls) {
      if (!this.used.has(id)) {
        this.urls.delete(id);
        p.then((url) => URL.revokeObjectURL(url), () => {});
      }
    }
  }

  revokeAll() {
    this.begin();
    this.sweep();
  }
}

/** Fetch a file with the header and save it under its name through a short-lived blob URL. */
export async function download(api, ref) {
  const blob = await api.blob(`/v1/attachments/${encodeURIComponent(ref.id)}`);
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: ref.name || "attachment", hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function fileButton(api, ref, onError) {
  const name = ref.name || "attachment";
  return h("button", {
    type: "button", class: "file",
    "aria-label": `Download ${name}, ${formatSize(ref.size)}`,
    onclick: () => download(api, ref).catch(onError),
  }, h("span", { "aria-hidden": "true" }, "📄 "), name, h("span", { class: "muted small" }, ` ${formatSize(ref.size)}`));
}

/** A message's attachments: image previews (thumbnails) and download buttons. */
export function renderAttachments(api, previews, attachments, onError) {
  if (!attachments || !attachments.length) return null;
  return h("div", { class: "attachments" }, attachments.map((ref) => {
    if (!THUMBNAIL_TYPES.has(ref.content_type)) return fileButton(api, ref, onError);
    const name = ref.name || "image";
    const img = h("img", { class: "preview", alt: name });
    if (ref.width && ref.height) {
      // Room for the thumbnail before it arrives, so the list does not jump.
      const scale = Math.min(1, 240 / Math.max(ref.width, ref.height));
      img.width = Math.max(1, Math.round(ref.width * scale));
      img.height = Math.max(1, Math.round(ref.height * scale));
    }
    const figure = h("figure", { class: "image", dataset: { state: "loading" } },
      h("button", {
        type: "button", class: "image-open",
        "aria-label": `Download image ${name}, ${formatSize(ref.size)}`,
        onclick: () => download(api, ref).catch(onError),
      }, img));
    previews.url(ref.id).then((url) => {
      img.src = url;
      figure.dataset.state = "shown";
    }, (err) => {
      // Not an image after all (or gone): offer the file instead. Offline: the next
      // render asks again.
      if (err.status === 404 || err.status === 422) figure.replaceWith(fileButton(api, ref, onError));
      else figure.dataset.state = "error";
    });
    return figure;
  }));
}

/** A one-line summary for the conversation list and reply quotes. */
export function attachmentSummary(attachments) {
  if (!attachments || !attachments.length) return "";
  const images = attachments.filter((a) => THUMBNAIL_TYPES.has(a.content_type)).length;
  if (images === attachments.length) return images === 1 ? "📷 Photo" : `📷 ${images} photos`;
  return attachments.length === 1 ? `📎 ${attachments[0].name || "File"}` : `📎 ${attachments.length} files`;
}
