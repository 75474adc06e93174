"""The synthetic dataset: shapes, determinism, and the structure the methods rely on."""

from __future__ import annotations

import numpy as np
import pytest

from tympan.config import ConfigError
from tympan.datasets.frontend import FrontendConfig, frontend_numpy
from tympan.datasets.synthetic import WORDS, synthetic_clips


def test_shapes_labels_and_determinism():
    clips = synthetic_clips(6, n_classes=3, duration_s=1.5, seed=5)
    assert [c.labels for c in clips] == [["class0"], ["class1"], ["class2"]] * 2
    for c in clips:
        assert c.audio.dtype == np.float32 and c.audio.shape == (24000,)
        assert c.sample_rate == 16000 and 0.05 < np.abs(c.audio).max() <= 0.95
        assert c.frames is None and "transcript" not in c.meta
    again = synthetic_clips(8, n_classes=3, duration_s=1.5, seed=5)       # a prefix is stable
    for a, b in zip(clips, again):
        assert a.clip_id == b.clip_id and np.array_equal(a.audio, b.audio)
    other = synthetic_clips(1, n_classes=3, duration_s=1.5, seed=6)
    assert not np.allclose(other[0].audio, clips[0].audio)
    assert len({c.clip_id for c in clips + other}) == 7


def test_frames_and_words():
    clips = synthetic_clips(4, n_classes=4, duration_s=3.0, with_frames=True, with_words=True)
    for i, c in enumerate(clips):
        assert c.frames.shape == (3, 224, 224, 3) and c.frames.dtype == np.uint8
        np.testing.assert_allclose(c.frame_times, [0.5, 1.5, 2.5])
        assert c.meta["transcript"] == WORDS[i]
    # a frame is dominated by its class colour: same-class frames closer than other-class ones
    mean = [c.frames.reshape(-1, 3).mean(0) for c in synthetic_clips(8, n_classes=4, duration_s=1.0,
                                                                     with_frames=True, frame_size=64)]
    same = np.linalg.norm(mean[0] - mean[4])
    assert all(same < np.linalg.norm(mean[0] - mean[k]) for k in (1, 2, 3))


def test_bad_arguments_name_the_key():
    with pytest.raises(ConfigError, match="n_classes"):
        synthetic_clips(2, n_classes=0)
    with pytest.raises(ConfigError, match="n_classes"):
        synthetic_clips(2, n_classes=len(WORDS) + 1, with_words=True)
    with pytest.raises(ConfigError, match="duration_s"):
        synthetic_clips(2, duration_s=0)


def _blocks(x: np.ndarray, frames: int) -> np.ndarray:
    """[T, F] log-mel -> [T // frames, F] means of consecutive blocks."""
    return x[: len(x) // frames * frames].reshape(-1, frames, x.shape[1]).mean(1)


def test_temporal_and_class_structure():
    """What the methods rely on (see the module doc of tympan.datasets.synthetic):
    the notes make the level (and pitch) jump inside every clip; a clip's start and end differ
    more than two interleaved halves of it (time has a direction: TemporalGap); clips of one
    class are closer than clips of different classes, yet the long-term spectrum alone labels
    held-out clips far from perfectly (the class is structure, not where the energy sits)."""
    fe = FrontendConfig(n_mels=32)
    feats = [frontend_numpy(fe, c.audio) for c in synthetic_clips(24, n_classes=4, duration_s=4.0, seed=3)]
    # per-note level jumps: the level of 0.1-s blocks varies inside a clip (log-mel units)
    assert np.mean([_blocks(x, 10).mean(1).std() for x in feats]) > 0.3
    quarter = [len(x) // 4 for x in feats]
    start_end = np.mean([np.linalg.norm(x[:q].mean(0) - x[-q:].mean(0)) for x, q in zip(feats, quarter)])
    interleaved = np.mean([np.linalg.norm(_blocks(x, 50)[0::2].mean(0) - _blocks(x, 50)[1::2].mean(0))
                           for x in feats])
    assert start_end > 1.5 * interleaved
    y = np.arange(24) % 4
    spectra = np.stack([x.mean(0) for x in feats])
    dist = np.linalg.norm(spectra[:, None] - spectra[None], axis=-1)
    same, off = (y[:, None] == y[None]) & ~np.eye(24, dtype=bool), y[:, None] != y[None]
    assert dist[same].mean() < dist[off].mean()
    held_out = np.stack([frontend_numpy(fe, c.audio).mean(0)
                         for c in synthetic_clips(24, n_classes=4, duration_s=4.0, seed=4)])
    centroids = np.stack([spectra[y == k].mean(0) for k in range(4)])
    accuracy = (np.argmin(((held_out[:, None] - centroids[None]) ** 2).sum(-1), axis=1) == y).mean()
    assert 0.25 < accuracy < 0.9         # above chance (0.25), but far from what the methods reach
