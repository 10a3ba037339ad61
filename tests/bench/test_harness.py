"""The benchmark harness's own arithmetic and parsing: percentiles, /proc accounting, tools."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.loadgen import make_content, parse_content, pushed_message, reply_status
from bench.procstat import CLOCK_TICKS, CpuSnapshot, cpu_seconds, infra_pids, rss_bytes
from bench.profile import summarize
from bench.report import Row, table
from bench.scenarios import parse_kafka_perf, parse_redis_benchmark
from bench.stats import Latency, median, median_latency, percentile


def test_percentile_is_nearest_rank() -> None:
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 0.50) == 50
    assert percentile(samples, 0.95) == 95
    assert percentile(samples, 0.99) == 99
    assert percentile(samples, 1.0) == 100
    assert percentile(samples, 0.0) == 1
    assert percentile([7.0], 0.99) == 7.0
    # 10 samples: p99 is the largest one (rank ceil(9.9) = 10), p50 the fifth.
    assert percentile([float(x) for x in range(10)], 0.99) == 9.0
    assert percentile([float(x) for x in range(10)], 0.50) == 4.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 1.5)


def test_median_of_odd_and_even_counts() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([5.0]) == 5.0
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_latency_from_nanoseconds_and_median_over_runs() -> None:
    latency = Latency.from_ns([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms, shuffled below
    assert latency is not None
    assert (latency.count, latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms) == (
        100,
        50.0,
        95.0,
        99.0,
        100.0,
    )
    assert Latency.from_ns([]) is None
    shuffled = Latency.from_ns([5_000_000, 1_000_000, 3_000_000])
    assert shuffled is not None
    assert shuffled.p50_ms == 3.0
    assert shuffled.max_ms == 5.0
    runs = [Latency(10, 1, 2, 3, 4), None, Latency(30, 5, 6, 7, 8), Latency(20, 3, 4, 5, 6)]
    middle = median_latency(runs)
    assert middle == Latency(20, 3, 4, 5, 6)
    assert median_latency([None]) is None


def _fake_proc(root: Path, pid: int, comm: str, utime: int, stime: int, rss_kb: int) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    # Fields after the command name: state ppid pgrp session tty tpgid flags minflt
    # cminflt majflt cmajflt utime stime ...
    rest = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime)]
    rest += ["0"] * 40
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")
    (root / str(pid) / "status").write_text(
        f"Name:\t{comm}\nVmPeak:\t999 kB\nVmRSS:\t{rss_kb} kB\nThreads:\t4\n"
    )


def test_cpu_and_rss_are_read_from_proc_files(tmp_path: Path) -> None:
    # A command name with spaces and parentheses must not shift the fields.
    _fake_proc(
        tmp_path, 42, "java (kafka) x", utime=3 * CLOCK_TICKS, stime=CLOCK_TICKS, rss_kb=2048
    )
    _fake_proc(tmp_path, 43, "python", utime=0, stime=CLOCK_TICKS // 2 or 1, rss_kb=10)
    assert cpu_seconds(42, tmp_path) == pytest.approx(4.0)
    assert rss_bytes(42, tmp_path) == 2048 * 1024
    before = CpuSnapshot.take({"kafka": 42, "gateway": 43}, tmp_path)
    _fake_proc(
        tmp_path, 42, "java (kafka) x", utime=5 * CLOCK_TICKS, stime=2 * CLOCK_TICKS, rss_kb=4096
    )
    after = CpuSnapshot.take({"kafka": 42, "gateway": 43}, tmp_path)
    assert after.since(before) == pytest.approx({"kafka": 3.0, "gateway": 0.0})


def test_cpu_of_this_process_grows_with_work() -> None:
    start = cpu_seconds(os.getpid())
    deadline = time.monotonic() + 30
    spent = 0.0
    while spent <= 0.0 and time.monotonic() < deadline:
        sum(i * i for i in range(200_000))
        spent = cpu_seconds(os.getpid()) - start
    assert spent > 0.0
    assert rss_bytes(os.getpid()) > 1024 * 1024


def test_infra_pids_come_from_live_pidfiles(tmp_path: Path) -> None:
    (tmp_path / "redis.pid").write_text(f"{os.getpid()}\n123 16379\n")
    (tmp_path / "kafka.pid").write_text("999999999\n1 19092\n")  # no such process
    (tmp_path / "launcher.lock").write_text("")
    assert infra_pids(tmp_path) == {"redis": os.getpid()}


def test_message_content_carries_its_send_instant() -> None:
    before = time.perf_counter_ns()
    content = make_content("s1r0w1", 17, 200)
    assert len(content) == 200
    parsed = parse_content(content)
    assert parsed is not None
    key, sent_ns = parsed
    assert key == "s1r0w1|17"
    assert before <= sent_ns <= time.perf_counter_ns()
    assert parse_content("hello") is None
    assert parse_content("bench|a|b|notanumber|x") is None


def test_frames_are_recognised() -> None:
    view = {"id": "m1", "content": "bench|t|1|5|x"}
    assert pushed_message({"type": "message", "message": view}) == view
    assert pushed_message({"type": "presence", "user_id": "u"}) is None
    assert reply_status({"type": "sent", "ref": "r1", "message": view}) == ("r1", 0)
    error = {"type": "error", "ref": "r2", "error": {"code": "not_found", "status": 404}}
    assert reply_status(error) == ("r2", 404)
    assert reply_status({"type": "message", "message": view}) is None


def test_tool_outputs_are_parsed() -> None:
    kafka = (
        "100000 records sent, 20000.0 records/sec (3.81 MB/sec), 80.0 ms avg latency, "
        "300.0 ms max latency.\n"
        "200000 records sent, 51867.2 records/sec (9.89 MB/sec), 412.35 ms avg latency, "
        "1042.00 ms max latency, 389 ms 50th, 802 ms 95th, 931 ms 99th, 1020 ms 99.9th.\n"
    )
    assert parse_kafka_perf(kafka) == {
        "records_per_s": 51867.2,
        "avg_ms": 412.35,
        "max_ms": 1042.0,
        "p50_ms": 389.0,
        "p95_ms": 802.0,
        "p99_ms": 931.0,
    }
    redis = (
        "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r"
        "SET: 98039.22 requests per second, p50=0.263 msec                    \n"
        "GET: rps=88000.0 (overall: 88000.0)\r"
        "GET: 102040.81 requests per second, p50=0.247 msec                    \n"
    )
    assert parse_redis_benchmark(redis) == {"SET": 98039.22, "GET": 102040.81}
    with pytest.raises(ValueError, match="no summary"):
        parse_kafka_perf("Exception in thread main")


def test_profile_summary_counts_inclusive_samples() -> None:
    collapsed = (
        "run (asyncio/runners.py:1);handle (gateway/api.py:10);auth (gateway/auth.py:5) 30\n"
        "run (asyncio/runners.py:1);handle (gateway/api.py:12) 10\n"
        "run (asyncio/runners.py:1);poll (aiokafka/consumer.py:3) 60\n"
    )
    total, ranked = summarize(collapsed)
    assert total == 100
    shares = dict(ranked)
    assert shares["poll (aiokafka/consumer.py)"] == pytest.approx(0.6)
    assert shares["handle (gateway/api.py)"] == pytest.approx(0.4)
    assert shares["auth (gateway/auth.py)"] == pytest.approx(0.3)


def test_table_shows_misses_and_unavailable_rows() -> None:
    rows = [
        Row("1", "send throughput", 1500.0, "msg/s", ">= 3,000", False, [1400.0, 1500.0]),
        Row("2", "ws", status="not available: real-time: GET /v1/ws answered 404"),
    ]
    text = table(rows)
    assert "1,500 msg/s" in text
    assert "MISS" in text
    assert "not available: real-time" in text
