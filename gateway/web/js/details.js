// Dialogs of the app: account settings (with this device's notifications), a new chat, a new group, a conversation's
// details (members and roles, block, mute and archive), and the message actions.

import { h } from "./dom.js";
import { closeDialog, describe, dialogBody, errorLine, field, openDialog, toast } from "./dialogs.js";
import { pushControl } from "./notifications.js";

let current = null; // what the open dialog shows, for live refresh: {kind, key}

// -- account ------------------------------------------------------------------------------

export async function account(store, { push, onRenamed, onLogout }) {
  current = { kind: "account" };
  const me = await store.api.me();
  const nameError = errorLine();
  const nameForm = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const updated = await store.api.updateMe({ display_name: e.target.elements["settings-display"].value });
        store.me = { ...store.me, ...updated };
        onRenamed(updated);
        toast("Display name saved");
      } catch (err) {
        nameError.textContent = describe(err);
      }
    },
  }, field("settings-display", "Display name", { value: me.display_name, required: true, maxlength: 64 }),
  h("button", { type: "submit" }, "Save name"), nameError);
  const passwordError = errorLine();
  const passwordForm = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const els = e.target.elements;
      try {
        await store.api.updateMe({
          current_password: els["settings-current"].value,
          new_password: els["settings-new"].value,
        });
        e.target.reset();
        toast("Password changed; your other sessions were logged out");
      } catch (err) {
        passwordError.textContent = err.status === 403 ? "The current password is wrong." : describe(err);
      }
    },
  },
  field("settings-current", "Current password", { type: "password", required: true, autocomplete: "current-password" }),
  field("settings-new", "New password", { type: "password", required: true, minlength: 8, autocomplete: "new-password" }),
  h("button", { type: "submit" }, "Change password"), passwordError);
  const blocks = h("ul", { class: "members", "aria-label": "Blocked users" });
  const renderBlocks = async () => {
    blocks.replaceChildren();
    if (!store.blocks.size) blocks.append(h("li", { class: "muted" }, "Nobody"));
    for (const id of store.blocks) {
      const name = await store.userName(id);
      blocks.append(h("li", {}, h("span", { class: "who" }, name), h("button", {
        type: "button",
        onclick: async () => {
          try {
            await store.api.unblock(id);
            store.blocks.delete(id);
            store.emit("blocks");
            renderBlocks();
          } catch (err) {
            toast(describe(err));
          }
        },
      }, `Unblock ${name}`)));
    }
  };
  openDialog("Account",
    h("p", { class: "muted small" }, `Signed in as @${me.username}`),
    nameForm,
    h("h3", {}, "Password"), passwordForm,
    h("h3", {}, "Blocked users"), blocks,
    h("h3", {}, "Notifications"), pushControl(push),
    h("h3", {}, "Sessions"),
    h("div", { class: "row" },
      h("button", { type: "button", id: "logout", onclick: () => onLogout(false) }, "Log out"),
      h("button", { type: "button", class: "danger", id: "logout-everywhere", onclick: () => onLogout(true) }, "Log out everywhere")),
    h("p", { class: "small" }, h("a", { href: "/v1/docs" }, "API explorer")));
  renderBlocks();
}

// -- new chat / new group -----------------------------------------------------------------

async function lookupUser(store, username) {
  const user = await store.api.lookup(username.replace(/^@/, "").trim());
  if (user.id === store.me.id) throw new Error("That is you.");
  store.users.set(user.id, Promise.resolve(user));
  await store.userName(user.id);
  return user;
}

export function newChat(store, open) {
  current = { kind: "new-chat" };
  const error = errorLine();
  openDialog("New chat", h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const user = await lookupUser(store, e.target.elements["chat-username"].value);
        const conv = store.ensureConversation(`user:${user.id}`);
        conv.title = user.display_name;
        closeDialog();
        open(conv.key);
      } catch (err) {
        error.textContent = err.status === 404 ? "No user has that username." : describe(err);
      }
    },
  }, field("chat-username", "Username", { required: true, autocapitalize: "none", placeholder: "ada.lovelace" }),
  h("button", { type: "submit", class: "primary" }, "Open chat"), error));
}

