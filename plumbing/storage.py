"""Where files live: local folders or an S3-compatible object store, behind one small API.

A location is a local path, a `file://` URI or an `s3://` URI (`s3a://` and `s3n://`, Spark's schemes, name
the same objects and are mapped to `s3://` for pyarrow and delta-rs). Storage options are delta-rs-style keys
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_ALLOW_HTTP`, `AWS_CONDITIONAL_PUT`, ...): the same dict goes to `deltalake` (DeltaTable, write_deltalake,
transactions) and, through `filesystem`, to pyarrow's S3FileSystem, so tables, Parquet files written on
executors and model versions all reach the same store with the same credentials.

The options come from the caller (the jobs pass the config's `warehouse.storage_options`) and fall back, key by key, to the standard
AWS_* environment variables (`resolve_storage_options`); with neither, pyarrow and delta-rs use the default AWS
credential chain (profile, instance role).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# purity: no pyspark torch transformers

S3_SCHEMES = ("s3", "s3a", "s3n")

# Canonical option name -> the other spellings delta-rs / object_store accept for it (compared without case).
OPTION_ALIASES: dict[str, tuple[str, ...]] = {
    "AWS_ENDPOINT_URL": ("aws_endpoint", "endpoint_url", "endpoint", "aws_endpoint_url_s3"),
    "AWS_ACCESS_KEY_ID": ("access_key_id",),
    "AWS_SECRET_ACCESS_KEY": ("secret_access_key",),
    "AWS_SESSION_TOKEN": ("session_token", "token", "aws_token"),
    "AWS_REGION": ("region", "aws_default_region"),
    "AWS_ALLOW_HTTP": ("allow_http",),
    "AWS_CONDITIONAL_PUT": ("conditional_put",),
    "AWS_S3_ALLOW_UNSAFE_RENAME": (),
}
# Canonical option -> environment variables it falls back to, first found wins.
ENV_FALLBACKS: dict[str, tuple[str, ...]] = {
    "AWS_ENDPOINT_URL": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID",),
    "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY",),
    "AWS_SESSION_TOKEN": ("AWS_SESSION_TOKEN",),
    "AWS_REGION": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "AWS_ALLOW_HTTP": ("AWS_ALLOW_HTTP",),
    "AWS_CONDITIONAL_PUT": ("AWS_CONDITIONAL_PUT",),
    "AWS_S3_ALLOW_UNSAFE_RENAME": ("AWS_S3_ALLOW_UNSAFE_RENAME",),
}
_CANONICAL = {alias.lower(): name for name, aliases in OPTION_ALIASES.items() for alias in (name, *aliases)}


class StorageError(OSError):
    """A location cannot be used (unknown scheme, missing bucket); the message names it."""


# ---- locations ---------------------------------------------------------------------------
def scheme(uri: str | Path) -> str:
    """The lower-case URI scheme, "" for a plain local path (a Windows drive letter is no scheme)."""
    text = str(uri)
    if "://" not in text:
        return ""
    return text.split("://", 1)[0].lower()


def is_remote(uri: str | Path) -> bool:
    """True for an object-store URI (anything with a scheme but `file`)."""
    return scheme(uri) not in ("", "file")


def normalize_uri(uri: str | Path) -> str:
    """`s3a://` and `s3n://` as `s3://` (what pyarrow and delta-rs expect); anything else unchanged."""
    text = str(uri)
    if scheme(text) in S3_SCHEMES:
        return "s3://" + text.split("://", 1)[1]
    return text


def spark_uri(uri: str | Path) -> str:
    """`s3://` as `s3a://`, the scheme Hadoop's S3A connector serves (paths handed to Spark); else unchanged."""
    text = str(uri)
    if scheme(text) in S3_SCHEMES:
        return "s3a://" + text.split("://", 1)[1]
    return text


def local_path(uri: str | Path) -> Path:
    """The local path of a plain path or a `file://` URI; ValueError for a remote URI."""
    text = str(uri)
    if scheme(text) == "file":
        return Path(unquote(urlsplit(text).path))
    if is_remote(text):
        raise ValueError(f"{text} is not a local path")
    return Path(text)


