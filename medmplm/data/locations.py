"""File locations: local paths and URIs (``s3://``, ``gs://``, any scheme ``pyarrow.fs`` knows), read and written
through ``pyarrow.fs``.

A location is a string; a local path is made absolute, a URI is kept as given. Object stores have no directories
and no atomic rename: ``is_dir`` means "some object lies under this prefix", and ``move`` is a server-side copy then
a delete. Credentials and endpoints come from the environment, as pyarrow reads them (``AWS_*``, including
``AWS_ENDPOINT_URL`` for an S3-compatible server; ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    """Whether ``location`` names an object store or other file system by scheme (``s3://...``)."""
    return "://" in location


def resolve(location: str) -> str:
    """URIs unchanged; local paths made absolute (Ray workers do not share the driver's working directory)."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI."""
    return "/".join([base.rstrip("/"), *parts])


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The file system of ``location`` and the path within it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def _type(location: str) -> pafs.FileType:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type


def exists(location: str) -> bool:
    """Whether a file or directory exists at ``location``."""
    return _type(location) != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    """Whether a file exists at ``location``."""
    return _type(location) == pafs.FileType.File


def is_dir(location: str) -> bool:
    """Whether a directory exists at ``location`` (on object stores: whether any object lies under the prefix)."""
    return _type(location) == pafs.FileType.Directory


def file_size(location: str) -> int:
    """Size in bytes of the file at ``location``."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).size


def list_entries(location: str) -> list[tuple[str, bool]]:
    """``(name, is_directory)`` of the entries directly under the directory ``location``, sorted; none when it does
    not exist."""
    fs, base = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sorted((info.base_name, info.type == pafs.FileType.Directory) for info in infos)


def list_files_recursive(location: str) -> list[str]:
    """Paths of every file under the directory ``location``, relative to it and ``/``-separated, sorted."""
    fs, base = filesystem(location)
    prefix = base.rstrip("/") + "/"
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(info.path[len(prefix) :] for info in infos if info.type == pafs.FileType.File)


def open_input_stream(location: str, compression: str | None = None) -> pa.NativeFile:
    """A sequential reader of the file at ``location``, decompressing ``"gzip"`` when asked."""
    fs, path = filesystem(location)
    return fs.open_input_stream(path, compression=compression)


def open_output_stream(location: str) -> pa.NativeFile:
    """A writer of the file at ``location``, creating its parent directories (a no-op on object stores)."""
    fs, path = filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    return fs.open_output_stream(path)


def copy_local_file(local: str | Path, location: str, chunk_size: int = 1 << 24) -> None:
    """Copy the local file ``local`` to ``location`` (streamed: object stores upload it in parts)."""
    with open(local, "rb") as source, open_output_stream(location) as sink:
        while chunk := source.read(chunk_size):
            sink.write(chunk)


def copy_to_local(location: str, local: str | Path, chunk_size: int = 1 << 24) -> None:
    """Copy the file at ``location`` to the local file ``local``, creating its parent directories."""
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    with open_input_stream(location) as source, open(local, "wb") as sink:
        while chunk := source.read(chunk_size):
            sink.write(chunk)


def move(source: str, destination: str) -> None:
    """Move a file within one file system (on object stores a server-side copy, then a delete)."""
    fs, source_path = filesystem(source)
    _, destination_path = filesystem(destination)
    fs.create_dir(destination_path.rsplit("/", 1)[0], recursive=True)
    fs.move(source_path, destination_path)


def delete_file(location: str) -> None:
    """Delete the file at ``location``, if there is one."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def delete_dir(location: str) -> None:
    """Delete the directory ``location`` and everything under it, if there is one."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
