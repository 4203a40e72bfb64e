"""Issue 7: faults. A batch job killed (SIGKILL) at random moments and re-run; an output folder
that cannot be written; an output path taken by a file or a folder; a disk that fills during a
write; a decode worker process killed; a Ray actor killed. Whatever happens: a clear error or a
failed record, nothing corrupt under a final name, finished outputs intact, nothing silently lost.

How each fault is made (tests run as root, so ``chmod`` alone blocks nothing):

* not writable: a read-only bind mount (``mount --bind`` + ``remount,ro``: EROFS for root too),
  and a mode-0555 folder for a real process whose bounding set lost CAP_DAC_OVERRIDE (EACCES);
* disk full: a small tmpfs (``mount -t tmpfs -o size=1m``), later remounted larger for the re-run;
  and, always, ENOSPC injected into ``os.fsync``/``os.pwrite``/``os.write`` in this process;
* SIGKILL: ``os.kill`` on the batch job's process (a real ``scripts/batch_process.py``), at a
  moment each seed picks (after N records, while a temporary file exists, or at a random time);
* a dying worker: SIGKILL to a decode worker process (``batch.workers=process``), the pid
  reported by the worker itself; a Ray stack actor: SIGKILL to its process (a descendant of this
  one: no other Ray instance on the machine is touched).

Mounts are made only where ``mount`` works (root in a container that allows it) and always
unmounted; without them those tests skip and the injected-ENOSPC tests still run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conv_pipeline.load.audio import load_audio
from conv_pipeline.engines.job import run_batch
from conv_pipeline.errors import OutputError
from conv_pipeline.sink.manifest import MANIFEST_NAME, iter_records, read_manifest
from conv_pipeline.config.compose import compose_config
from conv_pipeline.engines.single import run
from helpers.bad_inputs import (
    BY_NAME,
    MATRIX_OVERRIDES,
    CASES,
    build,
    check_batch_records,
    compose_batch,
    hydra_quote,
    signal as make_signal,
    unprivileged_preexec,
)
from helpers.figures import FIGURES
from helpers.files import temp_files
from helpers.paths import SCRIPT
from helpers.run import cli_inprocess



def write_corpus(root: Path, n: int, seed: int = 0, seconds=(0.1, 0.4)) -> list[Path]:
    """``n`` stereo 16 kHz files in a few subfolders, of different lengths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = root / f"d{i % 3}" / f"f{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = int(16000 * rng.uniform(*seconds))
        sf.write(str(path), make_signal(frames, 2, 16000, seed=i), 16000, subtype="PCM_16")
        paths.append(path)
    return paths


def outputs_state(out: Path) -> dict[str, tuple[int, int]]:
    """Every finished feature file: (inode, mtime) -- a file redone would change. Finished means
    committed: the manifest's ``ok`` record is the commit point. A file renamed into place by a job
    killed before its record was appended is not finished and may be redone by the re-run."""
    committed = {rec.output for rec in iter_records(out) if rec.status == "ok" and rec.output}
    found = {}
    for name in sorted(committed):
        path = out / name
        if path.is_file():
            st = path.stat()
            found[name] = (st.st_ino, st.st_mtime_ns)
    return found


def all_loadable(out: Path) -> None:
    """Nothing partial under a final name: every feature file loads, without pickle, complete."""
    for p in out.rglob("*.npy"):
        if p.name.startswith(".") or not p.is_file():
            continue
        arr = np.load(p, allow_pickle=False)
        assert arr.dtype == np.float32 and arr.ndim == 2 and np.isfinite(arr).all(), p


