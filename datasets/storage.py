"""Where bytes live: local paths, ``s3://bucket/key`` and read-only ``http(s)://`` URIs.

Every reader and writer in tympan goes through these few functions, so a corpus, a shard set
or a checkpoint directory can be moved from a laptop folder to S3 by changing its URI.

S3 goes through pyarrow's ``S3FileSystem``, not s3fs: s3fs is not fork-safe and Ray Data
workers fork (ANCHORS section 7). The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (MinIO, moto, ...), the region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` and the credentials from the usual AWS chain (env vars first).
"""

from __future__ import annotations

import io
import os
import posixpath
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

# Objects up to this size are fetched with one GET and decoded from memory: decoders read in
# small pieces, and one ranged GET per piece would be far slower than one whole read.
WHOLE_READ_MAX_BYTES = 64 << 20
_RANGED_BUFFER_BYTES = 4 << 20
_HTTP_TIMEOUT_S = 60.0


class StorageError(OSError):
    """A URI cannot be read, written or listed; names the URI and the reason."""

    def __init__(self, uri: str, reason: str):
        self.uri, self.reason = str(uri), reason
        super().__init__(f"{uri}: {reason}")

    def __reduce__(self):
        # Rebuilt from its fields when it crosses a process boundary (Ray workers).
        return type(self), (self.uri, self.reason)


class ObjectNotFound(StorageError, FileNotFoundError):
    """The file, key or URL does not exist (also a FileNotFoundError)."""

    def __init__(self, uri: str, reason: str = "no such file or object"):
        super().__init__(uri, reason)


def scheme(uri: str) -> str:
    """``"s3"``, ``"http"``, ``"https"`` or ``"file"`` (plain paths and ``file://``)."""
    s = urllib.parse.urlsplit(str(uri)).scheme.lower()
    # A one-letter scheme is a Windows drive, not a URI scheme.
    return s if s in ("s3", "http", "https") else "file"


def is_local(uri: str) -> bool:
    return scheme(uri) == "file"


def local_path(uri: str) -> str:
    """Absolute local path of a plain path or ``file://`` URI."""
    uri = str(uri)
    if uri.startswith("file://"):
        uri = urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
    return os.path.abspath(os.path.expanduser(uri))


def _s3_settings() -> tuple[str | None, str, str]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
    return endpoint, region, key_id


# One S3FileSystem per (endpoint, region, key id) and process: creating one resolves
# credentials, and tests switch endpoints through the environment.
_S3_CACHE: dict[tuple[str | None, str, str], pafs.S3FileSystem] = {}


