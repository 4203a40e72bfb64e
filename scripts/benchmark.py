"""`make bench`: every benchmark section in one run; results go to BENCHMARKS.md by hand.

    python scripts/benchmark.py                 # all sections
    python scripts/benchmark.py batch chunked   # some sections
    python scripts/benchmark.py peers --quick   # a smoke run of one section

Each section lives in scripts/bench_<name>.py and exposes ``run(args) -> None`` that prints
its own figures (medians of several runs, ratios measured side by side in the same run); a
section with options of its own also exposes ``add_arguments(parser)``.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = ["batch", "chunked", "frontends", "resample", "startup", "peers", "formats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", default=None, help=f"any of {SECTIONS} (default: all present)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    sys.path.insert(0, str(HERE))
    present = [s for s in SECTIONS if (HERE / f"bench_{s}.py").exists()]
    modules = {name: importlib.import_module(f"bench_{name}") for name in present}
    for module in modules.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args()
    unknown = [s for s in args.sections or [] if s not in modules]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {present}")
    chosen = {name: modules[name] for name in args.sections or present}
    import torch
    from peers.harness import machine

    print(f"machine: {machine()}; {platform.machine()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; python {platform.python_version()}")
    for name, module in chosen.items():
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        module.run(args)
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
