"""Quality table of a checkpoint: prompt adherence, inpainting and outpainting, judged from the images.

``python -m huabu.deployments.backends.mmdit.eval.quality --model tiny-mmdit@v1`` (``make quality``). Every prompt,
case and seed is fixed, so the table is a pure function of the checkpoint and the sampling settings.
The judge is ``adherence.py`` (image analysis), never the model itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from huabu.deployments.backends.mmdit.checkpoint import ModelBundle, load_checkpoint
from huabu.deployments.backends.mmdit.eval.adherence import evaluate, score_inpaint_case, seam_score
from huabu.deployments.backends.mmdit.pipeline import Pipeline
from huabu.deployments.backends.mmdit.training import synthetic
from huabu.deployments.backends.requests import generation, inpainting, outpainting

# The sampling settings the table (and the docs) recommend for the bundled model.
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
CANVAS = (32, 32)
METRICS = ("color", "position", "color_position", "shape")


@dataclass(frozen=True)
class Settings:
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    repeats: int = 2  # scenes per held-out triple (each phrased in all three languages)
    edit_cases: int = 48  # inpainting and outpainting cases each
    seed: int = 0
    cache_threshold: float = 0.0  # step caching (cache_steps.threshold, mmdit/stepping.py); 0 = off


def _rates(flags: list[dict[str, Any]]) -> dict[str, float]:
    n = max(1, len(flags))
    return {m: sum(f[m] for f in flags) / n for m in flags[0]} | {"n": len(flags)}


def _score_split(
    pipe: Pipeline,
    settings: Settings,
    split: str,
    items: list[synthetic.EvalItem],
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    """Generate every item's prompt and add its judged flags to ``rows[split]`` and the language's row."""
    requests = [
        replace(
            generation(
                it.prompt,
                seed=settings.seed * 100_000 + i,
                size=CANVAS,
                steps=settings.steps,
                guidance=settings.guidance,
            ),
            cache_threshold=settings.cache_threshold,
        )
        for i, it in enumerate(items)
    ]
    for item, result in zip(items, pipe(requests), strict=True):
        assert result.pixels is not None
        s = evaluate(result.pixels, item.spec)
        flags = {"color": s.color, "position": s.position, "color_position": s.color_position, "shape": s.shape}
        if result.full_evaluations is not None:  # with step caching: the share of branch evaluations run
            rows.setdefault("full evaluations", []).append(
                {"full": result.full_evaluations / (settings.steps * (2 if settings.guidance != 1.0 else 1))}
            )
        rows.setdefault(split, []).append(flags)
        rows.setdefault(f"{split} {item.language}", []).append(flags)


def adherence_table(pipe: Pipeline, settings: Settings) -> dict[str, dict[str, float]]:
    """Colour / position / colour+position / shape rates on held-out and held-in prompts (the
    training templates), by language."""
    rows: dict[str, list[dict[str, bool]]] = {}
    n_triples = len(synthetic.HELD_OUT) * settings.repeats
    for held_out in (True, False):
        items = synthetic.eval_items(
            held_out=held_out,
            seed=settings.seed,
            per_triple=settings.repeats if held_out else 1,
            n_triples=None if held_out else n_triples,
        )
        _score_split(pipe, settings, "held-out" if held_out else "held-in", items, rows)
    return {name: _rates(flags) for name, flags in rows.items()}


def grammar_table(pipe: Pipeline, settings: Settings) -> dict[str, dict[str, float]]:
    """The same rates on prompts from the caption grammar: held-out triples in training templates,
    held-in triples in held-out templates and words, and both held out, by language."""
    rows: dict[str, list[dict[str, bool]]] = {}
    for split in synthetic.SPLITS:
        items = synthetic.grammar_eval_items(split, seed=settings.seed, per_triple=settings.repeats)
        _score_split(pipe, settings, split, items, rows)
    return {name: _rates(flags) for name, flags in rows.items()}


def inpaint_table(pipe: Pipeline, settings: Settings, scene_prompt: bool = False) -> dict[str, float]:
    """Share of inpainting cases whose new object lands inside the mask with the rest kept.

    The prompt names what to paint into the mask (as one asks an inpainting model); with
    ``scene_prompt`` it describes the whole edited scene, the kept object included, instead."""
    rng = np.random.default_rng(settings.seed + 1)
    cases = [synthetic.sample_inpaint_case(rng, CANVAS) for _ in range(settings.edit_cases)]
    requests = [
        inpainting(
            c.prompt if scene_prompt else c.object_prompt,
            c.image,
            c.mask,
            seed=settings.seed * 100_000 + 50_000 + i,
            steps=settings.steps,
            guidance=settings.guidance,
        )
        for i, c in enumerate(cases)
    ]
    scores = [
        score_inpaint_case(r.pixels, c) for r, c in zip(pipe(requests), cases, strict=True) if r.pixels is not None
    ]
    n = max(1, len(scores))
    return {
        "placed": sum(s.placed for s in scores) / n,
        "kept": sum(s.kept for s in scores) / n,
        "ok": sum(s.ok for s in scores) / n,
        "object_right": sum(s.adherence.ok for s in scores) / n,  # colour, shape, position and size of it
        "n": len(scores),
    }


def outpaint_table(pipe: Pipeline, settings: Settings) -> dict[str, float]:
    """Seam roughness of 32 px outpainting: mean colour step across the seam minus the original's own."""
    rng = np.random.default_rng(settings.seed + 2)
    cases = [synthetic.sample_outpaint_case(rng, CANVAS, grow=32) for _ in range(settings.edit_cases)]
    requests = [
        outpainting(
            c.prompt,
            c.image,
            left=c.left,
            right=c.right,
            top=c.top,
            bottom=c.bottom,
            seed=settings.seed * 100_000 + 70_000 + i,
            steps=settings.steps,
            guidance=settings.guidance,
        )
        for i, c in enumerate(cases)
    ]
    seams, kept = [], []
    for result, case in zip(pipe(requests), cases, strict=True):
        assert result.pixels is not None
        _, mask = case.canvas_and_mask()
        seams.append(seam_score(result.pixels, mask))
        # The original object must still be found where it was, on the grown canvas.
        kept.append(evaluate(result.pixels, case.spec).color)
    n = max(1, len(seams))
    return {
        "seam_excess": float(np.mean([s.excess for s in seams])),
        "seam": float(np.mean([s.seam for s in seams])),
        "interior": float(np.mean([s.interior for s in seams])),
        "seam_ok": sum(s.ok() for s in seams) / n,
        "n": len(seams),
    }


