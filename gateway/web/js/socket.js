// The real-time WebSocket (docs/realtime.md): a ticket from POST /v1/ws-ticket opens
// /v1/ws; every (re)connection sends `resume` with the last seq seen per receiver, so
// the server replays what was missed, then live pushes follow with no gap. Lost
// connections are retried with exponential backoff and jitter, at once when the
// browser comes back online. Leaving the page closes the socket (a page restored from
// the back/forward cache reconnects). Events: "state" (detail: connecting|resuming|live|offline),
// "frame" (detail: a server frame), "revoked" (the session ended: close code 4001).

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15_000;

export class RealtimeSocket extends EventTarget {
  constructor(api, seqsOf) {
    super();
    this.api = api;
    this.seqsOf = seqsOf;
    this.ws = null;
    this.state = "offline";
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.refs = 0;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.drop();
    // Leaving the page: a page kept in the back/forward cache would otherwise keep its
    // socket, and the user would stay online (and unnotified) after leaving the app.
    this.onPageHide = () => this.drop();
    this.onPageShow = (e) => {
      if (e.persisted) this.reconnectNow();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("pagehide", this.onPageHide);
    window.addEventListener("pageshow", this.onPageShow);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("pagehide", this.onPageHide);
    window.removeEventListener("pageshow", this.onPageShow);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.setState("offline");
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  /** Send a client frame if the socket is live; false if it is not (nothing queued). */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== "live") return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** The connection is gone (the browser went offline, or the page is left): close it and
   * wait for "online" (or "pageshow"). */
  drop() {
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "offline");
    }
    this.setState("offline");
  }

  reconnectNow() {
    if (this.stopped) return;
    this.attempt = 0;
    clearTimeout(this.timer);
    if (!this.ws) this.connect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setState("offline");
    if (!navigator.onLine) return; // "online" reconnects
    const ceiling = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async connect() {
    if (this.stopped || this.ws) return;
    this.setState("connecting");
    let ticket;
    try {
      ticket = (await this.api.wsTicket()).ticket;
    } catch (err) {
      if (err.status === 401) return; // the app logs out
      this.scheduleReconnect();
      return;
    }
    if (this.stopped || this.ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.setState("resuming");
      ws.send(JSON.stringify({ type: "resume", ref: "resume", seqs: this.seqsOf() }));
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "resumed") {
        this.attempt = 0;
        this.setState("live");
      }
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (event.code === 4001) {
        this.stopped = true;
        this.setState("offline");
        this.dispatchEvent(new CustomEvent("revoked"));
        return;
      }
      this.scheduleReconnect();
    });
  }
}
