"""Limit policy: loading, defaults, every validation error, caps, capacity and expected loss."""

import numpy as np
import pytest

from fedcredit.scoring.policy import Capacity, LimitPolicy, PolicyError, RiskShare

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def load(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return LimitPolicy.load(path)


def test_shipped_example_is_the_default():
    example, default = LimitPolicy.load(ROOT / "examples" / "limits.toml"), LimitPolicy()
    assert (example.caps, example.sharing, example.bands, example.scorecard, example.lgd) == (
        default.caps, default.sharing, default.bands, default.scorecard, default.lgd)
    assert default.caps == {"A": 5_000_000, "B": 2_000_000, "C": 500_000, "D": 0}
    assert default.sharing["A"] == RiskShare(0.8, 0.2) and default.sharing["D"] == RiskShare(0.0, 1.0)
    assert default.sharing["B"].bank == pytest.approx(0.4) and default.sharing["C"].fund == pytest.approx(0.4)
    assert default.lgd == 0.45 and default.capacity is None


def test_partial_file_keeps_other_defaults(tmp_path):
    policy = load(tmp_path, "lgd = 0.6\n[scorecard]\npdo = 40\n[risk_sharing]\nA = {fund = 0.7, bank = 0.3}\n"
                            "B = \"1:1\"\nC = \"3:7\"\nD = \"0:1\"\n")
    assert policy.lgd == 0.6 and policy.scorecard.pdo == 40 and policy.scorecard.base_points == 600
    assert policy.sharing["A"] == RiskShare(0.7, 0.3) and policy.sharing["B"] == RiskShare(0.5, 0.5)
    assert policy.caps["A"] == 5_000_000


def test_custom_grades(tmp_path):
    policy = load(tmp_path, '[bands]\ngrades = ["AA", "BB", "CC"]\nmin_points = [640, 600]\n'
                            "[caps_cny]\nAA = 3_000_000\nBB = 1e6\nCC = 0\n"
                            '[risk_sharing]\nAA = "7:3"\nBB = "5:5"\nCC = "0:10"\n')
    assert policy.cap_for(["CC", "AA", "BB"]).tolist() == [0, 3_000_000, 1_000_000]
    assert policy.grade([0.001, 0.5])[1].tolist() == ["AA", "CC"]


@pytest.mark.parametrize("text, message", [
    ("lgdd = 0.4", r"unknown key\(s\) lgdd"),
    ("[scorecard]\nbase_point = 600", r"unknown key\(s\) scorecard.base_point"),
    ("[scorecard]\npdo = -20", "pdo .* must be > 0"),
    ("[scorecard]\nbase_odds = \"50\"", "scorecard.base_odds: must be a number"),
    ("scorecard = 3", "scorecard: must be a table"),
    ("[caps_cny]\nA = 5_000_000\nB = -1\nC = 0\nD = 0", "caps_cny.B: a cap cannot be negative"),
    ("[caps_cny]\nA = 5_000_000\nB = 1.5\nC = 0\nD = 0", "caps_cny.B: must be a whole number of CNY"),
    ("[caps_cny]\nA = 5_000_000\nB = true\nC = 0\nD = 0", "caps_cny.B: must be a whole number of CNY"),
    ("[caps_cny]\nA = 5_000_000\nB = 1\nC = 0", r"caps_cny: missing grade\(s\) \['D'\]"),
    ("[caps_cny]\nA = 1\nB = 1\nC = 0\nD = 0\nE = 0", r"caps_cny: \['E'\] not among the grades"),
    ('[risk_sharing]\nA = "8-2"\nB = "6:4"\nC = "4:6"\nD = "0:10"', 'risk_sharing.A: expected a fund:bank ratio'),
    ('[risk_sharing]\nA = "a:b"\nB = "6:4"\nC = "4:6"\nD = "0:10"', 'risk_sharing.A: expected a fund:bank ratio'),
    ('[risk_sharing]\nA = "0:0"\nB = "6:4"\nC = "4:6"\nD = "0:10"', "risk_sharing.A: ratio '0:0' has no positive part"),
    ('[risk_sharing]\nA = {fund = 0.5, bank = 0.4}\nB = "6:4"\nC = "4:6"\nD = "0:10"', "risk_sharing.A: shares must sum to 1"),
    ('[risk_sharing]\nA = {fund = 1.5, bank = -0.5}\nB = "6:4"\nC = "4:6"\nD = "0:10"', "risk_sharing.A.fund: must be a share"),
    ('[risk_sharing]\nA = {fund = 0.8}\nB = "6:4"\nC = "4:6"\nD = "0:10"', "risk_sharing.A.bank: missing"),
    ('[risk_sharing]\nA = 0.8\nB = "6:4"\nC = "4:6"\nD = "0:10"', "risk_sharing.A: expected"),
    ('[risk_sharing]\nA = "8:2"\nB = "6:4"\nC = "4:6"', r"risk_sharing: missing grade\(s\) \['D'\]"),
    ("lgd = 0", r"lgd: loss given default must lie in \(0, 1\]"),
    ("lgd = 1.2", r"lgd: loss given default must lie in \(0, 1\]"),
    ('lgd = "45%"', r"lgd: loss given default must lie in \(0, 1\]"),
    ('[bands]\ngrades = ["A", "B", "C", "D"]\nmin_points = [620, 630, 560]', "bands: .*strictly decreasing"),
    ('[bands]\ngrades = ["A", "B", "C", "D"]\nmin_points = [620, 590]', "bands: 4 grades need 3 minimum points"),
    ('[bands]\ngrades = ["A", "B", "C", "D"]', "give both grades and min_points"),
    ('[bands]\ngrades = ["A", "B", "C", "D"]\nmin_points = [620, "590", 560]', "bands.min_points: must be numbers"),
    ('[bands]\ngrades = ["X", "Y"]\nmin_points = [600]', r"\[caps_cny\] is missing: grades other than"),
    ('[capacity]\nnode = "tax"\ncolumn = "declared_revenue_cny"\nmultiple = -0.3', "capacity.multiple: must be > 0"),
    ('[capacity]\nnode = "tax"\ncolumn = "declared_revenue_cny"\nmultiple = 0', "capacity.multiple: must be > 0"),
    ('[capacity]\ncolumn = "declared_revenue_cny"\nmultiple = 0.3', "capacity.node: missing"),
    ('[capacity]\nnode = "tax"\ncolumn = "declared_revenue_cny"\nmultiple = 0.3\nmissing = "ignore"', "capacity.missing: must be one of"),
    ('[capacity]\nnode = "tax"\ncolumn = "declared_revenue_cny"\nmultiple = 0.3\nfloor = 1', r"unknown key\(s\) capacity.floor"),
    ("[caps_cny\nA = 1", "not valid TOML"),
])
def test_invalid_files_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(PolicyError, match=message) as info:
        load(tmp_path, text)
    assert str(info.value).startswith(str(tmp_path / "policy.toml"))


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="policy file not found"):
        LimitPolicy.load(tmp_path / "nope.toml")


