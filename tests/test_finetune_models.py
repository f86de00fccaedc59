"""Fine-tuning heads over every encoder of the grid: pooling, missing modalities, padding, a short fine-tune."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from medmplm.data.features import VisitFeaturizer
from medmplm.models import MedMPLMConfig, MedMPLMModel
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.tasks import build_task, read_visits
from medmplm.tasks.encoders import MODELS, build_encoder, model_spec
from medmplm.tasks.encoding import VisitEncoding
from medmplm.tasks.featurize import ExampleFeaturizer
from medmplm.tasks.modeling import FineTuningModel, HeadConfig, build_finetuning_model, head_config_for
from medmplm.tasks.testing_utils import write_finetune_prepared_dir

# Patient-level models (M-BEHRT) read patient examples, not these visit batches: tests/test_mbehrt_next_dx.py.
TORCH_MODELS = [name for name, spec in MODELS.items() if spec.build is not None and not spec.patient_level]
# Every model on readmission, and every task through a multimodal and a history-summarising model, run by default;
# the rest of the model x task grid is marked slow.
FAST_CASES = {(m, "readmission") for m in TORCH_MODELS} | {("medmplm", "medrec"), ("medmplm", "icd"), ("rnn", "medrec")}
GRID = [
    pytest.param(m, t, marks=() if (m, t) in FAST_CASES else pytest.mark.slow)
    for m in TORCH_MODELS
    for t in ("medrec", "readmission", "icd")
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    prepared = write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"))
    # Short notes and small batches keep each short fine-tune to a few forward/backward passes of a tiny model.
    backbone = build_medmplm(MedMPLMModel, prepared, MedMPLMConfig.from_preset("tiny", text_max_length=32))
    featurizer = VisitFeaturizer.from_model(backbone)
    train = read_visits(prepared, "train")
    batches = {}
    for name in ("medrec", "readmission", "icd"):
        task = build_task(name, **({"max_history": 2} if name == "medrec" else {}))
        space = task.label_space(train)
        examples = task.build_examples(train, space).examples.slice(0, 12)
        columns = {c: examples.column(c).to_numpy(zero_copy_only=False) for c in examples.column_names}
        arrays = ExampleFeaturizer(featurizer, task.max_visits, space if task.multilabel else None)(columns)
        batches[name] = (
            task,
            len(space) if task.multilabel else 1,
            {k: torch.from_numpy(v) for k, v in arrays.items()},
        )
    return backbone, batches, prepared


@pytest.fixture(scope="module")
def family_backbones(setup):
    """Freshly built G-BERT and Med-BERT base models on the same prepared directory (the code side of gbert, medbert)."""
    from medmplm.config import ModelSection
    from medmplm.pretraining import get_family

    _, _, prepared = setup
    torch.manual_seed(0)
    return {
        kind: get_family(kind).build_model(str(prepared), ModelSection(family=kind)).model.base_model
        for kind in ("gbert", "medbert")
    }


def _model(name, backbone, task, num_labels, family_backbones=None):
    torch.manual_seed(0)
    kind = model_spec(name).code_backbone
    code = family_backbones[kind] if kind in ("gbert", "medbert") else backbone
    return build_finetuning_model(name, head_config_for(task, num_labels), code, backbone)


@pytest.mark.parametrize(("model_name", "task_name"), GRID)
def test_short_finetune_lowers_the_loss(setup, family_backbones, model_name, task_name):
    backbone, batches, prepared = setup
    task, num_labels, batch = batches[task_name]
    model = _model(model_name, backbone, task, num_labels, family_backbones)
    assert model.encoder.modalities == model_spec(model_name).modalities
    # Compared in eval mode before and after: dropout noise in a training-mode loss can exceed three steps' progress.
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses))
    expected = (batch["labels"].shape[0], num_labels) if num_labels > 1 else (batch["labels"].shape[0],)
    assert out.logits.shape == expected
    model.eval()
    with torch.no_grad():
        assert model(**batch).loss.item() < before


def test_padding_slots_and_hidden_notes_do_not_matter(setup):
    backbone, batches, prepared = setup
    task, num_labels, batch = batches["medrec"]
    model = _model("medmplm", backbone, task, num_labels).eval()
    with torch.no_grad():
        reference = model(**batch).logits
        changed = {k: v.clone() for k, v in batch.items()}
        # Scribble over every padding slot and over the text of visits without a note.
        padding = changed["visit_mask"] == 0
        changed["diag_ids"][padding] = 5
        changed["diag_mask"][padding] = 1
        changed["input_ids"][padding] = 7
        no_note = changed["has_note"] == 0
        changed["input_ids"][no_note] = 9
        changed["attention_mask"][no_note] = 1
        assert padding.any() and (no_note & ~padding).any()
        assert torch.allclose(model(**changed).logits, reference, atol=1e-6)
        # A real visit's codes do matter.
        changed["diag_ids"][~padding] = 4
        assert not torch.allclose(model(**changed).logits, reference, atol=1e-4)


class _FirstCodeEncoder(nn.Module):
    """Code vector = the visit's first diagnosis id, text vector = has_note * 10 (easy to check by hand)."""

    modalities = frozenset({"text", "codes"})
    text_size = 1
    code_size = 1

    def forward(self, input_ids, attention_mask, has_note, diag_ids, diag_mask, med_ids, med_mask):
        return VisitEncoding(text=has_note[:, None].float() * 10, codes=diag_ids[:, 1:2].float())


