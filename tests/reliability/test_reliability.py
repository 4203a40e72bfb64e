"""Issue 7: the bad-input matrix (tests/helpers/bad_inputs.py, RELIABILITY.md) through the CLI and the
batch job, whole-file and chunked (``runtime.chunk_seconds``).

Every input ends in one of two ways, and nothing else:

* a correct output: the feature file loads with ``allow_pickle=False``, has the shape the
  geometry predicts and equals an independent computation (soundfile decode, torchaudio
  resample, ``F.conv1d`` layer by layer with the weights written next to it);
* a clear error: one line naming the file and the problem (exit 2 from the CLI, a ``failed``
  manifest record from the batch job), no traceback, nothing written for that file, and every
  other file of the same job unaffected.

The CLI runs in this process (``cli_inprocess``: its real ``main()``, exit status and file
descriptors 1 and 2) to keep the suite fast; a few real subprocesses (``test_real_processes_*``)
check that the in-process runs say what a real one would, with file permissions enforced even
as root. The batch job runs every case in one job per mode (in-process ``run_batch``), once as a
real ``scripts/batch_process.py`` process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conv_pipeline.load.audio import load_audio
from conv_pipeline.engines.job import run_batch
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import ConfigError, InputError, PipelineError
from conv_pipeline.sink.manifest import MANIFEST_NAME, read_manifest
from helpers.bad_inputs import (
    BY_NAME,
    CASES,
    MATRIX_OVERRIDES,
    SR,
    Case,
    build,
    check_batch_records,
    check_features,
    compose_batch,
    deny_reading,
    hydra_quote,
    is_clear_error,
    unprivileged_preexec,
    written_features,
)
from helpers.figures import FIGURES
from helpers.files import temp_files
from helpers.paths import ROOT, SCRIPT
from helpers.run import cli_inprocess

CHUNK = "0.1"  # seconds of audio per block: several blocks per file
MODES = {"whole": "runtime.chunk_seconds=null", "chunked": f"runtime.chunk_seconds={CHUNK}"}
# the batch job's chunked mode: files longer than 0.1 s (most cases) go alone through the chunked
# executor (its long-file path); the shorter ones still go into padded batches
BATCH_MODES = {"whole": ["runtime.chunk_seconds=null"],
               "chunked": [f"runtime.chunk_seconds={CHUNK}", f"batch.long_file_seconds={CHUNK}"]}


# ---------------------------------------------------------------- the CLI, every case, both modes
CLI_CASES = [c for c in CASES if c.cli]


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_matrix(case, tmp_path, capfd, monkeypatch):
    path = build(case, tmp_path / "in")
    if case.name == "unreadable":
        deny_reading(monkeypatch, path)
    results = {}
    for mode, chunk in MODES.items():
        out = tmp_path / f"out_{mode}"
        run = cli_inprocess([f"input={hydra_quote(path)}", *MATRIX_OVERRIDES, *case.overrides,
                             f"output.dir={out}", chunk], capfd)
        leftovers = temp_files(tmp_path)
        noise = [l for l in run.err_lines if "libmpg123" in l or l.startswith(("Warning:", "Note:", "[src/"))]
        if threading.active_count() > 1:
            # In-process only: an earlier test left a thread running (fsspec's IO loop, Ray), and
            # the decoder's C-level notes are held back only in a single-threaded process (as the
            # real command line is); they are not this file's verdict, so set them aside here.
            run = dataclasses.replace(run, err="\n".join(l for l in run.err_lines if l not in noise))
            noise = []
        if case.ok:
            ok = run.code == 0 and not leftovers and not noise and "Traceback" not in run.err
            FIGURES.outcome("bad input", ok, f"CLI {mode} {case.name}: exit {run.code}: {run.err[-300:]}")
            assert ok, run.err
            feature_file = out / f"{Path(case.filename).stem}.npy"
            assert f"wrote {out}{os.sep}" in run.out and ".npy shape" in run.out  # (capfd shows a non-UTF-8 byte as ?)
            results[mode] = check_features(out, feature_file, path, case)
            if case.name in ("truncated_wav", "lying_wav", "mp3_damaged", "mp3_truncated"):
                assert "holds less audio than its header declares" in run.err  # says what it did
        else:
            lines = run.err_lines
            ok = (run.code == 2 and len(lines) == 1 and lines[0].startswith("conv_pipeline: error: ")
                  and is_clear_error(lines[0], case, path) and not written_features(tmp_path) and not leftovers)
            FIGURES.outcome("bad input", ok, f"CLI {mode} {case.name}: exit {run.code}: {run.err[-300:]}")
            assert ok, (run.code, run.err)
            assert not out.exists() or not any(out.iterdir())  # not even model.safetensors
            results[mode] = lines[0]
    if case.ok:  # chunked execution gives the whole-file frames
        a, b = results["whole"], results["chunked"]
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-5 * max(1.0, float(np.abs(a).max()))
    else:
        assert all(n in results["chunked"] for n in case.needles)


@pytest.mark.parametrize("case", [c for c in CASES if c.ok and c.audio is not None],
                         ids=[c.name for c in CASES if c.ok and c.audio is not None])
def test_decoded_samples_are_the_written_ones(case, tmp_path):
    """Odd formats decode to the samples that were written (within the format's precision)."""
    path = build(case, tmp_path)
    want, tol = case.audio
    got = load_audio(path, AudioConfig(sample_rate=None)).waveform.numpy().T  # (T, C)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= tol + 1e-7


# ---------------------------------------------------------------- the batch job, every case in one job
def _batch_groups() -> dict[tuple[str, ...], list[Case]]:
    groups: dict[tuple[str, ...], list[Case]] = {}
    for c in CASES:
        if c.name == "non_utf8_name" or c.corpus_refused:  # a list file is UTF-8 text: the first goes
            continue  # through a folder (below); the others refuse the whole job (test_batch_channel_cases...)
        groups.setdefault(tuple(c.overrides), []).append(c)
    return groups


BATCH_GROUPS = _batch_groups()
GROUP_IDS = {(): "default", ("audio.sample_rate=null",): "native_rate", ("model=mel", "model.in_channels=1"): "mel"}
assert set(BATCH_GROUPS) == set(GROUP_IDS)


@pytest.mark.slow
@pytest.mark.parametrize("group", list(BATCH_GROUPS), ids=[GROUP_IDS[g] for g in BATCH_GROUPS])
@pytest.mark.parametrize("mode", list(BATCH_MODES))
def test_batch_matrix(mode, group, tmp_path, monkeypatch):
    """Every case of a group (same overrides) in one job over a list file: the failures never
    disturb the other files of the job."""
    cases = BATCH_GROUPS[group]
    paths = {c.name: build(c, tmp_path / "in") for c in cases}
    if "unreadable" in paths:
        deny_reading(monkeypatch, paths["unreadable"])
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths.values()), encoding="utf-8")
    out = tmp_path / "out"
    summary = run_batch(compose_batch([f"input={hydra_quote(listing)}", f"output.dir={out}", *MATRIX_OVERRIDES,
                                       *group, *BATCH_MODES[mode], "batch.progress=none", "runtime.batch_size=4"]))
    assert summary.ok == sum(c.ok for c in cases) and summary.failed == sum(not c.ok for c in cases)
    check_batch_records(out, paths, cases, mode)


