"""Prepared directories at a location (local path, ``s3://``, ``gs://``): publishing them atomically, and reading them.

Writing (``publish``): the pipeline fills a local staging directory. A local output is renamed into place (one
``os.replace``). An object store cannot rename a prefix, so the files are uploaded under a temporary prefix beside
the output (``<out>.tmp-<random>/``); only when every one is there is the previous output's manifest deleted (the
old output is incomplete from that moment), the old files deleted, the new ones moved into place (server-side copies)
and the manifest written last. An interrupted upload leaves the previous output whole, or no manifest.

Reading (``require_prepared``): a directory without ``manifest.json`` is incomplete (a run that stopped, or an
upload in progress), and every reader refuses it. Code that needs local files (vocabularies, ontologies, the
tokenizer cache, whole splits read into memory) works on ``local_prepared_dir``: a local directory as it is, a
remote one copied once into a local cache keyed by its location and manifest, so that every run on a machine
shares one copy; Ray Data reads the visit shards straight from the URI.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from medmplm.data import locations
from medmplm.data.schema import MANIFEST_FILE, QUARANTINE_DIR, READABLE_SCHEMA_VERSIONS
from medmplm.data.tables import PrepareInputError

# Where remote prepared directories are copied (override with MEDMPLM_CACHE_DIR).
CACHE_ENV = "MEDMPLM_CACHE_DIR"
DEFAULT_CACHE = Path("~/.cache/medmplm/prepared")


class OutputExistsError(PrepareInputError):
    """The output directory exists and overwriting it was not asked for (or is unsafe)."""


class IncompletePreparedError(FileNotFoundError):
    """A location holds no prepared data a reader can use: missing, without manifest (incomplete), or of a schema
    version this code does not read."""


def check_output(out: str, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless ``out`` is absent, empty, or prepared output with ``overwrite``.

    A non-empty directory that is not prepared output is never replaced, even with ``overwrite``.
    """
    if locations.is_file(out):
        raise OutputExistsError(f"output {out} exists and is not a directory")
    entries = locations.list_entries(out)
    prepared = locations.is_file(locations.join(out, MANIFEST_FILE))
    if entries and not prepared:
        raise OutputExistsError(
            f"output {out} is a non-empty directory without {MANIFEST_FILE}; refusing to replace it"
        )
    if prepared and not overwrite:
        raise OutputExistsError(f"output {out} already holds prepared data; pass --overwrite to replace it")


def _publish_local(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def _publish_remote(staging: Path, out: str) -> None:
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    if MANIFEST_FILE not in files:
        raise FileNotFoundError(f"{staging / MANIFEST_FILE}: missing; refusing to publish an incomplete directory")
    files.remove(MANIFEST_FILE)
    temporary = f"{out.rstrip('/')}.tmp-{secrets.token_hex(4)}"
    try:
        for relative in files:
            locations.copy_local_file(staging / relative, locations.join(temporary, relative))
        locations.delete_file(locations.join(out, MANIFEST_FILE))
        locations.delete_dir(out)
        for relative in files:
            locations.move(locations.join(temporary, relative), locations.join(out, relative))
        locations.copy_local_file(staging / MANIFEST_FILE, locations.join(out, MANIFEST_FILE))
    finally:
        locations.delete_dir(temporary)


def publish(staging: str | os.PathLike, out: str) -> None:
    """Make the complete directory ``staging`` the prepared output ``out`` (replacing a previous one); see the module
    docstring. ``staging`` is consumed (a local output takes its place; a remote one leaves it for the caller)."""
    if locations.is_uri(out):
        _publish_remote(Path(staging), out)
    else:
        _publish_local(Path(staging), Path(out))


def require_prepared(location: str) -> dict[str, Any]:
    """The manifest (as JSON data) of the prepared directory at ``location`` (local path or URI).

    Raises:
        IncompletePreparedError: naming the location when it has no manifest (missing, incomplete, or raw tables), or
            one of a schema version this code does not read.
    """
    location = locations.resolve(location)
    manifest_location = locations.join(location, MANIFEST_FILE)
    if not locations.is_file(manifest_location):
        state = "is incomplete (no manifest.json: a prepare that stopped or an upload in progress)"
        if not locations.exists(location):
            state = "does not exist"
        raise IncompletePreparedError(
            f"{location} {state}; prepare it with python -m medmplm.prepare --mimic DIR --out {location}"
        )
    with locations.open_input_stream(manifest_location) as stream:
        manifest = json.loads(stream.read().decode("utf-8"))
    if manifest.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise IncompletePreparedError(
            f"{location}: schema_version {manifest.get('schema_version')!r}; this code reads "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
        )
    return manifest


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def local_prepared_dir(location: str) -> str:
    """A local directory with the prepared data at ``location``: itself when local, else a cached copy (everything
    but ``quarantine/``, the manifest copied last; made once per location and manifest, under ``MEDMPLM_CACHE_DIR``).

    Raises:
        IncompletePreparedError: when ``location`` holds no complete prepared directory.
    """
    location = locations.resolve(location)
    require_prepared(location)
    if not locations.is_uri(location):
        return location
    with locations.open_input_stream(locations.join(location, MANIFEST_FILE)) as stream:
        manifest_bytes = stream.read()
    key = hashlib.sha256(location.encode() + b"\0" + manifest_bytes).hexdigest()[:24]
    copy = _cache_root() / key
    if (copy / MANIFEST_FILE).is_file():
        return str(copy)
    staging = copy.with_name(f"{key}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        for relative in locations.list_files_recursive(location):
            if relative == MANIFEST_FILE or relative.startswith(f"{QUARANTINE_DIR}/"):
                continue
            locations.copy_to_local(locations.join(location, relative), staging / relative)
        (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
        try:
            os.replace(staging, copy)
        except OSError:
            if not (copy / MANIFEST_FILE).is_file():
                raise
            # Another run copied it first: use that copy.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(copy)
