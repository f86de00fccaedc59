"""Run progress on the driver: rank 0 sends events, the driver shows one progress bar or one line per interval.

Workers' own stdout and stderr are Ray's and DeepSpeed's business (shown with ``--verbose``). What a person follows
is sent by rank 0 through a small actor, :class:`ProgressInbox`, and rendered on the driver by
:class:`ProgressPrinter`: a tqdm bar on a terminal (steps, loss, samples/s, ETA) with validation results written
above it, or, when the output is not a terminal, one line per ``interval_s`` seconds plus one per validation. Events
carry counts and metric values only, never data.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

logger = logging.getLogger(__name__)


class ProgressInbox:
    """Ray actor (zero CPUs) holding rank 0's events until the driver collects them."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events


def send(inbox: Any, kind: str, **values: Any) -> None:
    """Fire-and-forget an event from a worker (Ray keeps one caller's calls to an actor in order)."""
    if inbox is not None:
        inbox.push.remote({"kind": kind, **values})


def _data_wait(event: dict[str, Any]) -> str:
    """``, data wait 12%`` when the step waited for its input a noticeable share of the time (1% or more)."""
    share = event.get("data_wait_share", math.nan)
    return f", data wait {share:.0%}" if share >= 0.01 else ""


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class ProgressPrinter:
    """Renders events on the driver.

    Args:
        name: what is being trained (``pretrain``, ``readmission`` ...), the bar's label.
        bar: a tqdm progress bar (for a terminal); otherwise plain lines.
        interval_s: without a bar, at most one step line per this many seconds (validations always print).
        stream: where the bar and lines go.
    """

    name: str
    bar: bool
    interval_s: float = 30.0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    _tqdm: Any = field(default=None, init=False)
    _last_line: float = field(default=-math.inf, init=False)
    _total: int = field(default=0, init=False)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "start":
            self._start(event)
        elif kind == "step":
            self._on_step(event)
        elif kind == "validation":
            self._write(
                f"epoch {event['epoch']} (step {event['step']}): {event['metric']} {event['value']:.4f} "
                f"on {event['examples']} examples; best {event['best']:.4f} at epoch {event['best_epoch']}"
            )
        elif kind == "early_stop":
            self._write(
                f"early stopping after epoch {event['epoch']}: no {event['metric']} improvement for "
                f"{event['patience']} epochs"
            )
        elif kind == "note":
            self._write(event["text"])

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def _start(self, event: dict[str, Any]) -> None:
        self._total = event["total_steps"]
        if event["step"] > 0:
            self._write(f"resuming at step {event['step']} of {event['total_steps']}")
        if self.bar:
            from tqdm import tqdm

            self.close()
            self._tqdm = tqdm(
                total=self._total,
                initial=event["step"],
                desc=self.name,
                unit="step",
                file=self.stream,
                dynamic_ncols=True,
            )

    def _on_step(self, event: dict[str, Any]) -> None:
        self._total = event["total_steps"]
        if self._tqdm is not None:
            self._tqdm.update(event["step"] - self._tqdm.n)
            self._tqdm.set_postfix_str(
                f"loss {event['loss']:.4f}, {event['samples_per_s']:.0f} samples/s{_data_wait(event)}", refresh=True
            )
            return
        now = time.monotonic()
        if now - self._last_line < self.interval_s and event["step"] < self._total:
            return
        rate = event.get("steps_per_s", math.nan)
        eta = (self._total - event["step"]) / rate if rate and rate > 0 else math.nan
        self._write(
            f"step {event['step']}/{self._total} epoch {event['epoch']} loss {event['loss']:.4f} "
            f"lr {event['lr']:.2e} {event['samples_per_s']:.0f} samples/s{_data_wait(event)} ETA {_duration(eta)}"
        )
        self._last_line = now

    def _write(self, line: str) -> None:
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


class ProgressRelay:
    """Driver side: creates the inbox actor, polls it from a thread while ``trainer.fit()`` blocks, renders events.

    Use as a context manager around the blocking call; :attr:`inbox` is the actor handle to give rank 0.
    """

    def __init__(self, printer: ProgressPrinter, poll_s: float = 0.5) -> None:
        import ray

        self.printer = printer
        self.inbox = ray.remote(num_cpus=0)(ProgressInbox).remote()
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medmplm-progress", daemon=True)

    def __enter__(self) -> ProgressRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._deliver()
        self.printer.close()
        import ray

        ray.kill(self.inbox)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self._deliver()

    def _deliver(self) -> None:
        import ray

        try:
            events = ray.get(self.inbox.drain.remote())
        except ray.exceptions.RayError as error:
            logger.debug("progress inbox unavailable: %s", error)
            return
        for event in events:
            self.printer.handle(event)
