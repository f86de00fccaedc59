"""The ``contrastive`` family and MedM-PLM's ``contrastive_weight``: the symmetric InfoNCE against a hand computation,
the model on a featurised batch, the Auto-class round trip, the export initialising MedM-PLM and the fine-tuning
encoders, the family's configuration errors, the model's code and term vectors, and (slow) the loss gathered over two
gloo processes against one process holding the global batch, and the whole path end to end (counts through Ray Data,
two-worker pretraining through the shared loop, embeddings side by side)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

from medmplm.config import ConfigError, ModelSection
from medmplm.data.features import VisitFeaturizer
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining, MedMPLMModel
from medmplm.models.alignment import symmetric_infonce
from medmplm.models.contrastive import ContrastiveForPretraining, ContrastiveModel
from medmplm.models.testing_utils import read_split_batch, write_tiny_prepared_dir
from medmplm.models.text_encoder import window_starts
from medmplm.pretraining.contrastive import FAMILY, ContrastivePretrainingTask
from medmplm.pretraining.medmplm import FAMILY as MEDMPLM_FAMILY
from medmplm.tasks.encoders import build_encoder
from medmplm.train.data import MODEL_COLUMNS

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def clip_loss(codes: torch.Tensor, texts: torch.Tensor, eligible: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss written out: the eligible visits' similarity matrix, cross-entropy along rows and along columns."""
    logits = scale * codes[eligible] @ texts[eligible].T
    targets = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def unit_rows(generator: torch.Generator, rows: int, dim: int = 6) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=-1)


def test_symmetric_infonce_is_clips_loss_over_the_eligible_visits():
    generator = torch.Generator().manual_seed(0)
    codes, texts = unit_rows(generator, 5).requires_grad_(), unit_rows(generator, 5)
    eligible = torch.tensor([True, True, False, True, True])
    scale = torch.tensor(10.0)
    result = symmetric_infonce(codes, texts, eligible, scale, gather=True)
    assert torch.allclose(result.loss, clip_loss(codes, texts, eligible, scale))
    assert (int(result.pairs), int(result.local_pairs)) == (4, 4)
    logits = (scale * codes[eligible] @ texts[eligible].T).detach()
    own = torch.arange(4)
    assert math.isclose(float(result.code_to_text_accuracy), float((logits.argmax(1) == own).float().mean()))
    assert math.isclose(float(result.text_to_code_accuracy), float((logits.argmax(0) == own).float().mean()))
    result.loss.backward()
    assert codes.grad[2].abs().sum() == 0 and codes.grad[0].abs().sum() > 0

    none = symmetric_infonce(codes, texts, torch.zeros(5, dtype=torch.bool), scale, gather=False)
    assert float(none.loss.detach()) == 0.0 and none.loss.requires_grad
    assert math.isnan(float(none.code_to_text_accuracy))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("contrastive") / "prepared", num_visits=24)


