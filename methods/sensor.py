"""The slice methods on sensor data: 29 third-octave bands at 8 frames/s (125 ms frames).

Acoustic sensor networks (CENSE / SpecCense) store fast third-octave levels, not audio. A
method pretrains on them through the ``spectra:`` data URI (slices of frames that never
straddle a gap, :mod:`tympan.datasets.slices`) and the sampler hook of :mod:`methods.base`
(:func:`~tympan.methods.base.spectral_views`); on audio, the same configuration pretrains
through the third-octave front end, so one encoder serves both.

``SENSOR_PRESETS[method]`` holds the settings that differ from the paper's log-mel defaults
(every other value stays the paper's), and why, in frames of 125 ms. The pipeline's slice
(``PipelineConfig.slice_width``) defaults to 80 frames = 10 s: the 10-s clip all four papers
draw their views from. Every encoder input is ``[T, 29]``: the Audio2Vec encoder's six
ceil-mode 2x2 pools take 8 x 29 to 1 x 1 (8->4->2->1->1->1->1, 29->15->8->4->2->1->1), and
EfficientNet-B0 pads its strided convolutions the same way.

- ``audio2vec-cbow`` / ``audio2vec-skipgram``: ``slice_frames = 8`` (1.0 s; the paper's 0.96 s
  slices at 10 ms hops are 96 frames, 8 is the nearest whole number of 125 ms frames), ``context
  = 2`` (the paper's P), ``gap_frames = 0``: 2P + 1 = 5 slices, one frame apart (a third-octave
  slice of t frames is exactly t hops, so the sampler's one-hop step leaves one frame between
  slices), span 44 frames = 5.5 s, inside an 80-frame slice. ``embed_hop_frames = 4`` (0.5 s,
  the paper's 50 % overlap).
- ``temporal-gap``: ``slice_frames = 8`` (1 s, as above), ``clip_s = 10`` (the paper's 10-s
  clips = the 80-frame slice, so gaps span 0..72 frames = 0..9 s), ``n_bins = 9`` (one bin per
  second of gap: 8 frames per bin, so no bin is narrower than a frame).
- ``triplet``: ``slice_frames = 8`` (1 s), ``tau_s = 1.0`` (the paper's "positive within tau of
  the anchor", here 8 frames), waveform augmentations off (``p_noise = p_mix = 0``: there is
  no waveform; they would corrupt the frames and are refused), the log-level shift kept as the
  paper's translation with ``max_shift_frames = 1`` and ``max_shift_bins = 1`` (one band = a
  third of an octave, coarser than 4 mel bins already).
- ``cola``: ``crop_frames = 8`` (1 s; COLA's 0.96 s crops), ``noise_std = 0`` (COLA's noise is
  on the waveform; see above).
"""

from __future__ import annotations

from typing import Any

from tympan.config import to_dict
from tympan.datasets.frontend import PRESETS

_THIRD_OCTAVE = to_dict(PRESETS["third-octave"])
_A2V = {"slice_frames": 8, "context": 2, "gap_frames": 0, "embed_hop_frames": 4}

SENSOR_PRESETS: dict[str, dict[str, Any]] = {
    "audio2vec-cbow": dict(_A2V),
    "audio2vec-skipgram": dict(_A2V),
    "temporal-gap": {"slice_frames": 8, "clip_s": 10.0, "n_bins": 9, "embed_hop_frames": 4},
    "triplet": {"slice_frames": 8, "tau_s": 1.0, "p_noise": 0.0, "p_mix": 0.0,
                "max_shift_frames": 1, "max_shift_bins": 1, "embed_hop_frames": 4},
    "cola": {"crop_frames": 8, "noise_std": 0.0, "embed_hop_frames": 4},
}


def sensor_preset(method: str) -> dict[str, Any]:
    """The method's sensor settings with the third-octave front end, as a nested dict for
    :func:`tympan.config.build` (or a YAML ``--config``)."""
    if method not in SENSOR_PRESETS:
        raise KeyError(f"no sensor preset for {method!r}; slice methods with one: "
                       f"{', '.join(SENSOR_PRESETS)}")
    return {"frontend": dict(_THIRD_OCTAVE), **SENSOR_PRESETS[method]}


def sensor_config(method: str, **overrides: Any):
    """The method's config with its sensor preset (and ``overrides``, e.g. ``width=0.125``)."""
    from tympan.config import build
    from tympan.methods.registry import get_method

    return build(get_method(method).config_cls, {**sensor_preset(method), **overrides})
