"""Code ontologies: ancestor paths for ICD-9-CM diagnoses and ATC-3 medications, and their files.

An ontology file (``ontology/diagnosis.tsv``, ``ontology/medication.tsv`` in a prepared
directory) maps each vocabulary code to its ancestors, root first, excluding the code itself::

    code<TAB>ancestors
    4019<TAB>ICD9CM|390-459|401
    40391<TAB>ICD9CM|390-459|403|4039
    N02B<TAB>ATC|N|N02

Trees (G-BERT style):

* ICD-9-CM diagnosis: root -> chapter range (``390-459``) -> 3-character category (``401``;
  ``V04``; ``E888``) -> 4-character subcategory when the code has one more digit below it
  (``4039`` for ``40391``) -> code. A code that *is* a category (``042``) has only the root and
  chapter as ancestors. V and E codes have their own chapters (``V01-V91``, ``E000-E999``).
* ATC-3: root -> anatomical main group (``N``) -> therapeutic subgroup (``N02``) -> code.
* Any other medication vocabulary (NDC, drug names) has no hierarchy: every code's only
  ancestor is the root named for the vocabulary.

Node names are the codes' own prefixes, so a category node (``401``) and a diagnosis code
``401`` (rare: category-only codes such as ``042``) share a name; consumers that put nodes and
codes in one embedding table should prefix them if they need them apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

ICD9_ROOT = "ICD9CM"
ATC_ROOT = "ATC"
ONTOLOGY_HEADER = ("code", "ancestors")
ANCESTOR_SEPARATOR = "|"

# Undotted ICD-9-CM shapes, as MIMIC stores them. Written as RE2-compatible patterns so the same
# strings drive pyarrow.compute.match_substring_regex in the prepare pipeline.
# Numeric categories run 001-999 (000 is not a category).
ICD9_DIAGNOSIS_PATTERN = r"^(?:(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2})[0-9]{0,2}|V[0-9]{2,4}|E[0-9]{3,4})$"
ICD9_PROCEDURE_PATTERN = r"^[0-9]{2,4}$"
ATC3_PATTERN = r"^[A-Z][0-9]{2}[A-Z]$"

# ICD-9-CM diagnosis chapters (Tabular List, volume 1): (first, last 3-digit category, name).
ICD9_NUMERIC_CHAPTERS: tuple[tuple[int, int, str], ...] = (
    (1, 139, "001-139"),  # Infectious and parasitic diseases
    (140, 239, "140-239"),  # Neoplasms
    (240, 279, "240-279"),  # Endocrine, nutritional and metabolic diseases, immunity disorders
    (280, 289, "280-289"),  # Diseases of the blood and blood-forming organs
    (290, 319, "290-319"),  # Mental disorders
    (320, 389, "320-389"),  # Diseases of the nervous system and sense organs
    (390, 459, "390-459"),  # Diseases of the circulatory system
    (460, 519, "460-519"),  # Diseases of the respiratory system
    (520, 579, "520-579"),  # Diseases of the digestive system
    (580, 629, "580-629"),  # Diseases of the genitourinary system
    (630, 679, "630-679"),  # Complications of pregnancy, childbirth, and the puerperium
    (680, 709, "680-709"),  # Diseases of the skin and subcutaneous tissue
    (710, 739, "710-739"),  # Diseases of the musculoskeletal system and connective tissue
    (740, 759, "740-759"),  # Congenital anomalies
    (760, 779, "760-779"),  # Certain conditions originating in the perinatal period
    (780, 799, "780-799"),  # Symptoms, signs, and ill-defined conditions
    (800, 999, "800-999"),  # Injury and poisoning
)
ICD9_V_CHAPTER = "V01-V91"  # Supplementary classification: factors influencing health status
ICD9_E_CHAPTER = "E000-E999"  # Supplementary classification: external causes of injury

_ICD9_DIAGNOSIS_RE = re.compile(ICD9_DIAGNOSIS_PATTERN)
_ATC3_RE = re.compile(ATC3_PATTERN)


class OntologyError(ValueError):
    """A code does not fit its ontology, or an ontology file is malformed."""


def is_icd9_diagnosis(code: str) -> bool:
    """Whether ``code`` has the shape of an undotted ICD-9-CM diagnosis code."""
    return bool(_ICD9_DIAGNOSIS_RE.match(code))


def icd9_chapter(code: str) -> str:
    """The chapter range (e.g. ``"390-459"``) of an undotted ICD-9-CM diagnosis code."""
    if not is_icd9_diagnosis(code):
        raise OntologyError(f"{code!r} is not an undotted ICD-9-CM diagnosis code")
    if code[0] == "V":
        return ICD9_V_CHAPTER
    if code[0] == "E":
        return ICD9_E_CHAPTER
    category = int(code[:3])
    for first, last, name in ICD9_NUMERIC_CHAPTERS:
        if first <= category <= last:
            return name
    raise AssertionError(f"ICD9_NUMERIC_CHAPTERS does not cover category {category}")


def icd9_diagnosis_ancestors(code: str) -> list[str]:
    """Ancestors of an undotted ICD-9-CM diagnosis code, root first, excluding the code.

    >>> icd9_diagnosis_ancestors("40391")
    ['ICD9CM', '390-459', '403', '4039']
    """
    chapter = icd9_chapter(code)
    category_len = 4 if code[0] == "E" else 3
    ancestors = [ICD9_ROOT, chapter]
    if len(code) > category_len:
        ancestors.append(code[:category_len])
    if len(code) > category_len + 1:
        ancestors.append(code[: category_len + 1])
    return ancestors


def atc3_ancestors(code: str) -> list[str]:
    """Ancestors of an ATC level-3 code, root first, excluding the code.

    >>> atc3_ancestors("N02B")
    ['ATC', 'N', 'N02']
    """
    if not _ATC3_RE.match(code):
        raise OntologyError(f"{code!r} is not an ATC level-3 code (letter, 2 digits, letter, e.g. 'N02B')")
    return [ATC_ROOT, code[0], code[:3]]


def build_ontology(codes: Iterable[str], kind: str) -> dict[str, list[str]]:
    """Ancestor paths for every code.

    Args:
        codes: vocabulary codes.
        kind: ``"icd9_diagnosis"``, ``"atc3"``, or any other name for a flat vocabulary
            (e.g. ``"ndc"``, ``"drug"``), whose codes all hang off a root named ``kind.upper()``.

    Returns:
        code -> ancestors, root first.
    """
    if kind == "icd9_diagnosis":
        return {code: icd9_diagnosis_ancestors(code) for code in codes}
    if kind == "atc3":
        return {code: atc3_ancestors(code) for code in codes}
    root = kind.upper()
    return {code: [root] for code in codes}


def _check_node(name: str, where: str) -> None:
    if not name or any(ch in name for ch in "\t\n\r" + ANCESTOR_SEPARATOR):
        raise OntologyError(f"{where}: node name {name!r} is empty or contains a tab, newline or '|'")


def write_ontology(path: str | os.PathLike, ontology: Mapping[str, list[str]]) -> None:
    """Write an ontology file (rows sorted by code), via a temporary file and a rename.

    Args:
        path: destination ``.tsv`` file; its parent directory must exist.
        ontology: code -> ancestors, root first.
    """
    path = Path(path)
    for code, ancestors in ontology.items():
        _check_node(code, str(path))
        if not ancestors:
            raise OntologyError(f"{path}: code {code!r} has no ancestors (every code has at least the root)")
        for node in ancestors:
            _check_node(node, f"{path}: ancestors of {code!r}")
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(ONTOLOGY_HEADER) + "\n")
        for code in sorted(ontology):
            f.write(f"{code}\t{ANCESTOR_SEPARATOR.join(ontology[code])}\n")
    os.replace(tmp, path)


def read_ontology(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read an ontology file written by :func:`write_ontology`.

    Returns:
        code -> ancestors, root first (the code itself is not included).

    Raises:
        OntologyError: naming the file and line when the header or a line is malformed.
    """
    path = Path(path)
    ontology: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n")
        if tuple(header.split("\t")) != ONTOLOGY_HEADER:
            raise OntologyError(f"{path}:1: expected header 'code<TAB>ancestors', got {header!r}")
        for line_no, line in enumerate(f, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or not fields[0] or not fields[1]:
                raise OntologyError(f"{path}:{line_no}: expected 'code<TAB>ancestor|ancestor|...'")
            code, ancestors = fields
            if code in ontology:
                raise OntologyError(f"{path}:{line_no}: code {code!r} appears twice")
            nodes = ancestors.split(ANCESTOR_SEPARATOR)
            if not all(nodes):
                raise OntologyError(f"{path}:{line_no}: empty ancestor name in {ancestors!r}")
            ontology[code] = nodes
    return ontology
