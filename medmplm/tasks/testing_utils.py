"""A small prepared directory with multi-visit patients and learnable labels, for fine-tuning tests.

It writes the *output* of the prepare pipeline directly (``medmplm.data.schema`` layout), so the fine-tuning code can
be tested without generating and preparing synthetic MIMIC-III. Notes are short made-up phrases naming the visit's
codes (no clinical text). Readmission is 1 exactly when the visit lists heart failure (``4280``), and a visit's
medications follow its diagnoses, so every task has a signal a model can learn in a few steps.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmplm.data.schema import (
    MANIFEST_FILE,
    ONTOLOGY_DIR,
    SCHEMA_VERSION,
    SPLITS,
    VISIT_SCHEMA,
    VISITS_DIR,
    VOCAB_DIR,
)
from medmplm.data.vocab_io import write_vocab
from medmplm.ontology import build_ontology, write_ontology

# Diagnosis -> (word in the note, the medications it calls for).
DIAGNOSES = {
    "4280": ("heartfailure", ("C03C", "C07A")),
    "4019": ("hypertension", ("C07A", "C09A")),
    "25000": ("diabetes", ("A10B",)),
    "486": ("pneumonia", ("J01D",)),
    "5849": ("kidneyinjury", ("B05X",)),
    "42731": ("afib", ("B01A", "C07A")),
    "311": ("depression", ("N06A",)),
    "2724": ("hyperlipidemia", ("C10A",)),
}
MEDICATION_WORDS = {
    "C03C": "diuretic",
    "C07A": "betablocker",
    "C09A": "acei",
    "A10B": "antidiabetic",
    "J01D": "cephalosporin",
    "B05X": "electrolyte",
    "B01A": "anticoagulant",
    "N06A": "antidepressant",
    "C10A": "statin",
}


def write_finetune_prepared_dir(
    path: str | os.PathLike, patients: tuple[int, int, int] = (40, 12, 12), seed: int = 0
) -> Path:
    """Write a schema-conformant prepared directory; ``patients`` per split (train, val, test).

    Each patient has 1 to 4 visits, 30 to 90 days apart. About one visit in eight has no note; the last visit of a
    patient who died in hospital has a null readmission label.

    Returns:
        The directory.
    """
    root = Path(path)
    rng = np.random.default_rng(seed)
    codes = list(DIAGNOSES)
    counts: dict[str, Counter[str]] = {"diagnosis": Counter(), "medication": Counter()}
    subject_id, hadm_id = 1, 100
    for split, num_patients in zip(SPLITS, patients, strict=True):
        rows = []
        for _ in range(num_patients):
            num_visits = int(rng.integers(1, 5))
            admit = datetime(2150, 1, 1) + timedelta(days=int(rng.integers(0, 300)))
            died = bool(rng.random() < 0.1)
            for visit in range(num_visits):
                diagnoses = list(rng.choice(codes, size=int(rng.integers(1, 4)), replace=False))
                medications = list(dict.fromkeys(m for d in diagnoses for m in DIAGNOSES[d][1]))
                words = [DIAGNOSES[d][0] for d in diagnoses] + [MEDICATION_WORDS[m] for m in medications]
                note = None if rng.random() < 0.125 else "Findings: " + " ".join(rng.permutation(words)) + ".\nStable."
                last = visit == num_visits - 1
                readmit = None if (last and died) else int("4280" in diagnoses)
                rows.append(
                    {
                        "subject_id": subject_id,
                        "hadm_id": hadm_id,
                        "admittime": admit,
                        "dischtime": admit + timedelta(days=3),
                        "deathtime": admit + timedelta(days=3) if (last and died) else None,
                        "admission_type": "EMERGENCY",
                        "visit_index": visit,
                        "num_visits": num_visits,
                        "diagnoses": diagnoses,
                        "procedures": [],
                        "medications": medications,
                        "labs": [],
                        "note_text": note,
                        "num_notes": 0 if note is None else 1,
                        "hospital_death": last and died,
                        "readmission_30d": readmit,
                        "readmission_30d_nonelective": readmit,
                    }
                )
                if split == "train":
                    counts["diagnosis"].update(diagnoses)
                    counts["medication"].update(medications)
                admit += timedelta(days=int(rng.integers(30, 90)))
                hadm_id += 1
            subject_id += 1
        split_dir = root / VISITS_DIR / split
        split_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=VISIT_SCHEMA), split_dir / "part-00000.parquet")
    (root / VOCAB_DIR).mkdir(parents=True, exist_ok=True)
    (root / ONTOLOGY_DIR).mkdir(parents=True, exist_ok=True)
    for code_type, kind in (("diagnosis", "icd9_diagnosis"), ("medication", "atc3")):
        write_vocab(root / VOCAB_DIR / f"{code_type}.tsv", dict(counts[code_type]))
        write_ontology(root / ONTOLOGY_DIR / f"{code_type}.tsv", build_ontology(counts[code_type], kind))
    for code_type in ("procedure", "lab"):
        write_vocab(root / VOCAB_DIR / f"{code_type}.tsv", {})
    (root / MANIFEST_FILE).write_text(
        json.dumps({"schema_version": SCHEMA_VERSION, "source": "medmplm.tasks.testing_utils"}) + "\n", encoding="utf-8"
    )
    return root
