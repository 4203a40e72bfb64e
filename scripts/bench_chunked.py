"""`make bench` section "chunked": chunked execution (``conv_pipeline.execute.chunked``) against
whole-file execution, for speed and for memory.

Speed, in this process, in rounds (every variant once per round, side by side), medians:

    (a) the wav2vec2-shaped stack (7 Conv1d layers of 512 channels, kernel/stride (10,5),
        (3,2) x4, (2,2) x2, GELU, bias; 16 kHz mono), on S seconds of a tone in noise:
        whole (``stack(x)``) vs chunked (``streaming.iter_features``) for several chunk lengths;
    (b) the same stack through ``engines.single.run`` on a 16 kHz WAV, ``runtime.chunk_seconds=null``
        vs chunked (the ``model.layers`` override printed below; decode and write included,
        interpreter start-up not);
    (c) torchaudio's own wav2vec2 feature extractor
        (``torchaudio.models.wav2vec2.components._get_feature_extractor("layer_norm", ...)``,
        whole input) vs our stack with ``norm: layer_norm`` on every layer and the same weights,
        chunked (and whole, for reference); outputs compared;
    (d) the ``default`` model (48 kHz stereo file resampled to 16 kHz) through
        ``extract_file_chunked`` for several chunk lengths vs ``load_audio`` + ``extract``;
    (e) the CLI in whole processes, ``model=wav2vec2_base`` on a 180 s 16 kHz WAV
        (``--quick``: 30 s), default ``runtime.chunk_seconds`` vs ``null``: wall and user CPU.

GFLOP/s counts the convolutions only (``geometry.conv_flops_per_frame`` x frames per layer).

Memory, in child processes (peak resident set size, ``ru_maxrss`` of the child): the CLI
``python -m conv_pipeline input=F`` with the ``default`` model on 48 kHz stereo 16-bit WAVs
written block by block into a temporary folder (deleted afterwards): a long one (2 hours,
``--quick``: 10 minutes) chunked, a short one (10 minutes, ``--quick``: 2) whole and chunked
(outputs compared), and ``import torch`` alone for scale. Target: long file under 600 MB.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
W2V_SHAPES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
CHUNKS = (0.5, 1.0, 2.0, 4.0)


def w2v_layers_override(norm: str | None = None) -> str:
    """The wav2vec2-shaped stack as a ``model.layers`` override."""
    extra = f",norm:{norm}" if norm else ""
    return "model.layers=[" + ",".join(
        f"{{out_channels:512,kernel_size:{k},stride:{s},activation:gelu{extra}}}" for k, s in W2V_SHAPES
    ) + "]"


def signal(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``(frames, channels)`` float32: a tone in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    return x.astype(np.float32)


def write_long_wav(path: Path, seconds: float, sr: int = 48000, channels: int = 2) -> None:
    """A 16-bit WAV written 10 s at a time (memory stays small whatever the length)."""
    block = signal(10.0, sr, channels)
    with sf.SoundFile(str(path), "w", sr, channels, "PCM_16") as f:
        left = int(seconds * sr)
        while left > 0:
            f.write(block[: min(left, block.shape[0])])
            left -= block.shape[0]


def stack_flops(stack, frames: int) -> int:
    from conv_pipeline.geometry import conv_flops_per_frame

    lengths = stack.geometry.lengths(frames)
    return sum(
        conv_flops_per_frame(l.conv.in_channels, l.conv.out_channels, l.conv.kernel_size[0], l.conv.groups, l.conv.bias is not None)
        * lengths[i + 1]
        for i, l in enumerate(stack.layers)
    )


def rounds(variants: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Wall seconds of every variant, ``n`` rounds, each round running all variants in turn."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of slow/fast, each ratio measured within one round."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast]))


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# Runs in the measured process: ``python -m conv_pipeline ARGS`` (or ``-c CODE``), and at its last
# atexit hook (after Hydra's and logging's) writes its peak RSS so far (VmHWM) to $BENCH_HWM.
_HOOK = """
import atexit, os, runpy, sys
def _hwm():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    with open(os.environ["BENCH_HWM"], "w") as f:
        f.write(status["VmHWM"].split()[0])
