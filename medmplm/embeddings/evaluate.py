"""How well embeddings place related items together: the AUC of cosine similarity, known-related pairs against random
pairs (as in Beam et al.'s cui2vec and Hong et al.'s KESER evaluations).

Relations (:data:`RELATIONS`):

* ``icd9_category``: two ICD-9-CM diagnosis codes of the same 3-character category (``ICD9CM:4019``, ``ICD9CM:4011``;
  4 characters for E codes), from the codes themselves (``medmplm.ontology``'s tree).
* ``drug_condition``: a diagnosis code of a condition and the ATC-3 class of a drug that treats it, from the synthetic
  catalogue's ground truth (``medmplm.synthetic.catalogue.conditions``: each condition's codes and drugs).
* ``code_term``: a diagnosis code and a phrase notes use for the same condition, from the catalogue (its synonyms).

For each relation the random pairs join an item of the related pairs' left side and one of their right side at random,
excluding related pairs, so both sets draw on the same items. Embeddings compared side by side are scored on the same
pairs: only items every one of them embeds (with a non-zero vector) take part, and a relation is scored only by the
embeddings that hold both of its kinds (a model's code embeddings have no terms). The related pairs left out because
an embedding lacks an item are counted in the results.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medmplm.embeddings.sppmi import Embeddings

RELATIONS = ("icd9_category", "drug_condition", "code_term")
# Each relation's (left kind, right kind).
RELATION_KINDS = {
    "icd9_category": ("diagnosis", "diagnosis"),
    "drug_condition": ("diagnosis", "medication"),
    "code_term": ("diagnosis", "term"),
}
DEFAULT_RANDOM_PER_RELATED = 5
# Random pairs are drawn from the full list of candidates up to this many candidates, by rejection above.
ENUMERATE_UP_TO = 200_000

Item = tuple[str, str]


def icd9_category(item: str) -> str | None:
    """The 3-character category of an ICD-9-CM diagnosis code (system-prefixed or bare), None for any other code."""
    from medmplm.ontology import ICD9CM, SYSTEM_SEPARATOR, is_icd9_diagnosis

    system, separator, bare = item.partition(SYSTEM_SEPARATOR)
    if not separator:
        bare = item
    elif system != ICD9CM:
        return None
    if not is_icd9_diagnosis(bare):
        return None
    return bare[: 4 if bare.startswith("E") else 3]


def icd9_category_pairs(diagnoses: Sequence[str]) -> set[tuple[Item, Item]]:
    """Every pair of distinct diagnosis codes of one ICD-9 category, each pair once (in name order)."""
    by_category: dict[str, list[str]] = {}
    for code in sorted(set(diagnoses)):
        category = icd9_category(code)
        if category is not None:
            by_category.setdefault(category, []).append(code)
    return {
        (("diagnosis", a), ("diagnosis", b))
        for codes in by_category.values()
        for a, b in itertools.combinations(codes, 2)
    }


def catalogue_pairs(diagnoses: Sequence[str]) -> dict[str, set[tuple[Item, Item]]]:
    """The catalogue's ``drug_condition`` and ``code_term`` pairs, its ICD-9 codes named as ``diagnoses`` names them
    (``ICD9CM:4019`` in schema-2 data, ``4019`` in schema 1)."""
    from medmplm.embeddings.terms import normalise_term
    from medmplm.ontology import ICD9CM, system_code
    from medmplm.synthetic.catalogue import conditions, drugs

    present = set(diagnoses)

    def diagnosis(code: str) -> Item:
        prefixed = system_code(ICD9CM, code)
        return ("diagnosis", prefixed if prefixed in present or code not in present else code)

    atc3 = {drug.key: drug.atc4[:4] for drug in drugs.DRUGS}
    pairs: dict[str, set[tuple[Item, Item]]] = {"drug_condition": set(), "code_term": set()}
    groups = (
        *conditions.CHRONIC_CONDITIONS,
        *conditions.ADMISSION_REASONS,
        *conditions.COMPLICATIONS,
        *conditions.MINOR_CONDITIONS,
        *conditions.HISTORIES,
    )
    for condition in groups:
        codes = [code for code, _ in condition.codes] if hasattr(condition, "codes") else [condition.code]
        for code in (c for c in codes if c is not None):
            for drug, _ in condition.drugs:
                pairs["drug_condition"].add((diagnosis(code), ("medication", atc3[drug])))
            for phrase in condition.phrases:
                pairs["code_term"].add((diagnosis(code), ("term", normalise_term(phrase))))
    return pairs


def related_pairs(diagnoses: Sequence[str]) -> dict[str, set[tuple[Item, Item]]]:
    """Every relation's known pairs over the given diagnosis codes (and the catalogue's drugs and terms)."""
    return {"icd9_category": icd9_category_pairs(diagnoses), **catalogue_pairs(diagnoses)}


def random_pairs(
    related: Sequence[tuple[Item, Item]], count: int, rng: np.random.Generator
) -> list[tuple[Item, Item]]:
    """Up to ``count`` distinct pairs of a left and a right item of ``related`` that are not related (nor one item
    twice), drawn uniformly; for a relation between items of one kind, pairs of any two of its items, in name
    order."""
    lefts = sorted({left for left, _ in related})
    rights = sorted({right for _, right in related})
    # Pairs of one kind (codes of one category): either item may come from any related pair.
    symmetric = all(left[0] == right[0] for left, right in related)
    if symmetric:
        lefts = rights = sorted(set(lefts) | set(rights))
    excluded = set(related) | {(b, a) for a, b in related}

    def allowed(a: Item, b: Item) -> bool:
        return a != b and (a, b) not in excluded and (not symmetric or a < b)

    if len(lefts) * len(rights) <= ENUMERATE_UP_TO:
        candidates = [(a, b) for a in lefts for b in rights if allowed(a, b)]
        if len(candidates) <= count:
            return candidates
        return [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False))]
    # Too many candidates to list: draw and reject, up to as many as there are.
    if symmetric:
        pairs = len(lefts) * (len(lefts) - 1) // 2
    else:
        pairs = len(lefts) * len(rights) - len(set(lefts) & set(rights))
    count = min(count, pairs - len(set(related)))
    drawn: dict[tuple[Item, Item], None] = {}
    while len(drawn) < count:
        for i, j in zip(rng.integers(len(lefts), size=count), rng.integers(len(rights), size=count), strict=True):
            a, b = lefts[i], rights[j]
            if symmetric and b < a:
                a, b = b, a
            if allowed(a, b) and len(drawn) < count:
                drawn[(a, b)] = None
    return list(drawn)


@dataclass
class RelationScore:
    """One embedding's result on one relation."""

    embeddings: str
    relation: str
    auc: float
    related_pairs: int
    random_pairs: int
    related_pairs_left_out: int

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _unit_vectors(embeddings: Embeddings) -> dict[Item, np.ndarray]:
    """Item -> its unit-length vector; items with a zero vector are left out (no direction, no cosine)."""
    norms = np.linalg.norm(embeddings.vectors, axis=1)
    return {
        (kind, item): embeddings.vectors[row] / norms[row]
        for row, (kind, item) in enumerate(zip(embeddings.kinds, embeddings.items, strict=True))
        if norms[row] > 0
    }


