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


def _slices(clip, fe, n=4, frames=48):
    x = frontend_numpy(fe, clip.audio)                          # [T, F]
    step = (x.shape[0] - frames) // (n - 1)
    return np.stack([x[k * step:k * step + frames].mean(0) for k in range(n)])   # [n, F]


def test_temporal_and_class_structure():
    """Neighbouring slices of a clip are closer than distant slices, which are closer than
    slices of other clips; class means differ more than clips within a class vary."""
    fe = FrontendConfig(n_mels=32)
    clips = synthetic_clips(24, n_classes=4, duration_s=4.0, seed=3)
    sl = [_slices(c, fe) for c in clips]                        # 24 x [4, F]
    near = np.mean([np.linalg.norm(s[k] - s[k + 1]) for s in sl for k in range(3)])
    far = np.mean([np.linalg.norm(s[0] - s[3]) for s in sl])
    other = np.mean([np.linalg.norm(sl[i][0] - sl[j][0]) for i in range(24) for j in range(24) if i != j])
    assert near < far < other
    # Classes share the pitch range, so they are told apart by structure, e.g. the modulation
    # spectrum of the amplitude envelope (class AM rate + motif rhythm): a nearest-class-mean
    # classifier on it, fitted on one seed, labels clips of another seed.
    y = np.arange(24) % 4
    feats = np.stack([_envelope_spectrum(c) for c in clips])
    tfeats = np.stack([_envelope_spectrum(c) for c in synthetic_clips(24, n_classes=4, duration_s=4.0, seed=4)])
    centroids = np.stack([feats[y == k].mean(0) for k in range(4)])
    pred = np.argmin(((tfeats[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() >= 0.9


def _envelope_spectrum(clip):
    frames = clip.audio[: len(clip.audio) // 160 * 160].reshape(-1, 160)     # 10 ms frames
    env = np.sqrt((frames ** 2).mean(1))
    env = env / env.mean()
    spec = np.abs(np.fft.rfft(env - env.mean()))[:60]                       # up to 15 Hz
    return spec / np.linalg.norm(spec)
