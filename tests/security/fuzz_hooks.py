"""Schemathesis hooks for the API fuzz (tests/security/test_api_fuzz.py): authentication.

The fuzzer logs itself out, deletes its account and changes its password, so a
fixed token dies within seconds. Every second it registers and logs in a fresh
user instead (FUZZ_GATEWAY_URL names the gateway under test).
"""

from __future__ import annotations

import os
import secrets

import requests
import schemathesis

PASSWORD = "correct horse battery staple"


@schemathesis.auth(refresh_interval=1)
class FreshUser:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        base = os.environ["FUZZ_GATEWAY_URL"]
        credentials = {"username": "fz_" + secrets.token_hex(8), "password": PASSWORD}
        registered = requests.post(f"{base}/v1/users", json=credentials, timeout=30)
        registered.raise_for_status()
        opened = requests.post(f"{base}/v1/sessions", json=credentials, timeout=30)
        opened.raise_for_status()
        return str(opened.json()["token"])

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