@pytest.mark.parametrize("case", [c for c in CASES if c.corpus_refused], ids=[c.name for c in CASES if c.corpus_refused])
def test_batch_channel_cases_refuse_the_job_up_front(case, tmp_path):
    """A corpus holding a file the stack cannot take (a channel count the policy cannot make the
    stack's) is refused before anything is processed: one line naming the counts found, an example
    file and the fix; nothing written."""
    good = build(BY_NAME["flac24"], tmp_path / "in")
    path = build(case, tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good}\n{path}\n", encoding="utf-8")
    out = tmp_path / "out"
    channels = int(case.needles[0].split()[0])
    try:
        run_batch(compose_batch([f"input={hydra_quote(listing)}", f"output.dir={out}", *MATRIX_OVERRIDES,
                                 "batch.progress=none"]))
        outcome = "the job ran"
    except ConfigError as err:
        msg = str(err)
        wanted = [f"1 file with {channels} channel", str(path), case.needles[1], "model.in_channels=2"]
        outcome = "ok" if all(w in msg for w in wanted) and "\n" not in msg else msg
    ok = FIGURES.outcome("bad input", outcome == "ok" and not out.exists(), f"batch corpus with {case.name}: {outcome}")
    assert ok, outcome


@pytest.mark.slow
def test_batch_overflow_message_names_the_input(tmp_path):
    """Features that overflow in a padded batch: the failed record's message names the input (it
    named the output file before batch.py checked them per item)."""
    case = BY_NAME["overflow"]
    path = build(case, tmp_path / "in")
    build(BY_NAME["flac24"], tmp_path / "in")
    out = tmp_path / "out"
    run_batch(compose_batch([f"input={hydra_quote(tmp_path / 'in')}", f"output.dir={out}", *case.overrides,
                             "batch.progress=none"]))
    rec = read_manifest(out)[str(path)]
    ok = FIGURES.outcome("bad input", rec.status == "failed" and path.name in rec.error and "too large" in rec.error,
                         rec.error or "")
    assert ok, rec.error


