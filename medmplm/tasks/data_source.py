"""Which prepared directory a run reads, checked before Ray or torch start.

A model pretrained on one prepared directory only makes sense on that data: its code vocabularies are that
directory's. So fine-tuning from ``model.init_from`` reads the prepared directory recorded in the export's
``pretrain_config.yaml`` unless ``data.prepared_dir`` names another, and the two vocabularies must agree. A directory
that is gone is an error, never a silent fall-back to generated synthetic data.

Every check raises :class:`DataSourceError` with one line naming the path and the fix; the entry points print it.
Imports stay light (no torch, no Ray) so that a wrong path fails in a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medmplm.config import CONFIG_FILE_NAME as PRETRAIN_CONFIG_FILE
from medmplm.data.manifest import is_synthetic_release
from medmplm.data.schema import MANIFEST_FILE, ONTOLOGY_CODE_TYPES, VOCAB_DIR
from medmplm.data.tables import ADMISSIONS
from medmplm.data.vocab import CodeVocab

# Files of a ``save_pretrained`` directory (medmplm.models.modeling_medmplm), read here without importing torch.
MODEL_CONFIG_FILE = "config.json"
PREPARE_HINT = "python -m medmplm.prepare --mimic DIR --out DIR"
# A directory holding one of these (any case) is a raw MIMIC release that was never prepared.
RAW_ADMISSIONS_FILES = frozenset(f"{ADMISSIONS}{suffix}".lower() for suffix in (".csv", ".csv.gz"))


class DataSourceError(ValueError):
    """The data a run would read is missing, is not prepared, or does not fit the model; the message says which
    path and how to fix it."""


def is_remote(path: str) -> bool:
    """``s3://``, ``gs://`` and other URIs: checked by the storage layer once Ray runs, not here."""
    return "://" in path


def check_prepared_dir(path: str, source: str = "data.prepared_dir") -> None:
    """Check that the local directory ``path`` is a prepared directory (it holds ``manifest.json``).

    Args:
        path: the directory.
        source: where the path came from, for the message.

    Raises:
        DataSourceError: naming ``source`` and ``path``: missing, raw MIMIC tables instead of prepared visits, or no
            manifest.
    """
    if is_remote(path):
        return
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataSourceError(
            f"{source}: {path} does not exist; prepare the tables with `{PREPARE_HINT}` and pass data.prepared_dir=DIR"
        )
    if (directory / MANIFEST_FILE).is_file():
        return
    if any(entry.name.lower() in RAW_ADMISSIONS_FILES for entry in directory.iterdir()):
        raise DataSourceError(
            f"{source}: {path} holds raw MIMIC tables, not prepared visits; run "
            f"`python -m medmplm.prepare --mimic {path} --out DIR` and pass data.prepared_dir=DIR"
        )
    raise DataSourceError(
        f"{source}: {path} is not a prepared directory (no {MANIFEST_FILE}); prepare the tables with "
        f"`{PREPARE_HINT}` and pass data.prepared_dir=DIR"
    )


