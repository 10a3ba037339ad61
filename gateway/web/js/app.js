// The web client's entry: log in or register, then the conversation list and the open
// chat, kept live by the WebSocket. Views are plain functions that rebuild their part of
// the page from the store (js/store.js) when it reports a change.

import { Api, featuresOf } from "./api.js";
import { RealtimeSocket } from "./socket.js";
import { Store } from "./store.js";
import { clear, dayKey, formatDay, formatShort, formatTime, h, hue, initials } from "./dom.js";
import { closeDialog, describe, toast } from "./dialogs.js";
import * as details from "./details.js";
import { Previews, Uploads, attachmentSummary, renderAttachments, renderTray } from "./attachments.js";
import { DevicePush, dropDevice, onNotificationClick } from "./notifications.js";

const TOKEN_KEY = "messenger.token";
const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

const $ = (id) => document.getElementById(id);
const api = new Api();
let store = null;
let socket = null;
let showArchived = false;
let replyTo = null;
let uploads = null; // the composer's chosen files (js/attachments.js)
let previews = null; // blob: URLs of the thumbnails shown
let push = null; // this device's notifications (js/notifications.js)

// -- start ------------------------------------------------------------------------------

async function boot() {
  const token = localStorage.getItem(TOKEN_KEY);
  api.addEventListener("unauthorized", () => signedOut("Your session ended. Please log in again."));
  if (!token) return showAuth();
  api.token = token;
  try {
    const me = await api.me();
    await enter(me);
  } catch (err) {
    if (err.status === 401 || err.status === 404) return signedOut();
    showAuth(err.message);
  }
}

async function enter(me) {
  const features = featuresOf(await api.openapi());
  store = new Store(api);
  socket = new RealtimeSocket(api, () => store.seqsForResume());
  store.attach(socket);
  uploads = new Uploads(api);
  uploads.addEventListener("change", () => renderTray($("upload-tray"), uploads));
  previews = new Previews(api);
  push = new DevicePush(api, me.id, features.push);
  push.check();
  $("attach-button").hidden = !features.attachments;
  store.addEventListener("change", (e) => onChange(e.detail));
  socket.addEventListener("revoked", () => signedOut("You were logged out."));
  $("auth").hidden = true;
  $("main").hidden = false;
  renderMe(me);
  document.querySelector(".list-tabs").hidden = !features.inbox;
  $("show-archived").hidden = !features.inbox;
  await store.start(me, features);
  socket.start();
  renderList();
  noteTitles();
  const wanted = location.hash.slice(1);
  if (wanted && store.conversations.has(decodeURIComponent(wanted))) openChat(decodeURIComponent(wanted));
}

function signedOut(message) {
  if (socket) socket.stop();
  socket = null;
  if (uploads) uploads.clearAll();
  if (previews) previews.revokeAll();
  uploads = null;
  previews = null;
  // A session that ended elsewhere cannot remove this device's target: unsubscribing
  // makes the push service refuse it, and the notifier then removes it.
  if (push && push.saved()) dropDevice();
  push = null;
  store = null;
  api.token = null;
  localStorage.removeItem(TOKEN_KEY);
  closeDialog();
  showAuth(message);
}

function showAuth(message = "") {
  selectTab("login");
  $("main").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  history.replaceState(null, "", location.pathname);
  $("login-username").focus();
}

// -- auth screen ------------------------------------------------------------------------

function selectTab(which) {
  const login = which === "login";
  $("tab-login").setAttribute("aria-selected", String(login));
  $("tab-register").setAttribute("aria-selected", String(!login));
  $("tab-login").tabIndex = login ? 0 : -1;
  $("tab-register").tabIndex = login ? -1 : 0;
  $("login-form").hidden = !login;
  $("register-form").hidden = login;
  $("auth-error").textContent = "";
}

function wireAuth() {
  $("tab-login").addEventListener("click", () => selectTab("login"));
  $("tab-register").addEventListener("click", () => selectTab("register"));
  for (const tab of [$("tab-login"), $("tab-register")]) {
    tab.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const other = tab.id === "tab-login" ? "register" : "login";
        selectTab(other);
        $(`tab-${other}`).focus();
      }
    });
  }
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await logIn($("login-username").value.trim(), $("login-password").value);
  });
  $("register-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const username = $("register-username").value.trim();
    const password = $("register-password").value;
    try {
      await api.register(username, password, $("register-display").value.trim());
    } catch (err) {
      $("auth-error").textContent = describe(err);
      return;
    }
    await logIn(username, password);
  });
}

