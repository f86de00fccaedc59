"""MIMIC-III v1.4 (and its public demo): ``<TABLE>.csv[.gz]`` in one directory, upper- or lower-case names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from medmplm.data.quarantine import RowLedger
from medmplm.data.sources.base import MIMIC_DEFINITIONS, MimicSource, StatsRow, medication_map, unmapped_ndc_stats
from medmplm.data.tables import NOTEEVENTS, PRESCRIPTIONS, REQUIRED_COLUMNS, TABLES, locate_table
from medmplm.data.visits import VisitOptions, build_visits

DEFAULT_NOTE_CATEGORIES = ("Discharge summary",)
DEFINITIONS = {
    **MIMIC_DEFINITIONS,
    "notes": (
        "selected categories (trimmed, case-insensitive), ISERROR=1 dropped, null HADM_ID dropped (counted), "
        "several notes joined in CHARTDATE, CHARTTIME, ROW_ID order with a blank line"
    ),
    "age": "(ADMITTIME - DOB) / 365.2425 days; over 89 (MIMIC-III shifts those DOBs ~300 years back) is 90.0",
}


@dataclass
class Mimic3Source(MimicSource):
    """MIMIC-III's tables: ``medmplm.data.tables.TABLES``."""

    name: ClassVar[str] = "mimic3"
    category_filtered_notes: ClassVar[str | None] = NOTEEVENTS

    def build_visits(self, tables: dict[str, pa.Table], ledger: RowLedger) -> tuple[pa.Table, list[StatsRow]]:
        visits, unmapped = build_visits(
            tables, self.raw_columns, self.options, self.ndc_atc3, self.conflicting_hadm_ids, ledger
        )
        return visits, unmapped_ndc_stats(unmapped)

    def option_values(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "ndc_map_dir": self.ndc_map_dir,
            "note_categories": list(self.options.note_categories),
        }

    def definitions(self) -> dict[str, str]:
        return DEFINITIONS


def locate(input_dir: str, options: VisitOptions, ndc_map_dir: str | None) -> Mimic3Source:
    """Find and check MIMIC-III's tables (and the NDC map when the medication vocabulary is ``atc3``).

    Raises:
        PrepareInputError: (subclasses) a missing table, column or map file, naming it.
    """
    required = dict(REQUIRED_COLUMNS)
    required[PRESCRIPTIONS] = REQUIRED_COLUMNS[PRESCRIPTIONS] + (
        ("DRUG",) if options.medication_vocab == "drug" else ("NDC",)
    )
    if options.readmission_exclude_discharge:
        required["ADMISSIONS"] = REQUIRED_COLUMNS["ADMISSIONS"] + ("DISCHARGE_LOCATION",)
    table_files = {table: locate_table(input_dir, table, required[table]) for table in TABLES}
    map_dir, ndc_atc3 = medication_map(options, ndc_map_dir, input_dir)
    return Mimic3Source(
        input_dir=input_dir, table_files=table_files, options=options, ndc_map_dir=map_dir, ndc_atc3=ndc_atc3
    )
