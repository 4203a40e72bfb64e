"""Issue 12, the output folder under attack: the lock holds when ``output.dir`` is removed (finding
3), a starting job never deletes a live writer's temporary files (5), a CLI run into a batch folder
keeps the folder's audio settings (6), a file that changes between the passes of the chunked path
is refused (7), and a FIFO among the run's own files never hangs a run (12).

Lock, FIFO and concurrent-writer cases run real processes (``python -m conv_pipeline``,
``scripts/batch_process.py``) and are ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.audio import write_audio
from helpers.figures import FIGURES
from helpers.paths import ROOT, SCRIPT
from helpers.run import assert_one_line_error, cli_inprocess, run_script

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=str(cwd), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout: float = 60.0, step: float = 0.002) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def _stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped (``T`` in /proc): a rename
    or write already inside the kernel completes after ``kill`` returns, which would race with
    removing the folder the process writes into."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        try:
            states = [(Path(t) / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            return True  # no /proc (or the process is gone): nothing more to wait for
        return all(s in ("T", "t") for s in states)

    assert _wait_for(stopped, timeout=10.0), f"process {pid} did not stop"


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


# ---------------------------------------------------------------- finding 3: the lock holds
def test_writes_stop_when_the_locked_folder_is_replaced(tmp_path):
    """In-process: once the locked folder is removed and created again, no write lands there,
    and the removed folder is not created again by a writer."""
    from conv_pipeline.sink.jobdir import OutputLock
    from conv_pipeline.sink.outputs import OutputDir
    from conv_pipeline.sink.writer import OutputDirLost

    out_dir = tmp_path / "O"
    out = OutputDir(out_dir)
    out.create()
    lock = OutputLock(out_dir)
    try:
        out.write_bytes("a/one.npy", b"1")  # the locked folder: fine
        shutil.rmtree(out_dir)
        with pytest.raises(OutputDirLost, match="removed or replaced"):
            out.write_bytes("a/two.npy", b"2")
        assert not out_dir.exists()  # not created again
        out_dir.mkdir()  # someone else's folder now, under the same name
        with pytest.raises(OutputDirLost, match="removed or replaced"):
            out.write_bytes("b.npy", b"3")
        with pytest.raises(OutputDirLost), out.writing("c.npy") as dest:
            dest.write_bytes(b"4")
        assert sorted(f.name for f in out_dir.rglob("*")) == []
    finally:
        lock.release()
    out.write_bytes("b.npy", b"3")  # released: no guard any more
    FIGURES.outcome("fault", True, "locked folder replaced (in-process)")


def test_manifest_appends_stop_when_the_locked_folder_is_replaced(tmp_path):
    """The job's failed records must not land in the manifest of the folder that replaced its own
    (another job's): the manifest append checks the lock's folder too, and the job stops."""
    from conv_pipeline.sink.jobdir import OutputLock
    from conv_pipeline.sink.manifest import ManifestRecord
    from conv_pipeline.sink.manifest_sink import ManifestSink
    from conv_pipeline.sink.outputs import OutputDir
    from conv_pipeline.sink.writer import OutputDirLost

    out_dir = tmp_path / "O"
    out = OutputDir(out_dir)
    out.create()
    lock = OutputLock(out_dir)
    try:
        sink = ManifestSink(out)
        shutil.rmtree(out_dir)
        out_dir.mkdir()  # another job's folder now
        what = "the manifest append never writes into a folder that replaced the locked one"
        try:
            sink.add([ManifestRecord(input="x.wav", status="failed", error="x.wav: lost")])
            stopped = False
        except OutputDirLost:
            stopped = True
        FIGURES.outcome("fault", stopped and not (out_dir / "manifest.jsonl").exists(), what)
        assert stopped
    finally:
        lock.release()


@pytest.mark.slow
def test_job_whose_folder_is_removed_never_writes_into_the_new_one(tmp_path):
    """Finding 3 through real processes: job 1 (seed 0) is stopped mid-run, its folder removed, job
    2 (seed 1) runs on the same path to the end, then job 1 resumes: it must stop (one line, no
    traceback) and every feature file in the folder must still be job 2's (seed 1)."""
    src = tmp_path / "in"
    for i in range(60):
        write_audio(src / f"f{i:02d}.wav", seconds=2.0, seed=i)
    out, ref = tmp_path / "O", tmp_path / "R"
    common = [f"input={src}", "runtime.batch_size=1", "batch.progress=none"]
    job1 = _start([sys.executable, str(SCRIPT), *common, f"output.dir={out}", "seed=0"], tmp_path)
    try:
        assert _wait_for(lambda: _lines(out / "manifest.jsonl") >= 3), "job 1 wrote nothing"
        _stop(job1.pid)
        assert job1.poll() is None and _lines(out / "manifest.jsonl") < 60, "job 1 ended before it could be stopped"
        shutil.rmtree(out)
        job2 = run_script(*common, f"output.dir={out}", "seed=1", cwd=tmp_path)
        assert job2.returncode == 0, job2.stderr
    finally:
        os.kill(job1.pid, signal.SIGCONT)
    out1, err1 = job1.communicate(timeout=120)
    err1 = out1 + err1
    reference = run_script(*common, f"output.dir={ref}", "seed=1", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    mismatched = [
        p.name for p in sorted(ref.glob("*.npy"))
        if not np.allclose(np.load(out / p.name), np.load(p), atol=1e-5)
    ]
    ok = (
        job1.returncode != 0 and "Traceback" not in err1 and "removed or replaced" in err1 and not mismatched
    )
    FIGURES.outcome("fault", ok, f"folder removed under a job: exit {job1.returncode}, {len(mismatched)} mismatched")
    assert not mismatched, f"{len(mismatched)} of 60 files are not the folder's model's: {mismatched[:5]}"
    assert job1.returncode != 0, err1
    assert "Traceback" not in err1 and "removed or replaced" in err1, err1


# ---------------------------------------------------------------- finding 5: live temporaries
def test_clean_up_keeps_temporaries_of_live_writers(tmp_path):
    """Only temporaries whose owner is dead on this host (or that name no owner) are removed."""
    from conv_pipeline.sink.outputs import clean_temp_files
    from conv_pipeline.sink.writer import host_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = host_tag()
        other_host = "0" * 8 if host != "0" * 8 else "1" * 8
        keep = [f".a.npy.tmp-{host}-{live.pid}-0123abcd", f"sub/.b.npy.tmp-{host}-{os.getpid()}-0123abcd",
                f".c.npy.tmp-{other_host}-{dead_pid}-0123abcd"]
        gone = [f".d.npy.tmp-{host}-{dead_pid}-0123abcd", ".e.npy.tmp-0123abcd",
                f".f.npy.tmp-{host}-{dead_pid}-0123abcd.features.tmp-{host}-{dead_pid}-89abcdef"]
        for rel in keep + gone:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(b"partial")
        assert clean_temp_files(tmp_path) == len(gone)
        assert all((tmp_path / rel).exists() for rel in keep)
        assert not any((tmp_path / rel).exists() for rel in gone)
    finally:
        live.kill()
        live.wait()


def test_temporary_names_carry_their_owner(tmp_path):
    from conv_pipeline.sink.outputs import TEMP_RE, temp_owner_alive
    from conv_pipeline.sink.writer import atomic_write, host_tag

    seen = []
    atomic_write(tmp_path / "x.npy", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"1")))
    assert TEMP_RE.match(seen[0]) and f"{host_tag()}-{os.getpid()}-" in seen[0]
    assert temp_owner_alive(seen[0])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["same", "nested"])