export function newGroup(store, open) {
  current = { kind: "new-group" };
  const members = new Map();
  const chips = h("div", { class: "chips", "aria-label": "Members to add", role: "list" });
  const error = errorLine();
  const renderChips = () => {
    chips.replaceChildren(...[...members.values()].map((u) => h("span", { class: "chip", role: "listitem" }, u.display_name,
      h("button", { type: "button", "aria-label": `Remove ${u.display_name}`, onclick: () => { members.delete(u.id); renderChips(); } }, "✕"))));
  };
  const memberInput = h("input", { id: "group-member", autocapitalize: "none", placeholder: "username" });
  const addMember = async () => {
    if (!memberInput.value.trim()) return;
    try {
      const user = await lookupUser(store, memberInput.value);
      members.set(user.id, user);
      memberInput.value = "";
      error.textContent = "";
      renderChips();
      memberInput.focus();
    } catch (err) {
      error.textContent = err.status === 404 ? "No user has that username." : describe(err);
    }
  };
  memberInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addMember();
    }
  });
  openDialog("New group", h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const group = await store.api.createGroup(e.target.elements["group-name"].value.trim(), [...members.keys()]);
        const conv = store.ensureConversation(`group:${group.id}`);
        conv.title = group.name;
        conv.last_activity_at = conv.last_activity_at || group.created_at;
        store.thread(conv.key).group = group;
        store.save();
        closeDialog();
        open(conv.key);
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  }, field("group-name", "Group name", { required: true, maxlength: 100 }),
  h("label", { for: "group-member" }, "Add members by username"),
  h("div", { class: "row" }, memberInput, h("button", { type: "button", id: "group-member-add", onclick: addMember }, "Add")),
  chips, h("button", { type: "submit", class: "primary" }, "Create group"), error));
}

// -- conversation details -----------------------------------------------------------------

function inboxControls(store, key) {
  if (!store.features.inbox) return [];
  const conv = store.conversations.get(key) || {};
  const toggle = (name, on, label) => h("button", {
    type: "button", "aria-pressed": String(Boolean(on)),
    onclick: async () => {
      try {
        const updated = await store.api.patchConversation(key, { [name]: !on });
        store.putServerConversation(updated);
        store.emit("conversations");
        conversation(store, key);
      } catch (err) {
        toast(describe(err));
      }
    },
  }, label);
  return [h("div", { class: "row" },
    toggle("muted", conv.muted, conv.muted ? "Unmute" : "Mute"),
    toggle("archived", conv.archived, conv.archived ? "Unarchive" : "Archive"))];
}

