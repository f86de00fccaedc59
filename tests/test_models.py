"""MedM-PLM model library: config, ontology GAT, text encoder, cross-modal module, objectives, save/load."""

import copy
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, BertModel

from medmplm.data.features import VisitFeaturizer
from medmplm.data.masking import IGNORE_INDEX, CodeMasker
from medmplm.data.vocab import NUM_SPECIAL_TOKENS, PAD_ID
from medmplm.models import (
    CrossModalAttention,
    MedMPLMConfig,
    MedMPLMForPretraining,
    MedMPLMModel,
    OntologyEmbedding,
    OntologyTree,
    TextEncoder,
    modeling_medmplm,
)
from medmplm.models.summary import main as summary_main
from medmplm.models.testing_utils import read_split_batch, write_tiny_prepared_dir
from medmplm.models.text_encoder import backbone_from_config_dict, bert_text_config
from medmplm.ontology import build_ontology
from medmplm.pretraining.medmplm import build_medmplm

MODELS_DIR = Path(modeling_medmplm.__file__).parent


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each
    # step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> MedMPLMConfig:
    return MedMPLMConfig.from_preset("tiny", text_max_length=48, max_codes=8, **overrides)


def fresh_bert(config: MedMPLMConfig, vocab_size: int, pad_token_id: int = 0):
    return backbone_from_config_dict(bert_text_config(config, vocab_size, pad_token_id))


def same_config(left: MedMPLMConfig, right: MedMPLMConfig) -> bool:
    ignored = {"_name_or_path", "architectures", "transformers_version", "dtype"}
    return {k: v for k, v in left.to_dict().items() if k not in ignored} == {
        k: v for k, v in right.to_dict().items() if k not in ignored
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("prepared"), num_visits=12)


@pytest.fixture(scope="module")
def model(prepared: Path) -> MedMPLMForPretraining:
    torch.manual_seed(0)
    return build_medmplm(MedMPLMForPretraining, prepared, tiny_config())


