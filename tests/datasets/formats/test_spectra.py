"""Sensor spectra CSVs -> continuous runs: every continuity fault and malformed row of the
issue, on files written here line by line (so each fault's line number is known)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tympan.cli import main
from tympan.datasets.formats.common import MetadataError
from tympan.datasets.formats.registry import ingest
from tympan.datasets.manifest import read_manifest
from tympan.datasets.thirdoctave import NOMINAL_HZ

BANDS = [f"{f:g}" for f in NOMINAL_HZ]          # 20, 25, 31.5, ... 12500


def frame(rng, t: float, fmt: str = "{:.3f}") -> str:
    return ",".join([fmt.format(t)] + [f"{v:.1f}" for v in rng.uniform(30, 70, 29)])


def write_faulty(path: Path) -> dict:
    """A one-sensor file with every fault; returns what the ingest must find."""
    rng = np.random.default_rng(0)
    lines = ["time," + ",".join(BANDS)]
    t0, p = 1_700_000_000.0, 0.125
    expect = {"refused": {}, "runs": []}

    def add(line: str) -> int:
        lines.append(line)
        return len(lines)          # its 1-based line number

    def refuse(line: str, kind: str):
        expect["refused"][add(line)] = kind

    first = add(frame(rng, t0))
    for i in range(1, 40):                          # run 1: 40 frames, with faults inside
        add(frame(rng, t0 + i * p))
        if i == 10:
            lines.append(lines[-1])                 # a repeated row: dropped, no break
        if i == 12:
            refuse(",".join(["x"] * 5), "wrong column count")
        if i == 15:
            refuse(frame(rng, t0 + 99.0).replace(",", ",abc,", 1).rsplit(",", 1)[0], "non-numeric level")
        if i == 20:
            refuse(f"{t0 + 0.01:.3f}," + ",".join(["nan"] + ["40.0"] * 28), "NaN level")
        if i == 25:
            refuse(f"{t0 + 0.02:.3f}," + ",".join(["900.0"] + ["40.0"] * 28), "impossible level")
        if i == 30:
            refuse("", "empty line")
        if i == 33:
            refuse("yesterday," + ",".join(["40.0"] * 29), "bad timestamp")
    expect["runs"].append((first, 40))
    # a 10 s gap (sensor down) -> run 2 of 16 frames
    t1 = t0 + 39 * p + 10.0
    second = add(frame(rng, t1))
    for i in range(1, 16):
        add(frame(rng, t1 + i * p))
    expect["runs"].append((second, 16))
    # the clock jumps back by 60 s -> run 3 of 8 frames; then a repeated time with other levels -> run 4
    t2 = t1 + 15 * p - 60.0
    third = add(frame(rng, t2))
    for i in range(1, 8):
        add(frame(rng, t2 + i * p))
    expect["runs"].append((third, 8))
    fourth = add(frame(rng, t2 + 7 * p))
    for i in range(1, 5):
        add(frame(rng, t2 + (7 + i) * p))
    expect["runs"].append((fourth, 5))
    path.write_text("\n".join(lines) + "\n")
    return expect


def test_every_fault_gives_the_right_runs_and_named_lines(tmp_path):
    expect = write_faulty(tmp_path / "sensor-07.csv")
    out = tmp_path / "m.parquet"
    report = ingest("spectra", str(tmp_path), str(out))
    rows = read_manifest(out)
    metas = [json.loads(r["meta"]) for r in rows]
    assert [(m["lines"][0], m["frames"]) for m in metas] == expect["runs"]
    assert {m["sensor"] for m in metas} == {"sensor-07"}
    assert report.runs == 4 and report.gaps == 1 and abs(report.gap_hours * 3600 - 9.875) < 1e-6
    assert report.dropped["repeated row"] == 1
    refused = {int(r.split(":")[-2]): r for r in report.rejected}
    assert set(refused) == set(expect["refused"])
    for line, kind in expect["refused"].items():
        assert refused[line].startswith(f"{tmp_path / 'sensor-07.csv'}:{line}: ")
        assert report.dropped[kind] >= 1
    assert "'abc'" in next(r for r in report.rejected if "non-numeric" in r)
    listed = (tmp_path / "m.rejected_rows.txt").read_text().splitlines()
    assert listed == report.rejected
    assert report.period_s == 0.125 and report.sensors == 1
    # spans: end - start = frames x period, from the file's earliest frame (run 3: clock went back)
    assert [r["end_s"] - r["start_s"] for r in rows] == pytest.approx([40 * 0.125, 16 * 0.125, 8 * 0.125, 5 * 0.125])
    assert min(r["start_s"] for r in rows) == 0.0 == rows[2]["start_s"]


def test_foreign_columns_iso_times_and_several_sensors_per_file(tmp_path):
    """A layout the project did not write: ISO times, a sensor column, LZeq_<f>Hz band names,
    extra columns, rows of two sensors interleaved."""
    rng = np.random.default_rng(1)
    cols = ["sensor_id", "utc", "battery"] + [f"LZeq_{f:g}Hz" for f in NOMINAL_HZ]
    lines = [",".join(cols)]
    start = np.datetime64("2024-03-01T10:00:00.000")
    for i in range(24):
        for s in ("lorient-a", "lorient-b"):
            if s == "lorient-b" and i == 12:
                continue                            # b misses one frame: a gap of 0.25 s
            t = start + np.timedelta64(125 * i, "ms")
            lines.append(",".join([s, f"{t}Z", "87"] + [f"{v:.2f}" for v in rng.uniform(20, 80, 29)]))
    (tmp_path / "network.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.parquet"
    code = main(["data", "ingest", "spectra", str(tmp_path / "network.csv"), "--out", str(out),
                 "--time-column", "utc", "--sensor-column", "sensor_id",
                 "--bands", r"^LZeq_([\d.]+)Hz$"])
    assert code == 0
    metas = sorted((json.loads(r["meta"]) for r in read_manifest(out)), key=lambda m: (m["sensor"], m["t0"]))
    assert [(m["sensor"], m["frames"]) for m in metas] == [("lorient-a", 24), ("lorient-b", 12), ("lorient-b", 11)]
    assert metas[0]["columns"][0] == "LZeq_20Hz" and len(metas[0]["columns"]) == 29
    assert metas[0]["t0"] == pytest.approx(np.datetime64("2024-03-01T10:00:00", "s").astype(int))


def test_epoch_milliseconds_and_missing_columns_are_named(tmp_path):
    rng = np.random.default_rng(2)
    lines = ["timestamp," + ",".join(BANDS)]
    lines += [frame(rng, 1_700_000_000_000 + 125 * i, "{:.0f}") for i in range(16)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    report = ingest("spectra", str(tmp_path), str(tmp_path / "m.parquet"))
    assert report.runs == 1 and report.frames == 16 and report.period_s == 0.125
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.csv").write_text("time,20,25\n1,2,3\n")
    with pytest.raises(MetadataError, match=r"bad.csv:1: band columns for \[31.5, 40"):
        ingest("spectra", str(tmp_path / "b"), str(tmp_path / "n.parquet"))
    code = main(["data", "ingest", "spectra", str(tmp_path / "b"), "--out", str(tmp_path / "n.parquet"),
                 "--time-column", "when"])
    assert code == 1


def test_split_by_sensor_keeps_each_sensor_in_one_split(tmp_path):
    rng = np.random.default_rng(3)
    for s in range(12):
        lines = ["time," + ",".join(BANDS)]
        for i in range(8):
            lines.append(frame(rng, 100.0 + i * 0.125 + (5.0 if i >= 4 else 0.0)))
        (tmp_path / f"s{s:02d}.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.parquet"
    assert main(["data", "ingest", "spectra", str(tmp_path), "--out", str(out), "--split-by-sensor"]) == 0
    split_of = {}
    for r in read_manifest(out):
        s = json.loads(r["meta"])["sensor"]
        assert split_of.setdefault(s, r["split"]) == r["split"]
    assert set(split_of.values()) <= {"train", "valid", "test"} and len(split_of) == 12


@pytest.mark.parametrize("stamp", ["iso", "iso-zone", "iso-mixed", "epoch-s"])
def test_block_size_changes_nothing_and_clean_blocks_skip_the_text_pass(tmp_path, monkeypatch, stamp):
    """The reader parses each block typed and reads only a faulty block again as text: small
    blocks (many clean, a few faulty, repeated rows across block ends) must give exactly the
    frames, line numbers, refusals and runs of a single block."""
    from tympan.datasets.formats import spectra

    rng = np.random.default_rng(4)
    t0 = np.datetime64("2025-06-01T00:00:00.000")

    def when(i: int) -> str:
        t = t0 + np.timedelta64(125 * i, "ms")
        return {"iso": f"{t}", "iso-zone": f"{t}Z", "iso-mixed": f"{t}" + ("+00:00" if i % 2 else ""),
                "epoch-s": f"{(t - np.datetime64(0, 'ms')).astype(int) / 1000:.3f}"}[stamp]

    lines = ["time," + ",".join(BANDS)]
    faults = {700: ",".join(["1"] * 7), 1500: f"{when(1500)}," + ",".join(["nan"] * 29),
              2300: f"{when(2300)}," + ",".join(["42.0"] * 28 + ["oops"])}
    for i in range(3000):
        if i in faults:
            lines.append(faults[i])
            continue
        lines.append(f"{when(i + (400 if i >= 1800 else 0))}," + ",".join(f"{v:.1f}" for v in rng.uniform(30, 70, 29)))
        if i % 97 == 0:
            lines.append(lines[-1])                 # repeated rows, some across block ends
    path = tmp_path / "s.csv"
    path.write_text("\n".join(lines) + "\n")

    text_reads = []
    checked = spectra._checked
    monkeypatch.setattr(spectra, "_checked", lambda *a: text_reads.append(1) or checked(*a))

    def read(block_size: int):
        report = spectra.SpectraReport("spectra", str(path))
        blocks = list(spectra.read_frames(str(path), report, block_size=block_size))
        runs, period = spectra.continuous_runs(iter(blocks), report)
        return blocks, report, [(r.first_line, r.last_line, r.frames) for r in runs], period

    one, rep1, runs1, p1 = read(1 << 24)
    assert len(one) == 1 and len(text_reads) == 1
    text_reads.clear()
    many, rep2, runs2, p2 = read(4096)
    assert len(many) > 100 and len(text_reads) == len(faults)      # only the 3 faulty blocks
    for key in ("time", "levels", "line"):
        assert np.array_equal(np.concatenate([getattr(b, key) for b in many]), getattr(one[0], key))
    assert rep2.rejected == rep1.rejected and len(rep1.rejected) == 3
    assert [int(r.split(":")[-2]) for r in rep1.rejected] == [k + 2 + k // 97 + 1 for k in faults]
    assert rep2.dropped == rep1.dropped and rep1.dropped["repeated row"] == 3000 // 97 + 1
    # breaks: each refused frame leaves a 0.25-s gap, and the 50-s clock jump at frame 1800
    assert runs2 == runs1 and len(runs1) == 5 and p1 == p2 == 0.125


def test_a_csv_on_s3_reads_like_the_local_file(tmp_path, s3_server, s3_bucket):
    """Local files are memory-mapped, remote ones read piece by piece: same frames, same
    refused lines (small pieces, so several end inside the faults)."""
    from tympan.datasets import storage
    from tympan.datasets.formats import spectra

    write_faulty(tmp_path / "sensor-07.csv")
    remote = f"s3://{s3_bucket}/sensors/sensor-07.csv"
    storage.write_bytes_atomic(remote, (tmp_path / "sensor-07.csv").read_bytes())
    got = {}
    for uri in (str(tmp_path / "sensor-07.csv"), remote):
        report = spectra.SpectraReport("spectra", uri)
        blocks = list(spectra.read_frames(uri, report, block_size=1024))
        got[uri] = (np.concatenate([b.line for b in blocks]), np.concatenate([b.levels for b in blocks]),
                    [r.split(uri, 1)[1] for r in report.rejected], blocks[0].sensor[0])
    (la, va, ra, sa), (lb, vb, rb, sb) = got.values()
    assert len(la) > 60 and np.array_equal(la, lb) and np.array_equal(va, vb)
    assert ra == rb and len(ra) == 6 and sa == sb == "sensor-07"