async function logIn(username, password) {
  try {
    const session = await api.login(username, password);
    localStorage.setItem(TOKEN_KEY, session.token);
    api.token = session.token;
    for (const f of [$("login-form"), $("register-form")]) f.reset();
    await enter(await api.me());
  } catch (err) {
    $("auth-error").textContent = describe(err);
  }
}

// -- store changes ----------------------------------------------------------------------

function onChange({ what, key }) {
  if (!store) return;
  switch (what) {
    case "conversations":
    case "names":
    case "blocks":
      noteTitles();
      renderList();
      if (store.openKey) renderHeader();
      if (what === "names" && store.openKey) renderMessages({ keepScroll: true });
      break;
    case "message":
    case "receipt":
      renderList();
      if (key === store.openKey) renderMessages({ keepScroll: true });
      break;
    case "thread":
      if (key === store.openKey) renderMessages({ toBottom: true });
      break;
    case "thread-jump":
      if (key === store.openKey) renderMessages();
      break;
    case "thread-older":
      if (key === store.openKey) renderMessages({ keepFromBottom: true });
      break;
    case "thread-newer":
      if (key === store.openKey) renderMessages({ keepScroll: true });
      break;
    case "typing":
      if (key === store.openKey) renderTyping();
      break;
    case "presence":
      renderList();
      if (store.openKey) renderHeader();
      break;
    case "group":
      renderList();
      if (key === store.openKey) {
        renderHeader();
        renderMessages({ keepScroll: true });
      }
      details.refresh(store, key);
      break;
    case "group-gone":
      if (key === store.openKey) closeChat();
      break;
    case "connection":
      renderConnection();
      break;
    default:
      break;
  }
}

/** What the service worker names a notification after (only while notifications are on). */
function noteTitles() {
  if (push && store) {
    const shown = store;
    push.noteTitles(() => Object.fromEntries([...shown.conversations.keys()].map((k) => [k, shown.titleOf(k)])));
  }
}

// -- sidebar ----------------------------------------------------------------------------

function avatar(id, name, online = false) {
  return h("span", {
    class: `avatar${online ? " online" : ""}`,
    style: { background: `hsl(${hue(id)} 45% 42%)` },
    "aria-hidden": "true",
  }, initials(name));
}

function renderMe(me) {
  $("me-name").textContent = me.display_name;
  const a = avatar(me.id, me.display_name);
  a.id = "me-avatar";
  $("me-avatar").replaceWith(a);
}

function renderConnection() {
  const el = $("connection");
  const state = socket ? socket.state : "offline";
  el.dataset.state = state;
  el.textContent = {
    live: "online", connecting: "connecting…", resuming: "catching up…", offline: "offline",
  }[state];
}

function preview(conv) {
  const m = conv.last_message;
  if (!m) return conv.kind === "group" ? "No messages yet" : "";
  const who = m.sender_id === store.me.id ? "You: " : conv.kind === "group" ? `${store.nameNow(m.sender_id)}: ` : "";
  return who + (m.deleted ? "Message deleted" : m.content || attachmentSummary(m.attachments));
}

function renderList() {
  if (!store) return;
  const list = $("conversation-list");
  const convs = store.sortedConversations(showArchived);
  const focusedKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  clear(list);
  for (const conv of convs) {
    const title = store.titleOf(conv.key);
    const online = conv.kind === "user" && (store.presence.get(conv.id) || {}).online;
    const unread = conv.unread_count || 0;
    const label = [title, unread ? `${unread} unread` : null, conv.muted ? "muted" : null,
      online ? "online" : null].filter(Boolean).join(", ");
    const button = h("button", {
      type: "button",
      dataset: { key: conv.key },
      "aria-current": store.openKey === conv.key ? "true" : "false",
      "aria-label": label,
      onclick: () => openChat(conv.key),
    },
    h("span", { class: "conv-avatar" }, avatar(conv.id, title, online)),
    h("span", { class: "conv-title" }, title),
    h("span", { class: "conv-time" }, formatShort(conv.last_activity_at && conv.last_message ? conv.last_activity_at : null)),
    h("span", { class: "conv-preview" }, preview(conv)),
    h("span", { class: "conv-side" },
      conv.muted ? h("span", { class: "muted-label", "aria-hidden": "true" }, "muted") : null,
      unread ? h("span", { class: `badge${conv.muted ? " muted-badge" : ""}`, "data-unread": String(unread) }, String(unread)) : null));
    list.append(h("li", {}, button));
  }
  $("empty-list").hidden = convs.length > 0;
  if (focusedKey) {
    const again = list.querySelector(`button[data-key="${CSS.escape(focusedKey)}"]`);
    if (again) again.focus();
  }
  const totalUnread = [...store.conversations.values()].reduce((n, c) => n + (c.muted ? 0 : c.unread_count || 0), 0);
  document.title = totalUnread ? `(${totalUnread}) Messenger` : "Messenger";
}

