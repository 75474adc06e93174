"""Synthetic clips with known structure: a real dataset type for smoke runs and tests.

Following open_clip's ``synthetic`` dataset (STYLE.md), the signals are built so that every
self-supervised method has something to learn and a test can check that it learned it:

* **classes differ by structure, not by pitch**: each class has a harmonic profile that
  morphs into a second one over the clip, a lead voice with its own timbre playing a repeated
  melodic motif (note length and intervals), an amplitude-modulation rate and depth and a
  noise colour, all drawn once from a per-class seed that does not depend on ``seed``, so
  clips made with different seeds (train / held-out) share the same classes;
* **the class is the only thing a clip keeps constant**: the instrument plays a random melody,
  a new note every 0.1-0.2 s at a random pitch over two octaves and a random level (+-10 dB),
  both shared by all classes. A nuisance that is constant over a clip (a per-clip
  transposition, which an earlier version had) is a clip identity: every objective that
  contrasts or predicts slices of one clip (COLA, triplet, Audio2Vec) learns it instead of the
  class, and a random network beats them. Per-note nuisances vary inside every view, so the
  objectives learn to discount them, as they must discount notes and loudness in real audio;
* **time has structure**: pitch and gain also drift slowly (random walks) and the drone's
  timbre morphs steadily over the clip, so slices close in time are more alike than distant
  slices, and the timbre tells where in the clip a slice lies (TemporalGap);
* **other nuisances**: random phases, motif onset, morph direction, noise level.

``with_frames`` adds 1-fps "video" frames showing a class-specific picture (class colour and
shape, jittered position, pixel noise) for audio-visual methods (L3, SoundNet);
``with_words`` adds a class word as ``meta["transcript"]`` (the audio is that word's class
sound) for audio-text. Pure numpy; about 20-30 ms per 4-s clip on one core.
"""

from __future__ import annotations

import numpy as np

from tympan.config import check
from tympan.datasets.clip import Clip

# The class words of ``with_words`` (class c says WORDS[c]); Speech-Commands-like keywords.
WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off",
                          "stop", "go", "zero", "one", "two", "three", "four", "five")
_CLASS_SEED = 0x7E3A      # fixed: class definitions never change with the clip seed
_N_HARMONICS = 8
_SHAPES = ("disc", "square", "cross", "stripes")
_NOTE_S = (0.1, 0.2)          # the random melody: note length range (s) ...
_NOTE_SEMITONES = 24.0        # ... pitch range of its notes, shared by all classes ...
_NOTE_DB = 10.0               # ... and their level range (+- dB)


def class_name(c: int) -> str:
    return f"class{c}"


def _class_params(c: int, n_classes: int) -> dict:
    """Fixed acoustic + visual identity of class ``c``."""
    rng = np.random.default_rng((_CLASS_SEED, c))
    # The class sets only a small pitch offset; the melody's pitch (drawn over two octaves per
    # note in _audio) is a nuisance shared by all classes, so classes must be told apart by
    # timbre, modulation and motif rather than by where the energy sits.
    drone_hz = 160.0 * 2.0 ** (rng.uniform(-0.15, 0.15))
    profile = rng.dirichlet(np.full(_N_HARMONICS, 0.6))          # timbre
    return {
        "drone_hz": drone_hz,
        "drone_profile": profile,
        "drone_profile_end": rng.dirichlet(np.full(_N_HARMONICS, 0.6)),
        "lead_profile": rng.dirichlet(np.full(_N_HARMONICS, 0.6)),
        "motif": rng.integers(-7, 13, size=int(rng.integers(3, 6))),  # semitones above drone*2
        "note_s": float(rng.uniform(0.12, 0.35)),
        "am_hz": float(rng.uniform(2.0, 9.0)),
        "am_depth": float(rng.uniform(0.2, 0.7)),
        "noise_tilt": float(rng.uniform(-0.9, 0.9)),                  # noise colour
        "colour": rng.integers(30, 226, size=3),
        "shape": _SHAPES[c % len(_SHAPES)],
    }


