"""`make bench` section "batch": the batch job as whole processes, against the loop a user would
write instead, and its memory against the number of files.

Every figure comes from a child process (``os.wait4``: wall time, user+sys CPU, peak RSS
``ru_maxrss``), so start-up, imports and the interpreter's exit are counted as a user sees them.

**speed** (issue 13, item 3). A corpus is written to a temporary folder: ``--files`` files (500)
of 1-30 s (``1 + 29 u^2``, about 90 minutes in all), alternating 16 kHz mono and 44.1 kHz
stereo, WAV and FLAC, in nested folders. In ``--rounds`` rounds (5), alternating:

    naive: one thread (``torch.set_num_threads(1)``), file by file: ``soundfile.read`` -> mean
           over channels -> ``torchaudio.functional.resample`` to 16 kHz ->
           ``torchaudio.transforms.MelSpectrogram`` (the ``mel`` preset's settings) -> ``np.save``,
           ``os._exit(0)`` at the end
    job:   ``scripts/batch_process.py input=CORPUS model=mel output.dir=... batch.progress=none``
           (local engine, default settings), a fresh output folder each round

Printed: per round the wall time and CPU (user+sys) per audio second of each; the medians; and
the median of the per-round ratios naive wall / job wall (target >= 1.5) and job CPU / naive CPU
(target <= 1.10).

**memory** (issue 13, item 5). Two corpora of short files (0.5-3 s, the same mix, the same
seed) of ``--small`` (100) and ``--large`` (1000) files; the job runs on each, alternating, for
``--mem-rounds`` rounds (3). Printed: the peak RSS of each run and the median ratio large/small
(target <= 1.15).

    python scripts/bench_batch.py                 # both sections
    python scripts/bench_batch.py speed --rounds 7 --job runtime.batch_size=2
    python scripts/bench_batch.py memory --large 3000
    python scripts/bench_batch.py naive CORPUS OUT   # the naive loop alone (what "speed" runs)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH_SCRIPT = HERE / "batch_process.py"
MEL = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, center=False, power=2.0)  # configs/model/mel.yaml


# ---------------------------------------------------------------- corpora
def make_corpus(root: Path, n_files: int, min_s: float, max_s: float, seed: int = 0) -> float:
    """Write ``n_files`` files (``min_s + (max_s - min_s) u^2`` seconds; 16 kHz mono and 44.1 kHz
    stereo alternating; every third FLAC, the rest WAV; nested folders). Returns the audio seconds."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(n_files):
        seconds = min_s + (max_s - min_s) * float(rng.uniform()) ** 2
        sr, channels = (16000, 1) if i % 2 == 0 else (44100, 2)
        frames = int(seconds * sr)
        t = np.arange(frames) / sr
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)[:, None]
        data = np.clip(tone + 0.05 * rng.standard_normal((frames, channels)), -1, 1).astype(np.float32)
        ext = "flac" if i % 3 == 0 else "wav"
        path = root / f"spk{i % 7}" / f"sess{i % 3}" / f"utt{i:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, sr, subtype="PCM_16")
        total += frames / sr
    return total


def audio_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.suffix in (".wav", ".flac"))


# ---------------------------------------------------------------- the naive loop (a child process)
def naive(corpus: str, out: str) -> None:
    """What a user would write instead: one thread, one file at a time."""
    import soundfile as sf
    import torch
    import torchaudio

    torch.set_num_threads(1)
    mel = torchaudio.transforms.MelSpectrogram(**MEL)
    os.makedirs(out, exist_ok=True)
    for i, path in enumerate(audio_files(Path(corpus))):
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        wave = torch.from_numpy(data.mean(axis=1))
        if sr != MEL["sample_rate"]:
            wave = torchaudio.functional.resample(wave, sr, MEL["sample_rate"])
        np.save(os.path.join(out, f"{i}.npy"), mel(wave).numpy())
    sys.stdout.flush()
    os._exit(0)


# ---------------------------------------------------------------- measuring a child
def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; ``(wall s, user+sys CPU s, peak RSS MiB)`` of the child (``os.wait4``)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... exited {proc.returncode}:\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def job_cmd(corpus: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, str(BATCH_SCRIPT), f"input={corpus}", "model=mel", f"output.dir={out}",
            "batch.progress=none", *extra]


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}"


