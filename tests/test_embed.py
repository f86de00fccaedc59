"""``python -m medmplm.embed``: one vector per visit from an export of any family, written as plain Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from medmplm.config import ModelSection
from medmplm.pretraining import get_family
from medmplm.pretraining.embedding import MANIFEST_FILE, embed_visits
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"), patients=(8, 3, 3))


def export(family: str, prepared: Path, directory: Path, **section) -> Path:
    torch.manual_seed(0)
    built = get_family(family).build_model(str(prepared), ModelSection(family=family, **section))
    built.model.save_pretrained(directory)
    if built.tokenizer is not None:
        built.tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("family", "width", "section"),
    [
        ("medmplm", 3 * 32, {"allow_random_frozen": True}),
        pytest.param("gbert", 2 * 32, {}, marks=pytest.mark.slow),
        pytest.param("medbert", 32, {}, marks=pytest.mark.slow),
        ("bert-mlm", 64, {}),
    ],
)
def test_every_visit_gets_a_vector(ray_local, prepared, tmp_path, family, width, section):
    model_dir = export(family, prepared, tmp_path / "export", **section)
    manifest = embed_visits(str(model_dir), str(prepared), str(tmp_path / "out"), ("val", "test"), 4, 1)
    assert (
        manifest["width"] == width
        and manifest["model_type"] == json.loads((model_dir / "config.json").read_text())["model_type"]
    )
    assert json.loads((tmp_path / "out" / MANIFEST_FILE).read_text()) == manifest
    visits = pq.read_table(prepared / "visits" / "val").to_pydict()
    table = pq.read_table(tmp_path / "out" / "val")
    assert table.column_names == ["subject_id", "hadm_id", "embedding"]
    assert sorted(table.column("hadm_id").to_pylist()) == sorted(visits["hadm_id"])
    vectors = table.column("embedding").to_pylist()
    without_note = {h for h, note in zip(visits["hadm_id"], visits["note_text"], strict=True) if not note}
    expected_missing = without_note if family == "bert-mlm" else set()
    assert {
        h for h, v in zip(table.column("hadm_id").to_pylist(), vectors, strict=True) if v is None
    } == expected_missing
    assert manifest["splits"]["val"] == {"visits": len(visits["hadm_id"]), "without_embedding": len(expected_missing)}
    present = np.array([v for v in vectors if v is not None], dtype=np.float32)
    assert present.shape[1] == width and np.isfinite(present).all() and present.std(axis=0).max() > 0
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError, match="holds embeddings already"):
        embed_visits(str(model_dir), str(prepared), str(tmp_path / "out"), ("val",), 4, 1)
