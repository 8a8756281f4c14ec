"""The rollout report: a text table and PNG plots drawn with matplotlib (the ``report`` extra).

- ``traffic.png``: the canary's share of traffic over time, a step line with a marker at every
  decision that changed it;
- ``latency.png``: the latency distribution of each variant as a cumulative share of its requests
  (a CDF over the server's log-spaced buckets, so unequal traffic compares fairly and neither
  variant hides the other), p95 marked;
- ``quality.png``: the mean prompt-adherence score of each variant with its 95 % interval, and
  beside it the acceptance rate from ``/v1/feedback`` with its 95 % interval (labelled simulated
  when the walkthrough's users gave it). Intervals are clamped to [0, 1].

matplotlib runs on its Agg backend (files only, no display), imported only when plots are drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huabu.sdk.types import RolloutInfo, VariantStats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"stable": "#3465a4", "canary": "#cc6600"}
SIZE_IN, DPI = (6.4, 3.6), 100  # 640 x 360 pixels
REPORT_EXTRA_HINT = "the rollout plots need matplotlib: pip install 'huabu[report]'"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def quality_interval(v: VariantStats) -> tuple[float, float] | None:
    """The 95 % interval of the mean score, clamped to the score's range [0, 1]."""
    if v.quality_ci_low is None or v.quality_ci_high is None:
        return None
    return _clamp(v.quality_ci_low), _clamp(v.quality_ci_high)


def acceptance_interval(v: VariantStats, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson's 95 % interval of the acceptance rate: inside [0, 1] by construction, sane at small n."""
    n, k = v.feedback_total, v.feedback_accepted
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return _clamp(centre - half), _clamp(centre + half)


def table(info: RolloutInfo) -> str:
    """The rollout, its per-variant numbers and its decisions (newest last)."""
    lines = [
        f"rollout {info.id}: {info.status}{' (active)' if info.active else ''}, canary {info.canary_percent:g}% "
        f"(step {info.step + 1} of {len(info.steps)}: {' -> '.join(f'{s:g}' for s in info.steps)} %)",
        f"  stable {info.stable_model}   canary {info.canary_model}",
        "",
        f"  {'variant':<8} {'model':<18} {'weight':>7} {'requests':>8} {'errors':>8} {'blocked':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'quality (95% CI)':>22} {'accepted':>9}",
    ]
    for v in info.variants:
        quality = "-"
        if v.quality_mean is not None:
            ci = quality_interval(v)
            quality = f"{v.quality_mean:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
        lines.append(
            f"  {v.variant:<8} {(v.model or '-'):<18} {v.weight_percent:>6g}% {v.requests:>8} "
            f"{_pct(v.error_rate):>8} {_pct(v.filter_block_rate):>8} {_num(v.latency_p50_ms):>8} "
            f"{_num(v.latency_p95_ms):>8} {quality:>22} {_pct(v.acceptance_rate):>9}"
        )
    if info.last_decision is not None:
        lines += ["", "  checks at the last decision:"]
        for check in info.last_decision.checks:
            lines.append(f"    {check.status:<17} {check.detail}")
    lines += ["", "  decisions:"]
    for d in info.history:
        when = time.strftime("%H:%M:%S", time.localtime(d.at))
        lines.append(f"    {when} {d.action:<8} {d.from_percent:g}% -> {d.to_percent:g}%  [{d.actor}] {d.reason}")
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError(REPORT_EXTRA_HINT) from exc
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=DPI)
    _pyplot().close(fig)
    return path