atexit.register(_hwm)
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    sys.argv = ["conv_pipeline", *sys.argv[1:]]
    runpy.run_module("conv_pipeline", run_name="__main__", alter_sys=True)
"""


def peak_rss(args: list[str], tmp: Path) -> tuple[float, float, float]:
    """Run the CLI with ``args`` (or ``["-c", code]``) in a grandchild. Returns its peak RSS in MB
    as the kernel reports it when it exits (``ru_maxrss``), its peak before interpreter teardown
    (VmHWM at the last atexit hook), and its wall seconds. A fresh wrapper per measurement, since
    RUSAGE_CHILDREN's ru_maxrss is the largest of all the children a process waited for."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "if p.returncode: sys.exit(p.stderr[-2000:])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)\n"
    )
    hwm = tmp / "hwm.txt"
    env = {**os.environ, "BENCH_HWM": str(hwm)}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-c", _HOOK, *args],
        cwd=str(ROOT), capture_output=True, text=True, env=env,
    )
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr}")
    kb, seconds = out.stdout.split()[-2:]
    return int(kb) / 1024, int(hwm.read_text()) / 1024, float(seconds)


# ---------------------------------------------------------------- sections
def speed_stack(seconds: float, n_rounds: int) -> None:
    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.execute.chunked import iter_features

    torch.manual_seed(0)
    stack = ConvStack(1, [LayerConfig(512, k, s, activation="gelu") for k, s in W2V_SHAPES]).eval()
    x = torch.from_numpy(signal(seconds, 16000).T.copy())  # (1, T)
    flops = stack_flops(stack, x.shape[1])

    def whole():
        with torch.inference_mode():
            return stack(x[None])[0]

    def chunked(c: float):
        return torch.cat(list(iter_features(x.split(int(c * 16000), dim=1), stack)), dim=1)

    ref = whole()
    diffs = {c: rel_diff(chunked(c), ref) for c in CHUNKS}
    variants = {"whole": whole, **{f"chunk {c:g} s": (lambda c=c: chunked(c)) for c in CHUNKS}}
    times = rounds(variants, n_rounds)
    print(f"(a) wav2vec2-shaped stack, {seconds:g} s of 16 kHz mono, {flops / 1e9:.1f} GFLOP per run, "
          f"median of {n_rounds} rounds ({torch.get_num_threads()} threads):")
    for name, ts in times.items():
        t = statistics.median(ts)
        extra = "" if name == "whole" else (
            f"  {ratio(times, 'whole', name):.2f}x whole (per-round ratio)  max rel diff {diffs[float(name.split()[1])]:.1e}"
        )
        print(f"    {name:>12}: {t:6.3f} s  {seconds / t:6.1f}x real time  {flops / t / 1e9:6.1f} GFLOP/s{extra}")
    # On a busy machine every parallel region of 2 threads waits for a descheduled thread: many
    # small per-chunk ops suffer more than a few large ones. One thread shows the work itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = rounds({"whole": whole, "chunk 1 s": lambda: chunked(1.0)}, max(2, n_rounds // 2))
    finally:
        torch.set_num_threads(threads)
    t_whole, t_chunk = statistics.median(times["whole"]), statistics.median(times["chunk 1 s"])
    print(f"    1 thread: whole {seconds / t_whole:.1f}x real time, chunk 1 s {seconds / t_chunk:.1f}x real time "
          f"({ratio(times, 'whole', 'chunk 1 s'):.2f}x whole, {flops / t_chunk / 1e9:.1f} GFLOP/s)")


def speed_pipeline(seconds: float, n_rounds: int, tmp: Path) -> None:
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.engines.single import run

    wav = tmp / "w2v.wav"
    sf.write(str(wav), signal(seconds, 16000), 16000, subtype="PCM_16")
    base = [f"input={wav}", w2v_layers_override(), "overwrite=true"]
    outs: dict[str, Path] = {}

    def make(chunk: str) -> Callable[[], object]:
        cfg = compose_config([*base, f"output.dir={tmp / ('pipe_' + chunk)}", f"runtime.chunk_seconds={chunk}"])

        def call():
            outs[chunk] = run(cfg).output

        return call

    chunks = ["null", "1", "2"]
    times = rounds({c: make(c) for c in chunks}, n_rounds)
    ref = np.load(outs["null"])
    print(f"(b) the same stack through engines.single.run on a {seconds:g} s 16 kHz WAV (decode and write included):")
    print(f"    override: {w2v_layers_override()}")
    for c in chunks:
        t = statistics.median(times[c])
        extra = "" if c == "null" else f"  {ratio(times, 'null', c):.2f}x whole  max rel diff {rel_diff(np.load(outs[c]), ref):.1e}"
        print(f"    runtime.chunk_seconds={c:>4}: {t:6.3f} s  {seconds / t:6.1f}x real time{extra}")


