"""The model library on the real prepare pipeline's output (synthetic MIMIC-III): the data contract holds end to end."""

from pathlib import Path

import pytest
import torch

from medmplm.data.features import VisitFeaturizer
from medmplm.data.masking import CodeMasker
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
from medmplm.models.testing_utils import read_split_batch
from medmplm.pretraining.medmplm import build_medmplm


@pytest.mark.slow
def test_tiny_model_on_a_prepared_synthetic_mimic(synthetic_prepared: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_medmplm(MedMPLMForPretraining, synthetic_prepared, MedMPLMConfig.from_preset("tiny"))
    for code_type, tree in model.medmplm.code_encoder.embeddings.ontology.items():
        assert tree.tree.codes_without_ancestors == 0, code_type
    batch = read_split_batch(synthetic_prepared, "train")
    arrays = VisitFeaturizer.from_model(model)(batch)
    assert arrays["has_note"].sum() > 0 and arrays["diag_mask"][:, 1:].sum() > 0 and arrays["med_mask"][:, 1:].sum() > 0
    assert arrays["diag_unknown"].sum() == 0  # every training code is in the vocabulary built from training counts
    inputs = CodeMasker.from_model(model)(
        {k: torch.from_numpy(v[:64]) for k, v in arrays.items()}, torch.Generator().manual_seed(0)
    )
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = MedMPLMForPretraining.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).loss, model(**inputs).loss)
