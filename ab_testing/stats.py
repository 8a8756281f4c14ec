"""Statistics for comparing a canary (treatment) with the stable model (control).

Everything works on summary statistics (count, mean, variance), which is all the metric
accumulators keep, and is written in plain Python (``math`` only) so the module imports anywhere
the SDK does, without numpy or scipy.

Conventions: every estimate is ``treatment - control``; ``alternative`` says which side the
alternative hypothesis lies on relative to ``null_diff`` ("greater": treatment - control > null).

Contents
- distributions: normal, Student t (regularised incomplete beta by a continued fraction),
  chi-square (regularised incomplete gamma);
- fixed-horizon tests: Welch's t-test, the two-proportion z-test, a non-inferiority helper;
- an anytime-valid sequential test (mixture SPRT / normal-mixture confidence sequence);
- sample-ratio-mismatch checks: chi-square goodness of fit and an anytime-valid multinomial test.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, TypeVar

from huabu.ab_testing._base import FrozenModel

Alternative = Literal["two-sided", "greater", "less"]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = 1e-15
_TINY = 1e-300


# ----------------------------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------------------------


def normal_cdf(x: float) -> float:
    # erfc, not 1 + erf: keeps full relative precision deep in the lower tail.
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    return 0.5 * math.erfc(x / _SQRT2)


def normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x - _LOG_SQRT_2PI)


def normal_logcdf(x: float) -> float:
    """log Phi(x), finite far into the lower tail where Phi(x) underflows."""
    if x > 0.0:
        return math.log1p(-normal_sf(x))  # Phi(x) is near 1: log1p keeps the tiny log
    if x > -30.0:
        return math.log(normal_cdf(x))
    # Asymptotic (Mills ratio) expansion: Phi(x) ~ phi(x)/|x| * (1 - 1/x^2 + 3/x^4 - 15/x^6).
    x2 = x * x
    return -0.5 * x2 - _LOG_SQRT_2PI - math.log(-x) + math.log1p(-1.0 / x2 + 3.0 / x2**2 - 15.0 / x2**3)


def normal_ppf(p: float) -> float:
    """Inverse of the standard normal CDF, to machine precision."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"probability must be in [0, 1], got {p}")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    q = min(p, 1.0 - p)
    # Start from Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4), then polish with Halley steps on
    # Phi(x) = q, which converge cubically because erfc is accurate to the last bit.
    t = math.sqrt(-2.0 * math.log(q))
    x = -(t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t**3))
    for _ in range(8):
        pdf = normal_pdf(x)
        if pdf == 0.0:
            break
        u = (normal_cdf(x) - q) / pdf
        step = u / (1.0 + 0.5 * x * u)
        x -= step
        if abs(step) <= 1e-15 * max(1.0, abs(x)):
            break
    return x if p < 0.5 else -x


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz evaluation)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    # Convergence takes O(sqrt(max(a, b))) terms in the worst case; the cap is generous.
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _log_beta(a: float, b: float) -> float:
    """log B(a, b), accurate when one argument is huge (Student t with df in the millions)."""
    big, small = max(a, b), min(a, b)
    if big >= 1e5 and small <= 1.0:
        # lgamma(big + small) - lgamma(big) cancels ~8 digits at big = 1e7; use the asymptotic
        # expansion Gamma(a + b) / Gamma(a) = a^b (1 + b(b-1)/(2a) + b(b-1)(b-2)(3b-1)/(24a^2) + ...).
        s = small
        corr = s * (s - 1) / (2 * big) + s * (s - 1) * (s - 2) * (3 * s - 1) / (24 * big * big)
        return math.lgamma(s) - s * math.log(big) - math.log1p(corr)
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def regularized_beta(a: float, b: float, x: float, y: float | None = None) -> float:
    """I_x(a, b). Pass ``y = 1 - x`` when it is known more precisely than ``1 - x``."""
    if y is None:
        y = 1.0 - x
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # log x via log1p(-y) when x is near 1 (and vice versa): a * log(x) with a ~ 1e7 amplifies rounding.
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    log_front = -_log_beta(a, b) + a * log_x + b * log_y
    # The continued fraction converges fast only on the side of the distribution's bulk; use the
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(df):
        return normal_sf(t)
    if t == 0.0:
        return 0.5
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    # x = df/(df+t^2) and y = 1-x computed separately: 1-x would cancel for small |t|.
    tail = 0.5 * regularized_beta(0.5 * df, 0.5, df / (df + t2), t2 / (df + t2))
    return tail if t > 0 else 1.0 - tail


