"""Fixtures of M-BEHRT's tests: a small schema-2 prepared directory of multi-visit patients with ages, genders,
procedures and lab events, a tiny configuration with a word-level tokenizer, and hand-built visit records.

It writes the *output* of the prepare pipeline directly (``medmplm.data.schema`` layout). Codes carry their system
prefix; notes are short made-up phrases naming the visit's diagnoses (no clinical text). The signal is planted so that
a tiny model learns something in a few steps: a patient's chronic conditions recur at their next visits, heart failure
raises creatinine, readmission follows heart failure.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerFast

from medmplm.data.schema import MANIFEST_FILE, ONTOLOGY_DIR, SCHEMA_VERSION, SPLITS, VISIT_SCHEMA, VISITS_DIR, VOCAB_DIR
from medmplm.data.vocab_io import write_vocab
from medmplm.ontology import build_ontology, write_ontology

if TYPE_CHECKING:
    from medmplm.models.mbehrt import MBehrtConfig

# Diagnosis -> (word in the note, its medications).
DIAGNOSES = {
    "ICD9CM:4280": ("heartfailure", ("C03C", "C07A")),
    "ICD9CM:4019": ("hypertension", ("C07A",)),
    "ICD9CM:25000": ("diabetes", ("A10B",)),
    "ICD9CM:486": ("pneumonia", ("J01D",)),
    "ICD9CM:5849": ("kidneyinjury", ("B05X",)),
    "ICD9CM:E8809": ("fall", ("N02B",)),
}
CHRONIC = ("ICD9CM:4280", "ICD9CM:4019", "ICD9CM:25000")
PROCEDURES = ("ICD9Proc:3893", "ICD9Proc:9604")
# Lab item -> (normal mean, standard deviation).
LABS = {"50912": (1.0, 0.2), "50971": (4.2, 0.4), "51222": (12.0, 1.5)}


def write_patient_prepared_dir(
    path: str | os.PathLike, patients: tuple[int, int, int] = (24, 6, 6), seed: int = 0
) -> Path:
    """Write a prepared directory of ``patients`` per split (train, val, test), each with 1 to 4 visits.

    About one visit in six has no note, one lab event in ten has no numeric value, one patient in eight has no gender
    and no age.

    Returns:
        The directory.
    """
    root = Path(path)
    rng = np.random.default_rng(seed)
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in ("diagnosis", "procedure", "medication", "lab")}
    subject_id, hadm_id = 1, 100
    for split, num_patients in zip(SPLITS, patients, strict=True):
        rows = []
        for _ in range(num_patients):
            num_visits = int(rng.integers(1, 5))
            admit = datetime(2150, 1, 1) + timedelta(days=int(rng.integers(0, 300)))
            anonymous = rng.random() < 0.125
            gender = None if anonymous else str(rng.choice(["F", "M"]))
            age = None if anonymous else float(rng.integers(40, 95))
            chronic = [code for code in CHRONIC if rng.random() < 0.4]
            for visit in range(num_visits):
                acute = list(rng.choice([c for c in DIAGNOSES if c not in CHRONIC], size=int(rng.integers(0, 2))))
                diagnoses = list(dict.fromkeys(chronic + acute)) or ["ICD9CM:4019"]
                medications = list(dict.fromkeys(m for d in diagnoses for m in DIAGNOSES[d][1]))
                procedures = [str(rng.choice(PROCEDURES))] if rng.random() < 0.5 else []
                labs = []
                for item, (mean, std) in LABS.items():
                    for hours in sorted(rng.uniform(0, 48, size=int(rng.integers(1, 3)))):
                        value = rng.normal(mean * (1.8 if item == "50912" and "ICD9CM:4280" in diagnoses else 1), std)
                        numeric = rng.random() >= 0.1
                        labs.append(
                            {
                                "itemid": item,
                                "value": f"{value:.2f}" if numeric else "see note",
                                "valuenum": float(value) if numeric else None,
                                "valueuom": "u",
                                "flag": None,
                                "hours_since_admit": float(hours),
                            }
                        )
                labs.sort(key=lambda event: event["hours_since_admit"])
                words = [DIAGNOSES[d][0] for d in diagnoses]
                note = None if rng.random() < 0.17 else "Findings: " + " ".join(rng.permutation(words)) + ".\nStable."
                discharge = admit + timedelta(days=int(rng.integers(2, 6)))
                readmit = int("ICD9CM:4280" in diagnoses) if visit < num_visits - 1 or rng.random() < 0.5 else None
                rows.append(
                    {
                        "subject_id": subject_id,
                        "hadm_id": hadm_id,
                        "admittime": admit,
                        "dischtime": discharge,
                        "deathtime": None,
                        "admission_type": "EMERGENCY",
                        "gender": gender,
                        "age": None if age is None else age + visit * 0.3,
                        "visit_index": visit,
                        "num_visits": num_visits,
                        "diagnoses": diagnoses,
                        "procedures": procedures,
                        "medications": medications,
                        "labs": labs,
                        "note_text": note,
                        "num_notes": 0 if note is None else 1,
                        "hospital_death": False,
                        "readmission_30d": readmit,
                        "readmission_30d_nonelective": readmit,
                    }
                )
                if split == "train":
                    counts["diagnosis"].update(diagnoses)
                    counts["procedure"].update(procedures)
                    counts["medication"].update(medications)
                    counts["lab"].update(event["itemid"] for event in labs)
                admit = discharge + timedelta(days=int(rng.integers(10, 90)))
                hadm_id += 1
            subject_id += 1
        split_dir = root / VISITS_DIR / split
        split_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=VISIT_SCHEMA), split_dir / "part-00000.parquet")
    (root / VOCAB_DIR).mkdir(parents=True, exist_ok=True)
    (root / ONTOLOGY_DIR).mkdir(parents=True, exist_ok=True)
    for code_type, codes in counts.items():
        write_vocab(root / VOCAB_DIR / f"{code_type}.tsv", dict(codes))
    write_ontology(root / ONTOLOGY_DIR / "diagnosis.tsv", build_ontology(counts["diagnosis"], "coded"))
    write_ontology(root / ONTOLOGY_DIR / "procedure.tsv", build_ontology(counts["procedure"], "coded"))
    write_ontology(root / ONTOLOGY_DIR / "medication.tsv", build_ontology(counts["medication"], "atc3"))
    (root / MANIFEST_FILE).write_text(
        json.dumps({"schema_version": SCHEMA_VERSION, "source": "medmplm.models.mbehrt.testing_utils"}) + "\n",
        encoding="utf-8",
    )
    return root


# Token ids of TINY_VOCABULARIES in the tabular token space (after the 4 special tokens).
TINY_VOCABULARIES = {
    "gender": ["F", "M"],  # 4, 5
    "diagnosis": ["ICD9CM:4019", "ICD9CM:4280", "ICD9CM:25000"],  # 6, 7, 8
    "procedure": ["ICD9Proc:3893"],  # 9
    "medication": ["N02B", "C07A"],  # 10, 11
    "lab": ["50912", "50971"],  # 12, 13
}
NOTE_WORDS = ("findings", "heartfailure", "hypertension", "diabetes", "stable", "plan")


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level BERT-style tokenizer over :data:`NOTE_WORDS` ([CLS] ... [SEP], [PAD] id 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *NOTE_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_config(**overrides: Any) -> MBehrtConfig:
    """An M-BEHRT of width 8 over :data:`TINY_VOCABULARIES`, reading notes with a one-layer BERT sized for
    :func:`word_tokenizer` (both modalities, shared attention, binned lab values with bins ``[1, 2)``)."""
    from transformers import BertConfig

    from medmplm.models.mbehrt import MBehrtConfig
    from medmplm.models.text_encoder import text_config_dict

    text = BertConfig(
        vocab_size=5 + len(NOTE_WORDS),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        pad_token_id=0,
    )
    values = {
        "vocabularies": TINY_VOCABULARIES,
        "hidden_size": 8,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 16,
        "max_length": 16,
        "max_visits": 4,
        "max_age": 100,
        "max_lab_events_per_visit": 3,
        "lab_value_bins": 3,
        "lab_value_edges": {"50912": [1.0, 2.0]},
        "text_config": text_config_dict(text),
        "text_hidden_size": 8,
        "text_num_layers": 1,
        "text_num_heads": 2,
        "text_intermediate_size": 16,
        "text_num_frozen_layers": 0,
        "text_max_length": 8,
        **overrides,
    }
    return MBehrtConfig(**values)


def visit_record(
    hadm_id: int,
    admit: str,
    diagnoses: list[str],
    medications: list[str] | None = None,
    labs: list[tuple[str, float | None, float]] | None = None,
    note: str | None = None,
    age: float | None = 60.0,
    days: float = 2.0,
    subject_id: int = 1,
    gender: str | None = "F",
    procedures: list[str] | None = None,
) -> dict[str, Any]:
    """A VISIT_SCHEMA-like visit record; ``labs`` as ``(itemid, valuenum, hours since admission)``."""
    admittime = np.datetime64(admit, "s")
    return {
        "subject_id": subject_id,
        "hadm_id": hadm_id,
        "admittime": admittime,
        "dischtime": admittime + np.timedelta64(int(days * 86400), "s"),
        "gender": gender,
        "age": age,
        "diagnoses": diagnoses,
        "procedures": procedures or [],
        "medications": medications or [],
        "labs": [
            {"itemid": item, "value": None, "valuenum": value, "valueuom": None, "flag": None, "hours_since_admit": h}
            for item, value, h in (labs or [])
        ],
        "note_text": note,
    }