def speed_torchaudio(seconds: float, n_rounds: int) -> None:
    from torchaudio.models.wav2vec2.components import _get_feature_extractor

    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.execute.chunked import iter_features

    torch.manual_seed(0)
    theirs = _get_feature_extractor("layer_norm", [(512, k, s) for k, s in W2V_SHAPES], bias=True).eval()
    ours = ConvStack(1, [LayerConfig(512, k, s, activation="gelu", norm="layer_norm") for k, s in W2V_SHAPES]).eval()
    with torch.no_grad():  # the same weights
        for mine, block in zip(ours.layers, theirs.conv_layers):
            mine.conv.weight.copy_(block.conv.weight)
            mine.conv.bias.copy_(block.conv.bias)
            mine.norm.norm.weight.copy_(block.layer_norm.weight)
            mine.norm.norm.bias.copy_(block.layer_norm.bias)
    x = torch.from_numpy(signal(seconds, 16000).T.copy())  # (1, T)
    flops = stack_flops(ours, x.shape[1])

    def torchaudio_whole():
        with torch.inference_mode():
            return theirs(x, None)[0][0].t()  # (1, F, 512) -> (512, F)

    def ours_whole():
        with torch.inference_mode():
            return ours(x[None])[0]

    def ours_chunked():
        return torch.cat(list(iter_features(x.split(16000, dim=1), ours)), dim=1)

    ref = torchaudio_whole()
    d_whole, d_chunk = rel_diff(ours_whole(), ref), rel_diff(ours_chunked(), ref)
    times = rounds({"torchaudio": torchaudio_whole, "ours whole": ours_whole, "ours chunk 1 s": ours_chunked}, n_rounds)
    print(f"(c) torchaudio's wav2vec2 feature extractor (layer_norm mode) vs our stack, same weights, {seconds:g} s:")
    for name, ts in times.items():
        t = statistics.median(ts)
        extra = "" if name == "torchaudio" else (
            f"  {ratio(times, 'torchaudio', name):.2f}x torchaudio  max rel diff {d_whole if 'whole' in name else d_chunk:.1e}"
        )
        print(f"    {name:>14}: {t:6.3f} s  {seconds / t:6.1f}x real time  {flops / t / 1e9:6.1f} GFLOP/s{extra}")


def speed_default_model(wav: Path, seconds: float, n_rounds: int) -> None:
    from conv_pipeline.load.audio import load_audio
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.execute.whole import extract
    from conv_pipeline.execute.stream_file import extract_file_chunked

    cfg = compose_config([])
    stack = ConvStack.from_config(cfg.model, in_channels=2).eval()
    variants: dict[str, Callable[[], object]] = {"whole": lambda: extract(load_audio(wav, cfg.audio), stack)}
    for c in (1.0, 2.0, 5.0, 10.0):
        variants[f"chunk {c:g} s"] = lambda c=c: extract_file_chunked(wav, stack, cfg.audio, c)
    times = rounds(variants, n_rounds)
    print(f"(d) default model (48 kHz stereo -> 16 kHz, 400/160 window), {seconds:g} s file, decode included:")
    for name, ts in times.items():
        t = statistics.median(ts)
        extra = "" if name == "whole" else f"  {ratio(times, 'whole', name):.2f}x whole"
        print(f"    {name:>12}: {t:6.3f} s  {seconds / t:7.1f}x real time{extra}")