def _harmonic_tone(phase: np.ndarray, inst_hz: np.ndarray, profile: np.ndarray,
                   sample_rate: int, rng: np.random.Generator,
                   profile_end: np.ndarray | None = None, morph: np.ndarray | None = None) -> np.ndarray:
    """Sum of harmonics of a running phase; harmonics above 0.45 * sr are muted (no aliasing).
    With ``profile_end`` the harmonic weights move from ``profile`` to it as ``morph`` [n]
    goes from 0 to 1."""
    out = np.zeros_like(phase)
    nyq = 0.45 * sample_rate
    for h in range(1, _N_HARMONICS + 1):
        alive = (h * inst_hz) < nyq
        weight = profile[h - 1] if profile_end is None else \
            (1.0 - morph) * profile[h - 1] + morph * profile_end[h - 1]
        out += weight * alive * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    return out


def _slow_walk(rng: np.random.Generator, t: np.ndarray, start: float, step: float,
               lo: float, hi: float) -> np.ndarray:
    """A random walk with one knot per second, linearly interpolated, clipped to [lo, hi]."""
    knots = start + rng.normal(0.0, step, size=max(2, int(t[-1] if len(t) else 0) + 2)).cumsum()
    grid = np.linspace(0.0, t[-1] if len(t) > 1 else 1.0, len(knots))
    return np.clip(np.interp(t, grid, knots), lo, hi)


