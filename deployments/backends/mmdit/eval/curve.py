"""Quick eval of saved checkpoints (snapshots of one run): the learning curve's adherence columns.

``python -m huabu.deployments.backends.mmdit.eval.curve tiny-mmdit@v1 tiny-mmdit@v3-s100 ...`` prints one
CSV row per checkpoint: the training script's quick eval (held-out triples, 36 prompts) and, with
``t_``, the caption grammar's held-out templates (36 prompts), EMA weights, 20 steps, guidance 3.
Snapshots are looked up like any checkpoint (``HUABU_MODEL_DIR``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from huabu.deployments.backends.mmdit.checkpoint import find_checkpoint, load_checkpoint
from huabu.deployments.backends.mmdit.training.train import quick_eval


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="curve", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="name@version of each checkpoint")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "model,step,"
        + ",".join(f"{p}{m}" for p in ("", "t_") for m in ("color", "position", "color_position", "shape"))
    )
    for model_id in args.models:
        path = find_checkpoint(model_id)
        step = json.loads((path / "record.json").read_text()).get("steps", 0) if path else 0
        metrics = quick_eval(load_checkpoint(model_id), torch.device("cpu"), grammar=True)
        print(f"{model_id},{step}," + ",".join(f"{v:.4f}" for v in metrics.values()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
