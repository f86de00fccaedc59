"""Prepared data in an object store, on a local S3 server each test starts (moto's server mode, on 127.0.0.1; nothing
leaves the machine): atomic publishing, readers refusing incomplete directories, local copies, and the round trip
prepare -> pretrain and fine-tune reading s3://."""

from __future__ import annotations

import logging
import shutil
import urllib.request
from pathlib import Path

import pytest
from test_prepare_support import write_mimic

from medmplm.data import locations
from medmplm.data import prepared as prepared_module
from medmplm.data.manifest import Manifest, write_manifest
from medmplm.data.pipeline import OutputExistsError, PrepareOptions, prepare
from medmplm.data.prepared import IncompletePreparedError, local_prepared_dir, publish, require_prepared
from medmplm.data.schema import SCHEMA_VERSION, SPLITS

BUCKET = "medmplm-test"


@pytest.fixture
def s3(monkeypatch) -> str:
    """A local S3 server with an empty bucket; the environment points pyarrow (and boto3) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    # The server logs every request at INFO through werkzeug.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}"
    # moto keeps its buckets in this process across servers: empty them for the next test.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    server.stop()


def staged(directory: Path, tag: str) -> Path:
    """A small complete prepared directory (its files only need to exist) whose manifest says ``tag``."""
    for relative in ("visits/train/part-00000.parquet", "vocab/diagnosis.tsv", "quarantine/ADMISSIONS.parquet"):
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(f"{tag} {relative}")
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        options={"tag": tag},
        inputs={},
        tables={},
        dropped={},
        quarantined={},
        medications={},
        splits={},
        vocab={},
        definitions={},
    )
    write_manifest(directory, manifest)
    return directory


def keys(s3: str) -> list[str]:
    return locations.list_files_recursive(s3)


def test_upload_is_complete_only_with_its_manifest_and_interruptions_leave_nothing_accepted(s3, tmp_path, monkeypatch):
    out = f"{s3}/prepared"
    publish(staged(tmp_path / "first", "first"), out)
    assert require_prepared(out)["options"] == {"tag": "first"}
    assert keys(s3) == [
        "prepared/manifest.json",
        "prepared/quarantine/ADMISSIONS.parquet",
        "prepared/visits/train/part-00000.parquet",
        "prepared/vocab/diagnosis.tsv",
    ]

    # Interrupted while uploading: the previous output stays whole and readable; no temporary prefix is left.
    copy = locations.copy_local_file
    uploaded = []

    def copy_then_fail(local, location, *args):
        if uploaded:
            raise ConnectionError("connection reset")
        uploaded.append(location)
        copy(local, location, *args)

    monkeypatch.setattr(locations, "copy_local_file", copy_then_fail)
    with pytest.raises(ConnectionError):
        publish(staged(tmp_path / "second", "second"), out)
    assert require_prepared(out)["options"] == {"tag": "first"}
    assert all(key.startswith("prepared/") for key in keys(s3))
    monkeypatch.setattr(locations, "copy_local_file", copy)

    # Interrupted while moving the new files into place: no manifest, so no reader takes it.
    move = locations.move
    moved = []

    def move_then_fail(source, destination):
        if moved:
            raise ConnectionError("connection reset")
        moved.append(destination)
        move(source, destination)

    monkeypatch.setattr(locations, "move", move_then_fail)
    with pytest.raises(ConnectionError):
        publish(staged(tmp_path / "third", "third"), out)
    assert "prepared/manifest.json" not in keys(s3)
    with pytest.raises(IncompletePreparedError, match="incomplete"):
        require_prepared(out)
    with pytest.raises(IncompletePreparedError):
        local_prepared_dir(out)
    from medmplm.config import DataConfig
    from medmplm.pretrain import ensure_prepared

    with pytest.raises(FileNotFoundError, match="incomplete"):
        ensure_prepared(DataConfig(prepared_dir=out))
    monkeypatch.setattr(locations, "move", move)

    # A fresh output interrupted mid-upload does not exist for a reader at all.
    monkeypatch.setattr(locations, "copy_local_file", copy_then_fail)
    uploaded.clear()
    with pytest.raises(ConnectionError):
        publish(staged(tmp_path / "fresh", "fresh"), f"{s3}/fresh")
    with pytest.raises(IncompletePreparedError, match="does not exist"):
        require_prepared(f"{s3}/fresh")


def test_local_copy_of_a_remote_prepared_directory_is_made_once(s3, tmp_path, monkeypatch):
    out = f"{s3}/prepared"
    publish(staged(tmp_path / "staged", "copy me"), out)
    monkeypatch.setenv(prepared_module.CACHE_ENV, str(tmp_path / "cache"))
    local = Path(local_prepared_dir(out))
    assert local.parent == tmp_path / "cache"
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert files == ["manifest.json", "visits/train/part-00000.parquet", "vocab/diagnosis.tsv"]  # no quarantine
    assert (local / "vocab" / "diagnosis.tsv").read_text() == "copy me vocab/diagnosis.tsv"

    def no_download(*args):
        raise AssertionError("the cached copy should be reused")

    monkeypatch.setattr(locations, "copy_to_local", no_download)
    assert local_prepared_dir(out) == str(local)
    local_dir = tmp_path / "local"
    shutil.copytree(local, local_dir)
    assert local_prepared_dir(str(local_dir)) == str(local_dir)


@pytest.mark.usefixtures("ray_local")
def test_prepare_writes_to_s3_and_refuses_to_overwrite_unasked(s3, tmp_path):
    mimic = write_mimic(tmp_path / "mimic")
    out = f"{s3}/mimic3-prepared"
    manifest = prepare(mimic, out, PrepareOptions(num_shards_per_split=1))
    assert require_prepared(out) == manifest.to_dict()
    assert {f"mimic3-prepared/visits/{split}/part-00000.parquet" for split in SPLITS} <= set(keys(s3))
    assert all(key.startswith("mimic3-prepared/") for key in keys(s3))  # no temporary prefix left
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare(mimic, out, PrepareOptions(num_shards_per_split=1))
    again = prepare(mimic, out, PrepareOptions(num_shards_per_split=1, seed=1, overwrite=True))
    assert require_prepared(out)["options"]["seed"] == 1 == again.options["seed"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_round_trip_prepare_from_and_to_s3_then_pretrain_and_finetune_read_s3(
    s3, synthetic_prepared, tmp_path, monkeypatch
):
    import ray
    from conftest import start_local_ray

    from medmplm.config import PretrainConfig, load_config
    from medmplm.finetune import main as finetune_main
    from medmplm.pretrain import run

    # The conftest's synthetic MIMIC-III (160 patients) as raw tables in the bucket.
    raw = synthetic_prepared.parent / "mimic3"
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        locations.copy_local_file(path, f"{s3}/mimic3/{path.relative_to(raw).as_posix()}")
    monkeypatch.setenv(prepared_module.CACHE_ENV, str(tmp_path / "cache"))
    # Ray's workers read s3:// too: start them with this test's environment (the session's Ray comes back after).
    ray.shutdown()
    start_local_ray()
    try:
        prepared = f"{s3}/prepared"
        manifest = prepare(f"{s3}/mimic3", prepared, PrepareOptions(ndc_map_dir=f"{s3}/mimic3", num_shards_per_split=2))
        assert manifest.synthetic and manifest.options["input_dir"] == f"{s3}/mimic3"
        assert sum(s["admissions"] for s in manifest.splits.values()) > 100
        config = load_config(
            PretrainConfig,
            overrides=[
                f"data.prepared_dir={prepared}",
                f"run.storage_path={tmp_path / 'runs'}",
                "run.name=from-s3",
                "scaling.num_workers=1",
                "train.epochs=1",
                "train.global_batch_size=16",
                "train.micro_batch_size=16",
                "logging.progress_bar=false",
                "model.pretrain_text_first=false",
                "model.allow_random_frozen=true",
            ],
        )
        where = run(config, progress_bar=False)
        assert where["prepared_dir"] == prepared
        assert (Path(where["export_dir"]) / "config.json").is_file()
        copies = list((tmp_path / "cache").iterdir())
        assert len(copies) == 1 and (copies[0] / "tokenizers").is_dir()  # built from the local copy
    finally:
        ray.shutdown()
    status = finetune_main(
        [
            "--task",
            "readmission",
            "--model",
            "logreg",
            f"data.prepared_dir={prepared}",
            f"finetune.results_dir={tmp_path / 'results'}",
        ]
    )
    assert status == 0
    assert list((tmp_path / "results").glob("*.parquet"))
