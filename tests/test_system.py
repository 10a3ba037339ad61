"""The whole system starts: every service answers /healthz, /readyz and /metrics."""

from __future__ import annotations

import aiohttp

from tests.support.system import SERVICES, RunningSystem


async def test_every_service_is_ready(system: RunningSystem, http: aiohttp.ClientSession) -> None:
    assert set(system.services) == set(SERVICES)
    for name, proc in system.services.items():
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(proc.url + path) as response:
                assert response.status == 200, (name, path, await response.text())
        async with http.get(proc.url + "/readyz") as response:
            body = await response.json()
            assert body["ready"] is True, (name, body)
            assert body["checks"], (name, body)


async def test_unknown_route_has_the_error_shape(
    gateway_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(gateway_url + "/v1/no-such-thing") as response:
        assert response.status == 404
        body = await response.json()
        assert body["error"]["code"] == "not_found"
        assert set(body["error"]) == {"code", "message", "details"}
