"""The prepared-data contract: visit-record Arrow schema and the layout of a prepared directory.

Everything downstream of ``medmplm.prepare`` (model vocabularies, pretraining, fine-tuning)
reads only what is declared here, so a change to this file is a change of
``SCHEMA_VERSION``.

Layout of a prepared directory (``python -m medmplm.prepare --out DIR``; DIR a local path, ``s3://`` or ``gs://``)::

    DIR/
      manifest.json                 schema version, counts, quarantine counts, inputs, options; written last
      visits/train/part-00000.parquet ...   one row per admission, VISIT_SCHEMA
      visits/val/part-*.parquet
      visits/test/part-*.parquet
      vocab/diagnosis.tsv           code<TAB>count, header line, most frequent first
      vocab/procedure.tsv
      vocab/medication.tsv          ATC-3 codes (or NDCs, drug names: the medication vocabulary chosen)
      vocab/lab.tsv                 ITEMIDs as strings
      ontology/diagnosis.tsv        code<TAB>ancestors   (ancestors root-first, '|'-separated)
      ontology/procedure.tsv
      ontology/medication.tsv
      quarantine/<TABLE>.parquet    rejected input rows, every input column as string + ``reason``

A directory without ``manifest.json`` is incomplete (a run that stopped, or an upload in progress): readers refuse
it (``medmplm.data.prepared``).

Schema history (``SCHEMA_VERSION``; readers accept every version in ``READABLE_SCHEMA_VERSIONS``):

* 2: diagnoses and procedures carry their code system (``ICD9CM:4019``, ``ICD10CM:I2510``, ``ICD9Proc:3893``,
  ``ICD10PCS:0016070``; see ``medmplm.ontology``), ``ontology/procedure.tsv``, and the ``gender`` and ``age``
  columns.
* 1: MIMIC-III only: bare ICD-9 codes, no demographics. Still readable: its visits, vocabularies and ontologies agree
  with each other, and every column later versions kept means what it meant.

Parquet has no seconds unit, so the timestamp columns come back as ``timestamp[ms]`` unless the
reader passes ``schema=VISIT_SCHEMA``; the Arrow schema stored in each file is ``VISIT_SCHEMA``.

All of a patient's admissions are in the same split. Rows in a split are ordered by
(subject_id, admittime, hadm_id).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

SPLITS = ("train", "val", "test")

MANIFEST_FILE = "manifest.json"
VISITS_DIR = "visits"
VOCAB_DIR = "vocab"
ONTOLOGY_DIR = "ontology"
QUARANTINE_DIR = "quarantine"

# Vocabulary and ontology files, by code type.
CODE_TYPES = ("diagnosis", "procedure", "medication", "lab")
ONTOLOGY_CODE_TYPES = ("diagnosis", "medication")
# Ontology files a prepared directory holds (schema 2; schema 1 had no procedure tree).
ONTOLOGY_FILES = ("diagnosis", "procedure", "medication")

LAB_EVENT_TYPE = pa.struct(
    [
        pa.field("itemid", pa.string()),
        pa.field("value", pa.string()),
        pa.field("valuenum", pa.float64()),
        pa.field("valueuom", pa.string()),
        pa.field("flag", pa.string()),
        pa.field("hours_since_admit", pa.float32()),
    ]
)

VISIT_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("hadm_id", pa.int64(), nullable=False),
        pa.field("admittime", pa.timestamp("s"), nullable=False),
        pa.field("dischtime", pa.timestamp("s"), nullable=False),
        pa.field("deathtime", pa.timestamp("s")),
        pa.field("admission_type", pa.string()),
        # As the source gives it (MIMIC: "F" / "M"); null when the patient has no demographic record.
        pa.field("gender", pa.string()),
        # Years at admission; ages over 89 are 90.0 (both MIMICs hide them: see medmplm.data.demographics).
        pa.field("age", pa.float32()),
        # 0-based position of this admission among the patient's kept admissions, by admittime.
        pa.field("visit_index", pa.int32(), nullable=False),
        pa.field("num_visits", pa.int32(), nullable=False),
        # "<system>:<code>", undotted (ICD9CM / ICD10CM; ICD9Proc / ICD10PCS), in SEQ_NUM order.
        pa.field("diagnoses", pa.list_(pa.string()), nullable=False),
        pa.field("procedures", pa.list_(pa.string()), nullable=False),
        # ATC-3 (4 characters, e.g. "N02B"), unique, in order of first prescription.
        pa.field("medications", pa.list_(pa.string()), nullable=False),
        pa.field("labs", pa.list_(LAB_EVENT_TYPE), nullable=False),
        # Discharge summary text (categories configurable); null when the admission has none.
        pa.field("note_text", pa.string()),
        pa.field("num_notes", pa.int32(), nullable=False),
        pa.field("hospital_death", pa.bool_(), nullable=False),
        # 1 when the patient's next admission starts within 30 days of this discharge.
        # Null when the label is undefined: in-hospital death, or a NEWBORN admission.
        pa.field("readmission_30d", pa.int8()),
        # Same, counting only non-elective (EMERGENCY / URGENT) next admissions.
        pa.field("readmission_30d_nonelective", pa.int8()),
    ],
    metadata={"medmplm.schema_version": str(SCHEMA_VERSION)},
)