def student_t_cdf(t: float, df: float) -> float:
    return student_t_sf(-t, df)


def student_t_pdf(t: float, df: float) -> float:
    if math.isinf(df):
        return normal_pdf(t)
    log_norm = math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - 0.5 * (df + 1.0) * math.log1p(t * t / df))


def student_t_ppf(p: float, df: float) -> float:
    """Inverse of the Student t CDF: safeguarded Newton iteration inside a shrinking bracket."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"probability must be in [0, 1], got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        return normal_ppf(p)
    q = min(p, 1.0 - p)  # solve sf(x) = q for x > 0, then restore the sign
    sign = 1.0 if p > 0.5 else -1.0
    z = -normal_ppf(q)
    # Cornish-Fisher start: within ~1e-6 for df >= 30, so Newton needs one or two steps there.
    x = z + (z**3 + z) / (4.0 * df) + (5.0 * z**5 + 16.0 * z**3 + 3.0 * z) / (96.0 * df * df)
    # sf is convex and decreasing on x > 0, so Newton converges unless it jumps out of (0, inf)
    # (small df, heavy tails): then fall back to bisection-guarded Newton in a bracket.
    for _ in range(30):
        step = (student_t_sf(x, df) - q) / student_t_pdf(x, df)
        if not math.isfinite(step) or x + step <= 0:
            break
        x += step
        if abs(step) <= 1e-13 * max(1.0, x):
            return sign * x
    lo, hi = 0.0, 1.0
    while student_t_sf(hi, df) > q:
        lo, hi = hi, hi * 2.0
    x = 0.5 * (lo + hi)
    for _ in range(400):
        f = student_t_sf(x, df) - q
        if f > 0:
            lo = x
        else:
            hi = x
        pdf = student_t_pdf(x, df)
        candidate = x + f / pdf if pdf > 0 else math.nan
        if not lo < candidate < hi:
            candidate = 0.5 * (lo + hi)  # Newton left the bracket: bisect instead
        if abs(candidate - x) <= 1e-14 * max(1.0, abs(x)) or hi - lo <= 1e-14 * max(1.0, hi):
            x = candidate
            break
        x = candidate
    return sign * x


def regularized_gamma_upper(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a)."""
    if a <= 0:
        raise ValueError(f"shape must be positive, got {a}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        # Series for the lower function P(a, x); Q = 1 - P is well conditioned here (Q is not tiny).
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Continued fraction for Q (modified Lentz).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(log_front) * h


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square variable with ``df`` degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_gamma_upper(0.5 * df, 0.5 * x)


# ----------------------------------------------------------------------------------------------
# Inputs and results
# ----------------------------------------------------------------------------------------------


class SummaryLike(Protocol):
    """Anything with a count, a mean and an unbiased sample variance (e.g. ``metrics.Moments``)."""

    @property
    def n(self) -> int: ...

    @property
    def mean(self) -> float: ...

    @property
    def variance(self) -> float: ...


class SampleSummary(FrozenModel):
    """Count, mean and unbiased (n - 1) sample variance of one arm."""

    n: int
    mean: float
    variance: float

    @classmethod
    def from_values(cls, values: Iterable[float]) -> SampleSummary:
        xs = [float(v) for v in values]
        n = len(xs)
        mean = math.fsum(xs) / n if n else 0.0
        var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
        return cls(n=n, mean=mean, variance=var)

    @classmethod
    def from_proportion(cls, successes: int, n: int, *, smoothed: bool = False) -> SampleSummary:
        """A Bernoulli arm. ``smoothed`` computes the variance from (x + 1) / (n + 2).

        Why smoothing: with 0 errors in both arms the plug-in variance is 0 and any interval
        collapses to a point, claiming certainty from, say, 50 requests. The Laplace estimate keeps
        the variance positive and only slightly conservative.
        """
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
        p = successes / n if n else 0.0
        p_var = (successes + 1.0) / (n + 2.0) if smoothed else p
        var = p_var * (1.0 - p_var) * (n / (n - 1) if n > 1 else 1.0)
        return cls(n=n, mean=p, variance=var)


class StatResult(FrozenModel):
    """What every test returns: the statistic, a p-value, the estimate and its interval."""

    test: str
    alternative: Alternative
    alpha: float
    statistic: float
    p_value: float
    estimate: float  # treatment - control
    null_value: float  # the difference under the null hypothesis
    ci_low: float  # (1 - alpha) interval for the difference; one-sided tests have an infinite end
    ci_high: float
    significant: bool  # the null is rejected at level alpha
    summary: str


class WelchResult(StatResult):
    df: float
    se: float


class ZTestResult(StatResult):
    se: float


class NonInferiorityResult(StatResult):
    margin: float
    higher_is_better: bool
    non_inferior: bool


class SequentialResult(StatResult):
    """Anytime-valid result. ``statistic`` is log Lambda; ``p_value`` = min(1, 1/Lambda) (running min)."""

    mixture_variance: float  # tau^2 of the normal mixture, in squared units of the difference
    variance: float  # V = var_c/n_c + var_t/n_t, the variance of the estimate
    n_control: int
    n_treatment: int


class SRMResult(FrozenModel):
    test: Literal["chi2", "sequential"]
    statistic: float  # chi-square, or log Bayes factor for the sequential test
    df: int
    p_value: float
    alpha: float
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    summary: str


# ----------------------------------------------------------------------------------------------
# Fixed-horizon tests
# ----------------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")


def _p_value(sf: Callable[[float], float], statistic: float, alternative: Alternative) -> float:
    """p-value from a symmetric distribution's survival function (one tail evaluation only)."""
    if alternative == "greater":
        return sf(statistic)
    if alternative == "less":
        return sf(-statistic)
    return min(1.0, 2.0 * sf(abs(statistic)))


def _critical_interval(
    estimate: float, alternative: Alternative, alpha: float, se: float, ppf: Callable[[float], float]
) -> tuple[float, float]:
    """Fixed-horizon interval for a symmetric statistic: two-sided at 1 - alpha/2, one-sided at 1 - alpha."""
    if alternative == "two-sided":
        half = ppf(1.0 - alpha / 2.0) * se
        return estimate - half, estimate + half
    if alternative == "greater":
        return estimate - ppf(1.0 - alpha) * se, math.inf
    return -math.inf, estimate + ppf(1.0 - alpha) * se


def _standardise(diff: float, null: float, se: float) -> float:
    if se > 0:
        return (diff - null) / se
    # No variance in either arm: the difference is known exactly.
    return 0.0 if diff == null else math.copysign(math.inf, diff - null)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _interval_text(alpha: float, alternative: Alternative, low: float, high: float) -> str:
    level = f"{100 * (1 - alpha):.4g}%"
    if alternative == "greater":
        return f"{level} lower bound {_fmt(low)}"
    if alternative == "less":
        return f"{level} upper bound {_fmt(high)}"
    return f"{level} CI [{_fmt(low)}, {_fmt(high)}]"


def _verdict(significant: bool, alpha: float) -> str:
    return f"significant at alpha={alpha:g}" if significant else f"not significant at alpha={alpha:g}"


ResultT = TypeVar("ResultT", bound=StatResult)


def _result(
    result_type: type[ResultT],
    test: str,
    *,
    alternative: Alternative,
    alpha: float,
    statistic: float,
    p_value: float,
    estimate: float,
    null_value: float,
    interval: tuple[float, float],
    headline: str,
    interval_kind: str = "",
    **extra: Any,
) -> ResultT:
    """A test's result with its verdict at ``alpha`` and the summary every test writes alike:
    ``<headline> (<interval>); <verdict>``."""
    low, high = interval
    significant = p_value <= alpha
    summary = (
        f"{headline} ({interval_kind}{_interval_text(alpha, alternative, low, high)}); {_verdict(significant, alpha)}"
    )
    return result_type(
        test=test,
        alternative=alternative,
        alpha=alpha,
        statistic=statistic,
        p_value=p_value,
        estimate=estimate,
        null_value=null_value,
        ci_low=low,
        ci_high=high,
        significant=significant,
        summary=summary,
        **extra,
    )


def welch_t_test(
    control: SummaryLike,
    treatment: SummaryLike,
    *,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
    null_diff: float = 0.0,
) -> WelchResult:
    """Welch's unequal-variance t-test of ``treatment.mean - control.mean`` against ``null_diff``.

    t = (d - d0) / se, se^2 = s_c^2/n_c + s_t^2/n_t, and the Welch-Satterthwaite degrees of freedom
    df = se^4 / ((s_c^2/n_c)^2/(n_c-1) + (s_t^2/n_t)^2/(n_t-1)).
    """
    _check_alpha(alpha)
    _check_alternative(alternative)
    if control.n < 2 or treatment.n < 2:
        raise ValueError(f"Welch's test needs at least 2 observations per arm, got {control.n} and {treatment.n}")
    vc = control.variance / control.n
    vt = treatment.variance / treatment.n
    se = math.sqrt(vc + vt)
    diff = treatment.mean - control.mean
    denom = vc * vc / (control.n - 1) + vt * vt / (treatment.n - 1)
    df = (vc + vt) ** 2 / denom if denom > 0 else float(control.n + treatment.n - 2)
    t = _standardise(diff, null_diff, se)
    p = _p_value(lambda x: student_t_sf(x, df), t, alternative)
    return _result(
        WelchResult,
        "welch_t",
        alternative=alternative,
        alpha=alpha,
        statistic=t,
        p_value=p,
        estimate=diff,
        null_value=null_diff,
        interval=_critical_interval(diff, alternative, alpha, se, lambda q: student_t_ppf(q, df)),
        headline=f"Welch t = {_fmt(t)}, df = {df:.1f}, p = {p:.3g}: treatment - control = {_fmt(diff)}",
        df=df,
        se=se,
    )


def two_proportion_z_test(
    successes_control: int,
    n_control: int,
    successes_treatment: int,
    n_treatment: int,
    *,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
    null_diff: float = 0.0,
) -> ZTestResult:
    """z-test of p_treatment - p_control against ``null_diff``.

    With ``null_diff == 0`` the standard error uses the pooled proportion (the textbook test); with a
    non-zero null (non-inferiority) the arms are not equal under H0, so it is unpooled. The interval
    is the Wald interval in both cases.
    """
    _check_alpha(alpha)
    _check_alternative(alternative)
    for x, n in ((successes_control, n_control), (successes_treatment, n_treatment)):
        if n < 1 or not 0 <= x <= n:
            raise ValueError(f"need n >= 1 and 0 <= successes <= n, got {x} of {n}")
    pc, pt = successes_control / n_control, successes_treatment / n_treatment
    diff = pt - pc
    se_wald = math.sqrt(pc * (1 - pc) / n_control + pt * (1 - pt) / n_treatment)
    if null_diff == 0.0:
        pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    else:
        se0 = se_wald
    z = _standardise(diff, null_diff, se0)
    p = _p_value(normal_sf, z, alternative)
    return _result(
        ZTestResult,
        "two_proportion_z",
        alternative=alternative,
        alpha=alpha,
        statistic=z,
        p_value=p,
        estimate=diff,
        null_value=null_diff,
        interval=_critical_interval(diff, alternative, alpha, se_wald, normal_ppf),
        headline=f"two-proportion z = {_fmt(z)}, p = {p:.3g}: {_fmt(pt)} vs {_fmt(pc)}, difference {_fmt(diff)}",
        se=se0,
    )


def non_inferiority_test(
    control: SummaryLike,
    treatment: SummaryLike,
    *,
    margin: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    method: Literal["welch", "sequential"] = "welch",
    mixture_variance: float | None = None,
) -> NonInferiorityResult:
    """Is the treatment no worse than the control by more than ``margin`` (in the metric's units)?

    higher is better: H0: d <= -margin vs H1: d > -margin; lower is better: H0: d >= margin vs
    H1: d < margin, with d = treatment - control. ``method="sequential"`` uses the anytime-valid
    one-sided mixture test (needs ``mixture_variance``), safe to evaluate at every look.
    """
    if not margin > 0:
        raise ValueError(f"the non-inferiority margin must be positive, got {margin}")
    alternative: Alternative = "greater" if higher_is_better else "less"
    null = -margin if higher_is_better else margin
    base: StatResult
    if method == "welch":
        base = welch_t_test(control, treatment, alternative=alternative, alpha=alpha, null_diff=null)
    elif method == "sequential":
        if mixture_variance is None:
            raise ValueError("the sequential non-inferiority test needs mixture_variance (see tune_mixture_variance)")
        base = sequential_test(
            control, treatment, mixture_variance=mixture_variance, alternative=alternative, alpha=alpha, null_diff=null
        )
    else:
        raise ValueError(f"method must be 'welch' or 'sequential', got {method!r}")
    bound = base.ci_low if higher_is_better else base.ci_high
    relation = ">" if higher_is_better else "<"
    if base.significant:
        verdict = f"non-inferior: bound {_fmt(bound)} {relation} {_fmt(null)}"
    else:
        verdict = f"non-inferiority not shown: bound {_fmt(bound)} vs {_fmt(null)}"
    summary = f"{verdict} (margin {_fmt(margin)}, {base.test}, p = {base.p_value:.3g}, estimate {_fmt(base.estimate)})"
    fields = base.model_dump(include=set(StatResult.model_fields))
    fields.update(test=f"non_inferiority_{base.test}", summary=summary)
    fields.update(margin=margin, higher_is_better=higher_is_better, non_inferior=base.significant)
    return NonInferiorityResult(**fields)


# ----------------------------------------------------------------------------------------------
# Anytime-valid sequential test
# ----------------------------------------------------------------------------------------------
#
# Mixture SPRT (Robbins 1970; Johari, Koomen, Pekelis & Walsh 2017/2022, "Always valid inference"),
# equivalently the normal-mixture confidence sequence of Howard, Ramdas, McAuliffe & Sekhon 2021.
#
# Let d = (mean_t - mean_c) - d0 and V = s_c^2/n_c + s_t^2/n_t the variance of the estimate. With the
# score Z = d/V and information I = 1/V, Z is (asymptotically) a Brownian motion in information time
# under H0 (for any allocation ratio, fixed or slowly changing), so for every theta
# exp(theta*Z - theta^2*I/2) is a martingale with mean 1. Mixing theta ~ N(0, tau^2) gives
#
#   Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))                 (two-sided)
#
# and by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha: rejecting H0 the first time
# Lambda >= 1/alpha keeps the type-I error at alpha however often one looks. The always-valid
# p-value is p_n = min(1, 1/Lambda_n) (kept as a running minimum), and inverting the test gives the
# confidence sequence  estimate +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2)/V))).
#
# One-sided alternatives mix over a half-normal (theta > 0 only), still a mean-1 martingale:
#
#   Lambda+ = 2 sqrt(V/(V+tau^2)) exp(tau^2 d^2 / (2V(V+tau^2))) Phi(tau d / sqrt(V (V+tau^2)))
#
# (for "less", d -> -d). Its confidence bound is found by bisection (Lambda+ is increasing in d).
#
# The variances are plug-in estimates, so the guarantee is asymptotic (as for the t-test's normal
# approximation); simulations in tests/ab_testing check it at the sample sizes the policy uses.
# tau^2 sets where the boundary is tightest: tune_mixture_variance(V*) minimises the width at the
# planned variance V* (the same tuning as GrowthBook's and Howard et al.'s rho).


@functools.lru_cache(maxsize=64)
def _optimal_ratio(alpha: float) -> float:
    """r = tau^2 / V* solving r = 2 log(1/alpha) + log(1 + r) (a contraction: fixed-point iteration)."""
    two_log = 2.0 * math.log(1.0 / alpha)
    r = two_log
    for _ in range(100):
        r_next = two_log + math.log1p(r)
        if abs(r_next - r) < 1e-12:
            break
        r = r_next
    return r


def tune_mixture_variance(planned_variance: float, alpha: float = 0.05) -> float:
    """tau^2 that makes the two-sided confidence sequence narrowest when V equals ``planned_variance``.

    The squared half-width at V is V (1 + 1/r)(2 log(1/alpha) + log(1 + r)) with r = tau^2 / V; its
    minimum solves r = 2 log(1/alpha) + log(1 + r) (about 8.2 for alpha = 0.05).
    """
    _check_alpha(alpha)
    if not planned_variance > 0:
        raise ValueError(f"planned variance must be positive, got {planned_variance}")
    return _optimal_ratio(alpha) * planned_variance


def _log_mixture_lr(d: float, v: float, tau2: float, alternative: Alternative) -> float:
    """log Lambda for a (null-centred) difference d with estimate variance v."""
    base = 0.5 * math.log(v / (v + tau2)) + tau2 * d * d / (2.0 * v * (v + tau2))
    if alternative == "two-sided":
        return base
    signed = d if alternative == "greater" else -d
    return math.log(2.0) + base + normal_logcdf(math.sqrt(tau2) * signed / math.sqrt(v * (v + tau2)))


def _one_sided_radius(v: float, tau2: float, alpha: float) -> float:
    """The d* > 0 where the one-sided Lambda+ reaches 1/alpha."""
    target = math.log(1.0 / alpha)
    # Lambda+(d) >= Lambda(d) for d >= 0, so the two-sided radius brackets the answer.
    hi = math.sqrt(v * (v + tau2) / tau2 * (2.0 * target + math.log((v + tau2) / v)))
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _log_mixture_lr(mid, v, tau2, "greater") >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-13 * hi:
            break
    return hi


def sequential_test(
    control: SummaryLike,
    treatment: SummaryLike,
    *,
    mixture_variance: float,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
    null_diff: float = 0.0,
    previous: SequentialResult | None = None,
) -> SequentialResult:
    """Anytime-valid mixture SPRT of ``treatment.mean - control.mean`` against ``null_diff``.

    Valid under continuous monitoring: evaluate after every batch and stop the first time
    ``significant`` is true. Pass the result of the previous look as ``previous`` to keep the
    p-value a running minimum and the interval a running intersection (both optional: the
    guarantee holds for every look on its own).
    """
    _check_alpha(alpha)
    _check_alternative(alternative)
    if not mixture_variance > 0:
        raise ValueError(f"mixture_variance must be positive, got {mixture_variance}")
    if control.n < 2 or treatment.n < 2:
        raise ValueError(f"the sequential test needs at least 2 observations per arm, got {control.n}, {treatment.n}")
    if previous is not None and (
        previous.alternative != alternative or previous.alpha != alpha or previous.null_value != null_diff
    ):
        raise ValueError("previous result is for a different alternative, alpha or null value")
    tau2 = mixture_variance
    v = control.variance / control.n + treatment.variance / treatment.n
    estimate = treatment.mean - control.mean
    d = estimate - null_diff
    if v > 0:
        log_lr = _log_mixture_lr(d, v, tau2, alternative)
        if alternative == "two-sided":
            radius = math.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((v + tau2) / v)))
            low, high = estimate - radius, estimate + radius
        elif alternative == "greater":
            low, high = estimate - _one_sided_radius(v, tau2, alpha), math.inf
        else:
            low, high = -math.inf, estimate + _one_sided_radius(v, tau2, alpha)
    else:  # no variance in either arm: the difference is known exactly
        on_the_alternative = {"two-sided": d != 0, "greater": d > 0, "less": d < 0}[alternative]
        log_lr = math.inf if on_the_alternative else 0.0
        low, high = estimate, estimate
    p = math.exp(-log_lr) if log_lr > 0 else 1.0
    if previous is not None:
        p = min(p, previous.p_value)
        low, high = max(low, previous.ci_low), min(high, previous.ci_high)
    return _result(
        SequentialResult,
        "mixture_sprt",
        alternative=alternative,
        alpha=alpha,
        statistic=log_lr,
        p_value=p,
        estimate=estimate,
        null_value=null_diff,
        interval=(low, high),
        headline=(
            f"mixture SPRT log(Lambda) = {_fmt(log_lr)}, always-valid p = {p:.3g}: "
            f"treatment - control = {_fmt(estimate)}"
        ),
        interval_kind="anytime-valid ",
        mixture_variance=tau2,
        variance=v,
        n_control=control.n,
        n_treatment=treatment.n,
    )