def check_model_dir(path: str, key: str) -> None:
    """Check that ``path`` is a saved model (``save_pretrained`` layout, e.g. ``runs/<run>/export``).

    Raises:
        DataSourceError: naming ``key`` and ``path`` when it is missing or holds no ``config.json``.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataSourceError(
            f"{key}: {path} does not exist; pass the export directory of a pretraining run (runs/<run>/export)"
        )
    if not (directory / MODEL_CONFIG_FILE).is_file():
        raise DataSourceError(
            f"{key}: {path} is not a saved model (no {MODEL_CONFIG_FILE}); pass the export directory of a pretraining "
            "run (runs/<run>/export)"
        )


def recorded_prepared_dir(init_dir: str) -> str | None:
    """``data.prepared_dir`` as recorded in ``<init_dir>/pretrain_config.yaml``, or ``None`` when there is no such
    record (a model saved outside a pretraining run)."""
    path = Path(init_dir).expanduser() / PRETRAIN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        recorded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise DataSourceError(f"model.init_from: {path} is not valid YAML: {error}") from None
    data = recorded.get("data") if isinstance(recorded, dict) else None
    prepared = data.get("prepared_dir") if isinstance(data, dict) else None
    return str(prepared) if prepared else None


def resolve_prepared_dir(config: Any) -> str | None:
    """The prepared directory a fine-tuning run reads.

    ``data.prepared_dir`` when given; else, with ``model.init_from`` (or else ``finetune.init_code``, then
    ``finetune.init_text``), the directory that model was pretrained on; else
    ``None`` (the embedded default: synthetic MIMIC-III generated and prepared under ``data.data_root``).

    Args:
        config: a ``FinetuneConfig`` (``data``, ``model`` and ``finetune`` sections).

    Raises:
        DataSourceError: a named model or prepared directory is missing or of the wrong kind, or ``model.init_from``
            records no prepared directory, or the one it records is gone.
    """
    exports = {
        "model.init_from": config.model.init_from,
        "finetune.init_code": config.finetune.init_code,
        "finetune.init_text": config.finetune.init_text,
    }
    exports = {key: path for key, path in exports.items() if path is not None}
    for key, path in exports.items():
        check_model_dir(path, key)
    if config.data.prepared_dir is not None:
        check_prepared_dir(config.data.prepared_dir)
        return config.data.prepared_dir
    if not exports:
        return None
    # The first export given names the data: a model's ids mean the codes of the data it was pretrained on.
    key, init_dir = next(iter(exports.items()))
    recorded = recorded_prepared_dir(init_dir)
    if recorded is None:
        raise DataSourceError(
            f"{key}: {init_dir} records no prepared directory (no data.prepared_dir in its "
            f"{PRETRAIN_CONFIG_FILE}); pass the data it was pretrained on with data.prepared_dir=DIR"
        )
    if not is_remote(recorded) and not Path(recorded).expanduser().is_dir():
        raise DataSourceError(
            f"{key}: {init_dir} was pretrained on {recorded}, which no longer exists; "
            "pass the prepared directory to fine-tune on with data.prepared_dir=DIR"
        )
    check_prepared_dir(recorded, f"data.prepared_dir recorded in {init_dir}/{PRETRAIN_CONFIG_FILE}")
    return recorded


def check_vocabularies(init_dir: str, prepared_dir: str, key: str = "model.init_from") -> None:
    """Check that the code vocabularies of the saved model ``init_dir`` are those of ``prepared_dir``.

    The model's vocabularies (``vocabularies`` in its ``config.json``; a text-only model has none) were built from a
    prepared directory's ``vocab/<type>.tsv`` (codes seen at least ``code_min_count`` times); on other data its code
    ids would mean other codes.

    Raises:
        DataSourceError: naming both paths, the code type and how many codes differ.
    """
    if is_remote(prepared_dir):
        return
    model_dir, prepared = Path(init_dir).expanduser(), Path(prepared_dir).expanduser()
    model_config = json.loads((model_dir / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    min_count = int(model_config.get("code_min_count", 1))
    vocabularies = model_config.get("vocabularies") or {}
    for code_type in ONTOLOGY_CODE_TYPES:
        if code_type not in vocabularies:
            continue
        saved = CodeVocab(code_type, vocabularies[code_type])
        table = prepared / VOCAB_DIR / f"{code_type}.tsv"
        if not table.is_file():
            raise DataSourceError(f"data.prepared_dir: {table} is missing; prepare the tables with `{PREPARE_HINT}`")
        expected = CodeVocab.from_tsv(table, code_type, min_count=min_count)
        if saved != expected:
            differing = len(set(saved.codes) ^ set(expected.codes))
            raise DataSourceError(
                f"{key}: the {code_type} vocabulary of {init_dir} ({len(saved.codes)} codes) is not that of "
                f"{table} ({len(expected.codes)} codes seen >= {min_count} times; {differing} codes in only one, "
                "or another order): the model was pretrained on other data; pass the prepared directory it was "
                "pretrained on with data.prepared_dir=DIR"
            )


def is_synthetic(prepared_dir: str | None) -> bool:
    """Whether a run on ``prepared_dir`` reads generated synthetic data: ``None`` (the embedded default), or a
    prepared directory whose ``manifest.json`` says ``synthetic: true``. A manifest written before that key existed
    is judged by the synthetic generator's marker in the input directory it records."""
    if prepared_dir is None:
        return True
    if is_remote(prepared_dir):
        return False
    path = Path(prepared_dir).expanduser() / MANIFEST_FILE
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "synthetic" in manifest:
        return bool(manifest["synthetic"])
    mimic_dir = manifest.get("options", {}).get("mimic_dir")
    return bool(mimic_dir) and is_synthetic_release(mimic_dir)


def synthetic_notice(prepared_dir: str | None) -> str:
    """The first line of a run's output on synthetic data."""
    where = prepared_dir if prepared_dir is not None else "generated under data.data_root"
    return (
        f"SYNTHETIC DATA: this run reads generated synthetic MIMIC-III ({where}), not patient records; "
        "pass data.prepared_dir=DIR for real data"
    )
