"""Write a synthetic MIMIC-III v1.4 release (and GAMENet NDC mapping files) to a directory.

Patients are simulated one at a time from their own seeded generators
(``SeedSequence(seed, spawn_key=(index,))``), rendered, and appended to every table in chunks, so
memory stays bounded at any size and the bytes written do not depend on the chunk size. Output goes
to a hidden ``.<name>.partial-<pid>`` sibling and is renamed into place only once complete.
"""

from __future__ import annotations

import gzip as gzip_module
import io
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from medmplm.synthetic.catalogue.drugs import DRUGS
from medmplm.synthetic.formulary import build_formulary, write_ndc2atc, write_ndc2rxnorm
from medmplm.synthetic.model import Admission, Patient, PatientRandom, PatientSimulator
from medmplm.synthetic.notes import NoteRow, NoteWriter
from medmplm.synthetic.output import publish, start_partial
from medmplm.synthetic.tables import TABLE_COLUMNS, CsvStyle, MimicRenderer

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2
# Also the marker of synthetic data: prepare records `synthetic: true` when its input holds this file
# (medmplm.data.manifest.SYNTHETIC_MARKER_FILE), so results on generated data say so.
MANIFEST_FILE = "synthetic_manifest.json"
NDC2RXNORM_FILE = "ndc2rxnorm_mapping.txt"
NDC2ATC_FILE = "ndc2atc_level4.csv"

# Share of discharge summaries MIMIC lacks for a stay (not every admission has one).
_MISSING_DISCHARGE_SUMMARY = 0.06
_NEWBORN_DISCHARGE_SUMMARY = 0.3
_ADDENDUM = 0.08


def table_file_name(table: str, gzip: bool) -> str:
    """``PATIENTS.csv`` or ``PATIENTS.csv.gz``."""
    return f"{table}.csv.gz" if gzip else f"{table}.csv"


def generate_mimic3(
    out_dir: str | os.PathLike[str],
    patients: int = 1000,
    seed: int = 0,
    gzip: bool = False,
    column_case: str = "upper",
    overwrite: bool = False,
    chunk_size: int = 256,
) -> dict[str, int]:
    """Generate a synthetic MIMIC-III v1.4 release in ``out_dir``; returns data rows per table and vocabulary sizes.

    ``column_case="upper"`` writes headers and quoting as the full release does, ``"lower"`` as the
    public demo does. ``out_dir`` must not exist or be empty unless ``overwrite``. The same
    arguments always give byte-identical files. Besides the rows per table, the result holds the
    vocabulary the data uses: ``distinct_diagnosis_codes``, ``distinct_procedure_codes``, ``distinct_ndcs``.
    """
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    style = CsvStyle(column_case)
    out_dir = Path(out_dir)
    partial = start_partial(out_dir, overwrite)
    try:
        counts, vocabulary = _write_release(partial, patients, seed, gzip, style, chunk_size)
        manifest = {
            "generator": "medmplm.synthetic",
            "generator_version": GENERATOR_VERSION,
            "format": "MIMIC-III v1.4",
            "patients": patients,
            "seed": seed,
            "gzip": gzip,
            "column_case": column_case,
            "row_counts": counts,
            "vocabulary": vocabulary,
        }
        (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, out_dir)
    logger.info(
        "wrote synthetic MIMIC-III (%d patients, seed %d) to %s: %s, %s", patients, seed, out_dir, counts, vocabulary
    )
    return {**{table: counts[table] for table in TABLE_COLUMNS}, **vocabulary}


class _TableFile:
    """One table's output file, plain or gzip (gzip header without name or time, for identical bytes)."""

    def __init__(self, path: Path, gzip: bool) -> None:
        self._raw = open(path, "wb")
        self._gzip = gzip_module.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0) if gzip else None
        self._text: TextIO = io.TextIOWrapper(
            self._gzip or self._raw, encoding="utf-8", newline="", write_through=False
        )

    def write(self, lines: list[str]) -> None:
        self._text.writelines(lines)

    def close(self) -> None:
        self._text.close()
        if self._gzip is not None:
            self._raw.close()


def _smallest_prime_at_least(value: int) -> int:
    candidate = max(2, value)
    while any(candidate % divisor == 0 for divisor in range(2, int(math.isqrt(candidate)) + 1)):
        candidate += 1
    return candidate


def _id_permutation(base: int, size_hint: int, salt: int) -> Callable[[], int]:
    """Unique, unordered ids ``base + (a*k + b) mod p`` for k = 0, 1, ... (like MIMIC's HADM_IDs)."""
    modulus = _smallest_prime_at_least(max(99_991, 3 * size_hint))
    multiplier = 1 + (salt * 2_654_435_761 + 97) % (modulus - 1)
    offset = (salt * 40_503 + 11) % modulus
    counter = iter(range(modulus))

    def next_id() -> int:
        try:
            index = next(counter)
        except StopIteration:
            raise RuntimeError(f"ran out of unique ids above {base}; more than {modulus} were needed") from None
        return base + (multiplier * index + offset) % modulus

    return next_id


