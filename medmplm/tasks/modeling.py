"""Fine-tuning heads: any visit encoder + pooling over visits + an MLP, returning a typed output with ``.loss``.

A *visit encoder* (MedM-PLM, its unimodal parts, or a baseline) maps a batch of single visits to a text vector and/or
a code vector and declares which modalities it reads (``modalities``). :class:`FineTuningModel` does the rest the same
way for every encoder:

1. encode the real visits of each example (padding slots are never encoded);
2. zero a modality's vector on visits that do not show it (no note; no code), so a missing modality is exactly 0;
3. pool: for each modality, the mean over the earlier visits that show it (MedM-PLM eq. 11: a visit without a note
   adds nothing to the text history, rather than a zero that drags the mean down); when no earlier visit shows it, a
   learned "no history" vector of that modality stands in (the head can tell "no notes before" from a note whose
   encoding happens to be small). An encoder may replace this pooling with its own ``summarize_history`` (e.g. the
   GRU baseline). Concatenated with the target visit's vectors of the modalities the task shows for it;
4. an MLP gives one logit per label; the loss is binary cross-entropy on the sigmoid (eqs. 12-16).

A *patient-level* encoder (M-BEHRT, ``medmplm.tasks.patient``) reads each example's history as one sequence instead
and gives one vector per example: :class:`PatientFineTuningModel` puts the same MLP on it, without steps 1-3.

A model built by :func:`build_finetuning_model` knows the ``--model`` name and the backbones it came from, so it can
``save_pretrained`` / ``from_pretrained`` itself (safetensors and JSON only; nothing is unpickled)::

    <dir>/config.json          model name, head, which backbone directory plays which role (written last)
    <dir>/model.safetensors    every weight of the fine-tuning model
    <dir>/backbone/            the code-side backbone's ``config.json`` (a MedM-PLM, G-BERT or Med-BERT model:
                               architecture, vocabularies and ontology) and a MedM-PLM's tokenizer; no weights
    <dir>/text_backbone/       only when the text side comes from a different backbone (a MedM-PLM)

A backbone directory holds no weights: the encoder's weights are all in ``model.safetensors``, and the parts of a
backbone the encoder never reads (the BERT of a code-only model, the code encoder of a text-only one) are not worth
storing in every checkpoint. Loading builds each backbone from its config with ``transformers.AutoModel`` and then
loads ``model.safetensors`` over the encoder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.utils import ModelOutput

from medmplm.models import MedMPLMModel
from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer
from medmplm.tasks.encoders import build_encoder, model_spec
from medmplm.tasks.encoding import MODALITIES

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "medmplm-finetune"
# 2: backbone directories hold configs only.
FORMAT_VERSION = 2
BACKBONE_ROLES = ("code", "text")


@dataclass
class FineTuningOutput(ModelOutput):
    """Output of :class:`FineTuningModel`.

    Attributes:
        loss: scalar binary cross-entropy, when labels are given.
        logits: ``[B, K]`` for a multi-label task, ``[B]`` for a binary one.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class HeadConfig:
    """Shape of the task head.

    Attributes:
        num_labels: K outputs (1 for a binary task, whose logits are then ``[B]``).
        has_history: the examples carry earlier visits before the target (medication recommendation).
        target_modalities: modalities the task shows for the target visit (medrec: codes only).
        hidden_size: width of the MLP's hidden layer.
        dropout: dropout before each MLP layer.
    """

    num_labels: int
    has_history: bool
    target_modalities: frozenset[str]
    hidden_size: int = 128
    dropout: float = 0.1


