"""Issue 16: malformed or incomplete corpora, one fault at a time, through the real CLI.

Each test builds a small replica of a public layout (tiny WAVs written with soundfile), breaks
one thing, runs ``tympan.cli.main(["data", "ingest", ...])`` and checks the message (file, line
or key, value), the exit status, and that every clip of the replica is either in the manifest
with the split its metadata gives it or named in ``M.missing_media.txt`` / ``M.skipped.txt``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.cli import main
from tympan.datasets.formats.registry import INGESTERS
from tympan.datasets.manifest import read_manifest

REPO = Path(__file__).resolve().parents[3]


def wav(path: Path, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(sr // 10) / sr                                  # 0.1 s is enough to list
    sf.write(path, (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sr)


def ingest_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", "ingest", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def lists(out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(missing clip id -> file looked for or "", skipped item -> reason) written by ingest."""
    stem = str(out).removesuffix(".parquet")
    missing = dict((line.split("\t") + [""])[:2]
                   for line in Path(f"{stem}.missing_media.txt").read_text().splitlines())
    skipped = dict(line.split("\t", 1)
                   for line in Path(f"{stem}.skipped.txt").read_text().splitlines())
    return missing, skipped


def splits_of(out: Path) -> dict[str, str]:
    return {r["clip_id"]: r["split"] for r in read_manifest(out)}


def assert_accounted(out: Path, expected: dict[str, str], *, missing: set[str] = frozenset()):
    """Every clip of the replica kept its split, or is listed as missing (and nothing else is)."""
    got, (listed, _) = splits_of(out), lists(out)
    assert set(listed) == set(missing)
    assert got == {c: s for c, s in expected.items() if c not in missing}


# ---- replicas -------------------------------------------------------------------------------

ESC50_CSV = """filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-100038-A-14.wav,1,14,chirping_birds,False,100038,A
2-102414-C-17.wav,2,17,pouring_water,False,102414,C
5-9032-A-0.wav,5,0,dog,True,9032,A
"""


def esc50_replica(root: Path) -> dict[str, str]:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text(ESC50_CSV)
    expected = {}
    for line in ESC50_CSV.splitlines()[1:]:
        name, fold = line.split(",")[:2]
        wav(root / "audio" / name)
        expected[name.removesuffix(".wav")] = f"fold{fold}"
    return expected


SC_FILES = {"yes/0a7c2a8d_nohash_0.wav": "train", "yes/0a7c2a8d_nohash_1.wav": "test",
            "no/0b09edd3_nohash_0.wav": "valid", "no/0c2ca723_nohash_0.wav": "train",
            "up/0ba018fc_nohash_2.wav": "test", "up/0ba018fc_nohash_3.wav": "valid"}


def sc_replica(root: Path) -> dict[str, str]:
    for rel in SC_FILES:
        wav(root / rel)
    for name, split in (("validation_list.txt", "valid"), ("testing_list.txt", "test")):
        (root / name).write_text("".join(f"{r}\n" for r, s in SC_FILES.items() if s == split))
    return {r.removesuffix(".wav"): s for r, s in SC_FILES.items()}


def nsynth_example(note: str, pitch) -> dict:
    family = note.split("_", 1)[0]
    return {"note": 1, "note_str": note, "instrument": 3, "instrument_str": note.rsplit("-", 2)[0],
            "pitch": pitch, "velocity": 100, "sample_rate": 16000, "qualities": [0] * 10,
            "qualities_str": [], "instrument_family": 0, "instrument_family_str": family,
            "instrument_source": 0, "instrument_source_str": "acoustic"}


NSYNTH = {"train": ["bass_synthetic_033-022-050", "guitar_acoustic_010-066-100"],
          "valid": ["keyboard_acoustic_004-060-025", "organ_electronic_001-064-075"],
          "test": ["brass_acoustic_006-055-127", "flute_acoustic_002-077-050"]}


def nsynth_replica(parent: Path) -> dict[str, str]:
    """``parent/nsynth-{train,valid,test}`` as released; note -> split."""
    expected = {}
    for split, notes in NSYNTH.items():
        d = parent / f"nsynth-{split}"
        d.mkdir(parents=True)
        (d / "examples.json").write_text(json.dumps(
            {n: nsynth_example(n, int(n.split("-")[1])) for n in notes}, indent=2))
        for n in notes:
            wav(d / "audio" / f"{n}.wav")
            expected[n] = split
    return expected


