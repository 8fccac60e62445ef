"""Tables and model versions on an S3-compatible object store: a real S3 server (moto) on loopback.

Every expectation is checked independently of the code under test: objects through boto3, Parquet through
pyarrow on the bytes boto3 returns, Delta tables through their _delta_log keys, models through their local copy.
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from deltalake import DeltaTable, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, create_table_with_add_actions

from jobs.core.config import ConfigError, storage_options
from plumbing import storage
from tests.conftest import settings_of
from tests.object_store import S3Server, s3_root, s3_server
from udfs.model import (
    CARD_FILE,
    MODEL_CACHE_ENV,
    ModelError,
    fetch_model_version,
    load_model_version,
    locate_model_version,
    model_cache_root,
    read_card,
    resolve_model_dir,
)
from udfs.scorer import score_pairs

FIXTURES = (s3_server, s3_root)  # the object-store fixtures, imported for pytest to find them here
QUERIES = ["gray sofa", "red tee", "gaming laptop 16gb", "sneakers"]
TEXTS = [
    "cozy gray sofa 3-seat | brand: nordhaus | category: living room > sofas",
    "classic cotton t-shirt in red | brand: basix",
    "ultrabook 14 inch | brand: voltra | category: computers > laptops",
    "running trainers | brand: swift | color: white",
]


# ---- locations and options (pure) --------------------------------------------------------------
def test_uris_map_spark_schemes_and_join_like_their_kind():
    assert storage.normalize_uri("s3a://b/w/t") == "s3://b/w/t"
    assert storage.normalize_uri("s3n://b/w") == "s3://b/w"
    assert storage.normalize_uri("/data/w") == "/data/w"
    assert storage.spark_uri("s3://b/w/t/part-0.parquet") == "s3a://b/w/t/part-0.parquet"
    assert storage.spark_uri("/data/w") == "/data/w"
    assert [storage.is_remote(u) for u in ("s3://b", "s3a://b/x", "gs://b", "file:///tmp/x", "/tmp/x", "rel/x")] == [
        True, True, True, False, False, False]
    assert storage.local_path("file:///tmp/a%20b/c") == Path("/tmp/a b/c")
    with pytest.raises(ValueError, match="s3://b/x is not a local path"):
        storage.local_path("s3://b/x")
    assert storage.join("s3://b/models/", "v1", "model_card.json") == "s3://b/models/v1/model_card.json"
    assert storage.join("/m", "v1", "model_card.json") == os.path.join("/m", "v1", "model_card.json")
    assert storage.basename("s3://b/models/v1/") == "v1"


def test_storage_options_take_the_config_first_then_the_aws_environment():
    environ = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
               "AWS_DEFAULT_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "env-key", "AWS_SECRET_ACCESS_KEY": "env-secret",
               "HOME": "/root"}
    assert storage.resolve_storage_options({}, environ) == {
        "AWS_ENDPOINT_URL": "http://s3-specific:2", "AWS_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "env-key", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    configured = {"endpoint_url": "http://configured:3", "allow_http": True, "conditional_put": "etag",
                  "AWS_REGION": None, "aws_s3_addressing_style": "path"}
    assert storage.resolve_storage_options(configured, environ) == {
        "AWS_ENDPOINT_URL": "http://configured:3", "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag",
        "aws_s3_addressing_style": "path",  # unknown here: passed to delta-rs as it is
        "AWS_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "env-key", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    cfg = {"warehouse": {"root": "s3a://b/w", "storage_options": {"region": "us-west-2"}}}
    assert storage_options(settings_of(cfg), {}) == {"AWS_REGION": "us-west-2"}
    assert storage_options(settings_of({"warehouse": {}}), {}) == {}
    with pytest.raises(ConfigError, match="setting 'warehouse.storage_options' must be a mapping"):
        settings_of({"warehouse": {"storage_options": "AWS_REGION=x"}})


def test_s3a_settings_for_spark_follow_the_storage_options():
    assert storage.hadoop_s3a_settings({}) == {}
    assert storage.hadoop_s3a_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "region": "us-east-1",
                                        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}) == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.access.key": "k",
        "spark.hadoop.fs.s3a.secret.key": "s",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"}
    temporary = storage.hadoop_s3a_settings({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                                             "AWS_SESSION_TOKEN": "t", "AWS_ENDPOINT_URL": "https://s3.example"})
    assert temporary["spark.hadoop.fs.s3a.session.token"] == "t"
    assert temporary["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert temporary["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(".TemporaryAWSCredentialsProvider")


def test_the_local_config_has_no_storage_options_and_no_model_cache_dir():
    from jobs.core.config import load_settings

    settings = load_settings(Path(__file__).resolve().parent.parent / "conf" / "local.yaml")
    assert settings.warehouse.storage_options == {} and settings.model.cache_dir is None


# ---- the storage helpers on S3 and locally -----------------------------------------------------
def _events() -> pa.Table:
    return pa.table({"id": pa.array([3, 1, 2], pa.int64()), "name": ["c", "a", "b"],
                     "score": pa.array([0.5, None, 1.25], pa.float64())})


@pytest.mark.parametrize("where", ["s3", "local"])
def test_helpers_round_trip_bytes_and_parquet(where, s3_server: S3Server, s3_root, tmp_path):
    options = s3_server.storage_options() if where == "s3" else {}
    base = s3_root if where == "s3" else str(tmp_path / "store")

    def raw(uri: str) -> bytes:  # the stored bytes, read without plumbing.storage
        if where == "s3":
            key = uri.removeprefix(f"s3://{s3_server.bucket}/")
            return s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()

    payload = bytes(range(256)) * 9
    assert storage.write_bytes(storage.join(base, "a", "blob.bin"), payload, options) == len(payload)
    assert raw(storage.join(base, "a", "blob.bin")) == payload
    assert storage.read_bytes(storage.join(base, "a", "blob.bin"), options) == payload
    storage.write_text(storage.join(base, "a", "deep", "note.txt"), "héllo\n", options)
    assert storage.read_text(storage.join(base, "a", "deep", "note.txt"), options) == "héllo\n"
    assert raw(storage.join(base, "a", "deep", "note.txt")) == "héllo\n".encode()

    size = storage.write_parquet(_events(), storage.join(base, "t", "part-0.snappy.parquet"), options)
    stored = raw(storage.join(base, "t", "part-0.snappy.parquet"))
    assert size == len(stored) and stored[:4] == b"PAR1" == stored[-4:]
    assert pq.read_table(io.BytesIO(stored)).equals(_events())
    assert pq.ParquetFile(io.BytesIO(stored)).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert storage.read_parquet(storage.join(base, "t", "part-0.snappy.parquet"), options).equals(_events())

    assert storage.list_files(base, options) == ["a/blob.bin", "a/deep/note.txt", "t/part-0.snappy.parquet"]
    assert storage.list_files(storage.join(base, "a"), options) == ["blob.bin", "deep/note.txt"]
    assert storage.list_files(storage.join(base, "nothing-here"), options) == []
    assert storage.exists(storage.join(base, "a"), options) and storage.is_file(storage.join(base, "a", "blob.bin"), options)
    assert not storage.is_file(storage.join(base, "a"), options)
    assert not storage.exists(storage.join(base, "a", "missing.bin"), options)
    with pytest.raises(FileNotFoundError, match=f"{storage.join(base, 'a', 'missing.bin')} is missing"):
        storage.read_bytes(storage.join(base, "a", "missing.bin"), options)

    copied = storage.download_folder(storage.join(base, "a"), tmp_path / "copy", options)
    assert copied == ["blob.bin", "deep/note.txt"]
    assert (tmp_path / "copy" / "blob.bin").read_bytes() == payload
    assert (tmp_path / "copy" / "deep" / "note.txt").read_text() == "héllo\n"
    with pytest.raises(FileNotFoundError, match="holds no files"):
        storage.download_folder(storage.join(base, "nothing-here"), tmp_path / "none", options)

    if where == "s3":  # Spark's scheme names the same objects; the keys are where they should be
        assert storage.read_bytes(storage.spark_uri(storage.join(base, "a", "blob.bin")), options) == payload
        prefix = base.removeprefix(f"s3://{s3_server.bucket}/")
        assert s3_server.keys(base) == [f"{prefix}/a/blob.bin", f"{prefix}/a/deep/note.txt",
                                        f"{prefix}/t/part-0.snappy.parquet"]


def test_upload_a_local_folder_and_file_uris(s3_server: S3Server, s3_root, tmp_path):
    source = tmp_path / "src"
    (source / "x" / "y").mkdir(parents=True)
    (source / "x" / "y" / "z.txt").write_text("z")
    (source / "top.bin").write_bytes(b"\x00\x01")
    options = s3_server.storage_options()
    assert storage.copy_folder(f"file://{source}", storage.join(s3_root, "up"), {}, options) == ["top.bin", "x/y/z.txt"]
    client = s3_server.client()
    prefix = s3_root.removeprefix(f"s3://{s3_server.bucket}/")
    assert client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/up/x/y/z.txt")["Body"].read() == b"z"
    assert client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/up/top.bin")["Body"].read() == b"\x00\x01"


def test_the_server_refuses_a_conditional_put_of_an_existing_key(s3_server: S3Server, s3_root):
    """What delta-rs's `conditional_put: etag` relies on: If-None-Match: * fails on an existing key, If-Match on a stale ETag."""
    from botocore.exceptions import ClientError

    client, key = s3_server.client(), s3_root.removeprefix(f"s3://{s3_server.bucket}/") + "/_delta_log/0.json"
    first = client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"third", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as stale:
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"fourth", IfMatch=first["ETag"])
    assert stale.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"third"


