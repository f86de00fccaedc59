"""``manifest.json`` of a prepared directory: what went in, what came out, what was left out and why.

The manifest holds no wall-clock timestamp, so rerunning prepare on the same input writes the
same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medmplm.data import locations
from medmplm.data.schema import MANIFEST_FILE

# Written by the synthetic MIMIC-III generator (medmplm.synthetic, its MANIFEST_FILE) into every release it makes;
# named here rather than imported because no module imports the generator.
SYNTHETIC_MARKER_FILE = "synthetic_manifest.json"


@dataclass
class Manifest:
    """Contents of ``manifest.json``.

    Attributes:
        schema_version: ``medmplm.data.schema.SCHEMA_VERSION`` of the visit files.
        options: the prepare options used.
        inputs: per input file: ``file``, ``bytes``, ``sha256``.
        tables: per input table: ``rows_read``, ``rows_kept``, ``dropped`` and ``quarantined`` counts by reason.
        dropped: drop counts by reason, all tables together.
        quarantined: quarantine counts by reason, all tables together.
        medications: vocabulary used and NDC mapping coverage (``unmapped_ndc_rows``, ...).
        splits: per split: ``admissions``, ``patients``, ``files``, label counts.
        vocab: which split the vocabularies count, and their sizes.
        definitions: how labels, splits, ordering and duplicates are defined.
        versions: library versions that produced the output.
        synthetic: the input was a release of the synthetic MIMIC generator, not patient records.
        source: the input layout: ``mimic3``, ``mimic4`` or ``meds``.
        codes: distinct diagnosis and procedure codes per code system, and ICD-10 -> ICD-9 mapping counts.
    """

    schema_version: int
    options: dict[str, Any]
    inputs: dict[str, Any]
    tables: dict[str, Any]
    dropped: dict[str, int]
    quarantined: dict[str, int]
    medications: dict[str, Any]
    splits: dict[str, Any]
    vocab: dict[str, Any]
    definitions: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False
    source: str = "mimic3"
    codes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**data)


def is_synthetic_release(mimic_dir: str | os.PathLike) -> bool:
    """Whether ``mimic_dir`` (a local path or URI) was written by the synthetic generator (it holds its marker)."""
    return locations.is_file(locations.join(locations.resolve(str(mimic_dir)), SYNTHETIC_MARKER_FILE))


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (sorted keys, via a temporary file and a rename); returns its path."""
    path = Path(directory) / MANIFEST_FILE
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """Read ``manifest.json`` from a prepared directory (a local path or URI)."""
    with locations.open_input_stream(locations.join(locations.resolve(str(directory)), MANIFEST_FILE)) as stream:
        return Manifest.from_dict(json.loads(stream.read().decode("utf-8")))
