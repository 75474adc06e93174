"""Issue 4 acceptance: one `--scale small` build of the offline corpora from scratch into a tmp
dir (the Debian download/convert cache is reused), then checks on what it wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.manifest import read_manifest
from tympan.datasets.offline.tasks import TaskError, TaskExample, write_task

RECORDED = ("speaker_id", "speech_music_noise", "scenes", "bird_detection")
SYNTH = ("keywords", "language_id", "instrument_family", "pitch")


@pytest.fixture(scope="module")
def build(offline_small):
    return offline_small



def test_build_writes_every_task_and_table(build):
    out, report = build
    names = [t["name"] for t in report["tasks"]]
    assert sorted(names) == sorted(RECORDED + SYNTH)
    table = (out / "tasks.md").read_text()
    for n in names:
        assert re.search(rf"^\| {n} \| \d+ \| \d+ \| \d+ \| \d+ \|", table, re.M), n
    # the extra split is a row of its own, with its generated size, chance and baseline
    e = next(t for t in report["tasks"] if t["name"] == "language_id")["extra_splits"]["test_human"]
    assert f"| language_id / test_human | 8 | - | - | {e['size']} | voice variant; test_human: unseen speakers " \
           f"| {e['chance']:.3f} " \
           f"| {e['baseline_accuracy']:.3f} |" in table
    for part in ("debian", "synth_tasks", "language_id", "recorded_tasks", "av", "pretrain"):
        assert (out / ".completed" / part).exists()


def test_hear_task_folders(build):
    out, report = build
    for t in report["tasks"]:
        d = out / "tasks" / t["name"]
        meta = json.loads((d / "task_metadata.json").read_text())
        assert meta["embedding_type"] in ("scene", "event") and meta["prediction_type"] == "multiclass"
        assert meta["tympan"]["sizes"] == t["sizes"] and meta["split_mode"] == "trainvaltest"
        assert meta["tympan"]["extra_splits"] == t["extra_splits"]
        assert set(t["extra_splits"]) == ({"test_human"} if t["name"] == "language_id" else set())
        vocab = (d / "labelvocabulary.csv").read_text().splitlines()
        assert vocab[0] == "idx,label" and len(vocab) - 1 == t["n_classes"]
        labels = {line.split(",", 1)[1] for line in vocab[1:]}
        sizes = {**t["sizes"], **{k: e["size"] for k, e in t["extra_splits"].items()}}
        for split in sizes:
            files = json.loads((d / f"{split}.json").read_text())
            assert len(files) == sizes[split]
            assert {lab for ls in files.values() for lab in ls} <= labels
            on_disk = {p.name for p in (d / "16000" / split).glob("*.wav")} if files else set()
            assert on_disk == set(files)
        first = next(iter(json.loads((d / "test.json").read_text())))
        info = sf.info(d / "16000" / "test" / first)
        assert info.samplerate == 16000 and info.channels == 1
        assert info.duration <= meta["sample_duration"] + 1e-3


def test_splits_disjoint_by_group(build, task_rows):
    out, report = build
    for t in report["tasks"]:
        groups: dict[str, set] = {s: set() for s in ("train", "valid", "test", *t["extra_splits"])}
        for r in task_rows(out, t["name"]):
            groups[r["split"]].add(r["meta"]["group"])
        assert groups["train"] and groups["test"], t["name"]
        assert not groups["train"] & groups["test"], t["name"]
        assert not groups["train"] & groups["valid"], t["name"]
        assert not groups["valid"] & groups["test"], t["name"]
        for extra in t["extra_splits"]:
            assert groups[extra] and not (groups["train"] | groups["valid"]) & groups[extra], (t["name"], extra)


def test_speech_music_noise_packages_disjoint(build, task_rows):
    out, _ = build
    pkgs = {s: set() for s in ("train", "valid", "test")}
    for r in task_rows(out, "speech_music_noise"):
        pkgs[r["split"]] |= {p["package"] for p in r["meta"]["provenance"]}
    assert not pkgs["train"] & pkgs["test"] and not pkgs["valid"] & (pkgs["train"] | pkgs["test"])


def test_labels_consistent_with_sources(build, task_rows):
    out, _ = build
    from tympan.datasets.offline.recorded_tasks import SCENE_BEDS
    for r in task_rows(out, "speaker_id"):
        (p,) = r["meta"]["provenance"]
        assert p["package"] == "hedgewars-data" and f"/voices/{r['labels'][0]}/" in p["path"]
    roles = {"speech": r"/voices/|/ktuberling/sounds/|/units/.*_(ack|select)", "music": r"/[Mm]usic/",
             "noise": r"lincity-ng/sounds/|/tilesets/|/stamps/(vehicles|household|town|naturalforces)/"}
    for r in task_rows(out, "speech_music_noise"):
        for p in r["meta"]["provenance"]:
            assert re.search(roles[r["labels"][0]], p["path"]), (r["labels"], p["path"])
    for r in task_rows(out, "scenes"):
        pkg, pattern = SCENE_BEDS[r["labels"][0]]
        assert r["meta"]["bed"].startswith(pkg + ":") and re.fullmatch(pattern, r["meta"]["bed"].split(":", 1)[1])
    for r in task_rows(out, "bird_detection"):
        has_bird = any("/animals/birds/" in p["path"] or "/animals/bird" in p["path"]
                       for p in r["meta"]["provenance"])
        assert has_bird == (r["labels"] == ["bird"]), r["clip_id"]
    lid = task_rows(out, "language_id")
    human = [r for r in lid if r["split"] == "test_human"]
    assert {r["labels"][0] for r in human} == {r["labels"][0] for r in lid if r["split"] == "test"}
    for r in human:
        lang = r["labels"][0]
        for p in r["meta"]["provenance"]:
            assert (f"/ktuberling/sounds/{lang}/" in p["path"] or p["path"].endswith(f"_desc_{lang}.ogg")
                    or (lang == "en" and p["path"].endswith("_desc.ogg"))), (lang, p["path"])
    for r in lid:   # real speech only in test_human, espeak-ng everywhere else
        assert bool(r["meta"].get("provenance")) == (r["split"] == "test_human"), r["clip_id"]
        assert (r["meta"].get("source") == "espeak-ng") == (r["split"] != "test_human"), r["clip_id"]


def test_baselines_above_chance(build):
    _, report = build
    for t in report["tasks"]:
        assert 0.0 < t["chance"] < 1.0 and 0.0 <= t["baseline_accuracy"] <= 1.0
        assert t["baseline_accuracy"] > t["chance"] + 0.05, (t["name"], t["baseline_accuracy"], t["chance"])
        for e in t["extra_splits"].values():     # measured and recorded; harder, so not required
            assert 0.0 < e["chance"] < 1.0 and 0.0 <= e["baseline_accuracy"] <= 1.0


def _held_out(out: Path) -> tuple[set, set]:
    sources, variants = set(), set()
    for m in (out / "manifests").glob("*.parquet"):
        for r in read_manifest(m):
            if r["split"] != "train":        # valid, test and extra test splits
                meta = json.loads(r["meta"])
                sources |= set(meta.get("sources") or [])
                if isinstance(meta.get("audio"), dict) and meta["audio"].get("path"):
                    sources.add(f"{meta['audio']['package']}:{meta['audio']['path']}")
                if meta.get("variant"):
                    variants.add(meta["variant"])
    return sources, variants


def test_pretraining_free_of_test_side_sources(build):
    from tympan.datasets.shards import iter_shard
    out, report = build
    held, held_variants = _held_out(out)
    assert len(held) > 100 and held_variants
    from tympan.datasets.offline.build import _recorded_pools
    from tympan.datasets.offline.scales import SCALES
    candidates = {r.source_id for rs in _recorded_pools(None, SCALES["small"].recorded).values() for r in rs}
    assert len(candidates & held) > 10       # the exclusion has real work to do
    clips = [c for s in report["pretrain"]["shards"] for c in iter_shard(s)]
    assert len(clips) == report["pretrain"]["clips"]
    used = set()
    for c in clips:
        assert c.sample_rate == 16000 and len(c.audio) == 160000 and np.abs(c.audio).max() > 1e-3
        assert not set(c.meta["sources"]) & held, c.clip_id
        assert not {v.split("+", 1)[1] for v in c.meta["voices"]} & held_variants, c.clip_id
        used |= set(c.meta["sources"])
    # the mix really draws on recorded speech, music and scenes, and on espeak-ng and melodies
    assert any(":usr/share/games/hedgewars/Data/Sounds/voices/" in s for s in used)
    assert any("/tilesets/" in s or "lincity" in s for s in used)
    assert any(c.meta["voices"] for c in clips) and any(c.meta["programs"] for c in clips)


def test_on_the_fly_generation_is_deterministic(build):
    from tympan.datasets.offline.pretrain import PretrainMixer
    from tympan.datasets.shards import iter_shard
    out, report = build
    mixer = PretrainMixer.from_build(out)
    a, b = mixer.generate_clip(7, 3), PretrainMixer.from_build(out).generate_clip(7, 3)
    assert np.array_equal(a.audio, b.audio) and a.meta == b.meta
    assert not np.allclose(a.audio, mixer.generate_clip(7, 4).audio)
    assert not np.allclose(a.audio, mixer.generate_clip(8, 3).audio)
    first = next(iter_shard(report["pretrain"]["shards"][0]))     # shard clip 0 of seed 0
    again = mixer.generate_clip(0, 0)
    assert first.meta["sources"] == again.meta["sources"]
    assert np.abs(first.audio - np.clip(again.audio, -1, 1)).max() < 1e-3   # FLAC PCM-16


def test_rerun_skips_completed_parts_and_cli(build, capsys):
    from tympan.cli import main
    out, _ = build
    assert main(["data", "offline", "--out", str(out), "--scale", "small"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert all(p["skipped"] for p in report["parts"].values())
    assert "already built" in capsys.readouterr().out


def test_debian_provenance_and_dedup():
    from tympan.datasets.offline.debian import recordings
    recs = recordings(None, "megaglest-data", ["usr/share/games/megaglest/tilesets/*/sounds/*"])
    assert len({r.sha1 for r in recs}) == len(recs)
    assert any(r.aliases for r in recs)      # tilesets share identical files (e.g. wolf.wav)
    r = recs[0]
    assert Path(r.copyright).is_file() and "Copyright" in Path(r.copyright).read_text()[:4000]
    x = r.load()
    assert x.dtype == np.float32 and sf.info(r.flac).samplerate == 16000
    assert abs(len(x) / 16000 - r.duration_s) < 1e-3


def test_missing_debian_package_names_it(tmp_path):
    from tympan.datasets.offline.debian import DebianSourceError, ensure_packages
    with pytest.raises(DebianSourceError, match="tympan-no-such-package"):
        ensure_packages(["tympan-no-such-package"], tmp_path)


def _tone(f: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * f * np.arange(8000) / 16000)).astype(np.float32)


def test_task_writer_refuses_leaky_or_unseen(tmp_path):
    ex = [TaskExample(f"a{i}", _tone(300 + 500 * (i % 2)), f"c{i % 2}", s, f"g{i}", {})
          for i, s in enumerate(["train"] * 6 + ["test"] * 2)]
    info = write_task(tmp_path, "ok", ex, split_factor="take")
    assert info.sizes == {"train": 6, "valid": 0, "test": 2} and info.baseline_accuracy == 1.0
    leaky = ex + [TaskExample("b", _tone(300), "c0", "test", "g0", {})]
    with pytest.raises(TaskError, match=r"'leaky'.*share groups \['g0'\]"):
        write_task(tmp_path, "leaky", leaky, split_factor="take")
    unseen = ex + [TaskExample("c", _tone(300), "c9", "test", "g99", {})]
    with pytest.raises(TaskError, match="c9"):
        write_task(tmp_path, "unseen", unseen, split_factor="take")


def test_task_writer_extra_test_split(tmp_path):
    from tympan.datasets.offline.tasks import read_task_info, write_tasks_table
    ex = [TaskExample(f"a{i}", _tone(300 + 500 * (i % 2)), f"c{i % 2}", s, f"g{i}", {})
          for i, s in enumerate(["train"] * 6 + ["test"] * 2)]
    # the extra split: every clip sounds like c1 (800 Hz) but two are labelled c0, so the same
    # classifier scores 1/3 there while the majority class (c0) is 2/3
    hard = [TaskExample(f"h{i}", _tone(800), "c0" if i < 2 else "c1", "test_hard", f"h{i}", {})
            for i in range(3)]
    info = write_task(tmp_path, "ex", ex, split_factor="take", extra_test_splits={"test_hard": hard})
    assert info.sizes == {"train": 6, "valid": 0, "test": 2} and info.baseline_accuracy == 1.0
    assert info.extra_splits == {"test_hard": {"size": 3, "chance": 0.6667, "baseline_accuracy": 0.3333}}
    d = tmp_path / "tasks" / "ex"
    assert json.loads((d / "test_hard.json").read_text()) == {"h0.wav": ["c0"], "h1.wav": ["c0"], "h2.wav": ["c1"]}
    assert sorted(p.name for p in (d / "16000" / "test_hard").glob("*.wav")) == ["h0.wav", "h1.wav", "h2.wav"]
    assert read_task_info(d) == info
    rows = read_manifest(tmp_path / "manifests" / "ex.parquet")
    assert sorted(r["clip_id"] for r in rows if r["split"] == "test_hard") == ["ex/h0", "ex/h1", "ex/h2"]
    table = write_tasks_table([info], tmp_path / "t.md").read_text()
    assert "| ex / test_hard | 2 | - | - | 3 | take | 0.667 | 0.333 |" in table
    # metadata written before extra splits existed still reads
    meta = json.loads((d / "task_metadata.json").read_text())
    del meta["tympan"]["extra_splits"]
    (d / "task_metadata.json").write_text(json.dumps(meta))
    assert read_task_info(d).extra_splits == {}
    # the extra split obeys the rules of test: unseen groups, seen labels, a new split name
    leak = hard + [TaskExample("h9", _tone(300), "c0", "test_hard", "g0", {})]
    with pytest.raises(TaskError, match=r"'ex'.*train/valid and test_hard share groups \['g0'\]"):
        write_task(tmp_path, "ex", ex, split_factor="take", extra_test_splits={"test_hard": leak})
    unseen = hard + [TaskExample("h9", _tone(300), "c7", "test_hard", "h9", {})]
    with pytest.raises(TaskError, match="test_hard labels \\['c7'\\]"):
        write_task(tmp_path, "ex", ex, split_factor="take", extra_test_splits={"test_hard": unseen})
    with pytest.raises(TaskError, match="extra split name 'valid'"):
        write_task(tmp_path, "ex", ex, split_factor="take", extra_test_splits={"valid": hard})
    with pytest.raises(TaskError, match="has split='test_hard' but is in the extra split 'other'"):
        write_task(tmp_path, "ex", ex, split_factor="take", extra_test_splits={"other": hard})


def test_markers_of_an_older_layout_are_dropped(tmp_path, capsys):
    from tympan.datasets.offline.build import LAYOUT, _check_layout
    (tmp_path / ".completed").mkdir()
    (tmp_path / ".completed" / "recorded_tasks").write_text("{}")   # layout 1: no _layout tag
    (tmp_path / "tasks" / "language_id_human").mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "language_id_human.parquet").write_bytes(b"x")
    (tmp_path / "manifests" / "keywords.parquet").write_bytes(b"x")
    _check_layout(tmp_path)
    assert "another layout" in capsys.readouterr().out
    assert not (tmp_path / ".completed" / "recorded_tasks").exists()
    assert not (tmp_path / "tasks" / "language_id_human").exists()
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == ["keywords.parquet"]
    assert (tmp_path / ".completed" / "_layout").read_text().strip() == str(LAYOUT)
    (tmp_path / ".completed" / "debian").write_text("{}")          # same layout: markers kept
    _check_layout(tmp_path)
    assert (tmp_path / ".completed" / "debian").exists()
