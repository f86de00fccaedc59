"""A sweep-wide limit on trials training at once, that holds across ``Tuner.restore``.

Tune's ``max_concurrent_trials`` bounds the trials its search algorithm hands out, but a restored experiment starts
every trial that was unfinished when the driver died all at once (seen with Ray 2.60: 17 trials on 2 CPUs). Their Ray
Train runs and evaluations then compete for the cores. A torch trial therefore takes one of the sweep's slots before
it trains and gives it back after its record is written; the slots belong to the trial's actor, so a trial whose
actor dies (an error, a stop by ASHA) frees its slot, and a reused actor holds at most one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

SLOTS_ACTOR_PREFIX = "medmplm-sweep-slots"
POLL_S = 1.0


class TrialSlots:
    """Ray actor (zero CPUs, async): ``size`` slots, each held by one trial actor."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.holders: dict[str, Any] = {}

    async def acquire(self, holder_id: str, holder: Any) -> None:
        """Wait until a slot is free (reclaiming those of dead holders), then give one to ``holder``."""
        import ray

        self.holders.pop(holder_id, None)
        while True:
            for other_id, other in list(self.holders.items()):
                try:
                    # A live holder busy in a long call does not answer soon: that is as good as alive.
                    await asyncio.wait_for(other.__ray_ready__.remote(), timeout=POLL_S)
                except asyncio.TimeoutError:
                    pass
                except ray.exceptions.RayActorError:
                    self.holders.pop(other_id, None)
            if len(self.holders) < self.size:
                self.holders[holder_id] = holder
                return
            await asyncio.sleep(POLL_S)

    def release(self, holder_id: str) -> None:
        self.holders.pop(holder_id, None)

    def held(self) -> int:
        return len(self.holders)


def start_slots(name: str, size: int) -> Any:
    """The sweep's slots actor (named ``name``; created by the driver, gone with it)."""
    import ray

    return ray.remote(num_cpus=0)(TrialSlots).options(name=name, max_concurrency=1000).remote(size)


@contextlib.contextmanager
def trial_slot(name: str) -> Iterator[None]:
    """Hold one of the slots named ``name`` for the enclosed block; the calling actor is the holder."""
    import ray

    slots = ray.get_actor(name)
    context = ray.get_runtime_context()
    holder_id = context.get_actor_id()
    ray.get(slots.acquire.remote(holder_id, context.current_actor))
    try:
        yield
    finally:
        ray.get(slots.release.remote(holder_id))
