"""`make bench` section "peers": the pipeline against what a user would run instead, as whole
processes side by side (issue 13's "Done when"). Every variant is a fresh ``python`` process;
the variants of a part alternate, once per round, the order rotated each round; reported are the
medians of wall time, of CPU time (``RUSAGE_CHILDREN`` deltas) and of the per-round ratios
(scripts/peers/harness.py says how each is taken). The peer scripts are in scripts/peers/.

    (a) a seeded corpus of 500 files (``--quick``: 60), 1-30 s, about 90 min, 16 kHz mono and
        44.1 kHz stereo, WAV and FLAC: ``scripts/batch_process.py model=mel`` against the naive
        loop (soundfile -> mean -> torchaudio resample -> MelSpectrogram -> np.save, one torch
        thread; ending with ``os._exit`` and normally), librosa (load(sr=16000) + melspectrogram)
        and lhotse (Fbank, num_jobs=2); then ``model=default`` against the naive loop running
        our stack. Goal: the naive loop's time / ours >= 1.5 for both models.
    (b) one hour of 16 kHz mono (``--quick``: 10 min): ``python -m conv_pipeline model=mel``
        against a script running MelSpectrogram on the whole file. Goal >= 1.2.
    (c) start-up: ``--help``, ``summary=true``, ``batch_process.py --help``, ``inspect --help``,
        a config error, against ``python -c "import torch"``. Goal: each <= 0.3 of it.
    (d) peak RSS of the batch job on 100 and 1000 short files (``--quick``: 50 and 300), for
        ``model=mel`` and ``model=default``. Goal: 1000-file peak <= 1.15 x the 100-file one.
    (e) the wav2vec2-shaped stack (scripts/bench_chunked.py) through the CLI on 180 s of 16 kHz
        (``--quick``: 60 s), chunked (the default) against ``runtime.chunk_seconds=null``.
        Goal: whole's time / chunked's >= 1.5.

Outputs are checked where they should agree (ours against the naive loop per file, chunked
against whole): shapes equal and max |difference| <= 1e-4 x max |reference|. A peer library that
is not installed is skipped with a line (``pip install -e '.[bench]'``).

    python scripts/benchmark.py peers --quick
    python scripts/bench_peers.py --parts ac --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from peers.harness import (  # noqa: E402
    PY, ROOT, CorpusSpec, Variant, alternate, compare_arrays, compare_dirs, corpus_rate, machine, make_corpus,
    median, report, write_long,
)

PEERS = HERE / "peers"
PARTS = "abcde"


@dataclass(frozen=True)
class Settings:
    corpus_files: int  # (a)
    long_seconds: float  # (b)
    rss_files: tuple[int, int]  # (d)
    w2v_seconds: float  # (e)
    rounds: int
    parts: str
    keep: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's options (scripts/benchmark.py adds them to its own parser)."""
    parser.add_argument("--parts", default=PARTS, help=f"which parts of the peers section, any of '{PARTS}'")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per part (default 5, --quick 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="peers benchmark section")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    add_arguments(parser)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> Settings:
    quick = bool(getattr(args, "quick", False))
    parts = getattr(args, "parts", PARTS) or PARTS
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"bench_peers: --parts {parts!r}: unknown part(s) {''.join(sorted(unknown))}; use letters of {PARTS}")
    rounds = getattr(args, "rounds", None) or (3 if quick else 5)
    if quick:
        return Settings(60, 600.0, (50, 300), 60.0, rounds, parts, bool(getattr(args, "keep", False)))
    return Settings(500, 3600.0, (100, 1000), 180.0, rounds, parts, bool(getattr(args, "keep", False)))


def batch_cmd(source: Path, out: Path, *overrides: str) -> list[str]:
    return [PY, str(ROOT / "scripts" / "batch_process.py"), f"input={source}", *overrides, f"output.dir={out}"]


def peer(script: str, *args: object) -> list[str]:
    return [PY, str(PEERS / script), *map(str, args)]


def header(title: str) -> None:
    print(f"\n({title}  [{machine()}]", flush=True)


