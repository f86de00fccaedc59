"""``python -m medmplm.pretrain``: pretrain any model family on Ray Train with DeepSpeed.

``model.family`` picks what is pretrained (:mod:`medmplm.pretraining`): ``medmplm`` (default), ``bert-mlm`` (a
ClinicalBERT-style text encoder by masked language modelling on the notes), ``gbert`` (G-BERT on codes), ``medbert``
(Med-BERT on patient code sequences). The loop, checkpoints, resume and export are the same for every family.

With no arguments: generate a small synthetic MIMIC-III under ``runs/data/`` (reused when already there), prepare it,
start a local Ray, pretrain a ``tiny`` ``bert-mlm`` text encoder on its notes, then the ``tiny`` MedM-PLM from that
text encoder, on 2 CPU workers each, export both, and print where everything went. With ``--config FILE`` (or a preset name: ``tiny``, ``paper``, ``cluster_pretrain``, shipped in
``medmplm/configs/``) and ``key=value`` / ``--key value`` overrides: any configuration (keys in :mod:`medmplm.config`).
``RAY_ADDRESS`` (set by ``ray job submit``) joins a cluster. A wrong data path is reported before Ray starts.

Examples::

    python -m medmplm.pretrain
    python -m medmplm.pretrain model.family=bert-mlm data.prepared_dir=/data/mimic3-prepared
    python -m medmplm.pretrain --config paper data.prepared_dir=/data/mimic3-prepared model.text_checkpoint=/models/bert
    python -m medmplm.pretrain run.name=my-run train.epochs=50    # rerun the same line to resume my-run
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
from pathlib import Path

# Light imports only: `--help` and a wrong path must answer without loading torch or starting Ray.
from medmplm.config import CONFIG_FILE_NAME, ConfigError, DataConfig, ModelSection, PretrainConfig, load_config, to_yaml
from medmplm.console import configure_output, start_ray
from medmplm.data import schema

logger = logging.getLogger("medmplm.pretrain")

# One line saying how the initial model was built (from scratch, from which checkpoint); kept with the model.
MODEL_DESCRIPTION_FILE = "model_description.txt"
# MedM-PLM preset -> the bert-mlm preset whose text encoder has its text side's shape.
TEXT_STAGE_PRESETS = {"tiny": "tiny", "paper": "base"}


def ensure_prepared(data: DataConfig) -> str:
    """The prepared directory to train on: ``data.prepared_dir``, or a synthetic MIMIC-III generated and prepared
    under ``data.data_root`` (each step skipped when its output is already there). Needs Ray initialised.

    Raises:
        FileNotFoundError: when ``data.prepared_dir`` is not a prepared directory.
    """
    from medmplm.train import storage

    if data.prepared_dir is not None:
        from medmplm.data.prepared import require_prepared

        # A directory without its manifest (a prepare that stopped, an upload in progress) is refused.
        location = storage.resolve_storage_path(data.prepared_dir)
        require_prepared(location)
        return location

    from medmplm.data.pipeline import PrepareOptions, prepare
    from medmplm.synthetic import generate_mimic3

    root = Path(data.data_root).expanduser().resolve()
    tag = f"p{data.synthetic_patients}-s{data.synthetic_seed}"
    raw, prepared = root / f"synthetic-mimic3-{tag}", root / f"prepared-{tag}"
    if (prepared / schema.MANIFEST_FILE).is_file():
        logger.info("reusing prepared synthetic data at %s", prepared)
        return str(prepared)
    if not raw.is_dir():
        logger.info(
            "generating a synthetic MIMIC-III (%d patients, seed %d) at %s",
            data.synthetic_patients,
            data.synthetic_seed,
            raw,
        )
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
    if config.model.text_checkpoint is not None:
        check_model_dir(config.model.text_checkpoint, "model.text_checkpoint")
    if is_synthetic(config.data.prepared_dir):
        print(synthetic_notice(config.data.prepared_dir), flush=True)


def build_initial_model(config: PretrainConfig, prepared_dir: str, directory: Path) -> str:
    """Build the model the run starts from (the family's ``build_model``) and ``save_pretrained`` it, with its
    tokenizer, into ``directory``. Returns the family's one-line description of it.

    Raises:
        ConfigError: when the ``model`` section does not describe a valid model of the family.
    """
    import torch

    from medmplm.pretraining import get_family

    torch.manual_seed(config.train.seed)
    built = get_family(config.model.family).build_model(prepared_dir, config.model)
    built.model.save_pretrained(directory)
    if built.tokenizer is not None:
        built.tokenizer.save_pretrained(directory)
    (directory / MODEL_DESCRIPTION_FILE).write_text(built.description + "\n", encoding="utf-8")
    return built.description


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


def text_stage_config(config: PretrainConfig) -> PretrainConfig | None:
    """The ``bert-mlm`` run that makes MedM-PLM's text encoder first, when ``model.pretrain_text_first`` and the
    MedM-PLM run has no text encoder to start from (no ``model.text_checkpoint``, no ``model.init_from``); else None.

    Same data, training (but ``model.text_stage_epochs`` epochs), scaling and storage; the family's matching preset
    (``tiny`` for ``tiny``, ``base`` for ``paper``); run name ``<run name>-text``, so a rerun finds and reuses it.
    """
    model = config.model
    if model.family != "medmplm" or not model.pretrain_text_first or model.text_checkpoint or model.init_from:
        return None
    stage = copy.deepcopy(config)
    stage.model = ModelSection(
        family="bert-mlm",
        preset=TEXT_STAGE_PRESETS.get(model.preset or "tiny", "tiny"),
        tokenizer_dir=model.tokenizer_dir,
    )
    stage.run.name = f"{config.run.name}-text"
    stage.train.epochs = model.text_stage_epochs
    # The frozen-prefix cache is MedM-PLM's: masked language modelling trains every layer.
    stage.data.text_cache = False
    stage.run.export_dir = None
    return stage


def run(config: PretrainConfig, progress_bar: bool) -> dict[str, str]:
    """Pretrain with an initialised Ray; returns where things went (run_dir, export_dir, ...)."""
    import ray

    from medmplm.pretraining import get_family
    from medmplm.train import storage
    from medmplm.train.data import keep_row_order
    from medmplm.train.engine import select_accelerator
    from medmplm.train.trainer import export_checkpoint, fit, initial_model_bundle

    # Saving the initial model imports DeepSpeed (transformers' save_pretrained unwraps the model through accelerate,
    # which imports it), and DeepSpeed warns on a machine without a GPU unless told first to use the CPU.
    select_accelerator(config.scaling.use_gpu)
    keep_row_order()
    warn_if_outputs_are_ephemeral(config)
    prepared_dir = ensure_prepared(config.data)
    config.data.prepared_dir = prepared_dir
    storage_path = storage.resolve_storage_path(config.run.storage_path)
    config.run.storage_path = storage_path
    family = get_family(config.model.family)
    run_name = config.run.name
    run_dir = storage.join(storage_path, run_name)
    config_yaml = to_yaml(config)
    storage.write_text(storage.join(run_dir, CONFIG_FILE_NAME), config_yaml)

    from medmplm.data.prepared import local_prepared_dir

    # The model is built from the vocabularies, ontologies and notes on local disk (a remote prepared directory's
    # cached copy); the workers stream the visit shards from prepared_dir itself.
    bundle, reused = initial_model_bundle(
        run_dir, lambda directory: build_initial_model(config, local_prepared_dir(prepared_dir), directory)
    )
    if reused:
        logger.info("run %s exists: resuming with its initial model", run_name)
    with tempfile.TemporaryDirectory(prefix="medmplm-driver-") as scratch:
        model_dir = bundle.write_to(Path(scratch) / "model")
        description = (model_dir / MODEL_DESCRIPTION_FILE).read_text(encoding="utf-8").strip()
        model = family.load_model(model_dir)
        parameters = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        del model
        logger.info(
            "model: %s (%s), %.2fM parameters (%.2fM trainable)",
            family.name,
            description,
            parameters / 1e6,
            trainable / 1e6,
        )
        task = family.task(model_dir)
        datasets = family.datasets(prepared_dir, model_dir, config)
    outcome = fit(
        task,
        datasets,
        ray.put(bundle),
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
        {"run_name": run_name, "family": family.name, "model": description, "metrics": outcome.best_metrics},
    )
    metrics = outcome.best_metrics
    return {
        "family": family.name,
        "run_name": run_name,
        "run_dir": run_dir,
        "prepared_dir": prepared_dir,
        "export_dir": storage.resolve_storage_path(export_dir),
        "best_checkpoint": outcome.best_checkpoint.path,
        "best_val_loss": f"{metrics.get('val_loss', float('nan')):.4f}",
        "best_step": str(metrics.get("global_step", "?")),
    }


def run_with_text_stage(config: PretrainConfig, progress_bar: bool) -> list[dict[str, str]]:
    """The text stage first when :func:`text_stage_config` asks for one (its export becomes
    ``model.text_checkpoint``), then the run itself; returns where each went, in order."""
    from medmplm.train import storage

    stages = []
    stage = text_stage_config(config)
    if stage is not None:
        stage.data.prepared_dir = ensure_prepared(config.data)
        export = storage.join(storage.resolve_storage_path(stage.run.storage_path), stage.run.name, "export")
        if storage.exists(storage.join(export, "config.json")):
            logger.info("text encoder: reusing %s", export)
        else:
            print(f"Stage 1 of 2: a bert-mlm text encoder for MedM-PLM (run {stage.run.name})", flush=True)
            stages.append(run(stage, progress_bar))
            export = stages[-1]["export_dir"]
            print(f"Stage 2 of 2: MedM-PLM from that text encoder (run {config.run.name})", flush=True)
        config.model.text_checkpoint = storage.resolve_storage_path(export)
    stages.append(run(config, progress_bar))
    return stages


def _next_steps(where: dict[str, str]) -> list[str]:
    export, prepared = where["export_dir"], where["prepared_dir"]
    data = f"data.prepared_dir={prepared}"
    finetune = f"  python -m medmplm.finetune --task readmission {data}"
    steps = {
        "medmplm": [f"{finetune} --model medmplm --init {export}"],
        "bert-mlm": [
            f"  python -m medmplm.pretrain {data} model.text_checkpoint={export}   # MedM-PLM from this text encoder",
            f"{finetune} --model clinicalbert --init-text {export}",
        ],
        "gbert": [f"{finetune} --model gbert --init-code {export}"],
        "medbert": [f"{finetune} --model medbert --init-code {export}"],
        "mbehrt": [
            f"  python -m medmplm.finetune --task next_dx {data} --model mbehrt-shared --init-code {export}"
            "   # the --model of its layout: mbehrt-early, -late, -shared or -tabular"
        ],
        "medfuse-lab": [
            f"  python -m medmplm.finetune --task disease10 {data} --model medfuse --init-code {export} "
            "--init-text LM_DIR   # LM_DIR: a local language model, e.g. a bert-mlm export"
        ],
    }
    embed = f"  python -m medmplm.embed --model {export} --prepared {prepared} --out {where['run_dir']}/embeddings"
    return [
        *steps.get(where["family"], []),
        # M-BEHRT's vector is a patient history's, not a visit's, and medmplm.embed does not featurise lab tests:
        # it has none to give for either.
        *([] if where["family"] in ("mbehrt", "medfuse-lab") else [embed]),
        f"  tensorboard --logdir {where['run_dir']}/tensorboard",
    ]


def _summary(stages: list[dict[str, str]]) -> str:
    lines = []
    for where in stages:
        lines += [
            f"Pretraining finished: {where['family']}, run {where['run_name']}",
            f"  prepared data  : {where['prepared_dir']}",
            f"  run directory  : {where['run_dir']}  (checkpoints, {CONFIG_FILE_NAME})",
            f"  best checkpoint: {where['best_checkpoint']}  (step {where['best_step']}, val_loss {where['best_val_loss']})",
            f"  exported model : {where['export_dir']}",
        ]
    last = stages[-1]
    return "\n".join(
        [
            *lines,
            "Next:",
            *_next_steps(last),
            f"  python -m medmplm.pretrain --config {last['run_dir']}/{CONFIG_FILE_NAME} train.epochs=200"
            "   # a longer budget, with early stopping; same run name: continues from the latest checkpoint",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.pretrain",
        description="Pretrain a model family on Ray Train + DeepSpeed: model.family=medmplm (default), bert-mlm, gbert or "
        "medbert (defaults: tiny models on synthetic data, local Ray).",
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
        family = config.model.family
        config.run.name = storage.new_run_name("pretrain" if family == "medmplm" else f"pretrain-{family}")
    progress_bar = config.logging.progress_bar if config.logging.progress_bar is not None else sys.stdout.isatty()

    import ray

    # Joins the cluster in RAY_ADDRESS (ray job submit sets it), or starts a local Ray. The dashboard stays on:
    # Ray Train V2 watches its controller through the state API the dashboard serves.
    start_ray(config.logging.verbose)
    try:
        stages = run_with_text_stage(config, progress_bar)
    except ConfigError as error:
        parser.error(str(error))
    finally:
        ray.shutdown()
    print(_summary(stages), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
