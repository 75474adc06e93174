import numpy as np

from tympan.methods.probe import linear_probe


def _blobs(rng, n, centres, noise):
    y = rng.integers(0, len(centres), n)
    return centres[y] + noise * rng.standard_normal((n, centres.shape[1])), [f"c{i}" for i in y]


def test_probe_separates_linearly_separable_classes_and_fails_on_noise():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16)) * 3
    xtr, ytr = _blobs(rng, 200, centres, 0.5)
    xva, yva = _blobs(rng, 50, centres, 0.5)
    xte, yte = _blobs(rng, 100, centres, 0.5)
    good = linear_probe(xtr, ytr, xte, yte, xva, yva)
    assert good.accuracy > 0.95
    assert good.classes == ["c0", "c1", "c2", "c3"]
    # Labels independent of the features: the probe must not do better than chance by much.
    shuffled = list(rng.permutation(yte))
    bad = linear_probe(xtr, list(rng.permutation(ytr)), xte, shuffled)
    assert bad.accuracy < 0.45


def test_unseen_test_label_counts_as_error():
    x = np.array([[0.0], [1.0], [0.0], [1.0]])
    res = linear_probe(x, ["a", "b", "a", "b"], x[:2], ["a", "zzz"])
    assert res.accuracy == 0.5
