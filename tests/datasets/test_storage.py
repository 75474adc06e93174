"""Storage URIs against real back ends: the local disk, a moto S3 server on 127.0.0.1 and a
stdlib HTTP server on 127.0.0.1."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from tympan.datasets import storage
from tympan.datasets.storage import ObjectNotFound, StorageError


def test_local_roundtrip_list_and_atomic_overwrite(tmp_path):
    base = str(tmp_path / "out")
    storage.makedirs(base)
    for name, data in [("b/2.tar", b"two"), ("a.tar", b"one"), ("b/notes.txt", b"x")]:
        storage.write_bytes_atomic(storage.join(base, name), data)
    assert storage.read_bytes(storage.join(base, "b", "2.tar")) == b"two"
    assert storage.exists(storage.join(base, "a.tar"))
    assert not storage.exists(storage.join(base, "zzz.tar"))
    assert storage.list_files(base, suffix=".tar") == [
        os.path.join(base, "a.tar"), os.path.join(base, "b", "2.tar")]
    assert len(storage.list_files(base)) == 3
    # An overwrite replaces the whole file and leaves no temporary sibling behind.
    storage.write_bytes_atomic(storage.join(base, "a.tar"), b"replaced" * 1000)
    assert storage.read_bytes(storage.join(base, "a.tar")) == b"replaced" * 1000
    assert sorted(os.listdir(base)) == ["a.tar", "b"]
    fs, path = storage.filesystem_for(base)
    assert isinstance(fs, pafs.LocalFileSystem) and path == base
    assert storage.read_bytes("file://" + os.path.join(base, "a.tar")).startswith(b"replaced")


def test_local_errors_name_the_uri(tmp_path):
    missing = str(tmp_path / "nope.flac")
    with pytest.raises(ObjectNotFound, match="nope.flac") as e:
        storage.read_bytes(missing)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, StorageError)
    assert e.value.uri == missing
    with pytest.raises(ObjectNotFound, match="no_dir"):
        storage.list_files(str(tmp_path / "no_dir"))
    # A failed write (the target is a directory) raises and leaves no temporary file.
    (tmp_path / "d").mkdir()
    with pytest.raises(StorageError, match="cannot write"):
        storage.write_bytes_atomic(str(tmp_path / "d"), b"x")
    assert os.listdir(tmp_path / "d") == [] and sorted(os.listdir(tmp_path)) == ["d"]


def test_s3_roundtrip_list_missing(s3_server, s3_bucket):
    base = f"s3://{s3_bucket}/run1"
    for name, data in [("shards/000001.tar", b"B" * 10), ("shards/000000.tar", b"A" * 10),
                       ("shards/_plan.json", b"{}")]:
        storage.write_bytes_atomic(storage.join(base, name), data)
    assert storage.join(base, "/shards/", "x.tar") == f"s3://{s3_bucket}/run1/shards/x.tar"
    assert storage.read_bytes(f"{base}/shards/000001.tar") == b"B" * 10
    assert storage.exists(f"{base}/shards/000000.tar")
    assert not storage.exists(f"{base}/shards/000009.tar")
    assert storage.list_files(f"{base}/shards", suffix=".tar") == [
        f"{base}/shards/000000.tar", f"{base}/shards/000001.tar"]
    fs, path = storage.filesystem_for(f"{base}/shards/000000.tar")
    assert isinstance(fs, pafs.S3FileSystem) and path == f"{s3_bucket}/run1/shards/000000.tar"
    with storage.open_input(f"{base}/shards/000001.tar") as f:
        f.seek(5)
        assert f.read(3) == b"BBB" and f.seekable()
    with pytest.raises(ObjectNotFound, match="missing.flac"):
        storage.read_bytes(f"{base}/missing.flac")
    with pytest.raises(ObjectNotFound):
        storage.list_files(f"s3://{s3_bucket}/no/such/prefix")


def test_s3_large_object_uses_ranged_reads(s3_server, s3_bucket, monkeypatch):
    data = bytes(range(256)) * 4096                  # 1 MiB
    uri = f"s3://{s3_bucket}/big.bin"
    storage.write_bytes_atomic(uri, data)
    monkeypatch.setattr(storage, "WHOLE_READ_MAX_BYTES", 1024)
    with storage.open_input(uri) as f:
        assert not hasattr(f, "getvalue")            # not an in-memory copy
        f.seek(700_000)
        assert f.read(10) == data[700_000:700_010]
        f.seek(-6, os.SEEK_END)
        assert f.read() == data[-6:]


def test_http_read_only(http_root):
    root, base = http_root
    (root / "clip.bin").write_bytes(b"hello bytes")
    assert storage.read_bytes(f"{base}/clip.bin") == b"hello bytes"
    assert storage.exists(f"{base}/clip.bin")
    assert not storage.exists(f"{base}/absent.bin")
    with pytest.raises(ObjectNotFound, match="absent.bin"):
        storage.read_bytes(f"{base}/absent.bin")
    with pytest.raises(StorageError, match="read-only"):
        storage.write_bytes_atomic(f"{base}/new.bin", b"x")
    with pytest.raises(StorageError, match="cannot list"):
        storage.list_files(base)
    with storage.open_input(f"{base}/clip.bin") as f:
        f.seek(6)
        assert f.read() == b"bytes"


def test_s3_from_a_ray_worker(s3_server, s3_bucket, ray_cluster, media_kit, tmp_path):
    """Ray workers fork; pyarrow's S3 client (not s3fs) must work there, with the endpoint
    and credentials taken from the worker's environment."""
    import numpy as np

    ray = ray_cluster
    path = media_kit.write_audio(tmp_path / "w.flac", media_kit.tone(440, 1.0, 22050), 22050)
    uri = f"s3://{s3_bucket}/ray/w.flac"
    storage.write_bytes_atomic(uri, path.read_bytes())

    @ray.remote
    def decode(u: str):
        from tympan.datasets.audio import decode_audio
        from tympan.datasets.storage import list_files
        return list_files(u.rsplit("/", 1)[0]), decode_audio(u, start_s=0.25, end_s=0.75)

    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    listed, x = ray.get(decode.options(runtime_env={"env_vars": env}).remote(uri), timeout=120)
    assert listed == [uri]
    from tympan.datasets.audio import decode_audio
    np.testing.assert_array_equal(x, decode_audio(str(path), start_s=0.25, end_s=0.75))
