// The web client's service worker: it shows the notifier's Web Push messages and opens
// the app on a notification's conversation. Served at /sw.js (scope "/", the whole app;
// gateway/routes/webapp.py). A classic script, not a module: not every browser runs
// module service workers.
//
// A push's data is the notifier's JSON (docs/notifications.md, "The payload"):
//   {type: "messages", user_id, conversation: {kind: "user"|"group", id}, count,
//    latest_message_id, latest_at, [sender_id, preview, attachments]}
// It has ids, not names: the page (js/notifications.js) keeps the titles of the
// signed-in user's conversations in Cache Storage while notifications are on, and
// this worker reads them from there. Cache and entry names are shared with that
// module and must change together.

const TITLES_CACHE = "messenger-notifications";
const TITLES_URL = "/app/notification-titles.json";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

async function titles(userId) {
  try {
    const cache = await caches.open(TITLES_CACHE);
    const response = await cache.match(TITLES_URL);
    const saved = response ? await response.json() : null;
    return saved && saved.user_id === userId ? saved.titles || {} : {};
  } catch {
    return {};
  }
}

/** The notification for one push: its title and options. */
async function notificationFor(data) {
  const conversation = (data && data.conversation) || {};
  const key = conversation.kind && conversation.id ? `${conversation.kind}:${conversation.id}` : "";
  const known = key ? (await titles(data.user_id))[key] : undefined;
  const count = Number(data && data.count) > 1 ? Number(data.count) : 1;
  const title = known || "Messenger";
  let body = count === 1 ? "1 new message" : `${count} new messages`;
  if (!known && conversation.kind === "group") body += " in a group";
  if (data && typeof data.preview === "string" && data.preview) {
    body = count > 1 ? `${data.preview} (+${count - 1} more)` : data.preview;
  } else if (data && data.attachments) {
    body += " (with attachments)";
  }
  return {
    title,
    options: {
      body,
      tag: key || "messenger", // a conversation's newer notification replaces its older one
      renotify: Boolean(key),
      icon: "/app/icon.svg",
      data: { key, latest_message_id: (data && data.latest_message_id) || null },
    },
  };
}

self.addEventListener("push", (event) => {
  // userVisibleOnly: every push must show a notification, even an unreadable one.
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  event.waitUntil(notificationFor(data).then(({ title, options }) =>
    self.registration.showNotification(title, options)));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const key = (event.notification.data && event.notification.data.key) || "";
  const url = new URL(key ? `/#${encodeURIComponent(key)}` : "/", self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((c) => new URL(c.url).origin === self.location.origin);
    if (open) {
      // The app opens the conversation itself (js/notifications.js listens for this).
      if (key) open.postMessage({ type: "open-conversation", key });
      return open.focus();
    }
    return self.clients.openWindow(url);
  })());
});