def evaluate(
    named: Sequence[tuple[str, Embeddings]], random_per_related: int = DEFAULT_RANDOM_PER_RELATED, seed: int = 0
) -> list[RelationScore]:
    """Score embeddings side by side on every relation (see the module docstring).

    Args:
        named: ``(name, embeddings)`` pairs; the names label the results.
        random_per_related: random pairs drawn per related pair.
        seed: seeds the random pairs (the same for every embedding).
    """
    from sklearn.metrics import roc_auc_score

    vectors = {name: _unit_vectors(embeddings) for name, embeddings in named}
    diagnoses = sorted({item for name in vectors for kind, item in vectors[name] if kind == "diagnosis"})
    known = related_pairs(diagnoses)
    scores = []
    for relation in RELATIONS:
        left_kind, right_kind = RELATION_KINDS[relation]
        held = {name: {kind for kind, _ in vectors[name]} for name in vectors}
        scorers = [name for name in vectors if {left_kind, right_kind} <= held[name]]
        if not scorers:
            continue
        shared = set.intersection(*(set(vectors[name]) for name in scorers))
        embedded = {name: set(vectors[name]) for name in scorers}
        universe = {pair for pair in known[relation] if any(set(pair) <= embedded[name] for name in scorers)}
        used = sorted(pair for pair in universe if set(pair) <= shared)
        if not used:
            continue
        rng = np.random.default_rng(seed)
        negatives = random_pairs(used, random_per_related * len(used), rng)
        labels = np.r_[np.ones(len(used)), np.zeros(len(negatives))]
        for name in scorers:
            table = vectors[name]
            cosines = np.array([float(table[a] @ table[b]) for a, b in [*used, *negatives]])
            scores.append(
                RelationScore(
                    embeddings=name,
                    relation=relation,
                    auc=float(roc_auc_score(labels, cosines)) if len(negatives) else float("nan"),
                    related_pairs=len(used),
                    random_pairs=len(negatives),
                    related_pairs_left_out=len(universe) - len(used),
                )
            )
    return scores


__all__ = [
    "DEFAULT_RANDOM_PER_RELATED",
    "RELATIONS",
    "RELATION_KINDS",
    "RelationScore",
    "catalogue_pairs",
    "evaluate",
    "icd9_category",
    "icd9_category_pairs",
    "random_pairs",
    "related_pairs",
]