# ---- Delta tables on the object store (delta-rs) ------------------------------------------------
SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.string()), ("ds", pa.string())])


def _rows(ids: list[int], ds: str, tag: str = "v") -> pa.Table:
    return pa.table({"id": ids, "value": [f"{tag}{i}" for i in ids], "ds": [ds] * len(ids)}, schema=SCHEMA)


def _content(table: DeltaTable) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pyarrow_table().to_pylist())


def _log_versions(s3: S3Server, uri: str) -> list[int]:
    return sorted(int(Path(k).stem) for k in s3.keys(uri + "/_delta_log/") if k.endswith(".json"))


def test_delta_rs_creates_appends_and_overwrites_a_partition_on_s3(s3_server: S3Server, s3_root):
    options = s3_server.storage_options()
    uri = storage.join(s3_root, "events")
    write_deltalake(uri, pa.concat_tables([_rows([1, 2, 3], "d1"), _rows([4, 5], "d2")]), partition_by=["ds"],
                    storage_options=options)
    write_deltalake(uri, _rows([6], "d2"), mode="append", storage_options=options)
    write_deltalake(uri, _rows([7, 8], "d1", "new"), mode="overwrite", predicate="ds = 'd1'", storage_options=options)

    assert DeltaTable.is_deltatable(uri, storage_options=options)
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 2 and table.metadata().partition_columns == ["ds"]
    assert _content(table) == [(4, "v4", "d2"), (5, "v5", "d2"), (6, "v6", "d2"), (7, "new7", "d1"), (8, "new8", "d1")]
    assert _log_versions(s3_server, uri) == [0, 1, 2]
    assert all(u.startswith(f"{uri}/ds=") for u in table.file_uris())
    # Spark's s3a:// names the same table; time travel reads the version before the overwrite
    old = DeltaTable(storage.spark_uri(uri), storage_options=options, version=1)
    assert [r[0] for r in _content(old)] == [1, 2, 3, 4, 5, 6]


