"""Sensor frames -> samples of ``width`` consecutive frames that never straddle a discontinuity.

A sensor's record (one sensor-day of continuous runs, as :func:`tympan.datasets.shards.
encode_spectra_record` stores it) is a sequence of frames with epoch times. Between two frames
there is a *discontinuity* when the step is not one period: a gap (step > 1.5 periods, the
ingest's rule), or a clock that went back or stood still (step <= 0). The SpecCense question
"in case there is a discontinuity in time, do I reject the whole slice?" has three answers here
(``policy``):

``reject`` (default)
    The users' own workflow: the record's frames are cut on one fixed grid of ``width`` frames
    from its first frame (``floor(frames / width)`` slices); a slice with a discontinuity inside
    is dropped and counted (``rejected``). Nothing ever straddles a gap; what a gap costs is the
    slice it falls in plus the misalignment of the grid after it.
``split``
    Slicing restarts after every discontinuity: each continuous run gives
    ``floor(run frames / width)`` slices from its own start (``restarts`` counts the runs after
    the first). Never straddles a gap and loses only each run's tail (``tail_frames``).
``fill``
    A gap of at most ``fill_max`` missing frames (a positive step of at most
    ``(fill_max + 1.5)`` periods) is filled with frames linearly interpolated in dB between its
    two neighbours, at evenly spaced times (``filled_gaps``, ``filled_frames``); longer gaps and
    backward / standing clocks stay discontinuities and are handled as under ``reject``.

The counts of every policy come back in a :class:`SliceStats` that the pipeline sums into the
run's metrics. Pure numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

POLICIES = ("reject", "split", "fill")


@dataclass
class SliceStats:
    records: int = 0
    frames: int = 0              # frames read (before filling)
    slices: int = 0              # slices kept
    rejected: int = 0            # slices dropped because a discontinuity falls inside
    discontinuities: int = 0     # breaks seen (gaps, backward or standing clocks)
    restarts: int = 0            # split: slicing restarted after a break
    filled_gaps: int = 0         # fill: gaps interpolated
    filled_frames: int = 0       # fill: frames made up by interpolation
    tail_frames: int = 0         # frames in no slice (record / run ends shorter than width)

    def add(self, other: "SliceStats | dict") -> None:
        d = other if isinstance(other, dict) else asdict(other)
        for k, v in d.items():
            setattr(self, k, getattr(self, k) + int(v))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def breaks(times: np.ndarray, period: float) -> np.ndarray:
    """Indices ``i`` (1..T-1) where frame ``i`` does not follow frame ``i - 1`` by one period."""
    step = np.diff(np.asarray(times, dtype=np.float64))
    return np.flatnonzero((step > 1.5 * period) | (step <= 0)) + 1


def fill_gaps(times: np.ndarray, levels: np.ndarray, period: float, fill_max: int
              ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Interpolate every gap of at most ``fill_max`` missing frames -> (times, levels,
    gaps filled, frames added). Levels are interpolated linearly in dB, per band."""
    step = np.diff(times)
    missing = np.rint(step / period).astype(np.int64) - 1
    fillable = np.flatnonzero((step > 1.5 * period) & (missing >= 1) & (missing <= fill_max))
    if fillable.size == 0 or fill_max <= 0:
        return times, levels, 0, 0
    t_parts, l_parts, a = [], [], 0
    for i in fillable:                       # gap between frame i and i + 1
        k = int(missing[i])
        w = (np.arange(1, k + 1) / (k + 1))[:, None]         # [k, 1] interpolation weights
        t_parts += [times[a:i + 1], times[i] + w[:, 0] * (times[i + 1] - times[i])]
        l_parts += [levels[a:i + 1], (1 - w) * levels[i] + w * levels[i + 1]]
        a = i + 1
    t_parts.append(times[a:])
    l_parts.append(levels[a:])
    return (np.concatenate(t_parts), np.concatenate(l_parts).astype(levels.dtype, copy=False),
            int(fillable.size), int(missing[fillable].sum()))


def slice_record(times: np.ndarray, levels: np.ndarray, period: float, width: int,
                 policy: str = "reject", fill_max: int = 0
                 ) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], SliceStats]:
    """One record's frames (``times`` [T] epoch s, ``levels`` [T, F]) -> slices
    ``[(first frame index, times [width], levels [width, F]), ...]`` in time order, and the
    counts (see the module doc). Indices refer to the record after filling (``fill``)."""
    if policy not in POLICIES:
        raise ValueError(f"gap policy {policy!r}: expected one of {', '.join(POLICIES)}")
    if width < 1:
        raise ValueError(f"slice width {width}: must be >= 1")
    times = np.asarray(times, dtype=np.float64)
    stats = SliceStats(records=1, frames=len(times))
    stats.discontinuities = len(breaks(times, period))
    if policy == "fill":
        times, levels, stats.filled_gaps, stats.filled_frames = fill_gaps(times, levels, period,
                                                                          fill_max)
    cuts = breaks(times, period)
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    if policy == "split":
        bounds = np.r_[0, cuts, len(times)]
        stats.restarts = len(cuts)
        for a, z in zip(bounds[:-1], bounds[1:]):
            n = (z - a) // width
            out += [(int(s), times[s:s + width], levels[s:s + width])
                    for s in range(a, a + n * width, width)]
            stats.tail_frames += int((z - a) - n * width)
    else:                                    # reject, and fill for what it could not fill
        n = len(times) // width
        stats.tail_frames = len(times) - n * width
        for s in range(0, n * width, width):
            # a break at index b (s < b < s + width) splits this slice
            inside = np.searchsorted(cuts, s, side="right") < np.searchsorted(cuts, s + width, side="left")
            if inside:
                stats.rejected += 1
            else:
                out.append((s, times[s:s + width], levels[s:s + width]))
    stats.slices = len(out)
    return out, stats


def iter_slices(record_id: str, times: np.ndarray, levels: np.ndarray, period: float, width: int,
                policy: str, fill_max: int) -> tuple[Iterator[tuple[str, np.ndarray, np.ndarray]], SliceStats]:
    """:func:`slice_record` with slice ids ``{record_id}#{first frame index:07d}``."""
    sl, stats = slice_record(times, levels, period, width, policy, fill_max)
    return ((f"{record_id}#{s:07d}", t, lv) for s, t, lv in sl), stats