def test_batch_folder_with_links_pipes_and_odd_names(tmp_path):
    """A folder input: a symlink loop between folders is searched once; a link loop between files,
    a dangling link and a FIFO fail alone; names that are not UTF-8, with a newline, quotes or
    non-ASCII characters are processed and recorded in valid JSON."""
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    os.symlink("..", corpus / "sub" / "up")  # sub/up -> corpus: a folder loop
    os.symlink(corpus, corpus / "sub" / "again")  # a second link to the same folder
    names = ["plain.wav", os.fsdecode(b"bad\xffname.wav"), "new\nline.wav", "my song 'live' \"x\" é ü.wav",
             "sub/deep.flac"]
    for i, name in enumerate(names):
        BY_NAME["pcm_24"].make(corpus / name) if name.endswith(".wav") else BY_NAME["flac24"].make(corpus / name)
    build(BY_NAME["symlink_loop"], corpus)
    build(BY_NAME["fifo"], corpus)
    os.symlink("nowhere.wav", corpus / "dangling.wav")
    out = tmp_path / "out"
    summary = run_batch(compose_batch([f"input={hydra_quote(corpus)}", f"output.dir={out}", *MATRIX_OVERRIDES,
                                       "batch.progress=none"]))
    records = read_manifest(out)
    manifest_text = (out / MANIFEST_NAME).read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert all(line.startswith("{") for line in manifest_text.splitlines())
    ok = {os.path.relpath(k, corpus) for k, r in records.items() if r.status == "ok"}
    failed = {os.path.relpath(k, corpus): r.error for k, r in records.items() if r.status == "failed"}
    assert ok == set(names)  # each real file once, whatever the links
    assert set(failed) == {"loop.wav", "loop_other.wav", "pipe.wav", "dangling.wav"}
    assert "symbolic link loop" in failed["loop.wav"] and "not a regular file" in failed["pipe.wav"]
    assert "symbolic link to a missing file" in failed["dangling.wav"]
    for name in names:
        rec = records[str(corpus / name)]
        path = corpus / name
        check_features(out, out / rec.output, path, BY_NAME["pcm_24"])
    FIGURES.tried("bad input", len(records))
    assert summary.total == len(records) == len(names) + 4


