"""Metric accumulation across steps and workers, and the sinks metrics go to (rank 0 only).

Step metrics (losses, accuracies, samples/s, tokens/s, learning rate) are accumulated locally as weighted sums and
all-reduced once per logging interval, so the logged numbers cover every worker's batches, not just rank 0's.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger("medmplm.train")


class WeightedSums:
    """Running ``name -> (sum, weight)`` pairs kept on the training device, reduced over workers on demand.

    Sums stay device tensors between reductions: converting a CUDA tensor to a Python number waits for the GPU stream,
    so doing it per micro-batch would stall every step. The only host sync is in :meth:`reduce_totals`, at logging time.
    :meth:`reduce_totals` is a collective: every worker calls it, whatever names it added (a worker that saw no batch
    contributes zeros).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, total: float | torch.Tensor, weight: float | torch.Tensor) -> None:
        """Add ``total`` (a weighted sum) and its ``weight``; a NaN total with zero weight is ignored."""
        total, weight = self._on_device(total), self._on_device(weight)
        pair = torch.stack([torch.where(weight == 0, torch.zeros_like(total), total), weight])
        if name in self._sums:
            self._sums[name] += pair
        else:
            self._sums[name] = pair

    def discard(self, *names: str) -> None:
        """Forget ``names`` on this worker (no collective): every worker must discard the same names."""
        for name in names:
            self._sums.pop(name, None)

    def _on_device(self, value: float | torch.Tensor) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.detach().to(self._device, torch.float64).reshape(())
        # torch.full launches a fill kernel; torch.tensor(value, device=...) would be a blocking host-to-device copy.
        return torch.full((), float(value), dtype=torch.float64, device=self._device)

    def reduce_totals(self) -> dict[str, tuple[float, float]]:
        """``name -> (sum, weight)`` over all workers, then reset."""
        device = self._device
        names = sorted(self._sums)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            # Workers may have seen different names (one validated no batch): agree on their union first.
            gathered: list[list[str] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, names)
            names = sorted({name for worker in gathered for name in worker or []})
        zero = torch.zeros(2, dtype=torch.float64, device=device)
        values = torch.stack([self._sums[n].to(device) if n in self._sums else zero for n in names] or [zero])
        if distributed:
            dist.all_reduce(values)
        self._sums = {}
        return {n: (v[0], v[1]) for n, v in zip(names, values.tolist(), strict=False)}


class MetricSink:
    """TensorBoard (default) and MLflow (when configured) writers; create it on rank 0 only.

    TensorBoard event files go straight to ``tensorboard_dir`` when it is a local path. For object storage
    (``s3://``, ``gs://``) they are written to a local directory and copied up by :meth:`sync` (called at every
    checkpoint and on close).

    Args:
        tensorboard_dir: directory or URI for event files; ``None`` turns TensorBoard off.
        mlflow_tracking_uri: MLflow tracking URI; ``None`` turns MLflow off.
        mlflow_experiment: MLflow experiment name.
        run_name: the run's name (MLflow run name).
        params: flat run parameters logged once to MLflow.
    """

    def __init__(
        self,
        tensorboard_dir: str | None,
        mlflow_tracking_uri: str | None = None,
        mlflow_experiment: str = "medmplm",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self._writer = None
        self._remote_tensorboard: str | None = None
        self._local_tensorboard: str | None = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            if "://" in tensorboard_dir:
                self._remote_tensorboard = tensorboard_dir
                self._local_tensorboard = tempfile.mkdtemp(prefix="medmplm-tensorboard-")
            else:
                self._local_tensorboard = tensorboard_dir
                Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=self._local_tensorboard)
        self._mlflow = None
        if mlflow_tracking_uri is not None:
            try:
                import mlflow
            except ImportError as error:
                raise ImportError(
                    "logging.mlflow_tracking_uri is set but mlflow is not installed; "
                    "pip install 'medmplm[mlflow]' or unset logging.mlflow_tracking_uri"
                ) from error
            mlflow.set_tracking_uri(mlflow_tracking_uri)
            mlflow.set_experiment(mlflow_experiment)
            mlflow.start_run(run_name=run_name)
            if params:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            self._mlflow = mlflow

    @property
    def tensorboard_dir(self) -> str | None:
        """Where the event files end up."""
        return self._remote_tensorboard or self._local_tensorboard

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Write scalar metrics at ``step``; NaN values (nothing to measure) are skipped."""
        finite = {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}
        if self._writer is not None:
            for name, value in finite.items():
                self._writer.add_scalar(name, value, global_step=step)
            # Flushed at every write so a killed worker loses nothing it logged.
            self._writer.flush()
        if self._mlflow is not None and finite:
            self._mlflow.log_metrics({k.replace("/", "_"): v for k, v in finite.items()}, step=step)

    def sync(self) -> None:
        """Copy local event files to remote storage (no-op for local directories)."""
        if self._remote_tensorboard is None or self._local_tensorboard is None:
            return
        import pyarrow.fs

        pyarrow.fs.copy_files(self._local_tensorboard, self._remote_tensorboard)

    def close(self) -> None:
        """Flush, sync and close."""
        if self._writer is not None:
            self._writer.close()
        self.sync()
        if self._mlflow is not None:
            self._mlflow.end_run()


def configure_worker_logging(rank: int) -> None:
    """Rank 0 logs at INFO; other ranks only warnings, so a run's output is not repeated per worker."""
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.propagate = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers draws a progress bar for every checkpoint's save_pretrained.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