def test_starting_job_keeps_a_running_cli_runs_temporary_file(tmp_path, where):
    """Finding 5: a CLI run writing a long file into the folder (or a folder inside it) is
    stopped while its temporary file exists; a batch job then starts on the folder and runs to
    the end; the CLI run, resumed, must complete its file."""
    long_wav = write_audio(tmp_path / "long" / "long.wav", seconds=60.0, seed=3)
    src = tmp_path / "in"
    for i in range(2):
        write_audio(src / f"s{i}.wav", seconds=0.5, seed=i)
    out = tmp_path / "O"
    cli_out = out if where == "same" else out / "nested"
    cli = _start([sys.executable, "-m", "conv_pipeline", f"input={long_wav}", f"output.dir={cli_out}",
                  "runtime.chunk_seconds=0.5", "audio.normalize=true"], ROOT)
    try:
        found = _wait_for(lambda: cli.poll() is not None or any(".tmp-" in p.name for p in out.rglob("*")), step=0.001)
        assert found and cli.poll() is None, "the CLI run ended before its temporary file could be seen"
        os.kill(cli.pid, signal.SIGSTOP)
        job = run_script(f"input={src}", f"output.dir={out}", "batch.progress=none", "audio.normalize=true", cwd=tmp_path)
        assert job.returncode == 0, job.stderr
    finally:
        os.kill(cli.pid, signal.SIGCONT)
    _, err = cli.communicate(timeout=120)
    ok = cli.returncode == 0 and (cli_out / "long.npy").is_file()
    FIGURES.outcome("fault", ok, f"job started beside a live CLI run ({where}): exit {cli.returncode} {err[-300:]}")
    assert cli.returncode == 0, err
    assert (cli_out / "long.npy").is_file()