export async function conversation(store, key) {
  if (!key) return;
  current = { kind: "conversation", key };
  const [kind, id] = key.split(":");
  if (kind === "user") {
    const user = await store.user(id);
    const blocked = store.blocks.has(id);
    openDialog(user.display_name,
      h("p", { class: "muted" }, `@${user.username}`),
      ...inboxControls(store, key),
      h("button", {
        type: "button", class: blocked ? "" : "danger", id: "block-toggle",
        onclick: async () => {
          try {
            if (blocked) await store.api.unblock(id);
            else await store.api.block(id);
            if (blocked) store.blocks.delete(id);
            else store.blocks.add(id);
            store.emit("blocks");
            conversation(store, key);
          } catch (err) {
            toast(describe(err));
          }
        },
      }, blocked ? `Unblock ${user.display_name}` : `Block ${user.display_name}`));
    return;
  }
  let group;
  try {
    group = await store.api.group(id);
  } catch (err) {
    toast(describe(err));
    return;
  }
  store.thread(key).group = group;
  const myRole = (group.members.find((m) => m.user_id === store.me.id) || {}).role;
  const canManage = myRole === "owner" || myRole === "admin";
  const error = errorLine();
  const act = (fn) => async () => {
    try {
      await fn();
      error.textContent = "";
      const body = dialogBody();
      if (body) for (const form of body.querySelectorAll("form")) form.reset();
      await conversation(store, key);
    } catch (err) {
      error.textContent = describe(err);
    }
  };
  const names = await Promise.all(group.members.map((m) => store.userName(m.user_id)));
  const list = h("ul", { class: "members", "aria-label": "Members" }, group.members.map((m, i) => {
    const you = m.user_id === store.me.id;
    const controls = [];
    if (myRole === "owner" && !you && m.role !== "owner") {
      const next = m.role === "admin" ? "member" : "admin";
      controls.push(h("button", {
        type: "button", "aria-label": `Make ${names[i]} ${next === "admin" ? "an admin" : "a member"}`,
        onclick: act(() => store.api.changeRole(id, m.user_id, next)),
      }, next === "admin" ? "Make admin" : "Make member"));
    }
    if (canManage && !you && m.role !== "owner") {
      controls.push(h("button", {
        type: "button", class: "danger", "aria-label": `Remove ${names[i]} from the group`,
        onclick: act(() => store.api.removeMember(id, m.user_id)),
      }, "Remove"));
    }
    return h("li", { dataset: { userId: m.user_id, role: m.role } },
      h("span", { class: "who" }, you ? `${names[i]} (you)` : names[i]),
      h("span", { class: "role", dataset: { role: m.role } }, m.role),
      controls.length ? h("div", { class: "member-actions" }, controls) : null);
  }));
  const content = [h("p", { class: "muted" }, `${group.members.length} members`), ...inboxControls(store, key)];
  if (canManage) {
    content.push(h("form", {
      class: "row",
      onsubmit: (e) => {
        e.preventDefault();
        act(() => store.api.renameGroup(id, e.target.elements["rename-group"].value.trim()))();
      },
    }, h("label", { for: "rename-group", class: "visually-hidden" }, "Group name"),
    h("input", { id: "rename-group", value: group.name, required: true, maxlength: 100 }),
    h("button", { type: "submit" }, "Rename")));
  }
  content.push(h("h3", {}, "Members"), list);
  if (canManage) {
    content.push(h("form", {
      class: "row",
      onsubmit: (e) => {
        e.preventDefault();
        const username = e.target.elements["add-member"].value;
        act(async () => {
          const user = await store.api.lookup(username.replace(/^@/, "").trim());
          await store.api.addMember(id, user.id);
        })();
      },
    }, h("label", { for: "add-member", class: "visually-hidden" }, "Username to add"),
    h("input", { id: "add-member", placeholder: "username to add", autocapitalize: "none", required: true }),
    h("button", { type: "submit" }, "Add member")));
  }
  content.push(error, h("button", {
    type: "button", class: "danger",
    onclick: async () => {
      try {
        await store.api.removeMember(id, store.me.id);
        closeDialog();
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  }, "Leave group"));
  openDialog(group.name, ...content);
}

/** Redraw the details dialog if it shows `key` (a member or role changed elsewhere). */
export function refresh(store, key) {
  if (current && current.kind === "conversation" && current.key === key && dialogBody()) {
    conversation(store, key);
  }
}

// -- message actions (on servers that have them) ------------------------------------------

export function reactionPicker(store, m, choices) {
  current = { kind: "react" };
  openDialog("React", h("div", { class: "row", role: "group", "aria-label": "Reactions" }, choices.map((emoji) => {
    const on = (m.my_reactions || []).includes(emoji);
    return h("button", {
      type: "button", "aria-pressed": String(on), "aria-label": emoji, dataset: { emoji },
      onclick: async () => {
        closeDialog();
        try {
          await store.api.react(m.id, emoji, !on);
        } catch (err) {
          toast(describe(err));
        }
      },
    }, emoji);
  })));
}

export function editMessage(store, m) {
  current = { kind: "edit" };
  const error = errorLine();
  openDialog("Edit message", h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const updated = await store.api.editMessage(m.id, e.target.elements["edit-content"].value);
        if (updated && updated.id) store.ingest(updated, { update: true });
        closeDialog();
      } catch (err) {
        error.textContent = describe(err);
      }
    },
  }, h("label", { for: "edit-content" }, "Message"),
  h("textarea", { id: "edit-content", rows: 3, maxlength: 4000, required: true }, m.content),
  h("button", { type: "submit", class: "primary" }, "Save"), error));
}

export function deleteMessage(store, m) {
  current = { kind: "delete" };
  openDialog("Delete message?",
    h("p", {}, "It is deleted for everyone in the conversation."),
    h("div", { class: "row" },
      h("button", { type: "button", onclick: closeDialog }, "Cancel"),
      h("button", {
        type: "button", class: "danger", id: "confirm-delete",
        onclick: async () => {
          closeDialog();
          try {
            await store.api.deleteMessage(m.id);
          } catch (err) {
            toast(describe(err));
          }
        },
      }, "Delete")));
}
