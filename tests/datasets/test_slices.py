"""Slicing sensor frames under the three gap policies (pure numpy, exact counts)."""

import numpy as np
import pytest

from tympan.datasets.slices import slice_record

P = 0.125


def record(steps):
    t = 1.7e9 + np.concatenate([[0.0], np.cumsum(steps)])
    lv = np.tile(np.arange(len(t), dtype=np.float32)[:, None], (1, 29))   # level = frame number
    return t, lv


def test_fill_interpolates_short_gaps_in_db_and_never_a_clock_jump():
    # 50 frames, 2 missing, 50 frames, clock back by 1 s, 50 frames
    steps = [P] * 49 + [3 * P] + [P] * 49 + [-1.0] + [P] * 49
    t, lv = record(steps)
    slices, st = slice_record(t, lv, P, width=30, policy="fill", fill_max=2)
    assert st.filled_gaps == 1 and st.filled_frames == 2 and st.discontinuities == 2
    assert st.slices + st.rejected == (len(t) + 2) // 30 and st.rejected == 1   # the jump
    for _, ts, ls in slices:
        assert np.allclose(np.diff(ts), P)
    # the slice over the filled gap: frames 49, (two made up), 50 -> levels 49, 49.33, 49.67, 50
    s, ts, ls = next(x for x in slices if x[0] <= 49 and 52 <= x[0] + 29)
    np.testing.assert_allclose(ls[49 - s:53 - s, 0], [49, 49 + 1 / 3, 49 + 2 / 3, 50], atol=1e-5)
    # a longer gap is not filled
    _, st3 = slice_record(t, lv, P, width=30, policy="fill", fill_max=1)
    assert st3.filled_gaps == 0


def test_reject_and_split_counts():
    steps = [P] * 59 + [10 * P] + [P] * 59          # two runs of 60 frames
    t, lv = record(steps)
    rej, st = slice_record(t, lv, P, width=25, policy="reject")
    # grid 0-25-50-75-100: the slice 50-75 holds the break at 60
    assert [s for s, *_ in rej] == [0, 25, 75] and st.rejected == 1 and st.tail_frames == 20
    spl, st = slice_record(t, lv, P, width=25, policy="split")
    assert [s for s, *_ in spl] == [0, 25, 60, 85] and st.restarts == 1 and st.tail_frames == 20
    with pytest.raises(ValueError, match="gap policy"):
        slice_record(t, lv, P, width=25, policy="drop")
