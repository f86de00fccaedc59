"""``python -m tuning.sweep``: the paper's fine-tuning grid as Ray Tune sweeps (models x learning rate x train ratio x
seeds, for every task), restorable by path, on one machine or a cluster.

Examples::

    python -m tuning.sweep --config tuning/configs/small.yaml prepared_dir=runs/grid/prepared
    python -m tuning.sweep --config table3 prepared_dir=DIR exports.medmplm=EXPORT seeds=[0,1,2]
    python -m tuning.sweep --resume runs/sweeps/table3-20261129-220000-ab12cd
    ray job submit --working-dir . -- python -m tuning.sweep --config table3 storage_path=s3://b/sweeps ...

Each trial is one ``medmplm.tasks.runner.run_finetune`` (its result record goes to ``<sweep dir>/results/``); the
report is ``python -m tuning.report <sweep dir> --out DIR``. The keys are those of ``tuning.config``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from medmplm.config import ConfigError, from_dict, load_config, parse_overrides
from medmplm.console import configure_output, start_ray_for_train_runs_in_actors
from medmplm.train import storage

if TYPE_CHECKING:
    from tuning.config import SweepConfig

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="sweep YAML (tuning/configs/table3.yaml, tuning/configs/small.yaml, ...)")
    parser.add_argument("--resume", metavar="SWEEP_DIR", help="continue the sweep in this directory")
    parser.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and DeepSpeed's output")
    args, tokens = parser.parse_known_args(argv)
    configure_output(args.verbose)

    from tuning.config import CONFIG_FILE_NAME, SweepConfig

    try:
        if args.resume:
            if args.config or tokens:
                raise ConfigError("--resume: the sweep's own sweep_config.yaml is its config; give no --config or keys")
            sweep_dir = storage.resolve_storage_path(args.resume)
            saved = storage.join(sweep_dir, CONFIG_FILE_NAME)
            if not storage.exists(saved):
                raise ConfigError(f"--resume {args.resume}: no {CONFIG_FILE_NAME} there; not a sweep directory")
            sweep = from_dict(SweepConfig, yaml.safe_load(storage.read_text(saved))).validate()
        else:
            sweep = read_sweep_config(args.config, tokens)
            sweep.name = sweep.name or storage.new_run_name(_stem(args.config))
            sweep_dir = storage.join(storage.resolve_storage_path(sweep.storage_path), sweep.name)
            _resolve_paths(sweep)
        _check_paths(sweep)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from tuning.trials import DATA_TASKS_CPU, grid_cells
    from tuning.tuner import run_sweep

    grid = len(grid_cells(sweep))
    print(f"sweep    {sweep_dir}{'  (resumed)' if args.resume else ''}")
    print(f"data     {sweep.prepared_dir}")
    print(
        f"grid     tasks {','.join(sweep.tasks)}; models {','.join(sweep.models)}; ratios "
        f"{','.join(f'{r:g}' for r in sweep.train_ratios)}; seeds {','.join(map(str, sweep.seeds))}; "
        f"search {sweep.search.algorithm}, scheduler {sweep.search.scheduler}"
        + (f"; {grid} trials" if sweep.search.algorithm == "grid" else "")
    )
    # A local Ray gets logical CPUs beyond the cores for Ray Data's millisecond tasks (DATA_TASKS_CPU), so that the
    # trials still train on every core.
    start_ray_for_train_runs_in_actors(args.verbose, num_cpus=(os.cpu_count() or 1) + DATA_TASKS_CPU)
    import ray

    try:
        outcome = run_sweep(sweep, sweep_dir, on_trial_end=lambda line: print(line, flush=True))
    finally:
        ray.shutdown()
    minutes = outcome.seconds / 60
    print(
        f"\n{outcome.trials} trials ({outcome.errors} errored, {outcome.unfinished} unfinished) in {minutes:.1f} min, "
        f"up to {outcome.concurrency} at once; records in {storage.join(sweep_dir, 'results')}"
    )
    print(f"report:   python -m tuning.report {sweep_dir} --out {storage.join(sweep_dir, 'report')}")
    if outcome.unfinished:
        print(f"interrupted; continue it: python -m tuning.sweep --resume {sweep_dir}")
    elif outcome.errors:
        print(f"errors are kept in the trial directories; retry them: python -m tuning.sweep --resume {sweep_dir}")
    return 1 if outcome.errors or outcome.unfinished else 0


def read_sweep_config(config: str | None, tokens: list[str]) -> SweepConfig:
    """The :class:`~tuning.config.SweepConfig` of ``--config`` (a file or a shipped name) and command-line keys."""
    from tuning.config import SWEEP_FREE_FORM_PREFIXES, SweepConfig

    overrides = parse_overrides(tokens, free_form=SWEEP_FREE_FORM_PREFIXES)
    return load_config(SweepConfig, _config_file(config), overrides)


def _config_file(name: str | None) -> str | None:
    """``--config``: a file, or the name of a sweep shipped in ``tuning/configs`` (``table3``, ``small``)."""
    if name is None or Path(name).expanduser().is_file():
        return name
    shipped = CONFIGS_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if shipped.is_file():
        return str(shipped)
    known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise ConfigError(f"--config {name}: no such file, nor a sweep shipped in tuning/configs ({known})")


def _stem(config: str | None) -> str:
    if config is None:
        return "sweep"
    name = config.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if name.endswith((".yaml", ".yml")) else name


def _resolve_paths(sweep) -> None:
    """Local paths made absolute: trials run in their own directories, on any node."""
    sweep.prepared_dir = storage.resolve_storage_path(sweep.prepared_dir) if sweep.prepared_dir else None
    sweep.exports = {kind: storage.resolve_storage_path(p) if p else None for kind, p in sweep.exports.items()}


def _check_paths(sweep) -> None:
    """Paths the trials read, checked before Ray starts: a prepared directory may be an s3:// or gs:// URI (each
    node reads it through a local copy) but must be complete; exports must be where every node sees them."""
    if sweep.prepared_dir is not None and "://" in sweep.prepared_dir:
        from medmplm.data.prepared import require_prepared

        require_prepared(sweep.prepared_dir)
    for key, path in (("prepared_dir", sweep.prepared_dir), *((f"exports.{k}", v) for k, v in sweep.exports.items())):
        if path is not None and "://" in path and key != "prepared_dir":
            raise ConfigError(
                f"{key}: {path}: trials read prepared data and exports from a path every node sees (a local copy or "
                "a shared file system), not from an object store; sync it there first (docs/scale_out.md)"
            )
        if path is not None and "://" not in path and not Path(path).expanduser().is_dir():
            raise FileNotFoundError(f"{key}: {path} is not a directory")


if __name__ == "__main__":
    sys.exit(main())
