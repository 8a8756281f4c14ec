"""The rollout report: a text table and PNG plots drawn with Pillow (no plotting library needed).

- ``traffic.png``: the canary's traffic share over time (a step line; each change is a decision);
- ``latency.png``: the latency distribution of each variant (histogram over log-spaced buckets);
- ``quality.png``: the mean quality score of each variant with its 95 % interval, and the
  acceptance rate from feedback where there is any.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from huabu.sdk.types import RolloutInfo, VariantStats

COLORS = {"stable": (52, 101, 164), "canary": (204, 102, 0)}
W, H, PAD = 640, 360, 56
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


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
            ci = "" if v.quality_ci_low is None else f" [{v.quality_ci_low:.3f}, {v.quality_ci_high:.3f}]"
            quality = f"{v.quality_mean:.3f}{ci}"
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


class Chart:
    """A plot area with linear (or log-x) axes on a white canvas."""

    def __init__(self, title: str, x_range: tuple[float, float], y_range: tuple[float, float], *, log_x: bool = False):
        self.image = Image.new("RGB", (W, H), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font: Font = ImageFont.load_default()
        self.log_x = log_x
        self.x0, self.x1 = (math.log10(max(v, 1e-9)) for v in x_range) if log_x else x_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        self.y0, self.y1 = y_range if y_range[1] > y_range[0] else (y_range[0], y_range[0] + 1)
        self.draw.text((PAD, 12), title, fill="black", font=self.font)
        self.draw.rectangle((PAD, PAD, W - PAD, H - PAD), outline=(160, 160, 160))

    def px(self, x: float, y: float) -> tuple[float, float]:
        if self.log_x:
            x = math.log10(max(x, 1e-9))
        fx = (x - self.x0) / (self.x1 - self.x0)
        fy = (y - self.y0) / (self.y1 - self.y0)
        return PAD + fx * (W - 2 * PAD), H - PAD - fy * (H - 2 * PAD)

    def y_ticks(self, values: Sequence[float], fmt: str) -> None:
        for v in values:
            _, y = self.px(self.x0 if not self.log_x else 10**self.x0, v)
            self.draw.line((PAD - 4, y, PAD, y), fill="black")
            self.draw.text((4, y - 6), format(v, fmt), fill="black", font=self.font)

    def x_label(self, text: str) -> None:
        self.draw.text((W // 2 - 40, H - PAD + 24), text, fill="black", font=self.font)

    def x_tick(self, x: float, text: str) -> None:
        px, _ = self.px(x, self.y0)
        self.draw.line((px, H - PAD, px, H - PAD + 4), fill="black")
        self.draw.text((px - 12, H - PAD + 8), text, fill="black", font=self.font)

    def legend(self, names: Sequence[str]) -> None:
        for i, name in enumerate(names):
            x = W - PAD - 110 + 60 * i
            self.draw.rectangle((x, 14, x + 10, 24), fill=COLORS.get(name, (90, 90, 90)))
            self.draw.text((x + 14, 12), name, fill="black", font=self.font)

    def save(self, path: Path) -> Path:
        self.image.save(path, format="PNG")
        return path


def traffic_plot(info: RolloutInfo, path: Path, now: float | None = None) -> Path:
    points = list(info.traffic) or [(info.created_at, info.steps[0])]
    end = max(now or time.time(), points[-1][0] + 1) if info.status in ("running", "paused") else points[-1][0] + 1
    t0 = points[0][0]
    chart = Chart(f"canary traffic share: {info.id} ({info.status})", (0, end - t0), (0, 100))
    chart.y_ticks([0, 25, 50, 75, 100], ".0f")
    chart.x_label("seconds since start")
    for frac in (0.0, 0.5, 1.0):
        chart.x_tick(frac * (end - t0), f"{frac * (end - t0):.0f}")
    steps = [*points, (end, points[-1][1])]
    for (ta, pa), (tb, _) in itertools.pairwise(steps):  # hold each share until the next decision
        chart.draw.line([chart.px(ta - t0, pa), chart.px(tb - t0, pa)], fill=COLORS["canary"], width=3)
    for (_, pa), (tb, pb) in itertools.pairwise(points):  # then jump
        chart.draw.line([chart.px(tb - t0, pa), chart.px(tb - t0, pb)], fill=COLORS["canary"], width=3)
    return chart.save(path)


def latency_plot(variants: Sequence[VariantStats], path: Path) -> Path:
    buckets = [(v, b) for v in variants for b in v.latency_histogram]
    if not buckets:
        chart = Chart("latency: no completed requests yet", (1, 10), (0, 1), log_x=True)
        return chart.save(path)
    low = min(b.low_ms for _, b in buckets)
    high = max(b.high_ms for _, b in buckets)
    # Each variant's histogram as a share of its requests, so unequal traffic compares fairly.
    totals = {v.variant: sum(b.count for b in v.latency_histogram) or 1 for v in variants}
    top = max(b.count / totals[v.variant] for v, b in buckets)
    chart = Chart("latency distribution per variant (share of requests)", (max(low, 0.5), high), (0, top), log_x=True)
    chart.y_ticks([0, top / 2, top], ".2f")
    chart.x_label("latency, ms (log scale)")
    decade = 10 ** math.floor(math.log10(max(low, 0.5)))
    while decade <= high:
        if decade >= max(low, 0.5):
            chart.x_tick(decade, f"{decade:g}")
        decade *= 10
    for v, b in buckets:
        x_a, y_a = chart.px(max(b.low_ms, 0.5), b.count / totals[v.variant])
        x_b, y_b = chart.px(b.high_ms, 0)
        fill = COLORS.get(v.variant, (90, 90, 90))
        chart.draw.rectangle((x_a, y_a, max(x_a + 1, x_b), y_b), outline=fill)  # outlines: both stay visible
        chart.draw.line((x_a, y_a, x_b, y_a), fill=fill, width=3)
    chart.legend([v.variant for v in variants])
    return chart.save(path)


def quality_plot(variants: Sequence[VariantStats], path: Path) -> Path:
    chart = Chart("quality score per variant (mean, 95% interval); acceptance rate", (0, 2 * len(variants)), (0, 1))
    chart.y_ticks([0, 0.25, 0.5, 0.75, 1.0], ".2f")
    for i, v in enumerate(variants):
        fill = COLORS.get(v.variant, (90, 90, 90))
        x = 2 * i + 0.6
        if v.quality_mean is not None:
            cx, cy = chart.px(x, v.quality_mean)
            chart.draw.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), fill=fill)
            if v.quality_ci_low is not None and v.quality_ci_high is not None:
                _, lo = chart.px(x, max(0.0, v.quality_ci_low))
                _, hi = chart.px(x, min(1.0, v.quality_ci_high))
                chart.draw.line((cx, lo, cx, hi), fill=fill, width=2)
                chart.draw.line((cx - 8, lo, cx + 8, lo), fill=fill, width=2)
                chart.draw.line((cx - 8, hi, cx + 8, hi), fill=fill, width=2)
        if v.acceptance_rate is not None:
            ax, ay = chart.px(x + 0.7, v.acceptance_rate)
            chart.draw.rectangle((ax - 5, ay - 5, ax + 5, ay + 5), outline=fill, width=2)
        chart.x_tick(x + 0.35, f"{v.variant} (n={v.quality_n})")
    chart.legend([v.variant for v in variants])
    return chart.save(path)


def write_plots(info: RolloutInfo, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        traffic_plot(info, out / "traffic.png"),
        latency_plot(info.variants, out / "latency.png"),
        quality_plot(info.variants, out / "quality.png"),
    ]
