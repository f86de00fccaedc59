"""What the entry points print: medmplm's own lines by default, Ray's and DeepSpeed's too with ``--verbose``.

By default a run shows a short header, one progress bar on a terminal (or one line per interval otherwise, see
:mod:`medmplm.train.progress`) and a final summary. Everything else (Ray's start-up lines, Ray Data execution plans
and progress bars, worker output such as DeepSpeed's op builds and Ray Train's reports, deprecation warnings) is
Ray's and DeepSpeed's own business: it stays in Ray's log files (``/tmp/ray/session_latest/logs``) unless
``--verbose`` brings it to the terminal.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"

# Third-party loggers that speak at INFO on the driver during a normal run.
_CHATTY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "DeepSpeed", "deepspeed", "transformers", "torch")


def configure_output(verbose: bool) -> None:
    """Log medmplm at INFO (DEBUG with ``verbose``); other libraries at WARNING, or at INFO with ``verbose``."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("medmplm").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        _ignore_deprecations()
        # transformers draws a progress bar for every save and load, however small the model.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        # Ray Tune's default console engine prints an experiment table and result paths even at verbose=0; its
        # legacy engine is silent at 0. The sweep prints its own line per trial.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _ignore_deprecations() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def start_ray(verbose: bool, **local_options: Any) -> None:
    """``ray.init``: join the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it), or start a local Ray with
    ``local_options``. Workers' output reaches this terminal only with ``verbose``."""
    import ray

    if not verbose:
        # Importing Ray puts its own filter for RayDeprecationWarning (a DeprecationWarning) ahead of ours: again.
        _ignore_deprecations()

    # ERROR, not WARNING: Ray warns on every start that token authentication is on (the README says so once).
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        without_preemption_watcher()
        ray.init(**local_options, **quiet)
    quiet_ray_data(verbose)
    if not verbose:
        hide_worker_pool_warnings()


def without_preemption_watcher() -> None:
    """No preemption watcher in the Ray Train runs of a Ray started here (call before ``ray.init``: its processes
    inherit this environment). The watcher is one more process per run, polling for a cloud node's preemption notice;
    a local Ray's only node is this machine. On a cluster (``RAY_ADDRESS``) the cluster's own setting holds."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


# The raylet's warning, pushed to every driver, that it has started many worker processes.
WORKER_POOL_WARNING = "worker processes have been started on node"


def hide_worker_pool_warnings() -> None:
    """Keep the raylet's "N PYTHON worker processes have been started ... the maximum expected startup concurrency"
    warnings off this terminal; every other message Ray pushes to the driver (a worker died, out of memory) still
    shows.

    Why by hand: a run starts one process per actor (Ray Train's controller, workers and helpers; Ray Data's
    coordinators; a sweep's trials), so a normal sweep on a small machine crosses the raylet's threshold (a few times
    its CPU count) again and again. Ray has no setting for the threshold or the message, and its driver prints every
    pushed message through ``ray._private.worker.print_to_stdstream``, so that function is wrapped. The warning stays
    in the raylet's own log."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "hides_worker_pool_warnings", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = data.get("lines", [])
        if data.get("pid") == "raylet":
            lines = [line for line in lines if WORKER_POOL_WARNING not in line]
        if lines:
            original({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    print_to_stdstream.hides_worker_pool_warnings = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream


def start_ray_for_train_runs_in_actors(verbose: bool, **local_options: Any) -> None:
    """:func:`start_ray` for a driver whose Ray Train runs start inside actors that may die mid-run, as a sweep's
    trials do when ASHA stops them: a local Ray starts with its dashboard, on a GCS port chosen here, and every worker
    gets that address in ``RAY_ADDRESS``.

    Why: a Train run's placement group outlives its controller when the controller dies with its owner; Ray Train's
    ``PlacementGroupCleaner`` then removes it, but only after asking the state API (the dashboard) whether the
    controller lives, and it finds the dashboard through ``RAY_ADDRESS`` or, without it, fails as soon as this machine
    runs another Ray. A leaked placement group holds its workers' CPUs for good, and the sweep waits forever."""
    import socket

    import ray

    if os.environ.get("RAY_ADDRESS"):
        start_ray(verbose)
        return
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    # Read by Ray only when it starts a head node: the GCS listens on the port the workers are told.
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    address = f"{ray.util.get_node_ip_address()}:{port}"
    start_ray(
        verbose,
        address="local",
        include_dashboard=True,
        runtime_env={"env_vars": {"RAY_ADDRESS": address}},
        **local_options,
    )


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's progress bars and per-dataset execution lines only with ``verbose``. Ray Data configures its
    loggers when it is first used, so this runs after ``ray.init``."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = verbose
    context.enable_operator_progress_bars = verbose
    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(level)