// -- the open chat ----------------------------------------------------------------------

async function openChat(key) {
  replyTo = null;
  renderReplyBar();
  if (uploads && store.openKey !== key) uploads.clearAll();
  store.openKey = key;
  history.replaceState(null, "", `#${encodeURIComponent(key)}`);
  $("main").classList.add("chat-open");
  $("no-chat").hidden = true;
  $("chat-pane").hidden = false;
  renderHeader();
  renderList();
  clear($("messages"));
  renderTyping();
  $("composer-input").focus();
  try {
    await store.open(key);
  } catch (err) {
    toast(describe(err));
  }
}

function closeChat() {
  if (store) store.openKey = null;
  history.replaceState(null, "", location.pathname);
  $("main").classList.remove("chat-open");
  $("chat-pane").hidden = true;
  $("no-chat").hidden = false;
  clear($("messages"));
  if (previews) previews.revokeAll();
  renderList();
  const first = $("conversation-list").querySelector("button");
  if (first) first.focus();
}

function lastSeenText(p) {
  if (!p) return "";
  if (p.online) return "online";
  if (!p.last_seen) return "offline";
  const when = new Date(p.last_seen * 1000);
  return `last seen ${formatShort(when.toISOString())} ${dayKey(when.toISOString()) === dayKey(new Date().toISOString()) ? "" : formatTime(when.toISOString())}`.trim();
}

function renderHeader() {
  const key = store.openKey;
  if (!key) return;
  const [kind, id] = key.split(":");
  const title = store.titleOf(key);
  $("chat-title").textContent = title;
  const presence = kind === "user" ? store.presence.get(id) : null;
  const a = avatar(id, title, presence && presence.online);
  a.id = "chat-avatar";
  $("chat-avatar").replaceWith(a);
  let subtitle = "";
  if (kind === "group") {
    const thread = store.thread(key);
    subtitle = thread.group ? `${thread.group.members.length} members` : "group";
  } else {
    subtitle = store.blocks.has(id) ? "blocked" : lastSeenText(presence);
  }
  $("chat-subtitle").textContent = subtitle;
  const blocked = kind === "user" && store.blocks.has(id);
  $("composer").hidden = blocked;
  $("blocked-note").hidden = !blocked;
}