# ---------------------------------------------------------------- mounts
def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def mounted(kind: str, path: Path, size: str = "1m"):
    """``kind``: ``ro`` (``path`` bind-mounted read-only onto itself) or ``tmpfs`` (a tmpfs of
    ``size`` at ``path``). Skips the test when mounting is not permitted here."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "ro":
            _mount("--bind", str(path), str(path))
            try:
                _mount("-o", "remount,ro,bind", str(path))
            except subprocess.CalledProcessError:
                _umount(path)
                raise
        else:
            _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount here ({err}); the injected faults below cover the code paths")
    try:
        yield path
    finally:
        _umount(path)


# ---------------------------------------------------------------- SIGKILL at random moments
def _kill_at(proc: subprocess.Popen, out: Path, rng: random.Random, n: int) -> str:
    """SIGKILL ``proc`` at a moment ``rng`` picks; returns which, or '' if the job ended first."""
    how = rng.choice(["records", "temp file", "time"])
    deadline = time.monotonic() + 120
    if how == "records":  # k more manifest lines than the previous runs left (skipped records included)
        k = rng.randrange(1, n)
        base = sum(1 for _ in iter_records(out))
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(1 for _ in iter_records(out)) >= base + k:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        how = f"after {k} records"
    elif how == "temp file":  # mid-write: a temporary file exists
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and any(".tmp-" in p.name for p in out.rglob(".*")):
                break
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0.5, 6.0))  # start-up, setup, or the job itself
        how = "at a random time"
    if proc.poll() is not None:
        return ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return how


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(tmp_path):
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, 36)
    out = tmp_path / "out"
    args = [f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "runtime.batch_size=3", "runtime.num_workers=1",
            "batch.progress=log", "batch.log_every_s=0.001"]
    kills, kept = [], {}
    for seed in (1, 2, 3):
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            how = _kill_at(proc, out, random.Random(seed), len(paths))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if how:
            kills.append(how)
            FIGURES.tried("fault")
        if out.exists():
            all_loadable(out)  # right after the kill: nothing partial under a final name
            now = outputs_state(out)
            assert all(now[k] == v for k, v in kept.items() if k in now) and set(kept) <= set(now)
            kept = now
    assert len(kills) >= 2, f"jobs ended before their kill ({kills}); use more files"
    print("SIGKILL moments:", kills)

    summary = run_batch(compose_batch([*args[:-2], "batch.progress=none"]))  # the re-run, to the end
    assert summary.failed == 0 and summary.ok + summary.skipped == len(paths) == summary.total
    records = read_manifest(out)
    assert set(records) == {str(p) for p in paths}
    assert all(r.status in ("ok", "skipped") for r in records.values())
    oks: dict[str, int] = {}
    for rec in iter_records(out):  # every line of every run
        if rec.status == "ok":
            oks[rec.input] = oks.get(rec.input, 0) + 1
    assert max(oks.values()) == 1, "a file was processed twice"  # each input processed exactly once
    final = outputs_state(out)
    assert all(final[k] == v for k, v in kept.items())  # what the killed runs finished was kept
    assert not temp_files(out)
    lines = (out / MANIFEST_NAME).read_bytes().split(b"\n")
    assert all(line == b"" or line.startswith(b"{") for line in lines)  # a torn line was ended, never glued
    # every output complete, loadable and right: an uninterrupted job with the same (seeded) weights
    ref = run_batch(compose_batch([f"input={corpus}", f"output.dir={tmp_path / 'ref'}", *MATRIX_OVERRIDES,
                                   "batch.progress=none"]))
    assert ref.ok == len(paths)
    for rec in records.values():
        got = np.load(out / rec.output, allow_pickle=False)
        want = np.load(tmp_path / "ref" / rec.output, allow_pickle=False)
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5 * max(1.0, float(np.abs(want).max()))
    FIGURES.outcome("fault", True, f"SIGKILL {kills}", count=False)


# ---------------------------------------------------------------- output folder not writable
def _one_line_error(run_, *needles: str) -> None:
    lines = run_.err_lines
    ok = run_.code == 2 and len(lines) == 1 and all(n in lines[0] for n in needles) and "Traceback" not in run_.err
    FIGURES.outcome("fault", ok, f"exit {run_.code}: {run_.err[-300:]}")
    assert ok, (run_.code, run_.err)


@pytest.mark.slow
def test_read_only_output_folder(tmp_path, capfd):
    """EROFS (a read-only bind mount): the CLI (whole and chunked) and the batch job stop with one
    line before decoding; a read-only subfolder fails only the files that go there."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    ro = tmp_path / "ro"
    with mounted("ro", ro):
        for chunk in ("null", "0.1"):
            r = cli_inprocess([f"input={wav}", f"output.dir={ro}", *MATRIX_OVERRIDES, f"runtime.chunk_seconds={chunk}"],
                              capfd)
            _one_line_error(r, "Read-only file system", str(ro))
        with pytest.raises(OutputError, match="Read-only file system"):
            run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={ro}", *MATRIX_OVERRIDES,
                                     "batch.progress=none"]))
        FIGURES.tried("fault")
        assert not any(ro.iterdir())

    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, 6)
    out = tmp_path / "out"
    (out / "d1").mkdir(parents=True)
    with mounted("ro", out / "d1"):
        s = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
        records = read_manifest(out)
        for p in paths:
            rec = records[str(p)]
            if p.parent.name == "d1":
                ok = rec.status == "failed" and "Read-only file system" in rec.error and f"d1/{p.stem}.npy" in rec.error
            else:
                ok = rec.status == "ok" and (out / rec.output).is_file()
            FIGURES.outcome("fault", ok, f"read-only subfolder: {rec}", count=False)
            assert ok, rec
        assert s.failed == 2 and s.ok == 4
        assert not any((out / "d1").iterdir())
        FIGURES.tried("fault")
    all_loadable(out)
    assert not temp_files(out)


