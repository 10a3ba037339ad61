// The client's state: conversations, the messages of the open ones, seqs for resume,
// read marks, users, presence, typing. Views listen for "change" events (detail: what
// changed) and read from here; the store talks to the API and the socket.
//
// Two sources for the conversation list: the server's inbox (GET /v1/conversations,
// when the server has it: unread counts shared by all devices), or, on a server
// without it, a list this device builds from the messages it receives (stored in
// localStorage with the seqs, so a reload resumes where it stopped).

import { uuid } from "./dom.js";

const STATUS_RANK = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };
const PAGE = 50;

export function keyOf(message, me) {
  if (message.receiver.kind === "group") return `group:${message.receiver.id}`;
  const peer = message.sender_id === me ? message.receiver.id : message.sender_id;
  return `user:${peer}`;
}

// The API's times are RFC 3339 with as many fractional digits as they need (none on a
// whole second: "…:05Z" sorts after "…:05.120Z" as text), so order by the instant.
export function instant(time) {
  const t = time ? Date.parse(time) : NaN;
  return Number.isNaN(t) ? 0 : t;
}

function byTime(a, b) {
  const ta = instant(a.created_at || a.local_at);
  const tb = instant(b.created_at || b.local_at);
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export class Thread {
  constructor(key) {
    this.key = key;
    this.messages = new Map();
    this.olderCursor = null;
    this.hasOlder = true;
    this.newerCursor = null;
    this.hasNewer = false;
    this.loaded = false;
    this.loading = false;
    this.group = null;
    this.groupReads = new Map(); // message id -> Set of reader ids (from receipt frames)
    this.groupDelivers = new Map();
  }

  sorted() {
    return [...this.messages.values()].sort(byTime);
  }

  put(message) {
    if (message.client_msg_id) {
      for (const [id, m] of this.messages) {
        if (m.pending && m.client_msg_id === message.client_msg_id) this.messages.delete(id);
      }
    }
    const old = this.messages.get(message.id);
    if (old && old.status && message.status && STATUS_RANK[old.status] > STATUS_RANK[message.status]) {
      message = { ...message, status: old.status };
    }
    this.messages.set(message.id, message);
  }
}

export class Store extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.socket = null;
    this.me = null;
    this.features = {};
    this.conversations = new Map();
    this.threads = new Map();
    this.users = new Map();
    this.presence = new Map();
    this.typing = new Map();
    this.blocks = new Set();
    this.seqs = {};
    this.readSeqs = {};
    this.countedSeqs = {};
    this.openKey = null;
    this.fresh = false;
    this.pendingAcks = new Map();
    this.ackTimer = null;
    this.sendChains = new Map();
  }

  emit(what, key) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, key } }));
  }

  // -- persistence (per user, this device) -------------------------------------------

  storageKey() {
    return `messenger.state.${this.me.id}`;
  }

  load() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(this.storageKey()) || "null");
    } catch {
      saved = null;
    }
    this.fresh = !saved;
    if (!saved) return;
    this.seqs = saved.seqs || {};
    this.readSeqs = saved.readSeqs || {};
    this.countedSeqs = saved.countedSeqs || {};
    if (!this.features.inbox) {
      for (const conv of saved.conversations || []) this.conversations.set(conv.key, conv);
    }
  }

  save() {
    if (!this.me) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => {
      const state = {
        seqs: this.seqs,
        readSeqs: this.readSeqs,
        countedSeqs: this.countedSeqs,
        conversations: this.features.inbox ? [] : [...this.conversations.values()],
      };
      localStorage.setItem(this.storageKey(), JSON.stringify(state));
    }, 100);
  }

  // -- start ---------------------------------------------------------------------------

  async start(me, features) {
    this.me = me;
    this.features = features;
    this.users.set(me.id, Promise.resolve(me));
    this.load();
    await Promise.all([this.loadConversations(), this.loadBlocks()]);
    this.emit("conversations");
  }

  async loadConversations() {
    if (this.features.inbox) {
      for (const archived of [false, true]) {
        let cursor = null;
        do {
          const page = await this.api.conversations({ limit: 100, cursor, archived });
          for (const c of page.conversations) this.putServerConversation(c);
          cursor = page.next_cursor;
        } while (cursor);
      }
      return;
    }
    // Groups the user belongs to, even without a message yet.
    let cursor = null;
    const seen = new Set();
    do {
      const page = await this.api.groups(cursor);
      for (const g of page.items) {
        seen.add(`group:${g.id}`);
        const conv = this.ensureConversation(`group:${g.id}`);
        conv.title = g.name;
        if (!conv.last_activity_at) conv.last_activity_at = g.created_at;
      }
      cursor = page.next_cursor;
    } while (cursor);
    for (const key of [...this.conversations.keys()]) {
      if (key.startsWith("group:") && !seen.has(key)) this.conversations.delete(key);
    }
  }

  putServerConversation(c) {
    const key = `${c.kind}:${c.id}`;
    const conv = this.ensureConversation(key);
    Object.assign(conv, c, { key });
    if (c.last_message && this.countedSeqs[key] === undefined) {
      this.countedSeqs[key] = c.last_message.seq;
    }
    return conv;
  }

  async loadBlocks() {
    const list = await this.api.blocks();
    this.blocks = new Set(list.items.map((b) => b.user_id));
  }

  ensureConversation(key) {
    let conv = this.conversations.get(key);
    if (!conv) {
      const [kind, id] = key.split(":");
      conv = {
        key, kind, id, title: null, last_message: null, unread_count: 0,
        muted: false, archived: false, last_activity_at: null,
      };
      this.conversations.set(key, conv);
      if (kind === "user") {
        this.userName(id).then(() => this.emit("conversations"));
        // Presence frames come only for contacts known at connect: ask for a new one.
        this.api.presence(id).then((p) => {
          this.presence.set(id, { online: p.online, last_seen: p.last_seen });
          this.emit("presence", id);
        }).catch(() => {});
      }
    }
    return conv;
  }

  sortedConversations(archived = false) {
    return [...this.conversations.values()]
      .filter((c) => Boolean(c.archived) === archived)
      .sort((a, b) => {
        const ta = instant(a.last_activity_at);
        const tb = instant(b.last_activity_at);
        return ta < tb ? 1 : ta > tb ? -1 : 0;
      });
  }

  titleOf(key) {
    const conv = this.conversations.get(key);
    if (conv && conv.title) return conv.title;
    const [kind, id] = key.split(":");
    if (kind === "user") {
      const cached = this.userCache && this.userCache.get(id);
      if (cached) return cached.display_name;
    }
    return kind === "group" ? "Group" : "…";
  }

  // -- users ---------------------------------------------------------------------------

  user(id) {
    if (!this.users.has(id)) {
      const p = this.api.user(id).catch(() => ({ id, username: "deleted", display_name: "Deleted user" }));
      this.users.set(id, p);
    }
    return this.users.get(id);
  }

  async userName(id) {
    const u = await this.user(id);
    this.userCache = this.userCache || new Map();
    this.userCache.set(id, u);
    const conv = this.conversations.get(`user:${id}`);
    if (conv && !conv.title) conv.title = u.display_name;
    return u.display_name;
  }

  nameNow(id) {
    if (this.me && id === this.me.id) return "You";
    const u = this.userCache && this.userCache.get(id);
    if (u) return u.display_name;
    this.userName(id).then(() => this.emit("names"));
    return "…";
  }

  // -- the socket ----------------------------------------------------------------------

  attach(socket) {
    this.socket = socket;
    socket.addEventListener("frame", (e) => this.onFrame(e.detail));
    socket.addEventListener("state", (e) => {
      if (e.detail === "live") this.flushAcks();
      this.emit("connection");
    });
  }

  seqsForResume() {
    return { ...this.seqs };
  }

  onFrame(frame) {
    switch (frame.type) {
      case "message":
        this.ingest(frame.message, { live: true });
        break;
      case "resumed":
        for (const [rid, seq] of Object.entries(frame.seqs || {})) {
          this.seqs[rid] = Math.max(this.seqs[rid] || 0, seq);
        }
        this.save();
        if (!frame.complete) {
          this.socket.send({ type: "resume", ref: "resume", seqs: this.seqsForResume() });
          break;
        }
        if (this.features.inbox) {
          // The server's counts already include what the resume replayed.
          this.loadConversations().then(() => this.emit("conversations")).catch(() => {});
        } else if (this.fresh) {
          // A device that never ran here: what it replays counts as already seen.
          this.fresh = false;
          for (const conv of this.conversations.values()) {
            conv.unread_count = 0;
            if (conv.last_message) this.readSeqs[conv.key] = this.maxOtherSeq(conv.key) || 0;
          }
          this.save();
        }
        // Refresh what is open: an edit or a receipt may have come while away.
        if (this.openKey) this.markRead(this.openKey);
        this.emit("conversations");
        break;
      case "receipt":
        this.applyReceipt(frame.receipt);
        break;
      case "typing":
        this.applyTyping(frame);
        break;
      case "presence":
        this.presence.set(frame.user_id, { online: frame.online, last_seen: frame.last_seen });
        this.emit("presence", frame.user_id);
        break;
      case "group":
        this.applyGroupEvent(frame.event, frame.payload);
        break;
      case "conversation_updated":
      case "message_edited":
      case "message_deleted":
      case "reaction":
        if (frame.event) this.applyEvent(frame.event);
        break;
      default:
        break;
    }
  }

  /** An event of a seq log (edits, deletes, reactions, the inbox's own changes). */
  applyEvent(ev) {
    const me = this.me.id;
    const rid = ev.receiver.id;
    if (ev.receiver.kind === "group" || rid === me) {
      this.seqs[rid] = Math.max(this.seqs[rid] || 0, ev.seq);
    }
    const key = `${ev.conversation.kind}:${ev.conversation.id}`;
    if (ev.type === "conversation_updated") {
      const conv = this.ensureConversation(key);
      if (ev.unread_count !== undefined) conv.unread_count = ev.unread_count;
      if (ev.muted !== undefined) conv.muted = ev.muted;
      if (ev.archived !== undefined) conv.archived = ev.archived;
      if (ev.read_seq) this.readSeqs[key] = Math.max(this.readSeqs[key] || 0, ev.read_seq);
      this.save();
      this.emit("conversations");
      return;
    }
    const change = (m) => {
      if (!m) return m;
      if (m.id === ev.message_id) {
        if (ev.type === "message_edited") return { ...m, content: ev.content, edited_at: ev.edited_at };
        if (ev.type === "message_deleted") {
          return { ...m, deleted: true, content: "", reactions: {}, my_reactions: [], reply_to: null };
        }
        if (ev.type === "reaction") {
          const reactions = { ...(m.reactions || {}) };
          if (ev.count) reactions[ev.emoji] = ev.count;
          else delete reactions[ev.emoji];
          let mine = [...(m.my_reactions || [])];
          if (ev.actor_id === me) {
            mine = mine.filter((e) => e !== ev.emoji);
            if (ev.added) mine.push(ev.emoji);
          }
          return { ...m, reactions, my_reactions: mine };
        }
      }
      if (m.reply_to && m.reply_to.id === ev.message_id) {
        if (ev.type === "message_deleted") return { ...m, reply_to: { ...m.reply_to, deleted: true, preview: null } };
        if (ev.type === "message_edited") return { ...m, reply_to: { ...m.reply_to, preview: ev.content.slice(0, 100) } };
      }
      return m;
    };
    const thread = this.threads.get(key);
    if (thread) {
      for (const [id, m] of thread.messages) thread.messages.set(id, change(m));
    }
    const conv = this.conversations.get(key);
    if (conv) conv.last_message = change(conv.last_message);
    this.save();
    this.emit("message", key);
  }

  /** A message from a push, a replay, a send or history: dedupe by id, count unread. */
  ingest(message, { live = false, update = false } = {}) {
    const me = this.me.id;
    const key = keyOf(message, me);
    const rid = message.receiver.id;
    const mine = message.sender_id === me;
    if (message.receiver.kind === "group" || rid === me) {
      this.seqs[rid] = Math.max(this.seqs[rid] || 0, message.seq);
    }
    const thread = this.threads.get(key);
    if (thread && thread.loaded && (!thread.hasNewer || thread.messages.has(message.id))) {
      thread.put(message);
    }
    const conv = this.ensureConversation(key);
    if (!conv.last_message || byTime(conv.last_message, message) <= 0 || conv.last_message.id === message.id) {
      conv.last_message = message;
      if (instant(conv.last_activity_at) < instant(message.created_at)) {
        conv.last_activity_at = message.created_at;
      }
      if (!update && !conv.muted) conv.archived = false;
    }
    if (!mine && !update) {
      const counted = this.countedSeqs[key] || 0;
      if (message.seq > counted) {
        this.countedSeqs[key] = message.seq;
        const isRead = message.seq <= (this.readSeqs[key] || 0);
        const replayed = this.features.inbox && this.socket && this.socket.state !== "live";
        if (!isRead && !replayed && !(this.openKey === key && this.visible())) {
          conv.unread_count = (conv.unread_count || 0) + 1;
        }
      }
      if (live) this.queueAck(rid, message.seq);
    }
    if (!mine && this.openKey === key && this.visible()) this.markRead(key);
    // A new chat's presence is hidden (404) until its first message makes the two
    // contacts: ask again once a message is there.
    if (key.startsWith("user:") && !this.presence.has(key.slice(5))) this.askPresence(key.slice(5));
    const typists = this.typing.get(key);
    if (typists && typists.delete(message.sender_id)) this.emit("typing", key);
    this.save();
    this.emit("message", key);
  }

  askPresence(userId) {
    this.askingPresence = this.askingPresence || new Set();
    if (this.askingPresence.has(userId)) return;
    this.askingPresence.add(userId);
    this.api.presence(userId).then((p) => {
      this.presence.set(userId, { online: p.online, last_seen: p.last_seen });
      this.emit("presence", userId);
    }).catch(() => {}).finally(() => this.askingPresence.delete(userId));
  }

  visible() {
    return document.visibilityState === "visible";
  }

  queueAck(receiverId, seq) {
    this.pendingAcks.set(receiverId, Math.max(this.pendingAcks.get(receiverId) || 0, seq));
    clearTimeout(this.ackTimer);
    this.ackTimer = setTimeout(() => this.flushAcks(), 150);
  }

  flushAcks() {
    for (const [receiver, seq] of this.pendingAcks) {
      if (this.socket && this.socket.send({ type: "ack", receiver, seq })) {
        this.pendingAcks.delete(receiver);
      }
    }
  }

  maxOtherSeq(key) {
    const me = this.me.id;
    let best = 0;
    const consider = (m) => {
      if (!m || m.pending) return;
      if (key.startsWith("group:") ? true : m.receiver.id === me) best = Math.max(best, m.seq);
    };
    const thread = this.threads.get(key);
    if (thread) for (const m of thread.messages.values()) consider(m);
    const conv = this.conversations.get(key);
    if (conv) consider(conv.last_message);
    if (key.startsWith("user:")) best = Math.max(best, 0);
    return best;
  }

  /** Everything in `key` the user can see is read: tell the server (all devices, senders). */
  markRead(key) {
    const conv = this.conversations.get(key);
    const seq = this.maxOtherSeq(key);
    const hadUnread = Boolean(conv && conv.unread_count);
    if (hadUnread) {
      conv.unread_count = 0;
      this.emit("conversations");
    }
    if (!seq || (seq <= (this.readSeqs[key] || 0) && !(this.features.inbox && hadUnread))) return;
    this.readSeqs[key] = seq;
    this.save();
    const frame = { type: "read", conversation: key, seq };
    if (!this.socket || !this.socket.send(frame)) {
      this.api.markRead(key, seq).catch(() => {
        if (this.readSeqs[key] === seq) this.readSeqs[key] = 0;
      });
    }
  }

  applyReceipt(r) {
    const key = `${r.receiver_kind}:${r.receiver_id}`;
    const thread = this.threads.get(key);
    const conv = this.conversations.get(key);
    const touched = [];
    const upgrade = (m) => {
      if (!m || m.sender_id !== this.me.id || m.pending || m.seq > r.up_to_seq) return m;
      if (m.receiver.id !== r.receiver_id) return m;
      if (r.receiver_kind === "user") {
        if (STATUS_RANK[r.kind] > STATUS_RANK[m.status || "sent"]) return { ...m, status: r.kind };
        return m;
      }
      return m;
    };
    if (thread) {
      for (const m of [...thread.messages.values()]) {
        if (r.receiver_kind === "group") {
          if (m.sender_id !== this.me.id || m.pending || m.seq > r.up_to_seq) continue;
          const sets = r.kind === "read" ? [thread.groupReads, thread.groupDelivers] : [thread.groupDelivers];
          for (const map of sets) {
            if (!map.has(m.id)) map.set(m.id, new Set());
            map.get(m.id).add(r.reader_id);
          }
          touched.push(m.id);
        } else {
          const n = upgrade(m);
          if (n !== m) thread.messages.set(m.id, n);
        }
      }
    }
    if (conv && conv.last_message) conv.last_message = upgrade(conv.last_message);
    this.emit("receipt", key);
  }

  /** The status shown for one of my messages (groups: counted over the members). */
  statusOf(thread, m) {
    if (m.pending) return "pending";
    if (m.failed) return "failed";
    if (m.receiver.kind !== "group") return m.status || "sent";
    const others = thread.group ? thread.group.members.length - 1 : null;
    const reads = Math.max(m.read_count || 0, (thread.groupReads.get(m.id) || new Set()).size);
    const delivers = Math.max(m.delivered_count || 0, reads, (thread.groupDelivers.get(m.id) || new Set()).size);
    if (others !== null && others > 0) {
      if (reads >= others) return "read";
      if (delivers >= others) return "delivered";
      return "sent";
    }
    return m.status || "sent";
  }

  groupCounts(thread, m) {
    const reads = Math.max(m.read_count || 0, (thread.groupReads.get(m.id) || new Set()).size);
    const delivers = Math.max(m.delivered_count || 0, reads, (thread.groupDelivers.get(m.id) || new Set()).size);
    return { reads, delivers };
  }

  applyTyping(frame) {
    let key = frame.conversation;
    if (key === `user:${this.me.id}`) key = `user:${frame.user_id}`;
    if (!this.typing.has(key)) this.typing.set(key, new Map());
    this.typing.get(key).set(frame.user_id, Date.now() + 4000);
    this.emit("typing", key);
    setTimeout(() => this.emit("typing", key), 4100);
  }

  typingIn(key) {
    const now = Date.now();
    const map = this.typing.get(key);
    if (!map) return [];
    return [...map].filter(([, until]) => until > now).map(([id]) => id);
  }

  async applyGroupEvent(event, p) {
    const key = `group:${p.group_id}`;
    const me = this.me.id;
    if (event === "UserBlocked") {
      this.blocks.add(p.blocked_id);
      this.emit("blocks");
      return;
    }
    if (event === "UserUnblocked") {
      this.blocks.delete(p.blocked_id);
      this.emit("blocks");
      return;
    }
    const gone = event === "GroupDeleted" || (event === "MemberRemoved" && p.user_id === me);
    if (gone) {
      this.conversations.delete(key);
      this.threads.delete(key);
      this.emit("conversations");
      this.emit("group-gone", key);
      this.save();
      return;
    }
    const conv = this.ensureConversation(key);
    if (event === "GroupCreated" || event === "GroupRenamed") conv.title = p.name;
    if (!conv.last_activity_at) conv.last_activity_at = new Date().toISOString();
    if (!conv.title) {
      try {
        conv.title = (await this.api.group(p.group_id)).name;
      } catch {
        /* not visible any more */
      }
    }
    const thread = this.threads.get(key);
    if (thread && thread.group) {
      try {
        thread.group = await this.api.group(p.group_id);
      } catch {
        /* removed meanwhile */
      }
    }
    this.save();
    this.emit("conversations");
    this.emit("group", key);
  }

  // -- a conversation's messages -------------------------------------------------------

  thread(key) {
    if (!this.threads.has(key)) this.threads.set(key, new Thread(key));
    return this.threads.get(key);
  }

  historyQuery(key) {
    const [kind, id] = key.split(":");
    return kind === "group" ? { group: id } : { with_user: id };
  }

  /** The newest page; on reopen, whatever is already held stays. */
  async open(key) {
    this.openKey = key;
    const thread = this.thread(key);
    this.ensureConversation(key);
    if (key.startsWith("group:") && !thread.group) {
      this.api.group(key.slice(6)).then((g) => {
        thread.group = g;
        const conv = this.conversations.get(key);
        if (conv) conv.title = g.name;
        this.emit("group", key);
      }).catch(() => {});
    }
    if (key.startsWith("user:")) {
      const peer = key.slice(5);
      this.api.presence(peer).then((p) => {
        this.presence.set(peer, { online: p.online, last_seen: p.last_seen });
        this.emit("presence", peer);
      }).catch(() => {});
    }
    if (!thread.loaded || thread.hasNewer) await this.loadLatest(key);
    this.markRead(key);
    this.emit("thread", key);
  }

  async loadLatest(key) {
    const thread = this.thread(key);
    const page = await this.api.history({ ...this.historyQuery(key), limit: PAGE });
    const pending = [...thread.messages.values()].filter((m) => m.pending || m.failed);
    thread.messages.clear();
    for (const m of page.messages) thread.put(m);
    for (const m of pending) thread.messages.set(m.id, m);
    thread.olderCursor = page.next_cursor;
    thread.hasOlder = page.has_more;
    thread.newerCursor = null;
    thread.hasNewer = false;
    thread.loaded = true;
    const newest = page.messages[0];
    if (newest) this.ingestSummary(key, newest);
    this.emit("thread", key);
  }

  ingestSummary(key, message) {
    const conv = this.ensureConversation(key);
    if (!conv.last_message || byTime(conv.last_message, message) < 0) {
      conv.last_message = message;
      conv.last_activity_at = message.created_at;
    }
  }

  async loadOlder(key) {
    const thread = this.thread(key);
    if (thread.loading || !thread.hasOlder || !thread.olderCursor) return false;
    thread.loading = true;
    try {
      const page = await this.api.history({
        ...this.historyQuery(key), limit: PAGE, before: thread.olderCursor,
      });
      for (const m of page.messages) thread.put(m);
      thread.olderCursor = page.next_cursor || thread.olderCursor;
      thread.hasOlder = page.has_more;
    } finally {
      thread.loading = false;
    }
    this.emit("thread-older", key);
    return true;
  }

  async loadNewer(key) {
    const thread = this.thread(key);
    if (thread.loading || !thread.hasNewer || !thread.newerCursor) return false;
    thread.loading = true;
    try {
      const page = await this.api.history({
        ...this.historyQuery(key), limit: PAGE, after: thread.newerCursor,
      });
      for (const m of page.messages) thread.put(m);
      thread.newerCursor = page.next_cursor || thread.newerCursor;
      thread.hasNewer = page.has_more;
    } finally {
      thread.loading = false;
    }
    if (!thread.hasNewer) this.markRead(key);
    this.emit("thread-newer", key);
    return true;
  }

  /** Show the conversation from a day on: the last message before it, then the messages
   * from its start (oldest first); older ones on scroll up, newer on scroll down. */
  async jumpTo(key, day) {
    const thread = this.thread(key);
    const query = this.historyQuery(key);
    const start = new Date(`${day}T00:00:00`);
    const before = await this.api.history({ ...query, limit: 1, until: start.toISOString() });
    let window;
    let older = { cursor: null, more: false };
    let newer;
    if (before.messages.length) {
      const after = await this.api.history({ ...query, limit: PAGE, after: before.prev_cursor });
      window = [...before.messages, ...after.messages];
      older = { cursor: before.next_cursor, more: before.has_more };
      newer = { cursor: after.next_cursor || before.prev_cursor, more: after.has_more };
    } else {
      // Nothing before that day: the conversation starts on or after it. The API pages
      // newest first, so walk back to its oldest page (bounded).
      let cursor = null;
      let page;
      let pages = 0;
      do {
        page = await this.api.history({ ...query, limit: 100, before: cursor || undefined });
        cursor = page.next_cursor;
        pages += 1;
      } while (page.has_more && cursor && pages < 50);
      window = page.messages;
      older = { cursor: page.next_cursor, more: page.has_more };
      newer = { cursor: page.prev_cursor, more: pages > 1 };
    }
    thread.messages.clear();
    for (const m of window) thread.put(m);
    thread.olderCursor = older.cursor;
    thread.hasOlder = older.more;
    thread.newerCursor = newer.cursor;
    thread.hasNewer = newer.more;
    thread.loaded = true;
    this.emit("thread-jump", key);
    return start.toISOString();
  }

  // -- sending -------------------------------------------------------------------------

  /** Optimistic send: shown at once as pending, then replaced by the accepted message. */
  send(key, content, extra = {}) {
    const [kind, id] = key.split(":");
    const clientMsgId = uuid();
    const local = {
      id: `local-${clientMsgId}`,
      client_msg_id: clientMsgId,
      pending: true,
      receiver: { kind, id },
      sender_id: this.me.id,
      content,
      local_at: new Date().toISOString(),
      created_at: null,
      seq: 0,
      ...extra,
    };
    const thread = this.thread(key);
    thread.messages.set(local.id, local);
    this.emit("message", key);
    this.deliver(key, local);
    return local;
  }

  retry(key, localId) {
    const thread = this.thread(key);
    const local = thread.messages.get(localId);
    if (!local || !local.failed) return;
    const again = { ...local, pending: true, failed: false, error: null };
    thread.messages.set(localId, again);
    this.emit("message", key);
    this.deliver(key, again);
  }

  deliver(key, local) {
    const body = {
      [local.receiver.kind === "group" ? "to_group_id" : "to_user_id"]: local.receiver.id,
      content: local.content,
      client_msg_id: local.client_msg_id,
      sent_at: local.local_at,
    };
    if (local.reply_to_id) body.reply_to = local.reply_to_id;
    if (local.attachments && local.attachments.length) body.attachment_ids = local.attachments.map((a) => a.id);
    // One conversation's sends go one after another, so they keep their order.
    const previous = this.sendChains.get(key) || Promise.resolve();
    const next = previous.then(async () => {
      try {
        const accepted = await this.api.send(body);
        this.thread(key).messages.delete(local.id);
        this.ingest(accepted);
      } catch (err) {
        const thread = this.thread(key);
        if (thread.messages.has(local.id)) {
          thread.messages.set(local.id, { ...local, pending: false, failed: true, error: err.message });
        }
        this.emit("message", key);
      }
    });
    this.sendChains.set(key, next);
  }

  sendTyping(key) {
    const now = Date.now();
    if (this.lastTyping && this.lastTyping.key === key && now - this.lastTyping.at < 2000) return;
    this.lastTyping = { key, at: now };
    if (this.socket) this.socket.send({ type: "typing", conversation: key });
  }
}