# ----------------------------------------------------------------------------------------------
# Sample-ratio mismatch
# ----------------------------------------------------------------------------------------------


def _srm_inputs(
    observed: Mapping[str, int], weights: Mapping[str, float]
) -> tuple[dict[str, int], dict[str, float], list[str]]:
    """Observed counts and expected probabilities over the union of names; names with weight > 0."""
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must be non-negative")
    if any(c < 0 for c in observed.values()):
        raise ValueError("observed counts must be non-negative")
    total_weight = float(sum(weights.values()))
    if total_weight <= 0:
        raise ValueError("at least one weight must be positive")
    names = list(dict.fromkeys([*weights, *observed]))
    counts = {k: int(observed.get(k, 0)) for k in names}
    probs = {k: weights.get(k, 0.0) / total_weight for k in names}
    return counts, probs, [k for k in names if probs[k] > 0]


def srm_check(observed: Mapping[str, int], weights: Mapping[str, float], *, alpha: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of observed counts per variant to the configured weights.

    Use on counts of randomisation units where possible; request counts are over-dispersed when a
    few users send many requests (assignment is sticky per user), which inflates false alarms. The
    conventional threshold is alpha = 0.001 (GrowthBook, Kohavi et al.). Any traffic to a variant
    with weight 0 is a mismatch by definition.
    """
    _check_alpha(alpha)
    counts, probs, live = _srm_inputs(observed, weights)
    total = sum(counts.values())
    expected = {k: total * probs[k] for k in counts}
    stray = sum(counts[k] for k in counts if probs[k] == 0)
    df = max(len(live) - 1, 0)
    if stray:
        chi2, p = math.inf, 0.0
    elif df == 0 or total == 0:
        chi2, p = 0.0, 1.0
    else:
        chi2 = sum((counts[k] - expected[k]) ** 2 / expected[k] for k in live)
        p = chi2_sf(chi2, df)
    return _srm_result(
        "chi2", chi2, f"chi2 = {_fmt(chi2)}, df = {df}, p = {p:.3g}", df, p, alpha, p < alpha, counts, probs
    )


def sequential_srm_check(
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    alpha: float = 0.001,
    concentration: float = 1000.0,
) -> SRMResult:
    """Anytime-valid SRM test (Lindon & Malek 2022): a Dirichlet-multinomial Bayes factor.

    BF = [Gamma(A) / Gamma(A + n)] * prod_i Gamma(a_i + x_i) / Gamma(a_i) / prod_i p_i^x_i with
    a_i = concentration * p_i and A = sum a_i. Under H0 (counts multinomial with the configured
    probabilities p) BF is a mean-1 martingale in n, so flagging when BF >= 1/alpha keeps the
    false-alarm rate at alpha under continuous monitoring, unlike a chi-square test repeated at
    every look. p = min(1, 1/BF).
    """
    _check_alpha(alpha)
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    counts, probs, live = _srm_inputs(observed, weights)
    total = sum(counts.values())
    stray = sum(counts[k] for k in counts if probs[k] == 0)
    df = max(len(live) - 1, 0)
    if stray:
        log_bf = math.inf
    elif df == 0 or total == 0:
        log_bf = 0.0
    else:
        a = {k: concentration * probs[k] for k in live}
        n_live = sum(counts[k] for k in live)
        log_bf = math.lgamma(concentration) - math.lgamma(concentration + n_live)
        for k in live:
            log_bf += math.lgamma(a[k] + counts[k]) - math.lgamma(a[k]) - counts[k] * math.log(probs[k])
    p = math.exp(-log_bf) if log_bf > 0 else 1.0
    return _srm_result(
        "sequential",
        log_bf,
        f"log BF = {_fmt(log_bf)}, always-valid p = {p:.3g}",
        df,
        p,
        alpha,
        p <= alpha,
        counts,
        probs,
    )


def _srm_result(
    test: str,
    statistic: float,
    statistic_text: str,
    df: int,
    p: float,
    alpha: float,
    mismatch: bool,
    counts: dict[str, int],
    probs: dict[str, float],
) -> SRMResult:
    """An SRM check's result and the summary both checks write alike."""
    total = sum(counts.values())
    shares = ", ".join(
        f"{k} {counts[k]} ({100 * counts[k] / total:.2f}% vs {100 * probs[k]:.2f}%)" if total else f"{k} 0"
        for k in counts
    )
    summary = (
        f"{'sample ratio mismatch' if mismatch else 'no sample ratio mismatch'}: {statistic_text} "
        f"(threshold {alpha:g}); {shares}"
    )
    return SRMResult(
        test=test,
        statistic=statistic,
        df=df,
        p_value=p,
        alpha=alpha,
        mismatch=mismatch,
        observed=counts,
        expected={k: total * probs[k] for k in counts},
        summary=summary,
    )
