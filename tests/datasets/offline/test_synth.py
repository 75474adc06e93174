"""Synthesized offline corpora: espeak-ng speech, fluidsynth/FreePats notes, the four synthesized
tasks and the audio-visual corpus, built at ``--scale small`` into a tmp dir and checked for
leak-free splits, labels consistent with their sources, baselines above chance and decodable
mp4 clips whose frames show their label."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tympan.datasets.audio import decode_audio, decode_video_frames
from tympan.datasets.offline.debian import default_cache_dir
from tympan.datasets.offline import music
from tympan.datasets.offline import speech
from tympan.datasets.offline.gus import PatchError, read_patch
from tympan.datasets.offline.scales import SynthScale
from tympan.datasets.offline.tasks import read_task_info
from tympan.datasets.offline.synth_tasks import KEYWORDS, LANGUAGES, keyword_examples

SR = 16000


def estimate_midi(x: np.ndarray) -> float:
    """Autocorrelation pitch of 0.1-0.6 s of a note, as a fractional MIDI number: the first lag
    reaching 90 % of the best peak (so a strong sub-harmonic does not win), refined
    parabolically."""
    seg = x[int(0.1 * SR):int(0.6 * SR)]
    seg = seg - seg.mean()
    n = len(seg)
    ac = np.fft.irfft(np.abs(np.fft.rfft(seg, 2 * n)) ** 2)[:n]
    lo, hi = SR // 2000, SR // 25
    r = ac[lo:hi]
    k = lo + int(np.flatnonzero(r >= 0.9 * r.max())[0])
    while k + 1 < hi and ac[k + 1] > ac[k]:
        k += 1
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    lag = k + 0.5 * (a - c) / (a - 2 * b + c + 1e-12)
    return 69 + 12 * np.log2(SR / lag / 440.0)


# ---- tools --------------------------------------------------------------------------------

def test_speak_renders_16k_and_rejects_bad_input(monkeypatch):
    x = speech.speak("seven", voice="en-us", variant="m3", speed=170, pitch=40)
    assert x.dtype == np.float32 and 0.2 * SR < x.size < 1.5 * SR
    assert 0.05 < np.abs(x).max() <= 1.0
    assert np.array_equal(x, speech.speak("seven", voice="en-us", variant="m3", speed=170, pitch=40))
    with pytest.raises(ValueError, match="nosuchvariant"):
        speech.speak("seven", variant="nosuchvariant")
    with pytest.raises(speech.OfflineToolError, match="nosuchlang"):
        speech.speak("seven", voice="nosuchlang")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(speech.OfflineToolError, match="Debian package `espeak-ng`"):
        speech.speak("seven")


def test_missing_soundfont_names_the_debian_package(monkeypatch):
    monkeypatch.setitem(music.SOUNDFONTS, "timgm6mb", ("/nonexistent/TimGM6mb.sf2", "timgm6mb-soundfont"))
    with pytest.raises(speech.OfflineToolError, match="timgm6mb-soundfont"):
        music.soundfont_path("timgm6mb")


def test_family_table_covers_the_11_nsynth_families_in_every_soundfont():
    assert set(music.GM_FAMILY.values()) == set(music.FAMILIES) and len(music.FAMILIES) == 11
    for sf in music.SOUNDFONTS:
        fams = {music.GM_FAMILY[p] for p in music.available_programs(sf) if p in music.GM_FAMILY}
        assert fams == set(music.FAMILIES), sf


@pytest.mark.parametrize("soundfont", ["fluidr3", "timgm6mb", "freepats"])
def test_rendered_notes_have_their_pitch_and_are_deterministic(soundfont):
    # flute, violin, trumpet: clear fundamentals, present in all three sample sets
    for program, note in ((73, 72), (40, 57), (56, 64)):
        x = music.render_note(program, note, 100, 1.0, soundfont)
        assert x.shape == (SR,) and x.dtype == np.float32
        assert abs(estimate_midi(x) - note) < 0.5, (soundfont, program, note)
        assert np.array_equal(x, music.render_note(program, note, 100, 1.0, soundfont))
    m1 = music.render_melody(np.random.default_rng(3), 0, soundfont, 2.0)
    m2 = music.render_melody(np.random.default_rng(3), 0, soundfont, 2.0)
    assert m1.shape == (2 * SR,) and np.array_equal(m1, m2)


def test_gus_patch_reader_rejects_a_truncated_file(tmp_path):
    src = Path(music.soundfont_path("freepats")) / "Tone_000" / "073_Flute.pat"
    samples = read_patch(str(src))
    assert len(samples) >= 2 and all(s.low_hz < s.high_hz for s in samples)
    cut = tmp_path / "cut.pat"
    cut.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(PatchError, match="cut.pat"):
        read_patch(str(cut))


def test_keyword_examples_are_deterministic_for_a_seed():
    tiny = SynthScale(kw_voices=(1, 1, 1), kw_takes=1, lid_voices=(1, 1, 1), lid_takes=1,
                      note_s=1.0, fam_per_class=(1, 1, 1), pitch_range=(60, 61),
                      pitch_per_class=(1, 1, 1))
    a, b = keyword_examples(tiny, 7), keyword_examples(tiny, 7)
    assert [e.clip_id for e in a] == [e.clip_id for e in b]
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b))
    c = keyword_examples(tiny, 8)
    assert [e.clip_id for e in a] != [e.clip_id for e in c]
    # Each clip records its word's span (Audio Word2Vec's segments=words reads it).
    for e in a:
        [(word, start, end)] = e.meta["word_alignment"]
        assert word == e.meta["transcript"] and 0 <= start < end <= 1.0 and end - start > 0.1, e.meta


# ---- synthesized tasks at scale small -----------------------------------------------------

@pytest.fixture(scope="module")
def synth_build(offline_small):
    """The synthesized tasks of the session's small offline build (tests/conftest.py)."""
    out, report = offline_small
    names = ("keywords", "language_id", "instrument_family", "pitch")
    return out, {n: read_task_info(out / "tasks" / n) for n in names}