def traffic_plot(info: RolloutInfo, path: Path, now: float | None = None) -> Path:
    plt = _pyplot()
    points = list(info.traffic) or [(info.created_at, info.steps[0])]
    t0 = points[0][0]
    running = info.status in ("running", "paused")
    end = max(now or time.time(), points[-1][0] + 1) if running else points[-1][0] + 1
    xs = [t - t0 for t, _ in points] + [end - t0]
    ys = [p for _, p in points] + [points[-1][1]]
    fig, ax = plt.subplots(figsize=SIZE_IN, layout="constrained")
    ax.step(xs, ys, where="post", color=COLORS["canary"], linewidth=2, label=f"canary {info.canary_model}")
    ax.plot(xs[1:-1], ys[1:-1], "o", color=COLORS["canary"], markersize=5, label="a decision changed the split")
    for step in info.steps:
        ax.axhline(step, color="0.85", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 105)
    ax.set_xlim(0, max(xs[-1], 1.0))
    ax.set_xlabel("seconds since the rollout started")
    ax.set_ylabel("canary share of traffic (%)")
    ax.set_title(f"traffic: rollout {info.id} ({info.status})", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def latency_plot(variants: Sequence[VariantStats], path: Path) -> Path:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE_IN, layout="constrained")
    ax.set_title("latency per variant: cumulative share of completed requests", fontsize=10)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests at or below")
    ax.set_ylim(0, 1.02)
    drawn = False
    for v in variants:
        buckets = [b for b in v.latency_histogram if b.count > 0]
        total = sum(b.count for b in buckets)
        if not total:
            continue
        xs, ys, seen = [max(buckets[0].low_ms, 0.1)], [0.0], 0
        for b in buckets:
            seen += b.count
            xs.append(max(b.high_ms, 0.1))
            ys.append(seen / total)
        colour = COLORS.get(v.variant, "0.4")
        p95 = f", p95 {v.latency_p95_ms:.0f} ms" if v.latency_p95_ms is not None else ""
        ax.step(xs, ys, where="post", color=colour, linewidth=2, label=f"{v.variant} (n={total}{p95})")
        if v.latency_p95_ms is not None:
            ax.axvline(v.latency_p95_ms, color=colour, linestyle="--", linewidth=1)
        drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # 1-2-5 labels only, never "3x10^2"
        ax.axhline(0.95, color="0.6", linestyle=":", linewidth=1, label="95 % of requests (dashed: each p95)")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no completed requests yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def quality_plot(variants: Sequence[VariantStats], path: Path, *, simulated_feedback: bool = False) -> Path:
    plt = _pyplot()
    fig, (q_ax, a_ax) = plt.subplots(1, 2, figsize=SIZE_IN, layout="constrained", sharey=True)
    source = "SIMULATED feedback" if simulated_feedback else "from /v1/feedback"
    q_ax.set_title("prompt-adherence score\nmean, 95 % interval", fontsize=9)
    a_ax.set_title(f"acceptance rate ({source})\nshare kept, 95 % interval", fontsize=9)
    q_ax.set_ylabel("score / rate (0-1)")
    for ax, value, interval, count in (
        (q_ax, lambda v: v.quality_mean, quality_interval, lambda v: v.quality_n),
        (a_ax, lambda v: v.acceptance_rate, acceptance_interval, lambda v: v.feedback_total),
    ):
        labels = []
        for i, v in enumerate(variants):
            labels.append(f"{v.variant}\n{v.model or ''}\nn={count(v)}")
            mean, ci = value(v), interval(v)
            if mean is None:
                ax.text(i, 0.5, "no data", ha="center", va="center", fontsize=8, color="0.4")
                continue
            err = [[mean - ci[0]], [ci[1] - mean]] if ci else None
            colour = COLORS.get(v.variant, "0.4")
            ax.errorbar([i], [mean], yerr=err, fmt="o", color=colour, capsize=6, markersize=7, label=v.variant)
        ax.set_xticks(range(len(variants)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_ylim(0, 1.02)
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def write_plots(info: RolloutInfo, out: Path, *, simulated_feedback: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        traffic_plot(info, out / "traffic.png"),
        latency_plot(info.variants, out / "latency.png"),
        quality_plot(info.variants, out / "quality.png", simulated_feedback=simulated_feedback),
    ]
