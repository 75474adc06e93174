"""Sharding on a local Ray cluster: bad clips rejected per clip, frames for video, resumable
reruns without duplicates, and the same round trip against a moto S3 server.

Every test asks for ``s3_server`` before ``ray_cluster`` so the session's Ray workers start
with the S3 endpoint in their environment (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tympan.datasets import storage
from tympan.datasets.formats.registry import ingest
from tympan.datasets.manifest import make_row, read_manifest, write_manifest
from tympan.datasets.shards import iter_shard, list_shards
from tympan.distributed.sharding import format_inspection, inspect_shards, shard_manifest


def tone(path: Path, seconds: float, sr: int = 16000, channels: int = 1, freq: float = 330.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)
    return path


def write_mp4(path: Path, seconds: float = 2.0, fps: int = 10) -> Path:
    """H.264 video (frame colour drifts from red to blue) + AAC mono tone, written with PyAV."""
    import av

    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0] = 255 - 12 * i
            img[..., 2] = 12 * i
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000))
        for s in range(0, len(wave), 1024):
            af = av.AudioFrame.from_ndarray(wave[None, s:s + 1024].astype(np.float32),
                                            format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, s, Fraction(1, 16000)
            for pkt in aus.encode(af):
                out.mux(pkt)
        for st in (vs, aus):
            for pkt in st.encode(None):
                out.mux(pkt)
    return path


def corpus(root: Path) -> tuple[list[dict], set[str], dict[str, str]]:
    """Nine good clips (rates 8k-48k, stereo, FLAC, a window, an mp4 with video) + 3 bad ones."""
    rows, good = [], set()
    for i, (sr, ch) in enumerate([(16000, 1), (44100, 1), (48000, 2), (8000, 1), (22050, 2),
                                  (16000, 2), (32000, 1)]):
        rows.append(make_row(f"tone{i}", str(tone(root / f"tone{i}.wav", 1.0, sr, ch)),
                             labels=["tone", f"sr{sr}"]))
        good.add(f"tone{i}")
    rows.append(make_row("flac-window", str(tone(root / "long.flac", 2.0, 44100)),
                         start_s=0.5, end_s=1.5, labels=["tone"]))
    rows.append(make_row("video", str(write_mp4(root / "clip.mp4")), labels=["video"]))
    good |= {"flac-window", "video"}
    (root / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(3000))
    (root / "empty.wav").write_bytes(b"")
    bad = {"corrupt": str(root / "corrupt.flac"), "empty": str(root / "empty.wav"),
           "missing": str(root / "missing.wav")}
    rows += [make_row(k, v, labels=["bad"]) for k, v in bad.items()]
    return rows, good, bad


def clips_in(out: str) -> Counter:
    return Counter(c.clip_id for s in list_shards(out) for c in iter_shard(s))


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}


def test_shard_rejects_frames_and_resume(tmp_path, s3_server, ray_cluster):
    rows, good, bad = corpus(tmp_path / "media")
    write_manifest(rows, tmp_path / "m.parquet")
    out = tmp_path / "shards"
    # First run "crashes" in the last of 4 shards: the job fails and that shard is not
    # written. With 2 CPUs the last task starts only after two others have finished.
    with pytest.raises(Exception, match="injected failure"):
        shard_manifest(str(tmp_path / "m.parquet"), str(out), shard_size=3,
                       _fail_shards={"shard-000003.tar"}, progress=False)
    before = mtimes(out)
    assert "shard-000003.tar" not in before and len(before) >= 1
    summary = shard_manifest(str(tmp_path / "m.parquet"), str(out), shard_size=3)
    assert summary.shards == 4 and summary.shards_written == 4 - len(before)
    after = mtimes(out)
    assert sorted(after) == [f"shard-00000{i}.tar" for i in range(4)]
    assert all(after[k] == v for k, v in before.items())        # completed shards untouched
    counts = clips_in(str(out))
    assert counts == Counter({k: 1 for k in good})               # each good clip exactly once
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert {r["clip_id"]: r["reason"] for r in rejects} == {
        "corrupt": "undecodable", "empty": "empty", "missing": "missing"}
    assert {r["clip_id"]: r["source"] for r in rejects} == bad
    assert summary.clips == 9 and summary.rejects_by_reason == {
        "empty": 1, "missing": 1, "undecodable": 1}
    assert json.loads((out / "_summary.json").read_text())["clips"] == 9
    assert abs(summary.hours * 3600 - 10.0) < 0.05               # 8 x 1 s + 1 s window + 2 s

    by_id = {c.clip_id: c for s in list_shards(str(out)) for c in iter_shard(s)}
    v = by_id["video"]
    assert v.frames.shape == (2, 48, 64, 3) and v.frame_times.tolist() == [0.5, 1.5]
    assert v.frames[0, ..., 0].mean() > v.frames[1, ..., 0].mean()   # red fades over time
    assert by_id["flac-window"].audio.shape == (16000,)
    assert by_id["tone2"].meta["record"]["orig_sample_rate"] == 48000
    assert by_id["tone2"].frames is None and by_id["tone2"].audio.shape == (16000,)

    # Lose one shard and leave a partial write behind: only that shard is redone.
    (out / "shard-000001.tar").unlink()
    (out / ".shard-000001.tar.tmp-dead").write_bytes(b"partial")
    kept = mtimes(out)
    again = shard_manifest(str(tmp_path / "m.parquet"), str(out), shard_size=3, progress=False)
    assert again.shards_written == 1 and again.shards_skipped == 3
    assert all(mtimes(out)[k] == v for k, v in kept.items())
    assert not list(out.glob(".shard-*"))
    assert clips_in(str(out)) == counts and again.rejects == 3
    assert len(pq.read_table(out / "rejects.parquet")) == 3     # merged without duplicates

    info = inspect_shards(str(out))
    assert info["clips"] == 9 and info["labels"]["tone"] == 8 and info["clips_with_frames"] == 1
    assert info["rejects_by_reason"] == {"empty": 1, "missing": 1, "undecodable": 1}
    assert "9 clips" in format_inspection(info)

    with pytest.raises(ValueError, match="another plan"):
        shard_manifest(str(tmp_path / "m.parquet"), str(out), shard_size=5, progress=False)


def test_s3_round_trip_ingest_and_shards(tmp_path, s3_server, s3_bucket, ray_cluster):
    """ESC-50 layout on S3 -> manifest -> shards on S3 -> inspect, all via the endpoint."""
    local = tmp_path / "ESC-50"
    (local / "meta").mkdir(parents=True)
    (local / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n"
        "1-100038-A-14.wav,1,14,chirping_birds,False,100038,A\n"
        "2-102414-C-17.wav,2,17,pouring_water,False,102414,C\n"
        "3-1-A-1.wav,3,1,rooster,False,1,A\n"
        "4-2-B-0.wav,4,0,dog,True,2,B\n")
    for i, name in enumerate(["1-100032-A-0", "1-100038-A-14", "2-102414-C-17"]):
        tone(local / "audio" / f"{name}.wav", 1.0, 44100, freq=200 + 100 * i)
    (local / "audio" / "3-1-A-1.wav").write_bytes(b"RIFF" + os.urandom(500))
    fs = storage.filesystem_for(f"s3://{s3_bucket}")[0]
    pafs.copy_files(str(local), f"{s3_bucket}/ESC-50", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    src, out = f"s3://{s3_bucket}/ESC-50", f"s3://{s3_bucket}/shards/esc50"
    report = ingest("esc50", src, f"s3://{s3_bucket}/esc50.parquet")
    assert report.rows == 4 and report.missing_media == ["4-2-B-0"]
    rows = read_manifest(f"{s3_bucket}/esc50.parquet", filesystem=fs)
    assert all(r["source"].startswith(f"s3://{s3_bucket}/ESC-50/audio/") for r in rows)
    summary = shard_manifest(f"s3://{s3_bucket}/esc50.parquet", out, shard_size=2,
                             progress=False)
    assert summary.shards == 2 and summary.clips == 3 and summary.rejects_by_reason == {
        "undecodable": 1}
    shards = list_shards(out)
    assert [s.rsplit("/", 1)[-1] for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
    clips = [c for s in shards for c in iter_shard(s)]
    assert sorted(c.clip_id for c in clips) == ["1-100032-A-0", "1-100038-A-14", "2-102414-C-17"]
    assert all(c.audio.shape == (16000,) and c.meta["record"]["split"].startswith("fold")
               for c in clips)
    rerun = shard_manifest(f"s3://{s3_bucket}/esc50.parquet", out, shard_size=2, progress=False)
    assert rerun.shards_written == 0 and rerun.clips == 3 and rerun.rejects == 1
    info = inspect_shards(out)
    assert info["labels"] == {"chirping_birds": 1, "dog": 1, "pouring_water": 1}
    assert info["splits"] == {"fold1": 2, "fold2": 1} and info["rejects"] == 1
