"""The fine-tuning models of the comparison grid (``--model``), as visit encoders for :class:`FineTuningModel`.

Every model is built from *backbones*, one per side:

* the code side: a MedM-PLM (``medmplm.models.MedMPLMModel``: ``--init``, or built from the prepared directory), or,
  for ``gbert`` and ``medbert``, the family's own model (``--init-code``: a ``gbert`` / ``medbert`` pretraining export;
  none: freshly initialised from the prepared directory's vocabularies);
* the text side: the same MedM-PLM, or ``--init-text``: a MedM-PLM export (its text part), or for ``clinicalbert`` a
  ``bert-mlm`` export or any local BERT checkpoint (none: a freshly initialised BERT).

The MedM-PLM backbones also fix the tokenizer and code vocabularies, hence the featurisation, so every model of one
comparison reads identical arrays (a ``gbert`` / ``medbert`` export must have the prepared directory's vocabularies).

===============================  =============  ==============================================================
name                             reads          representation of a visit
===============================  =============  ==============================================================
``medmplm``                      text + codes   ``R_text`` at [CLS] (pooled over a note's windows); ``R_code``
                                                at the diagnosis and medication [CLS]
``medmplm-nocross``              text + codes   MedM-PLM's encoders without the cross-modal module
``medmplm-code``                 codes          MedM-PLM's code encoder alone (ablation: its code part)
``medmplm-text``                 text           MedM-PLM's text encoder alone (ablation: its text part): its
                                                [CLS] state, pooled over a note's windows
``gbert``                        codes          G-BERT (ontology GAT + Transformer), pretrained on its own
                                                (``gbert`` family) or not
``medbert``                      codes          Med-BERT (code + serialization + visit embeddings), pretrained
                                                on patient sequences (``medbert`` family) or not; one visit is
                                                encoded as a one-visit sequence
``clinicalbert``                 text           a BERT's [CLS] state, MLM-pretrained on the notes (``bert-mlm``
                                                family) or not
``rnn``                          codes          multi-hot visit embeddings, GRU over earlier visits
``cnn``                          text           1-D CNN over note tokens
``logreg``                       codes          scikit-learn logistic regression over multi-hot codes (no torch)
``gbert+clinicalbert``           text + codes   the two, concatenated (Table III's G-BERT + ClinicalBERT)
``medbert+clinicalbert``         text + codes   the same with Med-BERT
``medmplm-code+medmplm-text``    text + codes   MedM-PLM's two parts, each from its own backbone, concatenated
``medfuse``, ``medfuse-*``       labs + text    MEDFuse and its ablations, ``disease10`` only (the task builds them:
                                                ``medmplm.tasks.medfuse``)
``mbehrt-early``, ``-late``,     text + codes   M-BEHRT, patient-level: the whole history before the target
``-shared``                                     (codes, labs, notes; early, late or shared-attention fusion)
                                                is one sequence, one patient vector (``medmplm.tasks.patient``)
``mbehrt-tabular``               codes          M-BEHRT's tabular BEHRT alone (codes and labs)
``mbehrt-text``                  text           M-BEHRT's text BEHRT alone, its BERT from ``--init-text``
===============================  =============  ==============================================================

A note read in several windows (``text_long_note="windows"``) gives one [CLS] state per window; the text vector pools
them as the backbone's ``text_window_pooling`` says (``mean``, or ``attention`` with a score trained with the task).

The ``ner`` task reads sentences, not visits, and has models of its own (``medmplm.tasks.ner``,
``medmplm.models.ner``): ``bilstm-crf`` (word embeddings from scratch), ``bilstm-crf+bert`` (a BERT's token states,
``--init-text``: a ``bert-mlm`` export or a local BERT) and ``bilstm-crf+medmplm`` (MedM-PLM's text component's states,
``--init``). Their specs say ``task="ner"`` and build no visit encoder.

Which weights a run started from is recorded with its result (``medmplm.tasks.runner``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medmplm.models import MedMPLMModel
from medmplm.models.baselines import MultiHotLogisticRegression, TextCNNEncoder, VisitGRUEncoder
from medmplm.models.text_encoder import WindowPooling, window_starts
from medmplm.tasks.encoding import VisitEncoding
from medmplm.tasks.patient import MBehrtPatientEncoder


class MedMPLMEncoder(nn.Module):
    """MedM-PLM with its cross-modal module: the fused [CLS] states of the note and of both code sequences."""

    modalities = frozenset({"text", "codes"})

    def __init__(self, backbone: MedMPLMModel) -> None:
        super().__init__()
        self.medmplm = backbone
        self.text_pooling = WindowPooling(backbone.config.code_hidden_size, backbone.config.text_window_pooling)
        self.text_size = backbone.config.code_hidden_size
        self.code_size = 2 * backbone.config.code_hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_note: torch.Tensor,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
    ) -> VisitEncoding:
        """``text [N, H_code]`` (R_text) and ``codes [N, 2 H_code]`` (R_code of diagnoses, medications)."""
        out = self.medmplm(
            diag_ids=diag_ids,
            diag_mask=diag_mask,
            med_ids=med_ids,
            med_mask=med_mask,
            attention_mask=attention_mask,
            input_ids=input_ids,
            has_note=has_note,
        )
        return VisitEncoding(
            text=self.text_pooling(out.text_window_states, out.text_window_mask),
            codes=torch.cat([out.diagnosis_fused[:, 0], out.medication_fused[:, 0]], dim=-1),
        )


class CodeOnlyEncoder(nn.Module):
    """MedM-PLM's code encoder alone (``medmplm-code``): the [CLS] states of the diagnosis and medication sequences."""

    modalities = frozenset({"codes"})
    text_size = 0

    def __init__(self, backbone: MedMPLMModel) -> None:
        super().__init__()
        self.code_encoder = backbone.code_encoder
        self.code_size = 2 * backbone.config.code_hidden_size

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        **text_inputs: torch.Tensor,
    ) -> VisitEncoding:
        """``codes [N, 2 H_code]``; text inputs are accepted and not read."""
        diagnoses, medications = self.code_encoder(diag_ids, diag_mask, med_ids, med_mask)
        return VisitEncoding(codes=torch.cat([diagnoses[:, 0], medications[:, 0]], dim=-1))


