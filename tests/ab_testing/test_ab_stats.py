"""Statistics against textbook and reference values.

Reference numbers were computed with scipy 1.17 (``scipy.stats.t``, ``chi2``, ``norm``,
``ttest_ind(equal_var=False)``) and statsmodels 0.14 (``proportions_ztest``); they are hard-coded
so the suite does not need scipy.
"""

from __future__ import annotations

import json
import math

import pytest

from huabu.ab_testing.stats import (
    SampleSummary,
    SequentialResult,
    chi2_sf,
    non_inferiority_test,
    normal_cdf,
    normal_logcdf,
    normal_ppf,
    sequential_srm_check,
    sequential_test,
    srm_check,
    student_t_cdf,
    student_t_ppf,
    student_t_sf,
    tune_mixture_variance,
    two_proportion_z_test,
    welch_t_test,
)

T_SF = [
    (2.0, 1.0, 0.14758361765043326),
    (-1.5, 2.5, 0.8760817734568519),
    (2.228, 10.0, 0.02500588590855566),
    (1.96, 24.98852929023142, 0.030618889987641874),
    (3.2, 4.7, 0.013091934878401396),
    (0.3, 1000.0, 0.38211975208362203),
    (4.0, 30.0, 0.0001909228180418782),
    (-2.5, 100000.0, 0.9937895404037205),
    (12.0, 3.0, 0.0006225079003946681),
]
T_PPF = [
    (0.975, 1.0, 12.706204736174694),
    (0.975, 5.0, 2.5705818356363146),
    (0.95, 24.98852929023142, 1.70817091544764),
    (0.995, 12.5, 3.0324366528705617),
    (0.025, 3.0, -3.1824463052837086),
    (0.9, 1000.0, 1.2823987214609247),
    (1e-06, 7.0, -14.241469651981445),
]
CHI2_SF = [
    (3.841458820694124, 1, 0.05),
    (4.0, 1, 0.04550026389635857),
    (5.991464547107979, 2, 0.05),
    (20.0, 9, 0.017912404529843298),
    (0.5, 3, 0.9188914116546758),
    (150.0, 99, 0.0007204453957169282),
    (0.001, 1, 0.9747728793699604),
]
NORM_PPF = [
    (1e-12, -7.034483825301131),
    (0.001, -3.090232306167813),
    (0.025, -1.9599639845400545),
    (0.3, -0.5244005127080409),
    (0.5, 0.0),
    (0.975, 1.959963984540054),
    (0.999999999, 5.997807019601637),
]

# Welch's t-test example from Wikipedia ("Welch's t-test", examples 1 and 3): t = 2.46, df = 25.0,
# p = 0.021 for the first pair.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
B1 = [17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8]
B2 = [21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5]
B2 += [21.5, 21.8]


@pytest.mark.parametrize(("t", "df", "expected"), T_SF)
def test_student_t_sf_matches_reference(t: float, df: float, expected: float) -> None:
    assert student_t_sf(t, df) == pytest.approx(expected, rel=1e-10)
    assert student_t_cdf(-t, df) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("p", "df", "expected"), T_PPF)
def test_student_t_ppf_matches_reference(p: float, df: float, expected: float) -> None:
    assert student_t_ppf(p, df) == pytest.approx(expected, rel=1e-10)
    assert student_t_cdf(student_t_ppf(p, df), df) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize(("x", "df", "expected"), CHI2_SF)
def test_chi2_sf_matches_reference(x: float, df: int, expected: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("p", "expected"), NORM_PPF)
def test_normal_ppf_matches_reference(p: float, expected: float) -> None:
    assert normal_ppf(p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_normal_tails_stay_finite() -> None:
    assert normal_cdf(-1.959963984540054) == pytest.approx(0.025, rel=1e-12)
    assert normal_logcdf(-40.0) == pytest.approx(-804.6084420137539, rel=1e-12)  # scipy.stats.norm.logcdf
    assert normal_logcdf(9.0) == pytest.approx(-1.1285884059538324e-19, rel=1e-9)
    assert student_t_sf(math.inf, 3.0) == 0.0
    assert student_t_ppf(0.5, 4.0) == 0.0


def test_welch_matches_wikipedia_and_scipy() -> None:
    control, treatment = SampleSummary.from_values(A1), SampleSummary.from_values(A2)
    r = welch_t_test(control, treatment)
    assert r.statistic == pytest.approx(2.455356398286006, rel=1e-12)
    assert r.df == pytest.approx(24.988529290231416, rel=1e-12)
    assert r.p_value == pytest.approx(0.021378001462866992, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.3492370661924069, 3.984096267140929), rel=1e-9)
    assert r.significant and "df = 25.0" in r.summary

    greater = welch_t_test(control, treatment, alternative="greater")
    assert greater.p_value == pytest.approx(0.010689000731433496, rel=1e-9)
    assert greater.ci_low == pytest.approx(0.6593347835830363, rel=1e-9) and greater.ci_high == math.inf
    less = welch_t_test(control, treatment, alternative="less")
    assert less.p_value == pytest.approx(0.9893109992685665, rel=1e-9)
    assert less.ci_high == pytest.approx(3.6739985497502996, rel=1e-9) and not less.significant

    r2 = welch_t_test(SampleSummary.from_values(B1), SampleSummary.from_values(B2))
    assert (r2.statistic, r2.df, r2.p_value) == pytest.approx(
        (1.5654335235985037, 9.904741248650831, 0.14884169660532817)
    )
    assert not r2.significant

    # A shifted null equals shifting the data (scipy on B2 + 0.5, one-sided).
    shifted = welch_t_test(
        SampleSummary.from_values(B1), SampleSummary.from_values(B2), alternative="greater", null_diff=-0.5
    )
    assert (shifted.statistic, shifted.p_value) == pytest.approx((2.0786904165816202, 0.03230209363044114), rel=1e-9)


