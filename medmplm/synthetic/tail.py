"""The long tail of ICD-9-CM codes: heavy-tailed draws over the real hierarchy, and code families.

Real MIMIC-III coding has a few very frequent codes and thousands of rare ones: over half the
distinct diagnosis codes of 129 admissions occur once. Two mechanisms give the generator that tail
without losing the latent model's signal:

* :class:`CodeFamilies`: a condition's curated code stands for its family (the diagnosis
  category ``428``, the procedure subcategory ``372``). Most draws keep the curated code; the rest
  take one of the family's real children, Zipf-distributed, so rare leaves share a parent with
  common ones and carry the same signal through it. A child that is another modelled condition's
  code is never drawn, so a code keeps one meaning.
* :class:`ChapterTail`: secondary and incidental codes come from the whole code system, chapter
  first (shares from :data:`DIAGNOSIS_CHAPTER_SHARES`, tilted by the patient's latent factors),
  then a Zipf-distributed category within the chapter, then a Zipf-distributed leaf within it.

Ranks inside a chapter or a family are fixed: codes the curated catalogue uses come first (they
are the common ones in MIMIC), then "unspecified"/"NOS" codes (coders' favourites), then the rest
in a stable hashed order. Every draw is from the patient's own ``random.Random``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from medmplm.ontology import ICD9_E_CHAPTER, ICD9_V_CHAPTER
from medmplm.synthetic.catalogue.icd9cm import diagnosis_category
from medmplm.synthetic.formulary import stable_hash

# Diagnosis chapters' approximate shares of MIMIC-III's DIAGNOSES_ICD rows among adults, rounded
# from published per-chapter tabulations; they only set where the incidental tail's mass sits.
# Latent factor a chapter leans on, if any: a patient high on it gets more of that chapter's codes.
DIAGNOSIS_CHAPTER_SHARES: dict[str, tuple[float, str | None]] = {
    "001-139": (0.045, None),
    "140-239": (0.04, "oncology"),
    "240-279": (0.12, "metabolic"),
    "280-289": (0.05, None),
    "290-319": (0.055, "psych"),
    "320-389": (0.045, None),
    "390-459": (0.19, "cardio"),
    "460-519": (0.075, "pulmonary"),
    "520-579": (0.065, "liver"),
    "580-629": (0.06, "renal"),
    "630-679": (0.0, None),
    "680-709": (0.015, None),
    "710-739": (0.03, None),
    "740-759": (0.008, None),
    "760-779": (0.0, None),
    "780-799": (0.05, None),
    "800-999": (0.06, None),
    ICD9_V_CHAPTER: (0.1, None),
    ICD9_E_CHAPTER: (0.03, None),
}
# Newborn stays are coded from a different part of the book.
NEWBORN_CHAPTER_SHARES: dict[str, tuple[float, str | None]] = {
    "760-779": (0.55, None),
    ICD9_V_CHAPTER: (0.25, None),
    "740-759": (0.1, None),
    "780-799": (0.04, None),
    "280-289": (0.03, None),
    "001-139": (0.03, None),
}

# Procedure chapters (ICD-9-CM volume 3, by 2-digit category) with approximate shares of MIMIC-III's
# PROCEDURES_ICD rows and the latent factor each leans on.
PROCEDURE_CHAPTERS: tuple[tuple[int, int, float, str | None], ...] = (
    (0, 0, 0.04, "cardio"),
    (1, 5, 0.04, None),
    (6, 7, 0.005, None),
    (8, 16, 0.003, None),
    (17, 17, 0.004, None),
    (18, 20, 0.002, None),
    (21, 29, 0.01, None),
    (30, 34, 0.07, "pulmonary"),
    (35, 39, 0.24, "cardio"),
    (40, 41, 0.01, "oncology"),
    (42, 54, 0.14, "liver"),
    (55, 59, 0.03, "renal"),
    (60, 64, 0.003, None),
    (65, 71, 0.005, None),
    (72, 75, 0.0, None),
    (76, 84, 0.05, None),
    (85, 86, 0.04, None),
    (87, 99, 0.30, None),
)

_NOS = re.compile(r"unspecified|\bNOS\b|not elsewhere|NEC\b", re.IGNORECASE)
# Title words that make a code impossible for the other sex (checked on the long title).
_FEMALE_ONLY = re.compile(
    r"\b(?:female|uter\w*|ovar\w*|vagin\w*|vulv\w*|cervi\w*|pregnan\w*|fallopian|endometri\w*|menstru\w*|mother|"
    r"puerper\w*|obstetric\w*|lactation|postpartum|antepartum|breast-feeding)\b",
    re.IGNORECASE,
)
_MALE_ONLY = re.compile(
    r"\b(?:male|prostat\w*|testi\w*|scrot\w*|penis|penile|seminal|epididym\w*|spermat\w*)\b", re.IGNORECASE
)
_NEWBORN_ONLY = re.compile(r"\b(?:newborn|neonat\w*|fetus|fetal|perinatal|liveborn|preterm|birth)\b", re.IGNORECASE)


def _zipf_cumulative(count: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(count)))


def rank_codes(codes: Iterable[str], titles: Mapping[str, tuple[str, str]], favoured: Mapping[str, float]) -> list[str]:
    """Codes in frequency-rank order: ``favoured`` first (highest weight first), then NOS codes, then hashed order."""

    def key(code: str) -> tuple[int, float, int]:
        if code in favoured:
            return (0, -favoured[code], 0)
        return (1 if _NOS.search(titles[code][1]) else 2, 0.0, stable_hash("rank", code))

    return sorted(codes, key=key)


class CodeFamilies:
    """A curated code's real siblings, drawn Zipf-distributed when a draw leaves the curated code.

    Args:
        titles: every leaf code of the system -> (short, long title).
        family_of: code -> its family name (a category or subcategory).
        reserved: codes the catalogue gives a meaning of their own (another condition's code, such as
            ESRD's 5856 beside CKD's 5853 in category 585); they are never drawn as a sibling.
        exponent: Zipf exponent over the ranks: the curated code first, then its free siblings.
    """

    def __init__(
        self,
        titles: Mapping[str, tuple[str, str]],
        family_of: Callable[[str], str],
        reserved: frozenset[str],
        exponent: float,
    ) -> None:
        members: dict[str, list[str]] = {}
        for code in titles:
            if code not in reserved:
                members.setdefault(family_of(code), []).append(code)
        self._family_of = family_of
        self._siblings = {family: rank_codes(codes, titles, {}) for family, codes in members.items()}
        # Rank 0 is the curated code itself, so the cumulative weights have one more entry than the siblings.
        self._cumulative = {
            family: _zipf_cumulative(len(codes) + 1, exponent) for family, codes in self._siblings.items()
        }

    def vary(self, code: str, probability: float, rng: random.Random) -> str:
        """``code`` itself, or with ``probability`` a draw by rank over ``code`` and its free siblings."""
        if rng.random() >= probability:
            return code
        family = self._family_of(code)
        siblings = self._siblings.get(family)
        if not siblings:
            return code
        cumulative = self._cumulative[family]
        rank = bisect.bisect(cumulative, rng.random() * cumulative[-1])
        return code if rank == 0 else siblings[rank - 1]


@dataclass(frozen=True)
class _Chapter:
    share: float
    factor: str | None
    codes: tuple[str, ...]
    cumulative: tuple[float, ...]


class ChapterTail:
    """Heavy-tailed draws over a code system: chapter (tilted by latent factors), category, leaf.

    Args:
        titles: every leaf code -> (short, long title).
        chapter_of: code -> chapter name; codes whose chapter is not in ``shares`` are never drawn.
        category_of: code -> category name.
        shares: chapter -> (share of draws, latent factor it leans on or None).
        favoured: codes the catalogue uses, with weights; they and their categories rank first.
        category_exponent, leaf_exponent: Zipf exponents over a chapter's ranked categories and a
            category's ranked leaves.
        exclude: long-title pattern of codes never drawn (another sex's codes, newborn codes).
        exclude_categories: categories never drawn: those of modelled conditions, whose codes must
            mean the condition (a heart failure code only for a patient with heart failure).
    """

    def __init__(
        self,
        titles: Mapping[str, tuple[str, str]],
        chapter_of: Callable[[str], str],
        category_of: Callable[[str], str],
        shares: Mapping[str, tuple[float, str | None]],
        favoured: Mapping[str, float],
        category_exponent: float,
        leaf_exponent: float,
        exclude: re.Pattern[str] | None = None,
        exclude_categories: frozenset[str] = frozenset(),
    ) -> None:
        by_chapter: dict[str, dict[str, list[str]]] = {}
        for code, (_, long_title) in titles.items():
            chapter = chapter_of(code)
            if shares.get(chapter, (0.0, None))[0] <= 0 or (exclude is not None and exclude.search(long_title)):
                continue
            if category_of(code) in exclude_categories:
                continue
            by_chapter.setdefault(chapter, {}).setdefault(category_of(code), []).append(code)
        category_weight: dict[str, float] = {}
        for code, weight in favoured.items():
            if code in titles:
                category = category_of(code)
                category_weight[category] = category_weight.get(category, 0.0) + weight
        self._chapters: dict[str, _Chapter] = {}
        for chapter, categories in sorted(by_chapter.items()):
            category_rank = sorted(
                categories,
                key=lambda name: (
                    (0, -category_weight[name], 0)
                    if name in category_weight
                    else (1, 0.0, stable_hash("category", name))
                ),
            )
            category_mass = _zipf_cumulative(len(category_rank), category_exponent)
            codes: list[str] = []
            weights: list[float] = []
            previous = 0.0
            for category, cumulative in zip(category_rank, category_mass):
                mass = cumulative - previous
                previous = cumulative
                leaves = rank_codes(categories[category], titles, favoured)
                leaf_mass = _zipf_cumulative(len(leaves), leaf_exponent)
                codes.extend(leaves)
                weights.extend(mass * (high - low) / leaf_mass[-1] for low, high in zip([0.0, *leaf_mass], leaf_mass))
            share, factor = shares[chapter]
            self._chapters[chapter] = _Chapter(share, factor, tuple(codes), tuple(itertools.accumulate(weights)))
        self._names = tuple(self._chapters)

    @property
    def codes(self) -> set[str]:
        """Every code this tail can draw."""
        return {code for chapter in self._chapters.values() for code in chapter.codes}

    def chapter_weights(self, factors: Mapping[str, float], tilt: float) -> list[float]:
        """Cumulative chapter weights for a patient: ``share * exp(tilt * factor)``."""
        weights = []
        for name in self._names:
            chapter = self._chapters[name]
            factor = factors.get(chapter.factor, 0.0) if chapter.factor else 0.0
            weights.append(chapter.share * math.exp(tilt * factor))
        return list(itertools.accumulate(weights))

    def draw(self, rng: random.Random, chapter_cumulative: list[float], count: int) -> list[str]:
        """``count`` codes: each a chapter by ``chapter_cumulative``, then a leaf by rank."""
        drawn = []
        for _ in range(count):
            name = self._names[bisect.bisect(chapter_cumulative, rng.random() * chapter_cumulative[-1])]
            chapter = self._chapters[name]
            drawn.append(chapter.codes[bisect.bisect(chapter.cumulative, rng.random() * chapter.cumulative[-1])])
        return drawn


def procedure_chapter(code: str) -> str:
    """The volume-3 chapter (``"35-39"``) of an undotted procedure code."""
    category = int(code[:2])
    for first, last, _, _ in PROCEDURE_CHAPTERS:
        if first <= category <= last:
            return f"{first:02d}-{last:02d}"
    raise AssertionError(f"PROCEDURE_CHAPTERS does not cover category {category:02d}")


PROCEDURE_CHAPTER_SHARES: dict[str, tuple[float, str | None]] = {
    f"{first:02d}-{last:02d}": (share, factor) for first, last, share, factor in PROCEDURE_CHAPTERS
}


def diagnosis_family(code: str) -> str:
    """A diagnosis code's family for :class:`CodeFamilies`: its category."""
    return diagnosis_category(code)


def procedure_family(code: str) -> str:
    """A procedure code's family for :class:`CodeFamilies`: its 3-digit subcategory (2 digits for 3-digit codes)."""
    return code[:3] if len(code) == 4 else code[:2]


def diagnosis_exclusions(sex: str, newborn: bool) -> re.Pattern[str]:
    """Long-title pattern of diagnosis codes a patient of this sex and age group cannot have."""
    parts = [_MALE_ONLY.pattern if sex == "F" else _FEMALE_ONLY.pattern]
    if not newborn:
        parts.append(_NEWBORN_ONLY.pattern)
    return re.compile("|".join(parts), re.IGNORECASE)
