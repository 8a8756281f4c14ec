"""Run every benchmark in turn (``make bench``); each prints ratios against a baseline that it
measures in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "bench_transformer.py",
    "bench_serving.py",
    "bench_png.py",
    "bench_cache.py",
    "bench_filters.py",
    "bench_tracing.py",
    "bench_capacity.py",
    "bench_backends.py",
    "bench_hops.py",
    "bench_data.py",
]


def main() -> int:
    here = Path(__file__).parent
    failed = 0
    for name in BENCHES:
        if not (here / name).exists():
            continue
        print(f"\n=== {name} ===", flush=True)
        failed += subprocess.call([sys.executable, str(here / name), *sys.argv[1:]]) != 0
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