def _ratios(name: str, values: list[float], target: str) -> None:
    print(f"{name} = {statistics.median(values):.2f}  ({target}; per round: {', '.join(f'{v:.2f}' for v in values)})")


# ---------------------------------------------------------------- sections
def speed(args: argparse.Namespace, tmp: Path) -> None:
    corpus = tmp / "speed"
    total = make_corpus(corpus, args.files, 1.0, 30.0)
    print(f"speed: {args.files} files, {total / 60:.1f} min (16 kHz mono + 44.1 kHz stereo, WAV + FLAC); "
          f"{machine()}; job extra args: {' '.join(args.extra) or '-'}")
    naive_cmd = [sys.executable, str(Path(__file__).resolve()), "naive", str(corpus), str(tmp / "naive")]
    audio_files(corpus) and measure(naive_cmd)  # warm the page cache and the libraries' files
    rows: dict[str, list[tuple[float, float]]] = {"naive": [], "job": []}
    for r in range(args.rounds):
        for name in (("naive", "job") if r % 2 == 0 else ("job", "naive")):  # alternating order
            out = tmp / f"out_{name}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = naive_cmd[:-1] + [str(out)] if name == "naive" else job_cmd(corpus, out, args.extra)
            wall, cpu, _ = measure(cmd)
            rows[name].append((wall, cpu))
            print(f"  round {r + 1} {name:5s}: {wall:6.2f} s wall, {1000 * cpu / total:6.3f} CPU s per 1000 audio s "
                  f"({total / wall:5.0f}x real time)", flush=True)
    for name, vals in rows.items():
        print(f"{name:5s}: median {statistics.median(w for w, _ in vals):.2f} s wall, "
              f"{1000 * statistics.median(c for _, c in vals) / total:.3f} CPU s per 1000 audio s")
    _ratios("naive wall / job wall", [n[0] / j[0] for n, j in zip(rows["naive"], rows["job"])], "target >= 1.5")
    _ratios("job CPU / naive CPU  ", [j[1] / n[1] for n, j in zip(rows["naive"], rows["job"])], "target <= 1.10")


def memory(args: argparse.Namespace, tmp: Path) -> None:
    corpora = {}
    for n in (args.small, args.large):
        corpora[n] = tmp / f"mem{n}"
        make_corpus(corpora[n], n, 0.5, 3.0, seed=1)
    print(f"memory: {args.small} vs {args.large} files of 0.5-3 s (same mix); {machine()}")
    peaks: dict[int, list[float]] = {args.small: [], args.large: []}
    for r in range(args.mem_rounds):
        for n in ((args.small, args.large) if r % 2 == 0 else (args.large, args.small)):
            out = tmp / f"mem_out{n}"
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, rss = measure(job_cmd(corpora[n], out, args.extra))
            peaks[n].append(rss)
            print(f"  round {r + 1} {n:6d} files: peak RSS {rss:7.1f} MiB ({wall:.1f} s, {cpu:.1f} CPU s)", flush=True)
    _ratios(f"peak RSS {args.large} / {args.small} files",
            [b / a for a, b in zip(peaks[args.small], peaks[args.large])], "target <= 1.15")


def run(args: argparse.Namespace) -> None:
    """Both sections (``scripts/benchmark.py``'s entry; ``--quick``: small corpora, 2 rounds)."""
    for key, value in dict(section="all", files=500, rounds=5, small=100, large=1000, mem_rounds=3, extra=[]).items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if getattr(args, "quick", False):
        args.files, args.rounds, args.small, args.large, args.mem_rounds = 60, 2, 20, 200, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        if args.section in ("all", "speed"):
            speed(args, tmp)
        if args.section in ("all", "memory"):
            memory(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "naive":
        naive(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", nargs="?", default="all", choices=["all", "speed", "memory"])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--mem-rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--job", dest="extra", action="append", default=[],
                        help="an override for the job, e.g. --job runtime.batch_size=2 (repeatable)")
    run(parser.parse_args())


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