def test_caps_and_limits_without_capacity():
    policy = LimitPolicy()
    grades = ["A", "B", "C", "D", "A"]
    assert policy.cap_for(grades).tolist() == [5_000_000, 2_000_000, 500_000, 0, 5_000_000]
    assert policy.limits(grades).dtype == np.int64
    with pytest.raises(PolicyError, match="unknown grade 'Z'"):
        policy.cap_for(["A", "Z"])


def test_capacity_is_the_minimum_and_missing_rule(tmp_path):
    policy = load(tmp_path, '[capacity]\nnode = "tax"\ncolumn = "declared_revenue_cny"\nmultiple = 0.3\n')
    assert policy.capacity == Capacity("tax", "declared_revenue_cny", 0.3, "zero")
    grades = ["A", "A", "B", "C", "D", "C"]
    revenue = [10e6, 30e6, np.nan, -5.0, 1e6, 1_234_567.89]
    amounts = policy.capacity.amounts(revenue)
    assert policy.limits(grades, amounts).tolist() == [3_000_000, 5_000_000, 0, 0, 0, 370_370]
    # the owning node's one-step form gives the same limits from the caps it was sent
    assert policy.capacity.apply(policy.cap_for(grades), revenue).tolist() == [3_000_000, 5_000_000, 0, 0, 0, 370_370]
    lenient = Capacity("tax", "declared_revenue_cny", 0.3, "cap")
    assert policy.limits(grades, lenient.amounts(revenue)).tolist() == [3_000_000, 5_000_000, 2_000_000, 0, 0, 370_370]
    with pytest.raises(PolicyError, match="missing values"):
        policy.limits(grades, revenue)
    with pytest.raises(PolicyError, match="2 values for 6"):
        policy.limits(grades, [1.0, 2.0])


def test_expected_loss_by_hand():
    policy = LimitPolicy()
    grades = ["A", "A", "B", "C", "D"]
    pd = [0.01, 0.02, 0.03, 0.10, 0.30]
    limits = policy.limits(grades)
    t = policy.expected_loss_table(grades, pd, limits).set_index("grade")
    assert t["enterprises"].tolist() == [2, 1, 1, 1]
    assert t["total_limit_cny"].tolist() == [10_000_000, 2_000_000, 500_000, 0]
    assert t.loc["A", "mean_pd"] == pytest.approx(0.015)
    # A: 0.45 * (0.01 * 5e6 + 0.02 * 5e6) = 67,500; the bank carries 2/10 of it
    assert t["expected_loss_cny"].tolist() == pytest.approx([67_500, 27_000, 22_500, 0])
    assert t["bank_expected_loss_cny"].tolist() == pytest.approx([13_500, 10_800, 13_500, 0])
    assert t["fund_expected_loss_cny"].tolist() == pytest.approx([54_000, 16_200, 9_000, 0])
    assert t["bank_share"].tolist() == pytest.approx([0.2, 0.4, 0.6, 1.0])


def test_expected_loss_lists_empty_grades_and_checks_lengths():
    policy = LimitPolicy()
    t = policy.expected_loss_table(["A"], [0.02], [1_000_000])
    assert t["grade"].tolist() == ["A", "B", "C", "D"] and t["enterprises"].tolist() == [1, 0, 0, 0]
    assert np.isnan(t.loc[1, "mean_pd"]) and t.loc[1, "expected_loss_cny"] == 0
    with pytest.raises(PolicyError, match="same length"):
        policy.expected_loss_table(["A", "B"], [0.02], [1])
    with pytest.raises(PolicyError, match="non-negative"):
        policy.expected_loss_table(["A"], [0.02], [-1])
