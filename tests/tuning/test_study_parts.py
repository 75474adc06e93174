"""The parts of a study that need no Ray: nested subsets, the sweep space, the refusal of a
different study under the same directory, the table and the plotted points."""

from __future__ import annotations

import json

import pytest

from tympan.config import ConfigError


def test_nested_subsets_are_fixed_and_nested():
    from tympan.tuning.data import nested_subset

    ids = [f"clip{i:03d}" for i in range(50)]
    subsets = [nested_subset(ids, n) for n in (4, 8, 16, 50)]
    for small, big in zip(subsets, subsets[1:]):
        assert big[:len(small)] == small                      # nested
    assert nested_subset(list(reversed(ids)), 8) == subsets[1]  # fixed: independent of order
    assert sorted(subsets[-1]) == ids
    with pytest.raises(ConfigError, match="sizes"):
        nested_subset(ids, 51)


def test_sweep_space_is_checked(tmp_path):
    from tympan.tuning.sweep import load_space

    good = tmp_path / "good.yaml"
    good.write_text("optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\nwidth: {choice: [0.25, 0.5]}\n"
                    "batch_size: 16\n")
    assert load_space(good) == {"optim.lr": ("loguniform", [1e-4, 1e-2]),
                                "width": ("choice", [0.25, 0.5]), "batch_size": 16}
    for text, where in [("optim.lr: {loguniform: [0.0, 1.0]}\n", "optim.lr"),
                        ("width: {normal: [0, 1]}\n", "width"), ("[1, 2]\n", "--space")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_space(bad)
        assert where in str(e.value)


def test_a_different_study_under_the_same_directory_is_refused(tmp_path):
    from tympan.tuning.study import StudyOptions, open_study_run, settings_of

    def opts(steps):
        return StudyOptions(kind="l3-design", name="s", out=str(tmp_path), corpus="c",
                            settings=settings_of(steps=steps))

    first = open_study_run(opts(2))
    first["tracker"].end()
    again = open_study_run(opts(2))                       # same command: same study run
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    with pytest.raises(ConfigError, match="steps"):
        open_study_run(opts(3))


def test_plot_points_are_the_table_means_with_seed_spread(tmp_path):
    from tympan.tuning.report import comparison, saturation_plot, write_table

    rows = [{"method": "l3", "input": inp, "content": "all", "seed": s, "steps": 2, "clips": n,
             "acc_a": a, "average": a}
            for inp, base in (("linear", 0.3), ("mel256", 0.5))
            for n in (4, 16) for s, a in ((0, base + n / 100), (1, base + n / 100 + 0.1))]
    write_table(rows, tmp_path)
    plotted = saturation_plot(rows, tmp_path / "saturation.png")
    assert json.loads((tmp_path / "saturation.json").read_text()) == plotted
    assert plotted["lines"]["linear"]["clips"] == [4.0, 16.0]
    assert plotted["lines"]["linear"]["mean"] == pytest.approx([0.39, 0.51])
    assert plotted["lines"]["mel256"]["std"] == pytest.approx([0.05, 0.05])
    text = comparison(rows)
    assert "mel vs linear" in text and "agrees" in text
