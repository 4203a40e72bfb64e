"""Benchmark: our resampler (``conv_pipeline.load.signal.resample``, torchaudio's filter over its
non-zero taps) against ``torchaudio.functional.resample`` on the same input, and ``audio.resampler=soxr``.

For each rate pair, 1 and 2 torch threads: whole signal (``resample`` vs ``torchaudio.functional.resample``)
and streamed (``StreamingResampler`` fed ``--block`` seconds at a time vs torchaudio on the whole
signal, the thing it replaces in chunked runs), timed alternately within each round; the ratio is the
median over rounds of torchaudio's time / ours (the goal for 44.1 -> 16 kHz on one thread is >= 3).
soxr (if installed) is timed the same way. Also prints the largest difference to torchaudio.

    python scripts/bench_resample.py [--seconds 60] [--rounds 7] [--channels 2] [--block 2.0]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchaudio.functional as AF

from conv_pipeline.load.signal import resample
from conv_pipeline.load.stream import StreamingResampler, make_resampler

PAIRS = [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (16000, 22050), (44056, 16000)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def streamed(make, x: torch.Tensor, block: int) -> list[torch.Tensor]:
    """The blocks a chunked run gets (not concatenated: the chunked executor consumes them one by one)."""
    r = make()
    return [r.push(x[:, a : a + block]) for a in range(0, x.shape[1], block)] + [r.flush()]


def joined(y) -> torch.Tensor:
    return torch.cat(y, dim=1) if isinstance(y, list) else y


def timed(fn) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def one_pair(orig: int, new: int, args, soxr_ok: bool) -> None:
    x = (torch.rand(args.channels, int(args.seconds * orig), generator=torch.Generator().manual_seed(0)) * 2 - 1)
    block = max(1, int(args.block * orig))
    ref = AF.resample(x, orig, new)
    variants = {
        "whole": lambda: resample(x, orig, new),
        "stream": lambda: streamed(lambda: StreamingResampler(orig, new, args.channels), x, block),
    }
    if soxr_ok:
        variants["soxr whole"] = lambda: resample(x, orig, new, "soxr")
        variants["soxr stream"] = lambda: streamed(lambda: make_resampler(orig, new, args.channels, "soxr"), x, block)
    diffs = {k: float((joined(v()) - ref).abs().max()) for k, v in variants.items()}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        base: list[float] = []
        for _ in range(args.rounds):
            for name, fn in variants.items():  # torchaudio and ours alternately, within the round
                w_ref, c_ref = timed(lambda: AF.resample(x, orig, new))
                w_ours, c_ours = timed(fn)
                wall[name].append(w_ref / w_ours)
                cpu[name].append(c_ref / max(c_ours, 1e-9))
                base.append(w_ref)
        cells = "  ".join(f"{k} x{statistics.median(wall[k]):.2f} (cpu x{statistics.median(cpu[k]):.2f})" for k in variants)
        print(f"{orig:>6} -> {new:<6} {threads} thread(s)  torchaudio {statistics.median(base) * 1e3:7.1f} ms  {cells}")
    print(f"{'':17} max |ours - torchaudio|: " + "  ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--block", type=float, default=2.0, help="seconds per streamed block (runtime.chunk_seconds)")
    p.add_argument("--pairs", default="", help="e.g. 44100:16000,8000:16000 (default: the rates in use)")
    args = p.parse_args()
    pairs = [tuple(int(v) for v in s.split(":")) for s in args.pairs.split(",")] if args.pairs else PAIRS
    try:
        import soxr  # noqa: F401

        soxr_ok = True
    except ImportError:
        soxr_ok = False
        print("soxr not installed: its rows are skipped (pip install soxr)")
    print(f"{cpu_name()}, {torch.get_num_threads()} torch threads available; {args.seconds:g} s x {args.channels} "
          f"channel(s) of unit-scale noise, median of {args.rounds} rounds; ratio = torchaudio time / ours, wall (process CPU)")
    for orig, new in pairs:
        one_pair(orig, new, args, soxr_ok)


if __name__ == "__main__":
    main()
