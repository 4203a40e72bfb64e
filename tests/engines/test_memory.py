"""The batch job's memory held flat in the number of files (issue 13, item 5): the allocator
trimmed between batches and its arenas bounded (``engines/memory.py``), manifest records appended
a group at a time after one sync of their files (``engines/local.py``), and no per-input state
kept for resume beyond the outputs that exist (``engines/job.py``). Peak RSS itself is measured
by ``scripts/bench_batch.py memory``, not here."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import numpy as np
import pytest

import conv_pipeline.engines.job as job_mod
import conv_pipeline.engines.local as local_mod
import conv_pipeline.engines.memory as memory
import conv_pipeline.engines.work as work_mod
from conv_pipeline.config.compose import compose_config
from conv_pipeline.config.plan import BATCH_SIZE_CONV, BATCH_SIZE_FFT, build_plan
from conv_pipeline.engines.job import run_batch
from conv_pipeline.sink.manifest import iter_records, read_manifest
from conv_pipeline.sink.manifest_sink import LocalManifestSink
from helpers.audio import write_audio
from helpers.jobs import batch_cfg

GLIBC = sys.platform.startswith("linux") and bool(ctypes.util.find_library("c")) and hasattr(ctypes.CDLL(None), "malloc_trim")


def _corpus(root, n):
    for i in range(n):
        write_audio(root / f"d{i % 3}/f{i:02d}.wav", 0.05 + 0.01 * (i % 5), seed=i)
    return root


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_trim_and_arena_bound_reach_glibc():
    assert memory.trim_memory() is True
    assert memory.bound_arenas(8) is True  # mallopt returns 1 on success


def test_trim_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "libc", lambda: None)
    assert memory.trim_memory() is False and memory.bound_arenas() is False


def test_job_trims_between_batches_and_bounds_arenas(tmp_path, monkeypatch):
    calls = {"trim": 0, "arenas": 0}
    monkeypatch.setattr(memory, "TRIM_EVERY_S", 0.0)  # every batch
    monkeypatch.setattr(memory, "TRIM_SHARE", 1e12)
    monkeypatch.setattr(memory, "trim_memory", lambda: calls.__setitem__("trim", calls["trim"] + 1) or True)
    monkeypatch.setattr(local_mod, "bound_arenas", lambda n=2: calls.__setitem__("arenas", calls["arenas"] + 1) or True)
    s = run_batch(batch_cfg(_corpus(tmp_path / "c", 9), tmp_path / "out", batch_size=1))
    assert s.ok == 9
    assert calls["arenas"] == 1
    assert calls["trim"] >= 9  # one per batch of one file


def test_records_appended_in_groups_after_their_files_are_synced(tmp_path, monkeypatch):
    events: list[tuple[str, int]] = []
    real_add = LocalManifestSink.add

    def add(self, records):
        on_disk = [r for r in records if r.status == "ok" and not (tmp_path / "out" / r.output).is_file()]
        assert not on_disk  # a record never precedes its file
        events.append(("add", len(records)))
        return real_add(self, records)

    monkeypatch.setattr(LocalManifestSink, "add", add)
    monkeypatch.setattr(local_mod, "sync_filesystem", lambda folder, paths: events.append(("sync", len(list(paths)))))
    monkeypatch.setattr(local_mod, "RECORDS_PER_APPEND", 4)
    monkeypatch.setattr(local_mod, "APPEND_EVERY_S", 3600.0)
    n = 10
    s = run_batch(batch_cfg(_corpus(tmp_path / "c", n), tmp_path / "out", batch_size=2))
    assert s.ok == n
    adds = [k for e, k in events if e == "add" and k]  # (the skipped records: none)
    assert sum(adds) == n and max(adds) == 4 and len(adds) == 3  # 4 + 4 + 2, not one append per file
    for i, (event, _) in enumerate(events):  # each group's files synced just before its append
        if event == "add" and events[i][1]:
            assert events[i - 1][0] == "sync"
    recs = read_manifest(tmp_path / "out")
    assert len(recs) == n and all(r.status == "ok" and r.fingerprint for r in recs.values())


def test_resume_fingerprints_only_existing_outputs(tmp_path, monkeypatch):
    corpus, out = _corpus(tmp_path / "c", 6), tmp_path / "out"
    up_front: list[str] = []
    real = job_mod.input_fingerprint
    monkeypatch.setattr(job_mod, "input_fingerprint", lambda p, o=None: up_front.append(p) or real(p, o))
    s1 = run_batch(batch_cfg(corpus, out))
    assert s1.ok == 6 and up_front == []  # a fresh job: fingerprints taken by the decode workers
    first = {r.input: r.fingerprint for r in iter_records(out)}
    assert all(first.values()) and first == {p: work_mod.input_fingerprint(p) for p in first}
    (out / "d0/f00.npy").unlink()
    s2 = run_batch(batch_cfg(corpus, out))
    assert (s2.ok, s2.skipped) == (1, 5)
    assert sorted(up_front) == sorted(p for p in first if not p.endswith("f00.wav"))


def test_skip_state_holds_no_record_of_a_missing_output(tmp_path, monkeypatch):
    """The records kept for resume are those of outputs that exist, made by these weights."""
    corpus, out = _corpus(tmp_path / "c", 5), tmp_path / "out"
    run_batch(batch_cfg(corpus, out))
    for p in list(out.rglob("*.npy"))[:3]:
        p.unlink()
    kept: list[int] = []
    real = job_mod._trusted

    def spy(prev, key, fingerprint, weights):
        kept.append(prev is not None)
        return real(prev, key, fingerprint, weights)

    monkeypatch.setattr(job_mod, "_trusted", spy)
    s = run_batch(batch_cfg(corpus, out))
    assert (s.ok, s.skipped) == (3, 2)
    assert kept == [True, True]  # asked only for the two outputs that exist


def test_outputs_do_not_depend_on_the_batch_size(tmp_path):
    corpus = _corpus(tmp_path / "c", 12)
    run_batch(batch_cfg(corpus, tmp_path / "a", batch_size=1))
    run_batch(batch_cfg(corpus, tmp_path / "b", batch_size=8))
    for p in (tmp_path / "a").rglob("*.npy"):
        np.testing.assert_allclose(np.load(p), np.load(tmp_path / "b" / p.relative_to(tmp_path / "a")), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the batch size per model (runtime.batch_size null)
@pytest.mark.parametrize(
    "preset, layers, expected",
    [("mel", None, BATCH_SIZE_FFT), ("stft", None, BATCH_SIZE_FFT), ("mel", [{"out_channels": 4, "kernel_size": 3}], BATCH_SIZE_CONV),
     ("default", None, BATCH_SIZE_CONV), ("sinc", None, BATCH_SIZE_CONV), ("tutorial", None, BATCH_SIZE_CONV)],
)
def test_unset_batch_size_is_the_models_own(preset, layers, expected):
    overrides = ["input=x.wav", f"model={preset}"] + ([f"model.layers={_flow(layers)}"] if layers else [])
    plan = build_plan(compose_config(overrides, "batch"), "batch")
    assert plan.config.runtime.batch_size == expected
    set_plan = build_plan(compose_config([*overrides, "runtime.batch_size=3"], "batch"), "batch")
    assert set_plan.config.runtime.batch_size == 3  # a set value is used as given


def _flow(layers: list) -> str:
    return "[" + ",".join("{" + ",".join(f"{k}:{v}" for k, v in layer.items()) + "}" for layer in layers) + "]"


def test_the_job_runs_mel_one_file_per_stack_call(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "c", 5)
    sizes: list[int] = []
    real = work_mod.Work.compute

    def compute(self, batch):
        sizes.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(work_mod.Work, "compute", compute)
    cfg = compose_config([f"input={corpus}", "model=mel", f"output.dir={tmp_path / 'out'}"], "batch")
    assert run_batch(cfg).ok == 5
    assert sizes == [1] * 5


def test_items_hold_no_audio_once_recorded(tmp_path, monkeypatch):
    """The job keeps its list of inputs to the end; what it keeps per input must not include the
    decoded audio (it would grow with the number of files)."""
    seen: list = []
    real_run = local_mod.LocalEngine.run

    def run(self, todo):
        seen.extend(todo)
        return real_run(self, todo)

    monkeypatch.setattr(local_mod.LocalEngine, "run", run)
    corpus = _corpus(tmp_path / "c", 7)
    (corpus / "bad.wav").write_bytes(b"not audio" * 20)
    s = run_batch(batch_cfg(corpus, tmp_path / "out", batch_size=2))
    assert (s.ok, s.failed) == (7, 1) and len(seen) == 8
    assert all(it.decoded is None for it in seen)


def test_summary_lists_a_bounded_number_of_failures(tmp_path):
    from conv_pipeline.engines.progress import FAILURES_KEPT, BatchSummary, count_record
    from conv_pipeline.sink.manifest import ManifestRecord

    s = BatchSummary(output_dir=tmp_path)
    n = FAILURES_KEPT + 7
    for i in range(n):
        count_record(s, ManifestRecord(input=f"f{i}.wav", status="failed", error=f"f{i}.wav: broken"))
    assert s.failed == n and len(s.failures) == FAILURES_KEPT and s.exit_code == 1
    text = s.format(max_failures=50)
    assert "f49.wav: broken" in text and "f50.wav" not in text and f"... and {n - 50} more" in text


@pytest.mark.parametrize("enabled", [True, False])
def test_frozen_heap_turns_the_collector_on_over_what_is_alive_and_restores_it(enabled):
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert gc.get_freeze_count() == 0
        with memory.frozen_heap():
            assert gc.isenabled()
            assert gc.get_freeze_count() > 1000  # the modules' objects, out of every collection
            cycle: list = []
            cycle.append(cycle)  # made inside: collected
            del cycle
            assert gc.collect() >= 1
        assert gc.isenabled() is enabled and gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_entry_points_import_with_the_collector_off_and_work_with_it_on(tmp_path):
    """``exit_after`` (every console entry point) turns the collector off for the imports; the
    engines turn it on for the work (``frozen_heap``)."""
    import subprocess

    code = (
        "import gc\n"
        "from conv_pipeline.cli.common import exit_after\n"
        "from conv_pipeline.engines.memory import frozen_heap\n"
        "def main():\n"
        "    print('imports', gc.isenabled())\n"
        "    with frozen_heap():\n"
        "        print('work', gc.isenabled())\n"
        "exit_after(main)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["imports False", "work True"]