def hear_replica(task: Path, splits: dict[str, list[str]], *,
                 event: bool = False) -> dict[str, str]:
    """A HEAR 2021 task folder; splits: name -> wav names. Returns clip id -> split."""
    task.mkdir(parents=True)
    meta = {"task_name": task.name, "version": "hear2021", "sample_duration": 1.0,
            "embedding_type": "event" if event else "scene",
            "prediction_type": "multilabel" if event else "multiclass",
            "evaluation": ["top1_acc"]}
    kfold = all(s.startswith("fold") for s in splits)
    meta["split_mode"] = "new_split_kfold" if kfold else "trainvaltest"
    meta["splits"] = sorted(splits)
    (task / "task_metadata.json").write_text(json.dumps(meta))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,dog\n1,rain\n")
    expected = {}
    for split, names in splits.items():
        labels = {n: ([{"label": "dog", "start": 0.0, "end": 50.0}] if event else ["dog"])
                  for n in names}
        (task / f"{split}.json").write_text(json.dumps(labels))
        for n in names:
            wav(task / "16000" / split / n)
            expected[f"{split}/{n.removesuffix('.wav')}"] = split
    return expected


FOLDS = {f"fold{i:02d}": [f"c{i}a.wav", f"c{i}b.wav"] for i in range(5)}


# ---- 1. NSynth: a bad value is a message, not a traceback ------------------------------------

def test_nsynth_bad_pitch_names_file_note_and_value(tmp_path, capsys):
    nsynth_replica(tmp_path)
    d = tmp_path / "nsynth-valid"
    data = json.loads((d / "examples.json").read_text())
    data["keyboard_acoustic_004-060-025"]["pitch"] = "sixty"
    (d / "examples.json").write_text(json.dumps(data, indent=2))
    out = tmp_path / "ns.parquet"
    rc, _, err = ingest_cli(capsys, "nsynth", str(d), "--out", str(out))
    assert rc == 1 and not out.exists()
    assert f"{d / 'examples.json'}: keyboard_acoustic_004-060-025: pitch 'sixty' is not a number" \
        in err
    data["keyboard_acoustic_004-060-025"]["pitch"] = 200
    (d / "examples.json").write_text(json.dumps(data))
    rc, _, err = ingest_cli(capsys, "nsynth", str(d), "--out", str(out))
    assert rc == 1 and "keyboard_acoustic_004-060-025: pitch 200 must be in 0..127" in err


# ---- 2. HEAR: a bad event time is a message, not a traceback ---------------------------------

def test_hear_bad_event_start_names_file_clip_and_field(tmp_path, capsys):
    task = tmp_path / "dcase2016_task2"
    hear_replica(task, {"train": ["x.wav"], "valid": ["y.wav"], "test": ["z.wav"]}, event=True)
    (task / "train.json").write_text(json.dumps({"x.wav": [
        {"label": "dog", "start": 0.0, "end": 50.0},
        {"label": "rain", "start": "9OO", "end": 950}]}))
    out = tmp_path / "h.parquet"
    rc, _, err = ingest_cli(capsys, "hear", str(task), "--out", str(out))
    assert rc == 1 and not out.exists()
    assert f"{task / 'train.json'}: x.wav: event #1: start '9OO' is not a number" in err
    (task / "train.json").write_text(json.dumps({"x.wav": [
        {"label": "dog", "start": 400.0, "end": 100.0}]}))
    rc, _, err = ingest_cli(capsys, "hear", str(task), "--out", str(out))
    assert rc == 1 and "x.wav: event #0: end 100.0 < start 400.0" in err


# ---- 3. HEAR: a declared fold that is absent stops the ingest -------------------------------

def test_hear_kfold_task_with_a_fold_absent_is_refused(tmp_path, capsys):
    task = tmp_path / "beijing_opera"
    expected = hear_replica(task, FOLDS)
    out = tmp_path / "h.parquet"
    rc, text, _ = ingest_cli(capsys, "hear", str(task), "--out", str(out))
    assert rc == 0 and "fold00=2, fold01=2, fold02=2, fold03=2, fold04=2" in text
    assert_accounted(out, expected)

    (task / "fold03.json").unlink()
    out2 = tmp_path / "h2.parquet"
    rc, _, err = ingest_cli(capsys, "hear", str(task), "--out", str(out2))
    assert rc == 1 and not out2.exists()
    assert f"{task / 'task_metadata.json'}: splits lists ['fold03'], but fold03.json not found" \
        in err and "4 of 5 splits" in err

    # no declaration in task_metadata.json: a gap in the fold numbers is refused too
    meta = json.loads((task / "task_metadata.json").read_text())
    for k in ("splits", "split_mode"):
        meta.pop(k)
    (task / "task_metadata.json").write_text(json.dumps(meta))
    rc, _, err = ingest_cli(capsys, "hear", str(task), "--out", str(out2))
    assert rc == 1 and "fold03.json absent between the folds present" in err


