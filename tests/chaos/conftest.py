"""Cluster mode for the chaos tests: up once for this package, and down again after
it if it started it (so the rest of the suite does not share the machine with it).

The cluster (deploy/local/cluster.py) has its own state directory and ports, so
it runs beside the ordinary stack the rest of the suite uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local import cluster


@pytest.fixture(scope="package")
def cluster_config() -> Iterator[cluster.ClusterConfig]:
    config = cluster.ClusterConfig.from_env()
    started = not cluster.is_running(config)
    cluster.up(config=config)
    try:
        yield config
    finally:
        if started:
            cluster.down(config=config)
