"""Scorecard scaling, grade bands and the calibration / grade tables."""

import math

import numpy as np
import pytest

from fedcredit.scoring.scorecard import GradeBands, Scorecard, ScorecardError, calibration_table, grade_table


def test_base_points_at_base_odds_and_pdo_doubles_the_odds():
    sc = Scorecard()
    assert sc.points(1 / 51) == pytest.approx(600.0)  # odds good:bad 50:1
    assert sc.points(1 / 101) == pytest.approx(620.0)  # 100:1
    assert sc.points(1 / 26) == pytest.approx(580.0)  # 25:1
    pd = np.array([0.001, 0.01, 0.1, 0.3])
    odds = (1 - sc.pd(sc.points(pd) + 20.0)) / sc.pd(sc.points(pd) + 20.0)
    assert np.allclose(odds, 2 * (1 - pd) / pd)
    assert sc.factor == pytest.approx(20 / math.log(2))
    assert sc.offset == pytest.approx(600 - 20 / math.log(2) * math.log(50))


def test_round_trip_and_monotone():
    sc = Scorecard(base_points=500, base_odds=20, pdo=40)
    pd = np.linspace(1e-6, 1 - 1e-6, 1001)
    pts = sc.points(pd)
    assert np.all(np.diff(pts) < 0)  # riskier -> fewer points
    assert np.allclose(sc.pd(pts), pd, rtol=1e-9, atol=1e-15)
    assert np.allclose(sc.points(sc.pd([300.0, 500.0, 700.0])), [300.0, 500.0, 700.0])


def test_extremes_stay_finite_and_bad_inputs_are_refused():
    sc = Scorecard()
    assert np.all(np.isfinite(sc.points([0.0, 1.0])))
    assert np.all(np.isfinite(sc.pd([-1e6, 1e6])))
    with pytest.raises(ScorecardError, match=r"\[0, 1\]"):
        sc.points([0.1, 1.2])
    with pytest.raises(ScorecardError, match=r"\[0, 1\]"):
        sc.points([np.nan])
    with pytest.raises(ScorecardError, match="pdo"):
        Scorecard(pdo=0)
    with pytest.raises(ScorecardError, match="base_odds"):
        Scorecard(base_odds=-1)


def test_default_bands_and_edges():
    bands = GradeBands()
    got = bands.assign([700, 620, 619.999, 590, 589.9, 560, 559.9, -50])
    assert got.tolist() == ["A", "A", "B", "B", "C", "C", "D", "D"]
    assert bands.index(["D", "A"]).tolist() == [3, 0]
    with pytest.raises(ScorecardError, match="unknown grade 'E'"):
        bands.index(["A", "E"])


def test_configurable_bands_must_be_strictly_ordered():
    bands = GradeBands(("AAA", "BB", "C"), (700, 650))
    assert bands.assign([701, 650, 10]).tolist() == ["AAA", "BB", "C"]
    with pytest.raises(ScorecardError, match="strictly decreasing"):
        GradeBands(("A", "B", "C"), (600, 650))
    with pytest.raises(ScorecardError, match="strictly decreasing"):
        GradeBands(("A", "B", "C"), (600, 600))
    with pytest.raises(ScorecardError, match="need 2 minimum points"):
        GradeBands(("A", "B", "C"), (600,))
    with pytest.raises(ScorecardError, match="unique"):
        GradeBands(("A", "A"), (600,))
    with pytest.raises(ScorecardError, match="grade names"):
        GradeBands(("A", "B C"), (600,))


def test_calibration_table_counts_and_rates():
    rng = np.random.default_rng(3)
    pd = rng.uniform(0.0, 0.4, 5000)
    y = (rng.random(5000) < pd).astype(int)
    table = calibration_table(pd, y, bins=10)
    assert table["bin"].tolist() == list(range(1, 11))
    assert table["count"].sum() == 5000 and table["defaults"].sum() == y.sum()
    assert np.all(np.diff(table["mean_pd"]) > 0)
    assert np.allclose(table["observed_default_rate"], table["defaults"] / table["count"])
    assert np.abs(table["observed_default_rate"] - table["mean_pd"]).max() < 0.06  # calibrated by construction


def test_calibration_small_and_tied_inputs():
    table = calibration_table([0.1, 0.1, 0.1], [0, 1, 0], bins=10)
    assert len(table) == 1 and table.loc[0, "count"] == 3 and table.loc[0, "observed_default_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ScorecardError, match="0 \\(good\\) or 1"):
        calibration_table([0.1, 0.2], [0, 2])
    with pytest.raises(ScorecardError, match="one value per PD"):
        calibration_table([0.1, 0.2], [0])


def test_grade_table_with_and_without_labels():
    grades = ["A", "C", "C", "D", "A", "C"]
    pd = [0.01, 0.05, 0.07, 0.2, 0.03, 0.06]
    y = [0, 1, 0, 1, 0, 0]
    t = grade_table(grades, pd, y, order=("A", "B", "C", "D"))
    assert t["grade"].tolist() == ["A", "B", "C", "D"]
    assert t["enterprises"].tolist() == [2, 0, 3, 1]
    assert t.loc[0, "mean_pd"] == pytest.approx(0.02) and math.isnan(t.loc[1, "mean_pd"])
    assert t["defaults"].tolist() == [0, 0, 1, 1]
    assert t.loc[2, "observed_default_rate"] == pytest.approx(1 / 3) and math.isnan(t.loc[1, "observed_default_rate"])
    plain = grade_table(grades, pd)
    assert plain["grade"].tolist() == ["A", "C", "D"] and "observed_default_rate" not in plain
    with pytest.raises(ScorecardError, match="not in the given order"):
        grade_table(grades, pd, order=("A", "B"))
