"""``python -m medmplm.finetune``: fine-tune and evaluate one model on one task, append a result record.

Runs through the same training loop, config system and checkpointing as pretraining (Ray Train + DeepSpeed); the
``logreg`` baseline is fitted in process. Each run writes ``<finetune.results_dir>/<run>.parquet`` (task, model, init,
train ratio, seed, lr, every metric on val and test); ``medmplm.results.gather_results`` reads many runs as one table.
``RAY_ADDRESS`` (set by ``ray job submit``) joins a cluster.

With ``--init``, the data is the prepared directory the model was pretrained on (recorded in the export) unless
``data.prepared_dir`` names another with the same vocabularies; see :mod:`medmplm.tasks.data_source`. Wrong paths
are reported in one line before Ray starts.

Examples::

    python -m medmplm.finetune --task readmission --init runs/<pretrain-run>/export
    python -m medmplm.finetune --task medrec --model medmplm-code --init DIR --train-ratio 0.1 --seed 2
    python -m medmplm.finetune --task icd --model logreg data.prepared_dir=DIR finetune.task_options.top_k=20
    python -m medmplm.finetune --task readmission --model medmplm model.preset=tiny   # from scratch (no --init)
    python -m medmplm.finetune --task ner --ner-corpus DIR --model bilstm-crf+bert --init-text BERT_MLM_EXPORT

The ``ner`` task (the NER auxiliary check) reads an i2b2-2010-format corpus (``--ner-corpus``) instead of prepared
visits; its models are ``bilstm-crf``, ``bilstm-crf+bert`` (``--init-text``) and ``bilstm-crf+medmplm`` (``--init``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medmplm.config import ConfigError, load_config, parse_overrides, to_yaml
from medmplm.console import configure_output, start_ray
from medmplm.tasks.config import SHORT_FLAGS, FinetuneConfig, expand_short_flags

logger = logging.getLogger("medmplm.finetune")


def resolve_inputs(config: FinetuneConfig) -> None:
    """Set ``data.prepared_dir`` to the data the run reads and check it against ``model.init_from``, before Ray
    starts; say first when the data is synthetic.

    The ``ner`` task reads no prepared directory: its corpus must be a directory, and the export its model reads a
    model export of the right kind.

    Raises:
        DataSourceError: a path is missing or of the wrong kind, or the model's vocabularies are not the data's.
    """
    from medmplm.data.manifest import is_synthetic_release
    from medmplm.tasks.data_source import DataSourceError

    if config.finetune.task == "ner":
        from medmplm.tasks.ner import encoder_export

        corpus = config.finetune.ner_corpus
        if not Path(corpus).expanduser().is_dir():
            raise DataSourceError(f"finetune.ner_corpus: {corpus} is not a directory")
        if is_synthetic_release(Path(corpus).expanduser()):
            print(f"SYNTHETIC DATA: this run reads a generated synthetic i2b2-format corpus ({corpus}), not patient notes")
        try:
            encoder_export(config.finetune.model, config)
        except ConfigError as error:
            raise DataSourceError(str(error)) from None
        config.data.prepared_dir = None
        return
    from medmplm.tasks.data_source import check_vocabularies, is_synthetic, resolve_prepared_dir, synthetic_notice

    config.data.prepared_dir = resolve_prepared_dir(config)
    if config.data.prepared_dir is not None and "://" in config.data.prepared_dir:
        from medmplm.data.prepared import IncompletePreparedError, local_prepared_dir

        # Tasks read whole splits into memory: from a local copy of an s3:// or gs:// prepared directory.
        try:
            local = local_prepared_dir(config.data.prepared_dir)
        except IncompletePreparedError as error:
            raise DataSourceError(f"data.prepared_dir: {error}") from None
        logger.info("reading %s through its local copy %s", config.data.prepared_dir, local)
        config.data.prepared_dir = local
    if config.data.prepared_dir is not None:
        for key, init_dir in (
            ("model.init_from", config.model.init_from),
            ("finetune.init_code", config.finetune.init_code),
        ):
            if init_dir is not None:
                check_vocabularies(init_dir, config.data.prepared_dir, key)
    if is_synthetic(config.data.prepared_dir):
        print(synthetic_notice(config.data.prepared_dir), flush=True)


def init_keys(config: FinetuneConfig) -> dict[str, str]:
    """The ``--init*`` keys the run was given (exports whose weights it may start from)."""
    keys = {
        "model.init_from": config.model.init_from,
        "finetune.init_code": config.finetune.init_code,
        "finetune.init_text": config.finetune.init_text,
    }
    return {key: value for key, value in keys.items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.finetune",
        description="Fine-tune MedM-PLM (or a baseline) on medrec, readmission, icd or ner and record its metrics.",
        epilog=f"Short flags: {', '.join('--' + k.replace('_', '-') + ' -> ' + v for k, v in SHORT_FLAGS.items())}. "
        "Other overrides: key=value or --key value with dotted keys, e.g. train.epochs=10 "
        "finetune.task_options.top_k=50 finetune.results_dir=runs/table (see medmplm/tasks/config.py).",
    )
    parser.add_argument("--config", help="YAML config file with any of the sections")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and DeepSpeed's output (logging.verbose)")
    args, tokens = parser.parse_known_args(argv)
    try:
        overrides = expand_short_flags(parse_overrides(tokens))
        config = load_config(FinetuneConfig, args.config, overrides)
    except ConfigError as error:
        parser.error(str(error))
    config.logging.verbose = config.logging.verbose or args.verbose
    configure_output(config.logging.verbose)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from medmplm.tasks.data_source import DataSourceError

    try:
        resolve_inputs(config)
    except DataSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from medmplm.data.i2b2 import CorpusError
    from medmplm.metrics import format_metric
    from medmplm.pretrain import ensure_prepared
    from medmplm.tasks.base import NoExamplesError
    from medmplm.tasks.ner import NerDataError
    from medmplm.tasks.encoders import model_spec
    from medmplm.tasks.runner import run_finetune
    from medmplm.train import storage

    section = config.finetune
    if config.run.name is None:
        config.run.name = storage.new_run_name(f"{section.task}-{section.model.replace('+', '_')}")
    progress_bar = config.logging.progress_bar if config.logging.progress_bar is not None else sys.stdout.isatty()
    # The logreg baseline on an existing prepared directory runs entirely in this process.
    spec = model_spec(section.model)
    own_corpus = section.task == "ner"
    needs_ray = spec.trains_in_loop or config.data.prepared_dir is None
    if needs_ray:
        # address="local": never attach to a stale cluster some other process recorded in /tmp/ray.
        start_ray(config.logging.verbose, address="local", include_dashboard=False)
    try:
        prepared_dir = None if own_corpus else ensure_prepared(config.data)
        config.data.prepared_dir = prepared_dir
        logger.info(
            "%s with %s (%s), train ratio %g, seed %d; data %s; run %s",
            section.task,
            section.model,
            ", ".join(f"{k}={v}" for k, v in init_keys(config).items()) or "no pretrained weights",
            section.train_ratio,
            config.train.seed,
            section.ner_corpus if own_corpus else prepared_dir,
            config.run.name,
        )
        record = run_finetune(config, prepared_dir, config.run.name, progress_bar)
    except (NoExamplesError, CorpusError, NerDataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if needs_ray:
            import ray

            ray.shutdown()
    print(
        f"Fine-tuning finished: run {record.run_id} ({record.task}, {record.model}, init {record.init}, "
        f"train ratio {record.train_ratio}, seed {record.seed})"
    )
    for split in ("val", "test"):
        values = " ".join(format_metric(name, value) for name, value in sorted(record.metrics[split].items()))
        print(f"  {split} ({record.num_examples[split]} examples): {values}")
    print(f"  result record: {section.results_dir}/{record.run_id}.parquet")
    print("Next:")
    print(
        '  python -c "from medmplm.results import gather_results, summary_table; '
        f"print(summary_table(gather_results('{section.results_dir}')).to_string())\""
        "   # every run in the results directory, mean ± std over seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
