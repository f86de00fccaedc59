"""The tiny model can memorise a handful of masked visits: T2C and C2C accuracies reach 1."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from medmplm.data.features import VisitFeaturizer
from medmplm.data.masking import CodeMasker
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
from medmplm.models.testing_utils import read_split_batch, write_tiny_prepared_dir
from medmplm.pretraining.medmplm import build_medmplm

STEPS = 60


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each
    # step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_a_handful_of_visits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    prepared = write_tiny_prepared_dir(tmp_path, num_visits=8, missing_every=0)
    config = MedMPLMConfig.from_preset("tiny", text_max_length=32, max_codes=8, text_dropout=0.0, code_dropout=0.0)
    model = build_medmplm(MedMPLMForPretraining, prepared, config)
    arrays = VisitFeaturizer.from_model(model)(read_split_batch(prepared))
    # One fixed masking: the classic "can it fit one batch" check of the whole path, input to loss.
    batch = CodeMasker.from_model(model)(
        {k: torch.from_numpy(v) for k, v in arrays.items()}, torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = model(**batch)
    model.train()
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch)
    assert float(after.loss) < 0.2 * float(before.loss)
    for name, accuracy in after.accuracies.items():
        assert int(after.target_counts[name]) > 0
        assert float(accuracy) > 0.95, (name, float(accuracy), float(before.accuracies[name]))
