"""The web client in real Chromium windows against the real services.

Ada, Bob and Cy each have a browser of their own (tests/webapp/conftest.py). The
tests run in file order and build on each other's conversations, as people would:
a live exchange whose ticks turn to read, the unread badge in the other window, a
reload that resumes, an offline spell that catches up, a group of three, history
paging and jump to a date, the account screens, the phone layout and the API
explorer. Every wait is bounded and waits for what a person would see.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.webapp.browser import Person
from tests.webapp.conftest import PASSWORD, rest, screenshot


def test_the_page_is_served_with_its_files_and_no_cdn(people: dict[str, Person]) -> None:
    ada = people["ada"]
    sources = ada.js(
        "return [...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    )
    assert sources
    assert all(s.startswith(ada.base_url) for s in sources), sources
    assert ada.js(
        "return performance.getEntriesByType('resource')"
        ".every(r => r.name.startsWith(location.origin))"
    )


def test_messages_order_by_instant_whatever_the_fraction_digits(people: dict[str, Person]) -> None:
    # The API writes a whole second as "...:01Z" and others as "...:01.500Z"; as text
    # the first sorts last. A message sent on a whole second once showed below later ones.
    order = people["ada"].driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        import("/app/js/store.js").then(({ Thread }) => {
          const t = new Thread("user:x");
          t.put({ id: "b", content: "second", created_at: "2026-12-02T10:00:01.500Z" });
          t.put({ id: "a", content: "first", created_at: "2026-12-02T10:00:01Z" });
          t.put({ id: "c", content: "third", created_at: "2026-12-02T10:00:02.001Z" });
          done(t.sorted().map((m) => m.content));
        }, (err) => done(String(err)));
        """
    )
    assert order == ["first", "second", "third"]


def test_signing_out_after_registering_shows_the_login_form(gateway_url: str, suffix: str) -> None:
    dan = Person(gateway_url, "dan")
    try:
        dan.register(f"dan{suffix}", PASSWORD, "Dan Newcomer")
        dan.click("#me-button")
        dan.click("#logout")
        dan.wait_for(lambda: dan.find("#auth").is_displayed(), "the login screen")
        assert "Logged out" in dan.text_of("#auth-error")
        # Without a reload: the screen shows the login form, not the register form.
        dan.type_into("#login-username", f"dan{suffix}")
        dan.type_into("#login-password", PASSWORD)
        dan.click("#login-form button[type=submit]")
        dan.wait_for(lambda: dan.find("#me-name").text == "Dan Newcomer", "the main screen")
    finally:
        dan.close()


def test_live_exchange_ticks_turn_read_and_badge_in_the_other_window(
    people: dict[str, Person], suffix: str
) -> None:
    ada, bob = people["ada"], people["bob"]
    ada.start_chat(f"bob{suffix}")
    ada.send("Hello Bob! Lunch at noon?")
    ada.message("Hello Bob! Lunch at noon?")
    # Bob has the app open on his list: the conversation appears with a badge.
    ada.wait_status("Hello Bob! Lunch at noon?", "delivered")
    bob.wait_for(lambda: bob.unread_badge("Ada Lovelace") == "1", "Bob's unread badge")
    ada.send("I found a new place")
    bob.wait_for(lambda: bob.unread_badge("Ada Lovelace") == "2", "Bob's badge to reach 2")
    screenshot(bob, "conversation-list")
    # Bob opens it: both are read, the badge goes, Ada's ticks turn to read.
    bob.open_conversation("Ada Lovelace")
    bob.message("I found a new place")
    ada.wait_status("Hello Bob! Lunch at noon?", "read")
    ada.wait_status("I found a new place", "read")
    assert bob.unread_badge("Ada Lovelace") == ""
    # Typing shows in the other window; the answer arrives live.
    bob.find("#composer-input").send_keys("Sounds")
    ada.wait_for(lambda: "typing" in ada.text_of("#typing"), "Bob typing")
    bob.find("#composer-input").send_keys(" good, see you there" + Keys.ENTER)
    ada.message("Sounds good, see you there")
    bob.wait_status("Sounds good, see you there", "read")
    assert ada.text_of("#chat-subtitle") == "online"
    screenshot(ada, "chat")


def test_a_reload_resumes_with_nothing_missed_or_doubled(people: dict[str, Person]) -> None:
    ada, bob = people["ada"], people["bob"]
    bob.open("/app/icon.svg")  # Bob leaves the app; Ada writes meanwhile
    ada.send("Are you still there?")
    ada.send("Booked a table for two")
    ada.wait_status("Booked a table for two", "sent")
    bob.open("/")
    bob.wait_for_live()
    # The list shows the new messages as unread (the chat was not open) ...
    bob.wait_for(lambda: bob.unread_badge("Ada Lovelace") == "2", "two unread after the reload")
    bob.open_conversation("Ada Lovelace")
    bob.message("Booked a table for two")
    texts = bob.message_texts()
    for text in ("Hello Bob! Lunch at noon?", "Are you still there?", "Booked a table for two"):
        assert texts.count(text) == 1, texts
    ada.wait_status("Booked a table for two", "read")


def test_going_offline_and_back_catches_up(people: dict[str, Person]) -> None:
    ada, bob = people["ada"], people["bob"]
    bob.set_offline(True)
    bob.wait_for(
        lambda: bob.find("#connection").get_attribute("data-state") == "offline",
        "Bob's app to notice it is offline",
    )
    # A send while offline fails visibly, with a retry button.
    bob.send("Sent from the tunnel")
    bob.wait_for(lambda: bob.all("#messages .msg.failed .retry"), "the failed send's retry button")
    for n in range(1, 4):
        ada.send(f"While you were away {n}")
    ada.wait_status("While you were away 3", "sent")
    assert not [t for t in bob.message_texts() if t.startswith("While you were away")]
    bob.set_offline(False)
    bob.wait_for_live()
    bob.message("While you were away 3")
    texts = [t for t in bob.message_texts() if t.startswith("While you were away")]
    assert texts == [f"While you were away {n}" for n in (1, 2, 3)]
    # The retry goes through with the same client_msg_id: one message, not two.
    bob.click("#messages .msg.failed .retry")
    ada.message("Sent from the tunnel")
    bob.wait_status("Sent from the tunnel", "read")
    assert bob.message_texts().count("Sent from the tunnel") == 1
    assert ada.message_texts().count("Sent from the tunnel") == 1


def test_reply_edit_react_and_delete_seen_by_the_other_person(people: dict[str, Person]) -> None:
    ada, bob = people["ada"], people["bob"]
    # Bob replies to one of Ada's messages: the quote shows on both sides.
    bob.act_on("Booked a table for two", "Reply")
    bob.wait_for(lambda: "Booked a table for two" in bob.text_of("#reply-bar"), "the reply bar")
    bob.send("Which place?")
    quote = ada.message("Which place?").find_element(By.CSS_SELECTOR, ".reply-quote")
    assert "Booked a table for two" in quote.text
    # Ada edits a message: Bob sees the new text, marked edited.
    ada.act_on("I found a new place", "Edit")
    ada.type_into("#edit-content", "I found a new place downtown")
    ada.click("#dialog-body button.primary")
    edited = bob.message("I found a new place downtown")
    assert edited.find_element(By.CSS_SELECTOR, ".edited").text == "edited"
    # Ada reacts to Bob's reply: Bob sees the count.
    ada.act_on("Which place?", "React")
    ada.click('#dialog-body button[data-emoji="👍"]')
    bob.wait_for(
        lambda: (
            [
                b.text
                for b in bob.message("Which place?").find_elements(
                    By.CSS_SELECTOR, ".reactions button"
                )
            ]
            == ["👍 1"]
        ),
        "Ada's reaction on Bob's screen",
    )
    # Ada deletes a message for everyone: Bob sees the tombstone in its place.
    ada.act_on("Are you still there?", "Delete")
    ada.click("#confirm-delete")

    def tombstones(person: Person) -> int:
        return len(person.all("#messages .msg .text.deleted"))

    bob.wait_for(lambda: tombstones(bob) == 1, "the tombstone on Bob's screen")
    ada.wait_for(lambda: tombstones(ada) == 1, "the tombstone on Ada's screen")
    assert "Are you still there?" not in bob.message_texts()
    bob.js(
        "arguments[0].scrollIntoView({block: 'start'})",
        bob.message("I found a new place downtown"),
    )
    ActionChains(bob.driver).move_to_element(bob.message("Booked a table for two")).perform()
    screenshot(bob, "message-actions")


def test_an_image_and_a_file_sent_with_retry_and_seen_by_the_other_person(
    people: dict[str, Person], tmp_path: Path
) -> None:
    ada, bob = people["ada"], people["bob"]
    picture = tmp_path / "table.png"
    Image.new("RGB", (64, 48), (200, 80, 40)).save(picture)
    notes = tmp_path / "menu.txt"
    notes.write_bytes(b"soup, bread, pie\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    # The server has attachments, so the composer offers the attach button.
    assert ada.find("#attach-button").is_displayed()
    assert ada.find("#attach-button").get_attribute("aria-label") == "Attach files"
    # A file the server refuses shows its error in the tray, and can be removed.
    ada.attach(empty)
    refused = "#upload-tray .upload[data-state=failed] [role=alert]"
    ada.wait_for(lambda: ada.all(refused), "the upload's error")
    assert "empty" in ada.text_of("#upload-tray [role=alert]").lower()
    ada.click("#upload-tray button[aria-label='Remove empty.txt']")
    ada.wait_for(lambda: not ada.all("#upload-tray .upload"), "the tray to empty")
    # The image uploads; the send fails offline, and the retry carries it.
    ada.attach(picture)
    ada.wait_for(lambda: ada.all("#upload-tray .upload[data-state=ready]"), "the upload")
    ada.set_offline(True)
    ada.send("Our table tonight")
    ada.wait_for(lambda: ada.all("#messages .msg.failed .retry"), "the failed send's retry")
    assert ada.message("Our table tonight").find_elements(By.CSS_SELECTOR, ".attachments figure")
    ada.set_offline(False)
    ada.wait_for_live()
    ada.click("#messages .msg.failed .retry")
    ada.wait_status("Our table tonight", "read")
    # Bob sees the preview: the thumbnail, fetched with his token, through a blob: URL.
    bob.message("Our table tonight")
    loaded = (
        "return [...document.querySelectorAll('#messages .msg img.preview')].filter("
        "i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0).length"
    )
    bob.wait_for(lambda: bob.js(loaded) == 1, "the image preview to load")
    assert bob.js("return document.querySelector('#messages img.preview').alt") == "table.png"
    screenshot(bob, "attachment")
    # A file with no text: Bob gets a download button that saves it under its name.
    ada.attach(notes)
    ada.wait_for(lambda: ada.all("#upload-tray .upload[data-state=ready]"), "the second upload")
    ada.click("#send-button")
    downloads = tmp_path / "bob-downloads"
    downloads.mkdir()
    bob.driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    bob.click("#messages button.file[aria-label^='Download menu.txt']")
    saved = downloads / "menu.txt"
    bob.wait_for(lambda: saved.exists() and saved.read_bytes() == notes.read_bytes(), "the file")
    assert ada.message_texts().count("Our table tonight") == 1
    assert bob.message_texts().count("Our table tonight") == 1


def test_archive_and_mute_from_the_conversation_details(people: dict[str, Person]) -> None:
    ada, bob = people["ada"], people["bob"]
    bob.click("#chat-menu-button")
    bob.click_text("Archive")
    bob.wait_for(
        lambda: "Ada Lovelace" not in [e.text for e in bob.all("#conversation-list .conv-title")],
        "the chat to leave the main list",
    )
    bob.click("#dialog button[value=cancel]")
    bob.click("#show-archived")
    bob.find(bob.conversation_css("Ada Lovelace"))
    bob.click("#show-active")
    # A new message brings an archived (not muted) chat back.
    bob.open("/app/icon.svg")
    ada.send("Dessert after?")
    ada.wait_status("Dessert after?", "sent")
    bob.open("/")
    bob.wait_for_live()
    bob.wait_for(lambda: bob.unread_badge("Ada Lovelace") == "1", "the chat back with a badge")
    # Muted: the badge is grey and the list says so.
    bob.open_conversation("Ada Lovelace")
    bob.click("#chat-menu-button")
    bob.click_text("Mute")
    bob.wait_for(lambda: bob.all("#dialog-body button[aria-pressed=true]"), "the mute to apply")
    bob.click("#dialog button[value=cancel]")
    bob.wait_for(
        lambda: bob.find(bob.conversation_css("Ada Lovelace")).find_elements(
            By.CSS_SELECTOR, ".muted-label"
        ),
        "the muted label",
    )


def test_a_group_chat_with_three_people(people: dict[str, Person], suffix: str) -> None:
    ada, bob, cy = people["ada"], people["bob"], people["cy"]
    ada.click("#new-group")
    ada.type_into("#group-name", "Analytical Engine")
    for name in ("bob", "cy"):
        ada.type_into("#group-member", f"{name}{suffix}")
        ada.click("#group-member-add")
        ada.wait_for(
            lambda n=name: len(ada.all("#dialog-body .chip")) == (1 if n == "bob" else 2),
            f"{name} in the member chips",
        )
    ada.click("#dialog-body button.primary")
    ada.wait_for(lambda: ada.text_of("#chat-title") == "Analytical Engine", "the new group")
    ada.send("Welcome to the group!")
    for person in (bob, cy):
        person.wait_for(
            lambda p=person: p.unread_badge("Analytical Engine") == "1", f"{person.name}'s badge"
        )
        person.open_conversation("Analytical Engine")
        person.message("Welcome to the group!")
    ada.wait_status("Welcome to the group!", "read")
    bob.send("Glad to be here")
    cy.send("Hello both")
    for person in (ada, bob, cy):
        person.message("Glad to be here")
        person.message("Hello both")
    author = ada.message("Glad to be here").find_element(By.CSS_SELECTOR, ".author").text
    assert author == "Bob Babbage"
    screenshot(ada, "group")
    # Roles and membership from the details dialog: Bob becomes admin, Cy is removed.
    ada.click("#chat-menu-button")
    ada.click('#dialog-body button[aria-label="Make Bob Babbage an admin"]')
    ada.wait_for(
        lambda: any(
            li.find_element(By.CSS_SELECTOR, ".who").text == "Bob Babbage"
            and li.find_element(By.CSS_SELECTOR, ".role").text == "admin"
            for li in ada.all("#dialog-body .members li")
        ),
        "Bob shown as admin",
    )
    screenshot(ada, "group-details")
    ada.click('#dialog-body button[aria-label="Remove Cy Hopper from the group"]')
    cy.wait_for(
        lambda: cy.js("return document.querySelector('#chat-pane').hidden"),
        "Cy's group to close when removed",
    )
    assert "Analytical Engine" not in [el.text for el in cy.all("#conversation-list .conv-title")]
    # Added back from the same dialog: the group returns to Cy's list.
    ada.type_into("#add-member", f"cy{suffix}")
    ada.click_text("Add member")
    cy.find(cy.conversation_css("Analytical Engine"))
    ada.click("#dialog button[value=cancel]")
    # The list reorders live: a new direct message puts that chat on top again.
    first_title = "return document.querySelector('#conversation-list .conv-title').textContent"
    assert ada.js(first_title) == "Analytical Engine"
    bob.open_conversation("Ada Lovelace")
    bob.send("Back to just us two")
    ada.wait_for(lambda: ada.js(first_title) == "Bob Babbage", "Bob's chat on top")


def test_history_scrolls_back_and_jumps_to_a_date(
    people: dict[str, Person], gateway_url: str, suffix: str
) -> None:
    cy = people["cy"]
    token = rest(
        gateway_url, "POST", "/v1/sessions", {"username": f"ada{suffix}", "password": PASSWORD}
    )["token"]
    cy_id = rest(gateway_url, "GET", f"/v1/users?username=cy{suffix}", token=token)["id"]
    total = 120
    for n in range(1, total + 1):
        rest(
            gateway_url,
            "POST",
            "/v1/messages",
            {"to_user_id": cy_id, "content": f"Note {n}"},
            token,
        )
    cy.open_conversation("Ada Lovelace")
    cy.message(f"Note {total}")
    assert len(cy.all("#messages .msg")) < total  # one page, not everything

    # Infinite scroll: scrolling to the top loads older pages until the start.
    def scrolled_to_start() -> bool:
        cy.js("document.getElementById('messages').scrollTop = 0")
        return "start of the conversation" in cy.text_of("#messages .older-note")

    cy.wait_for(scrolled_to_start, "the start of the conversation", timeout=60)
    texts = cy.message_texts()
    assert texts == [f"Note {n}" for n in range(1, total + 1)]
    # Jump to a date: today, whose first message is the first note.
    cy.open("/")
    cy.wait_for_live()
    cy.open_conversation("Ada Lovelace")
    cy.message(f"Note {total}")
    cy.click("#jump-toggle")
    cy.js(
        "const i = document.getElementById('jump-date'); i.value = arguments[0];",
        date.today().isoformat(),
    )
    cy.click("#jump-form button")
    cy.wait_for(
        lambda: (
            cy.js("return document.activeElement.classList.contains('msg')")
            and cy.js("return document.activeElement.querySelector('.text').textContent")
            == "Note 1"
        ),
        "the first message of the day, focused",
    )
    assert "Jump to latest" in cy.text_of("#to-latest")
    cy.click("#to-latest")
    cy.message(f"Note {total}")


def test_account_settings_block_and_logout(
    people: dict[str, Person], gateway_url: str, suffix: str
) -> None:
    bob, cy = people["bob"], people["cy"]
    # Display name.
    cy.click("#me-button")
    cy.type_into("#settings-display", "Cy H.")
    cy.click_text("Save name")
    cy.wait_for(lambda: cy.text_of("#me-name") == "Cy H.", "the new display name")
    screenshot(cy, "account")
    cy.click("#dialog button[value=cancel]")
    # Block from the chat details: Bob's messages to Cy are refused, the UI says so.
    cy.start_chat(f"bob{suffix}")
    cy.click("#chat-menu-button")
    cy.click("#block-toggle")
    cy.wait_for(lambda: cy.text_of("#block-toggle").startswith("Unblock"), "the block to apply")
    cy.click("#dialog button[value=cancel]")
    cy.wait_for(lambda: cy.find("#blocked-note").is_displayed(), "the blocked note")
    bob.start_chat(f"cy{suffix}")
    bob.send("Can you hear me?")
    bob.wait_for(lambda: bob.all("#messages .msg.failed .retry"), "Bob's refused send")
    cy.click("#chat-menu-button")
    cy.click("#block-toggle")
    cy.wait_for(lambda: cy.text_of("#block-toggle").startswith("Block"), "the unblock")
    cy.click("#dialog button[value=cancel]")
    bob.click("#messages .msg.failed .retry")
    cy.message("Can you hear me?")
    # Password change, then log out everywhere: a second window of Cy's is logged out too.
    cy.click("#me-button")
    cy.type_into("#settings-current", PASSWORD)
    cy.type_into("#settings-new", PASSWORD + "!")
    cy.click_text("Change password")
    cy.wait_for(lambda: "Password changed" in cy.text_of("#toast"), "the password change")
    second = Person(gateway_url, "cy-phone", width=390, height=844)
    try:
        second.log_in(f"cy{suffix}", PASSWORD + "!")
        cy.click("#logout-everywhere")
        cy.wait_for(lambda: cy.find("#auth").is_displayed(), "Cy's login screen")
        second.wait_for(lambda: second.find("#auth").is_displayed(), "the other window logged out")
        screenshot(second, "login-phone")
    finally:
        second.close()
    # The old password no longer works; the new one does.
    cy.type_into("#login-username", f"cy{suffix}")
    cy.type_into("#login-password", PASSWORD)
    cy.click("#login-form button[type=submit]")
    cy.wait_for(lambda: cy.text_of("#auth-error"), "the wrong-password message")
    cy.log_in(f"cy{suffix}", PASSWORD + "!")


def test_phone_width_shows_one_pane_at_a_time(gateway_url: str, suffix: str) -> None:
    phone = Person(gateway_url, "bob-phone", width=390, height=844)
    try:
        phone.log_in(f"bob{suffix}", PASSWORD)
        assert phone.find("#conversation-list").is_displayed()
        phone.open_conversation("Ada Lovelace")
        phone.message("Hello Bob! Lunch at noon?")
        sidebar = "return getComputedStyle(document.querySelector('.sidebar')).display"
        assert phone.js(sidebar) == "none"
        screenshot(phone, "chat-phone")
        phone.click("#back")
        phone.wait_for(
            lambda: phone.js(sidebar) != "none",
            "the list again",
        )
        assert phone.js("return window.innerWidth") == 390
        assert phone.js("return document.documentElement.scrollWidth") <= 390
    finally:
        phone.close()


def test_the_api_explorer_is_swagger_ui_served_offline(people: dict[str, Person]) -> None:
    ada = people["ada"]
    ada.open("/v1/docs")
    ada.wait_for(lambda: len(ada.all(".swagger-ui .opblock")) > 20, "the operations")
    assert "Messenger API" in ada.text_of(".swagger-ui .info .title")
    assert ada.js(
        "return performance.getEntriesByType('resource')"
        ".every(r => r.name.startsWith(location.origin))"
    )
    screenshot(ada, "api-explorer")
    ada.open("/")
    ada.wait_for_live()