def test_parquet_written_by_storage_helpers_is_committed_by_delta_rs_on_s3(s3_server: S3Server, s3_root):
    """The delta-rs writer's path: Parquet files written by tasks (storage.write_parquet), one commit of add actions."""
    options = s3_server.storage_options()
    uri = storage.join(s3_root, "pairs")
    actions = []
    for ds, ids in (("d1", [1, 2]), ("d2", [3])):
        relative = f"ds={ds}/part-run1-{ds}.snappy.parquet"
        data = _rows(ids, ds).drop_columns(["ds"])
        size = storage.write_parquet(data, storage.join(uri, relative), options)
        actions.append(AddAction(path=relative, size=size, partition_values={"ds": ds}, modification_time=1,
                                 data_change=True, stats=json.dumps({"numRecords": data.num_rows})))
    create_table_with_add_actions(uri, DeltaSchema.from_arrow(SCHEMA), actions, mode="error", partition_by=["ds"],
                                  storage_options=options)
    table = DeltaTable(uri, storage_options=options)
    assert _content(table) == [(1, "v1", "d1"), (2, "v2", "d1"), (3, "v3", "d2")]
    sizes = {a["path"]: a["size_bytes"] for a in pa.table(table.get_add_actions(flatten=True)).to_pylist()}
    client = s3_server.client()
    prefix = uri.removeprefix(f"s3://{s3_server.bucket}/")
    assert sizes == {p: client.head_object(Bucket=s3_server.bucket, Key=f"{prefix}/{p}")["ContentLength"] for p in sizes}