TABLES = ("templates", "grammar", "editing")


def measure(
    bundle: ModelBundle, settings: Settings = Settings(), device: str = "cpu", tables: Sequence[str] = TABLES
) -> dict[str, Any]:
    """The tables asked for: "templates" (v1's own held-out table), "grammar" (held-out templates
    and words), "editing" (inpainting and outpainting)."""
    pipe = Pipeline(bundle, device=device)
    report: dict[str, Any] = {"model": bundle.model_id, "settings": settings.__dict__}
    if "templates" in tables:
        report["adherence"] = adherence_table(pipe, settings)
    if "grammar" in tables:
        report["grammar"] = grammar_table(pipe, settings)
    if "editing" in tables:
        report["inpainting"] = inpaint_table(pipe, settings)
        report["inpainting_scene_prompt"] = inpaint_table(pipe, settings, scene_prompt=True)
        report["outpainting"] = outpaint_table(pipe, settings)
    return report


def format_table(report: dict[str, Any]) -> str:
    s = report["settings"]
    cached = f", cache_steps {s['cache_threshold']}" if s.get("cache_threshold") else ""
    lines = [f"{report['model']}  (steps {s['steps']}, guidance {s['guidance']}, seed {s['seed']}{cached})", ""]
    for table in ("adherence", "grammar"):
        if table not in report:
            continue
        width = 18 if table == "adherence" else 26
        lines.append(f"{'prompts':<{width}}{'n':>5}{'colour':>9}{'position':>10}{'col+pos':>9}{'shape':>8}")
        for name, r in report[table].items():
            if name == "full evaluations":
                lines.append(f"{name:<{width}}{r['n']:>5}{r['full']:>9.0%} of the uncached")
                continue
            lines.append(
                f"{name:<{width}}{r['n']:>5}{r['color']:>9.0%}{r['position']:>10.0%}"
                f"{r['color_position']:>9.0%}{r['shape']:>8.0%}"
            )
        lines.append("")
    if "outpainting" not in report:
        return "\n".join(lines).rstrip()
    op = report["outpainting"]
    for key, label in (("inpainting", "object prompt"), ("inpainting_scene_prompt", "scene prompt")):
        ip = report[key]
        lines.append(
            f"inpainting, {label} (n={ip['n']}): placed in mask {ip['placed']:.0%}, rest kept {ip['kept']:.0%}, "
            f"both {ip['ok']:.0%}, new object fully right {ip['object_right']:.0%}"
        )
    lines += [
        f"outpainting (n={op['n']}, +32 px): seam step {op['seam']:.1f} vs interior {op['interior']:.1f} "
        f"(excess {op['seam_excess']:+.1f}), seams within tolerance {op['seam_ok']:.0%}",
    ]
    return "\n".join(lines)


