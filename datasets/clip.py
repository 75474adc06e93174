"""The decoded clip: what a shard record (or the on-the-fly generator) becomes in memory,
and what every method's view sampler takes as input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Clip:
    clip_id: str
    audio: np.ndarray                       # float32 [n_samples], mono, in [-1, 1]
    sample_rate: int = 16000
    labels: list[str] = field(default_factory=list)
    frames: np.ndarray | None = None        # uint8 [K, H, W, 3] RGB video frames, if any
    frame_times: np.ndarray | None = None   # float64 [K], seconds from the clip start
    meta: dict[str, Any] = field(default_factory=dict)   # transcript, provenance, ...
    # Sensor spectra: precomputed front-end frames instead of audio (``audio`` is empty).
    features: np.ndarray | None = None      # float32 [T, F], e.g. 29 third-octave levels in dB
    feature_times: np.ndarray | None = None  # float64 [T], epoch seconds of each frame

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate
