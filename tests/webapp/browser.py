"""A person in a real browser: Debian's Chromium driven by chromium-driver (Selenium).

`Person` opens its own Chromium (a fresh profile, so two people never share
storage) on the gateway's web client and acts as a user would: it types into
labelled fields, clicks buttons and waits, with a bounded wait, for what a person
would look for on the screen. Nothing here sleeps for a fixed time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import websocket
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30.0
T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-GB",
)


class DevTools:
    """A DevTools protocol connection of our own to one page of a Person's Chromium.

    chromedriver's execute_cdp_cmd answers commands but hands over no events, and some
    answers come only as events (the ServiceWorker domain's registrations). Chromium
    accepts more than one client per page, so this one sits beside chromedriver's.
    """

    def __init__(self, url: str) -> None:
        # No Origin header: Chromium refuses DevTools sockets from web origins.
        self.socket = websocket.create_connection(url, timeout=WAIT_S, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.socket.close()

    def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})  # type: ignore[no-any-return]
            if "method" in message:
                self.events.append(message)

    def wait_event(
        self, method: str, accept: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """The params of the first `method` event (seen or to come) that `accept`s."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method and accept(event["params"]):
                    return event["params"]  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {method} event within {timeout} s: {self.events}")
            self.socket.settimeout(left)
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message)


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


