"""`make bench` section "formats" (issue 15): many short inputs through the batch job written as
npy (one file per input) against parquet and kaldi (shards), to a local folder and to a local S3
server (moto's ``ThreadedMotoServer`` on 127.0.0.1, through s3fs).

A corpus of ``--files`` (10,000; ``--quick``: 500) WAV files of 0.5 s (16 kHz mono) is written
to a temporary folder. In ``--rounds`` rounds (3; ``--quick``: 1), for each target (``local``,
``s3``) the job runs once per format, the formats alternating within the round, each into a fresh
``output.dir``, as a child process:

    scripts/batch_process.py input=CORPUS model=mel output.dir=OUT output.format=FMT batch.progress=none

Printed per run: the wall time and the files (local) or objects (S3) under ``output.dir``
(features, index files, the manifest, config and weights); then per target the median wall time
of each format and the median of the per-round ratios npy / format.

    python scripts/bench_formats.py                      # 10,000 inputs, 3 rounds
    python scripts/bench_formats.py --quick              # 500 inputs, 1 round
    python scripts/bench_formats.py --files 2000 --targets local
"""

from __future__ import annotations

import argparse
import logging
import os
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
FORMATS = ("npy", "parquet", "kaldi")
TARGETS = ("local", "s3")
SECONDS = 0.5  # each input
RATE = 16000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("formats")
    group.add_argument("--formats-files", dest="formats_files", type=int, default=None,
                       help="formats: inputs in the corpus (10000; --quick 500)")
    group.add_argument("--formats-rounds", dest="formats_rounds", type=int, default=None,
                       help="formats: rounds (3; --quick 1)")
    group.add_argument("--formats-targets", dest="formats_targets", default=",".join(TARGETS),
                       help="formats: local, s3 or both (comma-separated)")


def make_corpus(root: Path, n: int) -> None:
    """``n`` WAV files of ``SECONDS`` s of noise at ``RATE`` Hz, 100 per folder."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"d{i // 100:03d}" / f"clip{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(int(SECONDS * RATE))).astype(np.float32), RATE)


class S3Server:
    """moto's S3 server on a free port of 127.0.0.1, and the ``storage.options`` to reach it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.options = {"key": "testing", "secret": "testing",
                        "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "eu-west-1"}}
        import fsspec

        self.fs = fsspec.filesystem("s3", skip_instance_cache=True, **self.options)
        self.fs.mkdir("bench")

    def override(self) -> str:
        return ("storage.options={key: testing, secret: testing, client_kwargs: "
                f"{{endpoint_url: '{self.endpoint}', region_name: eu-west-1}}}}")

    def count(self, prefix: str) -> int:
        self.fs.invalidate_cache()
        return len(self.fs.find(f"bench/{prefix}"))

    def stop(self) -> None:
        self.server.stop()


def run_job(corpus: Path, out: str, fmt: str, extra: list[str]) -> float:
    """One batch job as a child process; its wall time (s)."""
    cmd = [sys.executable, str(BATCH_SCRIPT), f"input={corpus}", "model=mel", f"output.dir={out}",
           f"output.format={fmt}", "batch.progress=none", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench formats: the job failed ({fmt}, {out}): {done.stderr.strip().splitlines()[-1:]}")
    return wall


def count_local(out: Path) -> int:
    return sum(1 for p in out.rglob("*") if p.is_file())


def bench_target(target: str, corpus: Path, work: Path, rounds: int, s3: S3Server | None) -> None:
    walls: dict[str, list[float]] = {f: [] for f in FORMATS}
    for r in range(rounds):
        order = FORMATS if r % 2 == 0 else tuple(reversed(FORMATS))  # alternating
        for fmt in order:
            if target == "local":
                out = work / f"{fmt}-{r}"
                wall = run_job(corpus, str(out), fmt, [])
                files = count_local(out)
                shutil.rmtree(out, ignore_errors=True)
            else:
                assert s3 is not None
                prefix = f"{fmt}-{r}"
                wall = run_job(corpus, f"s3://bench/{prefix}", fmt, [s3.override()])
                files = s3.count(prefix)
                s3.fs.rm(f"bench/{prefix}", recursive=True)
            walls[fmt].append(wall)
            print(f"  {target} round {r + 1} {fmt:8s} wall {wall:7.1f} s  {'files' if target == 'local' else 'objects'} {files}",
                  flush=True)
    base = walls["npy"]
    for fmt in FORMATS:
        ratio = statistics.median(b / w for b, w in zip(base, walls[fmt]))
        print(f"{target:5s} {fmt:8s} median wall {statistics.median(walls[fmt]):7.1f} s   npy/{fmt} {ratio:.2f}x")


def run(args: argparse.Namespace) -> None:
    quick = bool(getattr(args, "quick", False))
    n = getattr(args, "formats_files", None) or (500 if quick else 10000)
    rounds = getattr(args, "formats_rounds", None) or (1 if quick else 3)
    targets = [t for t in str(getattr(args, "formats_targets", ",".join(TARGETS))).split(",") if t]
    work = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    s3 = None
    try:
        corpus = work / "corpus"
        make_corpus(corpus, n)
        print(f"{n} inputs of {SECONDS} s ({RATE} Hz mono WAV), model=mel, {rounds} round(s)", flush=True)
        if "s3" in targets:
            s3 = S3Server()
        for target in targets:
            bench_target(target, corpus, work, rounds, s3)
    finally:
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 inputs, 1 round")
    parser.add_argument("--files", dest="formats_files", type=int, default=None)
    parser.add_argument("--rounds", dest="formats_rounds", type=int, default=None)
    parser.add_argument("--targets", dest="formats_targets", default=",".join(TARGETS))
    sys.path.insert(0, str(HERE))
    from peers.harness import machine

    print(f"machine: {machine()}")
    run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