def _race(*commits) -> list[BaseException | None]:
    """Run the commits at once (threads released together); each one's exception, None for a success."""
    start = threading.Barrier(len(commits))
    outcomes: list[BaseException | None] = [None] * len(commits)

    def run(i: int) -> None:
        start.wait()
        try:
            commits[i]()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(commits))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def _stale_overwrite(uri: str, options: dict[str, str], rows: pa.Table):
    """A partition overwrite against the version read now (what Warehouse's delta-rs writer does): files written
    first, the commit later, from the snapshot read before them."""
    snapshot = DeltaTable(uri, storage_options=options)
    ds = rows.column("ds")[0].as_py()
    relative = f"ds={ds}/part-{rows.column('value')[0].as_py()}.snappy.parquet"
    size = storage.write_parquet(rows.drop_columns(["ds"]), storage.join(uri, relative), options)
    action = AddAction(path=relative, size=size, partition_values={"ds": ds}, modification_time=1, data_change=True,
                       stats=json.dumps({"numRecords": rows.num_rows}))
    return lambda: snapshot.create_write_transaction([action], mode="overwrite", schema=DeltaSchema.from_arrow(SCHEMA),
                                                     partition_by=["ds"], partition_filters=[("ds", "=", ds)])


def test_two_writers_of_one_partition_on_s3_give_one_commit_and_one_clean_conflict(s3_server: S3Server, s3_root):
    options = s3_server.storage_options()
    uri = storage.join(s3_root, "scores")
    write_deltalake(uri, pa.concat_tables([_rows([1, 2], "d1"), _rows([3], "d2")]), partition_by=["ds"],
                    storage_options=options)
    writers = {"a": _rows([10, 11], "d1", "a"), "b": _rows([20, 21, 22], "d1", "b")}
    commits = [_stale_overwrite(uri, options, rows) for rows in writers.values()]  # both read version 0
    outcomes = _race(*commits)

    failed = [o for o in outcomes if o is not None]
    assert len(failed) == 1 and isinstance(failed[0], CommitFailedError), outcomes
    winner = list(writers)[outcomes.index(None)]
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1 and _log_versions(s3_server, uri) == [0, 1]
    expected = sorted((r["id"], r["value"], r["ds"]) for r in writers[winner].to_pylist()) + [(3, "v3", "d2")]
    assert _content(table) == sorted(expected)


