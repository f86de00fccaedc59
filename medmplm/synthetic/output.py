"""Crash-safe output directories: write to a hidden sibling, rename into place when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def start_partial(out_dir: Path, overwrite: bool) -> Path:
    """Create and return the hidden ``.<name>.partial-<pid>`` sibling to write ``out_dir``'s content into."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    return partial


def publish(partial: Path, out_dir: Path) -> None:
    """Move a completed ``partial`` directory to ``out_dir``, replacing what was there."""
    if out_dir.is_dir() and any(out_dir.iterdir()):
        retired = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        out_dir.rename(retired)
        partial.rename(out_dir)
        shutil.rmtree(retired)
        return
    if out_dir.is_dir():
        out_dir.rmdir()
    partial.rename(out_dir)