def test_hear_undeclared_split_file_is_skipped_and_listed(tmp_path, capsys):
    task = tmp_path / "beijing_opera"
    expected = hear_replica(task, FOLDS)
    (task / "fold05.json").write_text(json.dumps({"extra.wav": ["dog"]}))
    wav(task / "16000" / "fold05" / "extra.wav")
    out = tmp_path / "h.parquet"
    rc, text, _ = ingest_cli(capsys, "hear", str(task), "--out", str(out))
    assert rc == 0 and "skipped: 1" in text and "fold05.json" in text
    assert_accounted(out, expected)
    assert lists(out)[1] == {str(task / "fold05.json"): "not a split declared in task_metadata"
                             ".json ['fold00', 'fold01', 'fold02', 'fold03', 'fold04']"}


# ---- 4. Speech Commands: the split lists are required ---------------------------------------

def test_speechcommands_without_testing_list(tmp_path, capsys):
    expected = sc_replica(tmp_path / "sc")
    (tmp_path / "sc" / "testing_list.txt").unlink()
    out = tmp_path / "sc.parquet"
    rc, _, err = ingest_cli(capsys, "speechcommands", str(tmp_path / "sc"), "--out", str(out))
    assert rc == 1 and not out.exists()
    assert f"{tmp_path / 'sc' / 'testing_list.txt'}: file not found" in err
    assert "--allow-missing-lists" in err

    # accepted on request: the test clips are in train, and the report says so
    rc, text, _ = ingest_cli(capsys, "speechcommands", str(tmp_path / "sc"), "--out", str(out),
                             "--allow-missing-lists")
    assert rc == 0
    assert (f"warning: {tmp_path / 'sc' / 'testing_list.txt'} not found (--allow-missing-lists): "
            "no clip is in split 'test'; the clips it would list are among the 4 in 'train'") \
        in text
    assert_accounted(out, {c: "train" if s == "test" else s for c, s in expected.items()})
    assert main(["data", "ingest", "esc50", str(tmp_path), "--out", str(out),
                 "--allow-missing-lists"]) == 2


def test_speechcommands_file_in_both_lists_names_file_and_lines(tmp_path, capsys):
    sc_replica(tmp_path)
    (tmp_path / "testing_list.txt").write_text(
        "yes/0a7c2a8d_nohash_1.wav\nup/0ba018fc_nohash_3.wav\nup/0ba018fc_nohash_2.wav\n")
    rc, _, err = ingest_cli(capsys, "speechcommands", str(tmp_path), "--out",
                            str(tmp_path / "sc.parquet"))
    assert rc == 1
    assert (f"{tmp_path / 'testing_list.txt'}:2: up/0ba018fc_nohash_3.wav is also in "
            "validation_list.txt (line 2)") in err


def test_speechcommands_misnamed_wav_is_skipped_and_listed(tmp_path, capsys):
    expected = sc_replica(tmp_path / "sc")
    wav(tmp_path / "sc" / "yes" / "recorded-by-me.wav")
    out = tmp_path / "sc.parquet"
    rc, text, _ = ingest_cli(capsys, "speechcommands", str(tmp_path / "sc"), "--out", str(out))
    assert rc == 0 and "skipped: 1" in text
    assert_accounted(out, expected)
    assert lists(out)[1] == {str(tmp_path / "sc" / "yes" / "recorded-by-me.wav"):
                             "not <word>/<speaker>_nohash_<n>.wav"}


# ---- 5. Missing audio is named, for every format --------------------------------------------

def _esc50(root):
    expected = esc50_replica(root)
    (root / "audio" / "2-102414-C-17.wav").unlink()
    return expected, "2-102414-C-17", root / "audio" / "2-102414-C-17.wav"


def _nsynth(root):
    expected = nsynth_replica(root)
    lost = root / "nsynth-test" / "audio" / "flute_acoustic_002-077-050.wav"
    lost.unlink()
    return expected, "flute_acoustic_002-077-050", lost


def _hear(root):
    expected = hear_replica(root, {"train": ["a.wav", "b.wav"], "valid": ["c.wav"],
                                   "test": ["d.wav"]})
    (root / "16000" / "train" / "b.wav").unlink()
    return expected, "train/b", root / "16000" / "train" / "b.wav"


def _vggsound(root):
    root.mkdir()
    (root / "vggsound.csv").write_text("---g-f_I2yQ,1,people marching,test\n"
                                       "--0PQM4-hqg,30,waterfall burbling,train\n")
    wav(root / "---g-f_I2yQ_000001.wav")
    return ({"---g-f_I2yQ_000001": "test", "--0PQM4-hqg_000030": "train"},
            "--0PQM4-hqg_000030", None)


@pytest.mark.parametrize("fmt, make", [("esc50", _esc50), ("nsynth", _nsynth), ("hear", _hear),
                                       ("vggsound", _vggsound)])