def sample_grid(
    bundle: ModelBundle,
    prompts: Sequence[str],
    path: Path,
    *,
    scale: int = 4,
    columns: int = 6,
    settings: Settings = Settings(),
) -> Path:
    """A PNG of samples (upscaled with NEAREST so 32 px images stay crisp) with each prompt underneath."""
    from PIL import Image, ImageDraw, ImageFont

    pipe = Pipeline(bundle)
    results = pipe(
        [
            generation(p, seed=i, size=CANVAS, steps=settings.steps, guidance=settings.guidance)
            for i, p in enumerate(prompts)
        ]
    )
    cell_w, img_h, text_h = CANVAS[1] * scale + 40, CANVAS[0] * scale, 34
    rows = -(-len(prompts) // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * (img_h + text_h + 8)), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(ImageFont)
    for i, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        x, y = (i % columns) * cell_w, (i // columns) * (img_h + text_h + 8)
        assert result.pixels is not None
        tile = Image.fromarray(result.pixels).resize((CANVAS[1] * scale, img_h), Image.Resampling.NEAREST)
        grid.paste(tile, (x + 20, y + 4))
        for j, line in enumerate(_wrap(prompt, 22)[:2]):
            draw.text((x + 4, y + img_h + 6 + 14 * j), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _font(image_font: Any) -> Any:
    for candidate in (
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/usr/share/fonts/truetype/arphic/uming.ttc",
    ):
        if Path(candidate).is_file():
            return image_font.truetype(candidate, 11)
    return image_font.load_default()


def _wrap(text: str, width: int) -> list[str]:
    """Wrap by display width (CJK characters count double)."""
    lines, line, used = [], "", 0
    for ch in text:
        w = 2 if ord(ch) > 0x2E80 else 1
        if used + w > width:
            lines.append(line)
            line, used = "", 0
        line += ch
        used += w
    return [*lines, line] if line else lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="huabu quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-mmdit@v1", help="name@version (bundled or under HUABU_MODEL_DIR)")
    p.add_argument("--n", type=int, default=Settings.repeats, help="scenes per held-out triple (x3 languages)")
    p.add_argument("--edit-cases", type=int, default=Settings.edit_cases)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-threshold", type=float, default=0.0, help="step caching (cache_steps.threshold); 0: off")
    p.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, of {', '.join(TABLES)} (default: all)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    p.add_argument("--grid", type=Path, default=None, help="also write a sample grid PNG (held-out prompts)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_checkpoint(args.model)
    settings = Settings(args.steps, args.guidance, args.n, args.edit_cases, args.seed, args.cache_threshold)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        p.error(f"--tables: unknown {unknown}; choose from {', '.join(TABLES)}")
    report = measure(bundle, settings, tables=tables)
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.grid is not None:
        items = synthetic.eval_items(held_out=True, seed=args.seed)
        sample_grid(bundle, [it.prompt for it in items[:18]], args.grid, settings=settings)
        print(f"grid: {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
