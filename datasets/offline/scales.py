"""How big each part of the offline build is, per scale: the one place sizes live.

``tympan data offline --scale NAME`` resolves NAME once (:func:`scale_named`) in
:mod:`tympan.datasets.offline.build`, which hands each builder its own part (``scale.synth``,
``scale.recorded``, ``scale.av``, ``scale.pretrain``): sizes flow one way, down.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecordedScale:
    clip_s: float = 5.0
    music_files: int | None = None       # music tracks per package (None: all)
    speech_files: int | None = None      # speech recordings per package/language
    scene_clips: tuple[int, int, int] = (8, 6, 6)   # clips per bed in train, valid, test
    bird_clips: int = 4                  # positive clips per bird take (and as many negatives)
    smn_clips: tuple[int, int, int] = (40, 12, 30)  # clips per class and split
    lid_human_per_lang: int = 6          # real-speech test clips per language
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class SynthScale:
    """Sizes of the synthesized tasks at one scale (voices / soundfont programs per split)."""
    kw_voices: tuple[int, int, int]        # train, valid, test voices; each says every keyword
    kw_takes: int                          # times each train voice says each word
    lid_voices: tuple[int, int, int]       # train, valid, test variants (all languages each)
    lid_takes: int                         # utterances per (train variant, language)
    note_s: float                          # note clip length
    fam_per_class: tuple[int, int, int]    # instrument_family examples per family and split
    pitch_range: tuple[int, int]           # MIDI notes (inclusive) of the pitch task
    pitch_per_class: tuple[int, int, int]


@dataclass(frozen=True)
class AVScale:
    clip_s: float              # clip duration
    fps: int
    clips_per_object: int
    tuxpaint_objects: int      # 0: every usable stamp
    images_per_object: tuple[int, int, int]   # train, valid, test renders per image class


@dataclass(frozen=True)
class SensorScale:
    sensors: int               # simulated sensors (1/6 test, 1/6 valid, the rest train)
    minutes: float             # recorded minutes per sensor (10-s windows between downtime)


@dataclass(frozen=True)
class PretrainScale:
    clips: int                 # 10 s clips written as shards
    shard_size: int


@dataclass(frozen=True)
class Scale:
    name: str
    recorded: RecordedScale
    synth: SynthScale
    av: AVScale
    sensors: SensorScale
    pretrain: PretrainScale


_RECORDED_PACKAGES = ("hedgewars-data", "ktuberling-data", "lincity-ng-data", "megaglest-data",
                      "tuxpaint-stamps-default", "wesnoth-1.16-music")

SCALES = {
    "small": Scale(
        "small",
        recorded=RecordedScale(music_files=4, speech_files=40, scene_clips=(6, 4, 4), bird_clips=6,
                               smn_clips=(30, 10, 20), lid_human_per_lang=6,
                               packages=_RECORDED_PACKAGES),
        synth=SynthScale(kw_voices=(8, 3, 4), kw_takes=1, lid_voices=(8, 2, 3), lid_takes=2,
                         note_s=2.0, fam_per_class=(24, 4, 12), pitch_range=(48, 71),
                         pitch_per_class=(8, 2, 4)),
        av=AVScale(clip_s=2.0, fps=8, clips_per_object=2, tuxpaint_objects=24,
                   images_per_object=(4, 1, 1)),
        sensors=SensorScale(sensors=6, minutes=6.0),
        pretrain=PretrainScale(clips=96, shard_size=32)),
    "full": Scale(
        "full",
        recorded=RecordedScale(music_files=None, speech_files=None, scene_clips=(30, 10, 20),
                               bird_clips=12, smn_clips=(300, 60, 150), lid_human_per_lang=40,
                               packages=_RECORDED_PACKAGES + ("supertux-data", "widelands-data")),
        synth=SynthScale(kw_voices=(60, 10, 20), kw_takes=3, lid_voices=(60, 10, 20), lid_takes=4,
                         note_s=4.0, fam_per_class=(300, 30, 60), pitch_range=(36, 95),
                         pitch_per_class=(40, 6, 12)),
        av=AVScale(clip_s=4.0, fps=12, clips_per_object=4, tuxpaint_objects=0,
                   images_per_object=(30, 5, 5)),
        sensors=SensorScale(sensors=18, minutes=60.0),
        pretrain=PretrainScale(clips=4000, shard_size=250)),
}


def scale_named(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"scale={name!r} unknown; choose one of {sorted(SCALES)}")
    return SCALES[name]