# ---------------------------------------------------------------- finding 6: one folder, one audio setting
def test_cli_run_into_a_batch_folder_keeps_its_audio_settings(tmp_path, capfd):
    src = tmp_path / "in"
    write_audio(src / "a.wav", seconds=0.5, seed=1)
    write_audio(src / "b.wav", seconds=0.5, seed=2)
    out = tmp_path / "O"
    job = cli_inprocess([f"input={src}", f"output.dir={out}", "batch.progress=none"], capfd, main=str(SCRIPT))
    assert job.code == 0, job.err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = cli_inprocess([f"input={src / 'a.wav'}", f"output.dir={out}", "audio.sample_rate=8000"], capfd)
    ok = r.code == 2 and len(r.err_lines) == 1 and "audio.sample_rate=16000" in r.err and "Traceback" not in r.err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    FIGURES.outcome("fault", ok and after == before, f"CLI into a 16 kHz batch folder at 8 kHz: {r.code} {r.err[-300:]}")
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert "audio.sample_rate=16000" in r.err_lines[0] and "overwrite=true" in r.err_lines[0]
    assert after == before  # nothing replaced: features, config.yaml, weights, manifest
    # chunked too (refused before the features are committed; nothing replaced)
    r = cli_inprocess([f"input={src / 'a.wav'}", f"output.dir={out}", "audio.sample_rate=8000",
                       "runtime.chunk_seconds=0.1"], capfd)
    assert r.code == 2 and len(r.err_lines) == 1 and "audio.sample_rate=16000" in r.err, r.err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the same settings are fine, and overwrite=true replaces them
    assert cli_inprocess([f"input={src / 'a.wav'}", f"output.dir={out}"], capfd).code == 0
    r = cli_inprocess([f"input={src / 'a.wav'}", f"output.dir={out}", "audio.sample_rate=8000", "overwrite=true"], capfd)
    assert r.code == 0, r.err


