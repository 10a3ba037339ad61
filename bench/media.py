"""`python -m bench.media [--runs N]`: the attachment store and the attachment API, measured.

Three parts, each printing its figures (medians of N runs where it repeats):

1. The local store decision: the same BlobStore interface on GridFS over the
   launcher's FerretDB (SQLite) and on its S3Proxy. Files of 8 MiB are stored one
   after another; after each, the first file is read whole and a 64 KiB range of
   it is read, so the table shows how reads behave as the store fills.
2. One client through the gateway: upload and download of a 25 MB attachment.
3. 20 clients uploading 25 MB each at once: the gateway's RSS (sampled every
   50 ms) before and at its peak, and the aggregate upload rate.

The machine is shared by other engineers' stacks: figures vary between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator

import aiohttp

from bench.environment import BenchSystem
from bench.procstat import rss_bytes
from libs.media.settings import MediaSettings
from libs.media.store import BlobStore, GridFSBlobStore, S3BlobStore
from libs.storage.mongo import open_shards
from tests.support import endpoints
from tests.support.client import Api

MB = 1_000_000
MIB = 1024 * 1024
FILE_MIB = 8
ATTACHMENT_BYTES = 25 * MB
CONCURRENT = 20


async def _pieces(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _drain(chunks: AsyncIterator[bytes]) -> int:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
    return total


async def store_decision(files: int) -> None:
    print(f"\n1. Local store: {files} files of {FILE_MIB} MiB stored one after another")
    print(
        f"{'store':<10}{'stored MiB':>11}{'write MB/s':>12}"
        f"{'read 1st MB/s':>15}{'64 KiB range ms':>17}"
    )
    database = "bench_media_" + secrets.token_hex(4)
    shards = open_shards(endpoints.mongo_shards()[:1], database)
    stores: dict[str, BlobStore] = {
        "gridfs": GridFSBlobStore(shards),
        "s3proxy": S3BlobStore(
            MediaSettings.model_validate({"S3_ENDPOINT_URL": endpoints.s3_endpoint()})
        ),
    }
    size = FILE_MIB * MIB
    data = os.urandom(size)
    try:
        for name, store in stores.items():
            await store.start()
            keys = []
            for n in range(1, files + 1):
                key = f"bench-media-{database}/{n}"
                started = time.perf_counter()
                await store.put(key, _pieces(data), "application/octet-stream")
                write = size / (time.perf_counter() - started) / MB
                keys.append(key)
                started = time.perf_counter()
                await _drain(store.read(keys[0], 0, size - 1))
                read = size / (time.perf_counter() - started) / MB
                started = time.perf_counter()
                await _drain(store.read(keys[0], size // 2, size // 2 + 65535))
                ranged = (time.perf_counter() - started) * 1000
                print(f"{name:<10}{n * FILE_MIB:>11}{write:>12.1f}{read:>15.1f}{ranged:>17.0f}")
            for key in keys:
                await store.delete(key)
            await store.close()
    finally:
        for client in shards.clients:
            await client.drop_database(database)
        await shards.close()


async def _upload(http: aiohttp.ClientSession, base: str, token: str, data: bytes) -> str:
    async with http.post(
        f"{base}/v1/attachments",
        data=_pieces(data),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "video/mp4"},
    ) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}: {body}")
        return str(body["id"])


async def through_gateway(bench: BenchSystem, runs: int) -> None:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = Api(http, bench.gateway_url)
        user = await api.new_user("media")
        data = os.urandom(ATTACHMENT_BYTES)
        ups, downs = [], []
        for _ in range(runs):
            started = time.perf_counter()
            attachment = await _upload(http, bench.gateway_url, user.token, data)
            ups.append(ATTACHMENT_BYTES / (time.perf_counter() - started) / MB)
            started = time.perf_counter()
            async with http.get(
                f"{bench.gateway_url}/v1/attachments/{attachment}", headers=user.auth
            ) as response:
                received = 0
                async for chunk in response.content.iter_chunked(256 * 1024):
                    received += len(chunk)
            assert received == ATTACHMENT_BYTES, received
            downs.append(ATTACHMENT_BYTES / (time.perf_counter() - started) / MB)
        print(f"\n2. One client through the gateway, 25 MB, {runs} runs (median [min-max])")
        print(f"   upload   {_spread(ups)} MB/s")
        print(f"   download {_spread(downs)} MB/s")

        gateway = bench.service_pids()["gateway"]
        peaks, before, rates = [], [], []
        for _ in range(runs):
            await asyncio.sleep(1)
            idle = rss_bytes(gateway)
            done = asyncio.Event()
            sampler = asyncio.create_task(_peak_rss(gateway, done))
            started = time.perf_counter()
            await asyncio.gather(
                *(_upload(http, bench.gateway_url, user.token, data) for _ in range(CONCURRENT))
            )
            elapsed = time.perf_counter() - started
            done.set()
            peak = max(idle, await sampler)
            before.append(idle / MIB)
            peaks.append(peak / MIB)
            rates.append(CONCURRENT * ATTACHMENT_BYTES / elapsed / MB)
        print(f"\n3. {CONCURRENT} uploads of 25 MB at once, {runs} runs (median [min-max])")
        print(f"   gateway RSS before  {_spread(before)} MiB")
        print(f"   gateway RSS peak    {_spread(peaks)} MiB")
        print(f"   aggregate upload    {_spread(rates)} MB/s")


async def _peak_rss(pid: int, done: asyncio.Event) -> int:
    peak = 0
    while not done.is_set():
        peak = max(peak, rss_bytes(pid))
        await asyncio.sleep(0.05)
    return peak


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.media")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=8, help="files in the store comparison")
    parser.add_argument("--skip-store", action="store_true", help="skip part 1")
    args = parser.parse_args(argv)
    print("bench.media: the machine is shared; figures vary between runs")
    bench = await asyncio.to_thread(
        BenchSystem.start,
        # Many uploads by one user in a few seconds: far past a person's upload limit.
        {"LOG_LEVEL": "WARNING", "GATEWAY_RATE_UPLOADS_PER_USER_BURST": "1000000"},
    )
    try:
        if not args.skip_store:
            await store_decision(args.files)
        await through_gateway(bench, args.runs)
    finally:
        await bench.close()
        await asyncio.to_thread(bench.stop)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
