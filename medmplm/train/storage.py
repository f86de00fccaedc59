"""Run storage: local directories, shared file systems and object stores (``s3://``, ``gs://``) through pyarrow.fs.

Directories are uploaded file by file with a marker file (``config.json`` of a saved model) written last, so that a
reader that finds the marker finds a complete directory, even on object stores where a directory cannot be renamed
atomically.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medmplm.data.locations import exists, join
from medmplm.data.locations import filesystem as _filesystem
from medmplm.data.locations import resolve as resolve_storage_path

__all__ = [
    "download_directory",
    "exists",
    "join",
    "list_files",
    "new_run_name",
    "read_parquet",
    "read_text",
    "resolve_storage_path",
    "upload_directory",
    "write_parquet",
    "write_text",
]


def new_run_name(prefix: str) -> str:
    """A unique run name: ``<prefix>-<YYYYmmdd-HHMMSS>-<6 hex>``."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def upload_directory(local: str | os.PathLike, location: str, marker: str | None = None) -> None:
    """Copy the files under ``local`` to ``location``; the file named ``marker`` (relative path) goes last.

    Raises:
        FileNotFoundError: when ``marker`` is given but not among the files.
    """
    root = Path(local)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if marker is not None:
        if marker not in files:
            raise FileNotFoundError(f"{root / marker}: missing; refusing to upload an incomplete directory")
        files = [f for f in files if f != marker] + [marker]
    filesystem, base = _filesystem(location)
    filesystem.create_dir(base, recursive=True)
    if marker is not None:
        stale = f"{base.rstrip('/')}/{marker}"
        if filesystem.get_file_info(stale).type == pafs.FileType.File:
            filesystem.delete_file(stale)
    for relative in files:
        target = f"{base.rstrip('/')}/{relative}"
        parent = target.rsplit("/", 1)[0]
        filesystem.create_dir(parent, recursive=True)
        with open(root / relative, "rb") as source, filesystem.open_output_stream(target) as sink:
            while chunk := source.read(1 << 24):
                sink.write(chunk)


def download_directory(location: str, local: str | os.PathLike) -> Path:
    """Copy the directory at ``location`` to the local directory ``local``; returns it."""
    filesystem, base = _filesystem(location)
    selector = pafs.FileSelector(base, recursive=True)
    root = Path(local)
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(base.rstrip("/")) + 1 :]
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 24):
                sink.write(chunk)
    return root


def write_text(location: str, text: str) -> None:
    """Write a small text file at ``location`` (local path or URI), creating parent directories."""
    filesystem, path = _filesystem(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as sink:
        sink.write(text.encode("utf-8"))


def read_text(location: str) -> str:
    """The small text file at ``location`` (local path or URI)."""
    filesystem, path = _filesystem(location)
    with filesystem.open_input_stream(path) as source:
        return source.read().decode("utf-8")


def write_parquet(table: pa.Table, location: str) -> None:
    """Write ``table`` as a Parquet file at ``location`` (local path or URI) under a hidden temporary name beside it,
    then move it into place: a crash leaves no file that looks complete (readers skip names starting with ``.``)."""
    filesystem, path = _filesystem(location)
    parent, name = path.rsplit("/", 1)
    filesystem.create_dir(parent, recursive=True)
    temporary = f"{parent}/.{name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        pq.write_table(table, temporary, filesystem=filesystem)
        filesystem.move(temporary, path)
    except BaseException:
        if filesystem.get_file_info(temporary).type == pafs.FileType.File:
            filesystem.delete_file(temporary)
        raise


def read_parquet(location: str) -> pa.Table:
    """The Parquet file at ``location`` (local path or URI)."""
    filesystem, path = _filesystem(location)
    return pq.read_table(path, filesystem=filesystem)


def list_files(location: str, suffix: str) -> list[str]:
    """The files directly under the directory ``location`` whose names end with ``suffix``, hidden ones left out,
    as locations (sorted); none when the directory does not exist."""
    filesystem, base = _filesystem(location)
    infos = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = sorted(
        info.base_name
        for info in infos
        if info.type == pafs.FileType.File and info.base_name.endswith(suffix) and not info.base_name.startswith(".")
    )
    return [join(location, name) for name in names]