def test_two_proportion_z_matches_statsmodels() -> None:
    r = two_proportion_z_test(120, 1000, 150, 1000)
    assert r.statistic == pytest.approx(1.963049807622355, rel=1e-12)
    assert r.p_value == pytest.approx(0.04964038686536878, rel=1e-9)
    assert r.estimate == pytest.approx(0.03) and r.significant
    assert two_proportion_z_test(120, 1000, 150, 1000, alternative="greater").p_value == pytest.approx(
        0.02482019343268439, rel=1e-9
    )
    r2 = two_proportion_z_test(40, 2000, 28, 1500)
    assert (r2.statistic, r2.p_value) == pytest.approx((-0.2828168561154392, 0.7773172323226335), rel=1e-9)
    # Wald interval by hand.
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.15 * 0.85 / 1000)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.03 - 1.959963984540054 * se, 0.03 + 1.959963984540054 * se))


def test_non_inferiority_directions() -> None:
    control, treatment = SampleSummary.from_values(A1), SampleSummary.from_values(A2)
    better = non_inferiority_test(control, treatment, margin=0.5)
    assert better.non_inferior and better.null_value == -0.5 and better.alternative == "greater"
    # The reverse comparison: A1 is 2.17 lower, far beyond a 0.5 margin.
    worse = non_inferiority_test(treatment, control, margin=0.5)
    assert not worse.non_inferior and "not shown" in worse.summary
    # Lower is better (latency): treatment mean 2.17 higher is not within a 0.5 margin, but within 5.
    assert not non_inferiority_test(control, treatment, margin=0.5, higher_is_better=False).non_inferior
    assert non_inferiority_test(control, treatment, margin=5.0, higher_is_better=False).non_inferior
    seq = non_inferiority_test(control, treatment, margin=0.5, method="sequential", mixture_variance=1.0)
    assert seq.test == "non_inferiority_mixture_sprt"
    with pytest.raises(ValueError, match="mixture_variance"):
        non_inferiority_test(control, treatment, margin=0.5, method="sequential")
    with pytest.raises(ValueError, match="positive"):
        non_inferiority_test(control, treatment, margin=0.0)


def test_sequential_formula_and_interval() -> None:
    control = SampleSummary(n=400, mean=10.0, variance=4.0)
    treatment = SampleSummary(n=600, mean=10.5, variance=9.0)
    tau2 = 0.05
    r = sequential_test(control, treatment, mixture_variance=tau2, alpha=0.05)
    v = 4.0 / 400 + 9.0 / 600
    log_lr = 0.5 * math.log(v / (v + tau2)) + tau2 * 0.25 / (2 * v * (v + tau2))
    assert r.statistic == pytest.approx(log_lr, rel=1e-12)
    assert r.p_value == pytest.approx(min(1.0, math.exp(-log_lr)), rel=1e-12)
    assert r.variance == pytest.approx(v)
    # The interval is exactly the set of nulls the test does not reject.
    for bound in (r.ci_low, r.ci_high):
        at_bound = sequential_test(control, treatment, mixture_variance=tau2, null_diff=bound)
        assert at_bound.p_value == pytest.approx(0.05, rel=1e-9)
    # The anytime-valid interval is wider than the fixed-horizon one.
    welch = welch_t_test(control, treatment)
    assert r.ci_low < welch.ci_low and r.ci_high > welch.ci_high

    # One-sided: half-normal mixture; its bound also inverts the test.
    g = sequential_test(control, treatment, mixture_variance=tau2, alternative="greater")
    assert g.ci_high == math.inf and g.ci_low > r.ci_low  # one-sided bound is tighter
    assert sequential_test(
        control, treatment, mixture_variance=tau2, alternative="greater", null_diff=g.ci_low
    ).p_value == pytest.approx(0.05, rel=1e-6)
    less = sequential_test(control, treatment, mixture_variance=tau2, alternative="less")
    assert less.p_value == 1.0 and less.ci_low == -math.inf


