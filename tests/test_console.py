"""What a run prints without ``--verbose``: Ray's worker-pool warnings are hidden, its other messages are not."""

from __future__ import annotations

import pytest

from medmplm.console import WORKER_POOL_WARNING, hide_worker_pool_warnings

RAYLET_WARNING = (
    "WARNING: 12 PYTHON worker processes have been started on node: abc with address: 192.0.2.2, which is 6x the "
    "maximum expected startup concurrency (2)."
)


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    import ray._private.worker as ray_worker

    calls: list[dict] = []
    monkeypatch.setattr(ray_worker, "print_to_stdstream", lambda data, ignore_prefix: calls.append(data))
    hide_worker_pool_warnings()
    return calls


def test_the_driver_prints_raylet_messages_through_the_function_that_is_wrapped() -> None:
    import ray._private.worker as ray_worker

    # The driver's error listener looks the printer up by name at each message: wrapping the module's attribute
    # reaches it. A Ray that prints another way would make the warnings show again.
    assert "print_to_stdstream" in ray_worker.listen_error_messages.__code__.co_names
    assert WORKER_POOL_WARNING in RAYLET_WARNING


def test_worker_pool_warnings_are_dropped_and_other_raylet_messages_kept(printed: list[dict]) -> None:
    import ray._private.worker as ray_worker

    ray_worker.print_to_stdstream({"lines": [RAYLET_WARNING], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert printed == []
    died = "A worker died or was killed while executing a task by an unexpected system error."
    ray_worker.print_to_stdstream(
        {"lines": [RAYLET_WARNING, died], "pid": "raylet", "is_err": False}, ignore_prefix=False
    )
    assert [data["lines"] for data in printed] == [[died]]


def test_a_workers_own_line_with_the_same_words_is_not_the_raylets_and_prints(printed: list[dict]) -> None:
    import ray._private.worker as ray_worker

    ray_worker.print_to_stdstream({"lines": [RAYLET_WARNING], "pid": 4242, "is_err": True}, ignore_prefix=False)
    assert [data["lines"] for data in printed] == [[RAYLET_WARNING]]


def test_wrapping_twice_wraps_once(printed: list[dict]) -> None:
    import ray._private.worker as ray_worker

    wrapped = ray_worker.print_to_stdstream
    hide_worker_pool_warnings()
    assert ray_worker.print_to_stdstream is wrapped