@pytest.mark.slow
def test_unwritable_output_folder_real_process(tmp_path):
    """EACCES, as a user without write permission sees it: a real CLI process whose bounding set
    lost CAP_DAC_OVERRIDE, into a mode-0555 folder."""
    try:
        preexec = unprivileged_preexec()
    except RuntimeError as err:
        pytest.skip(str(err))
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    proc = subprocess.run([sys.executable, "-m", "conv_pipeline", f"input={wav}", f"output.dir={locked}",
                           *MATRIX_OVERRIDES], capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                          preexec_fn=preexec)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    ok = proc.returncode == 2 and len(lines) == 1 and "Permission denied" in lines[0] and str(locked) in lines[0]
    FIGURES.outcome("fault", ok, f"EACCES CLI: {proc.returncode} {proc.stderr[-300:]}")
    assert ok, proc.stderr
    assert not any(locked.iterdir())


# ---------------------------------------------------------------- output path taken
@pytest.mark.slow
def test_output_paths_taken_by_files_or_folders(tmp_path, capfd):
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    r = cli_inprocess([f"input={wav}", f"output.dir={taken}", *MATRIX_OVERRIDES], capfd)
    _one_line_error(r, "is an existing file, not a folder")
    with pytest.raises(OutputError, match="is an existing file, not a folder"):
        run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={taken}", *MATRIX_OVERRIDES,
                                 "batch.progress=none"]))
    FIGURES.tried("fault")
    assert taken.read_text() == "keep me"

    out = tmp_path / "out"
    (out / f"{wav.stem}.npy").mkdir(parents=True)  # the feature file's name is a folder
    for chunk in ("null", "0.1"):
        r = cli_inprocess([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, f"runtime.chunk_seconds={chunk}"], capfd)
        _one_line_error(r, f"cannot write {out / wav.stem}.npy")
        assert not temp_files(out)

    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, 6)
    out = tmp_path / "out2"
    out.mkdir()
    (out / "d0").write_text("a file where the job wants a folder")
    (out / "d1").mkdir()
    (out / "d1" / "f001.npy").mkdir()  # a folder where the job wants a file
    s = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
    records = read_manifest(out)
    for p in paths:
        rec = records[str(p)]
        blocked = p.parent.name == "d0" or p.name == "f001.wav"
        ok = (rec.status == "failed" and "cannot write" in rec.error) if blocked else rec.status == "ok"
        FIGURES.outcome("fault", ok, f"output path taken: {rec}", count=False)
        assert ok, rec
    assert (s.ok, s.failed) == (3, 3)
    FIGURES.tried("fault", 2)  # a file and a folder in the job's way
    assert (out / "d0").read_text() == "a file where the job wants a folder"
    all_loadable(out)
    assert not temp_files(out)