def test_sequential_running_minimum_and_json() -> None:
    control = SampleSummary(n=100, mean=0.0, variance=1.0)
    strong = sequential_test(control, SampleSummary(n=100, mean=0.6, variance=1.0), mixture_variance=0.1)
    weak = sequential_test(control, SampleSummary(n=120, mean=0.1, variance=1.0), mixture_variance=0.1, previous=strong)
    assert weak.p_value == strong.p_value and weak.significant
    assert weak.ci_low >= strong.ci_low and weak.ci_high <= strong.ci_high
    # Infinite one-sided bounds survive JSON (as "Infinity" strings, which are valid JSON).
    one_sided = sequential_test(control, control, mixture_variance=0.1, alternative="greater")
    text = one_sided.model_dump_json()
    json.loads(text)
    assert SequentialResult.model_validate_json(text) == one_sided
    with pytest.raises(ValueError, match="previous"):
        sequential_test(control, control, mixture_variance=0.1, alternative="less", previous=one_sided)


def test_tuned_mixture_variance_minimises_width_at_planned_n() -> None:
    planned = 2.0 / 1000
    tau2 = tune_mixture_variance(planned, alpha=0.05)

    def width(t2: float) -> float:
        s = SampleSummary(n=1000, mean=0.0, variance=1.0)
        r = sequential_test(s, s, mixture_variance=t2)
        return r.ci_high - r.ci_low

    assert width(tau2) < width(tau2 * 1.2) and width(tau2) < width(tau2 / 1.2)
    # r solves r = 2 log(20) + log(1 + r): about 8.2.
    assert tau2 / planned == pytest.approx(2 * math.log(20) + math.log1p(tau2 / planned), rel=1e-9)


def test_degenerate_inputs() -> None:
    constant = SampleSummary(n=10, mean=1.0, variance=0.0)
    r = welch_t_test(constant, constant)
    assert r.p_value == 1.0 and r.statistic == 0.0
    assert welch_t_test(constant, SampleSummary(n=10, mean=2.0, variance=0.0)).p_value == 0.0
    seq = sequential_test(constant, constant, mixture_variance=1.0)
    assert seq.p_value == 1.0 and (seq.ci_low, seq.ci_high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        welch_t_test(SampleSummary(n=1, mean=0.0, variance=0.0), constant)
    with pytest.raises(ValueError, match="alpha"):
        welch_t_test(constant, constant, alpha=1.5)
    zero = two_proportion_z_test(0, 50, 0, 50)
    assert zero.p_value == 1.0
    smoothed = SampleSummary.from_proportion(0, 50, smoothed=True)
    assert smoothed.mean == 0.0 and smoothed.variance > 0


def test_srm_chi_square() -> None:
    ok = srm_check({"stable": 5100, "canary": 4900}, {"stable": 5000, "canary": 5000})
    assert ok.statistic == pytest.approx(4.0) and ok.df == 1
    assert ok.p_value == pytest.approx(0.04550026389635857, rel=1e-9)
    assert not ok.mismatch  # 0.0455 > 0.001
    assert ok.expected == {"stable": 5000.0, "canary": 5000.0}

    bad = srm_check({"stable": 9300, "canary": 700}, {"stable": 9000, "canary": 1000})
    assert bad.mismatch and bad.p_value < 1e-20 and "sample ratio mismatch" in bad.summary
    # Traffic to a variant with weight 0 is a mismatch by definition.
    stray = srm_check({"stable": 1000, "canary": 3}, {"stable": 10000, "canary": 0})
    assert stray.mismatch and stray.p_value == 0.0
    three = srm_check({"a": 340, "b": 330, "c": 330}, {"a": 1, "b": 1, "c": 1})
    assert three.df == 2 and not three.mismatch


def test_srm_sequential_formula() -> None:
    observed = {"stable": 530, "canary": 470}
    weights = {"stable": 0.5, "canary": 0.5}
    r = sequential_srm_check(observed, weights, concentration=10.0)
    a = 5.0
    log_bf = math.lgamma(10.0) - math.lgamma(1010.0)
    log_bf += 2 * -math.lgamma(a) + math.lgamma(a + 530) + math.lgamma(a + 470) - 1000 * math.log(0.5)
    assert r.statistic == pytest.approx(log_bf, rel=1e-12)
    assert r.p_value == pytest.approx(min(1.0, math.exp(-log_bf)))
    assert sequential_srm_check({"stable": 5300, "canary": 4700}, weights).mismatch
