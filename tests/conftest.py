"""Shared test fixtures: one local Ray per test session, one tiny synthetic + prepared dataset per session.

``ray_local``: a local Ray (2 CPUs, dashboard on: Ray Train V2 watches its controller through the state API the
dashboard serves). It is started on first use and reused; a test that needs its own cluster (e.g.
``ray.cluster_utils.Cluster``) may shut it down, and the next ``ray_local`` user starts a fresh one. A Ray another
fixture already started is reused as is.

``synthetic_prepared``: a synthetic MIMIC-III of ``SYNTHETIC_PATIENTS`` patients (a few hundred visits) generated and
prepared once per session; treat it as read-only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from medmplm.console import without_preemption_watcher

SYNTHETIC_PATIENTS = 160
SYNTHETIC_SEED = 0

_started_here = False


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_local_ray() -> None:
    """Start (or keep) the session's local Ray."""
    global _started_here
    import ray

    if ray.is_initialized():
        return
    without_preemption_watcher()  # as a local run's Ray (medmplm.console.start_ray)
    # Ray gives its raylet a fixed 30 s to register, and its dashboard a fixed time to come up; on a machine loaded by
    # parallel test runs either can be too short.
    for attempt in range(5):
        try:
            ray.init(
                # "local": a new instance even when another `ray start` cluster on this machine is the default address.
                address="local",
                num_cpus=2,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=free_port(),
                object_store_memory=512 << 20,
                log_to_driver=True,
            )
            break
        except Exception as error:
            ray.shutdown()
            transient = ("timed out during startup", "Failed to start the dashboard")
            if attempt == 4 or not any(reason in str(error) for reason in transient):
                raise
    _started_here = True


@pytest.fixture
def ray_local() -> Iterator[None]:
    """A running local Ray shared by the session (see module docstring)."""
    start_local_ray()
    yield


@pytest.fixture(scope="session", autouse=True)
def _shutdown_session_ray() -> Iterator[None]:
    yield
    import ray

    if _started_here and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared directory (``medmplm.data.schema`` layout) of a small synthetic MIMIC-III."""
    from medmplm.data.pipeline import PrepareOptions, prepare
    from medmplm.synthetic import generate_mimic3

    start_local_ray()
    root = tmp_path_factory.mktemp("synthetic")
    raw, prepared = root / "mimic3", root / "prepared"
    generate_mimic3(raw, patients=SYNTHETIC_PATIENTS, seed=SYNTHETIC_SEED)
    prepare(raw, prepared, PrepareOptions(ndc_map_dir=str(raw), num_shards_per_split=2))
    return prepared