class TextOnlyEncoder(nn.Module):
    """MedM-PLM's text encoder alone (``medmplm-text``): the note's [CLS] state (pooled over its windows)."""

    modalities = frozenset({"text"})
    code_size = 0

    def __init__(self, backbone: MedMPLMModel) -> None:
        super().__init__()
        self.text_encoder = backbone.text_encoder
        self.window_length = backbone.config.text_max_length
        self.text_size = backbone.text_encoder.hidden_size
        self.text_pooling = WindowPooling(self.text_size, backbone.config.text_window_pooling)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **code_inputs: torch.Tensor
    ) -> VisitEncoding:
        """``text [N, H_text]``; code inputs are accepted and not read."""
        states = self.text_encoder(input_ids, attention_mask, window_length=self.window_length)
        return VisitEncoding(text=self.text_pooling(*window_starts(states, attention_mask, self.window_length)))


class ConcatEncoder(nn.Module):
    """Two unimodal encoders side by side: the text vector of one, the code vector of the other."""

    def __init__(self, code_encoder: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        if code_encoder.modalities != {"codes"} or text_encoder.modalities != {"text"}:
            raise ValueError("ConcatEncoder joins a code-only encoder and a text-only encoder")
        self.code_encoder = code_encoder
        self.text_encoder = text_encoder
        self.modalities = frozenset({"text", "codes"})
        self.text_size = text_encoder.text_size
        self.code_size = code_encoder.code_size

    def forward(self, **inputs: torch.Tensor) -> VisitEncoding:
        """The text vector of ``text_encoder`` and the code vector of ``code_encoder``."""
        return VisitEncoding(text=self.text_encoder(**inputs).text, codes=self.code_encoder(**inputs).codes)


class FamilyCodeEncoder(nn.Module):
    """A code model of another pretraining family (G-BERT, Med-BERT) as a visit encoder: its visit vector.

    Args:
        model: a ``GBertModel`` (visit vector: ``forward(...).visit_embedding``) or a ``MedBertModel``
            (``encode_visits``).
    """

    modalities = frozenset({"codes"})
    text_size = 0

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.code_size = 2 * config.code_hidden_size if config.model_type == "gbert" else model.visit_embedding_size

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        **text_inputs: torch.Tensor,
    ) -> VisitEncoding:
        """``codes [N, code_size]``; text inputs are accepted and not read."""
        if self.model.config.model_type == "gbert":
            return VisitEncoding(codes=self.model(diag_ids, diag_mask, med_ids, med_mask).visit_embedding)
        return VisitEncoding(codes=self.model.encode_visits(diag_ids, diag_mask, med_ids, med_mask))