function renderTyping() {
  const key = store && store.openKey;
  const who = key ? store.typingIn(key).map((id) => store.nameNow(id)) : [];
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

function ticks(thread, m) {
  const status = store.statusOf(thread, m);
  const text = { pending: "…", failed: "!", sent: "✓", delivered: "✓✓", read: "✓✓" }[status];
  let label = { pending: "sending", failed: "not sent", sent: "sent", delivered: "delivered", read: "read" }[status];
  if (m.receiver.kind === "group" && !m.pending && !m.failed) {
    const { reads, delivers } = store.groupCounts(thread, m);
    label += ` (read by ${reads}, delivered to ${delivers})`;
  }
  return h("span", { class: "ticks", "data-status": status, title: label, "aria-label": label }, text);
}

function messageActions(thread, m) {
  const f = store.features;
  if (m.pending || m.failed || m.deleted) return null;
  const mine = m.sender_id === store.me.id;
  const buttons = [];
  if (f.replies) buttons.push(h("button", { type: "button", onclick: () => startReply(m) }, "Reply"));
  if (f.reactions) {
    buttons.push(h("button", {
      type: "button", "aria-haspopup": "dialog",
      onclick: () => details.reactionPicker(store, m, REACTIONS),
    }, "React"));
  }
  if (f.edit && mine) buttons.push(h("button", { type: "button", onclick: () => details.editMessage(store, m) }, "Edit"));
  const canDelete = mine || (thread.group && ["owner", "admin"].includes(
    (thread.group.members.find((x) => x.user_id === store.me.id) || {}).role));
  if (f.remove && canDelete) {
    buttons.push(h("button", { type: "button", onclick: () => details.deleteMessage(store, m) }, "Delete"));
  }
  return buttons.length ? h("div", { class: "msg-actions" }, buttons) : null;
}

function renderMessage(thread, m, showAuthor) {
  const mine = m.sender_id === store.me.id;
  const classes = ["msg", mine ? "mine" : "theirs", m.failed ? "failed" : ""].join(" ");
  const when = m.created_at || m.local_at;
  const label = `${mine ? "You" : store.nameNow(m.sender_id)} at ${formatTime(when)}`;
  const reply = m.reply_to ? h("div", { class: "reply-quote" },
    `${store.nameNow(m.reply_to.sender_id)}: ${m.reply_to.deleted ? "Message deleted" : m.reply_to.preview || ""}`) : null;
  const reactions = m.reactions && Object.keys(m.reactions).length ? h("div", { class: "reactions" },
    Object.entries(m.reactions).map(([emoji, count]) => {
      const pressed = (m.my_reactions || []).includes(emoji);
      return h("button", {
        type: "button", "aria-pressed": String(pressed), "aria-label": `${emoji} ${count}`,
        dataset: { emoji },
        onclick: () => store.api.react(m.id, emoji, !pressed).catch((err) => toast(describe(err))),
      }, `${emoji} ${count}`);
    })) : null;
  return h("article", {
    class: classes, dataset: { id: m.id, seq: String(m.seq || ""), clientMsgId: m.client_msg_id || "" },
    "aria-label": label,
  },
  showAuthor && !mine ? h("div", { class: "author" }, store.nameNow(m.sender_id)) : null,
  reply,
  m.deleted ? null : renderAttachments(api, previews, m.attachments, (err) => toast(describe(err))),
  m.deleted ? h("div", { class: "text deleted" }, "This message was deleted")
    : m.content || !(m.attachments && m.attachments.length) ? h("div", { class: "text" }, m.content) : null,
  reactions,
  m.failed ? h("div", { class: "failed-note", role: "alert" }, `Not sent: ${m.error || "error"}`,
    h("button", { type: "button", class: "retry", onclick: () => store.retry(thread.key, m.id) }, "Retry")) : null,
  h("div", { class: "meta" },
    m.edited_at && !m.deleted ? h("span", { class: "edited" }, "edited") : null,
    h("time", { datetime: when || "" }, formatTime(when)),
    mine ? ticks(thread, m) : null),
  messageActions(thread, m));
}

function renderMessages({ toBottom = false, keepScroll = false, keepFromBottom = false } = {}) {
  const key = store.openKey;
  if (!key) return;
  const thread = store.thread(key);
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const focusedId = document.activeElement && box.contains(document.activeElement)
    ? (document.activeElement.closest(".msg") || {}).dataset : null;
  clear(box);
  previews.begin();
  if (thread.loaded && !thread.hasOlder) box.append(h("p", { class: "older-note" }, "This is the start of the conversation."));
  else if (thread.loaded) box.append(h("p", { class: "older-note" }, "Scroll up for older messages"));
  let lastDay = null;
  let lastSender = null;
  for (const m of thread.sorted()) {
    const when = m.created_at || m.local_at;
    const day = dayKey(when);
    if (day !== lastDay) {
      box.append(h("h3", { class: "day", dataset: { day: when.slice(0, 10) } }, formatDay(when)));
      lastDay = day;
      lastSender = null;
    }
    box.append(renderMessage(thread, m, key.startsWith("group:") && m.sender_id !== lastSender));
    lastSender = m.sender_id;
  }
  previews.sweep(); // revoke the blob: URLs of messages no longer shown
  $("to-latest").hidden = !thread.hasNewer;
  if (toBottom || (keepScroll && atBottom && !thread.hasNewer)) box.scrollTop = box.scrollHeight;
  else if (keepFromBottom) box.scrollTop = box.scrollHeight - fromBottom;
  if (focusedId && focusedId.id) {
    const again = box.querySelector(`[data-id="${CSS.escape(focusedId.id)}"] button`);
    if (again) again.focus();
  }
}

function startReply(m) {
  replyTo = m;
  renderReplyBar();
  $("composer-input").focus();
}

function renderReplyBar() {
  const bar = $("reply-bar");
  clear(bar);
  bar.hidden = !replyTo;
  if (!replyTo) return;
  bar.append(
    h("span", {}, `Replying to ${store.nameNow(replyTo.sender_id)}: ${replyTo.content || attachmentSummary(replyTo.attachments)}`),
    h("button", { type: "button", class: "icon", "aria-label": "Cancel reply", onclick: () => { replyTo = null; renderReplyBar(); } }, "✕"),
  );
}

function wireChat() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("composer-input");
    const text = input.value.trim();
    if (!store.openKey) return;
    if (uploads.busy) {
      toast("Wait for the files to finish uploading");
      return;
    }
    if (uploads.failed) {
      toast("Retry or remove the files that could not be uploaded");
      return;
    }
    const attachments = uploads.items.length ? uploads.take() : [];
    if (!text && !attachments.length) return;
    const extra = replyTo ? {
      reply_to_id: replyTo.id,
      reply_to: { id: replyTo.id, sender_id: replyTo.sender_id, preview: replyTo.content.slice(0, 100) },
    } : {};
    if (attachments.length) extra.attachments = attachments;
    replyTo = null;
    renderReplyBar();
    store.send(store.openKey, text, extra);
    input.value = "";
    input.style.height = "";
    const thread = store.thread(store.openKey);
    if (thread.hasNewer) store.loadLatest(store.openKey);
    else $("messages").scrollTop = $("messages").scrollHeight;
  });
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    } else if (e.key === "Escape" && replyTo) {
      replyTo = null;
      renderReplyBar();
    }
  });
  $("composer-input").addEventListener("input", (e) => {
    const input = e.target;
    input.style.height = "";
    input.style.height = `${Math.min(input.scrollHeight, 144)}px`;
    if (store && store.openKey && input.value.trim()) store.sendTyping(store.openKey);
  });
  $("messages").addEventListener("scroll", () => {
    const box = $("messages");
    if (!store || !store.openKey) return;
    if (box.scrollTop < 80) store.loadOlder(store.openKey).catch((err) => toast(describe(err)));
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) {
      store.loadNewer(store.openKey).catch((err) => toast(describe(err)));
    }
  });
  $("to-latest").addEventListener("click", async () => {
    await store.loadLatest(store.openKey);
    store.markRead(store.openKey);
    $("composer-input").focus();
  });
  const showJump = (open) => {
    $("jump-form").hidden = !open;
    $("jump-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("jump-date").focus();
    else $("jump-toggle").focus();
  };
  $("jump-toggle").addEventListener("click", () => showJump($("jump-form").hidden));
  $("jump-close").addEventListener("click", () => showJump(false));
  $("jump-form").addEventListener("keydown", (e) => {
    if (e.key === "Escape") showJump(false);
  });
  $("jump-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const day = $("jump-date").value;
    if (!day || !store.openKey) return;
    try {
      const start = await store.jumpTo(store.openKey, day);
      const box = $("messages");
      const first = [...box.querySelectorAll(".msg")].find((el) => {
        const t = el.querySelector("time");
        return t && t.getAttribute("datetime") >= start;
      });
      if (first) {
        first.scrollIntoView({ block: "start" });
        first.classList.add("flash");
        first.tabIndex = -1;
        first.focus();
        setTimeout(() => first.classList.remove("flash"), 1500);
      } else {
        toast("No messages on or after that date");
      }
    } catch (err) {
      toast(describe(err));
    }
  });
  $("attach-button").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = ""; // the same file can be chosen again
    if (files.length && uploads) uploads.add(files);
    $("composer-input").focus();
  });
  $("back").addEventListener("click", closeChat);
  $("chat-menu-button").addEventListener("click", () => details.conversation(store, store.openKey));
  document.addEventListener("visibilitychange", () => {
    if (store && store.openKey && document.visibilityState === "visible") {
      const thread = store.thread(store.openKey);
      if (!thread.hasNewer) store.markRead(store.openKey);
    }
  });
}

