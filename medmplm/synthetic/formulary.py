"""Product codes for the curated drugs, and the GAMENet/G-BERT NDC mapping files.

Real NDCs, GSNs and RXCUIs are not reproduced: each drug gets 1-3 stable 11-digit NDCs (5-digit
labeler, 4-digit product, 2-digit package) derived from a CRC of its key, one RXCUI per product and a
6-digit GSN. The mapping files reproduce the formats users get from GAMENet's data folder:

* ``ndc2rxnorm_mapping.txt``: a Python 2 dict literal on one line, ``{'NDC': u'RXCUI', ...}``, read
  with ``eval``/``ast.literal_eval``. Some values are ``u''`` as in the original.
* ``ndc2atc_level4.csv``: ``RXCUI,YEAR,MONTH,NDC,ATC4``, one row per (product, ATC-4 class, month
  seen); consumers keep the first row per RXCUI.

A fixed share of NDCs is deliberately left out of the chain (absent from the dict, mapped to
``u''``, or with an RXCUI the ATC file lacks), as happens with the real files.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from medmplm.synthetic.catalogue.drugs import DRUGS, Drug

LABELERS: tuple[str, ...] = (
    "00904",
    "51079",
    "00054",
    "00409",
    "00338",
    "63323",
    "00781",
    "00074",
    "00006",
    "00093",
    "00172",
    "68084",
    "00121",
    "00182",
    "60505",
    "00378",
    "55390",
    "00487",
    "00085",
    "00002",
    "00143",
    "00641",
    "00703",
    "00264",
    "10019",
    "49884",
    "63739",
    "66553",
    "00574",
    "58177",
)

# How an NDC fares in the mapping chain, by CRC bucket out of 100.
_ABSENT_FROM_RXNORM_MAP = 5
_EMPTY_RXCUI = 7
_RXCUI_WITHOUT_ATC = 10


def stable_hash(*parts: object) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` is salted per process)."""
    return zlib.crc32("|".join(str(part) for part in parts).encode("utf-8"))


@dataclass(frozen=True)
class Product:
    """One NDC of a drug and where it lands in the NDC -> RXCUI -> ATC-4 chain."""

    drug: Drug
    ndc: str
    rxcui: str
    in_rxnorm_map: bool
    rxcui_is_empty: bool
    in_atc_file: bool


@dataclass(frozen=True)
class Formulary:
    """Every drug's products, GSN, and the decoy NDCs that only the mapping file knows."""

    products: dict[str, tuple[Product, ...]]
    gsn: dict[str, str]
    decoy_ndcs: tuple[tuple[str, str], ...]


def build_formulary() -> Formulary:
    """Derive the products of every curated drug; the result is the same in every process."""
    products: dict[str, tuple[Product, ...]] = {}
    gsn: dict[str, str] = {}
    used_ndcs: set[str] = set()
    for drug in DRUGS:
        digest = stable_hash("drug", drug.key)
        gsn[drug.key] = f"{digest % 1_000_000:06d}"
        if drug.ndc_zero:
            products[drug.key] = ()
            continue
        count = 1 + digest % 3
        primary_rxcui = 100_000 + stable_hash("rxcui", drug.key) % 1_900_000
        drug_products = []
        for index in range(count):
            ndc = _unique_ndc(drug.key, index, used_ndcs)
            bucket = stable_hash("map", ndc) % 100
            rxcui = primary_rxcui if index == 0 or bucket % 2 else primary_rxcui + 7 * index
            drug_products.append(
                Product(
                    drug=drug,
                    ndc=ndc,
                    rxcui=str(rxcui),
                    in_rxnorm_map=bucket >= _ABSENT_FROM_RXNORM_MAP,
                    rxcui_is_empty=_ABSENT_FROM_RXNORM_MAP <= bucket < _EMPTY_RXCUI,
                    in_atc_file=bucket >= _RXCUI_WITHOUT_ATC,
                )
            )
        products[drug.key] = tuple(drug_products)
    decoys = []
    for index in range(60):
        ndc = _unique_ndc("decoy", index, used_ndcs)
        decoys.append((ndc, str(100_000 + stable_hash("decoy-rxcui", index) % 1_900_000)))
    return Formulary(products=products, gsn=gsn, decoy_ndcs=tuple(decoys))


def _unique_ndc(key: str, index: int, used: set[str]) -> str:
    attempt = 0
    while True:
        digest = stable_hash("ndc", key, index, attempt)
        labeler = LABELERS[digest % len(LABELERS)]
        ndc = f"{labeler}{(digest >> 5) % 10_000:04d}{(digest >> 19) % 100:02d}"
        if ndc not in used:
            used.add(ndc)
            return ndc
        attempt += 1


def write_ndc2rxnorm(path: Path, formulary: Formulary) -> int:
    """Write ``ndc2rxnorm_mapping.txt`` as GAMENet ships it; returns the number of entries."""
    entries = []
    for drug in DRUGS:
        for product in formulary.products[drug.key]:
            if not product.in_rxnorm_map:
                continue
            entries.append((product.ndc, "" if product.rxcui_is_empty else product.rxcui))
    entries.extend(formulary.decoy_ndcs)
    # The original is a dict dumped by Python 2, in hash order: interleave deterministically.
    entries.sort(key=lambda entry: stable_hash("order", entry[0]))
    body = ", ".join(f"'{ndc}': u'{rxcui}'" for ndc, rxcui in entries)
    path.write_text("{" + body + "}", encoding="utf-8")
    return len(entries)


def write_ndc2atc(path: Path, formulary: Formulary) -> int:
    """Write ``ndc2atc_level4.csv`` (RXCUI,YEAR,MONTH,NDC,ATC4); returns the number of data rows."""
    lines = ["RXCUI,YEAR,MONTH,NDC,ATC4"]
    for drug in DRUGS:
        for product in formulary.products[drug.key]:
            if not product.in_atc_file or product.rxcui_is_empty or not product.in_rxnorm_map:
                continue
            digest = stable_hash("atc-rows", product.ndc)
            months_seen = 1 + digest % 3
            for atc4 in (drug.atc4, *drug.extra_atc4):
                for seen in range(months_seen):
                    year = 2008 + (digest >> (4 + seen)) % 9
                    month = 1 + (digest >> (8 + seen)) % 12
                    lines.append(f"{product.rxcui},{year},{month},{product.ndc},{atc4}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1