def join(base: str | Path, *parts: str) -> str:
    """`base` and relative `parts` joined with `/` (a URI stays a URI, a local path a local path)."""
    if scheme(base):
        text = str(base).rstrip("/")
        for part in parts:
            text = f"{text}/{part.strip('/')}" if part.strip("/") else text
        return text
    return str(Path(base, *parts))


def basename(uri: str | Path) -> str:
    """The last part of a path or URI (`s3://b/models/v1/` -> `v1`)."""
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


# ---- options -----------------------------------------------------------------------------
def _option_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def resolve_storage_options(configured: Mapping[str, Any] | None = None,
                            environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage options to use: the configured ones (known keys under their canonical AWS_* name, values as
    text, nulls dropped), each known key not configured taken from the environment's AWS_* variables."""
    environ = os.environ if environ is None else environ
    options: dict[str, str] = {}
    for key, value in (configured or {}).items():
        if value is None:
            continue
        options[_CANONICAL.get(str(key).lower(), str(key))] = _option_text(value)
    for name, variables in ENV_FALLBACKS.items():
        if name not in options:
            found = next((environ[v] for v in variables if environ.get(v)), None)
            if found is not None:
                options[name] = found
    return options


def _lookup(options: Mapping[str, str], name: str) -> str | None:
    for key, value in options.items():
        if _CANONICAL.get(key.lower()) == name:
            return value
    return None


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def hadoop_s3a_settings(options: Mapping[str, str]) -> dict[str, str]:
    """Spark settings (`spark.hadoop.fs.s3a.*`) that point Hadoop's S3A connector (hadoop-aws, for `s3a://`
    reads and delta-spark) at the store of `options`; {} where `options` name nothing (the default chain)."""
    settings: dict[str, str] = {}
    endpoint = _lookup(options, "AWS_ENDPOINT_URL")
    if endpoint:
        settings["fs.s3a.endpoint"] = endpoint
        settings["fs.s3a.path.style.access"] = "true"  # custom endpoints (MinIO, moto, Ceph) serve path-style URLs
        insecure = endpoint.lower().startswith("http://") or (
            "://" not in endpoint and _truthy(_lookup(options, "AWS_ALLOW_HTTP")))
        settings["fs.s3a.connection.ssl.enabled"] = "false" if insecure else "true"
    region = _lookup(options, "AWS_REGION")
    if region:
        settings["fs.s3a.endpoint.region"] = region
    key, secret, token = (_lookup(options, n) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    if key and secret:
        settings.update({"fs.s3a.access.key": key, "fs.s3a.secret.key": secret})
        if token:
            settings["fs.s3a.session.token"] = token
        settings["fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider" if token
            else "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
    return {f"spark.hadoop.{name}": value for name, value in settings.items()}


@functools.lru_cache(maxsize=16)
def _s3_filesystem(endpoint: str | None, access_key: str | None, secret_key: str | None, session_token: str | None,
                   region: str | None, allow_http: bool) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {}
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    if region:
        kwargs["region"] = region
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"{'http' if allow_http else 'https'}://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str | Path, options: Mapping[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow FileSystem for `uri` and the path of `uri` on it: the local file system (absolute path) for
    a path or `file://`; S3FileSystem (`bucket/key`, the endpoint and credentials of `options`) for `s3://`,
    `s3a://` and `s3n://`; whatever pyarrow makes of other schemes."""
    text = str(uri)
    kind = scheme(text)
    if kind in ("", "file"):
        return pafs.LocalFileSystem(), str(local_path(text).absolute())
    if kind in S3_SCHEMES:
        options = options or {}
        endpoint = _lookup(options, "AWS_ENDPOINT_URL")
        fs = _s3_filesystem(endpoint, _lookup(options, "AWS_ACCESS_KEY_ID"), _lookup(options, "AWS_SECRET_ACCESS_KEY"),
                            _lookup(options, "AWS_SESSION_TOKEN"), _lookup(options, "AWS_REGION"),
                            _truthy(_lookup(options, "AWS_ALLOW_HTTP")))
        path = text.split("://", 1)[1].strip("/")
        if not path:
            raise StorageError(f"{text}: an s3 URI names a bucket")
        return fs, path
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StorageError(f"{text}: unsupported storage location ({exc})") from exc


# ---- files -------------------------------------------------------------------------------
def exists(uri: str | Path, options: Mapping[str, str] | None = None) -> bool:
    """True when a file or a non-empty folder is at `uri`."""
    fs, path = filesystem(uri, options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str | Path, options: Mapping[str, str] | None = None) -> bool:
    """True when a file (an object) is at `uri`."""
    fs, path = filesystem(uri, options)
    return fs.get_file_info(path).type == pafs.FileType.File


def _make_parent(fs: pafs.FileSystem, path: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)


def read_bytes(uri: str | Path, options: Mapping[str, str] | None = None) -> bytes:
    """The content of the file at `uri`; FileNotFoundError naming `uri` when there is none."""
    fs, path = filesystem(uri, options)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri} is missing")
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(uri: str | Path, options: Mapping[str, str] | None = None, encoding: str = "utf-8") -> str:
    """The file at `uri` as text; FileNotFoundError naming `uri` when there is none."""
    return read_bytes(uri, options).decode(encoding)


def write_bytes(uri: str | Path, data: bytes, options: Mapping[str, str] | None = None) -> int:
    """Write (replace) the file at `uri` (local parent folders are created); returns its size.

    One PUT on an object store, so readers see the old object or the whole new one."""
    fs, path = filesystem(uri, options)
    _make_parent(fs, path)
    with fs.open_output_stream(path) as out:
        out.write(data)
    return len(data)


def write_text(uri: str | Path, text: str, options: Mapping[str, str] | None = None) -> int:
    """write_bytes of UTF-8 text."""
    return write_bytes(uri, text.encode("utf-8"), options)


def write_parquet(table: pa.Table, uri: str | Path, options: Mapping[str, str] | None = None,
                  compression: str = "snappy") -> int:
    """Write `table` as one Parquet file at `uri` (local parent folders are created); returns the file's size
    in bytes (the `size` a Delta add action needs), without a second request to the store."""
    if not is_remote(uri):  # the operating system's own errors ("[Errno 20] Not a directory") name the problem
        local = local_path(uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, local, compression=compression)
        return local.stat().st_size
    fs, path = filesystem(uri, options)
    _make_parent(fs, path)
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression=compression)
        size = out.tell()
    return size


def read_parquet(uri: str | Path, options: Mapping[str, str] | None = None) -> pa.Table:
    """A Parquet file (or a folder of them) as an Arrow table."""
    fs, path = filesystem(uri, options)
    return pq.read_table(path, filesystem=fs)


def list_files(uri: str | Path, options: Mapping[str, str] | None = None) -> list[str]:
    """The files below the folder `uri` (recursively), as sorted `/`-separated paths relative to it; [] when
    there is no such folder."""
    fs, path = filesystem(uri, options)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    prefix = path.rstrip("/") + "/"
    return sorted(info.path[len(prefix):].replace(os.sep, "/") for info in fs.get_file_info(selector)
                  if info.type == pafs.FileType.File and info.path.startswith(prefix))


def copy_folder(source: str | Path, target: str | Path, options: Mapping[str, str] | None = None,
                target_options: Mapping[str, str] | None = None) -> list[str]:
    """Copy every file below the folder `source` to the same relative paths below `target` (either may be
    local or remote; `target_options` default to `options`); returns the copied relative paths.
    FileNotFoundError naming `source` when it holds no file."""
    files = list_files(source, options)
    if not files:
        raise FileNotFoundError(f"{source} holds no files")
    source_fs, source_path = filesystem(source, options)
    target_fs, target_path = filesystem(target, options if target_options is None else target_options)
    for name in files:
        destination = f"{target_path.rstrip('/')}/{name}"
        _make_parent(target_fs, destination)
        pafs.copy_files(f"{source_path.rstrip('/')}/{name}", destination, source_filesystem=source_fs,
                        destination_filesystem=target_fs)
    return files


def download_folder(uri: str | Path, local_dir: str | Path, options: Mapping[str, str] | None = None) -> list[str]:
    """copy_folder from `uri` into the local folder `local_dir` (created); returns the relative paths."""
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    return copy_folder(uri, Path(local_dir).absolute(), options, {})