# ---------------------------------------------------------------- disk full
@pytest.mark.slow
def test_disk_full_on_a_small_tmpfs_then_rerun(tmp_path, capfd):
    """A 1 MB tmpfs: the weights fit, the features do not. The CLI says so in one line and leaves
    nothing partial; the batch job fails the files that do not fit (or stops with one line when
    even the manifest cannot grow), keeps what it finished, and a re-run after space is freed
    completes the rest without redoing anything."""
    long_wav = tmp_path / "in" / "long.wav"
    long_wav.parent.mkdir()
    sf.write(str(long_wav), make_signal(16000 * 20, 2), 16000, subtype="PCM_16")  # 128 x 1998 features: 1 MB
    full = tmp_path / "full"
    with mounted("tmpfs", full, "1m"):
        for chunk in ("null", "0.5"):
            r = cli_inprocess([f"input={long_wav}", f"output.dir={full}", *MATRIX_OVERRIDES,
                               f"runtime.chunk_seconds={chunk}"], capfd)
            _one_line_error(r, "cannot write", "long.npy")
            assert "No space left on device" in r.err or "disk is probably full" in r.err
            assert not (full / "long.npy").exists() and not temp_files(full)
        for p in full.iterdir():
            p.unlink()

        corpus = tmp_path / "corpus"
        paths = write_corpus(corpus, 12, seconds=(1.5, 2.0))  # ~100 KB of features each; weights 500 KB
        args = [f"input={corpus}", f"output.dir={full}", *MATRIX_OVERRIDES, "batch.progress=none", "runtime.batch_size=2"]
        try:
            s = run_batch(compose_batch(args))
            stopped = None
        except OutputError as err:  # the manifest itself could not grow: the job stops, one line
            stopped = str(err)
            assert ("No space left on device" in stopped or "disk is probably full" in stopped) and "\n" not in stopped
        FIGURES.tried("fault")
        records = read_manifest(full)
        done = [r for r in records.values() if r.status == "ok"]
        failed = [r for r in records.values() if r.status == "failed"]
        assert all("No space left on device" in r.error or "disk is probably full" in r.error for r in failed)
        assert stopped or failed, "the disk never filled"
        if stopped is None:
            assert s.ok == len(done) and s.failed == len(failed) and len(records) == len(paths)
        all_loadable(full)
        assert not temp_files(full)
        kept = outputs_state(full)
        assert set(kept) == {r.output for r in done}

        _mount("-o", "remount,size=16m", str(full))  # space freed
        s = run_batch(compose_batch(args))
        assert s.failed == 0 and s.ok + s.skipped == len(paths)
        assert s.skipped >= len(done)
        final = outputs_state(full)
        assert all(final[k] == v for k, v in kept.items())  # finished outputs intact, not redone
        assert all(r.status in ("ok", "skipped") for r in read_manifest(full).values())
        all_loadable(full)
        assert not temp_files(full)
        FIGURES.outcome("fault", True, "disk full", count=False)


class _Enospc:
    """Raise ENOSPC from the ``n``-th call of ``fn`` on (a disk that fills up)."""

    def __init__(self, fn, after: int = 0) -> None:
        self.fn, self.after, self.calls = fn, after, 0

    def __call__(self, *a, **k):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fn(*a, **k)


@pytest.mark.parametrize("where", [pytest.param("fsync", marks=pytest.mark.slow), "pwrite", "manifest"])
def test_disk_full_injected(tmp_path, monkeypatch, where):
    """ENOSPC injected in this process where the real writes happen: the feature file's fsync
    (whole-file), the chunked writer's pwrite, the manifest's append. A clear OutputError;
    nothing under a final name but complete files; no temporary file."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    out = tmp_path / "out"
    overrides = [f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES]
    if where == "fsync":
        run(compose_config(overrides))  # weights and config written; now the disk is full
        (out / f"{wav.stem}.npy").unlink()
        monkeypatch.setattr(os, "fsync", _Enospc(os.fsync))
    elif where == "pwrite":
        overrides.append("runtime.chunk_seconds=0.1")
        monkeypatch.setattr(os, "pwrite", _Enospc(os.pwrite))
    else:
        import types

        import conv_pipeline.sink.manifest as manifest_mod

        full_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
        full_os.write = _Enospc(os.write)
        monkeypatch.setattr(manifest_mod, "os", full_os)  # the manifest's appends only
    with pytest.raises(OutputError) as err:
        run(compose_config(overrides))
    FIGURES.outcome("fault", "No space left on device" in str(err.value) and "\n" not in str(err.value), str(err.value))
    assert "No space left on device" in str(err.value)
    monkeypatch.undo()
    assert not temp_files(tmp_path)
    all_loadable(out) if out.exists() else None
    if where != "manifest":
        assert not (out / f"{wav.stem}.npy").exists()
    else:  # the features were complete before the manifest failed: they stay, whole
        assert np.load(out / f"{wav.stem}.npy", allow_pickle=False).shape[0] == 128


# ---------------------------------------------------------------- a decode worker process killed
@contextlib.contextmanager
def watching(killer, stop: threading.Event):
    """``killer`` runs in a thread while the block runs; then ``stop`` is set and the thread joined."""
    watcher = threading.Thread(target=killer)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _reporting_decode(path, audio):
    """A decode worker that says who it is (a file in the corpus's hidden .pids folder) and
    takes a moment, so that a kill can land while it holds files."""
    pids = Path(path).parents[1] / ".pids"
    pids.mkdir(exist_ok=True)
    (pids / str(os.getpid())).touch()
    time.sleep(0.15)
    return load_audio(path, audio)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 8])
def test_decode_worker_killed(tmp_path, seed):
    """SIGKILL to a decode worker process at a random moment: its files are decoded again one at
    a time (or, if that dies too, get a failed record); none is lost, the others are unaffected."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, 10, seed=seed)
    out = tmp_path / "out"
    rng = random.Random(seed)
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        pids = corpus / ".pids"
        time.sleep(rng.uniform(0.0, 0.5))
        while not stop.is_set() and not killed:
            live = sorted(pids.iterdir()) if pids.exists() else []
            if live:
                pid = int(rng.choice(live).name)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    (pids / str(pid)).unlink(missing_ok=True)
            time.sleep(0.01)

    with watching(killer, stop):
        s = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none",
                                     "batch.workers=process", "runtime.num_workers=2", "runtime.batch_size=2"]),
                      decode=_reporting_decode)
    FIGURES.tried("fault", len(killed))
    assert killed, "the job ended before a worker could be killed"
    records = read_manifest(out)
    assert set(records) == {str(p) for p in paths} and s.total == len(paths)  # none silently lost
    for rec in records.values():
        ok = rec.status == "ok" or (rec.status == "failed" and "the decoder crashed on this file" in rec.error)
        FIGURES.outcome("fault", ok, f"worker killed: {rec}", count=False)
        assert ok, rec
    all_loadable(out)
    s2 = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
    assert s2.failed == 0 and s2.ok + s2.skipped == len(paths)  # a re-run retries any failed one


