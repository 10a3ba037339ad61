"""The whole system starts: every service answers /healthz, /readyz and /metrics (the
gateway's on a listener of its own, not on the public API port)."""

from __future__ import annotations

import aiohttp

from tests.support.system import SERVICES, RunningSystem


async def test_every_service_is_ready(system: RunningSystem, http: aiohttp.ClientSession) -> None:
    assert set(system.services) == set(SERVICES)
    for name, proc in system.services.items():
        for url in (proc.url + "/healthz", proc.url + "/readyz", proc.metrics_url):
            async with http.get(url) as response:
                assert response.status == 200, (name, url, await response.text())
                if url == proc.metrics_url:
                    assert "messenger_" in await response.text()
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


async def test_the_gateway_api_port_does_not_serve_metrics(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    gateway = system.services["gateway"]
    assert gateway.metrics_url != gateway.url + "/metrics"
    async with http.get(gateway.url + "/metrics") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
