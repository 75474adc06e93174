"""Shard record format: encode -> write -> iterate back to Clips, and atomic writes."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from tympan.datasets.manifest import make_row
from tympan.datasets.shards import (ShardError, encode_record, iter_shard, list_shards,
                                    read_docs, record_key, shard_name, write_shard)


def chirp(n: int = 16000) -> np.ndarray:
    t = np.arange(n) / 16000
    return (0.5 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)


def test_round_trip_audio_frames_meta(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((3, 24, 32, 3), np.uint8)
    frames[0, :, :, 0] = 255                        # a red, a green, a blue frame
    frames[1, :, :, 1] = 255
    frames[2, :, :, 2] = 255
    rows = [make_row("esc/1-100032-A-0.x", "/data/a.wav", labels=["dog"], split="fold1",
                     meta={"take": "A"}),
            make_row("vid1", "/data/v.mp4", start_s=1.0, end_s=2.5, labels=["speech", "music"])]
    audio = [chirp(), np.clip(rng.normal(0, 0.3, 24000), -1, 1).astype(np.float32)]
    recs = [encode_record(rows[0], audio[0], facts={"orig_sample_rate": 44100}),
            encode_record(rows[1], audio[1], frames=frames, frame_times=[0.5, 1.5, 2.5])]
    uri = str(tmp_path / shard_name(7))
    assert write_shard(uri, recs) == 2
    with tarfile.open(uri) as tar:
        names = tar.getnames()
    key = record_key("esc/1-100032-A-0.x")
    assert "/" not in key and "." not in key and key != record_key("esc/1-100032-A-0_x")
    assert names == [f"{key}.flac", f"{key}.json", "vid1.flac", "vid1.json", "vid1.00.jpg",
                     "vid1.01.jpg", "vid1.02.jpg"]
    clips = list(iter_shard(uri))
    assert [c.clip_id for c in clips] == ["esc/1-100032-A-0.x", "vid1"]
    for c, a in zip(clips, audio):
        assert c.sample_rate == 16000 and c.audio.dtype == np.float32
        assert np.max(np.abs(c.audio - a)) < 1e-3   # PCM_16: within quantisation
    assert clips[0].labels == ["dog"] and clips[0].frames is None
    assert clips[0].meta["take"] == "A" and clips[0].meta["record"]["orig_sample_rate"] == 44100
    assert clips[0].meta["record"]["split"] == "fold1"
    v = clips[1]
    assert v.frames.shape == (3, 24, 32, 3) and v.frames.dtype == np.uint8
    assert np.argmax(v.frames.reshape(3, -1, 3).mean(1), axis=1).tolist() == [0, 1, 2]
    assert v.frame_times.tolist() == [0.5, 1.5, 2.5]
    assert v.meta["record"]["start_s"] == 1.0 and v.meta["record"]["duration_s"] == 1.5
    with open(uri, "rb") as f:                       # file objects are read in streaming mode
        assert [c.clip_id for c in iter_shard(f)] == ["esc/1-100032-A-0.x", "vid1"]
    assert [d["labels"] for d in read_docs(uri)] == [["dog"], ["speech", "music"]]


def test_write_is_atomic_and_listing_ignores_partial_files(tmp_path):
    rec = encode_record(make_row("a", "/x.wav"), chirp(800))

    def records():
        yield rec
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_shard(str(tmp_path / shard_name(0)), records())
    assert list(tmp_path.iterdir()) == []           # neither a final nor a temporary file
    write_shard(str(tmp_path / shard_name(1)), [rec])
    write_shard(str(tmp_path / shard_name(0)), [])  # a shard whose clips were all rejected
    (tmp_path / ".shard-000002.tar.tmp-1234").write_bytes(b"partial")
    (tmp_path / "_meta").mkdir()
    (tmp_path / "_meta" / "shard-000003.tar").write_bytes(b"")
    assert [p.rsplit("/", 1)[-1] for p in list_shards(str(tmp_path))] == [
        "shard-000000.tar", "shard-000001.tar"]
    assert list(iter_shard(str(tmp_path / shard_name(0)))) == []
    assert list_shards(str(tmp_path / "nope"), missing_ok=True) == []


def test_bad_inputs_are_refused():
    row = make_row("a", "/x.wav")
    with pytest.raises(ShardError, match="non-empty 1-D"):
        encode_record(row, np.zeros(0, np.float32))
    with pytest.raises(ShardError, match="uint8"):
        encode_record(row, chirp(), frames=np.zeros((1, 4, 4, 3), np.float32), frame_times=[0])
    with pytest.raises(ShardError, match="as many times"):
        encode_record(row, chirp(), frames=np.zeros((2, 4, 4, 3), np.uint8), frame_times=[0])
    with pytest.raises(ValueError):
        shard_name(1_000_000)


def test_record_missing_audio_member_is_an_error(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = json.dumps({"clip_id": "a"}).encode()
        info = tarfile.TarInfo("a.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    with pytest.raises(ShardError, match="record 'a' lacks"):
        list(iter_shard(buf))