def _subject_ids(patients: int, seed: int) -> np.ndarray:
    """Sorted unique SUBJECT_IDs drawn from 2.. like MIMIC's (gaps included)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32 - 1,)))
    space = max(99_999, 2 * patients)
    return np.sort(rng.choice(space, size=patients, replace=False)) + 2


def _write_release(
    directory: Path, patients: int, seed: int, gzip: bool, style: CsvStyle, chunk_size: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per table (and mapping file), and the distinct codes the data uses."""
    formulary = build_formulary()
    diagnosis_codes: set[str] = set()
    procedure_codes: set[str] = set()
    products: set[tuple[int, int]] = set()
    renderer = MimicRenderer(style, formulary)
    files = {table: _TableFile(directory / table_file_name(table, gzip), gzip) for table in TABLE_COLUMNS}
    try:
        for table, handle in files.items():
            handle.write([style.header(table)])
        for table, lines in renderer.dictionary_lines().items():
            files[table].write(lines)
        simulator = PatientSimulator(
            next_hadm_id=_id_permutation(100_000, patients, seed + 1),
            next_icustay_id=_id_permutation(200_000, patients, seed + 2),
        )
        subject_ids = _subject_ids(patients, seed)
        for chunk_start in range(0, patients, chunk_size):
            buffers: dict[str, list[str]] = {table: [] for table in TABLE_COLUMNS}
            for index in range(chunk_start, min(patients, chunk_start + chunk_size)):
                sequence = np.random.SeedSequence(seed, spawn_key=(index,))
                rng = PatientRandom(int(sequence.generate_state(1, np.uint64)[0]))
                bulk = np.random.Generator(np.random.PCG64(sequence))
                patient = simulator.simulate(int(subject_ids[index]), rng, bulk)
                _render_patient(patient, renderer, rng, buffers)
                for admission in patient.admissions:
                    diagnosis_codes.update(admission.diagnoses)
                    procedure_codes.update(admission.procedures)
                    batch = admission.prescriptions
                    if batch is not None:
                        products.update(zip(batch.drug.tolist(), batch.product.tolist()))
            for table, lines in buffers.items():
                files[table].write(lines)
            logger.debug(
                "generated patients %d-%d of %d", chunk_start, min(patients, chunk_start + chunk_size), patients
            )
    finally:
        for handle in files.values():
            handle.close()
    counts = {table: renderer.row_ids.count(table) for table in TABLE_COLUMNS}
    counts["ndc2rxnorm_mapping"] = write_ndc2rxnorm(directory / NDC2RXNORM_FILE, formulary)
    counts["ndc2atc_level4"] = write_ndc2atc(directory / NDC2ATC_FILE, formulary)
    ndcs = {
        formulary.products[DRUGS[drug].key][product].ndc
        for drug, product in products
        if product >= 0 and not DRUGS[drug].ndc_zero
    }
    vocabulary = {
        "distinct_diagnosis_codes": len(diagnosis_codes),
        "distinct_procedure_codes": len(procedure_codes),
        "distinct_ndcs": len(ndcs),
    }
    return counts, vocabulary


def _render_patient(
    patient: Patient, renderer: MimicRenderer, rng: random.Random, buffers: dict[str, list[str]]
) -> None:
    subject_id = patient.subject_id
    writer = NoteWriter(patient, rng)
    buffers["PATIENTS"].append(renderer.patient_line(patient))
    for batch in patient.outpatient_labs:
        buffers["LABEVENTS"].extend(renderer.lab_lines(subject_id, None, batch, rng))
        if rng.random() < 0.6:
            for note in writer.outpatient_notes(batch.times[0]):
                buffers["NOTEEVENTS"].append(renderer.note_line(subject_id, note, rng))
    for admission in patient.admissions:
        buffers["ADMISSIONS"].append(renderer.admission_line(patient, admission))
        buffers["DIAGNOSES_ICD"].extend(renderer.diagnosis_lines(patient, admission, rng))
        buffers["PROCEDURES_ICD"].extend(renderer.procedure_lines(patient, admission))
        buffers["PRESCRIPTIONS"].extend(renderer.prescription_lines(patient, admission, rng))
        buffers["LABEVENTS"].extend(renderer.lab_lines(subject_id, admission.hadm_id, admission.labs, rng))
        notes = writer.stay_notes(admission)
        wants_summary = rng.random() < (
            _NEWBORN_DISCHARGE_SUMMARY if admission.reason.newborn else 1 - _MISSING_DISCHARGE_SUMMARY
        )
        if wants_summary:
            summary = writer.discharge_summary(admission, admission.labs)
            notes.append(_discharge_note(admission, summary, "Report"))
            if rng.random() < _ADDENDUM:
                notes.append(_discharge_note(admission, writer.addendum(admission), "Addendum"))
        notes.sort(key=lambda note: (note.chartdate, note.charttime or note.chartdate))
        for note in notes:
            buffers["NOTEEVENTS"].append(renderer.note_line(subject_id, note, rng))


def _discharge_note(admission: Admission, text: str, description: str) -> NoteRow:
    day = admission.dischtime if admission.dischtime >= admission.admittime else admission.admittime
    return NoteRow(
        admission.hadm_id,
        day.replace(hour=0, minute=0, second=0),
        None,
        None,
        "Discharge summary",
        description,
        None,
        text,
    )