def test_two_concurrent_appends_on_s3_both_land_none_is_lost(s3_server: S3Server, s3_root):
    """Blind appends do not conflict: the loser of version 1 retries as version 2. Without conditional puts the
    second PUT of version 1 would replace the first one's commit and its rows would be lost."""
    options = s3_server.storage_options()
    uri = storage.join(s3_root, "events")
    write_deltalake(uri, _rows([1], "d1"), partition_by=["ds"], storage_options=options)
    snapshots = [DeltaTable(uri, storage_options=options) for _ in range(2)]
    outcomes = _race(*[lambda t=t, i=i: write_deltalake(t, _rows([100 + i], "d2"), mode="append")
                       for i, t in enumerate(snapshots)])
    assert outcomes == [None, None]
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 2 and _log_versions(s3_server, uri) == [0, 1, 2]
    assert _content(table) == [(1, "v1", "d1"), (100, "v100", "d2"), (101, "v101", "d2")]


# ---- model versions on the object store ---------------------------------------------------------
def _upload(s3: S3Server, local: Path, uri: str) -> None:
    """Upload a local folder with boto3 (not with the code under test)."""
    client, prefix = s3.client(), uri.removeprefix(f"s3://{s3.bucket}/")
    for folder, _, files in os.walk(local):
        for name in files:
            path = Path(folder, name)
            client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=path.read_bytes())


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def downloads(monkeypatch) -> list[str]:
    """The folders fetch_model_version downloads (counted where udfs.model calls plumbing.storage)."""
    calls: list[str] = []
    original = storage.download_folder

    def counting(uri, local_dir, options=None):
        calls.append(str(uri))
        return original(uri, local_dir, options)

    monkeypatch.setattr(storage, "download_folder", counting)
    return calls


def test_a_model_version_on_s3_is_cached_once_and_scores_like_the_local_one(
        s3_server: S3Server, s3_root, tiny_model_root, tmp_path, downloads):
    options = s3_server.storage_options()
    local = tiny_model_root / "tiny-test"
    models = storage.join(s3_root, "models")
    _upload(s3_server, local, storage.join(models, "tiny-test"))
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=models.split("/", 3)[3] + "/PROMOTED", Body=b"tiny-test\n")
    cache = tmp_path / "cache"

    assert locate_model_version(models, "promoted", options) == storage.join(models, "tiny-test")
    assert read_card(storage.join(models, "tiny-test"), options).to_dict() == json.loads((local / CARD_FILE).read_text())
    assert downloads == []  # locating a version and reading its card fetch no weights

    fetched = resolve_model_dir(models, "tiny-test", options, cache_dir=cache)
    assert fetched.parent == cache and fetched.name.startswith("tiny-test-")
    assert _tree(fetched) == _tree(local)  # every file, byte for byte
    assert [p.name for p in cache.iterdir()] == [fetched.name]  # no staging folder left behind
    assert downloads == [storage.join(models, "tiny-test")]

    # the weights gone from the store: later loads (by name, promoted, URI, s3a URI) use the cache
    client, prefix = s3_server.client(), models.split("/", 3)[3]
    for key in s3_server.keys(f"{prefix}/tiny-test/model/"):
        client.delete_object(Bucket=s3_server.bucket, Key=key)
    assert resolve_model_dir(models, "promoted", options, cache_dir=cache) == fetched
    remote = load_model_version(storage.spark_uri(storage.join(models, "tiny-test")), "cpu",
                                storage_options=options, cache_dir=cache)
    assert len(downloads) == 1 and [p.name for p in cache.iterdir()] == [fetched.name]

    reference = load_model_version(local)
    assert remote.version == reference.version == "tiny-test" and remote.card == reference.card
    remote_weights, reference_weights = remote.torch_network.state_dict(), reference.torch_network.state_dict()
    assert remote_weights.keys() == reference_weights.keys()
    assert all(torch.equal(remote_weights[k], reference_weights[k]) for k in reference_weights)
    remote_scores, _ = score_pairs(remote, QUERIES, TEXTS)
    reference_scores, _ = score_pairs(reference, QUERIES, TEXTS)
    np.testing.assert_array_equal(remote_scores, reference_scores)
    assert np.all((remote_scores > 0) & (remote_scores < 1)) and len(set(remote_scores.tolist())) > 1


