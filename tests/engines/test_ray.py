"""``engine=ray`` (issue 6): the batch job as a Ray Data pipeline, on a local Ray instance this
module starts once (2 CPUs) and stops at its end.

The contract is the local engine's: on the same corpus (good files of several rates, nested
folders, a long file for the chunked path, and broken files) both engines must write the same
files with the same arrays (bit for bit with ``runtime.batch_size=1``, where both engines run the
stack on one file at a time; within float32 rounding with padded batches, whose grouping depends
on decode order in both engines), the same manifest statuses, shapes and messages, and the same
exit status; resume and ``overwrite`` behave the same; inputs and outputs may live on S3 (moto's
server on 127.0.0.1, the ``s3`` fixture of ``tests/conftest.py``) or ``file://`` URLs. Resource settings
that cannot run fail with one line before anything is written.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from conv_pipeline.config.schema import EngineConfig  # noqa: E402
from conv_pipeline.engines.job import run_batch  # noqa: E402
from conv_pipeline.engines.ray_engine import plan_resources  # noqa: E402
from conv_pipeline.errors import ConfigError  # noqa: E402
from conv_pipeline.sink.manifest import read_manifest  # noqa: E402
from helpers.files import files_under  # noqa: E402
from helpers.jobs import LAYERS_CLI, META  # noqa: E402
from helpers.paths import SCRIPT  # noqa: E402
from helpers.presets import CASES, PRESETS, close  # noqa: E402
from helpers.storage import (  # noqa: E402  (the corpus and manifests the URL tests use)
    check_records,
    make_corpus,
    read_manifest_from_records,
    remote_files,
    same_results,
    tone,
    upload,
    url_job,
)

RAY = EngineConfig(name="ray")


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (the engine uses a running instance and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()


def config_without_output_dir(folder: Path) -> dict:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["output"].pop("dir")
    cfg.pop("input")
    return cfg


def assert_same_job(a: Path, b: Path, prefix_a: str, prefix_b: str, exact: bool) -> None:
    """Two output folders hold the same files, arrays and manifest results."""
    assert files_under(a) == files_under(b)
    assert not [p for p in files_under(a) if ".tmp-" in p]
    same_results(read_manifest(a), read_manifest(b), prefix_a, prefix_b)
    assert config_without_output_dir(a) == config_without_output_dir(b)
    for rel in files_under(a) - META:
        x, y = np.load(a / rel, allow_pickle=False), np.load(b / rel, allow_pickle=False)
        assert x.shape == y.shape and x.dtype == y.dtype == np.float32, (rel, x.shape, y.shape)
        diff = float(np.abs(x - y).max()) if x.size else 0.0
        if exact:
            assert np.array_equal(x, y), (rel, diff)
        else:  # padded batches differ from one file alone by float32 rounding (~3e-7 on this corpus)
            assert diff <= 1e-5, (rel, diff)


# ---------------------------------------------------------------- sizing (no Ray needed)
@pytest.mark.parametrize(
    "keys, cpus, gpus, want",
    [
        # (num_actors, cpus/actor, gpus/actor, read cpus)
        ({}, 2, 0, (1, 1.0, 0.0, 1.0)),  # the 2-core machine: one actor, one CPU left for decoding
        ({"num_actors": 2}, 2, 0, (2, 0.5, 0.0, 1.0)),
        ({}, 1, 0, (1, 0.5, 0.0, 0.5)),
        ({}, 16, 0, (12, 1.0, 0.0, 1.0)),  # a quarter of the CPUs stays for decoding
        ({"num_cpus_per_actor": 4}, 16, 0, (3, 4.0, 0.0, 1.0)),
        ({"num_gpus_per_actor": 1}, 32, 4, (4, 1.0, 1.0, 1.0)),  # one actor per GPU
        ({"num_gpus_per_actor": 0.5}, 8, 1, (2, 1.0, 0.5, 1.0)),
        ({"num_actors": 3, "num_cpus_per_actor": 1}, 4, 0, (3, 1.0, 0.0, 1.0)),  # explicit: fits exactly
    ],
)
def test_resource_plan(keys, cpus, gpus, want):
    s = plan_resources(EngineConfig(name="ray", **keys), cpus, gpus)
    assert (s.num_actors, s.cpus_per_actor, s.gpus_per_actor, s.read_cpus) == want
    assert s.num_actors * s.cpus_per_actor + s.read_cpus <= cpus  # a decode task always fits
    assert s.num_actors * s.gpus_per_actor <= gpus


@pytest.mark.parametrize(
    "keys, cpus, gpus, needle",
    [
        ({"num_gpus_per_actor": 1}, 2, 0, "engine.num_gpus_per_actor=1 but the Ray cluster has 0 GPU(s)"),
        ({"num_gpus_per_actor": 1, "num_actors": 3}, 8, 2, "needs 3 GPUs but the Ray cluster has 2"),
        ({"num_actors": 2, "num_cpus_per_actor": 1}, 2, 0, "the job would hang"),
        ({"num_cpus_per_actor": 2}, 2, 0, "leaves no CPU for the decode tasks"),
        ({"read_cpus": 4}, 2, 0, "engine.read_cpus=4"),
    ],
)
def test_resource_plan_refuses_what_cannot_run(keys, cpus, gpus, needle):
    with pytest.raises(ConfigError) as err:
        plan_resources(EngineConfig(name="ray", **keys), cpus, gpus)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the CLI (its own Ray instance)
@pytest.mark.slow
def test_cli_engine_ray(tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, str(SCRIPT), f"input={corpus}", f"output.dir={tmp_path / 'feats'}", LAYERS_CLI,
            "audio.sample_rate=8000", "runtime.batch_size=2", "engine=ray", "engine.num_cpus=2"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some inputs failed; the job did not
    assert "Traceback" not in proc.stderr
    assert f"{len(expected)} input(s): 6 ok, 0 skipped, 5 failed" in proc.stdout
    assert f"batch: {len(expected)}/{len(expected)} files" in proc.stderr  # progress, as the local engine
    assert "engine=ray on 2 CPU(s), 0 GPU(s): 1 stack actor(s) x 1 CPU" in proc.stderr
    check_records(read_manifest(tmp_path / "feats"), str(corpus), expected)

    # a setting engine=ray refuses: one line, exit 2, nothing written (sizing errors: below)
    proc = subprocess.run(
        [*args[:3], "output.dir=memory://never/feats", *args[4:]],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("batch_process: error: output.dir='memory://never/feats': memory://"), proc.stderr


# ---------------------------------------------------------------- the engine on a running instance
@pytest.mark.slow
def test_ray_equals_local_on_a_broken_corpus(ray_instance, tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus, long_file=True)  # long/seven.wav: 2.5 s > batch.long_file_seconds
    for batch_size, exact in ((1, True), (3, False)):
        local, remote = tmp_path / f"local{batch_size}", tmp_path / f"ray{batch_size}"
        long = dict(chunk_seconds=1.0, long_file_seconds=1.0)
        s_local = run_batch(url_job(corpus, local, batch_size=batch_size, **long))
        s_ray = run_batch(url_job(corpus, remote, batch_size=batch_size, engine=RAY, **long))
        assert (s_ray.total, s_ray.ok, s_ray.skipped, s_ray.failed, s_ray.exit_code, s_ray.in_channels) == (
            s_local.total, s_local.ok, s_local.skipped, s_local.failed, s_local.exit_code, s_local.in_channels,
        ) == (12, 7, 0, 5, 1, 1)
        assert s_ray.audio_seconds == pytest.approx(s_local.audio_seconds)
        assert sorted(e for _, e in s_ray.failures) == sorted(e for _, e in s_local.failures)
        check_records(read_manifest(remote), str(corpus), expected)
        assert_same_job(local, remote, str(corpus), str(corpus), exact)


@pytest.mark.slow
def test_ray_resume_and_overwrite(ray_instance, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus)
    out = tmp_path / "feats"
    s1 = run_batch(url_job(corpus, out, engine=RAY))
    assert (s1.ok, s1.skipped, s1.failed) == (6, 0, 5)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.npy")}

    # a killed run's leftovers, a repaired input, a deleted output
    (out / "c/.three.npy.tmp-0a1b2c3d").write_bytes(b"partial")
    tone(corpus / "bad/short.wav", 0.3, 8000, 7)
    (out / "a/one.npy").unlink()
    s2 = run_batch(url_job(corpus, out, engine=RAY))
    assert (s2.ok, s2.skipped, s2.failed, s2.exit_code) == (2, 5, 4, 1)
    records = read_manifest(out)
    assert records[str(corpus / "bad/short.wav")].status == "ok" and (out / "bad/short.npy").is_file()
    assert records[str(corpus / "a/one.wav")].status == "ok"
    assert records[str(corpus / "c/three.wav")].status == "skipped" and records[str(corpus / "c/three.wav")].shape
    for p, stat in before.items():
        if p.name != "one.npy":  # untouched
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat
    assert not [p for p in files_under(out) if ".tmp-" in p]

    s3_ = run_batch(url_job(corpus, out, engine=RAY, overwrite=True))
    assert (s3_.ok, s3_.skipped, s3_.failed) == (7, 0, 4)
    assert all(p.stat().st_ino != ino for p, (ino, _) in before.items())  # rewritten (new files renamed in)


@pytest.mark.slow
def test_ray_s3_round_trip(ray_instance, s3, tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    bucket = s3.bucket("ray-engine")
    upload(s3.fs, corpus, f"{bucket}/corpus")
    src, dst = f"s3://{bucket}/corpus", f"s3://{bucket}/feats"

    run_batch(url_job(corpus, tmp_path / "local", batch_size=1))
    s = run_batch(url_job(src, dst, batch_size=1, options=s3.options, engine=RAY))  # workers get the endpoint via storage.options
    assert (s.ok, s.failed, s.exit_code) == (6, 5, 1)
    records = read_manifest_from_records(s3.fs, f"{bucket}/feats")
    check_records(records, src, expected)
    same_results(read_manifest(tmp_path / "local"), records, str(corpus), src)
    outputs = {r.output for r in records.values() if r.output}
    assert remote_files(s3.fs, f"{bucket}/feats") == outputs | META
    assert {p for p in remote_files(s3.fs, bucket) if not p.startswith("corpus/")} == {f"feats/{r}" for r in outputs | META}
    for rel in outputs:
        got = np.load(io.BytesIO(s3.fs.cat(f"{bucket}/feats/{rel}")), allow_pickle=False)
        assert np.array_equal(got, np.load(tmp_path / "local" / rel)), rel

    again = run_batch(url_job(src, dst, options=s3.options, engine=RAY))
    assert (again.ok, again.skipped, again.failed) == (0, 6, 5)


@pytest.mark.slow
def test_ray_file_urls(ray_instance, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus)
    s = run_batch(url_job(f"file://{corpus}", f"file://{tmp_path / 'feats'}", engine=RAY))
    assert (s.ok, s.failed) == (6, 5)
    run_batch(url_job(corpus, tmp_path / "local"))
    assert_same_job(tmp_path / "local", tmp_path / "feats", str(corpus), str(corpus), exact=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine, extra, needle",
    [
        (EngineConfig(name="ray", num_gpus_per_actor=1), {}, "engine.num_gpus_per_actor=1 but the Ray cluster has 0 GPU(s)"),
        (EngineConfig(name="ray", num_actors=2, num_cpus_per_actor=1), {}, "the job would hang"),
        (EngineConfig(name="ray", num_actors=0), {}, "engine.num_actors must be null or an integer >= 1"),
        (RAY, {"out": "memory://ray/feats"}, "memory:// lives inside one process"),
    ],
)
def test_ray_settings_that_cannot_run(ray_instance, tmp_path, engine, extra, needle):
    corpus = tmp_path / "corpus"
    make_corpus(corpus)
    out = extra.get("out", tmp_path / "feats")
    cfg = url_job(corpus, out, engine=engine)
    if engine.num_gpus_per_actor:
        cfg.runtime.device = "auto"
    with pytest.raises(ConfigError) as err:
        run_batch(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "feats").exists()
    assert ray.is_initialized()  # a running instance is left as it was


# ---------------------------------------------------------------- the classic presets on Ray (issue 16)
@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_ray_presets_equal_their_torchaudio_references(ray_instance, tmp_path, preset):
    """mfcc, fbank and centred mel in Ray actors, three files of different lengths in one padded
    batch (``runtime.batch_size=3``): each file equals its torchaudio reference."""
    import soundfile as sf
    import torch

    from conv_pipeline.config.compose import compose_config
    from helpers.audio import make_audio

    lengths = {"a.wav": 16000 + 77, "b.wav": 9100, "c.wav": 5555}
    for i, (name, n) in enumerate(lengths.items()):
        make_audio(tmp_path / "in" / name, channels=1, frames=n, seed=i, subtype="FLOAT")
    out = tmp_path / "out"
    cfg = compose_config([f"input={tmp_path / 'in'}", f"output.dir={out}", *PRESETS[preset], "engine=ray",
                          "runtime.batch_size=3", "batch.progress=none"], config_name="batch")
    assert run_batch(cfg).exit_code == 0
    for name in lengths:
        x = torch.from_numpy(sf.read(tmp_path / "in" / name, dtype="float32")[0])
        close(preset, torch.from_numpy(np.load(out / name.replace(".wav", ".npy"))), CASES[preset][1](x))