# ---------------------------------------------------------------- finding 7: passes compared
@pytest.mark.parametrize(
    "overrides",
    [["audio.normalize=true"], ["model.layers.0.norm=group_norm"]],
    ids=["normalize", "group_norm"],
)
def test_file_truncated_between_passes_is_refused(tmp_path, monkeypatch, capfd, overrides):
    """The file is cut to 87/120 of its length right after the statistics pass: the run must
    refuse it in one line (exit 2) and write nothing."""
    from conv_pipeline import windows

    wav = write_audio(tmp_path / "long.wav", seconds=12.0, seed=4)
    size = wav.stat().st_size
    cut = []

    def then_truncate(real):  # the statistics pass ends by reading its moments: cut the file then
        def wrapped(self, *args):
            if not cut:
                cut.append(True)
                os.truncate(wav, 44 + (size - 44) * 87 // 120)
            return real(self, *args)

        return wrapped

    # per-output moments (audio.normalize, wide convs) or the windows' covariance (a small conv's group_norm)
    monkeypatch.setattr(windows.Moments, "mean_var", then_truncate(windows.Moments.mean_var))
    monkeypatch.setattr(windows.Covariance, "linear_mean_var", then_truncate(windows.Covariance.linear_mean_var))
    out = tmp_path / "O"
    r = cli_inprocess([f"input={wav}", f"output.dir={out}", "runtime.chunk_seconds=1", *overrides], capfd)
    ok = bool(cut) and r.code == 2 and len(r.err_lines) == 1 and "changed while it was being read" in r.err
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    FIGURES.outcome("fault", ok and not written, f"file truncated between passes ({overrides}): {r.code} {r.err[-300:]}")
    assert cut, "the statistics pass never ran"
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert "changed while it was being read" in r.err_lines[0] and "long.wav" in r.err_lines[0]
    assert "Traceback" not in r.err
    assert written == [], written


def test_passes_that_agree_are_untouched(tmp_path):
    """The comparison refuses nothing when the file does not change (re-iterating a list)."""
    import torch

    from conv_pipeline.config.schema import LayerConfig, ModelConfig
    from conv_pipeline.execute.chunked import iter_features
    from conv_pipeline.stack.stack import build_stack

    model = ModelConfig(in_channels=1, layers=[LayerConfig(out_channels=4, kernel_size=5, stride=2, norm="group_norm")])
    stack = build_stack(model, 1, seed=0).eval()
    blocks = [torch.randn(1, 300) for _ in range(4)]
    got = torch.cat(list(iter_features(blocks, stack)), dim=-1)
    with torch.no_grad():
        want = stack(torch.cat(blocks, dim=-1)[None])[0]
    assert torch.allclose(got, want, atol=1e-4)


# ---------------------------------------------------------------- finding 12: FIFOs never opened
@pytest.mark.slow
@pytest.mark.parametrize("name", ["manifest.jsonl", "config.yaml", "model.safetensors"])
@pytest.mark.parametrize("command", ["batch", "cli"])
def test_fifo_among_the_runs_files_is_refused(tmp_path, name, command):
    src = tmp_path / "in"
    write_audio(src / "a.wav", seconds=0.5, seed=1)
    out = tmp_path / "O"
    out.mkdir()
    os.mkfifo(out / name)
    args = [f"input={src if command == 'batch' else src / 'a.wav'}", f"output.dir={out}"]
    try:
        if command == "batch":
            proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path), env=ENV,
                                  capture_output=True, text=True, timeout=60)
        else:
            proc = subprocess.run([sys.executable, "-m", "conv_pipeline", *args], cwd=str(ROOT), env=ENV,
                                  capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        FIGURES.outcome("attack", False, f"FIFO as {name}: {command} hangs")
        pytest.fail(f"{command} hangs on a FIFO named {name}")
    ok = proc.returncode == 2 and "FIFO" in proc.stderr and "Traceback" not in proc.stderr
    FIGURES.outcome("attack", ok, f"FIFO as {name} ({command}): {proc.returncode} {proc.stderr[-300:]}")
    assert_one_line_error(proc, name, "FIFO")
    assert proc.returncode == 2
    assert not (out / "a.npy").exists()


# ---------------------------------------------------------------- file-system errors (issue 12, finding 14)
@pytest.mark.slow
def test_unreadable_output_folder_and_a_temporary_file_that_cannot_be_removed(tmp_path):
    """As a process that lost CAP_DAC_OVERRIDE (permissions apply even to root): an output folder
    it may not read is one line, exit 2; a dead writer's temporary file in a read-only subfolder is
    left in place with a warning and the job goes on (its other outputs are written)."""
    from helpers.bad_inputs import unprivileged_preexec

    corpus = tmp_path / "c"
    for i in range(2):
        write_audio(corpus / f"a{i}.wav", 0.3, seed=i)

    def job(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), f"input={corpus}", f"output.dir={out}", "batch.progress=none"],
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                              preexec_fn=unprivileged_preexec())

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o300)
    proc = job(closed)
    ok = proc.returncode == 2 and "Traceback" not in proc.stderr and assert_one_line_error(proc, "cannot open output.dir=")
    FIGURES.outcome("fault", bool(ok), f"unreadable output folder: {proc.stderr[-300:]}")
    stale = tmp_path / "stale"
    (stale / "sub").mkdir(parents=True)
    leftover = stale / "sub" / ".x.npy.tmp-deadbeef"
    leftover.write_bytes(b"")
    (stale / "sub").chmod(0o555)
    proc = job(stale)
    ok = proc.returncode == 0 and "Traceback" not in proc.stderr and leftover.exists()
    ok = ok and "cannot remove the temporary file" in proc.stderr and "2 ok" in proc.stdout
    FIGURES.outcome("fault", ok, f"temporary file in a read-only subfolder: {proc.stderr[-300:]}")
    assert ok, proc.stderr
