"""The per-worker shards of a materialised training split (``medmplm.train.ingest``), on a local Ray.

The whole path through Ray Train (every row once per epoch, the same rows per worker in every run) is in
``test_loop_data_order.py`` (``slow``); these tests pin what the data config itself hands each worker.
"""

from __future__ import annotations

import pytest

from medmplm.train.ingest import PresplitDataConfig, split_materialized


def row_ids(iterator) -> list[int]:
    return [int(row) for batch in iterator.iter_batches(batch_size=None, batch_format="numpy") for row in batch["id"]]


def test_worker_i_gets_shard_i_and_every_worker_the_whole_unsplit_dataset(ray_local):
    import ray.data
    from ray.data import ExecutionOptions

    datasets = {
        "train": ray.data.from_items([{"id": i} for i in range(11)], override_num_blocks=3).materialize(),
        "val": ray.data.from_items([{"id": 100 + i} for i in range(4)]).materialize(),
    }
    config = PresplitDataConfig(
        split_materialized(datasets, ["train"], 2),
        datasets_to_split=["train"],
        execution_options=ExecutionOptions(preserve_order=True),
    )
    per_worker = config.configure(datasets, world_size=2, worker_handles=None, worker_node_ids=None)
    # Without the run's preserve_order, the iterator's formatting threads may reorder batches between runs.
    assert all(worker["train"].get_context().execution_options.preserve_order for worker in per_worker)

    train = [row_ids(worker["train"]) for worker in per_worker]
    assert len(train[0]) == len(train[1]) == 5, "equal shards: the 11th row is dropped, not given to one worker"
    assert not set(train[0]) & set(train[1])
    assert set(train[0]) | set(train[1]) <= set(range(11))
    assert row_ids(per_worker[0]["train"]) == train[0], "a worker must read the same rows every epoch"
    assert [sorted(row_ids(worker["val"])) for worker in per_worker] == [[100, 101, 102, 103]] * 2


def test_split_materialized_leaves_streamed_datasets_to_the_streaming_split(ray_local):
    import ray.data

    streamed = ray.data.range(8).map(lambda row: row)
    assert split_materialized({"train": streamed}, ["train"], 2) == {}


def test_shards_for_another_number_of_workers_are_refused(ray_local):
    import ray.data

    datasets = {"train": ray.data.range(8).materialize()}
    config = PresplitDataConfig(split_materialized(datasets, ["train"], 2), datasets_to_split=["train"])
    with pytest.raises(ValueError, match="split for 2 workers, the run has 3"):
        config.configure(datasets, world_size=3, worker_handles=None, worker_node_ids=None)
