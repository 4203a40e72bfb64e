"""The ``peers`` section of ``make bench`` (scripts/bench_peers.py, scripts/peers/harness.py) is set up
as it says: --quick and --parts parsing, the seeded mixed corpus, the output agreement check and
the child-process measurements. No timing is asserted; the benchmark itself is not run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import bench_peers  # noqa: E402
from peers import harness  # noqa: E402


def test_quick_and_full_sizes():
    quick = bench_peers.settings(bench_peers.parse_args(["--quick"]))
    assert (quick.corpus_files, quick.long_seconds, quick.rss_files, quick.rounds) == (60, 600.0, (50, 300), 3)
    full = bench_peers.settings(bench_peers.parse_args([]))
    assert (full.corpus_files, full.long_seconds, full.rss_files, full.w2v_seconds, full.rounds) == (
        500, 3600.0, (100, 1000), 180.0, 5)
    assert full.parts == "abcde" and not full.keep
    some = bench_peers.settings(bench_peers.parse_args(["--quick", "--parts", "ce", "--rounds", "7", "--keep"]))
    assert (some.parts, some.rounds, some.keep) == ("ce", 7, True)
    assert set(bench_peers.PART_RUNS) == set(bench_peers.PARTS)
    with pytest.raises(SystemExit, match="unknown part"):
        bench_peers.settings(bench_peers.parse_args(["--parts", "ax"]))


def test_full_corpus_durations_are_about_ninety_minutes_of_1_to_30_s_files():
    seconds = harness.durations(harness.CorpusSpec(500))
    assert len(seconds) == 500
    assert seconds.min() >= 1.0 and seconds.max() <= 30.0
    assert abs(seconds.sum() - 90 * 60) < 1.0
    assert seconds.max() > 25.0 and np.median(seconds) < 10.0  # spread over the range, most files short


def test_tiny_corpus_mixes_rates_channels_and_formats_and_is_seeded(tmp_path):
    spec = harness.CorpusSpec(8, mean_seconds=0.2, min_seconds=0.1, max_seconds=0.4, seed=3)
    corpus = harness.make_corpus(tmp_path / "a", spec)
    assert len(corpus.files) == 8 and all(p.is_relative_to(tmp_path / "a") for p in corpus.files)
    kinds, total = set(), 0.0
    for i, path in enumerate(corpus.files):
        info = sf.info(str(path))
        kind = (info.samplerate, info.channels, path.suffix[1:])
        assert kind == harness.KINDS[i % 4] and info.subtype == "PCM_16"
        assert harness.corpus_rate(path) == info.samplerate == harness.corpus_rate(path.with_suffix(".npy"))
        assert 0.1 - 1e-4 <= info.duration <= 0.4 + 1e-4
        kinds.add(kind)
        total += info.frames / info.samplerate
    assert kinds == set(harness.KINDS)
    assert corpus.seconds == pytest.approx(total) == pytest.approx(8 * 0.2, abs=1e-3)
    assert "4 at 16 kHz mono, 4 at 44.1 kHz stereo" in corpus.describe()
    again = harness.make_corpus(tmp_path / "b", spec)
    other = harness.make_corpus(tmp_path / "c", harness.CorpusSpec(8, 0.2, 0.1, 0.4, seed=4))
    first = sf.read(str(corpus.files[1]))[0]
    assert np.array_equal(first, sf.read(str(again.files[1]))[0])
    assert not np.array_equal(sf.read(str(corpus.files[0]))[0][:100], sf.read(str(other.files[0]))[0][:100])
    # a tone in noise, not silence or clipping: 0.3 amplitude tone plus 0.05 noise
    assert 0.15 < np.sqrt(np.mean(first**2)) < 0.3 and np.abs(first).max() < 1.0


def test_compare_dirs_finds_a_difference_a_shape_change_and_a_missing_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x/utt0000.npy": rng.random((80, 30)), "utt0001.npy": rng.random((80, 7))}
    for side in ("ours", "theirs"):
        for name, a in arrays.items():
            (tmp_path / side / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / side / name, a.astype(np.float32))
    assert harness.compare_dirs(tmp_path / "ours", tmp_path / "theirs").startswith("OK: 2/2")
    np.save(tmp_path / "ours" / "utt0001.npy", (arrays["utt0001.npy"] * (1 + 1e-3)).astype(np.float32))
    line = harness.compare_dirs(tmp_path / "ours", tmp_path / "theirs")
    assert line.startswith("DISAGREE: 1/2") and "utt0001.npy" in line
    np.save(tmp_path / "ours" / "utt0001.npy", arrays["utt0001.npy"][:, :6])
    assert harness.compare_arrays(np.load(tmp_path / "ours" / "utt0001.npy"), arrays["utt0001.npy"]) == float("inf")
    (tmp_path / "ours" / "x" / "utt0000.npy").unlink()
    assert harness.compare_dirs(tmp_path / "ours", tmp_path / "theirs").startswith("DISAGREE: 0/2")
    assert harness.compare_dirs(tmp_path / "ours", tmp_path / "nothing").startswith("DISAGREE: 0/0")


@pytest.mark.slow
def test_run_process_reports_the_childs_cpu_and_peak_memory_and_its_exit_code():
    burn = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); t = time.process_time()\n" \
           "while time.process_time() - t < 0.3: pass"
    sample = harness.run_process([sys.executable, "-c", burn])
    assert sample.rss_mb >= 300 and sample.cpu >= 0.3 and sample.wall >= sample.cpu * 0.5
    small = harness.run_process([sys.executable, "-c", "pass"])
    assert small.rss_mb < 200 and small.cpu < sample.cpu
    with pytest.raises(harness.RunFailed, match="exit 3 .expected 0.*boom"):
        harness.run_process([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    assert harness.run_process([sys.executable, "-c", "raise SystemExit(2)"], expect=2).wall > 0