@pytest.fixture(scope="module")
def export(prepared, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    built = FAMILY.build_model(str(prepared), ModelSection(family="contrastive", allow_random_frozen=True))
    directory = tmp_path_factory.mktemp("contrastive") / "export"
    built.model.save_pretrained(directory)
    return directory


def featurised(model, prepared: Path) -> dict[str, torch.Tensor]:
    batch = VisitFeaturizer.from_model(model)(read_split_batch(prepared))
    return {name: torch.from_numpy(batch[name]) for name in MODEL_COLUMNS}


def eligible_visits(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Visits with a note and a diagnosis or medication code."""
    codes = inputs["diag_mask"][:, 1:].bool().any(1) | inputs["med_mask"][:, 1:].bool().any(1)
    return inputs["has_note"].bool() & codes


def test_the_model_aligns_visits_with_a_note_and_codes_and_trains_every_trainable_weight(prepared, export):
    model = ContrastiveForPretraining.from_pretrained(export).train()
    inputs = featurised(model, prepared)
    output = model(**inputs)
    eligible = eligible_visits(inputs)
    assert int(output.local_pairs) == int(eligible.sum()) == 20
    assert torch.allclose(output.loss, clip_loss(output.code_embeds, output.text_embeds, eligible, output.logit_scale))
    assert math.isclose(float(output.logit_scale), 1 / 0.07, rel_tol=1e-5)
    output.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert "alignment.logit_scale" in trainable
    assert [name for name, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert all(p.grad is None for name, p in model.named_parameters() if not p.requires_grad)

    model.eval()
    with torch.no_grad():
        reference = model(**inputs).loss
        # A visit without a note takes no part, whatever its text; an eligible visit's text does.
        no_note, with_note = int(torch.nonzero(~inputs["has_note"].bool())[0]), int(torch.nonzero(eligible)[0])
        for row, changes in ((no_note, False), (with_note, True)):
            changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
            changed["input_ids"][row, 1:4] = torch.tensor([7, 8, 9])
            assert (not torch.equal(model(**changed).loss, reference)) == changes, row


def test_auto_classes_round_trip_and_the_export_initialises_medmplm_and_the_fine_tuning_encoders(prepared, export):
    saved = json.loads((export / "config.json").read_text())
    assert saved["model_type"] == "contrastive" and saved["contrastive_projection_size"] == 32
    model = AutoModelForPreTraining.from_pretrained(export).eval()
    assert type(model) is ContrastiveForPretraining and model.tokenizer is not None
    inputs = featurised(model, prepared)
    with torch.no_grad():
        output = model(**inputs)
        encoder = AutoModel.from_pretrained(export).eval()
        assert type(encoder) is ContrastiveModel
        unfused = encoder(**{k: v for k, v in inputs.items() if k != "has_note"})
        assert torch.equal(unfused.code_vector, output.model_output.code_vector)

        medmplm = MedMPLMModel.from_pretrained(export).eval()
        assert type(medmplm.config) is MedMPLMConfig and medmplm.config.model_type == "medmplm"
        weights = medmplm.state_dict()
        for name, value in model.state_dict().items():
            if name.startswith(("medmplm.text_encoder.", "medmplm.code_encoder.")):
                assert torch.equal(weights[name.removeprefix("medmplm.")], value), name
        # The fine-tuning models that read MedM-PLM's parts read the contrastive encoders.
        codes = build_encoder("medmplm-code", medmplm).eval()(**inputs).codes
        assert torch.equal(codes, output.model_output.code_vector)
        assert build_encoder("medmplm", medmplm).eval()(**inputs).text.shape == (24, medmplm.config.code_hidden_size)

    continued = MEDMPLM_FAMILY.build_model(
        str(prepared), ModelSection(init_from=str(export), overrides={"contrastive_weight": 0.5})
    )
    assert continued.description.startswith("text and code encoders from the contrastive export")
    pretraining = continued.model
    assert pretraining.config.contrastive_weight == 0.5
    for name, value in model.state_dict().items():
        if name.startswith(("medmplm.text_encoder.", "medmplm.code_encoder.", "alignment.")):
            assert torch.equal(pretraining.state_dict()[name], value), name
    with pytest.raises(ConfigError, match=r"model\.overrides\.hidden_size: not a MedM-PLM configuration field"):
        MEDMPLM_FAMILY.build_model(str(prepared), ModelSection(init_from=str(export), overrides={"hidden_size": 8}))


def test_medmplm_contrastive_weight_adds_the_same_loss_before_fusion(prepared):
    torch.manual_seed(0)
    plain = MEDMPLM_FAMILY.build_model(str(prepared), ModelSection(allow_random_frozen=True)).model
    assert plain.alignment is None and not any(name.startswith("alignment.") for name in plain.state_dict())
    torch.manual_seed(0)
    section = ModelSection(allow_random_frozen=True, overrides={"contrastive_weight": 0.5})
    model = MEDMPLM_FAMILY.build_model(str(prepared), section).model.eval()
    inputs = featurised(model, prepared)
    # Each visit's first diagnosis is the masked code to predict.
    first = torch.where(inputs["diag_mask"][:, 1].bool(), inputs["diag_ids"][:, 1], -100)
    inputs["diag_labels"] = torch.full_like(inputs["diag_ids"], -100)
    inputs["diag_labels"][:, 1] = first
    inputs["med_labels"] = torch.full_like(inputs["med_ids"], -100)
    with torch.no_grad():
        output = model(**inputs)
        encoded = output.model_output
        eligible = eligible_visits(inputs)
        aligned = model.alignment(
            *window_starts(encoded.text_last_hidden_state, inputs["attention_mask"], model.config.text_max_length),
            torch.cat([encoded.diagnosis_last_hidden_state[:, 0], encoded.medication_last_hidden_state[:, 0]], dim=-1),
            eligible,
        )
    masked = sum(model.config.loss_weights[name] * output.losses[name] for name in model.config.loss_weights)
    assert torch.allclose(output.losses["contrastive"], aligned.loss)
    assert torch.allclose(output.loss, masked + 0.5 * aligned.loss)
    assert int(output.target_counts["contrastive"]) == 20
    with pytest.raises(ValueError, match="contrastive_weight must be >= 0"):
        MedMPLMConfig.from_preset("tiny", contrastive_weight=-1.0)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({}, "model.text_checkpoint: none given"),
        ({"allow_random_frozen": True, "overrides": {"hidden_size": 8}}, "model.overrides.hidden_size"),
        ({"allow_random_frozen": True, "options": {"mlm_probability": 0.2}}, "model.options.mlm_probability"),
        ({"allow_random_frozen": True, "preset": "base"}, "model.preset"),
    ],
)
def test_build_model_names_the_wrong_key(prepared, section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        FAMILY.build_model(str(prepared), ModelSection(family="contrastive", **section))


def test_continuing_needs_a_contrastive_export(prepared, export, tmp_path):
    torch.manual_seed(0)
    continued = FAMILY.build_model(str(prepared), ModelSection(family="contrastive", init_from=str(export)))
    reference = ContrastiveForPretraining.from_pretrained(export).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in continued.model.state_dict().items())
    MedMPLMForPretraining.from_pretrained(export).save_pretrained(tmp_path / "medmplm")
    with pytest.raises(ConfigError, match="is a 'medmplm' model, expected a contrastive export"):
        FAMILY.build_model(str(prepared), ModelSection(family="contrastive", init_from=str(tmp_path / "medmplm")))


def test_task_reports_accuracies_candidates_and_temperature(prepared, export):
    task = ContrastivePretrainingTask()
    model = task.load_model(export)
    inputs = task.model_inputs(featurised(model, prepared), torch.Generator(), training=True)
    output = model(**inputs)
    stats = task.batch_statistics(output, inputs)
    assert sorted(stats) == ["accuracy_code_to_text", "accuracy_text_to_code", "candidates", "temperature"]
    total, weight = stats["accuracy_code_to_text"]
    assert float(weight) == 20 and math.isclose(float(total / weight), float(output.code_to_text_accuracy))
    assert float(stats["candidates"][0]) == 20 and math.isclose(float(stats["temperature"][0]), 0.07, rel_tol=1e-5)


def test_code_vectors_of_the_export_and_of_medmplm_started_from_it_agree(prepared, export, tmp_path):
    from medmplm.embeddings.model_vectors import export_model_vectors
    from medmplm.embeddings.sppmi import read_embeddings
    from medmplm.embeddings.terms import TermList

    terms = TermList(("hypertension", "atrial fibrillation"), "test")
    export_model_vectors(str(export), str(tmp_path / "input"), "input", terms)
    MedMPLMForPretraining.from_pretrained(export).save_pretrained(tmp_path / "medmplm")
    export_model_vectors(str(tmp_path / "medmplm"), str(tmp_path / "medmplm-input"), "input", terms)
    contrastive, medmplm = read_embeddings(tmp_path / "input"), read_embeddings(tmp_path / "medmplm-input")
    assert contrastive.items == medmplm.items and set(contrastive.kinds) == {"diagnosis", "medication"}
    np.testing.assert_array_equal(contrastive.vectors, medmplm.vectors)

    export_model_vectors(str(export), str(tmp_path / "joint"), "joint", terms)
    joint = read_embeddings(tmp_path / "joint")
    assert joint.kinds.count("term") == 2 and joint.items[-2:] == list(terms.terms)
    assert joint.vectors.shape == (len(contrastive.items) + 2, 32)
    np.testing.assert_allclose(np.linalg.norm(joint.vectors, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="is a 'medmplm' model; its spaces: input"):
        export_model_vectors(str(tmp_path / "medmplm"), str(tmp_path / "bad"), "joint", terms)


def test_medmplm_embed_writes_the_unfused_note_and_code_vectors_of_each_visit(prepared, export):
    from medmplm.pretraining.embedding import VisitEmbedder
    from medmplm.train.bundle import ModelBundle

    table = VisitEmbedder(ModelBundle.from_directory(export))(read_split_batch(prepared))
    assert table["embedding"].null_count == 0
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    model = ContrastiveModel.from_pretrained(export).eval()
    inputs = featurised(model, prepared)
    with torch.no_grad():
        output = model(**{name: value for name, value in inputs.items() if name != "has_note"})
    present = output.text_window_mask.float()[..., None]
    note = (output.text_window_states * present).sum(1) / present.sum(1)
    np.testing.assert_allclose(vectors, torch.cat([note, output.code_vector], dim=-1).numpy(), atol=1e-6)


def _gathered_loss_worker(rank: int, port: int, results: str) -> None:
    """One of two gloo processes: its share of a global batch of 5 visits (3 and 2; one not eligible)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    generator = torch.Generator().manual_seed(0)
    codes, texts = unit_rows(generator, 5), unit_rows(generator, 5)
    eligible = torch.tensor([True, False, True, True, True])
    rows = slice(0, 3) if rank == 0 else slice(3, 5)

    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    local_codes, local_texts = codes[rows].clone().requires_grad_(), texts[rows].clone().requires_grad_()
    gathered = symmetric_infonce(local_codes, local_texts, eligible[rows], log_scale.exp(), gather=True)
    gathered.loss.backward()

    # One process holding the whole batch.
    single_scale = torch.tensor(math.log(10.0), requires_grad=True)
    all_codes, all_texts = codes.clone().requires_grad_(), texts.clone().requires_grad_()
    single = symmetric_infonce(all_codes, all_texts, eligible, single_scale.exp(), gather=False)
    single.loss.backward()

    # What data-parallel training does: average the workers' losses and the shared parameter's gradients.
    mean_loss = gathered.loss.detach().clone()
    scale_grad = log_scale.grad.clone()
    for value in (mean_loss, scale_grad):
        dist.all_reduce(value)
        value /= 2
    np.savez(
        Path(results) / f"rank{rank}.npz",
        mean_loss=mean_loss.numpy(),
        single_loss=single.loss.detach().numpy(),
        scale_grad=scale_grad.numpy(),
        single_scale_grad=single_scale.grad.numpy(),
        code_grad=(local_codes.grad / 2).numpy(),
        single_code_grad=all_codes.grad[rows].numpy(),
        text_grad=(local_texts.grad / 2).numpy(),
        single_text_grad=all_texts.grad[rows].numpy(),
        pairs=np.array([int(gathered.pairs), int(single.pairs)]),
    )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_all_gather_infonce_over_two_processes_matches_one_process_on_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from conftest import free_port

    mp.spawn(_gathered_loss_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        found = np.load(tmp_path / f"rank{rank}.npz")
        assert list(found["pairs"]) == [4, 4]
        np.testing.assert_allclose(found["mean_loss"], found["single_loss"], rtol=1e-6)
        np.testing.assert_allclose(found["scale_grad"], found["single_scale_grad"], rtol=1e-5)
        for side in ("code", "text"):
            np.testing.assert_allclose(found[f"{side}_grad"], found[f"single_{side}_grad"], atol=1e-7)
        assert np.abs(found["single_code_grad"]).sum() > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_end_to_end_counts_through_ray_data_two_worker_pretraining_and_embeddings_side_by_side(
    ray_local, synthetic_prepared, tmp_path
):
    import pandas as pd
    import ray

    from medmplm.embeddings.cooccur import CountingOptions, ItemIndex, count_table, read_counts, release
    from medmplm.embeddings.terms import catalogue_terms
    from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}

    def embeddings_command(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "medmplm.embeddings", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        return result.stdout

    # Counts through Ray Data equal the same stages run in this process on the split's table.
    counts = tmp_path / "counts"
    output = embeddings_command(
        "cooccur", "--prepared", str(synthetic_prepared), "--out", str(counts), "--unit", "window", "--min-count", "1"
    )
    assert output.startswith("SYNTHETIC DATA")
    released = read_counts(counts)
    index = ItemIndex.from_prepared(synthetic_prepared, CountingOptions().code_types, catalogue_terms())
    table = pq.read_table(synthetic_prepared / "visits" / "train")
    in_process, _ = release(count_table(table, index, "window", 30), index, min_count=1)
    assert released.as_dict() == in_process.as_dict()
    assert (released.units, released.manifest["visits"]) == (in_process.units, table.num_rows)
    embeddings_command("embed", "--counts", str(counts), "--dim", "8", "--out", str(tmp_path / "sppmi"))

    # Two workers of 8 visits each per step: every visit is scored against both workers' notes.
    output = run_pretraining(
        "model.family=contrastive",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=c",
        "model.allow_random_frozen=true",
        "train.epochs=1",
        "train.max_steps=3",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "pretrain.log",
    )
    assert "Pretraining finished: contrastive, run c" in output
    scalars = tensorboard_scalars(tmp_path / "c" / "tensorboard")
    assert all(8 < value <= 16 for _, value in scalars["train/candidates"]), scalars["train/candidates"]
    assert len(scalars["train/loss"]) == 3 and "val/loss" in scalars

    export = tmp_path / "c" / "export"
    medmplm = MedMPLMModel.from_pretrained(export)
    trained = ContrastiveForPretraining.from_pretrained(export).state_dict()
    initial = ContrastiveForPretraining.from_pretrained(tmp_path / "c" / "initial_model").state_dict()
    name = "medmplm.code_encoder.embeddings.code_type.weight"
    assert torch.equal(medmplm.state_dict()[name.removeprefix("medmplm.")], trained[name])
    assert not torch.equal(trained[name], initial[name]), "export is untrained"

    for space in ("joint", "input"):
        embeddings_command("export", "--model", str(export), "--space", space, "--out", str(tmp_path / space))
    directories = [str(tmp_path / name) for name in ("sppmi", "joint", "input")]
    embeddings_command("evaluate", "--embeddings", *directories, "--out", str(tmp_path / "auc.csv"))
    results = pd.read_csv(tmp_path / "auc.csv")
    scored = results.groupby("relation")["embeddings"].apply(set).to_dict()
    assert scored["icd9_category"] == set(directories)
    assert scored["code_term"] == set(directories[:2])
    assert (results.groupby("relation")["related_pairs"].nunique() == 1).all()
