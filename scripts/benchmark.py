"""`make bench`: every benchmark section in one run; results go to BENCHMARKS.md by hand.

    python scripts/benchmark.py                 # all sections
    python scripts/benchmark.py batch chunked   # some sections

Each section lives in scripts/bench_<name>.py and exposes ``run(args) -> None`` that prints
its own figures (medians of several runs, ratios measured side by side in the same run).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = ["batch", "chunked", "frontends"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", default=None, help=f"any of {SECTIONS} (default: all present)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import torch

    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; python {platform.python_version()}")
    chosen = args.sections or [s for s in SECTIONS if (HERE / f"bench_{s}.py").exists()]
    for name in chosen:
        module = importlib.import_module(f"bench_{name}")
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        module.run(args)
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