def test_a_version_remade_under_its_name_is_fetched_again(s3_server: S3Server, s3_root, tiny_model_root, tmp_path,
                                                          downloads):
    options, cache = s3_server.storage_options(), tmp_path / "cache"
    uri = storage.join(s3_root, "models", "tiny-test")
    _upload(s3_server, tiny_model_root / "tiny-test", uri)
    first = fetch_model_version(uri, options, cache)
    card = {**json.loads((first / CARD_FILE).read_text()), "threshold": 0.75}
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=uri.split("/", 3)[3] + "/" + CARD_FILE,
                                  Body=json.dumps(card).encode())
    second = fetch_model_version(uri, options, cache)
    assert second != first and json.loads((second / CARD_FILE).read_text())["threshold"] == 0.75
    assert json.loads((first / CARD_FILE).read_text())["threshold"] == 0.5 and len(downloads) == 2


def test_concurrent_fetches_on_one_machine_share_one_complete_copy(s3_server: S3Server, s3_root, tiny_model_root,
                                                                   tmp_path):
    options, cache = s3_server.storage_options(), tmp_path / "cache"
    uri = storage.join(s3_root, "models", "tiny-test")
    _upload(s3_server, tiny_model_root / "tiny-test", uri)
    results: list[Path | BaseException | None] = [None] * 4

    def fetch(i: int) -> None:
        try:
            results[i] = fetch_model_version(uri, options, cache)
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    _race(*[lambda i=i: fetch(i) for i in range(4)])
    paths = [r for r in results if isinstance(r, Path)]
    assert len(paths) == len(results) and len(set(paths)) == 1, results
    assert [p.name for p in cache.iterdir()] == [paths[0].name]
    assert _tree(paths[0]) == _tree(tiny_model_root / "tiny-test")


def test_missing_versions_on_s3_name_the_uri(s3_server: S3Server, s3_root, tmp_path):
    options = s3_server.storage_options()
    models = storage.join(s3_root, "models")
    with pytest.raises(ModelError, match=f"model version 'nope' not found: {models}/nope/model_card.json is missing"):
        resolve_model_dir(models, "nope", options, cache_dir=tmp_path)
    with pytest.raises(ModelError, match=f"no promoted model: {models}/PROMOTED is missing"):
        resolve_model_dir(models, "promoted", options, cache_dir=tmp_path)
    with pytest.raises(ModelError, match=f"model version not found: {models}/gone/model_card.json is missing"):
        load_model_version(storage.join(models, "gone"), storage_options=options, cache_dir=tmp_path)
    with pytest.raises(ModelError, match=f"model card {models}/gone/model_card.json is unreadable"):
        read_card(storage.join(models, "gone"), options)
    assert not any(tmp_path.iterdir())  # nothing cached


def test_local_models_roots_work_as_before(tiny_model_root, tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "env-cache"))
    assert model_cache_root() == tmp_path / "env-cache" and model_cache_root(tmp_path / "x") == tmp_path / "x"
    local = (tiny_model_root / "tiny-test").resolve()
    assert resolve_model_dir(tiny_model_root, "tiny-test") == local
    assert resolve_model_dir(str(tiny_model_root), str(local)) == local  # a path to a version
    assert resolve_model_dir(f"file://{tiny_model_root}", "tiny-test") == local
    assert locate_model_version(tiny_model_root, "tiny-test") == str(local)
    assert fetch_model_version(local) == local and read_card(local).version == "tiny-test"
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError, match=f"no promoted model: {tmp_path / 'models' / 'PROMOTED'} is missing"):
        resolve_model_dir(tmp_path / "models", "promoted")
    (tmp_path / "models" / "PROMOTED").write_text(f"{local}\n")
    assert resolve_model_dir(tmp_path / "models", "promoted") == local
    assert not (tmp_path / "env-cache").exists()  # local versions are never copied
