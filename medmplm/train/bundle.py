"""Shipping a saved model directory to training workers through the Ray object store.

The driver builds the initial model once (vocabularies, ontology, a tokenizer trained on the notes) and every worker
must start from exactly those weights. Workers may sit on nodes that cannot read the driver's disk, so the directory
written by ``save_pretrained`` travels as bytes in the object store and is unpacked into a local temporary directory
on each worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelBundle:
    """The files of a ``save_pretrained`` directory: relative POSIX path -> content."""

    files: dict[str, bytes]

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> ModelBundle:
        """Read every regular file under ``directory``.

        Raises:
            FileNotFoundError: when ``directory`` holds no files.
        """
        root = Path(directory)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        if not files:
            raise FileNotFoundError(f"{root}: no files to bundle (expected a save_pretrained directory)")
        return cls(files)

    def write_to(self, directory: str | os.PathLike) -> Path:
        """Recreate the files under ``directory`` (created if needed); returns it."""
        root = Path(directory)
        for relative, content in self.files.items():
            target = root / relative
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                raise ValueError(f"bundle entry {relative!r} points outside the target directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return root

    @property
    def size_bytes(self) -> int:
        """Total size of the files."""
        return sum(len(content) for content in self.files.values())
