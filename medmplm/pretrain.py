"""``python -m medmplm.pretrain``: pretrain MedM-PLM on Ray Train with DeepSpeed.

With no arguments: generate a small synthetic MIMIC-III under ``runs/data/`` (reused when already there), prepare it,
start a local Ray, pretrain the ``tiny`` preset on 2 CPU workers, export the best checkpoint, and print where
everything went. With ``--config FILE`` (or a preset name: ``tiny``, ``paper``, ``cluster_pretrain``, shipped in
``medmplm/configs/``) and ``key=value`` / ``--key value`` overrides: any configuration (keys in :mod:`medmplm.config`).
``RAY_ADDRESS`` (set by ``ray job submit``) joins a cluster. A wrong data path is reported before Ray starts.

Examples::

    python -m medmplm.pretrain
    python -m medmplm.pretrain --config paper data.prepared_dir=/data/mimic3-prepared
    python -m medmplm.pretrain run.name=my-run train.epochs=50    # rerun the same line to resume my-run
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

# Light imports only: `--help` and a wrong path must answer without loading torch or starting Ray.
from medmplm.config import CONFIG_FILE_NAME, ConfigError, DataConfig, PretrainConfig, load_config, to_yaml
from medmplm.console import configure_output, start_ray
from medmplm.data import schema

logger = logging.getLogger("medmplm.pretrain")


def ensure_prepared(data: DataConfig) -> str:
    """The prepared directory to train on: ``data.prepared_dir``, or a synthetic MIMIC-III generated and prepared
    under ``data.data_root`` (each step skipped when its output is already there). Needs Ray initialised.

    Raises:
        FileNotFoundError: when ``data.prepared_dir`` is not a prepared directory.
    """
    from medmplm.train import storage

    if data.prepared_dir is not None:
        manifest = storage.join(data.prepared_dir, schema.MANIFEST_FILE)
        if not storage.exists(manifest):
            raise FileNotFoundError(
                f"data.prepared_dir: {manifest} is missing; prepare the data first "
                "(python -m medmplm.prepare --mimic DIR --out DIR --ndc-map DIR)"
            )
        return storage.resolve_storage_path(data.prepared_dir)

    from medmplm.data.pipeline import PrepareOptions, prepare
    from medmplm.synthetic import generate_mimic3

    root = Path(data.data_root).expanduser().resolve()
    tag = f"p{data.synthetic_patients}-s{data.synthetic_seed}"
    raw, prepared = root / f"synthetic-mimic3-{tag}", root / f"prepared-{tag}"
    if (prepared / schema.MANIFEST_FILE).is_file():
        logger.info("reusing prepared synthetic data at %s", prepared)
        return str(prepared)
    if not raw.is_dir():
        logger.info("generating a synthetic MIMIC-III (%d patients, seed %d) at %s", data.synthetic_patients, data.synthetic_seed, raw)
        root.mkdir(parents=True, exist_ok=True)
        generate_mimic3(raw, patients=data.synthetic_patients, seed=data.synthetic_seed)
    logger.info("preparing %s -> %s", raw, prepared)
    prepare(raw, prepared, PrepareOptions(ndc_map_dir=str(raw)))
    return str(prepared)


def check_inputs(config: PretrainConfig) -> None:
    """Check the data and model paths before Ray starts, and say first when the run reads synthetic data.

    Raises:
        DataSourceError: a path is missing or of the wrong kind (e.g. raw MIMIC tables for a prepared directory).
    """
    from medmplm.tasks.data_source import check_model_dir, check_prepared_dir, is_synthetic, synthetic_notice

    if config.data.prepared_dir is not None:
        check_prepared_dir(config.data.prepared_dir)
    if config.model.init_from is not None:
        check_model_dir(config.model.init_from, "model.init_from")
    if is_synthetic(config.data.prepared_dir):
        print(synthetic_notice(config.data.prepared_dir), flush=True)


def build_initial_model(config: PretrainConfig, prepared_dir: str, directory: Path) -> None:
    """Build the model the run starts from and ``save_pretrained`` it into ``directory``.

    Raises:
        ConfigError: when ``model.preset`` or ``model.overrides`` do not describe a valid model.
    """
    import torch

    from medmplm.models import MedMPLMConfig, MedMPLMForPretraining

    section = config.model
    torch.manual_seed(config.train.seed)
    if section.init_from is not None:
        model = MedMPLMForPretraining.from_pretrained(section.init_from)
    else:
        try:
            model_config = MedMPLMConfig.from_preset(section.preset, **section.overrides)
        except (TypeError, ValueError) as error:
            key = "model.preset" if "preset" in str(error) else "model.overrides"
            raise ConfigError(f"{key}: {error}") from error
        model = MedMPLMForPretraining.from_prepared(
            prepared_dir, model_config, tokenizer_dir=section.tokenizer_dir, text_checkpoint=section.text_checkpoint
        )
    model.save_pretrained(directory)


def build_datasets(config: PretrainConfig, prepared_dir: str, model_ref: object, featurizer: object) -> dict[str, object]:
    """Featurised (and, with ``data.text_cache``, prefix-cached) ``train`` and ``val`` Ray Datasets."""
    from medmplm.train.data import cache_frozen_prefix, feature_counts, featurize, read_visits, select_model_columns

    data, scaling = config.data, config.scaling
    datasets = {}
    for split in ("train", "val"):
        dataset = featurize(read_visits(prepared_dir, split), featurizer, data.featurize_batch_size)
        if data.text_cache:
            # Tokenised first: the cache actors may hold every CPU, and reading would then wait for one forever.
            dataset = cache_frozen_prefix(
                dataset.materialize(),
                model_ref,
                dtype=data.text_cache_dtype,
                batch_size=max(1, min(data.featurize_batch_size, 32)),
                concurrency=scaling.num_workers,
                use_gpu=scaling.use_gpu,
                cpus_per_actor=scaling.cpus_per_worker,
            )
        if data.materialize:
            dataset = dataset.materialize()
            counts = feature_counts(dataset)
            logger.info(
                "%s: %d visits featurised; notes truncated: %d; codes beyond max_codes: %d diagnosis, %d medication; "
                "codes not in the vocabulary: %d diagnosis, %d medication",
                split,
                counts["visits"],
                counts["text_truncated"],
                counts["diag_truncated"],
                counts["med_truncated"],
                counts["diag_unknown"],
                counts["med_unknown"],
            )
        dataset = select_model_columns(dataset, cached=data.text_cache)
        # Materialised after the projection too: the training workers then hold every CPU, and a lazy projection
        # would wait for one forever.
        datasets[split] = dataset.materialize() if data.materialize else dataset
    return datasets


def warn_if_outputs_are_ephemeral(config: PretrainConfig) -> None:
    """Warn when relative output paths would land in a Ray job's temporary copy of the working directory."""
    cwd = Path.cwd().as_posix()
    if "/runtime_resources/working_dir_files/" not in cwd:
        return
    for key, value in (("run.storage_path", config.run.storage_path), ("data.data_root", config.data.data_root)):
        if "://" not in value and not Path(value).is_absolute():
            logger.warning(
                "%s=%s is relative and this job runs in a temporary copy of its working directory (%s): its outputs "
                "are deleted with the Ray session; pass an absolute shared path or an s3:// / gs:// URI",
                key,
                value,
                cwd,
            )