class FineTuningModel(nn.Module):
    """A visit encoder with a task head (see the module docstring).

    Args:
        encoder: the visit encoder (an ``nn.Module`` following ``medmplm.tasks.encoding.VisitEncoder``).
        head: the task head's shape.
        model_name: the ``--model`` name the encoder was built as (needed to save).
        backbones: role (``code``, ``text``) -> the backbone the encoder was built from (needed to save): a MedM-PLM,
            or for the code side of ``gbert`` / ``medbert`` models that family's model.

    Attributes:
        no_history: per modality, the learned vector pooled for an example whose earlier visits never show that
            modality (only with history pooling by mean; saved with the other weights).
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: HeadConfig,
        model_name: str | None = None,
        backbones: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        # A plain dict, not a ModuleDict: the backbones' modules are registered through the encoder already (or
        # unused by it), and must not appear twice in the state dict.
        self._backbones = dict(backbones or {})
        unknown = set(encoder.modalities) - set(MODALITIES)
        if not encoder.modalities or unknown:
            raise ValueError(f"encoder modalities must be a non-empty subset of {MODALITIES}, got {encoder.modalities}")
        self.encoder = encoder
        self.head_config = head
        self._summarize: Callable | None = getattr(encoder, "summarize_history", None)
        self._target_modalities = [m for m in MODALITIES if m in encoder.modalities and m in head.target_modalities]
        width = self._feature_width()
        if width == 0:
            raise ValueError(
                f"the encoder reads {sorted(encoder.modalities)} but the task shows none of them: nothing to predict"
            )
        self.classifier = nn.Sequential(
            nn.Dropout(head.dropout),
            nn.Linear(width, head.hidden_size),
            nn.ReLU(),
            nn.Dropout(head.dropout),
            nn.Linear(head.hidden_size, head.num_labels),
        )
        self.no_history = nn.ParameterDict()
        if self._learns_no_history():
            for modality in MODALITIES:
                if modality in encoder.modalities:
                    self.no_history[modality] = nn.Parameter(torch.empty(self._size(modality)).normal_(std=0.02))

    def _feature_width(self) -> int:
        """Width of the classifier's input: the target visit's vectors and the history's."""
        width = sum(self._size(m) for m in self._target_modalities)
        if self.head_config.has_history:
            if self._summarize is not None:
                width += int(self.encoder.history_size)
            else:
                width += sum(self._size(m) for m in MODALITIES if m in self.encoder.modalities)
        return width

    def _learns_no_history(self) -> bool:
        """Whether the history is pooled by mean, with a learned vector for a modality no earlier visit shows."""
        return self.head_config.has_history and self._summarize is None

    def _size(self, modality: str) -> int:
        return int(self.encoder.text_size if modality == "text" else self.encoder.code_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_note: torch.Tensor,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        visit_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> FineTuningOutput:
        """Logits (and the loss, given labels) for a batch of examples; shapes as ``ExampleFeaturizer`` gives them."""
        batch_size, num_visits = visit_mask.shape
        real = visit_mask.reshape(-1).bool()

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch_size * num_visits, *x.shape[2:])[real]

        encoding = self.encoder(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            has_note=flat(has_note),
            diag_ids=flat(diag_ids),
            diag_mask=flat(diag_mask),
            med_ids=flat(med_ids),
            med_mask=flat(med_mask),
        )
        # [CLS] is position 0 of each code sequence; a visit shows codes when any position after it is set.
        shows = {
            "text": flat(has_note).bool(),
            "codes": flat(diag_mask)[:, 1:].any(dim=1) | flat(med_mask)[:, 1:].any(dim=1),
        }
        per_visit: dict[str, torch.Tensor] = {}
        shown_per_visit: dict[str, torch.Tensor] = {}
        for modality in MODALITIES:
            vectors = encoding.text if modality == "text" else encoding.codes
            if modality not in self.encoder.modalities:
                continue
            if vectors is None:
                raise ValueError(f"{type(self.encoder).__name__} declares modality {modality!r} but returned no vector")
            vectors = vectors * shows[modality].unsqueeze(-1).to(vectors.dtype)
            grid = vectors.new_zeros(batch_size * num_visits, vectors.shape[-1])
            grid[real] = vectors
            per_visit[modality] = grid.reshape(batch_size, num_visits, -1)
            shown = shows[modality].new_zeros(batch_size * num_visits)
            shown[real] = shows[modality]
            shown_per_visit[modality] = shown.reshape(batch_size, num_visits)

        features = []
        if self.head_config.has_history:
            if self._summarize is not None:
                features.append(
                    self._summarize(
                        per_visit["codes"][:, :-1] if "codes" in per_visit else None,
                        per_visit["text"][:, :-1] if "text" in per_visit else None,
                        visit_mask[:, :-1].to(next(iter(per_visit.values())).dtype),
                    )
                )
            else:
                for modality in MODALITIES:
                    if modality in per_visit:
                        history = per_visit[modality][:, :-1]
                        # Vectors of visits that do not show the modality are 0 already: the sum is over those that do.
                        count = shown_per_visit[modality][:, :-1].sum(dim=1, keepdim=True)
                        mean = history.sum(dim=1) / count.clamp(min=1).to(history.dtype)
                        features.append(torch.where(count > 0, mean, self.no_history[modality].to(mean.dtype)))
        features.extend(per_visit[m][:, -1] for m in self._target_modalities)
        logits = self.classifier(torch.cat(features, dim=-1))
        if self.head_config.num_labels == 1:
            logits = logits.squeeze(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return FineTuningOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the model (layout in the module docstring); ``config.json`` goes last, so an interrupted save never
        looks complete. Other files in the directory are left alone.

        Raises:
            ValueError: for a model not built by :func:`build_finetuning_model` (no name or backbones to rebuild from).
        """
        if self.model_name is None or set(self._backbones) != set(BACKBONE_ROLES):
            raise ValueError(
                "only a model built by build_finetuning_model can be saved (it needs its name and backbones)"
            )
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target))
        try:
            shared = self._backbones["code"] is self._backbones["text"]
            directories = {"code": "backbone", "text": "backbone" if shared else "text_backbone"}
            for role in BACKBONE_ROLES:
                if not (staging / directories[role]).exists():
                    _save_backbone_config(self._backbones[role], staging / directories[role])
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, staging / WEIGHTS_FILE, metadata={"format": "pt"})
            config = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "model_name": self.model_name,
                "head": {
                    **dataclasses.asdict(self.head_config),
                    "target_modalities": sorted(self.head_config.target_modalities),
                },
                "backbones": directories,
            }
            (target / CONFIG_FILE).unlink(missing_ok=True)
            for name in {WEIGHTS_FILE, *directories.values()}:
                destination = target / name
                if destination.is_dir():
                    shutil.rmtree(destination)
                os.replace(staging / name, destination)
            tmp = target / f".{CONFIG_FILE}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, target / CONFIG_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FineTuningModel:
        """Load a model written by :meth:`save_pretrained`, in eval mode (weights via safetensors).

        Raises:
            FileNotFoundError: when ``config.json`` is missing (not a fine-tuned model, or an interrupted save).
            ValueError: naming the file when it is not this format or the weights do not fit.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path}: missing; not a fine-tuned model directory (or its save was interrupted)"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path}: format {config.get('format')!r} version {config.get('format_version')!r}, "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        loaded = {name: _backbone_from_config(directory / name) for name in set(config["backbones"].values())}
        backbones = {role: loaded[name] for role, name in config["backbones"].items()}
        head = HeadConfig(**{**config["head"], "target_modalities": frozenset(config["head"]["target_modalities"])})
        model = build_finetuning_model(config["model_name"], head, backbones["code"], backbones["text"])
        try:
            model.load_state_dict(load_file(directory / WEIGHTS_FILE, device="cpu"), strict=True)
        except RuntimeError as err:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not fit model {config['model_name']!r}: {err}") from None
        model.eval()
        return model


