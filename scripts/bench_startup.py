"""`make bench` section "startup": what the commands that need no torch cost to start, against
``python -c "import torch"`` (issue 13, item 4: each <= 0.3x).

Every figure is a whole child process (wall time from ``subprocess.run``), so the interpreter's
start, the imports and the exit count as a user sees them. A 1 s 16 kHz mono WAV and an output
folder holding its features are made first (one real run, not timed). Then, in ``--rounds``
rounds (7), every command runs next to its own ``import torch`` run, the order of the pair
alternating between rounds. Printed per command: the median wall time, the median of the paired
``import torch`` runs, the median of the per-pair ratios (target <= 0.30), and the heavy packages
the command imports (one untimed ``-X importtime`` run; ``torch`` there is a defect).

    python scripts/bench_startup.py                  # every command, 7 rounds
    python scripts/bench_startup.py --rounds 11
    python scripts/bench_startup.py --only summary    # the commands whose name contains "summary"
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
from typing import Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HEAVY = ("torch", "torchaudio", "ray", "matplotlib", "fsspec", "s3fs", "transformers", "scipy", "numpy",
         "soundfile", "safetensors", "hydra", "omegaconf")
TARGET = 0.30


def commands(wav: Path, feats: Path) -> list[tuple[str, list[str], int]]:
    """``(name, argv, expected exit status)`` of every command timed."""
    mod = [PY, "-m", "conv_pipeline"]
    batch = [PY, str(HERE / "batch_process.py")]
    inspect = [PY, "-m", "conv_pipeline.inspect"]
    console = Path(PY).parent / "conv-pipeline"
    version = [str(console), "--version"] if console.exists() else mod + ["--version"]
    return [
        ("--help", mod + ["--help"], 0),
        ("summary=true", mod + ["summary=true"], 0),
        ("summary=true input=WAV", mod + ["summary=true", f"input={wav}"], 0),
        ("batch --help", batch + ["--help"], 0),
        ("batch input=DIR summary=true", batch + [f"input={wav.parent}", "summary=true"], 0),
        ("inspect --help", inspect + ["--help"], 0),
        ("inspect FOLDER", inspect + [str(feats)], 0),
        ("inspect FILE", inspect + [str(feats / (wav.stem + ".npy"))], 0),
        ("conv-pipeline --version", version, 0),
        ("error: typo key", mod + [f"input={wav}", "runtime.batchsize=4"], 2),
        ("error: bad value", mod + [f"input={wav}", "runtime.batch_size=0"], 2),
        ("error: bad preset", mod + [f"input={wav}", "model=nope"], 2),
    ]


def prepare(tmp: Path) -> tuple[Path, Path]:
    """A 1 s 16 kHz mono WAV under ``tmp/audio`` and its features under ``tmp/feats`` (one real run)."""
    import numpy as np
    import soundfile as sf

    wav = tmp / "audio" / "tone.wav"
    wav.parent.mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    feats = tmp / "feats"
    subprocess.run([PY, "-m", "conv_pipeline", f"input={wav}", f"output.dir={feats}"], check=True,
                   capture_output=True, cwd=tmp)
    return wav, feats


def wall(argv: Sequence[str], expect: int, cwd: Path) -> float:
    """Seconds one run of ``argv`` takes; ``RuntimeError`` when it ends with another status."""
    t0 = time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t0
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(argv)}: exit status {done.returncode}, expected {expect}: "
                           f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return seconds


def heavy_imports(argv: Sequence[str], cwd: Path) -> list[str]:
    """The packages of ``HEAVY`` that one run of ``argv`` imports (from ``-X importtime``)."""
    if argv[0] == PY:
        full = [PY, "-X", "importtime", *argv[1:]]
    else:  # a console script: its interpreter with the script as the program
        full = [PY, "-X", "importtime", *argv]
    err = subprocess.run(full, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in err.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def run(args) -> None:
    rounds = getattr(args, "rounds", None) or (3 if getattr(args, "quick", False) else 7)
    only = getattr(args, "only", None)
    baseline = [PY, "-c", "import torch"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        wav, feats = prepare(tmp)
        chosen = [c for c in commands(wav, feats) if not only or only in c[0]]
        for name, argv, expect in chosen:  # warm the page cache and check each works
            wall(argv, expect, tmp)
        wall(baseline, 0, tmp)
        times = {name: [] for name, _, _ in chosen}
        torch_times = {name: [] for name, _, _ in chosen}
        for r in range(rounds):
            for name, argv, expect in chosen:
                pair = [(torch_times, baseline, 0), (times, argv, expect)]
                for table, cmd, code in (pair if r % 2 == 0 else pair[::-1]):
                    table[name].append(wall(cmd, code, tmp))
        print(f"{rounds} rounds, each command next to its own `python -c \"import torch\"` run, alternating; medians:")
        print(f"{'command':30s} {'s':>7s} {'torch s':>8s} {'ratio':>6s}  heavy imports")
        for name, argv, _ in chosen:
            ratios = [a / b for a, b in zip(times[name], torch_times[name])]
            ratio = statistics.median(ratios)
            flag = "" if ratio <= TARGET else "  (over 0.30)"
            print(f"{name:30s} {statistics.median(times[name]):7.3f} {statistics.median(torch_times[name]):8.3f} "
                  f"{ratio:6.2f}  {' '.join(heavy_imports(argv, tmp)) or '-'}{flag}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    parser.add_argument("--only", default=None, help="only the commands whose name contains this")
    args = parser.parse_args()
    with open("/proc/cpuinfo" if os.path.exists("/proc/cpuinfo") else os.devnull) as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    print(f"CPU: {cpu or '?'}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    run(args)
