"""Issue 12, findings 13 and 19: signals and decode worker processes; Hydra options that write
outside ``output.dir``.

13. ``batch.workers=process``: a batch job (a real ``scripts/batch_process.py``, in a session of
    its own so that its process group is exactly the job and what it started) is SIGKILLed,
    SIGTERMed or Ctrl-C'd (SIGINT to the whole group, as a terminal does) mid-run. Afterwards no
    process of its group is left (the forkserver, the resource tracker and the workers die with
    the job), its stdout pipe ends (``... | cat`` would), SIGTERM / SIGINT end with exit status
    143 / 130 and one line, no traceback from anyone, every finished feature file has its ``ok``
    record, and the same command run again completes the folder.
19. ``hydra/job_logging=default`` (a log file in the working folder), ``hydra.run.dir=X`` (a
    folder created) and ``hydra.job.chdir=true`` (the working folder changed) are refused in one
    line (exit 2) before Hydra runs; logging choices that write nothing still work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.figures import FIGURES
from helpers.files import files_under, temp_files
from helpers.paths import SCRIPT
from helpers.run import cli_inprocess

from conv_pipeline.sink.manifest import iter_records, read_manifest

FILES = 36  # 3 s at 44.1 kHz each, resampled to 16 kHz in the workers: a few seconds of work
JOB_ARGS = ("batch.workers=process", "runtime.num_workers=2", "runtime.batch_size=2", "batch.progress=none")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signals") / "corpus"
    for i in range(FILES):
        path = root / f"d{i % 3}" / f"f{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        sf.write(str(path), (0.3 * rng.uniform(-1, 1, (3 * 44100, 1))).astype(np.float32), 44100, subtype="PCM_16")
    return root


def group_members(pgid: int) -> dict[int, str]:
    """Live processes of process group ``pgid`` (from /proc; zombies excluded): pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:200]
        except (OSError, ValueError, IndexError):
            continue
    return found


def records_count(out: Path) -> int:
    try:
        return sum(1 for _ in iter_records(out))
    except Exception:  # noqa: BLE001 - not there yet, or a line being written
        return 0


def start_job(corpus: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), f"input={corpus}", f"output.dir={out}", *JOB_ARGS],
        cwd=str(out.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )


def wait_mid_run(proc: subprocess.Popen, out: Path, records: int = 3) -> None:
    """Until ``records`` manifest lines exist (workers running, outputs finished, more to come)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and proc.poll() is None and records_count(out) < records:
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before the signal; use more or longer files"
    assert records_count(out) >= records, "the job wrote nothing within 40 s"
    assert len(group_members(proc.pid)) >= 3, group_members(proc.pid)  # the job, the forkserver, workers


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [
    (signal.SIGKILL, False),  # kill -9 PID
    (signal.SIGTERM, False),  # kill PID (a scheduler, systemd, timeout)
    (signal.SIGTERM, True),   # kill -- -PGID
    (signal.SIGINT, True),    # Ctrl-C in a terminal: the whole foreground group
], ids=["SIGKILL", "SIGTERM", "SIGTERM-group", "SIGINT-group"])
def test_signal_ends_the_job_and_its_workers(corpus, tmp_path, sig, to_group):
    out = tmp_path / "out"
    proc = start_job(corpus, out)
    try:
        wait_mid_run(proc, out)
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        try:  # stdout and stderr read to their end, as `... | cat` does: no process may hold them
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            left = group_members(proc.pid)
            pytest.fail(f"the job's pipes never ended after {sig.name}: held by {left}")
        deadline = time.monotonic() + 10
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_members(proc.pid)
    finally:
        for pid in group_members(proc.pid):  # what the old code left behind: end it here
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = stderr.decode("utf-8", "replace")
    lines = [line for line in err.splitlines() if line.strip()]
    ok = not left and "Traceback" not in err and "Error" not in err
    if sig == signal.SIGKILL:
        ok = ok and proc.returncode == -signal.SIGKILL
    else:
        want = {signal.SIGTERM: (143, "batch_process: terminated (SIGTERM)"),
                signal.SIGINT: (130, "batch_process: interrupted (SIGINT)")}[sig]
        ok = ok and proc.returncode == want[0] and bool(lines) and lines[-1].startswith(want[1]) \
            and "run the same command again to resume" in lines[-1] \
            and sum("SIGTERM" in line or "SIGINT" in line for line in lines) == 1
        # durable: every finished feature file has its ok record and the other way round
        oks = {rec.output for rec in iter_records(out) if rec.status == "ok"}
        npys = {p for p in files_under(out) if p.endswith(".npy") and not p.split("/")[-1].startswith(".")}
        ok = ok and oks == npys and not temp_files(out)
    FIGURES.outcome("fault", ok, f"{sig.name} to the {'group' if to_group else 'job'}: rc {proc.returncode}, "
                                 f"left {left}, stderr {err[-600:]!r}")
    assert ok, (proc.returncode, left, err[-2000:], stdout[-500:])

    again = subprocess.run([sys.executable, str(SCRIPT), f"input={corpus}", f"output.dir={out}", *JOB_ARGS],
                           check=False, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    records = read_manifest(out)
    assert len(records) == FILES and all(r.status in ("ok", "skipped") for r in records.values())
    assert sum(1 for p in files_under(out) if p.endswith(".npy")) == FILES


# ---------------------------------------------------------------- finding 19: Hydra's own files
@pytest.mark.parametrize("overrides, needle", [
    (["hydra/job_logging=default"], "hydra/job_logging=default would write a log file"),
    (["hydra/hydra_logging=hydra_debug"], "hydra/hydra_logging=hydra_debug would write a log file"),
    (["hydra.run.dir=RUN", "hydra.job.chdir=true"], "'hydra.run.dir=RUN': refused"),
    (["hydra.run.dir=RUN"], "'hydra.run.dir=RUN': refused"),
    (["hydra.job.chdir=true"], "'hydra.job.chdir=true': refused"),
    (["+hydra.runtime.cwd=RUN"], "refused"),
    (["-m", "hydra/job_logging=console,default"], "hydra/job_logging=default would write a log file"),
    (["~hydra/job_logging"], "hydra/job_logging must be named"),
], ids=["job_logging-default", "hydra_logging-debug", "run-dir-chdir", "run-dir", "chdir", "runtime", "sweep", "delete"])
@pytest.mark.parametrize("entry", ["cli", "batch"])
def test_hydra_cannot_write_outside_output_dir(overrides, needle, entry, tmp_path, capfd, monkeypatch):
    from helpers.audio import write_audio

    wav = write_audio(tmp_path / "in" / "a.wav")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    argv = [f"input={wav}", f"output.dir={out}", *(o.replace("RUN", str(tmp_path / "run")) for o in overrides)]
    r = cli_inprocess(argv, capfd, main="conv_pipeline.cli.main" if entry == "cli" else str(SCRIPT))
    needle = needle.replace("RUN", str(tmp_path / "run"))
    ok = r.code == 2 and len(r.err_lines) == 1 and needle in r.err and "Traceback" not in r.err \
        and not any(work.iterdir()) and not (tmp_path / "run").exists() and not out.exists() \
        and Path.cwd() == work
    FIGURES.outcome("attack", ok, f"{entry} {overrides}: {r.code} {r.err[-300:]!r}")
    assert ok, (r.code, r.err, list(work.iterdir()))


@pytest.mark.parametrize("choice", ["hydra/job_logging=console", "hydra/job_logging=disabled",
                                    "hydra/job_logging=none", "hydra/job_logging=stdout",
                                    "hydra/hydra_logging=none", "hydra.job.chdir=false"])
def test_logging_choices_that_write_nothing_still_work(choice, tmp_path, capfd, monkeypatch):
    from helpers.audio import write_audio

    wav = write_audio(tmp_path / "in" / "a.wav")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    r = cli_inprocess([f"input={wav}", f"output.dir={out}", choice], capfd)
    assert r.code == 0, r.err
    assert (out / "a.npy").exists() and not any(work.iterdir()) and Path.cwd() == work


@pytest.mark.slow
def test_a_config_file_cannot_make_hydra_write_outside_output_dir(tmp_path):
    """What the command line may not set may not come from a config file picked with
    --config-dir/--config-name either: one line, exit 2, no run folder; a harmless file runs."""
    sf.write(str(tmp_path / "x.wav"), np.zeros(16000, np.float32) + 0.01, 16000)
    (tmp_path / "evil.yaml").write_text(
        "defaults:\n  - config\n  - _self_\nhydra:\n  run:\n    dir: CREATED\n  job:\n    chdir: true\n")
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nmodel:\n  name: mine\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cli(name: str, out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "conv_pipeline", "--config-dir", str(tmp_path), "--config-name", name,
                               "input=x.wav", f"output.dir={out}"], cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=120, env=env)

    proc = cli("evil", "o1")
    lines = proc.stderr.strip().splitlines()
    ok = proc.returncode == 2 and len(lines) == 1 and "hydra.run.dir=CREATED, hydra.job.chdir=true" in lines[0]
    ok = ok and not (tmp_path / "CREATED").exists() and not (tmp_path / "o1").exists()
    FIGURES.outcome("attack", ok, f"config file setting hydra.run.dir: {proc.stderr[-300:]}")
    assert ok, proc.stderr
    proc = cli("mine", "o2")
    assert proc.returncode == 0 and (tmp_path / "o2" / "x.npy").is_file(), proc.stderr