def test_synth_tasks_beat_chance(synth_build):
    out, infos = synth_build
    assert set(infos) == {"keywords", "language_id", "instrument_family", "pitch"}
    for name, info in infos.items():
        assert info.baseline_accuracy > 1.5 * info.chance, (name, info)
        meta = json.loads((Path(info.path) / "task_metadata.json").read_text())
        assert meta["tympan"]["n_classes"] == info.n_classes
    assert infos["keywords"].n_classes == 35 and infos["instrument_family"].n_classes == 11
    assert infos["language_id"].n_classes == len(LANGUAGES) >= 6


def test_keyword_splits_hold_out_voices_and_labels_are_transcripts(synth_build, task_rows):
    rows = task_rows(synth_build[0], "keywords")
    variants = defaultdict(set)
    for r in rows:
        assert r["labels"] == [r["meta"]["transcript"]] and r["labels"][0] in KEYWORDS
        variants[r["split"]].add(r["meta"]["variant"])
        assert decode_audio(r["source"]).size == SR
    assert not variants["train"] & variants["test"] and not variants["train"] & variants["valid"]
    assert not variants["valid"] & variants["test"]


def test_language_id_holds_out_voices(synth_build, task_rows):
    # espeak-ng splits only: the extra split test_human is real speech (tested in test_build.py)
    rows = [r for r in task_rows(synth_build[0], "language_id") if r["split"] in ("train", "valid", "test")]
    variants = defaultdict(set)
    for r in rows:
        assert r["labels"] == [r["meta"]["language"]] and r["meta"]["transcript"]
        variants[r["split"]].add(r["meta"]["variant"])
    assert not variants["train"] & variants["test"] and not variants["train"] & variants["valid"]
    assert {r["labels"][0] for r in rows if r["split"] == "test"} == set(LANGUAGES)


@pytest.mark.parametrize("task", ["instrument_family", "pitch"])
def test_note_tasks_split_by_soundfont(synth_build, task, task_rows):
    rows = task_rows(synth_build[0], task)
    fonts = defaultdict(set)
    for r in rows:
        m = r["meta"]
        fonts[r["split"]].add(m["soundfont"])
        assert m["family"] == music.GM_FAMILY[m["program"]]
        assert r["labels"] == [m["family"] if task == "instrument_family" else str(m["pitch"])]
    assert fonts["train"] == {"fluidr3"} and fonts["test"] == {"timgm6mb", "freepats"}
    progs = {s: {r["meta"]["program"] for r in rows if r["split"] == s} for s in ("train", "valid")}
    assert not progs["train"] & progs["valid"]


def test_pitch_labels_match_the_estimated_f0(synth_build, task_rows):
    rows = [r for r in task_rows(synth_build[0], "pitch") if r["split"] == "test"]
    err = np.array([estimate_midi(decode_audio(r["source"])) - int(r["labels"][0]) for r in rows])
    # autocorrelation slips an octave on some organ / sub-octave patches: the pitch class must
    # agree almost always, the exact note in most cases
    assert np.mean(np.abs(err) < 0.5) > 0.75
    assert np.mean(np.abs((err + 6) % 12 - 6) < 0.5) > 0.9


