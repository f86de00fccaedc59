"""NDC -> RXCUI -> ATC-3 mapping from the GAMENet / G-BERT mapping files.

The files, as those projects ship them in their ``data/`` folders:

* ``ndc2rxnorm_mapping.txt``: a Python dict literal ``{'00002010002': '...', ...}`` (NDC -> RXCUI,
  RXCUI may be ``''`` for unmapped NDCs). Parsed with ``ast.literal_eval``, never ``eval``.
* ``ndc2atc_level4.csv``: columns ``RXCUI,YEAR,MONTH,NDC,ATC4``. As in GAMENet's preprocessing,
  the first row per RXCUI (file order) gives its ATC-4 class, truncated to ATC-3 (4 characters).
"""

from __future__ import annotations

import ast
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medmplm.data import locations
from medmplm.data.tables import PrepareInputError
from medmplm.ontology import ATC3_PATTERN

NDC_TO_RXCUI_FILE = "ndc2rxnorm_mapping.txt"
RXCUI_TO_ATC4_FILE = "ndc2atc_level4.csv"
NDC_MAP_FILES = (NDC_TO_RXCUI_FILE, RXCUI_TO_ATC4_FILE)

NDC_MAP_HELP = (
    f"supply the GAMENet/G-BERT mapping files {NDC_TO_RXCUI_FILE} and {RXCUI_TO_ATC4_FILE} with --ndc-map DIR "
    "(they are in the data/ folder of https://github.com/sjy1203/GAMENet and https://github.com/jshang123/G-Bert; "
    "the synthetic generator writes them next to its tables), or choose another medication vocabulary with "
    "--medication-vocab ndc or --medication-vocab drug"
)

NDC_ATC3_SCHEMA = pa.schema([pa.field("ndc", pa.string()), pa.field("atc3", pa.string())])


class MissingNdcMapError(PrepareInputError):
    """The NDC -> ATC mapping files are missing or malformed."""


def find_ndc_map(*candidate_dirs: str | os.PathLike | None) -> str:
    """The first directory among ``candidate_dirs`` (local paths or URIs) that holds both mapping files.

    Raises:
        MissingNdcMapError: saying which files to supply and where users usually get them.
    """
    searched = [locations.resolve(str(d)) for d in candidate_dirs if d is not None]
    for directory in searched:
        if all(locations.is_file(locations.join(directory, name)) for name in NDC_MAP_FILES):
            return directory
    where = ", ".join(str(d) for d in searched) or "(no directory given)"
    raise MissingNdcMapError(f"NDC -> ATC mapping not found in {where}: {NDC_MAP_HELP}")


def _read_ndc_to_rxcui(path: str) -> dict[str, str]:
    with locations.open_input_stream(path) as stream:
        text = stream.read().decode("utf-8")
    try:
        mapping = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise MissingNdcMapError(f"{path}: not a Python dict literal of NDC -> RXCUI strings ({err})") from None
    if not isinstance(mapping, dict):
        raise MissingNdcMapError(f"{path}: expected a dict literal, got {type(mapping).__name__}")
    return {str(ndc).strip(): str(rxcui).strip() for ndc, rxcui in mapping.items()}


def _read_rxcui_to_atc3(path: str) -> dict[str, str]:
    with locations.open_input_stream(path) as stream:
        table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""]))
    columns = {name.upper(): name for name in table.column_names}
    missing = [name for name in ("RXCUI", "ATC4") if name not in columns]
    if missing:
        raise MissingNdcMapError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.column_names)})"
        )
    rxcuis = pc.cast(table[columns["RXCUI"]], pa.string()).to_pylist()
    atc4s = pc.cast(table[columns["ATC4"]], pa.string()).to_pylist()
    atc3_re = re.compile(ATC3_PATTERN)
    mapping: dict[str, str] = {}
    for line_no, (rxcui, atc4) in enumerate(zip(rxcuis, atc4s), start=2):
        if rxcui is None or rxcui.strip() in mapping:
            continue
        atc3 = (atc4 or "").strip()[:4]
        if not atc3_re.match(atc3):
            raise MissingNdcMapError(
                f"{path}:{line_no}: ATC4 {atc4!r} for RXCUI {rxcui} does not start with an ATC-3 code (e.g. 'N02B')"
            )
        mapping[rxcui.strip()] = atc3
    return mapping


def load_ndc_to_atc3(ndc_map_dir: str | os.PathLike) -> pa.Table:
    """NDC -> ATC-3 as a two-column table (``ndc``, ``atc3``), NDCs sorted, only mapped NDCs.

    Raises:
        MissingNdcMapError: when a file is missing or malformed (naming the file, and line where it helps).
    """
    directory = find_ndc_map(ndc_map_dir)
    ndc_to_rxcui = _read_ndc_to_rxcui(locations.join(directory, NDC_TO_RXCUI_FILE))
    rxcui_to_atc3 = _read_rxcui_to_atc3(locations.join(directory, RXCUI_TO_ATC4_FILE))
    pairs = sorted((ndc, rxcui_to_atc3[rxcui]) for ndc, rxcui in ndc_to_rxcui.items() if rxcui in rxcui_to_atc3)
    return pa.table(
        {"ndc": pa.array([p[0] for p in pairs], pa.string()), "atc3": pa.array([p[1] for p in pairs], pa.string())},
        schema=NDC_ATC3_SCHEMA,
    )