def _rnn(backbone: MedMPLMModel) -> VisitGRUEncoder:
    return VisitGRUEncoder(
        len(backbone.diagnosis_vocab), len(backbone.medication_vocab), hidden_size=backbone.config.code_hidden_size
    )


def _cnn(backbone: MedMPLMModel) -> TextCNNEncoder:
    tokenizer = backbone.tokenizer
    return TextCNNEncoder(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        embedding_size=backbone.config.text_hidden_size,
        dropout=backbone.config.text_dropout,
    )


def _mbehrt(backbone: nn.Module, text: MedMPLMModel) -> MBehrtPatientEncoder:
    # The M-BEHRT backbone reads both sides itself.
    return MBehrtPatientEncoder(backbone)


@dataclass(frozen=True)
class ModelSpec:
    """One ``--model`` entry.

    Attributes:
        modalities: what the model reads.
        code_backbone: the kind of code-side backbone whose weights enter the model: ``medmplm`` (``--init``),
            ``gbert`` or ``medbert`` (``--init-code``), or ``None`` (trained from scratch, or reads no codes).
        text_backbone: the kind of text-side backbone whose weights enter the model: ``medmplm`` (``--init`` or a
            MedM-PLM ``--init-text``), ``bert`` (a ``bert-mlm`` export or BERT checkpoint as ``--init-text``), or
            ``None``.
        build: ``(code_backbone, text_backbone) -> encoder module``; ``None`` for the scikit-learn model and for the
            models of a task that builds its own (``task``).
        task: the one task the model serves, which builds it (``ner``); ``None``: a visit encoder for every visit task.
        patient_level: the encoder reads each example as one patient history (M-BEHRT, ``medmplm.tasks.patient``),
            from its own featuriser, rather than visit by visit; its backbone (``code_backbone`` an ``mbehrt-*``
            kind, or for ``mbehrt-text`` a ``bert`` text side) is an M-BEHRT.
    """

    modalities: frozenset[str]
    code_backbone: str | None
    text_backbone: str | None
    build: Callable[[nn.Module, MedMPLMModel], nn.Module] | None
    task: str | None = None
    patient_level: bool = False

    @property
    def trains_in_loop(self) -> bool:
        """The model trains in the shared loop with a learning rate (every torch model; not ``logreg``)."""
        return self.build is not None or self.task is not None


TEXT_AND_CODES = frozenset({"text", "codes"})
CODES = frozenset({"codes"})
TEXT = frozenset({"text"})
# MEDFuse reads lab tests, a modality of its own models only.
LABS = frozenset({"labs"})
LABS_AND_TEXT = frozenset({"labs", "text"})