def speed_cli(seconds: float, n_rounds: int, tmp: Path) -> None:
    """(e) ``python -m conv_pipeline input=F model=wav2vec2_base``, default chunks vs
    ``runtime.chunk_seconds=null``, whole processes alternating; wall and user CPU of each."""
    import resource

    wav = tmp / "w2v_cli.wav"
    sf.write(str(wav), signal(seconds, 16000), 16000, subtype="PCM_16")

    def one(extra: list[str]) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        t = time.perf_counter()
        args = [sys.executable, "-m", "conv_pipeline", f"input={wav}", "model=wav2vec2_base", f"output.dir={tmp / 'cli'}", "overwrite=true"]
        subprocess.run(args + extra, cwd=str(ROOT), check=True, capture_output=True)
        return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before

    pairs = [(one(["runtime.chunk_seconds=null"]), one([])) for _ in range(n_rounds)]
    speed = statistics.median(w[0] / c[0] for w, c in pairs)
    cpu = statistics.median(c[1] / w[1] for w, c in pairs)
    print(f"(e) CLI, model=wav2vec2_base, {seconds:g} s 16 kHz WAV, whole processes, median of {n_rounds} rounds: "
          f"whole {statistics.median(w[0] for w, _ in pairs):.1f} s, chunked (default) {statistics.median(c[0] for _, c in pairs):.1f} s; "
          f"chunked {speed:.2f}x faster, {cpu:.2f}x the user CPU of whole (goal >= 1.5x faster)")


def memory(long_s: float, short_s: float, tmp: Path) -> None:
    from conv_pipeline.config.schema import RuntimeConfig

    default_chunk = RuntimeConfig().chunk_seconds
    short, long = tmp / "short.wav", tmp / "long.wav"
    t0 = time.perf_counter()
    write_long_wav(short, short_s)
    write_long_wav(long, long_s)
    print(f"memory: peak RSS of `python -m conv_pipeline input=F` (default model: 48 kHz stereo 16-bit WAV -> 16 kHz),\n"
          f"    each in its own process: at exit (ru_maxrss) / before interpreter teardown (VmHWM at the last atexit);\n"
          f"    default runtime.chunk_seconds={default_chunk}; WAVs written in {time.perf_counter() - t0:.0f} s")
    base_exit, base_hwm, _ = peak_rss(["-c", "import torch, conv_pipeline.__main__"], tmp)
    print(f"    {'import torch + conv_pipeline, nothing else':<48}: {base_exit:5.0f} / {base_hwm:5.0f} MB")
    rows = [(short, short_s, "null"), (short, short_s, "1"), (short, short_s, "10"), (long, long_s, None)]
    for wav, secs, chunk in rows:
        out = tmp / f"out_{wav.stem}_{chunk}"
        args = [f"input={wav}", f"output.dir={out}"] + ([f"runtime.chunk_seconds={chunk}"] if chunk else [])
        at_exit, hwm, wall = peak_rss(args, tmp)
        label = f"{secs / 60:g} min ({wav.stat().st_size / 2**20:.0f} MB WAV), chunk_seconds={chunk or 'default'}"
        print(f"    {label:<48}: {at_exit:5.0f} / {hwm:5.0f} MB  (+{hwm - base_hwm:4.0f} MB over import), "
              f"{wall:5.1f} s ({secs / wall:4.0f}x real time)")
    whole = np.load(tmp / "out_short_null" / "short.npy")
    for chunk in ("1", "10"):
        got = np.load(tmp / f"out_short_{chunk}" / "short.npy")
        print(f"    short file, chunk {chunk} s vs whole: shape {got.shape} vs {whole.shape}, max rel diff {rel_diff(got, whole):.1e}")
    got = np.load(tmp / "out_long_None" / "long.npy", mmap_mode="r")
    print(f"    long file output {got.shape} ({got.nbytes / 2**20:.0f} MB on disk)")


def run(args) -> None:
    quick = bool(getattr(args, "quick", False))
    n_rounds = 2 if quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="bench_chunked_"))
    try:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        speed_stack(10.0 if quick else 60.0, n_rounds)
        speed_pipeline(10.0 if quick else 60.0, n_rounds, tmp)
        speed_torchaudio(10.0 if quick else 60.0, n_rounds)
        speed_cli(30.0 if quick else 180.0, 2 if quick else 5, tmp)
        short_s, long_s = (120.0, 600.0) if quick else (600.0, 7200.0)
        memory(long_s, short_s, tmp)
        speed_default_model(tmp / "short.wav", short_s, 2 if quick else 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args())
