"""Sensor spectra through shards and the training stream: `tympan data shard` of a spectra
manifest writes sensor-day records (float16 frames + times), and the `spectra:` pipeline cuts
them into slices that never straddle a discontinuity under `reject`, restart after it under
`split`, and bridge short gaps under `fill` — checked on the frame times each batch carries,
against slice lists worked out here from the CSV's own layout.

The CSVs are written here, with every fault the ingest knows, at known frame indices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tympan.datasets.formats.spectra import ingest_spectra
from tympan.datasets.manifest import write_manifest
from tympan.datasets.shards import iter_shard, list_shards
from tympan.datasets.thirdoctave import NOMINAL_HZ
from tympan.distributed.pipeline import PipelineConfig, build_pipeline
from tympan.distributed.sharding import shard_manifest
from tympan.methods.sensor import sensor_config

P = 0.125
T0 = 1_760_000_000.0          # 2025-10-09 08:53:20 UTC: all frames on one UTC day
WIDTH = 40
FILL_MAX = 4
# Frame indices on the 125 ms grid, per sensor: runs separated by gaps of 3 missing frames
# (fillable), 30 missing frames (too long) and, for s2, 6 missing frames (one more than
# FILL_MAX) and a clock that jumps back 50 frames.
LAYOUT = {
    "s1": [range(0, 130), range(133, 260), range(290, 400)],
    "s2": [range(0, 100), range(106, 200), range(150, 240)],     # 200 -> 150: clock back
}


def levels(sensor: str, i: int) -> np.ndarray:
    return 50 + 10 * np.sin(i / 7 + np.arange(29) * (1 + (sensor == "s2")))


def write_csvs(root: Path) -> None:
    root.mkdir(parents=True)
    hdr = "timestamp," + ",".join(f"{f:g}Hz" for f in NOMINAL_HZ)
    for sensor, runs in LAYOUT.items():
        lines = [hdr]
        for run in runs:
            for i in run:
                lines.append(f"{T0 + i * P:.3f}," + ",".join(f"{x:.2f}" for x in levels(sensor, i)))
                if i == 20:
                    lines.append(lines[-1])                   # a repeated row
                if i == 60:
                    lines.append(f"{T0 + 60.5 * P:.3f},oops" + ",1" * 28)   # malformed
        (root / f"{sensor}.csv").write_text("\n".join(lines) + "\n")


def expected(sensor: str, policy: str) -> list[np.ndarray]:
    """Frame-index lists of the slices a policy must produce (worked out from LAYOUT)."""
    runs = LAYOUT[sensor]
    if policy == "split":
        return [np.arange(r.start + k, r.start + k + WIDTH) for r in runs
                for k in range(0, len(r) - WIDTH + 1, WIDTH)]
    seq = [np.asarray(runs[0], float)]
    for prev, run in zip(runs, runs[1:]):
        missing = run.start - prev.stop
        if policy == "fill" and 1 <= missing <= FILL_MAX:
            seq.append(np.arange(prev.stop, run.start, dtype=float))
        seq.append(np.asarray(run, float))
    idx = np.concatenate(seq)
    out = []
    for s in range(0, len(idx) - WIDTH + 1, WIDTH):
        w = idx[s:s + WIDTH]
        if np.all(np.diff(w) == 1):
            out.append(w)
    return out


@pytest.fixture(scope="module")
def sensor_shards(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("sensors")
    write_csvs(root / "csv")
    rows, report = ingest_spectra(str(root / "csv"))
    write_manifest(rows, root / "runs.parquet")
    summary = shard_manifest(str(root / "runs.parquet"), str(root / "shards"), shard_size=1,
                             progress=False)
    return root, rows, report, summary


def test_shard_writes_one_record_per_sensor_day(sensor_shards):
    root, rows, report, summary = sensor_shards
    assert report.runs == 6 and report.dropped["repeated row"] == 2
    assert summary.clips == 2 and summary.rejects == 0 and summary.shards == 2
    recs = [c for s in list_shards(str(root / "shards")) for c in iter_shard(s)]
    assert sorted(r.clip_id for r in recs) == ["s1@2025-10-09", "s2@2025-10-09"]
    for rec in recs:
        sensor = rec.clip_id.split("@")[0]
        idx = np.concatenate([np.asarray(r) for r in sorted(LAYOUT[sensor], key=lambda r: r.start)])
        assert rec.audio.size == 0 and rec.features.shape == (len(idx), 29)
        np.testing.assert_allclose(rec.feature_times, T0 + idx * P, atol=1e-3)
        want = np.stack([levels(sensor, i) for i in idx])
        np.testing.assert_allclose(rec.features, want, atol=0.06)     # float16 at 40-60 dB
        assert [r["frames"] for r in rec.meta["runs"]] == [len(r) for r in
                                                          sorted(LAYOUT[sensor], key=lambda r: r.start)]


def stream(root: Path, policy: str, method: str = "temporal-gap"):
    cfg = PipelineConfig(batch_size=4, group_size=8, shuffle_buffer=0, keep_ids=True,
                         drop_last=False, slice_width=WIDTH, gap_policy=policy,
                         fill_max_frames=FILL_MAX)
    p = build_pipeline(f"spectra:{root / 'shards'}", method, sensor_config(method, width=0.125),
                       cfg, epochs=1)
    batches = list(p.iter_batches())
    return p, batches


@pytest.mark.parametrize("policy", ["reject", "split", "fill"])
def test_slices_follow_the_gap_policy(sensor_shards, policy):
    root = sensor_shards[0]
    p, batches = stream(root, policy)
    times = np.concatenate([b["frame_times"] for b in batches])            # [N, WIDTH]
    ids = np.concatenate([b["clip_id"] for b in batches])
    stats = p.slice_stats()
    got: dict[str, list] = {"s1": [], "s2": []}
    for sid, t in zip(ids, times):
        got[str(sid).split("@")[0]].append(np.rint((t - T0) / P))
    for sensor in LAYOUT:
        want = expected(sensor, policy)
        assert sorted(map(tuple, got[sensor])) == sorted(map(tuple, want)), (sensor, policy)
    # no sample crosses a discontinuity: every step inside a sample is one period
    np.testing.assert_allclose(np.diff(times, axis=1), P, atol=1e-3)
    assert stats["slices"] == len(ids) == sum(len(expected(s, policy)) for s in LAYOUT)
    assert stats["records"] == 2 and stats["discontinuities"] == 4
    if policy == "reject":
        grid = sum(sum(len(r) for r in LAYOUT[s]) // WIDTH for s in LAYOUT)
        assert stats["rejected"] == grid - stats["slices"] > 0
    if policy == "split":
        assert stats["restarts"] == 4 and stats["rejected"] == 0
    if policy == "fill":
        assert stats["filled_gaps"] == 1 and stats["filled_frames"] == 3
        # a sample spans s1's filled gap (frames 130-132), its levels interpolated in dB
        across = [t for sid, t in zip(ids, times) if str(sid).startswith("s1")
                  and np.rint((t[0] - T0) / P) <= 130 <= np.rint((t[-1] - T0) / P)]
        assert len(across) == 1


def test_reject_keeps_sensor_frames_exact(sensor_shards):
    """The views a method sees are the sensor's own frames (float16 precision), drawn inside
    one slice: Audio2Vec's target slice equals the CSV levels at the times it came from,
    centred on their own mean in 10 dB units (methods.base.centre_levels)."""
    from tympan.methods.base import LEVEL_SCALE_DB

    root = sensor_shards[0]
    p, batches = stream(root, "reject", method="audio2vec-cbow")
    b = batches[0]
    assert b["context"].shape[1:] == (4, 8, 29) and b["target"].shape[1:] == (8, 29)
    for sid, t, target in zip(b["clip_id"], b["frame_times"], b["target"]):
        sensor = str(sid).split("@")[0]
        idx = np.rint((t - T0) / P).astype(int)
        frames = np.stack([levels(sensor, i) for i in idx])          # the slice's CSV levels
        # the target is 8 consecutive frames of the slice (float16: 0.06 dB -> 0.006 units)
        centred = [(frames[k:k + 8] - frames[k:k + 8].mean()) / LEVEL_SCALE_DB for k in range(WIDTH - 7)]
        match = [k for k, c in enumerate(centred) if np.allclose(c, target, atol=0.01)]
        assert match, sid


def test_spectra_source_refuses_audio_front_end(sensor_shards):
    from tympan.config import ConfigError
    from tympan.methods.registry import get_method

    root = sensor_shards[0]
    with pytest.raises(ConfigError, match="third-octave"):
        build_pipeline(f"spectra:{root / 'shards'}", "cola", get_method("cola").config_cls(),
                       PipelineConfig(batch_size=4), epochs=1)
    with pytest.raises(ConfigError, match="slice methods"):
        build_pipeline(f"spectra:{root / 'shards'}", "l3", None, PipelineConfig(batch_size=4),
                       epochs=1)


def test_third_octave_views_refuse_a_device_front_end(tmp_path):
    """Third-octave views are centred per view in the sampler (methods.base.centre_levels);
    a device front end would ship raw waveforms past that step: refused, for audio too."""
    from tympan.config import ConfigError

    with pytest.raises(ConfigError, match="centre_levels"):
        build_pipeline(str(tmp_path), "temporal-gap", sensor_config("temporal-gap"),
                       PipelineConfig(batch_size=4, frontend="device"), epochs=1)


# ~60 s each on 2 cores at load 9 (3 min at load 30+): ~35 s of it is Ray Train bringing up
# its controller and 2-worker group, ~10 s the stream's start; the 4 steps of 8 samples take
# about a second, so fewer steps or less data would not make it cheaper.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["audio2vec-cbow", "temporal-gap"])
def test_two_worker_pretrain_on_sensor_shards(sensor_shards, method, tmp_path):
    """`tympan pretrain --preset sensor --data spectra:DIR` on 2 Ray Train workers: the run
    completes, its summary carries the slicing counts, the checkpoint embeds third-octave
    frames and audio (through the third-octave front end)."""
    import torch

    from tympan.cli import main
    from tympan.methods.registry import load_method

    root = sensor_shards[0]
    out = tmp_path / "run"
    argv = ["pretrain", "--method", method, "--data", f"spectra:{root / 'shards'}", "--preset",
            "sensor", "--workers", "2", "--out", str(out), "steps=4", "batch_size=8",
            "checkpoint_every=4", "log_every=2", "val_batches=0", "shuffle_buffer=0",
            f"slice_width={WIDTH}", "width=0.125", "dim=16"]
    if method == "temporal-gap":
        argv += ["clip_s=5.0", "hidden=16"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 4 and s["workers"] == 2 and s["bad_clips"] == 0
    assert np.isfinite(s["loss_first"]) and np.isfinite(s["loss_last"])
    assert s["slices"]["slices"] >= 8 and s["slices"]["rejected"] > 0
    model = load_method(s["checkpoint"])
    assert model.cfg.frontend.kind == "third-octave" and model.cfg.slice_frames == 8
    with torch.no_grad():
        emb = model.embed_clip(torch.zeros(1, 32000) + 0.01)      # audio -> 29 bands -> encoder
    assert emb.shape == (1, 16) and torch.isfinite(emb).all()


def test_bench_measures_the_ingest_against_pyarrow(tmp_path):
    """`tympan bench data`'s sensor section: both readers see every frame of the same files."""
    from tympan.distributed.bench import spectra_ingest_bench

    r = spectra_ingest_bench(tmp_path / "csv", sensors=2, frames=3000)
    assert r["frames"] == r["plain_rows"] == 6000 and r["files"] == 2
    assert r["ingest_frames_per_s"] > 0 and r["pyarrow_frames_per_s"] > 0
    assert r["ingest_over_pyarrow"] == pytest.approx(r["ingest_frames_per_s"] / r["pyarrow_frames_per_s"])


def test_bench_only_spectra_rewrites_its_own_section(tmp_path):
    """`tympan bench data --only spectra` measures the ingest alone and replaces its section of
    the report in place, keeping every other section (run twice: still one section)."""
    from tympan.cli import main

    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Sharding\n\nkept\n\n## Memory: the stream 10x longer\n\nalso kept\n")
    for _ in range(2):
        assert main(["bench", "data", "--only", "spectra", "--quick", "--repeats", "1",
                     "--out", str(md), "--json", str(tmp_path / "r.json")]) == 0
    text = md.read_text()
    assert text.count("## Sensor CSV ingest") == 1 and "kept\n" in text and "also kept\n" in text
    assert text.index("## Sharding") < text.index("## Sensor CSV ingest") < text.index("## Memory")
    r = json.loads((tmp_path / "r.json").read_text())["spectra_ingest"]
    assert r["frames"] == r["plain_rows"] == 40_000
    assert f"ratio {r['ingest_over_pyarrow']:.2f}" in text