MODELS: dict[str, ModelSpec] = {
    "medmplm": ModelSpec(TEXT_AND_CODES, "medmplm", "medmplm", lambda code, text: MedMPLMEncoder(code)),
    "medmplm-nocross": ModelSpec(
        TEXT_AND_CODES,
        "medmplm",
        "medmplm",
        lambda code, text: ConcatEncoder(CodeOnlyEncoder(code), TextOnlyEncoder(code)),
    ),
    "medmplm-code": ModelSpec(CODES, "medmplm", None, lambda code, text: CodeOnlyEncoder(code)),
    "medmplm-text": ModelSpec(TEXT, None, "medmplm", lambda code, text: TextOnlyEncoder(text)),
    "gbert": ModelSpec(CODES, "gbert", None, lambda code, text: FamilyCodeEncoder(code)),
    "medbert": ModelSpec(CODES, "medbert", None, lambda code, text: FamilyCodeEncoder(code)),
    "clinicalbert": ModelSpec(TEXT, None, "bert", lambda code, text: TextOnlyEncoder(text)),
    "rnn": ModelSpec(CODES, None, None, lambda code, text: _rnn(code)),
    "cnn": ModelSpec(TEXT, None, None, lambda code, text: _cnn(text)),
    "logreg": ModelSpec(CODES, None, None, None),
    "gbert+clinicalbert": ModelSpec(
        TEXT_AND_CODES,
        "gbert",
        "bert",
        lambda code, text: ConcatEncoder(FamilyCodeEncoder(code), TextOnlyEncoder(text)),
    ),
    "medbert+clinicalbert": ModelSpec(
        TEXT_AND_CODES,
        "medbert",
        "bert",
        lambda code, text: ConcatEncoder(FamilyCodeEncoder(code), TextOnlyEncoder(text)),
    ),
    "medmplm-code+medmplm-text": ModelSpec(
        TEXT_AND_CODES,
        "medmplm",
        "medmplm",
        lambda code, text: ConcatEncoder(CodeOnlyEncoder(code), TextOnlyEncoder(text)),
    ),
    "mbehrt-early": ModelSpec(TEXT_AND_CODES, "mbehrt-early", None, _mbehrt, patient_level=True),
    "mbehrt-late": ModelSpec(TEXT_AND_CODES, "mbehrt-late", None, _mbehrt, patient_level=True),
    "mbehrt-shared": ModelSpec(TEXT_AND_CODES, "mbehrt-shared", None, _mbehrt, patient_level=True),
    "mbehrt-tabular": ModelSpec(CODES, "mbehrt-tabular", None, _mbehrt, patient_level=True),
    "mbehrt-text": ModelSpec(TEXT, None, "bert", _mbehrt, patient_level=True),
    # MEDFuse on disease10 (medmplm.tasks.medfuse): its lab encoder from a medfuse-lab export, its notes through a
    # language model (the "bert" kind: a bert-mlm export or any local checkpoint); the task builds the model.
    **{
        name: ModelSpec(modalities, "medfuse-lab" if "labs" in modalities else None, text, None, task="disease10")
        for name, modalities, text in (
            ("medfuse", LABS_AND_TEXT, "bert"),
            ("medfuse-labs", LABS, None),
            ("medfuse-notes", TEXT, "bert"),
            ("medfuse-concat", LABS_AND_TEXT, "bert"),
            ("medfuse-no-infonce", LABS_AND_TEXT, "bert"),
            ("medfuse-no-independence", LABS_AND_TEXT, "bert"),
        )
    },
    "bilstm-crf": ModelSpec(TEXT, None, None, None, task="ner"),
    "bilstm-crf+bert": ModelSpec(TEXT, None, "bert", None, task="ner"),
    "bilstm-crf+medmplm": ModelSpec(TEXT, None, "medmplm", None, task="ner"),
}


def model_spec(name: str) -> ModelSpec:
    """The spec of ``--model name``.

    Raises:
        ValueError: naming the accepted models.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


def models_for(task: str) -> list[str]:
    """The models of ``task``: its own (``ModelSpec.task``) when it has some, else the visit models. A visit task with
    models of its own (``disease10``: the MEDFuse models) takes its own first, then the visit models that read a
    modality it shows (a code-only model has nothing to read in a task that shows only the note)."""
    from medmplm.tasks import TASKS

    own = [name for name, spec in MODELS.items() if spec.task == task]
    visit = [name for name, spec in MODELS.items() if spec.task is None]
    task_class = TASKS.get(task)
    if not own or task_class is None or not callable(getattr(task_class, "build_examples", None)):
        return own or visit
    return own + [name for name in visit if MODELS[name].modalities & task_class.target_modalities]


def build_encoder(name: str, code_backbone: nn.Module, text_backbone: MedMPLMModel | None = None) -> nn.Module:
    """The visit encoder of ``--model name`` (not ``logreg``: see :func:`build_logistic_regression`)."""
    spec = model_spec(name)
    if spec.task is not None:
        raise ValueError(f"model {name!r} is not a visit encoder; the {spec.task} task builds it")
    if spec.build is None:
        raise ValueError(f"model {name!r} is not a torch module; build it with build_logistic_regression")
    return spec.build(code_backbone, text_backbone if text_backbone is not None else code_backbone)


def build_logistic_regression(
    backbone: MedMPLMModel, multilabel: bool, c: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> MultiHotLogisticRegression:
    """The ``logreg`` model over the backbone's code vocabularies."""
    return MultiHotLogisticRegression(
        len(backbone.diagnosis_vocab), len(backbone.medication_vocab), multilabel, c=c, max_iter=max_iter, seed=seed
    )
