"""A synthetic concept-extraction corpus in the i2b2-2010 layout, from the notes' vocabulary.

Layout (as distributed for the 2010 i2b2/VA challenge)::

    DIR/txt/<doc>.txt        one sentence per line, tokens separated by single spaces
    DIR/concept/<doc>.con    c="chest pain" 12:3 12:4||t="problem"

Concept offsets are ``line:token`` with 1-based lines and 0-based tokens, end inclusive; the
concept text is the lower-cased tokens, as in i2b2. Types are ``problem``, ``test`` and
``treatment``, drawn from the conditions, lab tests, studies, drugs and procedures the synthetic
notes use.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmplm.data.manifest import SYNTHETIC_MARKER_FILE
from medmplm.synthetic.catalogue.conditions import (
    ADMISSION_REASONS,
    CHRONIC_CONDITIONS,
    COMPLICATIONS,
    MINOR_CONDITIONS,
)
from medmplm.synthetic.catalogue.drugs import DRUGS
from medmplm.synthetic.catalogue.labs import LAB_ITEMS
from medmplm.synthetic.model import PatientRandom
from medmplm.synthetic.output import publish, start_partial

CONCEPT_TYPES = ("problem", "test", "treatment")

_TESTS = (
    "chest x-ray",
    "cxr",
    "ct scan of the head",
    "head ct",
    "echocardiogram",
    "tte",
    "ekg",
    "ecg",
    "renal ultrasound",
    "blood cultures",
    "urine culture",
    "urinalysis",
    "abg",
    "cardiac enzymes",
    "troponin",
    "bnp",
    "lfts",
    "cbc",
    "chem 7",
    "inr",
    "mri of the brain",
    "cardiac catheterization",
    "stress test",
    "lumbar puncture",
    "egd",
    "colonoscopy",
)
_PROCEDURE_TREATMENTS = (
    "intubation",
    "mechanical ventilation",
    "central line placement",
    "transfusion",
    "packed red blood cells",
    "stent placement",
    "cabg",
    "hemodialysis",
    "thoracentesis",
    "paracentesis",
    "orif",
    "iv fluids",
    "antibiotics",
    "supplemental oxygen",
    "bipap",
    "physical therapy",
    "diuresis",
    "banding",
)
_TEMPLATES = (
    ("The", "patient", "was", "admitted", "with", "{problem}", "."),
    ("She", "has", "a", "history", "of", "{problem}", "and", "{problem}", "."),
    ("He", "was", "started", "on", "{treatment}", "for", "{problem}", "."),
    ("{test}", "showed", "{problem}", "."),
    ("{test}", "was", "unremarkable", "."),
    ("Denies", "{problem}", ",", "{problem}", "or", "{problem}", "."),
    ("Her", "{treatment}", "was", "held", "given", "{problem}", "."),
    ("Continued", "home", "{treatment}", "and", "{treatment}", "."),
    ("A", "{test}", "was", "obtained", "to", "rule", "out", "{problem}", "."),
    ("The", "patient", "underwent", "{treatment}", "without", "complication", "."),
    ("{problem}", ":", "treated", "with", "{treatment}", "with", "improvement", "."),
    ("Repeat", "{test}", "on", "hospital", "day", "2", "was", "stable", "."),
    ("Discharged", "home", "with", "VNA", "services", "."),
    ("Follow", "up", "with", "PCP", "in", "1-2", "weeks", "."),
    ("On", "exam", ",", "lungs", "clear", "to", "auscultation", "bilaterally", "."),
    ("Patient", "reports", "{problem}", "for", "the", "past", "3", "days", "."),
    ("{treatment}", "was", "increased", "for", "persistent", "{problem}", "."),
    ("Given", "{problem}", ",", "a", "{test}", "was", "checked", "and", "was", "elevated", "."),
)
_SECTION_HEADERS = (
    ("HISTORY", "OF", "PRESENT", "ILLNESS", ":"),
    ("PAST", "MEDICAL", "HISTORY", ":"),
    ("HOSPITAL", "COURSE", ":"),
    ("MEDICATIONS", "ON", "DISCHARGE", ":"),
    ("DISCHARGE", "DIAGNOSES", ":"),
)


def _phrases_by_type() -> dict[str, tuple[tuple[str, ...], ...]]:
    problems = set()
    for condition in CHRONIC_CONDITIONS:
        problems.update(condition.phrases)
    for reason in ADMISSION_REASONS:
        problems.update(reason.phrases)
        problems.update(reason.chief_complaints)
    for complication in COMPLICATIONS:
        problems.update(complication.phrases)
    for minor in MINOR_CONDITIONS:
        problems.update(minor.phrases)
    tests = set(_TESTS) | {item.label.lower() for item in LAB_ITEMS if "(" not in item.label and "," not in item.label}
    treatments = set(_PROCEDURE_TREATMENTS)
    for drug in DRUGS:
        treatments.update(drug.note_names)
    return {
        "problem": tuple(sorted(tuple(phrase.split()) for phrase in problems)),
        "test": tuple(sorted(tuple(phrase.split()) for phrase in tests)),
        "treatment": tuple(sorted(tuple(phrase.split()) for phrase in treatments)),
    }


@dataclass(frozen=True)
class Concept:
    """One annotated span: ``line`` is 1-based, tokens 0-based, ``end`` inclusive."""

    text: str
    line: int
    start: int
    end: int
    type: str

    def to_con(self) -> str:
        """The span as an i2b2 ``.con`` line."""
        return f'c="{self.text}" {self.line}:{self.start} {self.line}:{self.end}||t="{self.type}"'


def _document(rng: random.Random, phrases: dict[str, tuple[tuple[str, ...], ...]]) -> tuple[list[str], list[Concept]]:
    lines: list[str] = []
    concepts: list[Concept] = []
    year = rng.randrange(2100, 2200)
    lines.append("Admission Date :")
    lines.append(f"[**{year}-{rng.randrange(1, 13)}-{rng.randrange(1, 29)}**]")
    for header in _SECTION_HEADERS:
        lines.append(" ".join(header))
        for _ in range(rng.randrange(2, 8)):
            tokens: list[str] = []
            line_number = len(lines) + 1
            for slot in rng.choice(_TEMPLATES):
                if slot.startswith("{"):
                    kind = slot[1:-1]
                    words = rng.choice(phrases[kind])
                    start = len(tokens)
                    tokens.extend(words)
                    concepts.append(Concept(" ".join(words).lower(), line_number, start, len(tokens) - 1, kind))
                else:
                    tokens.append(slot)
            lines.append(" ".join(tokens))
    return lines, concepts


def generate_ner_corpus(
    out_dir: str | os.PathLike[str], documents: int = 200, seed: int = 0, overwrite: bool = False
) -> dict[str, int]:
    """Write an i2b2-2010-style corpus of ``documents`` notes; returns document, line and concept counts.

    Same seed, same bytes. ``out_dir`` must not exist or be empty unless ``overwrite``.
    """
    if documents < 1:
        raise ValueError(f"documents must be at least 1, got {documents}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    partial = start_partial(out_dir, overwrite)
    (partial / "txt").mkdir()
    (partial / "concept").mkdir()
    phrases = _phrases_by_type()
    counts = {"documents": documents, "lines": 0, "concepts": 0}
    try:
        for index in range(documents):
            sequence = np.random.SeedSequence(seed, spawn_key=(index,))
            rng = PatientRandom(int(sequence.generate_state(1, np.uint64)[0]))
            lines, concepts = _document(rng, phrases)
            name = f"record-{index + 1:04d}"
            (partial / "txt" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (partial / "concept" / f"{name}.con").write_text(
                "".join(concept.to_con() + "\n" for concept in concepts), encoding="utf-8"
            )
            counts["lines"] += len(lines)
            counts["concepts"] += len(concepts)
        # The synthetic-data marker (as in a generated MIMIC release): records of runs on this corpus say synthetic.
        (partial / SYNTHETIC_MARKER_FILE).write_text(
            json.dumps({"generator": "ner", "seed": seed, **counts}, indent=2) + "\n", encoding="utf-8"
        )
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, out_dir)
    return counts