def _s3_filesystem() -> pafs.S3FileSystem:
    settings = _s3_settings()
    fs = _S3_CACHE.get(settings)
    if fs is None:
        endpoint, region, _ = settings
        kwargs: dict = {"region": region,
                        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
            kwargs["scheme"] = parts.scheme or "https"
        fs = _S3_CACHE[settings] = pafs.S3FileSystem(**kwargs)
    return fs


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system holding ``uri`` and the path inside it.

    Local paths -> (LocalFileSystem, absolute path); ``s3://b/k`` -> (S3FileSystem, ``"b/k"``);
    ``http(s)://`` -> (fsspec HTTPFileSystem wrapped for pyarrow, the URL), read-only.
    """
    s = scheme(uri)
    if s == "file":
        return pafs.LocalFileSystem(), local_path(uri)
    if s == "s3":
        parts = urllib.parse.urlsplit(str(uri))
        if not parts.netloc:
            raise StorageError(uri, "s3 URI without a bucket (expected s3://bucket/key)")
        return _s3_filesystem(), parts.netloc + parts.path.rstrip("/")
    from fsspec.implementations.http import HTTPFileSystem
    return pafs.PyFileSystem(pafs.FSSpecHandler(HTTPFileSystem())), str(uri)


class _RawNative(io.RawIOBase):
    """Adapts a pyarrow random-access file to io.RawIOBase so io.BufferedReader can wrap it."""

    def __init__(self, f):
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._f.readinto(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


def _http_get(uri: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(str(uri), method=method)
    try:
        with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT_S) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise ObjectNotFound(uri, f"HTTP {e.code}") from None
        raise StorageError(uri, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise StorageError(uri, f"cannot fetch: {getattr(e, 'reason', e)}") from None


def _missing_or_error(uri: str, e: Exception) -> StorageError:
    if isinstance(e, FileNotFoundError) or "not exist" in str(e).lower() \
            or "not found" in str(e).lower() or "nosuchkey" in str(e).lower():
        return ObjectNotFound(uri)
    return StorageError(uri, f"{type(e).__name__}: {e}")


def open_input(uri: str) -> BinaryIO:
    """A binary, seekable file-like object for reading ``uri`` (use as a context manager).

    Raises ObjectNotFound for a missing file/key/URL and StorageError for other failures.
    """
    s = scheme(uri)
    if s == "file":
        path = local_path(uri)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(uri) from None
        except IsADirectoryError:
            raise StorageError(uri, "is a directory, not a file") from None
        except OSError as e:
            raise StorageError(uri, e.strerror or str(e)) from None
    if s in ("http", "https"):
        return io.BytesIO(_http_get(uri))
    fs, path = filesystem_for(uri)
    try:
        f = fs.open_input_file(path)
    except Exception as e:  # pyarrow raises FileNotFoundError / OSError with the S3 message
        raise _missing_or_error(uri, e) from None
    if f.size() <= WHOLE_READ_MAX_BYTES:
        try:
            return io.BytesIO(f.read())
        finally:
            f.close()
    return io.BufferedReader(_RawNative(f), buffer_size=_RANGED_BUFFER_BYTES)


def read_bytes(uri: str) -> bytes:
    """All bytes of ``uri``."""
    with open_input(uri) as f:
        return f.read()


def exists(uri: str) -> bool:
    """Whether a file/object (or a local directory / non-empty S3 prefix) exists at ``uri``."""
    s = scheme(uri)
    if s == "file":
        return os.path.exists(local_path(uri))
    if s in ("http", "https"):
        try:
            _http_get(uri, method="HEAD")
            return True
        except ObjectNotFound:
            return False
    fs, path = filesystem_for(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except Exception as e:
        raise StorageError(uri, f"cannot stat: {e}") from None


def join(base_uri: str, *parts: str) -> str:
    """Append path parts to a directory path or URI (``join("s3://b/x", "y.tar")``)."""
    base = str(base_uri)
    if is_local(base) and not base.startswith("file://"):
        return os.path.join(base, *parts)
    return posixpath.join(base, *(p.strip("/") for p in parts))


def _to_uri(base_uri: str, fs_path: str) -> str:
    s = scheme(base_uri)
    if s == "s3":
        return f"s3://{fs_path}"
    return fs_path


def list_files(prefix_uri: str, suffix: str = "") -> list[str]:
    """Full URIs of all files below a directory / S3 prefix whose names end with ``suffix``,
    sorted. A missing directory or empty prefix is an error (a mistyped ``--data`` must not
    look like an empty corpus)."""
    if scheme(prefix_uri) in ("http", "https"):
        raise StorageError(prefix_uri, "cannot list an http(s) URI; give a manifest instead")
    fs, path = filesystem_for(prefix_uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=False))
    except Exception as e:
        raise _missing_or_error(prefix_uri, e) from None
    out = [_to_uri(prefix_uri, i.path) for i in infos
           if i.type == pafs.FileType.File and i.path.endswith(suffix)]
    return sorted(out)


def makedirs(uri: str) -> None:
    """Create a local directory (and parents). S3 has no directories: nothing to do."""
    s = scheme(uri)
    if s == "file":
        os.makedirs(local_path(uri), exist_ok=True)
    elif s in ("http", "https"):
        raise StorageError(uri, "http(s) URIs are read-only")


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old object or the complete new one.

    Local: a temporary sibling, fsync, then ``os.replace`` (atomic on POSIX). S3: one PUT of
    the final key, which S3 makes visible only when complete.
    """
    s = scheme(uri)
    if s in ("http", "https"):
        raise StorageError(uri, "http(s) URIs are read-only")
    if s == "file":
        path = Path(local_path(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StorageError(uri, f"cannot write: {e.strerror or e}") from None
        return
    fs, path = filesystem_for(uri)
    try:
        with fs.open_output_stream(path) as out:
            out.write(data)
    except Exception as e:
        raise StorageError(uri, f"cannot write: {e}") from None
