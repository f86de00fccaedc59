"""Input layouts prepare reads, each turned into the one visit-record schema: ``mimic3``, ``mimic4``, ``meds``.

``detect_source`` tells them apart by layout: MIMIC-III has ``ADMISSIONS.csv[.gz]`` at the top, MIMIC-IV a
``hosp/`` directory, MEDS a ``data/`` directory of Parquet files.
"""

from __future__ import annotations

from medmplm.data import locations
from medmplm.data.tables import PrepareInputError

SOURCES = ("mimic3", "mimic4", "meds")


def detect_source(input_dir: str) -> str:
    """The layout of ``input_dir`` (local path or URI).

    Raises:
        PrepareInputError: when it is none of them (or is missing), saying what each layout looks like.
    """
    from medmplm.data.sources.meds import is_meds_layout
    from medmplm.data.sources.mimic4 import is_mimic4_layout

    if not locations.is_dir(input_dir):
        raise PrepareInputError(f"input directory {input_dir} does not exist or is not a directory")
    if is_mimic4_layout(input_dir):
        return "mimic4"
    if is_meds_layout(input_dir):
        return "meds"
    names = {name.lower() for name, is_dir in locations.list_entries(input_dir) if not is_dir}
    if names & {"admissions.csv", "admissions.csv.gz"}:
        return "mimic3"
    raise PrepareInputError(
        f"{input_dir}: not a layout prepare knows: MIMIC-III has ADMISSIONS.csv[.gz] in the directory, MIMIC-IV "
        "hosp/admissions.csv[.gz], MEDS data/*.parquet; or pass --source"
    )
