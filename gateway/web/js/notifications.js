// Notifications on this device: the Web Push opt-in of the account dialog.
//
// On: ask the browser's permission, register the service worker (/sw.js), subscribe
// with the browser's push service using the server's VAPID key, and register that
// subscription as a push target (POST /v1/push-targets, docs/notifications.md). Off,
// and log out: remove the target (DELETE /v1/push-targets/{id}) and unsubscribe.
// This device's target is remembered in localStorage, so that Off (or a later
// visit) knows which one is its own. While it is on, the titles of the user's
// conversations are kept in Cache Storage for the service worker, whose pushes
// carry ids only (names shared with /sw.js).

import { describe } from "./dialogs.js";
import { h } from "./dom.js";

const DEVICE_KEY = "messenger.push"; // {user_id, target_id, endpoint} of this device's target
const WORKER_URL = "/sw.js";
const TITLES_CACHE = "messenger-notifications"; // read by /sw.js
const TITLES_URL = "/app/notification-titles.json"; // read by /sw.js

const TEXT = {
  off: "Off. Turn on to be notified of new messages while this app is closed.",
  on: "On. This device shows a notification for new messages while the app is open on none of your devices.",
  denied: "Notifications are blocked for this site. Allow them in the browser's site settings, then turn this on again.",
  dismissed: "Notifications were not allowed. Turn this on again to be asked once more.",
  unavailable: "This server does not send notifications.",
};

class Failure extends Error {}

/** `promise`, or a TimeoutError after `ms`. */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new DOMException(what, "TimeoutError")), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Why this browser cannot do Web Push here, or "" when it can. */
export function unsupportedReason() {
  if (!window.isSecureContext) return "Notifications need the app to be opened over HTTPS.";
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    return "This browser does not support push notifications.";
  }
  return "";
}

function base64UrlBytes(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function sameBytes(buffer, bytes) {
  if (!buffer) return false;
  const a = new Uint8Array(buffer);
  return a.length === bytes.length && a.every((v, i) => v === bytes[i]);
}

async function currentSubscription() {
  const registration = await navigator.serviceWorker.getRegistration("/");
  return registration ? registration.pushManager.getSubscription() : null;
}

/** Unsubscribe this browser and forget its target and the titles, without the server
 * (a session that ended: the push service then answers the notifier 404/410, and the
 * notifier removes the target). */
export async function dropDevice() {
  localStorage.removeItem(DEVICE_KEY);
  if (unsupportedReason()) return;
  try {
    const subscription = await currentSubscription();
    if (subscription) await subscription.unsubscribe();
  } catch {
    // nothing to undo
  }
  try {
    await caches.delete(TITLES_CACHE);
  } catch {
    // no Cache Storage
  }
}

/** Calls `open(key)` when a notification of this app is clicked while the app is open. */
export function onNotificationClick(open) {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (e) => {
    if (e.origin && e.origin !== location.origin) return;
    if (e.data && e.data.type === "open-conversation" && typeof e.data.key === "string") open(e.data.key);
  });
}

/** This device's opt-in for one signed-in user; "change" events report `state`. */
export class DevicePush extends EventTarget {
  constructor(api, userId, serverHasPush) {
    super();
    this.api = api;
    this.userId = userId;
    this.serverHasPush = serverHasPush;
    this.titlesTimer = null;
    this.titlesOf = null; // () => {key: title}
    // status: unsupported | unavailable | off | on | busy | denied; error: show as a problem
    this.state = { status: "off", message: TEXT.off, error: false };
    this.set(...this.initial());
  }

  set(status, message, error = false) {
    this.state = { status, message, error };
    this.dispatchEvent(new Event("change"));
  }

  initial() {
    const reason = unsupportedReason();
    if (reason) return ["unsupported", reason];
    if (!this.serverHasPush) return ["unavailable", TEXT.unavailable];
    if (this.saved()) return ["on", TEXT.on];
    if (Notification.permission === "denied") return ["denied", TEXT.denied];
    return ["off", TEXT.off];
  }

  saved() {
    try {
      const saved = JSON.parse(localStorage.getItem(DEVICE_KEY) || "null");
      return saved && saved.user_id === this.userId ? saved : null;
    } catch {
      return null;
    }
  }

  get on() {
    return this.state.status === "on";
  }

  /** At start: is this device's target still what the browser and the server have? A
   * subscription the browser renewed is registered again; one it ended turns this off. */
  async check() {
    const saved = this.saved();
    if (!saved || unsupportedReason() || !this.serverHasPush) return;
    if (Notification.permission !== "granted") { // taken back in the browser's settings
      await this.turnOff();
      if (!this.state.error && Notification.permission === "denied") this.set("denied", TEXT.denied);
      return;
    }
    try {
      const [subscription, listed] = await Promise.all([currentSubscription(), this.api.pushTargets()]);
      const onServer = listed.items.some((t) => t.id === saved.target_id);
      if (subscription && subscription.endpoint === saved.endpoint && onServer) return;
      if (!subscription) {
        if (onServer) await this.api.removePushTarget(saved.target_id);
        await dropDevice();
        this.set("off", "Turned off: this browser ended its push subscription. Turn this on again to renew it.");
        return;
      }
      const target = await this.register(subscription);
      if (onServer && target.id !== saved.target_id) await this.api.removePushTarget(saved.target_id);
    } catch {
      // the server or the browser cannot be asked now: the next start checks again
    }
  }