def masked_batch(model: MedMPLMForPretraining, prepared: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    arrays = VisitFeaturizer.from_model(model)(read_split_batch(prepared))
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return CodeMasker.from_model(model)(batch, torch.Generator().manual_seed(seed))


# --- configuration -------------------------------------------------------------------------


def test_config_presets_round_trip_and_validation(tmp_path: Path) -> None:
    paper = MedMPLMConfig.from_preset("paper")
    assert (paper.text_num_layers, paper.text_num_frozen_layers, paper.code_hidden_size) == (12, 10, 300)
    assert paper.ontology_head_size * paper.ontology_num_heads == 300
    config = MedMPLMConfig.from_preset("tiny", max_codes=10, loss_weights={"t2c_diagnosis": 2.0})
    assert config.loss_weights == {
        "t2c_diagnosis": 2.0,
        "t2c_medication": 0.0,
        "c2c_diagnosis": 0.0,
        "c2c_medication": 0.0,
    }
    assert same_config(MedMPLMConfig.from_dict(config.to_dict()), config)
    config.save_pretrained(tmp_path)
    assert same_config(MedMPLMConfig.from_pretrained(tmp_path), config)
    with pytest.raises(ValueError, match="unknown MedMPLMConfig field"):
        MedMPLMConfig.from_preset("tiny", hidden=3)
    with pytest.raises(ValueError, match="must equal code_hidden_size"):
        MedMPLMConfig.from_preset("tiny", code_hidden_size=40)
    with pytest.raises(ValueError, match="unknown objective"):
        MedMPLMConfig.from_preset("tiny", loss_weights={"mlm": 1.0})


# --- ontology embedding --------------------------------------------------------------------

CODES = ["4019", "4011", "40391", "042", "25000", "V4581"]


def ontology_embedding() -> OntologyEmbedding:
    torch.manual_seed(0)
    tree = OntologyTree.build(CODES, build_ontology(CODES, "icd9_diagnosis"))
    return OntologyEmbedding(tree, head_size=4, num_heads=2).eval()


def test_ontology_tree_indexes_codes_as_leaves_and_paths_as_nodes() -> None:
    ontology = build_ontology(CODES, "icd9_diagnosis")
    tree = OntologyTree.build([*CODES, "NOTINONTOLOGY"], ontology)
    assert tree.node_names[: len(CODES) + 1] == [*CODES, "NOTINONTOLOGY"]
    assert tree.codes_without_ancestors == 1
    assert "ICD9CM|390-459|403|4039" in tree.node_names
    # Stage 1 runs deepest level first and ends with the root aggregating the chapters.
    parents = [[tree.node_names[p] for p in level.parents] for level in tree.levels]
    assert set(parents[0]) == {"ICD9CM|390-459|403|4039", "ICD9CM|240-279|250|2500", "ICD9CM|V01-V91|V45|V458"}
    assert parents[-1] == ["ICD9CM"]
    assert "ICD9CM|390-459" in parents[-2]
    ancestors_of_4019 = {tree.node_names[s] for s, t in tree.ancestor_edges if tree.node_names[t] == "4019"}
    assert ancestors_of_4019 == {"ICD9CM", "ICD9CM|390-459", "ICD9CM|390-459|401"}


def perturbed_output(module: OntologyEmbedding, node: str) -> torch.Tensor:
    with torch.no_grad():
        original = module.node_embeddings.detach().clone()
        module.node_embeddings[module.tree.node_id(node)] += 1.0
        out = module()
        module.node_embeddings.copy_(original)
    return out


def test_ontology_gat_uses_the_tree() -> None:
    module = ontology_embedding()
    with torch.no_grad():
        base = module()
    assert base.shape == (len(CODES), 8)
    row = {code: i for i, code in enumerate(CODES)}

    changed_parent = perturbed_output(module, "ICD9CM|390-459|401")
    assert not torch.allclose(changed_parent[row["4019"]], base[row["4019"]])
    assert not torch.allclose(changed_parent[row["4011"]], base[row["4011"]])
    # The parent is an ancestor of 4019 in stage 2; to 25000 it reaches only through the root, so less.
    parent_effect = (changed_parent - base).norm(dim=1)
    assert parent_effect[row["4019"]] > parent_effect[row["25000"]]

    # A sibling code reaches 4019 through stage-1 aggregation into their parent.
    changed_sibling = perturbed_output(module, "4011")
    assert not torch.allclose(changed_sibling[row["4019"]], base[row["4019"]])

    changed_root = perturbed_output(module, "ICD9CM")
    assert not torch.isclose(changed_root, base).all(dim=1).any()


# --- cross-modal module --------------------------------------------------------------------


def test_cross_attention_gives_padding_zero_weight() -> None:
    torch.manual_seed(0)
    module = CrossModalAttention(text_hidden_size=12, code_hidden_size=8)
    text, code = torch.randn(3, 5, 12), torch.randn(3, 4, 8)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    code_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    out = module(text, text_mask, code, code_mask, output_attentions=True)
    assert out.code_to_text_attentions.shape == (3, 4, 5) and out.text_to_code_attentions.shape == (3, 5, 4)
    assert (out.code_to_text_attentions[text_mask[:, None, :].expand(3, 4, 5) == 0] == 0).all()
    assert (out.text_to_code_attentions[code_mask[:, None, :].expand(3, 5, 4) == 0] == 0).all()
    sums = out.code_to_text_attentions.sum(dim=-1)
    assert torch.allclose(sums[:2], torch.ones(2, 4)) and (sums[2] == 0).all()
    # No key at all: the output is the query's own (projected) state.
    assert torch.equal(out.code_fused[2], code[2])
    assert torch.equal(out.text_fused[1], module.text_projection(text[1]))
    # Values behind padding cannot leak in.
    text_changed = text.clone()
    text_changed[0, 3:] = 100.0
    again = module(text_changed, text_mask, code, code_mask)
    assert torch.allclose(again.code_fused[0], out.code_fused[0])
    assert module(text, text_mask, code, code_mask).text_to_code_attentions is None


def test_fused_attention_path_matches_the_weights_path_and_its_gradients() -> None:
    # Without output_attentions the module runs scaled_dot_product_attention (fused kernels on GPU); with it, it
    # materialises the weights. Both must give the same outputs and gradients, queries without keys included.
    torch.manual_seed(0)
    module = CrossModalAttention(text_hidden_size=12, code_hidden_size=8)
    text, code = torch.randn(3, 5, 12, requires_grad=True), torch.randn(3, 4, 8, requires_grad=True)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    code_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    outputs, gradients = [], []
    for output_attentions in (False, True):
        out = module(text, text_mask, code, code_mask, output_attentions=output_attentions)
        (out.text_fused.pow(2).sum() + out.code_fused.pow(2).sum()).backward()
        outputs.append((out.text_fused.detach(), out.code_fused.detach()))
        gradients.append((text.grad.clone(), code.grad.clone()))
        text.grad, code.grad = None, None
    for (fused_text, fused_code), (text_out, code_out) in ((outputs[0], outputs[1]), (gradients[0], gradients[1])):
        torch.testing.assert_close(fused_text, text_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused_code, code_out, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(gradients[0][0]).all() and torch.isfinite(gradients[0][1]).all()


def test_the_text_encoder_attends_through_sdpa(model: MedMPLMForPretraining) -> None:
    assert model.text_encoder.backbone.config._attn_implementation == "sdpa"


def test_absent_windows_get_zero_attention_and_change_nothing(model: MedMPLMForPretraining, prepared: Path) -> None:
    encoder = copy.deepcopy(model.medmplm).eval()
    one_window = copy.deepcopy(encoder)
    one_window.config.set_note_reading(text_long_note="head", text_max_windows=1)
    batch = read_split_batch(prepared)
    windows, length = encoder.config.text_max_windows, encoder.config.text_max_length
    short = VisitFeaturizer(
        model.tokenizer, model.diagnosis_vocab, model.medication_vocab, length, model.config.max_codes
    )(batch)
    assert short["text_truncated"].sum() == 0  # every note fits one window: the windows after it are absent
    windowed = VisitFeaturizer.from_model(model)(batch)
    assert windows > 1 and windowed["input_ids"].shape[1] == windows * length
    names = ("input_ids", "attention_mask", "has_note", "diag_ids", "diag_mask", "med_ids", "med_mask")
    with torch.no_grad():
        single = one_window(**{k: torch.from_numpy(short[k]) for k in names}, output_attentions=True)
        several = encoder(**{k: torch.from_numpy(windowed[k]) for k in names}, output_attentions=True)
    assert (several.code_to_text_attentions[:, :, length:] == 0).all()
    assert (several.text_last_hidden_state[:, length:] == 0).all()
    assert several.text_window_mask[:, 0].all() and not several.text_window_mask[:, 1:].any()
    for name in ("text_pooled", "diagnosis_fused", "medication_fused", "visit_embedding"):
        torch.testing.assert_close(getattr(several, name), getattr(single, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(several.text_fused[:, :length], single.text_fused, rtol=1e-5, atol=1e-6)


def test_window_pooling_gives_absent_windows_zero_weight() -> None:
    from medmplm.models.text_encoder import WindowPooling

    states = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    mean = WindowPooling(4, "mean")(states, mask)
    torch.testing.assert_close(mean, torch.stack([states[0, :2].mean(0), states[1, 0]]))
    pooling = WindowPooling(4, "attention")
    attended = pooling(states, mask)
    torch.testing.assert_close(attended[1], states[1, 0])  # one window: its own state
    changed = states.clone()
    changed[:, 2] = 100.0  # what an absent window holds never matters
    torch.testing.assert_close(pooling(changed, mask), attended)
    assert not torch.allclose(attended[0], mean[0])  # the scores weigh the windows


def test_code_embeddings_tell_codes_apart_at_initialisation(model: MedMPLMForPretraining) -> None:
    """The shared code type vector must not drown the ontology embeddings: after the LayerNorm, two codes of a freshly
    built model differ by far more than a few percent (at nn.Embedding's N(0, 1) scale their cosine was ~0.99)."""
    embeddings = model.medmplm.code_encoder.embeddings
    embeddings.eval()
    for code_type in ("diagnosis", "medication"):
        num_ids = embeddings.table(code_type).shape[0]
        with torch.no_grad():
            vectors = embeddings(torch.arange(NUM_SPECIAL_TOKENS, num_ids)[None], code_type)[0]
        cosine = torch.nn.functional.cosine_similarity(vectors[:, None], vectors[None], dim=-1)
        off_diagonal = cosine[~torch.eye(len(vectors), dtype=torch.bool)]
        assert off_diagonal.mean() < 0.7, (code_type, float(off_diagonal.mean()))
    assert not embeddings.special_tokens["diagnosis"].weight[PAD_ID].any()


# --- text encoder --------------------------------------------------------------------------


def test_frozen_parameters_get_no_gradient_and_trainable_ones_do(model: MedMPLMForPretraining, prepared: Path) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    model(**masked_batch(model, prepared)).loss.backward()
    text = model.text_encoder
    frozen = {id(p) for m in text.frozen_modules() for p in m.parameters()}
    assert frozen and len(text.frozen_modules()) == 1 + model.config.text_num_frozen_layers
    for name, param in model.named_parameters():
        if id(param) in frozen:
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.requires_grad and param.grad is not None, name
    trained_text = [p for p in text.backbone.encoder.layer[-1].parameters()]
    assert all(p.grad.abs().sum() > 0 for p in trained_text)
    assert model.medmplm.code_encoder.embeddings.ontology["diagnosis"].node_embeddings.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_text_encoder_matches_the_transformers_forward() -> None:
    torch.manual_seed(0)
    backbone = fresh_bert(tiny_config(), vocab_size=50).eval()
    ids = torch.randint(5, 50, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    expected = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    encoder = TextEncoder(backbone, num_frozen_layers=1).eval()
    assert torch.allclose(encoder(ids, mask), expected, atol=1e-6)


def test_frozen_prefix_path_equals_full_path(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    model.eval()
    with torch.no_grad():
        full = model(**batch)
        cached_batch = dict(batch)
        cached_batch["text_hidden_states"] = model.text_encoder.frozen_prefix(
            batch["input_ids"], batch["attention_mask"]
        )
        del cached_batch["input_ids"]
        cached = model(**cached_batch)
    assert torch.allclose(full.loss, cached.loss, atol=1e-6)
    for name in full.losses:
        assert torch.allclose(full.losses[name], cached.losses[name], atol=1e-6), name
    # A half-precision cache is accepted and stays close.
    cached_batch["text_hidden_states"] = cached_batch["text_hidden_states"].half()
    with torch.no_grad():
        assert torch.allclose(model(**cached_batch).loss, full.loss, atol=1e-2)
    # The prefix runs without dropout even in training mode, so caching it is exact.
    model.train()
    first = model.text_encoder.frozen_prefix(batch["input_ids"], batch["attention_mask"])
    again = model.text_encoder.frozen_prefix(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(first, again) and not first.requires_grad
    model.eval()


def test_text_checkpoint_and_tokenizer_directory(prepared: Path, tmp_path: Path, model: MedMPLMForPretraining) -> None:
    checkpoint = tmp_path / "bert"
    backbone = fresh_bert(tiny_config(text_hidden_size=48, text_num_layers=3, text_intermediate_size=96), len(model.tokenizer))
    backbone.save_pretrained(checkpoint)
    model.tokenizer.save_pretrained(checkpoint)
    loaded = build_medmplm(MedMPLMForPretraining, prepared, tiny_config(), text_checkpoint=checkpoint)
    assert (loaded.config.text_hidden_size, loaded.config.text_num_layers) == (48, 3)
    assert torch.equal(
        loaded.text_encoder.backbone.embeddings.word_embeddings.weight, backbone.embeddings.word_embeddings.weight
    )
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    reused = build_medmplm(MedMPLMForPretraining, prepared, tiny_config(), tokenizer_dir=checkpoint)
    assert reused.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert isinstance(reused.text_encoder.backbone, BertModel)
    assert loaded.config.text_pretrained == str(checkpoint) and reused.config.text_pretrained is None


# --- objectives and missing modalities ----------------------------------------------------


def test_missing_modalities_give_finite_losses(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    has_note = batch["has_note"].bool()
    no_diag = batch["diag_mask"][:, 1:].sum(dim=1) == 0
    no_med = batch["med_mask"][:, 1:].sum(dim=1) == 0
    assert (~has_note).any() and no_diag.any() and no_med.any()
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # T2C counts only visits with a note; C2C every masked code.
    diag_targets = batch["diag_labels"] != IGNORE_INDEX
    assert int(out.target_counts["c2c_diagnosis"]) == int(diag_targets.sum())
    assert int(out.target_counts["t2c_diagnosis"]) == int(diag_targets[has_note].sum())
    model.zero_grad(set_to_none=True)


def test_batch_without_any_note_or_codes_is_finite(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    batch["has_note"] = torch.zeros_like(batch["has_note"])
    batch["med_mask"][:, 1:] = 0
    batch["med_labels"][:] = IGNORE_INDEX
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)
    for name in ("t2c_diagnosis", "t2c_medication", "c2c_medication"):
        assert out.losses[name] == 0 and int(out.target_counts[name]) == 0 and math.isnan(out.accuracies[name])
    assert out.losses["c2c_diagnosis"] > 0


def test_visits_are_encoded_independently(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    inputs = {k: v for k, v in batch.items() if not k.endswith("_labels")}
    model.eval()
    with torch.no_grad():
        together = model.medmplm(**inputs)
        for row in (0, 3, 7):
            alone = model.medmplm(**{k: v[row : row + 1] for k, v in inputs.items()})
            assert torch.allclose(alone.visit_embedding[0], together.visit_embedding[row], atol=1e-5)
            assert torch.allclose(alone.medication_fused[0], together.medication_fused[row], atol=1e-5)


def test_attention_maps_on_request(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    model.eval()
    with torch.no_grad():
        out = model(**batch, output_attentions=True).model_output
    n, text_len = batch["input_ids"].shape
    code_len = batch["diag_ids"].shape[1] + batch["med_ids"].shape[1]
    assert out.text_to_code_attentions.shape == (n, text_len, code_len)
    assert out.code_to_text_attentions.shape == (n, code_len, text_len)
    no_note = batch["has_note"] == 0
    assert (out.code_to_text_attentions[no_note] == 0).all()
    assert out.visit_embedding.shape == (n, 3 * model.config.code_hidden_size)


# --- save / load ---------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(
    model: MedMPLMForPretraining, prepared: Path, tmp_path: Path
) -> None:
    batch = masked_batch(model, prepared)
    model.eval()
    (tmp_path / "train_config.yaml").write_text("lr: 0.001\n")
    model.save_pretrained(tmp_path)
    loaded = MedMPLMForPretraining.from_pretrained(tmp_path)
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    assert torch.equal(expected.loss, got.loss)
    assert torch.equal(expected.model_output.visit_embedding, got.model_output.visit_embedding)
    assert same_config(loaded.config, model.config) and loaded.diagnosis_vocab == model.diagnosis_vocab
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert (tmp_path / "train_config.yaml").read_text() == "lr: 0.001\n"
    # The Auto classes know MedM-PLM: the library's own loading gives the same model.
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is MedMPLMForPretraining
    assert type(AutoModel.from_pretrained(tmp_path)) is MedMPLMModel
    # The encoder alone loads from a pretraining directory, without the heads.
    encoder = MedMPLMModel.from_pretrained(tmp_path)
    inputs = {k: v for k, v in batch.items() if not k.endswith("_labels")}
    with torch.no_grad():
        assert torch.equal(encoder(**inputs).visit_embedding, expected.model_output.visit_embedding)
    # Saving again over the same directory works.
    loaded.save_pretrained(tmp_path)
    assert same_config(MedMPLMForPretraining.from_pretrained(tmp_path).config, model.config)


def test_the_configuration_carries_vocabularies_and_ontologies(model: MedMPLMForPretraining, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vocabularies"]["diagnosis"] == model.diagnosis_vocab.codes
    assert set(saved["ontologies"]["medication"]) <= set(model.medication_vocab.codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # A vocabulary edited out of step with the weights is refused, naming the weights that no longer fit.
    saved["vocabularies"]["diagnosis"] = saved["vocabularies"]["diagnosis"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="do not fit the model config.json describes"):
        MedMPLMForPretraining.from_pretrained(tmp_path)


def test_no_code_path_unpickles() -> None:
    sources = [p.read_text() for p in MODELS_DIR.rglob("*.py")]
    sources += [(MODELS_DIR.parent / "data" / name).read_text() for name in ("vocab.py", "features.py", "masking.py")]
    for text in sources:
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, call
        assert not re.search(r"\bimport pickle\b|pickle\.loads?\(", text)


def test_summary_prints_parts(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary_main(["--preset", "tiny", "--prepared", str(prepared), "--set", "text_max_length=64"])
    printed = capsys.readouterr().out
    assert "cross-modal module" in printed and "text layers 1-1 (frozen)" in printed
    total_line = [line for line in printed.splitlines() if line.startswith("total")][0]
    total, trainable = (int(x.replace(",", "")) for x in total_line.split()[1:])
    assert 0 < trainable < total


def test_bfloat16_model_gives_finite_losses(model: MedMPLMForPretraining, prepared: Path) -> None:
    batch = masked_batch(model, prepared)
    half = copy.deepcopy(model).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = half(**batch)
    assert out.loss.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert torch.isfinite(out.model_output.visit_embedding).all()



def test_models_built_on_one_prepared_directory_share_one_trained_tokenizer(tmp_path: Path, monkeypatch) -> None:
    # Training twice on the same notes numbers tokens differently (hash-map tie-breaking in `tokenizers`); two fresh
    # runs must nevertheless start from the same token ids.
    from medmplm.models import tokenization

    prepared = write_tiny_prepared_dir(tmp_path / "prepared")
    config = MedMPLMConfig.from_preset("tiny")
    first = build_medmplm(MedMPLMForPretraining, prepared, config).tokenizer.get_vocab()

    def no_training(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again instead of reused")

    monkeypatch.setattr(tokenization, "train_wordpiece_tokenizer", no_training)
    second = build_medmplm(MedMPLMForPretraining, prepared, config).tokenizer.get_vocab()
    assert second == first
    assert [p.name for p in (prepared / "tokenizers").iterdir()] == [f"wordpiece-{config.text_vocab_size}-{config.text_max_length}"]