def test_history_mean_over_visits_showing_each_modality_and_target_modalities():
    model = FineTuningModel(
        _FirstCodeEncoder(), HeadConfig(num_labels=2, has_history=True, target_modalities=frozenset({"codes"}))
    )
    model.classifier = nn.Identity()  # expose the pooled features
    length = 3
    visit_mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]])
    diag_ids = torch.zeros(3, 4, length, dtype=torch.long)
    diag_ids[..., 1] = torch.tensor([[0, 4, 6, 9], [0, 0, 8, 5], [0, 0, 2, 7]])
    diag_mask = (diag_ids > 0).long()
    diag_mask[..., 0] = 1
    has_note = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    zeros = torch.zeros(3, 4, length, dtype=torch.long)
    features = model(
        input_ids=zeros,
        attention_mask=zeros,
        has_note=has_note,
        diag_ids=diag_ids,
        diag_mask=diag_mask,
        med_ids=zeros,
        med_mask=zeros,
        visit_mask=visit_mask,
    ).logits
    # Columns: mean history text, mean history codes, target codes (the task hides the target's text).
    # Row 0: the text history is the one noted visit (10), not 10 averaged with the note-less one.
    assert features[:2].tolist() == [[10.0, 5.0, 9.0], [10.0, 8.0, 5.0]]
    # Row 2: no earlier visit has a note (one shows no code either): the learned "no history" text vector, and the
    # code history is the mean over the one visit with codes.
    assert features[2, 0] == model.no_history["text"][0] and features[2, 0] != 0
    assert features[2, 1:].tolist() == [2.0, 7.0]


def test_note_less_earlier_visit_does_not_change_the_text_history(setup):
    backbone, batches, prepared = setup
    task, num_labels, batch = batches["medrec"]
    model = _model("medmplm-text", backbone, task, num_labels).eval()
    # Examples with a free slot before their history: a note-less visit (with codes) goes there.
    free = (batch["visit_mask"][:, 0] == 0).nonzero().flatten()
    assert free.numel() > 0
    changed = {k: v.clone() for k, v in batch.items()}
    changed["visit_mask"][free, 0] = 1
    changed["has_note"][free, 0] = 0
    changed["diag_ids"][free, 0, 1] = 4
    changed["diag_mask"][free, 0, 1] = 1
    with torch.no_grad():
        assert torch.equal(model(**changed).logits, model(**batch).logits)


def test_encoder_that_sees_nothing_of_the_task_is_an_error(setup):
    backbone, batches, prepared = setup
    with pytest.raises(ValueError, match="shows none of them"):
        FineTuningModel(
            build_encoder("medmplm-text", backbone),
            HeadConfig(num_labels=3, has_history=False, target_modalities=frozenset({"codes"})),
        )


@pytest.mark.parametrize("name", ["bert", "lr", "medbert-scratch", "clinicalbert+gbert", "medmplm-gbert"])
def test_unknown_model_is_a_clear_error_listing_the_accepted_names(name):
    with pytest.raises(ValueError, match=rf"unknown model '{re.escape(name)}'; expected one of") as raised:
        model_spec(name)
    assert all(repr(accepted) in str(raised.value) for accepted in MODELS)


@pytest.mark.parametrize(
    "model_name", ["medmplm", "medmplm-code", "medmplm-code+medmplm-text", "cnn", "rnn", "gbert+clinicalbert", "medbert"]
)
def test_save_and_load_give_identical_outputs(setup, family_backbones, tmp_path, model_name):
    backbone, batches, prepared = setup
    task, num_labels, batch = batches["medrec"]
    model = _model(model_name, backbone, task, num_labels, family_backbones)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)  # weights that differ from any freshly built model
    model.eval()
    model.save_pretrained(tmp_path / "saved")
    assert not [p.name for p in (tmp_path / "saved").iterdir() if p.name.startswith(".")]
    # Backbones are stored as configs: the weights are model.safetensors alone, holding only what the encoder reads
    # (a code-only model stores no BERT).
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.safetensors")] == ["saved/model.safetensors"]
    bert_weights = {name for name in model.state_dict() if ".text_encoder." in name or name.startswith("text_encoder.")}
    assert bool(bert_weights) == (model_spec(model_name).text_backbone is not None)
    loaded = FineTuningModel.from_pretrained(tmp_path / "saved")
    assert loaded.model_name == model_name and not loaded.training
    for modality in model.no_history:
        assert torch.equal(loaded.no_history[modality], model.no_history[modality])
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_separate_text_backbone_is_saved_apart(setup, tmp_path):
    backbone, batches, prepared = setup
    task, num_labels, batch = batches["readmission"]
    torch.manual_seed(1)
    other = build_medmplm(MedMPLMModel, prepared, MedMPLMConfig.from_preset("tiny", text_max_length=32))
    head = head_config_for(task, num_labels)
    model = build_finetuning_model("medmplm-code+medmplm-text", head, backbone, other).eval()
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "text_backbone").is_dir()
    loaded = FineTuningModel.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_loading_errors_name_the_file(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        FineTuningModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="expected 'medmplm-finetune'"):
        FineTuningModel.from_pretrained(tmp_path)
    stub = FineTuningModel(
        _FirstCodeEncoder(), HeadConfig(num_labels=1, has_history=False, target_modalities=frozenset({"codes"}))
    )
    with pytest.raises(ValueError, match="build_finetuning_model"):
        stub.save_pretrained(tmp_path / "stub")