  async turnOn() {
    this.set("busy", "Turning on…");
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        this.set(permission === "denied" ? "denied" : "off", permission === "denied" ? TEXT.denied : TEXT.dismissed);
        return;
      }
      let key;
      try {
        key = base64UrlBytes((await this.api.vapidKey()).public_key);
      } catch (err) {
        throw new Failure(`the server cannot send notifications now (${describe(err)})`);
      }
      let registration;
      try {
        await navigator.serviceWorker.register(WORKER_URL, { scope: "/" });
        registration = await within(navigator.serviceWorker.ready, 20000, "it did not start in 20 s");
      } catch (err) {
        throw new Failure(`the service worker could not be installed (${err.name}: ${err.message})`);
      }
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // made with another server key: useless now
        subscription = null;
      }
      if (!subscription) {
        const asked = registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
        try {
          subscription = await within(asked, 30000, "no answer in 30 s");
        } catch (err) {
          asked.then((late) => late.unsubscribe()).catch(() => {}); // a late answer is not kept
          throw new Failure("this browser could not get a subscription from its push service "
            + `(${err.name}: ${err.message}). Browsers deliver Web Push through their vendor's `
            + "push service, which they must be able to reach on the internet");
        }
      }
      try {
        await this.register(subscription);
      } catch (err) {
        await subscription.unsubscribe().catch(() => {});
        throw new Failure(`the server refused this device (${describe(err)})`);
      }
      this.set("on", TEXT.on);
      this.noteTitles();
    } catch (err) {
      const text = err instanceof Failure ? err.message : `${err.name || "Error"}: ${err.message}`;
      this.set("off", `Could not turn notifications on: ${text}.`, true);
    }
  }

  async register(subscription) {
    const target = await this.api.addPushTarget({ kind: "webpush", subscription: subscription.toJSON() });
    localStorage.setItem(DEVICE_KEY, JSON.stringify({
      user_id: this.userId, target_id: target.id, endpoint: subscription.endpoint,
    }));
    return target;
  }

  async turnOff() {
    const saved = this.saved();
    this.set("busy", "Turning off…");
    if (saved) {
      try {
        await this.api.removePushTarget(saved.target_id);
      } catch (err) {
        if (err.status !== 404) { // 404: already gone (the notifier removes dead targets)
          this.set("on", `Could not turn notifications off: ${describe(err)}`, true);
          return;
        }
      }
    }
    await dropDevice();
    this.set("off", TEXT.off);
  }

  /** Log out: remove this device's target while the session still allows it. */
  async logout() {
    const saved = this.saved();
    if (saved) await this.api.removePushTarget(saved.target_id).catch(() => {});
    clearTimeout(this.titlesTimer);
    await dropDevice();
  }

  /** Keep the conversations' titles for the service worker (soon after they change). */
  noteTitles(titlesOf = this.titlesOf) {
    this.titlesOf = titlesOf;
    if (!this.on || !titlesOf) return;
    clearTimeout(this.titlesTimer);
    this.titlesTimer = setTimeout(async () => {
      if (!this.on) return;
      try {
        const cache = await caches.open(TITLES_CACHE);
        await cache.put(TITLES_URL, new Response(JSON.stringify({ user_id: this.userId, titles: titlesOf() }), {
          headers: { "Content-Type": "application/json" },
        }));
      } catch {
        // without titles the notifications say "Messenger"
      }
    }, 500);
  }
}

/** The account dialog's control: a labelled switch and the state in words. */
export function pushControl(push) {
  const toggle = h("input", {
    type: "checkbox", role: "switch", id: "push-toggle", "aria-describedby": "push-state",
  });
  const state = h("p", { id: "push-state", class: "small", role: "status", "aria-live": "polite" });
  let drawn = false;
  const render = () => {
    if (drawn && !toggle.isConnected) { // the dialog was closed
      push.removeEventListener("change", render);
      return;
    }
    drawn = true;
    const { status, message, error } = push.state;
    // While busy the switch keeps the position asked for, and its focus: it is not
    // disabled (that would drop a keyboard user's focus), it ignores presses.
    if (status !== "busy") toggle.checked = status === "on";
    toggle.disabled = ["unsupported", "unavailable"].includes(status);
    toggle.setAttribute("aria-busy", String(status === "busy"));
    state.textContent = message;
    state.className = error ? "small error" : "small muted";
    state.dataset.status = status;
  };
  toggle.addEventListener("change", () => {
    if (push.state.status === "busy") {
      toggle.checked = !toggle.checked;
      return;
    }
    if (toggle.checked) push.turnOn();
    else push.turnOff();
  });
  const row = h("div", { class: "switch-row" }, toggle, h("label", { for: "push-toggle" }, "Notifications on this device"));
  push.addEventListener("change", render);
  render();
  return [row, state];
}