def part_a(st: Settings, tmp: Path) -> None:
    header("a) batch job on a corpus vs the naive loop, librosa, lhotse; ratio = their time / ours, goal >= 1.5")
    corpus = make_corpus(tmp / "corpus", CorpusSpec(st.corpus_files))
    print(f"    corpus: {corpus.describe()}; {st.rounds} rounds", flush=True)
    src, out = corpus.root, tmp / "a"
    ours = "ours: batch_process.py model=mel"
    mel = {
        ours: Variant(batch_cmd(src, out / "ours", "model=mel"), out / "ours"),
        "naive loop (os._exit)": Variant(peer("naive_mel.py", src, out / "naive"), out / "naive"),
        "naive loop (normal exit)": Variant(peer("naive_mel.py", src, out / "naive2", "--normal-exit"), out / "naive2"),
    }
    for module, name, script in (("librosa", "librosa load+melspectrogram", "librosa_mel.py"),
                                 ("lhotse", "lhotse Fbank, num_jobs=2", "lhotse_fbank.py")):
        if importlib.util.find_spec(module) is None:
            print(f"    {module}: not installed, skipped (pip install -e '.[bench]')")
        else:
            mel[name] = Variant(peer(script, src, out / module), out / module)
    alternate(mel, st.rounds)
    report(mel, ours, corpus.seconds)
    print(f"    ours vs naive loop, every file: {compare_dirs(out / 'ours', out / 'naive')}")
    if "librosa load+melspectrogram" in mel and not mel["librosa load+melspectrogram"].failed:
        at16k = lambda p: corpus_rate(p) == 16000  # noqa: E731
        print(f"    ours vs librosa, 16 kHz files (no resampling): {compare_dirs(out / 'ours', out / 'librosa', 1e-4, at16k)}")
        print(f"    ours vs librosa, 44.1 kHz files (soxr, not torchaudio's resampler; not expected equal): "
              f"{compare_dirs(out / 'ours', out / 'librosa', 1e-4, lambda p: not at16k(p))}")
    if "lhotse Fbank, num_jobs=2" in mel and not mel["lhotse Fbank, num_jobs=2"].failed:
        n = len(list((out / "lhotse").rglob("*.npy")))
        print(f"    lhotse wrote {n} feature arrays for {len(corpus.files)} files (Kaldi log-mel: not compared numerically)")
    ours_d = "ours: batch_process.py model=default"
    default = {
        ours_d: Variant(batch_cmd(src, out / "ours_d", "model=default", "audio.channels=mono"), out / "ours_d"),
        "naive loop with our stack (os._exit)": Variant(peer("naive_stack.py", src, out / "naive_d"), out / "naive_d"),
    }
    alternate(default, st.rounds)
    report(default, ours_d, corpus.seconds)
    print(f"    ours vs naive loop with our stack, every file: {compare_dirs(out / 'ours_d', out / 'naive_d')}")


def part_b(st: Settings, tmp: Path) -> None:
    header(f"b) one {st.long_seconds / 60:.0f}-min 16 kHz mono file, model=mel; ratio = script's time / ours, goal >= 1.2")
    wav, out = tmp / "long.wav", tmp / "b"
    write_long(wav, st.long_seconds)
    out.mkdir(parents=True, exist_ok=True)
    ours = "ours: python -m conv_pipeline model=mel"
    v = {
        ours: Variant([PY, "-m", "conv_pipeline", f"input={wav}", "model=mel", f"output.dir={out / 'ours'}"], out / "ours"),
        "whole-file MelSpectrogram script": Variant(peer("whole_mel.py", wav, out / "script.npy")),
    }
    alternate(v, st.rounds)
    report(v, ours, st.long_seconds)
    if not any(x.failed for x in v.values()):
        rel = compare_arrays(np.load(out / "ours" / "long.npy"), np.load(out / "script.npy"))
        print(f"    ours vs script: {'OK' if rel <= 1e-4 else 'DISAGREE'} (max rel difference {rel:.2e}, limit 1e-4)")