# ---- audio-visual corpus ------------------------------------------------------------------

@pytest.fixture(scope="module")
def av_build(offline_small):
    """The audio-visual corpus of the session's small offline build (tests/conftest.py)."""
    out, report = offline_small
    return out, report["av"]


def test_av_objects_are_held_out_and_images_cover_train_objects(av_build, task_rows):
    out, summary = av_build
    rows = task_rows(out, "av")
    assert len(rows) == summary["clips"] > 50 and not summary["skipped"]
    objs = defaultdict(set)
    for r in rows:
        assert r["video_source"] == r["source"] and r["source"].endswith(".mp4")
        objs[r["split"]].add(r["labels"][0])
    assert objs["train"] and objs["test"] and objs["valid"]
    assert not objs["train"] & objs["test"] and not objs["train"] & objs["valid"]
    assert {r["meta"]["kind"] for r in rows} == {"emoji_instrument", "emoji_spoken", "tuxpaint"}
    from tympan.datasets.offline.av_objects import INSTRUMENT_EMOJI
    for r in rows:          # the sound comes from the object shown
        m, lab = r["meta"], r["labels"][0]
        if m["kind"] == "emoji_spoken":
            assert m["audio"]["transcript"] == lab
        elif m["kind"] == "emoji_instrument":
            assert m["audio"]["program"] in INSTRUMENT_EMOJI[lab][1]
        else:   # stamp.png -> stamp.ogg or stamp_desc[_lang].ogg
            assert m["audio"]["path"].startswith(m["picture"]["path"][:-len(".png")])
    with open(Path(summary["images"]["labels"])) as f:
        images = list(csv.DictReader(f))
    assert {i["label"] for i in images} == objs["train"]
    assert {i["split"] for i in images} == {"train", "valid", "test"}
    from PIL import Image
    with Image.open(Path(summary["images"]["dir"]) / images[0]["path"]) as im:
        assert im.size == (224, 224)


def test_av_clips_decode_and_frames_show_their_label(av_build, task_rows):
    from tympan.datasets.offline.av_objects import picture_from_meta
    from tympan.datasets.offline.pictures import FrameParams, render_frame
    out, _ = av_build
    rows = task_rows(out, "av")
    cache = default_cache_dir()
    pictures = {}          # distinct pictures of the corpus, with their labels
    for r in rows:
        pictures.setdefault(json.dumps(r["meta"]["picture"], sort_keys=True), r["labels"][0])
    rng = np.random.default_rng(0)
    by_kind = defaultdict(list)
    for r in rows:
        by_kind[r["meta"]["kind"]].append(r)
    checked = 0
    for kind, rs in sorted(by_kind.items()):
        for i in rng.choice(len(rs), size=3, replace=False):
            r = rs[int(i)]
            audio = decode_audio(r["source"])
            assert abs(audio.size - r["meta"]["duration_s"] * SR) < 0.05 * SR
            assert np.abs(audio).max() > 0.01
            t = [0.5, 1.5]
            frames = decode_video_frames(r["source"], t).astype(np.float32)
            assert frames.shape == (2, 224, 224, 3)
            params = FrameParams.from_dict(r["meta"]["frame"])
            for k, tk in enumerate(t):
                err = {key: np.mean((render_frame(picture_from_meta(json.loads(key), cache),
                                                  params, tk) - frames[k]) ** 2)
                       for key in pictures}
                best = min(err, key=err.get)
                assert pictures[best] == r["labels"][0], (r["clip_id"], pictures[best])
                assert err[best] < 60.0          # H.264 at crf 20 on a 224 px frame
            checked += 1
    assert checked == 9


def test_an_undecodable_recording_is_skipped_and_counted(tmp_path):
    from tympan.datasets.offline.av_objects import AVObject, clip_audio
    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"OggS" + b"\x00" * 100)
    obj = AVObject("tux_broken", "broken", "tuxpaint", "tuxpaint", {"path": "x"}, sound=str(bad))
    good = AVObject("inst_piano", "piano", "emoji_instrument", "emoji", {"emoji": "\U0001F3B9"},
                    programs=(0,))
    audio, skipped = clip_audio([(obj, 1), (good, 2)], 1.0)
    assert audio[0] is None and audio[1][0].shape == (SR,)
    assert len(skipped) == 1 and skipped[0]["object"] == "tux_broken"
