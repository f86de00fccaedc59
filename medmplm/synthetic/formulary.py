"""Product codes for the curated drugs, and the GAMENet/G-BERT NDC mapping files.

Real NDCs, GSNs and RXCUIs are not reproduced: each drug gets stable 11-digit NDCs (5-digit labeler,
4-digit product, 2-digit package) derived from a CRC of its key, and a 6-digit GSN. As in MIMIC, a
drug has many NDCs (package sizes, manufacturers, relabelers): their number is heavy-tailed across
drugs (median 18, from 2 to :data:`MAX_PRODUCTS`) and orders pick among them Zipf-distributed
(:data:`PRODUCT_EXPONENT`), so a few NDCs carry most rows and many are seen once. Every NDC of a
drug maps to the drug's ATC-4 class; products share the drug's RXCUI or have one of their own
(another strength). The mapping files reproduce the formats users get from GAMENet's data folder:

* ``ndc2rxnorm_mapping.txt``: a Python 2 dict literal on one line, ``{'NDC': u'RXCUI', ...}``, read
  with ``eval``/``ast.literal_eval``. Some values are ``u''`` as in the original.
* ``ndc2atc_level4.csv``: ``RXCUI,YEAR,MONTH,NDC,ATC4``, one row per (product, ATC-4 class, month
  seen); consumers keep the first row per RXCUI.

A share of NDCs is deliberately left out of the chain (absent from the dict, mapped to ``u''``, or
with an RXCUI the ATC file lacks), as happens with the real files: rarely a drug's main product
(:data:`PRIMARY_UNMAPPED_PERCENT`), more often its rarer ones (:data:`OTHER_UNMAPPED_PERCENT`), so a
few per cent of PRESCRIPTIONS rows go unmapped, as with GAMENet's map.
"""

from __future__ import annotations

import itertools
import math
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

# NDCs per drug: round(exp(N(mu, sigma))) from the drug's hash, clipped to [1, MAX_PRODUCTS].
PRODUCT_COUNT_LOG_MEAN = 3.0
PRODUCT_COUNT_LOG_SD = 1.0
MAX_PRODUCTS = 80
# Zipf exponent of the orders over a drug's products (product 0 is the most used).
PRODUCT_EXPONENT = 1.15
# How an NDC fares in the mapping chain, by CRC bucket out of 100: buckets below the unmapped
# percentage are unmapped, split evenly between absent from the dict, u'' and an RXCUI without ATC.
PRIMARY_UNMAPPED_PERCENT = 1
OTHER_UNMAPPED_PERCENT = 6


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

    @property
    def maps(self) -> bool:
        """Whether NDC -> RXCUI -> ATC-4 reaches the drug's class for this NDC."""
        return self.in_rxnorm_map and not self.rxcui_is_empty and self.in_atc_file


@dataclass(frozen=True)
class Formulary:
    """Every drug's products, GSN, and the decoy NDCs that only the mapping file knows.

    ``product_cumulative[drug]`` holds the cumulative Zipf weights of the drug's products (empty for
    drugs without NDCs), for drawing a product per order.
    """

    products: dict[str, tuple[Product, ...]]
    gsn: dict[str, str]
    decoy_ndcs: tuple[tuple[str, str], ...]
    product_cumulative: dict[str, tuple[float, ...]]


def product_count(drug_key: str) -> int:
    """How many NDCs the formulary gives a drug (heavy-tailed across drugs, fixed per key)."""
    # Two 16-bit uniforms from one CRC, turned into a standard normal by Box-Muller.
    digest = stable_hash("product-count", drug_key)
    u1 = ((digest & 0xFFFF) + 0.5) / 65536
    u2 = ((digest >> 16) + 0.5) / 65536
    normal = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return max(1, min(MAX_PRODUCTS, round(math.exp(PRODUCT_COUNT_LOG_MEAN + PRODUCT_COUNT_LOG_SD * normal))))


def build_formulary() -> Formulary:
    """Derive the products of every curated drug; the result is the same in every process."""
    products: dict[str, tuple[Product, ...]] = {}
    gsn: dict[str, str] = {}
    cumulative: dict[str, tuple[float, ...]] = {}
    used_ndcs: set[str] = set()
    for drug in DRUGS:
        digest = stable_hash("drug", drug.key)
        gsn[drug.key] = f"{digest % 1_000_000:06d}"
        if drug.ndc_zero:
            products[drug.key] = ()
            cumulative[drug.key] = ()
            continue
        count = product_count(drug.key)
        primary_rxcui = 100_000 + stable_hash("rxcui", drug.key) % 1_900_000
        drug_products = []
        for index in range(count):
            ndc = _unique_ndc(drug.key, index, used_ndcs)
            bucket = stable_hash("map", ndc) % 100
            unmapped = PRIMARY_UNMAPPED_PERCENT if index == 0 else OTHER_UNMAPPED_PERCENT
            # Thirds of the unmapped buckets: absent from the dict, u'', an RXCUI the ATC file lacks.
            third = bucket * 3 // max(unmapped, 1) if bucket < unmapped else 3
            if third == 2:
                # An RXCUI of its own, so that no sibling's ATC rows map it.
                rxcui = primary_rxcui + 7 * index + 3
            elif index == 0 or bucket % 2:
                rxcui = primary_rxcui
            else:
                rxcui = primary_rxcui + 7 * index
            drug_products.append(
                Product(
                    drug=drug,
                    ndc=ndc,
                    rxcui=str(rxcui),
                    in_rxnorm_map=third != 0,
                    rxcui_is_empty=third == 1,
                    in_atc_file=third == 3,
                )
            )
        products[drug.key] = tuple(drug_products)
        cumulative[drug.key] = tuple(
            itertools.accumulate(1.0 / (rank + 1) ** PRODUCT_EXPONENT for rank in range(count))
        )
    decoys = []
    for index in range(60):
        ndc = _unique_ndc("decoy", index, used_ndcs)
        decoys.append((ndc, str(100_000 + stable_hash("decoy-rxcui", index) % 1_900_000)))
    return Formulary(products=products, gsn=gsn, decoy_ndcs=tuple(decoys), product_cumulative=cumulative)


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
            if not product.maps:
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