# ---------------------------------------------------------------- real processes
def _real(argv: list[str], cwd: Path, script: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        preexec = unprivileged_preexec()
    except RuntimeError as err:
        pytest.skip(str(err))
    cmd = [sys.executable, str(SCRIPT)] if script else [sys.executable, "-m", "conv_pipeline"]
    return subprocess.run([*cmd, *argv], cwd=str(cwd), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, preexec_fn=preexec,
                          errors="surrogateescape")


@pytest.mark.slow
def test_real_processes_cli(tmp_path, capfd):
    """What a user sees: one line and exit 2, or exit 0; file permissions enforced (root's
    CAP_DAC_OVERRIDE dropped in the child); the quoting hint works as given; a non-UTF-8 name
    with a strict stdout."""
    folder = tmp_path / "in"
    locked = build(BY_NAME["unreadable"], folder)
    odd = build(BY_NAME["odd_name"], folder)
    raw = build(BY_NAME["non_utf8_name"], folder)
    out = tmp_path / "out"
    common = [*MATRIX_OVERRIDES, f"output.dir={out}"]

    proc = _real([f"input={locked}", *common], tmp_path)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    ok = proc.returncode == 2 and len(lines) == 1 and "locked.wav: permission denied" in lines[0]
    FIGURES.outcome("bad input", ok, f"real CLI unreadable: {proc.returncode} {proc.stderr[-300:]}")
    assert ok, proc.stderr
    assert not out.exists()

    damaged = build(BY_NAME["mp3_damaged"], folder)  # libmpg123 prints notes on fd 2: held back
    proc = _real([f"input={damaged}", *common], tmp_path)
    noise = "Illegal Audio-MPEG-Header" in proc.stderr or "libmpg123" in proc.stderr
    ok = proc.returncode == 0 and not noise and "Traceback" not in proc.stderr
    FIGURES.outcome("bad input", ok, f"real CLI damaged mp3: {proc.returncode} {proc.stderr[-300:]}")
    assert ok, proc.stderr
    assert "holds less audio than its header declares" in proc.stderr

    proc = _real([f"input={odd}", *common], tmp_path)  # unquoted: Hydra cannot parse it
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    ok = proc.returncode == 2 and len(lines) == 1 and "quote the value for Hydra: input='" in lines[0]
    FIGURES.outcome("bad input", ok, f"real CLI unquoted odd name: {proc.returncode} {proc.stderr[-300:]}")
    assert ok, proc.stderr
    suggested = lines[0].split("quote the value for Hydra: ", 1)[1].split(" (in a shell", 1)[0]
    r = cli_inprocess([suggested, *common], capfd)  # the suggestion works as given
    FIGURES.outcome("bad input", r.code == 0, f"quoted odd name: {r.err[-300:]}")
    assert r.code == 0, r.err
    check_features(out, out / f"{odd.stem}.npy", odd, BY_NAME["odd_name"])

    # a name that is not UTF-8, with stdout as strict as under an en_US.UTF-8 locale
    proc = _real([f"input={hydra_quote(raw)}", *common], tmp_path, env={"PYTHONIOENCODING": "utf-8:strict"})
    ok = proc.returncode == 0 and "Traceback" not in proc.stderr and f"wrote {out / raw.stem}.npy" in proc.stdout
    FIGURES.outcome("bad input", ok, f"real CLI non-UTF-8 name: {proc.returncode} {proc.stderr[-300:]}")
    assert ok, proc.stderr
    check_features(out, out / f"{raw.stem}.npy", raw, BY_NAME["non_utf8_name"])


@pytest.mark.slow
def test_real_processes_batch(tmp_path):
    """``scripts/batch_process.py`` over every list-able case at once, as an unprivileged root:
    exit 1, no traceback, each failure one line in the summary, every good file written."""
    cases = list(BATCH_GROUPS[()])
    folder = tmp_path / "in"
    paths = {c.name: build(c, folder) for c in cases}
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths.values()), encoding="utf-8")
    out = tmp_path / "out"
    proc = _real([f"input={listing}", f"output.dir={out}", *MATRIX_OVERRIDES, "runtime.batch_size=4"], tmp_path,
                 script=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr  # (decoder notes may appear: decode threads share fd 2)
    n_ok, n_failed = sum(c.ok for c in cases), sum(not c.ok for c in cases)
    assert f"{len(cases)} input(s): {n_ok} ok, 0 skipped, {n_failed} failed" in proc.stdout
    check_batch_records(out, paths, cases, "process")
    for rec in read_manifest(out).values():
        if rec.status == "failed":
            assert f"  {rec.error}\n" in proc.stdout  # listed, one line each


def test_batch_list_may_name_files_that_are_not_utf8(tmp_path):
    raw = build(BY_NAME["non_utf8_name"], tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(raw) + b"\n")
    try:
        s = run_batch(compose_batch([f"input={hydra_quote(listing)}", f"output.dir={tmp_path / 'out'}",
                                     *MATRIX_OVERRIDES, "batch.progress=none"]))
        ok = s.ok == 1
    except PipelineError:
        ok = False
    FIGURES.outcome("bad input", ok, "batch list naming a non-UTF-8 file")
    assert ok


def test_batch_script_prints_names_that_are_not_utf8(tmp_path, monkeypatch):
    import io

    from hydra.core.global_hydra import GlobalHydra

    from conv_pipeline.cli.batch import main as batch_main

    build(BY_NAME["non_utf8_name"], tmp_path / "in")
    (tmp_path / "in" / os.fsdecode(b"br\xffken.wav")).write_bytes(b"not audio")  # fails: listed in the summary
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", strict)
    monkeypatch.setattr(sys, "argv", ["batch_process.py", f"input={tmp_path / 'in'}", f"output.dir={tmp_path / 'out'}",
                                      *MATRIX_OVERRIDES, "batch.progress=none"])
    GlobalHydra.instance().clear()
    try:
        batch_main()  # what the script runs (the script itself then ends the process: os._exit)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        GlobalHydra.instance().clear()
    strict.flush()
    printed = strict.buffer.getvalue()
    ok = code == 1 and b"1 ok, 0 skipped, 1 failed" in printed and b"br\xffken.wav" in printed
    FIGURES.outcome("bad input", ok, f"batch summary with a non-UTF-8 name: exit {code}")
    assert ok


def test_batch_script_unquoted_odd_path_is_one_line(tmp_path, capfd):
    odd = build(BY_NAME["odd_name"], tmp_path / "in é")
    r = cli_inprocess([f"input={odd.parent}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES], capfd,
                      main=str(SCRIPT))
    ok = r.code == 2 and len(r.err_lines) == 1 and "quote the value for Hydra" in r.err
    FIGURES.outcome("bad input", ok, f"batch script, unquoted odd path: {r.err[-200:]}")
    assert ok, r.err


def test_batch_input_a_file_where_a_folder_is_expected(tmp_path):
    """The reverse of a folder given to the CLI: the batch job given one audio file processes it;
    given a file that is neither audio (by extension) nor a text list, it stops with one line."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    s = run_batch(compose_batch([f"input={wav}", f"output.dir={tmp_path / 'one'}", *MATRIX_OVERRIDES,
                                 "batch.progress=none"]))
    FIGURES.outcome("bad input", s.ok == s.total == 1, "batch input: one audio file")
    assert s.ok == s.total == 1
    blob = tmp_path / "in" / "data.bin"
    blob.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(InputError) as err:
        run_batch(compose_batch([f"input={blob}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES,
                                 "batch.progress=none"]))
    ok = "neither a folder, a glob nor a text list" in str(err.value) and "data.bin" in str(err.value) \
        and "\n" not in str(err.value) and not (tmp_path / "out").exists()
    FIGURES.outcome("bad input", ok, f"batch input: a binary file: {err.value}")
    assert ok


@pytest.mark.slow
def test_comma_in_an_unquoted_path_is_one_line(tmp_path, capfd):
    path = build(BY_NAME["pcm_24"], tmp_path / "live, remastered")
    r = cli_inprocess([f"input={path}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES], capfd)
    ok = r.code == 2 and len(r.err_lines) == 1 and "Hydra reads the comma as several values" in r.err \
        and f"input={hydra_quote(path)}" in r.err
    FIGURES.outcome("bad input", ok, f"comma in a path: {r.err[-300:]}")
    assert ok, r.err
    assert cli_inprocess([f"input={hydra_quote(path)}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES],
                         capfd).code == 0


def test_reliability_md_lists_every_case():
    text = (ROOT / "RELIABILITY.md").read_text(encoding="utf-8")
    missing = [c.name for c in CASES if f"`{c.name}`" not in text]
    assert not missing, f"RELIABILITY.md does not list {missing}"


# ---------------------------------------------------------------- unit checks behind the matrix
def test_truncated_wav_is_processed_as_far_as_it_goes_with_a_warning(tmp_path, caplog):
    path = build(BY_NAME["truncated_wav"], tmp_path)
    with caplog.at_level("WARNING", logger="conv_pipeline.audio"):
        audio = load_audio(path, AudioConfig(sample_rate=None))
    assert audio.info.truncated and 0 < audio.frames < 8000
    assert any("holds less audio than its header declares" in r.getMessage() for r in caplog.records)


def test_a_header_that_lies_allocates_nothing_it_claims(tmp_path, monkeypatch):
    """The FLAC header says 2**36 frames (512 GiB of float32): decoding must not ask for them."""
    import conv_pipeline.load.audio as audio_mod

    path = build(BY_NAME["flac_huge_header"], tmp_path)
    asked = []
    real_empty = np.empty
    monkeypatch.setattr(audio_mod.np, "empty", lambda shape, *a, **k: asked.append(shape) or real_empty(shape, *a, **k))
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_audio(path)
    assert asked and max(math.prod(s) for s in asked) <= 64 * path.stat().st_size


def test_resampling_filter_size_is_checked_before_it_is_built(tmp_path):
    from conv_pipeline.load.signal import MAX_RESAMPLE_TAPS, resample_taps

    # rates in use, and a header rate that shares no factor with 16 kHz (only non-zero taps are built): accepted
    for rate in (8000, 11025, 22050, 44100, 47952, 48000, 96000, 192000, 44056, 16001):
        assert resample_taps(rate, SR) <= MAX_RESAMPLE_TAPS, rate
    path = build(BY_NAME["odd_rate"], tmp_path)
    with pytest.raises(InputError, match=r"resampling 999983 Hz to 16000 Hz needs a filter of 26 million taps"):
        load_audio(path, AudioConfig(sample_rate=SR))


def test_too_large_for_memory_is_a_clear_error_naming_the_fix(tmp_path, monkeypatch):
    import conv_pipeline.load.decode as decode_mod

    path = build(BY_NAME["pcm_24"], tmp_path)
    monkeypatch.setattr(decode_mod, "_available_bytes", lambda: 1000)
    with pytest.raises(InputError, match=r"too large to load whole .* set runtime.chunk_seconds"):
        load_audio(path)


def test_decoder_stderr_is_held_back_only_when_single_threaded(tmp_path, capfd):
    """libmpg123 writes to fd 2 itself; the loader holds that back in a single-threaded process
    (the CLI) and never when other threads could be writing there."""
    import threading

    path = build(BY_NAME["mp3_damaged"], tmp_path)
    capfd.readouterr()
    if threading.active_count() == 1:
        load_audio(path)
        assert capfd.readouterr().err == ""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        load_audio(path)  # works the same; the noise is not redirected now
    finally:
        stop.set()
        other.join()
    assert "Illegal Audio-MPEG-Header" in capfd.readouterr().err  # what the CLI user would otherwise see


def test_chunked_and_whole_agree_on_damaged_files(tmp_path):
    """The block reader and the whole-file decoder share one decode: same frames, same errors."""
    from conv_pipeline.load.blocks import open_blocks

    for name in ("mp3_damaged", "mp3_truncated", "truncated_wav", "truncated_flac", "ogg_truncated", "flac_huge_header"):
        path = build(BY_NAME[name], tmp_path / name)
        try:
            whole = load_audio(path, AudioConfig(sample_rate=None)).waveform
        except InputError as err:
            with pytest.raises(InputError) as err2:
                for _ in open_blocks(path, AudioConfig(), block_frames=1000):
                    pass
            assert str(err2.value) == str(err), name
            continue
        blocks = torch.cat(list(open_blocks(path, AudioConfig(), block_frames=1000)), dim=1)
        assert blocks.shape == whole.shape, name  # the same frames (libmpg123 rounds by read size: 1 ulp)
        assert float((blocks - whole).abs().max()) <= 1e-6, name


def test_manifest_keeps_names_that_are_not_utf8(tmp_path):
    from conv_pipeline.sink.manifest import ManifestRecord, append_record

    name = os.fsdecode(b"/data/caf\xe9.wav")
    append_record(tmp_path, ManifestRecord(input=name, status="ok", output="caf.npy"))
    append_record(tmp_path, ManifestRecord(input="/data/é.wav", status="ok", output="e.npy"))
    text = (tmp_path / MANIFEST_NAME).read_bytes().decode("utf-8")
    assert "é.wav" in text  # readable where it can be
    assert set(read_manifest(tmp_path)) == {name, "/data/é.wav"}


def test_manifest_line_torn_by_a_full_disk_does_not_swallow_the_next(tmp_path):
    from conv_pipeline.sink.manifest import ManifestRecord, append_record

    (tmp_path / MANIFEST_NAME).write_bytes(b'{"input": "a.wav", "sta')  # a write cut short
    append_record(tmp_path, ManifestRecord(input="b.wav", status="ok", output="b.npy"))
    assert list(read_manifest(tmp_path)) == ["b.wav"]