def run(config: PretrainConfig, progress_bar: bool) -> dict[str, str]:
    """Pretrain with an initialised Ray; returns where things went (run_dir, export_dir, ...)."""
    import ray

    from medmplm.data.features import VisitFeaturizer
    from medmplm.data.masking import CodeMasker
    from medmplm.models import MedMPLMForPretraining
    from medmplm.train import storage
    from medmplm.train.data import keep_row_order
    from medmplm.train.pretraining import PretrainingTask
    from medmplm.train.trainer import export_checkpoint, fit, initial_model_bundle

    keep_row_order()
    warn_if_outputs_are_ephemeral(config)
    prepared_dir = ensure_prepared(config.data)
    config.data.prepared_dir = prepared_dir
    storage_path = storage.resolve_storage_path(config.run.storage_path)
    config.run.storage_path = storage_path
    run_name = config.run.name
    run_dir = storage.join(storage_path, run_name)
    config_yaml = to_yaml(config)
    storage.write_text(storage.join(run_dir, CONFIG_FILE_NAME), config_yaml)

    bundle, reused = initial_model_bundle(run_dir, lambda directory: build_initial_model(config, prepared_dir, directory))
    if reused:
        logger.info("run %s exists: resuming with its initial model", run_name)
    with tempfile.TemporaryDirectory(prefix="medmplm-driver-") as scratch:
        model = MedMPLMForPretraining.from_pretrained(bundle.write_to(Path(scratch) / "model"))
    featurizer = VisitFeaturizer.from_model(model)
    task = PretrainingTask(masker=CodeMasker.from_model(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "model: %s preset, %.2fM parameters (%.2fM trainable)",
        config.model.preset,
        sum(p.numel() for p in model.parameters()) / 1e6,
        trainable / 1e6,
    )
    del model
    model_ref = ray.put(bundle)
    datasets = build_datasets(config, prepared_dir, model_ref, featurizer)
    outcome = fit(
        task,
        datasets,
        model_ref,
        train=config.train,
        deepspeed=config.deepspeed,
        scaling=config.scaling,
        run=config.run,
        logging=config.logging,
        run_name=run_name,
        config_yaml=config_yaml,
        config_file_name=CONFIG_FILE_NAME,
        progress_bar=progress_bar,
    )
    export_dir = config.run.export_dir or storage.join(run_dir, "export")
    export_checkpoint(
        outcome.best_checkpoint,
        export_dir,
        config_yaml,
        CONFIG_FILE_NAME,
        {"run_name": run_name, "metrics": outcome.best_metrics},
    )
    return {
        "run_name": run_name,
        "run_dir": run_dir,
        "prepared_dir": prepared_dir,
        "export_dir": storage.resolve_storage_path(export_dir),
        "best_checkpoint": outcome.best_checkpoint.path,
        "best_val_loss": f"{outcome.best_metrics.get('val_loss', float('nan')):.4f}",
        "best_step": str(outcome.best_metrics.get("global_step", "?")),
    }


def _summary(where: dict[str, str]) -> str:
    return "\n".join(
        [
            f"Pretraining finished: run {where['run_name']}",
            f"  prepared data : {where['prepared_dir']}",
            f"  run directory : {where['run_dir']}  (checkpoints, {CONFIG_FILE_NAME})",
            f"  best checkpoint: {where['best_checkpoint']}  (step {where['best_step']}, val_loss {where['best_val_loss']})",
            f"  exported model: {where['export_dir']}",
            "Next:",
            f"  tensorboard --logdir {where['run_dir']}/tensorboard",
            f"  python -m medmplm.finetune --task readmission --init {where['export_dir']} "
            f"data.prepared_dir={where['prepared_dir']}",
            f"  python -m medmplm.pretrain --config {where['run_dir']}/{CONFIG_FILE_NAME} train.epochs=200"
            "   # the paper's budget, with early stopping; same run name: continues from the latest checkpoint",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.pretrain",
        description="Pretrain MedM-PLM on Ray Train + DeepSpeed (defaults: tiny model on synthetic data, local Ray).",
        epilog="Overrides: key=value or --key value with dotted keys, e.g. train.lr=1e-4 --scaling.num_workers 4 "
        "deepspeed.zero_stage=3 run.name=myrun run.storage_path=s3://bucket/runs (see medmplm/config.py).",
    )
    parser.add_argument("--config", help="YAML config file, or a preset name: tiny, paper, cluster_pretrain")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and DeepSpeed's output (logging.verbose)")
    args, overrides = parser.parse_known_args(argv)
    try:
        config = load_config(PretrainConfig, args.config, overrides)
    except ConfigError as error:
        parser.error(str(error))
    config.logging.verbose = config.logging.verbose or args.verbose
    configure_output(config.logging.verbose)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from medmplm.tasks.data_source import DataSourceError

    try:
        check_inputs(config)
    except DataSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from medmplm.train import storage

    if config.run.name is None:
        config.run.name = storage.new_run_name("pretrain")
    progress_bar = config.logging.progress_bar if config.logging.progress_bar is not None else sys.stdout.isatty()

    import ray

    # Joins the cluster in RAY_ADDRESS (ray job submit sets it), or starts a local Ray. The dashboard stays on:
    # Ray Train V2 watches its controller through the state API the dashboard serves.
    start_ray(config.logging.verbose)
    try:
        where = run(config, progress_bar)
    except ConfigError as error:
        parser.error(str(error))
    finally:
        ray.shutdown()
    print(_summary(where), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