def test_missing_audio_is_named_in_report_and_list(tmp_path, capsys, fmt, make):
    expected, clip, path = make(tmp_path / "corpus")
    out = tmp_path / "m.parquet"
    rc, text, _ = ingest_cli(capsys, fmt, str(tmp_path / "corpus"), "--out", str(out))
    assert rc == 0
    assert f"missing media: 1 (all listed in {str(out).removesuffix('.parquet')}" \
           ".missing_media.txt)" in text
    assert (f"    {clip}: {path} not found" if path else f"    {clip}\n") in text
    assert lists(out)[0] == {clip: str(path) if path else ""}
    assert_accounted(out, expected, missing={clip})


def test_speechcommands_listed_file_absent_is_fatal(tmp_path, capsys):
    sc_replica(tmp_path)
    (tmp_path / "up" / "0ba018fc_nohash_2.wav").unlink()
    rc, _, err = ingest_cli(capsys, "speechcommands", str(tmp_path), "--out",
                            str(tmp_path / "sc.parquet"))
    assert rc == 1
    assert f"{tmp_path / 'testing_list.txt'}:2: up/0ba018fc_nohash_2.wav is listed but not " \
           "present" in err


def test_every_format_writes_both_lists_even_when_empty(tmp_path, capsys):
    """A rerun that finds everything must not leave the previous run's list behind."""
    nsynth_replica(tmp_path / "ns")
    out = tmp_path / "m.parquet"
    lost = tmp_path / "ns" / "nsynth-train" / "audio" / "bass_synthetic_033-022-050.wav"
    lost.rename(tmp_path / "kept.wav")
    assert ingest_cli(capsys, "nsynth", str(tmp_path / "ns"), "--out", str(out))[0] == 0
    assert list(lists(out)[0]) == ["bass_synthetic_033-022-050"]
    (tmp_path / "kept.wav").rename(lost)
    assert ingest_cli(capsys, "nsynth", str(tmp_path / "ns"), "--out", str(out))[0] == 0
    assert lists(out) == ({}, {})
    wav(tmp_path / "f" / "dog" / "a.wav")
    assert ingest_cli(capsys, "folder", str(tmp_path / "f"), "--out", str(out))[0] == 0
    assert lists(out) == ({}, {})


# ---- 6. NSynth: the split comes from the folder name, or --split, or each sub-folder ----------

def test_nsynth_parent_folder_holds_all_three_splits(tmp_path, capsys):
    expected = nsynth_replica(tmp_path / "nsynth")
    out = tmp_path / "ns.parquet"
    rc, text, _ = ingest_cli(capsys, "nsynth", str(tmp_path / "nsynth"), "--out", str(out))
    assert rc == 0 and "splits: test=2, train=2, valid=2" in text
    assert_accounted(out, expected)
    rc, _, err = ingest_cli(capsys, "nsynth", str(tmp_path / "nsynth"), "--out", str(out),
                            "--split", "test")
    assert rc == 1 and "--split and --media apply to one nsynth-* folder" in err


def test_nsynth_folder_name_without_split_needs_split_option(tmp_path, capsys):
    nsynth_replica(tmp_path)
    copy = tmp_path / "my-nsynth-copy"
    (tmp_path / "nsynth-test").rename(copy)
    out = tmp_path / "ns.parquet"
    rc, _, err = ingest_cli(capsys, "nsynth", str(copy), "--out", str(out))
    assert rc == 1 and not out.exists()
    assert f"{copy}: cannot tell the split from the folder name 'my-nsynth-copy'" in err
    assert "--split train|valid|test" in err
    rc, text, _ = ingest_cli(capsys, "nsynth", str(copy), "--out", str(out), "--split", "test")
    assert rc == 0
    assert_accounted(out, {n: "test" for n in NSYNTH["test"]})
    # "contest" is not "test": a substring of the name never picks the split
    (copy).rename(tmp_path / "contest")
    rc, _, err = ingest_cli(capsys, "nsynth", str(tmp_path / "contest"), "--out", str(out))
    assert rc == 1 and "cannot tell the split" in err
    rc, _, err = ingest_cli(capsys, "nsynth", str(tmp_path / "empty"), "--out", str(out))
    assert rc == 1 and "examples.json: file not found; SRC must be an nsynth-train/valid/test " \
        "folder" in err
    assert main(["data", "ingest", "esc50", str(copy), "--out", str(out), "--split", "test"]) == 2


# ---- the fault table covers every format ----------------------------------------------------

def test_fault_table_in_docs_has_a_row_per_format():
    text = (REPO / "docs" / "data.md").read_text()
    section = text.split("## What stops an ingest", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", section, re.M)}
    assert rows == set(INGESTERS)