function wireSidebar() {
  $("me-button").addEventListener("click", () => details.account(store, {
    push,
    onRenamed: (me) => renderMe(me),
    onLogout: async (everywhere) => {
      if (push) await push.logout(); // while the session can still remove this device's target
      try {
        if (everywhere) await api.logoutEverywhere();
        else await api.logout();
      } catch (err) {
        if (err.status !== 401) {
          toast(describe(err));
          return;
        }
      }
      signedOut(everywhere ? "Logged out on every device." : "Logged out.");
    },
  }));
  $("new-chat").addEventListener("click", () => details.newChat(store, (key) => openChat(key)));
  $("new-group").addEventListener("click", () => details.newGroup(store, (key) => openChat(key)));
  for (const [id, archived] of [["show-active", false], ["show-archived", true]]) {
    $(id).addEventListener("click", () => {
      showArchived = archived;
      $("show-active").setAttribute("aria-pressed", String(!archived));
      $("show-archived").setAttribute("aria-pressed", String(archived));
      renderList();
    });
  }
  $("conversation-list").addEventListener("keydown", (e) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const buttons = [...$("conversation-list").querySelectorAll("button")];
    const i = buttons.indexOf(document.activeElement);
    const next = buttons[i + (e.key === "ArrowDown" ? 1 : -1)];
    if (next) {
      e.preventDefault();
      next.focus();
    }
  });
}

wireAuth();
wireChat();
wireSidebar();
onNotificationClick((key) => {
  if (store && store.conversations.has(key)) openChat(key);
});
boot();
