"""Corpus adapters on fixtures written here with each format's real header lines and quoting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.formats.common import MetadataError
from tympan.datasets.formats.registry import INGESTERS, ingest, missing_list_uri
from tympan.datasets.manifest import read_manifest


def tone(path: Path, seconds: float = 1.0, sr: int = 16000, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def by_id(rows):
    return {r["clip_id"]: r for r in rows}


# ---- AudioSet -------------------------------------------------------------------------------

ONTOLOGY = [
    {"id": "/m/0dgw9r", "name": "Human sounds", "description": "", "citation_uri": "",
     "positive_examples": [], "child_ids": ["/m/09l8g"], "restrictions": ["abstract"]},
    {"id": "/m/09l8g", "name": "Human voice", "description": "", "citation_uri": "",
     "positive_examples": [], "child_ids": ["/m/09x0r"], "restrictions": []},
    {"id": "/m/09x0r", "name": "Speech", "description": "", "citation_uri": "",
     "positive_examples": [], "child_ids": [], "restrictions": []},
    {"id": "/m/04rlf", "name": "Music", "description": "", "citation_uri": "",
     "positive_examples": [], "child_ids": [], "restrictions": []},
    {"id": "/t/dd00088", "name": "Gush", "description": "", "citation_uri": "",
     "positive_examples": [], "child_ids": [], "restrictions": ["blacklist"]},
]
CLASS_INDEX = ('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n'
               '2,/m/09l8g,"Human voice"\n3,/m/0dgw9r,"Human sounds"\n4,/t/dd00088,"Gush"\n')
BALANCED = """# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=5, num_segs=5, num_unique_labels=3, num_positive_labels=7
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/04rlf"
--aE2O5G5WE, 0.000, 10.000, "/m/04rlf,/m/09x0r"
--aO5cdqSAg, 30.000, 40.000, "/m/09l8g"
--cB2ZVjpnA, 30.000, 40.000, "/m/04rlf"
"""
EVAL = """# Segments csv created Sun Mar  5 10:54:25 2017
# num_ytids=2, num_segs=2, num_unique_labels=2, num_positive_labels=2
# YTID, start_seconds, end_seconds, positive_labels
-0RWZT-miFs, 420.000, 430.000, "/m/09x0r"
-0xzrMun0Rs, 30.000, 40.000, "/t/dd00088"
"""


def write_audioset(root: Path, media: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "balanced_train_segments.csv").write_text(BALANCED)
    (root / "eval_segments.csv").write_text(EVAL)
    (root / "ontology.json").write_text(json.dumps(ONTOLOGY))
    (root / "class_labels_indices.csv").write_text(CLASS_INDEX)
    tone(media / "balanced" / "Y--PJHxphWEs.wav")                  # PANNs layout
    tone(media / "--ZhevVpy1s_50.000_60.000.wav")                   # id_start_end
    tone(media / "--aE2O5G5WE_0.wav")                                # id_start_int
    tone(media / "eval" / "-0RWZT-miFs.wav")                         # youtube-dl default
    tone(media / "-0xzrMun0Rs.wav")
    (media / "notes.txt").write_text("not media")
    # --aO5cdqSAg and --cB2ZVjpnA are gone from YouTube: missing media


def test_audioset_rows_labels_ontology_and_missing_media(tmp_path):
    write_audioset(tmp_path / "as", tmp_path / "media")
    out = tmp_path / "as.parquet"
    report = ingest("audioset", str(tmp_path / "as"), str(out), media=str(tmp_path / "media"))
    rows = by_id(read_manifest(out))
    assert sorted(rows) == ["--PJHxphWEs_30000", "--ZhevVpy1s_50000", "--aE2O5G5WE_0",
                            "-0RWZT-miFs_420000", "-0xzrMun0Rs_30000"]
    assert report.rows == 5 and report.splits == {"test": 2, "train": 3}
    assert sorted(report.missing_media) == ["--aO5cdqSAg_30000", "--cB2ZVjpnA_30000"]
    assert Path(missing_list_uri(str(out))).read_text().split() == sorted(report.missing_media)
    # the blacklisted class is dropped from labels and counted; a clip may end up unlabelled
    assert report.dropped_labels == {"/t/dd00088": 2}
    speech = rows["--PJHxphWEs_30000"]
    assert speech["labels"] == ["/m/09x0r"] and speech["split"] == "train"
    assert speech["source"].endswith("media/balanced/Y--PJHxphWEs.wav")
    meta = json.loads(speech["meta"])
    assert meta["label_names"] == ["Speech"] and meta["subset"] == "balanced_train"
    assert meta["ancestors"] == ["/m/09l8g", "/m/0dgw9r"]
    assert rows["-0xzrMun0Rs_30000"]["labels"] == []
    assert rows["-0RWZT-miFs_420000"]["split"] == "test"
    # cut segments by default: the whole file is the clip
    assert speech["start_s"] is None and speech["end_s"] is None


def test_audioset_custom_template_and_full_videos(tmp_path):
    src = tmp_path / "as"
    src.mkdir()
    (src / "balanced_train_segments.csv").write_text(BALANCED)
    tone(tmp_path / "m" / "clip-ZhevVpy1s-50.flac")       # a user's own layout
    rows, report = INGESTERS["audioset"](
        str(src), str(tmp_path / "m"), templates=["clip-{ytid}-{start_int}.{ext}"],
        full_videos=True)
    assert [r["clip_id"] for r in rows] == []             # "--Zhev..." keeps its leading dashes
    tone(tmp_path / "m" / "clip---ZhevVpy1s-50.flac")
    rows, report = INGESTERS["audioset"](
        str(src), str(tmp_path / "m"), templates=["clip-{ytid}-{start_int}.{ext}"],
        full_videos=True)
    assert [(r["clip_id"], r["start_s"], r["end_s"]) for r in rows] == [
        ("--ZhevVpy1s_50000", 50.0, 60.0)]
    assert len(report.missing_media) == 4 and report.dropped_labels == {}


@pytest.mark.parametrize("bad_line, reason", [
    ('--PJHxphWEs, 30.000, 40.000\n', "expected 4 fields"),
    ('--PJHxphWEs, 30.000, 20.000, "/m/09x0r"\n', "end"),
    ('--PJHxphWEs, 3O.000, 40.000, "/m/09x0r"\n', "not a number"),
    ('--PJHxphWEs, 30.000, 40.000, "Speech"\n', "bad label MIDs"),
])
def test_audioset_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    (tmp_path / "unbalanced_train_segments.csv").write_text(BALANCED + bad_line)
    with pytest.raises(MetadataError, match=reason) as e:
        ingest("audioset", str(tmp_path), str(tmp_path / "m.parquet"))
    assert e.value.file.endswith("unbalanced_train_segments.csv") and e.value.line == 9
    assert not (tmp_path / "m.parquet").exists()


# ---- ESC-50 ---------------------------------------------------------------------------------

ESC50 = """filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-100038-A-14.wav,1,14,chirping_birds,False,100038,A
2-102414-C-17.wav,2,17,pouring_water,False,102414,C
5-9032-A-0.wav,5,0,dog,True,9032,A
"""


def test_esc50_folds_labels_and_bad_rows(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(ESC50)
    for name in ("1-100032-A-0", "1-100038-A-14", "2-102414-C-17"):
        tone(tmp_path / "audio" / f"{name}.wav", seconds=0.5)
    report = ingest("esc50", str(tmp_path), str(tmp_path / "esc.parquet"))
    rows = by_id(read_manifest(tmp_path / "esc.parquet"))
    assert report.splits == {"fold1": 2, "fold2": 1} and report.missing_media == ["5-9032-A-0"]
    assert rows["1-100038-A-14"]["labels"] == ["chirping_birds"]
    assert json.loads(rows["1-100032-A-0"]["meta"])["esc10"] is True
    (tmp_path / "meta" / "esc50.csv").write_text(ESC50 + "3-1.wav,7,3,cow,False,1,A\n")
    with pytest.raises(MetadataError, match=r"esc50.csv:6: fold 7"):
        ingest("esc50", str(tmp_path), str(tmp_path / "x.parquet"))
    (tmp_path / "meta" / "esc50.csv").write_text(ESC50.replace("category", "class"))
    with pytest.raises(MetadataError, match=r"esc50.csv:1: header"):
        ingest("esc50", str(tmp_path), str(tmp_path / "x.parquet"))


# ---- Speech Commands ------------------------------------------------------------------------

def test_speechcommands_lists_and_background_noise(tmp_path):
    for rel in ("yes/0a7c2a8d_nohash_0.wav", "yes/0a7c2a8d_nohash_1.wav", "no/0b09edd3_nohash_0.wav",
                "no/0c2ca723_nohash_0.wav", "up/0ba018fc_nohash_2.wav"):
        tone(tmp_path / rel, seconds=1.0)
    tone(tmp_path / "_background_noise_" / "white_noise.wav", seconds=2.0)
    (tmp_path / "validation_list.txt").write_text("no/0b09edd3_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("yes/0a7c2a8d_nohash_1.wav\nup/0ba018fc_nohash_2.wav\n")
    (tmp_path / "LICENSE").write_text("CC-BY-4.0")
    report = ingest("speechcommands", str(tmp_path), str(tmp_path / "sc.parquet"))
    rows = by_id(read_manifest(tmp_path / "sc.parquet"))
    assert report.splits == {"background": 1, "test": 2, "train": 2, "valid": 1}
    assert rows["no/0b09edd3_nohash_0"]["split"] == "valid"
    assert rows["yes/0a7c2a8d_nohash_0"]["labels"] == ["yes"]
    assert json.loads(rows["up/0ba018fc_nohash_2"]["meta"]) == {"speaker": "0ba018fc",
                                                               "utterance": 2}
    assert rows["_background_noise_/white_noise"]["split"] == "background"
    (tmp_path / "testing_list.txt").write_text("yes/0a7c2a8d_nohash_1.wav\nup/ffffffff_nohash_0.wav\n")
    with pytest.raises(MetadataError, match=r"testing_list.txt:2: .* not present"):
        ingest("speechcommands", str(tmp_path), str(tmp_path / "x.parquet"))


# ---- NSynth ---------------------------------------------------------------------------------

def nsynth_example(note: str, family: str, pitch: int) -> dict:
    return {"note": 1, "note_str": note, "instrument": 3, "instrument_str": note.rsplit("-", 2)[0],
            "pitch": pitch, "velocity": 100, "sample_rate": 16000, "qualities": [0] * 10,
            "qualities_str": [], "instrument_family": 0, "instrument_family_str": family,
            "instrument_source": 0, "instrument_source_str": "acoustic"}


def test_nsynth_examples_json(tmp_path):
    root = tmp_path / "nsynth-valid"
    ex = {n: nsynth_example(n, f, p) for n, f, p in [
        ("bass_synthetic_033-022-050", "bass", 22), ("keyboard_acoustic_004-060-025", "keyboard", 60),
        ("guitar_acoustic_010-066-100", "guitar", 66)]}
    root.mkdir()
    (root / "examples.json").write_text(json.dumps(ex, indent=2))
    for n in list(ex)[:2]:
        tone(root / "audio" / f"{n}.wav", seconds=0.5)
    report = ingest("nsynth", str(root), str(tmp_path / "ns.parquet"))
    rows = by_id(read_manifest(tmp_path / "ns.parquet"))
    assert report.splits == {"valid": 2} and report.missing_media == ["guitar_acoustic_010-066-100"]
    assert rows["keyboard_acoustic_004-060-025"]["labels"] == ["keyboard"]
    assert json.loads(rows["bass_synthetic_033-022-050"]["meta"])["pitch"] == 22
    (root / "examples.json").write_text(json.dumps(ex, indent=2)[:-20])
    with pytest.raises(MetadataError, match=r"examples.json:\d+: invalid JSON"):
        ingest("nsynth", str(root), str(tmp_path / "x.parquet"))


# ---- VGGSound -------------------------------------------------------------------------------

VGGSOUND = """---g-f_I2yQ,1,people marching,test
--0PQM4-hqg,30,waterfall burbling,train
--56QvwTbf8,40,"male speech, man speaking",train
--5OkAjCI7g,40,playing bass guitar,train
"""


def test_vggsound_headerless_csv_and_quoting(tmp_path):
    (tmp_path / "vggsound.csv").write_text(VGGSOUND)
    tone(tmp_path / "video" / "---g-f_I2yQ_000001.wav")
    tone(tmp_path / "video" / "--0PQM4-hqg_000030.flac")
    tone(tmp_path / "video" / "--56QvwTbf8_40.wav")
    report = ingest("vggsound", str(tmp_path), str(tmp_path / "vgg.parquet"))
    rows = by_id(read_manifest(tmp_path / "vgg.parquet"))
    assert report.splits == {"test": 1, "train": 2} and report.missing_media == ["--5OkAjCI7g_000040"]
    assert rows["--56QvwTbf8_000040"]["labels"] == ["male speech, man speaking"]
    (tmp_path / "vggsound.csv").write_text("youtube_id,start_seconds,label,split\n" + VGGSOUND)
    with pytest.raises(MetadataError, match=r"vggsound.csv:1: .*no header"):
        ingest("vggsound", str(tmp_path), str(tmp_path / "x.parquet"))


# ---- HEAR -----------------------------------------------------------------------------------

def test_hear_scene_task_folder(tmp_path):
    task = tmp_path / "esc50-v2.0.0-5h"
    task.mkdir()
    (task / "task_metadata.json").write_text(json.dumps({
        "task_name": "esc50", "version": "v2.0.0", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split", "sample_duration": 5.0,
        "evaluation": ["top1_acc"], "label_to_idx": {"dog": 0, "rain": 1}}))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,dog\n1,rain\n")
    (task / "train.json").write_text(json.dumps({"a.wav": ["dog"], "b.wav": ["rain"]}))
    (task / "test.json").write_text(json.dumps({"c.wav": ["dog"], "d.wav": ["rain"]}))
    for split, name in [("train", "a"), ("train", "b"), ("test", "c")]:
        for sr in (16000, 48000):
            tone(task / str(sr) / split / f"{name}.wav", seconds=0.5, sr=sr)
    report = ingest("hear", str(task), str(tmp_path / "hear.parquet"))
    rows = by_id(read_manifest(tmp_path / "hear.parquet"))
    assert report.splits == {"test": 1, "train": 2} and report.missing_media == ["test/d"]
    assert report.missing_files["test/d"] == str(task / "16000" / "test" / "d.wav")
    assert rows["train/b"]["labels"] == ["rain"] and "/16000/train/b.wav" in rows["train/b"]["source"]
    (task / "test.json").write_text(json.dumps({"c.wav": ["cat"]}))
    with pytest.raises(MetadataError, match=r"test.json: c.wav: labels \['cat'\] not in"):
        ingest("hear", str(task), str(tmp_path / "x.parquet"))


def test_hear_event_task_keeps_events(tmp_path):
    task = tmp_path / "dcase"
    task.mkdir()
    (task / "task_metadata.json").write_text(json.dumps(
        {"task_name": "dcase2016_task2", "embedding_type": "event",
         "prediction_type": "multilabel", "sample_duration": 120.0}))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,cough\n1,laughter\n")
    (task / "train.json").write_text(json.dumps({"x.wav": [
        {"label": "cough", "start": 100.0, "end": 450.5},
        {"label": "laughter", "start": 500.0, "end": 900.0}]}))
    tone(task / "48000" / "train" / "x.wav", seconds=0.5, sr=48000)
    rows, _ = INGESTERS["hear"](str(task))
    assert rows[0]["labels"] == ["cough", "laughter"]
    assert json.loads(rows[0]["meta"])["events"][0] == {"label": "cough", "start": 100.0,
                                                        "end": 450.5}


# ---- folder ---------------------------------------------------------------------------------

def test_folder_labels_from_subfolders(tmp_path):
    tone(tmp_path / "dog" / "bark1.wav")
    tone(tmp_path / "dog" / "bark1.flac")
    tone(tmp_path / "rain" / "deep" / "r.wav")
    tone(tmp_path / "loose.wav")
    (tmp_path / "README.md").write_text("x")
    report = ingest("folder", str(tmp_path), str(tmp_path / "out" / "f.parquet"))
    rows = by_id(read_manifest(tmp_path / "out" / "f.parquet"))
    assert sorted(rows) == ["dog/bark1", "dog/bark1.wav", "loose", "rain/deep/r"]
    assert rows["rain/deep/r"]["labels"] == ["rain"] and rows["loose"]["labels"] == []
    assert report.rows == 4
    with pytest.raises(MetadataError, match="no audio or video"):
        ingest("folder", str(tmp_path / "out"), str(tmp_path / "y.parquet"))


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(KeyError, match="librispeech"):
        ingest("librispeech", str(tmp_path), str(tmp_path / "x.parquet"))


def test_audioset_pairs_audio_with_video_of_the_same_id(tmp_path):
    (tmp_path / "balanced_train_segments.csv").write_text(BALANCED)
    tone(tmp_path / "a" / "Y--PJHxphWEs.flac")
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "Y--PJHxphWEs.mp4").write_bytes(b"")   # ingest matches names only
    (tmp_path / "v" / "--ZhevVpy1s.webm").write_bytes(b"")
    rows, report = INGESTERS["audioset"](str(tmp_path))
    got = {r["clip_id"]: (r["source"].rsplit("/", 2)[-2:], r["video_source"]) for r in rows}
    assert got["--PJHxphWEs_30000"][0] == ["a", "Y--PJHxphWEs.flac"]
    assert got["--PJHxphWEs_30000"][1].endswith("/v/Y--PJHxphWEs.mp4")
    assert got["--ZhevVpy1s_50000"] == (["v", "--ZhevVpy1s.webm"], None)   # source is the video
    assert report.rows == 2 and len(report.missing_media) == 3
