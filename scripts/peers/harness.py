"""The measuring pieces of scripts/bench_peers.py (the ``peers`` section of ``make bench``): the
machine line, the seeded test corpus, whole-process runs timed from outside, rounds that
alternate the variants, and the output agreement check.

Every figure is of a whole process started with ``subprocess``: wall time around it, its CPU time
(user + system) as the delta of ``resource.getrusage(RUSAGE_CHILDREN)`` across it (so worker
processes it waited for count too), and its peak resident set size (``ru_maxrss`` of the child
from ``os.wait4``: the largest of the child and the descendants it waited for, not their sum).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else lscpu, else platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """``CPU model, N CPUs (M usable); date`` for every printed figure."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{cpu_model()}, {os.cpu_count()} CPU(s) ({usable} usable); {now}"


# ---------------------------------------------------------------------------------------------
# corpus


@dataclass(frozen=True)
class CorpusSpec:
    """``n_files`` files of ``min_seconds``..``max_seconds`` (mean about ``mean_seconds``), in turn
    16 kHz mono WAV, 44.1 kHz stereo WAV, 16 kHz mono FLAC, 44.1 kHz stereo FLAC (16-bit), under
    ``spk<i % 7>/`` folders; a tone in noise, seeded per file."""

    n_files: int
    mean_seconds: float = 10.8  # 500 files: 90 minutes
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    seed: int = 0


KINDS = [(16000, 1, "wav"), (44100, 2, "wav"), (16000, 1, "flac"), (44100, 2, "flac")]


def durations(spec: CorpusSpec) -> np.ndarray:
    """Seconds of each file: ``min + (max - min) * u**2`` (u uniform; most files short, some up to
    the maximum), scaled so the mean is ``mean_seconds``, none past ``max_seconds`` (the files that
    would be are cut to it and the others scaled again)."""
    span = spec.max_seconds - spec.min_seconds
    extra = span * np.random.default_rng(spec.seed).random(spec.n_files) ** 2
    target = spec.n_files * (spec.mean_seconds - spec.min_seconds)
    for _ in range(20):
        free = extra < span
        rest = target - span * np.count_nonzero(~free)
        if rest <= 0 or extra[free].sum() <= 0 or abs(extra.sum() - target) < 1e-9 * max(target, 1.0):
            break
        extra[free] *= rest / extra[free].sum()
        extra = np.minimum(extra, span)
    return spec.min_seconds + extra