class Person:
    """One user in one browser window."""

    def __init__(self, base_url: str, name: str, *, width: int = 1280, height: int = 900) -> None:
        self.base_url = base_url
        self.name = name
        self.profile = tempfile.mkdtemp(prefix=f"chromium-{name}-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(90)
        if width < 500:  # headless windows are at least 500 px wide: emulate a phone's screen
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
            )

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- looking --------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
        """Poll `condition` until it returns something truthy (bounded); its value."""

        def check(_: Any) -> T | None:
            try:
                return condition() or None
            except (
                StaleElementReferenceException,
                ElementClickInterceptedException,
                ElementNotInteractableException,
            ):
                return None

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check)
        except TimeoutException:
            self.screenshot(Path(tempfile.gettempdir()) / f"failed-{self.name}.png")
            raise AssertionError(f"{self.name}: gave up waiting for {what}") from None

    def find(self, css: str) -> WebElement:
        return self.wait_for(lambda: self._visible(css), f"an element {css!r}")

    def _visible(self, css: str) -> WebElement | None:
        for el in self.driver.find_elements(By.CSS_SELECTOR, css):
            if el.is_displayed():
                return el
        return None

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, css: str) -> str:
        return self.find(css).text

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    # -- acting ---------------------------------------------------------------------------

    def open(self, path: str = "/") -> None:
        self.driver.get(self.base_url + path)

    def type_into(self, css: str, text: str, *, clear: bool = True) -> None:
        """Type into the visible field `css`, again from scratch if the page redrew it."""

        def typed() -> bool:
            el = self._visible(css)
            if el is None:
                return False
            if clear:
                el.clear()
            el.send_keys(text)
            return True

        self.wait_for(typed, f"a field {css!r} to type into")

    def click(self, css: str) -> None:
        """Click the visible element `css`, again if the page redrew it meanwhile."""

        def clicked() -> bool:
            el = self._visible(css)
            if el is None:
                return False
            el.click()
            return True

        self.wait_for(clicked, f"a clickable {css!r}")

    def click_text(self, text: str, css: str = "button") -> None:
        def clicked() -> bool:
            for el in self.driver.find_elements(By.CSS_SELECTOR, css):
                if el.is_displayed() and el.text.strip() == text:
                    el.click()
                    return True
            return False

        self.wait_for(clicked, f"a {css} reading {text!r}")

    def register(self, username: str, password: str, display_name: str) -> None:
        self.open("/")
        self.click("#tab-register")
        self.type_into("#register-username", username)
        self.type_into("#register-display", display_name)
        self.type_into("#register-password", password)
        self.click("#register-form button[type=submit]")
        self.wait_for(lambda: self.find("#me-name").text == display_name, "the main screen")
        self.wait_for_live()

    def log_in(self, username: str, password: str) -> None:
        self.open("/")
        self.type_into("#login-username", username)
        self.type_into("#login-password", password)
        self.click("#login-form button[type=submit]")
        self.find("#me-name")
        self.wait_for_live()

    def wait_for_live(self) -> None:
        self.wait_for(
            lambda: self.find("#connection").get_attribute("data-state") == "live",
            "the socket to be live",
        )

    def start_chat(self, username: str) -> None:
        self.click("#new-chat")
        self.type_into("#chat-username", username)
        self.click("#dialog-body button[type=submit]")
        self.wait_for(
            lambda: not self.js("return document.getElementById('dialog').open"),
            "the new chat dialog to close",
        )
        self.find("#composer-input")

    def open_conversation(self, title: str) -> None:
        self.click(self.conversation_css(title))
        self.wait_for(lambda: self.find("#chat-title").text == title, f"the chat {title!r}")

    def conversation_css(self, title: str) -> str:
        key = self.wait_for(
            lambda: self._conversation_key(title), f"{title!r} in the conversation list"
        )
        return f'#conversation-list button[data-key="{key}"]'

    def _conversation_key(self, title: str) -> str | None:
        for el in self.all("#conversation-list button"):
            if el.find_element(By.CSS_SELECTOR, ".conv-title").text == title:
                return el.get_attribute("data-key")
        return None

    def unread_badge(self, title: str) -> str:
        """The unread count shown beside a conversation ('' when none)."""
        el = self.find(self.conversation_css(title))
        badges = el.find_elements(By.CSS_SELECTOR, ".badge")
        return badges[0].text if badges else ""

    def send(self, text: str) -> None:
        self.type_into("#composer-input", text)
        self.click("#send-button")

    def attach(self, path: Path) -> None:
        """Choose a file with the composer's attach button (its file input is hidden, as a
        file chooser dialog is not something WebDriver can drive)."""
        self.wait_for(lambda: self._visible("#attach-button"), "the attach button")
        self.driver.find_element(By.CSS_SELECTOR, "#attach-input").send_keys(str(path))

    def message(self, text: str) -> WebElement:
        """The message bubble whose text is `text`, once it is shown."""

        def bubble() -> WebElement | None:
            for el in self.all("#messages .msg"):
                parts = el.find_elements(By.CSS_SELECTOR, ".text")
                if parts and parts[0].text == text:
                    return el
            return None

        return self.wait_for(bubble, f"the message {text!r}")

    def act_on(self, text: str, action: str) -> None:
        """Point at a message and press one of its actions (Reply, React, Edit, Delete)."""

        def clicked() -> bool:
            bubble = self.message(text)
            ActionChains(self.driver).move_to_element(bubble).perform()
            for el in bubble.find_elements(By.CSS_SELECTOR, ".msg-actions button"):
                if el.is_displayed() and el.text == action:
                    el.click()
                    return True
            return False

        self.wait_for(clicked, f"the {action!r} action of {text!r}")

    def status_of(self, text: str) -> str:
        ticks = self.message(text).find_elements(By.CSS_SELECTOR, ".ticks")
        return ticks[0].get_attribute("data-status") if ticks else ""

    def wait_status(self, text: str, status: str) -> None:
        self.wait_for(lambda: self.status_of(text) == status, f"{text!r} to be {status}")

    def message_texts(self) -> list[str]:
        # One script call: the list may re-render between a lookup and a read, and an
        # element read after that is stale.
        return list(
            self.js(
                "return [...document.querySelectorAll('#messages .msg .text')]"
                ".map(e => (e.offsetParent === null ? '' : e.innerText))"
            )
        )

    def devtools(self) -> DevTools:
        """A DevTools connection of our own to the page this window shows."""
        address = self.driver.capabilities["goog:chromeOptions"]["debuggerAddress"]
        with urllib.request.urlopen(f"http://{address}/json/list", timeout=WAIT_S) as reply:
            targets = json.loads(reply.read())
        [page] = [t for t in targets if t["type"] == "page" and t["url"].startswith(self.base_url)]
        return DevTools(page["webSocketDebuggerUrl"])

    def set_permission(self, name: str, setting: str) -> None:
        """Answer a permission for the app's origin as a person would in the browser's
        prompt or site settings: granted, denied or prompt."""
        if setting == "granted":
            self.driver.execute_cdp_cmd(
                "Browser.grantPermissions", {"origin": self.base_url, "permissions": [name]}
            )
            return
        self.driver.execute_cdp_cmd(
            "Browser.setPermission",
            {"origin": self.base_url, "permission": {"name": name}, "setting": setting},
        )

    def set_offline(self, offline: bool) -> None:
        """Cut (or restore) this browser's network, as airplane mode would."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