class PatientFineTuningModel(FineTuningModel):
    """A patient-level encoder (``medmplm.tasks.patient``) with the task head: the encoder reads each example as one
    patient history (the earlier visits and as much of the target visit as the task shows, laid out by its own
    featuriser) and gives one patient vector, which the MLP reads; nothing is pooled over visits. Saved and loaded as
    :class:`FineTuningModel` (:func:`build_finetuning_model` picks the class by the ``--model`` name)."""

    def _feature_width(self) -> int:
        return int(self.encoder.patient_size)

    def _learns_no_history(self) -> bool:
        return False

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> FineTuningOutput:
        """Logits (and the loss, given labels: binary cross-entropy plus the encoder's auxiliary loss, if any) for a
        batch of examples; ``inputs`` are the patient featuriser's columns."""
        encoding = self.encoder(**inputs)
        logits = self.classifier(encoding.patient)
        if self.head_config.num_labels == 1:
            logits = logits.squeeze(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            if encoding.auxiliary_loss is not None:
                loss = loss + encoding.auxiliary_loss
        return FineTuningOutput(loss=loss, logits=logits)


def _save_backbone_config(backbone: nn.Module, directory: Path) -> None:
    backbone.config.save_pretrained(directory)
    tokenizer = getattr(backbone, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def _backbone_from_config(directory: Path) -> nn.Module:
    """A backbone with fresh weights from the config saved by :func:`_save_backbone_config`, tokenizer attached."""
    model = AutoModel.from_config(AutoConfig.from_pretrained(directory, local_files_only=True))
    if (directory / TOKENIZER_MARKER).is_file():
        model.tokenizer = load_tokenizer(directory)
    return model


def head_config_for(task, num_labels: int, hidden_size: int = 128, dropout: float = 0.1) -> HeadConfig:
    """The head shape a task needs: history pooling when its examples have more than one visit slot."""
    return HeadConfig(
        num_labels=num_labels,
        has_history=task.max_visits > 1,
        target_modalities=frozenset(task.target_modalities),
        hidden_size=hidden_size,
        dropout=dropout,
    )


def build_finetuning_model(
    model_name: str, head: HeadConfig, code_backbone: nn.Module, text_backbone: MedMPLMModel | None = None
) -> FineTuningModel:
    """The fine-tuning model ``--model model_name`` over the given backbones (``text_backbone`` defaults to the code
    one), with the task head ``head``."""
    text_backbone = text_backbone if text_backbone is not None else code_backbone
    encoder = build_encoder(model_name, code_backbone, text_backbone)
    model_class = PatientFineTuningModel if model_spec(model_name).patient_level else FineTuningModel
    return model_class(encoder, head, model_name, {"code": code_backbone, "text": text_backbone})
