"""How the datasets reach the Ray Train workers: a materialised training split is split once into fixed shards.

Ray Train's default ``DataConfig`` hands every dataset to split through ``streaming_split``: a coordinator actor deals
the blocks to the workers and restarts its executor at every epoch. Measured on the ``tiny`` preset with 2 CPU
workers (``benchmarks/pretrain_throughput.py``), each epoch's first batch waited ~0.7 s for that restart, and every
block passed through the actor, which competes with the workers for the same cores. A materialised dataset's blocks
are already in the object store, so :func:`split_materialized` splits it once, on the driver, into equal shards, and
:class:`PresplitDataConfig` hands shard ``i`` to worker ``i``: no coordinator, no per-epoch restart. Each worker reads
the same rows every epoch, as it did under the order-preserving streaming split, and the local shuffle still
reorders them per epoch. A dataset that is not materialised (``data.materialize=false``, for data larger than the
object store) keeps the streaming split.
"""

from __future__ import annotations

from typing import Any

from ray.data.dataset import MaterializedDataset
from ray.train import DataConfig


def split_materialized(datasets: dict[str, Any], names: list[str], world_size: int) -> dict[str, list[Any]]:
    """Equal shards (``Dataset.split(equal=True)``) of each materialised dataset among ``names``.

    Must run before the trainer starts: the split runs Ray tasks, which would wait forever for the CPUs that the
    training workers hold once they run.
    """
    return {
        name: datasets[name].split(world_size, equal=True)
        for name in names
        if isinstance(datasets.get(name), MaterializedDataset)
    }


class PresplitDataConfig(DataConfig):
    """``DataConfig`` that gives worker ``i`` shard ``i`` of each pre-split dataset and streams the others as usual.

    Args:
        shards: dataset name -> one shard per worker (:func:`split_materialized`).
        **kwargs: ``DataConfig``'s own arguments, for the datasets not pre-split.
    """

    def __init__(self, shards: dict[str, list[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shards = shards

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: list[Any] | None,
        worker_node_ids: list[str] | None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        streamed = {name: dataset for name, dataset in datasets.items() if name not in self._shards}
        output = super().configure(streamed, world_size, worker_handles, worker_node_ids, **kwargs)
        for name, shards in self._shards.items():
            if len(shards) != world_size:
                raise ValueError(f"dataset {name!r} was split for {len(shards)} workers, the run has {world_size}")
            for rank, shard in enumerate(shards):
                # The execution options (preserve_order among them) reach the iterator through its dataset's context:
                # without them the iterator's formatting threads may hand batches over out of order.
                shard.context.execution_options = self._resolve_execution_options(name)
                output[rank][name] = shard.iterator()
        return output