# ---------------------------------------------------------------- engine=ray
def _descendants(pid: int) -> dict[int, str]:
    """Processes below ``pid`` (from /proc): pid -> command line."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd[int(entry)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = cmd.get(child, "")
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import logging

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_bad_inputs(ray_local, tmp_path):
    """engine=ray over every list-able bad input at once: the same records as the local engine."""
    cases = [c for c in CASES if not c.overrides and not c.corpus_refused and c.name not in ("non_utf8_name", "unreadable")]
    paths = {c.name: build(c, tmp_path / "in") for c in cases}
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths.values()), encoding="utf-8")
    out = tmp_path / "out"
    s = run_batch(compose_batch([f"input={hydra_quote(listing)}", f"output.dir={out}", *MATRIX_OVERRIDES, "engine=ray",
                                 "batch.progress=none", "runtime.batch_size=4"]))
    assert s.ok == sum(c.ok for c in cases) and s.failed == sum(not c.ok for c in cases)
    check_batch_records(out, paths, cases, "ray")


@pytest.mark.slow
def test_ray_actor_killed(ray_local, tmp_path):
    """SIGKILL to the stack actor's process mid-job: Ray restarts it and retries its calls; a file
    whose call is lost for good gets a failed record. None is lost; a re-run completes."""
    corpus = tmp_path / "corpus"
    paths = write_corpus(corpus, 24, seconds=(0.5, 1.0))
    out = tmp_path / "out"
    killed: list[int] = []
    stop = threading.Event()
    me = os.getpid()

    def killer() -> None:
        while not stop.is_set() and not killed:
            if sum(1 for _ in iter_records(out)) >= 4:
                for pid, cmd in _descendants(me).items():
                    if "_StackActor" in cmd:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        break
            time.sleep(0.005)

    with watching(killer, stop):
        s = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "engine=ray",
                                     "batch.progress=none", "runtime.batch_size=2"]))
    FIGURES.tried("fault", len(killed))
    assert killed, "the job ended before the actor could be killed"
    records = read_manifest(out)
    assert set(records) == {str(p) for p in paths} and s.total == len(paths)
    print("after killing the actor:", s.format())
    for rec in records.values():
        ok = rec.status == "ok" or (rec.status == "failed" and "no result from the Ray pipeline" in rec.error)
        FIGURES.outcome("fault", ok, f"actor killed: {rec}", count=False)
        assert ok, rec
    all_loadable(out)  # (the killed actor may have left its temporary file: the next job removes it)
    s2 = run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
    assert s2.failed == 0 and s2.ok + s2.skipped == len(paths)
    assert not temp_files(out)