def tone_in_noise(frames: int, sr: int, channels: int, rng: np.random.Generator, start: int = 0) -> np.ndarray:
    """``(frames, channels)`` float32: a 0.3-amplitude tone (a frequency per channel) plus noise."""
    t = (start + np.arange(frames))[:, None] / sr
    freqs = rng.uniform(100.0, 3000.0, size=channels)
    return (0.3 * np.sin(2 * np.pi * freqs * t) + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def corpus_rate(path: Path) -> int:
    """The sample rate ``make_corpus`` gave file ``utt<i>`` (also for its ``utt<i>.npy``)."""
    return KINDS[int(path.stem[3:]) % len(KINDS)][0]


@dataclass
class Corpus:
    root: Path
    files: list[Path]
    seconds: float  # total audio duration

    def describe(self) -> str:
        n16 = sum(1 for p in self.files if corpus_rate(p) == 16000)
        return (f"{len(self.files)} files, {self.seconds / 60:.1f} min ({n16} at 16 kHz mono, "
                f"{len(self.files) - n16} at 44.1 kHz stereo; WAV and FLAC)")


def make_corpus(root: Path, spec: CorpusSpec) -> Corpus:
    """Write the corpus under ``root``; the same spec writes the same files."""
    files, total = [], 0.0
    for i, seconds in enumerate(durations(spec)):
        sr, channels, ext = KINDS[i % len(KINDS)]
        frames = int(round(seconds * sr))
        rng = np.random.default_rng([spec.seed, i])
        path = root / f"spk{i % 7}" / f"utt{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), tone_in_noise(frames, sr, channels, rng), sr, subtype="PCM_16")
        files.append(path)
        total += frames / sr
    return Corpus(root, files, total)


def write_long(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> None:
    """A ``seconds``-long mono 16-bit WAV, written a minute at a time."""
    total = int(seconds * sr)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, 60 * sr):
            f.write(tone_in_noise(min(60 * sr, total - start), sr, 1, np.random.default_rng([seed, start]), start))


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child and its waited-for descendants
    rss_mb: float  # peak resident set size of the child (or its largest descendant)


class RunFailed(RuntimeError):
    pass


# Linux starts an exec'd process's peak RSS (ru_maxrss) at the peak of the process it replaced: a
# child spawned straight from a large parent (pytest, a bench that imported torch) would report at
# least the parent's size. So every command is started by this small launcher (python -S, ~10 MB),
# which forks it, waits and prints the command's own peak RSS (KiB) and exit code on its stdout.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_process(cmd: Sequence[str], expect: int = 0, cwd: Path = ROOT) -> Sample:
    """Run ``cmd`` to the end (through ``LAUNCHER``); its stdout is discarded, its stderr kept for a
    failure message. Wall and CPU include the launcher's start (about 10 ms)."""
    with tempfile.TemporaryFile() as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], cwd=str(cwd), stdout=subprocess.PIPE,
                              stderr=err, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        maxrss_kib, code = (int(v) for v in proc.stdout.split())
        if code != expect:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RunFailed(f"exit {code} (expected {expect}): {' | '.join(tail)}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Sample(wall, cpu, maxrss_kib / 1024)


@dataclass
class Variant:
    """One command measured in rounds; ``out`` (if set) is emptied before every run."""

    cmd: list[str]
    out: Optional[Path] = None
    expect: int = 0
    samples: list[Sample] = field(default_factory=list)
    failed: str = ""

    def once(self) -> None:
        if self.failed:
            return
        if self.out is not None:
            shutil.rmtree(self.out, ignore_errors=True)
        try:
            self.samples.append(run_process(self.cmd, self.expect))
        except RunFailed as exc:
            self.failed = str(exc)


def alternate(variants: dict[str, Variant], rounds: int) -> None:
    """Every variant once per round, the order rotated each round; a failed variant drops out."""
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            variants[name].once()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratios(theirs: Variant, ours: Variant, key: Callable[[Sample], float] = lambda s: s.wall) -> list[float]:
    """Per-round ``theirs / ours`` of ``key`` (wall time unless told)."""
    return [key(t) / key(o) for t, o in zip(theirs.samples, ours.samples)]


def report(variants: dict[str, Variant], ours: str, audio_seconds: Optional[float] = None) -> None:
    """One line per variant: median wall and CPU, CPU per audio second, the ratio to ``ours``."""
    for name, v in variants.items():
        if v.failed:
            print(f"  {name:40s} FAILED: {v.failed}")
            continue
        wall, cpu = median([s.wall for s in v.samples]), median([s.cpu for s in v.samples])
        line = f"  {name:40s} wall {wall:7.2f} s  CPU {cpu:7.2f} s"
        if audio_seconds:
            line += f"  CPU/audio s {1000 * cpu / audio_seconds:6.3f} ms"
        if name != ours and not variants[ours].failed:
            r, rc = ratios(v, variants[ours]), ratios(v, variants[ours], lambda s: s.cpu)
            line += f"  ratio {median(r):5.2f}x (CPU {median(rc):4.2f}x; rounds {', '.join(f'{x:.2f}' for x in r)})"
        print(line + f"  [n={len(v.samples)}]")


# ---------------------------------------------------------------------------------------------
# agreement


def compare_arrays(ours: np.ndarray, theirs: np.ndarray) -> float:
    """``max |ours - theirs| / max |theirs|``; inf when the shapes differ."""
    if ours.shape != theirs.shape:
        return float("inf")
    scale = float(np.abs(theirs).max()) or 1.0
    return float(np.abs(ours.astype(np.float64) - theirs).max()) / scale


def compare_dirs(ours: Path, theirs: Path, tol: float = 1e-4, only: Callable[[Path], bool] = lambda p: True) -> str:
    """Every ``.npy`` under ``theirs`` against the same relative path under ``ours``: a line
    ``agree N/M within tol (worst rel ...)`` naming the first disagreeing file."""
    worst, ok, bad = 0.0, 0, []
    paths = sorted(p for p in theirs.rglob("*.npy") if only(p))
    for p in paths:
        mine = ours / p.relative_to(theirs)
        rel = compare_arrays(np.load(mine), np.load(p)) if mine.exists() else float("inf")
        worst = max(worst, rel)
        ok += rel <= tol
        if rel > tol:
            bad.append(f"{p.relative_to(theirs)} ({'missing' if not mine.exists() else rel})")
    verdict = "OK" if paths and ok == len(paths) else "DISAGREE"
    extra = f"; first bad: {bad[0]}" if bad else ""
    return f"{verdict}: {ok}/{len(paths)} files within {tol:g} relative (worst {worst:.2e}){extra}"
