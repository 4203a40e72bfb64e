"""`make bench` section "batch": the batch job against its parts and a naive loop.

A corpus is generated in a temporary folder (nested folders; 1-30 s files at 44.1 kHz, mono and
stereo, WAV and FLAC) and processed with the ``default`` model (resampled to 16 kHz,
``audio.channels=mono`` because the corpus mixes mono and stereo files). Measured in one run,
in rounds (a, b, c, d, then again), as audio seconds per wall-clock second:

    (a) decode only: ``soundfile.read`` of every file, one at a time
    (b) the stack alone: ``execute.whole.extract_batch`` on preloaded 16 kHz tensors, in batches of
        ``runtime.batch_size`` files of similar length (torch's default threads)
    (c) a naive loop: ``load_audio`` (decode, mono, resample), the stack, ``np.save``, one file
        at a time
    (d) the batch job: ``engines.job.run_batch`` in this process, default runtime settings (a fresh
        output folder each round; startup included, interpreter start-up not)

Each figure is also given per CPU second (process CPU time, all threads): on a shared machine
the wall-clock figures move with other people's load, the CPU figures much less; a job that
keeps 2 cores busy shows a wall-clock speed of about twice its per-CPU-second speed.

plus (a') decode and resample (``load_audio``) one file at a time, to show where time goes.
Reported: the median of each over the rounds, and the medians of the per-round ratios d/c and
d/min(a, b) (ratios of numbers measured side by side). Targets: d >= 1.5 c, d >= 0.8 min(a, b).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

SR = 44100


def make_corpus(root: Path, n_files: int, max_seconds: float, seed: int = 0) -> float:
    """Write the corpus; return its total duration in seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(n_files):
        seconds = float(rng.uniform(1.0, max_seconds))
        channels = 1 + i % 2
        frames = int(seconds * SR)
        t = np.arange(frames) / SR
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)[:, None]
        data = np.clip(tone + 0.05 * rng.standard_normal((frames, channels)), -1, 1).astype(np.float32)
        ext, subtype = ("flac", "PCM_16") if i % 3 == 0 else ("wav", "PCM_16")
        path = root / f"spk{i % 7}" / f"sess{i % 3}" / f"utt{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, SR, subtype=subtype)
        total += frames / SR
    return total


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def run(args) -> None:
    from conv_pipeline.load.audio import load_audio
    from conv_pipeline.execute.whole import extract_batch
    from conv_pipeline.source.inputs import find_inputs
    from conv_pipeline.engines.job import run_batch
    from conv_pipeline.config.schema import AudioConfig, BatchConfig, BatchOptions, OutputConfig, RuntimeConfig
    from conv_pipeline.stack.stack import build_stack
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.execute.whole import extract

    quick = bool(getattr(args, "quick", False))
    n_files, max_s, rounds = (40, 10.0, 2) if quick else (300, 30.0, 3)
    model = compose_config(["model=default"]).model
    audio = AudioConfig(sample_rate=16000, channels="mono")
    runtime = RuntimeConfig()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        corpus = tmp / "corpus"
        total = make_corpus(corpus, n_files, max_s)
        files = find_inputs(str(corpus)).paths
        print(f"corpus: {len(files)} files, {total / 3600:.2f} h at 44.1 kHz (mono+stereo, WAV+FLAC); "
              f"model=default (16 kHz), audio.channels=mono; runtime.batch_size={runtime.batch_size}, "
              f"runtime.num_workers={runtime.num_workers}; {os.cpu_count()} CPU(s); {rounds} round(s)")
        stack = build_stack(model, 1, seed=0).eval()
        preloaded = sorted((load_audio(p, audio).waveform for p in files), key=lambda w: w.shape[-1])

        def decode_only() -> None:
            for p in files:
                sf.read(p, dtype="float32", always_2d=True)

        def decode_resample() -> None:
            for p in files:
                load_audio(p, audio)

        def stack_alone() -> None:
            bs = runtime.batch_size
            for i in range(0, len(preloaded), bs):
                extract_batch(preloaded[i : i + bs], stack)

        naive_out = tmp / "naive"

        def naive() -> None:
            naive_out.mkdir(exist_ok=True)
            for i, p in enumerate(files):
                feats = extract(load_audio(p, audio), stack)
                np.save(naive_out / f"{i}.npy", feats.numpy())

        def batch_job() -> None:
            out = tmp / "feats"
            shutil.rmtree(out, ignore_errors=True)
            cfg = BatchConfig(
                input=str(corpus), model=model, audio=audio, output=OutputConfig(dir=str(out)),
                runtime=RuntimeConfig(), batch=BatchOptions(progress="none"),
            )
            summary = run_batch(cfg)
            assert summary.ok == len(files), summary.format()

        default_threads = torch.get_num_threads()

        def with_threads(fn: Callable[[], None], n: int) -> Callable[[], None]:
            def call() -> None:
                torch.set_num_threads(n)
                try:
                    fn()
                finally:
                    torch.set_num_threads(default_threads)

            return call

        # (b) and (c) call torch: measured with 1 thread and with torch's default, and the faster
        # is their figure (on a busy 2-core machine, 2 threads can be far slower); (a') is only
        # there to show where time goes, with 1 thread.
        parts = {
            "a": decode_only,
            "a'1": with_threads(decode_resample, 1),
            "b1": with_threads(stack_alone, 1),
            f"b{default_threads}": with_threads(stack_alone, default_threads),
            "c1": with_threads(naive, 1),
            f"c{default_threads}": with_threads(naive, default_threads),
            "d": batch_job,
        }
        labels = {
            "a": "(a)  decode only (soundfile, 1 file at a time)",
            "a'": "(a') decode + mono + resample (load_audio)",
            "b": "(b)  stack alone on preloaded tensors",
            "c": "(c)  naive loop (load, stack, np.save)",
            "d": "(d)  batch job (run_batch)",
        }
        decode_only()  # warm the page cache and the libraries once
        speeds: dict[str, list[float]] = {k: [] for k in parts}
        cpu: dict[str, list[float]] = {k: [] for k in parts}
        for _ in range(rounds):
            for key, fn in parts.items():
                wall, cpu_s = _timed(fn)
                speeds[key].append(total / wall)
                cpu[key].append(total / cpu_s)
        best: dict[str, list[float]] = {"a": speeds["a"], "d": speeds["d"]}
        for key in ("a'", "b", "c"):
            variants = [k for k in parts if k[:-1] == key or k == key]
            for k in variants:
                runs = ", ".join(f"{s:.0f}" for s in speeds[k])
                print(f"{labels[key] + f', {k[len(key):]} thread(s)':62s} {statistics.median(speeds[k]):7.0f} x  "
                      f"(runs: {runs}; per CPU second: {statistics.median(cpu[k]):.0f})")
            best[key] = [max(speeds[k][r] for k in variants) for r in range(rounds)]
        for key in ("a", "d"):
            runs = ", ".join(f"{s:.0f}" for s in speeds[key])
            print(f"{labels[key]:62s} {statistics.median(speeds[key]):7.0f} x  "
                  f"(runs: {runs}; per CPU second: {statistics.median(cpu[key]):.0f})")
        print("summary (audio seconds per second, median; a', b, c: the faster thread setting of each round):")
        for key in ("a", "a'", "b", "c", "d"):
            print(f"  {labels[key]:60s} {statistics.median(best[key]):7.0f}")
        d_c = [d / c for d, c in zip(best["d"], best["c"])]
        d_ab = [d / min(a, b) for d, a, b in zip(best["d"], best["a"], best["b"])]
        print(f"d / c          = {statistics.median(d_c):.2f}  (target >= 1.5; per round: {', '.join(f'{r:.2f}' for r in d_c)})")
        print(f"d / min(a, b)  = {statistics.median(d_ab):.2f}  (target >= 0.8; per round: {', '.join(f'{r:.2f}' for r in d_ab)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="batch benchmark section")
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args())