def part_c(st: Settings, tmp: Path) -> None:
    header("c) start-up; ratio = command's time / `python -c 'import torch'`, goal <= 0.3")
    wav = tmp / "short.wav"
    write_long(wav, 1.0)
    torch_ref = "python -c 'import torch'"
    v = {
        torch_ref: Variant([PY, "-c", "import torch"]),
        "python -m conv_pipeline --help": Variant([PY, "-m", "conv_pipeline", "--help"]),
        "python -m conv_pipeline summary=true": Variant([PY, "-m", "conv_pipeline", "summary=true"]),
        "batch_process.py --help": Variant([PY, str(ROOT / "scripts" / "batch_process.py"), "--help"]),
        "python -m conv_pipeline.inspect --help": Variant([PY, "-m", "conv_pipeline.inspect", "--help"]),
        "config error (model=nosuch, exit 2)": Variant([PY, "-m", "conv_pipeline", f"input={wav}", "model=nosuch"], expect=2),
    }
    alternate(v, max(st.rounds, 5))
    report(v, torch_ref)


def part_d(st: Settings, tmp: Path) -> None:
    small, big = st.rss_files
    header(f"d) batch job peak RSS, {big} vs {small} short files; ratio = {big}-file peak / {small}-file peak, goal <= 1.15")
    corpus = make_corpus(tmp / "short", CorpusSpec(big, mean_seconds=3.0, max_seconds=6.0, seed=1))
    lists = {n: tmp / f"list{n}.txt" for n in (small, big)}
    for n, path in lists.items():
        path.write_text("".join(f"{p}\n" for p in corpus.files[:n]))
    print(f"    corpus: {corpus.describe()}; the {small}-file job reads the first {small} of them; "
          f"{min(st.rounds, 3)} rounds")
    for model in ("mel", "default"):
        v = {n: Variant(batch_cmd(lists[n], tmp / "d" / str(n), f"model={model}", "audio.channels=mono"), tmp / "d" / str(n))
             for n in (small, big)}
        alternate(v, min(st.rounds, 3))
        if any(x.failed for x in v.values()):
            report({f"model={model}, {n} files": x for n, x in v.items()}, f"model={model}, {small} files")
            continue
        rss = {n: median([s.rss_mb for s in x.samples]) for n, x in v.items()}
        wall = {n: median([s.wall for s in x.samples]) for n, x in v.items()}
        print(f"    model={model:8s} peak RSS {small} files {rss[small]:6.0f} MB, {big} files {rss[big]:6.0f} MB: "
              f"ratio {rss[big] / rss[small]:.2f} (wall {wall[small]:.1f} / {wall[big]:.1f} s)")


def part_e(st: Settings, tmp: Path) -> None:
    from bench_chunked import w2v_layers_override

    header(f"e) wav2vec2-shaped stack, {st.w2v_seconds:.0f} s of 16 kHz, CLI; ratio = whole's time / chunked's, goal >= 1.5")
    wav, out = tmp / "w2v.wav", tmp / "e"
    write_long(wav, st.w2v_seconds, seed=2)
    base = [PY, "-m", "conv_pipeline", f"input={wav}", w2v_layers_override(), "overwrite=true"]
    chunked = "chunked (runtime.chunk_seconds default)"
    v = {
        chunked: Variant(base + [f"output.dir={out / 'chunked'}"], out / "chunked"),
        "whole (runtime.chunk_seconds=null)": Variant(base + ["runtime.chunk_seconds=null", f"output.dir={out / 'whole'}"],
                                                      out / "whole"),
    }
    print(f"    override: {w2v_layers_override()}")
    alternate(v, st.rounds)
    report(v, chunked, st.w2v_seconds)
    if not any(x.failed for x in v.values()):
        rel = compare_arrays(np.load(out / "chunked" / "w2v.npy"), np.load(out / "whole" / "w2v.npy"))
        print(f"    chunked vs whole: {'OK' if rel <= 1e-4 else 'DISAGREE'} (max rel difference {rel:.2e}, limit 1e-4)")


PART_RUNS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e}


def run(args: argparse.Namespace) -> None:
    st = settings(args)
    print(f"peers: {machine()}; python {platform.python_version()}; parts {st.parts}; rounds {st.rounds}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    try:
        for part in st.parts:
            PART_RUNS[part](st, tmp)
    finally:
        if st.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(parse_args())