def _notes(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The random melody: per-sample (semitones, dB) of notes of random length in _NOTE_S,
    each with its own pitch and level, starting before t = 0 (a random phase)."""
    end = float(t[-1]) if len(t) else 0.0
    lengths = rng.uniform(*_NOTE_S, size=int(end / _NOTE_S[0]) + 2)
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]]) - rng.uniform(0.0, _NOTE_S[1])
    which = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    semis = rng.uniform(0.0, _NOTE_SEMITONES, size=len(starts))
    db = rng.uniform(-_NOTE_DB, _NOTE_DB, size=len(starts))
    return semis[which], db[which]


def _audio(p: dict, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sample_rate
    # Pitch: the melody's notes (two octaves, shared by all classes) on top of a slow random
    # walk (within +-3 semitones), so close slices are more alike than distant ones.
    note_semis, note_db = _notes(rng, t)
    drift = _slow_walk(rng, t, 0.0, 1.5, -3.0, 3.0) + note_semis
    drone_hz = p["drone_hz"] * 2.0 ** (drift / 12.0)
    # The drone's timbre morphs between the class's two harmonic profiles over the clip
    # (random direction): a class-specific trajectory whose position tells the time.
    morph = np.clip(t / max(t[-1], 1e-9), 0.0, 1.0) if n > 1 else np.zeros(n)
    if rng.random() < 0.5:
        morph = 1.0 - morph
    drone = _harmonic_tone(2 * np.pi * np.cumsum(drone_hz) / sample_rate, drone_hz,
                           p["drone_profile"], sample_rate, rng, p["drone_profile_end"], morph)
    # The motif: the class's note sequence repeated, from a random onset.
    onset = rng.uniform(0.0, p["note_s"] * len(p["motif"]))
    note_idx = np.floor((t + onset) / p["note_s"]).astype(np.int64)
    semis = p["motif"][note_idx % len(p["motif"])]
    lead_hz = 2.0 * drone_hz * 2.0 ** (semis / 12.0)
    lead = _harmonic_tone(2 * np.pi * np.cumsum(lead_hz) / sample_rate, lead_hz,
                          p["lead_profile"], sample_rate, rng)
    in_note = ((t + onset) % p["note_s"]) / p["note_s"]
    lead *= np.exp(-4.0 * in_note) * np.minimum(1.0, in_note * 40.0)   # pluck envelope
    am = 1.0 - p["am_depth"] * 0.5 * (1.0 + np.sin(2 * np.pi * p["am_hz"] * t + rng.uniform(0, 6.3)))
    x = 0.6 * drone * am + 0.5 * lead
    # Coloured noise: white noise with a one-pole tilt (positive = brighter).
    white = rng.standard_normal(n)
    noise = white.copy()
    noise[1:] += p["noise_tilt"] * white[:-1]
    x = x + _slow_walk(rng, t, 0.05, 0.02, 0.01, 0.1) * noise
    x = x / (np.max(np.abs(x)) + 1e-9)
    # Level: each note's own level on a slow drift (within +-4 dB), so loudness is no per-clip
    # constant a method could latch onto instead of the class.
    x = x * 0.5 * 10.0 ** ((_slow_walk(rng, t, 0.0, 2.0, -4.0, 4.0) + note_db) / 20.0)
    x = x / max(1.0, float(np.max(np.abs(x))) / 0.95)       # peak <= 0.95
    return x.astype(np.float32)


def _frame(p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One [size, size, 3] uint8 picture: class colour + class shape at a jittered spot."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    r = rng.uniform(0.15, 0.25) * size
    if p["shape"] == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    elif p["shape"] == "square":
        mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    elif p["shape"] == "cross":
        mask = ((np.abs(yy - cy) < r / 3) & (np.abs(xx - cx) < r)) | \
               ((np.abs(xx - cx) < r / 3) & (np.abs(yy - cy) < r))
    else:
        mask = ((xx + rng.uniform(0, 20)) // (size / 8)) % 2 == 0
    bg = 255 - p["colour"]
    img = np.where(mask[..., None], p["colour"][None, None, :], bg[None, None, :]).astype(np.float32)
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_clips(n: int, *, n_classes: int = 4, duration_s: float = 4.0,
                    sample_rate: int = 16000, seed: int = 0, with_frames: bool = False,
                    with_words: bool = False, frame_size: int = 224) -> list[Clip]:
    """``n`` clips, classes balanced round-robin (clip i has class ``i % n_classes``).

    Each clip: ``audio`` float32 [round(duration_s * sample_rate)] in [-0.9, 0.9],
    ``labels = ["class{c}"]``, ``meta = {"class_index": c, "synthetic_seed": seed}``;
    with frames: ``frames`` uint8 [K, frame_size, frame_size, 3] with K = max(1, int(duration_s))
    at 1 fps and ``frame_times`` float64 [K] (0.5, 1.5, ... s, frame centres); with words:
    ``meta["transcript"] = WORDS[c]``. Deterministic for (n, n_classes, duration_s, seed):
    clip i depends only on (seed, i), so a larger ``n`` extends a smaller one.
    """
    check(n >= 0, "n", n, "must be >= 0")
    check(n_classes >= 1, "n_classes", n_classes, "must be >= 1")
    check(duration_s > 0, "duration_s", duration_s, "must be positive")
    check(sample_rate >= 8000, "sample_rate", sample_rate, "must be >= 8000 Hz")
    if with_words:
        check(n_classes <= len(WORDS), "n_classes", n_classes,
              f"with_words supports at most {len(WORDS)} classes (one word each)")
    params = [_class_params(c, n_classes) for c in range(n_classes)]
    n_samples = int(round(duration_s * sample_rate))
    clips = []
    for i in range(n):
        c = i % n_classes
        rng = np.random.default_rng((seed, i))
        clip = Clip(clip_id=f"synthetic-{seed}-{i:06d}", audio=_audio(params[c], n_samples, sample_rate, rng),
                    sample_rate=sample_rate, labels=[class_name(c)],
                    meta={"class_index": c, "synthetic_seed": seed})
        if with_frames:
            k = max(1, int(duration_s))
            clip.frames = np.stack([_frame(params[c], frame_size, rng) for _ in range(k)])
            clip.frame_times = np.arange(k, dtype=np.float64) + 0.5
        if with_words:
            clip.meta["transcript"] = WORDS[c]
        clips.append(clip)
    return clips
