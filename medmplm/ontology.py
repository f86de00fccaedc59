"""Code systems and ontologies: ancestor paths for diagnosis, procedure and medication codes, and their files.

An ontology file (``ontology/diagnosis.tsv``, ``ontology/procedure.tsv``, ``ontology/medication.tsv`` in a prepared
directory) maps each vocabulary code to its ancestors, root first, excluding the code itself::

    code<TAB>ancestors
    ICD9CM:4019<TAB>ICD9CM|390-459|401
    ICD9CM:40391<TAB>ICD9CM|390-459|403|4039
    ICD10CM:I2510<TAB>ICD10CM|I00-I99|I20-I25|I25|I251
    ICD10PCS:0016070<TAB>ICD10PCS|0|00|001|0016
    N02B<TAB>ATC|N|N02

Codes carry their system (schema 2 of the visit records): ``<SYSTEM>:<code>``, undotted, where SYSTEM is the OMOP
vocabulary id of the code system: ``ICD9CM`` and ``ICD10CM`` for diagnoses, ``ICD9Proc`` and ``ICD10PCS`` for
procedures. The prefix keeps the systems apart where their codes look alike (ICD-9's E and V codes: ``E8809`` is a fall
on stairs in ICD-9-CM and a plasma-protein disorder in ICD-10-CM). Schema-1 directories hold bare ICD-9 codes
(``build_ontology(codes, "icd9_diagnosis")``).

Trees (G-BERT style):

* ICD-9-CM diagnosis: root -> chapter range (``390-459``) -> 3-character category (``401``;
  ``V04``; ``E888``) -> 4-character subcategory when the code has one more digit below it
  (``4039`` for ``40391``) -> code. A code that *is* a category (``042``) has only the root and
  chapter as ancestors. V and E codes have their own chapters (``V01-V91``, ``E000-E999``).
* ICD-10-CM diagnosis: root -> chapter range (``I00-I99``) -> block (``I20-I25``) -> 3-character category (``I25``)
  -> 4-character subcategory (``I251``) when the code is longer -> code. Chapters and blocks are those of the
  ICD-10-CM tabular list, from the ``simple-icd-10-cm`` package (MIT licence; CMS/CDC's public-domain release),
  looked up by category, so codes retired in later releases still find their place. A category the release does
  not list hangs under an ``unlisted`` node instead of a chapter and block.
* ICD-9-CM procedure (volume 3): root -> chapter range (``35-39``) -> 2-digit category (``38``) -> 3-digit
  subcategory (``389``) when the code has 4 digits -> code.
* ICD-10-PCS: by its axes, each level one more character: root -> section (``0``, medical and surgical) -> body
  system (``00``) -> root operation (``001``) -> body part (``0016``) -> code (approach, device and qualifier).
* ATC-3: root -> anatomical main group (``N``) -> therapeutic subgroup (``N02``) -> code.
* Any other medication vocabulary (NDC, drug names) has no hierarchy: every code's only
  ancestor is the root named for the vocabulary.

Node names are the codes' own prefixes, so a category node (``401``) and a bare ICD-9 diagnosis code
``401`` (rare: category-only codes such as ``042``) share a name; consumers key nodes by their path from the root
(``ICD9CM|001-139``), which keeps the systems' trees apart too.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

# Code systems (OMOP vocabulary ids); also the roots of their trees.
ICD9CM = "ICD9CM"
ICD10CM = "ICD10CM"
ICD9PROC = "ICD9Proc"
ICD10PCS = "ICD10PCS"
DIAGNOSIS_SYSTEMS = {9: ICD9CM, 10: ICD10CM}  # by MIMIC-IV's icd_version
PROCEDURE_SYSTEMS = {9: ICD9PROC, 10: ICD10PCS}
SYSTEM_SEPARATOR = ":"

ICD9_ROOT = ICD9CM
ATC_ROOT = "ATC"
# Where an ICD-10-CM category the tabular list does not hold goes, in place of its chapter and block.
ICD10CM_UNLISTED = "unlisted"
ONTOLOGY_HEADER = ("code", "ancestors")
ANCESTOR_SEPARATOR = "|"

# Undotted ICD-9-CM shapes, as MIMIC stores them. Written as RE2-compatible patterns so the same
# strings drive pyarrow.compute.match_substring_regex in the prepare pipeline.
# Numeric categories run 001-999 (000 is not a category).
ICD9_DIAGNOSIS_PATTERN = r"^(?:(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2})[0-9]{0,2}|V[0-9]{2,4}|E[0-9]{3,4})$"
ICD9_PROCEDURE_PATTERN = r"^[0-9]{2,4}$"
# ICD-10-CM: a letter, a digit, then 1-5 characters (category's third character and up to 4 more), undotted.
ICD10CM_PATTERN = r"^[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$"
# ICD-10-PCS: exactly 7 characters, digits and letters but I and O.
ICD10PCS_PATTERN = r"^[0-9A-HJ-NP-Z]{7}$"
ATC3_PATTERN = r"^[A-Z][0-9]{2}[A-Z]$"
SYSTEM_PATTERNS = {
    ICD9CM: ICD9_DIAGNOSIS_PATTERN,
    ICD10CM: ICD10CM_PATTERN,
    ICD9PROC: ICD9_PROCEDURE_PATTERN,
    ICD10PCS: ICD10PCS_PATTERN,
}

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

# ICD-9-CM procedure chapters (Tabular List, volume 3): (first, last 2-digit category, name).
ICD9_PROCEDURE_CHAPTERS: tuple[tuple[int, int, str], ...] = (
    (0, 0, "00"),  # Procedures and interventions, not elsewhere classified
    (1, 5, "01-05"),  # Operations on the nervous system
    (6, 7, "06-07"),  # Operations on the endocrine system
    (8, 16, "08-16"),  # Operations on the eye
    (17, 17, "17"),  # Other miscellaneous procedures
    (18, 20, "18-20"),  # Operations on the ear
    (21, 29, "21-29"),  # Operations on the nose, mouth, and pharynx
    (30, 34, "30-34"),  # Operations on the respiratory system
    (35, 39, "35-39"),  # Operations on the cardiovascular system
    (40, 41, "40-41"),  # Operations on the hemic and lymphatic system
    (42, 54, "42-54"),  # Operations on the digestive system
    (55, 59, "55-59"),  # Operations on the urinary system
    (60, 64, "60-64"),  # Operations on the male genital organs
    (65, 71, "65-71"),  # Operations on the female genital organs
    (72, 75, "72-75"),  # Obstetrical procedures
    (76, 84, "76-84"),  # Operations on the musculoskeletal system
    (85, 86, "85-86"),  # Operations on the integumentary system
    (87, 99, "87-99"),  # Miscellaneous diagnostic and therapeutic procedures
)

_ICD9_DIAGNOSIS_RE = re.compile(ICD9_DIAGNOSIS_PATTERN)
_ATC3_RE = re.compile(ATC3_PATTERN)
_SYSTEM_RES = {system: re.compile(pattern) for system, pattern in SYSTEM_PATTERNS.items()}
_CHAPTER_RANGE_RE = re.compile(r"\(([A-Z][0-9A-Z]{2}-[A-Z][0-9A-Z]{2})\)\s*$")


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


def system_code(system: str, code: str) -> str:
    """A code with its system: ``system_code("ICD10CM", "I10") == "ICD10CM:I10"``."""
    return f"{system}{SYSTEM_SEPARATOR}{code}"


def split_system_code(code: str) -> tuple[str, str]:
    """``(system, bare code)`` of a system-prefixed code (``"ICD9CM:4019"`` -> ``("ICD9CM", "4019")``).

    Raises:
        OntologyError: when the code has no known system prefix or does not have its system's shape.
    """
    system, separator, bare = code.partition(SYSTEM_SEPARATOR)
    if not separator or system not in _SYSTEM_RES:
        raise OntologyError(
            f"{code!r} has no code-system prefix; expected one of {', '.join(s + SYSTEM_SEPARATOR for s in _SYSTEM_RES)}"
        )
    if not _SYSTEM_RES[system].match(bare):
        raise OntologyError(f"{code!r}: {bare!r} does not have the shape of an undotted {system} code")
    return system, bare


@functools.cache
def _icd10cm_category_place(category: str) -> tuple[str, str] | None:
    """``(chapter range, block)`` of a 3-character ICD-10-CM category, or None when the tabular list lacks it."""
    # Imported here: the package parses the whole tabular list when imported (seconds), and only ICD-10 data needs it.
    import simple_icd_10_cm as icd10cm

    if not icd10cm.is_category(category):
        return None
    block, chapter = icd10cm.get_ancestors(category)[-2:]
    # The package names a block of one category by that category alone ("B20" for B20-B20).
    block = block if "-" in block else f"{block}-{block}"
    match = _CHAPTER_RANGE_RE.search(icd10cm.get_description(chapter))
    if match is None:
        raise AssertionError(f"simple_icd_10_cm: chapter {chapter} has no code range in its title")
    return match.group(1), block


def icd10cm_ancestors(code: str) -> list[str]:
    """Ancestors of an undotted ICD-10-CM code, root first, excluding the code.

    >>> icd10cm_ancestors("I2510")
    ['ICD10CM', 'I00-I99', 'I20-I25', 'I25', 'I251']
    """
    if not _SYSTEM_RES[ICD10CM].match(code):
        raise OntologyError(f"{code!r} is not an undotted ICD-10-CM code")
    category = code[:3]
    place = _icd10cm_category_place(category)
    ancestors = [ICD10CM, *(place if place is not None else (ICD10CM_UNLISTED,))]
    if len(code) > 3:
        ancestors.append(category)
    if len(code) > 4:
        ancestors.append(code[:4])
    return ancestors


def icd9_procedure_ancestors(code: str) -> list[str]:
    """Ancestors of an undotted ICD-9-CM procedure code, root first, excluding the code.

    >>> icd9_procedure_ancestors("3893")
    ['ICD9Proc', '35-39', '38', '389']
    """
    if not _SYSTEM_RES[ICD9PROC].match(code):
        raise OntologyError(f"{code!r} is not an undotted ICD-9-CM procedure code (2-4 digits)")
    category = int(code[:2])
    chapter = next(name for first, last, name in ICD9_PROCEDURE_CHAPTERS if first <= category <= last)
    ancestors = [ICD9PROC, chapter]
    if len(code) > 2:
        ancestors.append(code[:2])
    if len(code) > 3:
        ancestors.append(code[:3])
    return ancestors


def icd10pcs_ancestors(code: str) -> list[str]:
    """Ancestors of an ICD-10-PCS code by its axes (section, body system, root operation, body part), root first.

    >>> icd10pcs_ancestors("0016070")
    ['ICD10PCS', '0', '00', '001', '0016']
    """
    if not _SYSTEM_RES[ICD10PCS].match(code):
        raise OntologyError(f"{code!r} is not an ICD-10-PCS code (7 characters, digits and letters but I and O)")
    return [ICD10PCS, code[:1], code[:2], code[:3], code[:4]]


_SYSTEM_ANCESTORS = {
    ICD9CM: icd9_diagnosis_ancestors,
    ICD10CM: icd10cm_ancestors,
    ICD9PROC: icd9_procedure_ancestors,
    ICD10PCS: icd10pcs_ancestors,
}


def system_code_ancestors(code: str) -> list[str]:
    """Ancestors of a system-prefixed diagnosis or procedure code (``ICD10PCS:0016070``), root first."""
    system, bare = split_system_code(code)
    return _SYSTEM_ANCESTORS[system](bare)


def build_ontology(codes: Iterable[str], kind: str) -> dict[str, list[str]]:
    """Ancestor paths for every code.

    Args:
        codes: vocabulary codes.
        kind: ``"coded"`` (system-prefixed ICD diagnoses or procedures, schema 2), ``"icd9_diagnosis"`` (bare
            ICD-9-CM diagnoses, schema 1), ``"atc3"``, or any other name for a flat vocabulary (e.g. ``"ndc"``,
            ``"drug"``), whose codes all hang off a root named ``kind.upper()``.

    Returns:
        code -> ancestors, root first.
    """
    if kind == "coded":
        return {code: system_code_ancestors(code) for code in codes}
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
