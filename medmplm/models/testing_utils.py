"""A small prepared directory for model tests, benchmarks and the summary command.

This writes the *output* of the prepare pipeline directly (``medmplm.data.schema`` layout), so
model code can be exercised without running ``medmplm.prepare``. The notes are short made-up
phrases (no clinical text), each naming the visit's codes in words, so a model can learn to read
codes from text.
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

# Valid ICD-9-CM / ATC-3 codes spread over several chapters and groups, with a word each.
DIAGNOSES = {
    "4019": "hypertension",
    "4280": "heartfailure",
    "42731": "afib",
    "41401": "atherosclerosis",
    "5849": "kidneyinjury",
    "25000": "diabetes",
    "2724": "hyperlipidemia",
    "51881": "respfailure",
    "5990": "uti",
    "53081": "reflux",
    "V4581": "bypass",
    "0389": "septicemia",
    "486": "pneumonia",
    "2449": "hypothyroid",
    "311": "depression",
    "99592": "sepsis",
    "E8497": "accident",
    "2851": "anemia",
}
MEDICATIONS = {
    "N02B": "analgesic",
    "B01A": "anticoagulant",
    "C07A": "betablocker",
    "A02B": "antacid",
    "C10A": "statin",
    "N05B": "anxiolytic",
    "A12C": "mineral",
    "J01D": "cephalosporin",
    "C03C": "diuretic",
    "H02A": "corticosteroid",
    "A06A": "laxative",
    "B05X": "electrolyte",
}


def write_tiny_prepared_dir(
    path: str | os.PathLike, num_visits: int = 24, seed: int = 0, missing_every: int = 6
) -> Path:
    """Write a schema-conformant prepared directory with ``num_visits`` training visits.

    Every ``missing_every``-th visit lacks a note, the one after it lacks diagnoses and the one
    after that lacks medications, so missing modalities are always represented. Val and test
    splits hold two visits each.

    Returns:
        The directory.
    """
    root = Path(path)
    rng = np.random.default_rng(seed)
    diag_codes, med_codes = list(DIAGNOSES), list(MEDICATIONS)
    counts: dict[str, Counter[str]] = {"diagnosis": Counter(), "medication": Counter()}
    start = datetime(2130, 1, 1)
    hadm = 100000
    for split, n in zip(SPLITS, (num_visits, 2, 2), strict=True):
        rows = []
        for i in range(n):
            diagnoses = list(rng.choice(diag_codes, size=int(rng.integers(1, 8)), replace=False))
            medications = list(rng.choice(med_codes, size=int(rng.integers(1, 6)), replace=False))
            words = [DIAGNOSES[c] for c in diagnoses] + [MEDICATIONS[c] for c in medications]
            note = f"Visit {i}.\nFindings: " + " ".join(rng.permutation(words)) + "\nPlan: follow up."
            if missing_every and i % missing_every == 0:
                note = None
            if missing_every and i % missing_every == 1:
                diagnoses = []
            if missing_every and i % missing_every == 2:
                medications = []
            if split == "train":
                counts["diagnosis"].update(diagnoses)
                counts["medication"].update(medications)
            admit = start + timedelta(days=30 * i)
            hadm += 1
            rows.append(
                {
                    "subject_id": 1000 + i,
                    "hadm_id": hadm,
                    "admittime": admit,
                    "dischtime": admit + timedelta(days=3),
                    "deathtime": None,
                    "admission_type": "EMERGENCY",
                    "visit_index": 0,
                    "num_visits": 1,
                    "diagnoses": diagnoses,
                    "procedures": [],
                    "medications": medications,
                    "labs": [],
                    "note_text": note,
                    "num_notes": 0 if note is None else 1,
                    "hospital_death": False,
                    "readmission_30d": 0,
                    "readmission_30d_nonelective": 0,
                }
            )
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
        json.dumps({"schema_version": SCHEMA_VERSION, "source": "medmplm.models.testing_utils"}) + "\n",
        encoding="utf-8",
    )
    return root


def read_split_batch(prepared_dir: str | os.PathLike, split: str = "train") -> dict[str, np.ndarray]:
    """A split's visits as one numpy batch, shaped as Ray Data's ``batch_format="numpy"`` gives it."""
    table = pq.read_table(Path(prepared_dir) / VISITS_DIR / split)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
