// The REST API of the gateway (the OpenAPI at /v1/openapi.json describes every route).
// Errors come back as ApiError with the documented shape {error: {code, message, details}}.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class Api extends EventTarget {
  constructor(base = "") {
    super();
    this.base = base;
    this.token = null;
  }

  async request(method, path, { body, query } = {}) {
    let url = this.base + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
      }
      const qs = params.toString();
      if (qs) url += "?" + qs;
    }
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw this.failure(response.status, response.statusText, data);
    return data;
  }

  /** The ApiError for a failed answer (its body parsed, or null); a 401 signs out. */
  failure(status, statusText, data) {
    const e = (data && data.error) || {};
    const error = new ApiError(
      status,
      e.code || "http_" + status,
      e.message || statusText || "Request failed",
      e.details || {},
    );
    if (status === 401 && this.token) {
      this.dispatchEvent(new CustomEvent("unauthorized", { detail: error }));
    }
    return error;
  }

  /** GET a file with the Authorization header, as a Blob (for blob: URLs). */
  async blob(path) {
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    let response;
    try {
      response = await fetch(this.base + path, { headers });
    } catch {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
    }
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      throw this.failure(response.status, response.statusText, data);
    }
    return response.blob();
  }

  /** POST /v1/attachments with the file as the raw body. XMLHttpRequest, not fetch, because
   * only it reports upload progress: onProgress(fraction). Returns {promise, abort}. */
  upload(file, onProgress = () => {}) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      const query = file.name ? `?name=${encodeURIComponent(file.name)}` : "";
      xhr.open("POST", `${this.base}/v1/attachments${query}`);
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      if (this.token) xhr.setRequestHeader("Authorization", `Bearer ${this.token}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
        else reject(this.failure(xhr.status, xhr.statusText, xhr.response));
      });
      const unreachable = () => reject(new ApiError(0, "network", "The server cannot be reached. Check your connection."));
      xhr.addEventListener("error", unreachable);
      xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Upload cancelled")));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }

  // accounts
  register(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    return this.request("POST", "/v1/users", { body });
  }
  login(username, password) {
    return this.request("POST", "/v1/sessions", { body: { username, password } });
  }
  logout() { return this.request("DELETE", "/v1/sessions/current"); }
  logoutEverywhere() { return this.request("DELETE", "/v1/sessions"); }
  me() { return this.request("GET", "/v1/users/me"); }
  updateMe(change) { return this.request("PATCH", "/v1/users/me", { body: change }); }
  user(id) { return this.request("GET", `/v1/users/${encodeURIComponent(id)}`); }
  lookup(username) { return this.request("GET", "/v1/users", { query: { username } }); }

  // groups and blocks
  groups(cursor) { return this.request("GET", "/v1/groups", { query: { limit: 100, cursor } }); }
  group(id) { return this.request("GET", `/v1/groups/${encodeURIComponent(id)}`); }
  createGroup(name, memberIds) {
    return this.request("POST", "/v1/groups", { body: { name, member_ids: memberIds } });
  }
  renameGroup(id, name) {
    return this.request("PATCH", `/v1/groups/${encodeURIComponent(id)}`, { body: { name } });
  }
  addMember(groupId, userId) {
    return this.request("PUT", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`);
  }
  removeMember(groupId, userId) {
    return this.request("DELETE", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`);
  }
  changeRole(groupId, userId, role) {
    return this.request(
      "PUT",
      `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}/role`,
      { body: { role } },
    );
  }
  blocks() { return this.request("GET", "/v1/blocks"); }
  block(userId) { return this.request("PUT", `/v1/blocks/${encodeURIComponent(userId)}`); }
  unblock(userId) { return this.request("DELETE", `/v1/blocks/${encodeURIComponent(userId)}`); }

  // messages
  send(body) { return this.request("POST", "/v1/messages", { body }); }
  history(query) { return this.request("GET", "/v1/messages", { query }); }
  sync(cursor, limit = 500) { return this.request("GET", "/v1/sync", { query: { cursor, limit } }); }
  markRead(key, seq) {
    const [kind, id] = key.split(":");
    const path = kind === "group" ? "groups" : "users";
    return this.request("POST", `/v1/conversations/${path}/${encodeURIComponent(id)}/read`, {
      body: { seq },
    });
  }
  presence(userId) { return this.request("GET", `/v1/presence/${encodeURIComponent(userId)}`); }
  wsTicket() { return this.request("POST", "/v1/ws-ticket"); }
  openapi() { return this.request("GET", "/v1/openapi.json"); }

  // issue 16: the inbox, edits, deletes, reactions (present when the server has them)
  conversations(query) { return this.request("GET", "/v1/conversations", { query }); }
  patchConversation(key, change) {
    const [kind, id] = key.split(":");
    const path = kind === "group" ? "groups" : "users";
    return this.request("PATCH", `/v1/conversations/${path}/${encodeURIComponent(id)}`, {
      body: change,
    });
  }
  editMessage(id, content) {
    return this.request("PATCH", `/v1/messages/${encodeURIComponent(id)}`, { body: { content } });
  }
  deleteMessage(id) { return this.request("DELETE", `/v1/messages/${encodeURIComponent(id)}`); }
  react(id, emoji, on) {
    return this.request(
      on ? "PUT" : "DELETE",
      `/v1/messages/${encodeURIComponent(id)}/reactions/${encodeURIComponent(emoji)}`,
    );
  }

  // issue 18: where the notifier reaches this user while they are offline
  vapidKey() { return this.request("GET", "/v1/push-targets/vapid-key"); }
  pushTargets() { return this.request("GET", "/v1/push-targets"); }
  addPushTarget(target) { return this.request("POST", "/v1/push-targets", { body: { target } }); }
  removePushTarget(id) { return this.request("DELETE", `/v1/push-targets/${encodeURIComponent(id)}`); }
}

/** Which optional features this server has, read from its OpenAPI document. */
export function featuresOf(openapi) {
  const paths = (openapi && openapi.paths) || {};
  const send = ((openapi.components || {}).schemas || {}).SendMessageBody || {};
  return {
    inbox: Boolean(paths["/v1/conversations"] && paths["/v1/conversations"].get),
    edit: Boolean(paths["/v1/messages/{message_id}"] && paths["/v1/messages/{message_id}"].patch),
    remove: Boolean(paths["/v1/messages/{message_id}"] && paths["/v1/messages/{message_id}"].delete),
    reactions: Boolean(paths["/v1/messages/{message_id}/reactions/{emoji}"]),
    replies: Boolean(send.properties && send.properties.reply_to),
    attachments: Boolean(paths["/v1/attachments"] && paths["/v1/attachments"].post
      && send.properties && send.properties.attachment_ids),
    push: Boolean(paths["/v1/push-targets"] && paths["/v1/push-targets"].post
      && paths["/v1/push-targets/vapid-key"]),
  };
}
