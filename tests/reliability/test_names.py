"""Names (issue 12, findings 10, 11 and 18): any name POSIX allows is processed or fails alone,
names differing only in case get their own outputs, a glob through symlink loops finds each real
file once and ends, and a name is never sent raw to the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from conv_pipeline.engines.job import run_batch
from conv_pipeline.fs import printable
from conv_pipeline.sink.manifest import MANIFEST_NAME, read_manifest
from conv_pipeline.source.inputs import find_inputs, plan_outputs
from helpers.audio import write_audio
from helpers.bad_inputs import hydra_quote
from helpers.figures import FIGURES
from helpers.jobs import LAYERS_CLI, SR, batch_cfg, single_file
from helpers.paths import SCRIPT

NFC_E = unicodedata.normalize("NFC", "\u00e9")  # é as one code point
NFD_E = unicodedata.normalize("NFD", "\u00e9")  # e + combining acute
LONG = ["l" * 250 + ".wav", "l" * 250 + ".WAV", "m" * 249 + ".wav", "m" * 249 + ".flac"]  # outputs would pass 255 bytes
ODD_NAMES = ["a\\b.wav", "x.wav", "x.WAV", "X.wav", f"{NFC_E}.wav", f"{NFD_E}.wav", "Sub/y.wav", "sub/y.wav", *LONG]


def _real_batch(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``scripts/batch_process.py ARGS`` as a real process, bytes kept as they are."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=str(cwd), capture_output=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# ---------------------------------------------------------------- finding 10: odd names
def test_plan_outputs_gives_case_and_backslash_names_their_own_outputs():
    outs = plan_outputs(ODD_NAMES, "npy")
    keys = {unicodedata.normalize("NFD", o).casefold() for o in outs}
    assert len(keys) == len(outs)  # distinct on a case- and normalisation-insensitive filesystem too
    assert outs[0] == "a_b.npy" and "\\" not in "".join(outs)
    assert all(len(o.rsplit("/", 1)[-1].encode()) <= 255 for o in outs)  # a file name can hold each
    assert outs[1].startswith("x.wav~") and outs[2].startswith("x.WAV~") and outs[3].startswith("X.wav~")
    assert plan_outputs(ODD_NAMES, "npy") == outs  # deterministic
    assert plan_outputs(list(reversed(ODD_NAMES)), "npy") == list(reversed(outs))  # not tied to the order
    assert plan_outputs(["x.wav", "y.flac"], "npy") == ["x.npy", "y.npy"]  # plain names unchanged
    FIGURES.tried("bad input", len(ODD_NAMES))


def test_odd_names_are_processed_each_into_its_own_output(tmp_path):
    """``x.wav`` + ``x.WAV``, a backslash, NFC/NFD twins, folders differing in case and names whose
    disambiguated outputs would be too long for a file name: every file
    is ``ok`` (exit 0), its record names a distinct output holding its own features; the rerun
    skips all of them under the same names."""
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    for seed, name in enumerate(ODD_NAMES):
        write_audio(corpus / name, seed=seed)
    summary = run_batch(batch_cfg(corpus, out))
    assert summary.exit_code == 0 and summary.ok == len(ODD_NAMES), summary.format()
    records = read_manifest(out)
    outputs = {os.path.relpath(k, corpus): r.output for k, r in records.items()}
    assert set(outputs) == set(ODD_NAMES) and len({o.casefold() for o in outputs.values()}) == len(ODD_NAMES)
    for seed, name in enumerate(ODD_NAMES):  # each output holds its own input's features
        plain = write_audio(tmp_path / "ref" / f"{seed}{Path(name).suffix.lower()}", seed=seed)  # same encoding
        want = single_file(plain, tmp_path / "ref_out", out / "model.safetensors")
        np.testing.assert_allclose(np.load(out / outputs[name]), want, atol=1e-5)
    again = run_batch(batch_cfg(corpus, out))
    assert again.skipped == len(ODD_NAMES) and again.exit_code == 0
    assert {os.path.relpath(k, corpus): r.output for k, r in read_manifest(out).items()} == outputs
    FIGURES.tried("bad input", len(ODD_NAMES))


# ---------------------------------------------------------------- finding 11: glob and symlink loops
def _looped_corpus(root: Path, loops: int) -> Path:
    corpus = root / "corpus"
    write_audio(corpus / "sub" / "a.wav")
    write_audio(corpus / "b.wav", seed=1)
    os.symlink("..", corpus / "sub" / "up")  # sub/up -> corpus
    if loops > 1:
        os.symlink(".", corpus / "self")  # corpus/self -> corpus
    return corpus


def test_glob_through_a_symlink_loop_finds_each_file_once(tmp_path):
    """One loop made the old glob find ``sub/a.wav`` 41 times (``sub/up/sub/a.wav``, ...); two
    loops made it walk for ever (``test_glob_with_two_symlink_loops_ends_as_a_real_process``)."""
    corpus = _looped_corpus(tmp_path, 1)
    found = find_inputs(f"{corpus}/**/*.wav")
    assert found.kind == "glob" and found.rels == ["b.wav", "sub/a.wav"]
    assert found.paths == [f"{corpus}/b.wav", f"{corpus}/sub/a.wav"]  # in the pattern's spelling
    FIGURES.tried("bad input")


def test_glob_keeps_glob_semantics(tmp_path, monkeypatch):
    corpus = tmp_path / "c"
    for rel in ["a.wav", ".h.wav", "s/b.wav", "s/.hd/c.wav", "s/d/e.flac", "t/sub/f.wav", "[x]/g.wav"]:
        write_audio(corpus / rel)
    os.symlink("s", corpus / "zlink")  # a second name for s: searched once, under the first name walked
    monkeypatch.chdir(tmp_path)
    assert find_inputs("c/*.wav").paths == ["c/a.wav"]
    assert find_inputs("c/**/*.wav").rels == ["[x]/g.wav", "a.wav", "s/b.wav", "t/sub/f.wav"]
    assert find_inputs("c/*/.hd/*.wav").rels == ["s/.hd/c.wav"]  # hidden only when the pattern says so
    assert find_inputs("c/*/sub/*.wav").rels == ["t/sub/f.wav"]
    assert find_inputs("c/[[]x]/*.wav").rels == ["[x]/g.wav"]
    assert find_inputs("./c/s/**/*.flac").paths == ["./c/s/d/e.flac"]
    assert find_inputs("*/s/*.wav").paths == ["c/s/b.wav"]


@pytest.mark.slow
def test_glob_with_two_symlink_loops_ends_as_a_real_process(tmp_path):
    """Two loops made the old glob walk for ever: the job ends within the minute, each file once."""
    corpus = _looped_corpus(tmp_path, 2)
    proc = _real_batch(f"input={hydra_quote(f'{corpus}/**/*.wav')}", f"output.dir={tmp_path / 'out'}",
                       f"audio.sample_rate={SR}", LAYERS_CLI, "batch.progress=none", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert sorted(r.output for r in read_manifest(tmp_path / "out").values()) == ["b.npy", "sub/a.npy"]
    FIGURES.tried("bad input")


# ---------------------------------------------------------------- finding 18: escaped names
def test_printable_escapes_controls_and_keeps_letters():
    assert printable("a\x1b[31mred\x07.wav") == "a\\x1b[31mred\\x07.wav"
    assert printable("new\nline\ttab\r\x7f\x9b.wav") == "new\\x0aline\\x09tab\\x0d\\x7f\\x9b.wav"
    assert printable(os.fsdecode(b"c1\x9b2J")) == "c1\\x9b2J"  # a C1 control as a byte that is not UTF-8
    assert printable(os.fsdecode(b"bad\xffname")) == os.fsdecode(b"bad\xffname")  # other bytes: printed as they are
    assert printable("rtl\u202egnp.exe \u2028") == "rtl\\u202egnp.exe \\u2028"
    for readable in ["é ü ß 東京 Ωμέγα.wav", "a\\b.wav", "my song 'live'.wav", "e\u0301.wav"]:
        assert printable(readable) == readable
    assert printable("line\n\x1b", keep="\n") == "line\n\\x1b"


@pytest.mark.slow
def test_names_with_escape_sequences_are_escaped_on_the_terminal(tmp_path):
    """A real batch job whose folder and file names hold terminal escape sequences, a newline and a
    byte that is not UTF-8: nothing of them reaches stdout or stderr raw (the summary, its failure
    lines, the log lines); the names appear escaped, non-ASCII letters as they are."""
    corpus = tmp_path / "in\x1b]0;title\x07 é"
    ok_name, bad_name = "ok\x1b[2J\x1b[31m é.wav", "bad\x1b[31mred\nline.wav"
    write_audio(corpus / ok_name)
    (corpus / bad_name).write_bytes(b"not audio at all" * 100)
    raw = os.fsencode(corpus) + b"/raw\xff\x9b5m\x1b[5m.wav"
    shutil.copyfile(os.fsencode(corpus / ok_name), raw)
    proc = _real_batch(f"input={hydra_quote(corpus)}", f"output.dir={tmp_path / 'out'}", f"audio.sample_rate={SR}",
                       LAYERS_CLI, "batch.progress=log", "batch.log_every_s=0.001", cwd=tmp_path)
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 1, shown.decode(errors="replace")  # the bad file failed alone
    for control in (b"\x1b", b"\x07", b"\x9b"):
        assert control not in shown, shown
    text = shown.decode("utf-8", "surrogateescape")
    assert "/bad\\x1b[31mred" in text  # the failure line, escaped
    assert "in\\x1b]0;title\\x07 é" in text  # the folder in the log and failure lines, é readable
    failed = [line for line in text.splitlines() if "bad\\x1b" in line]
    assert failed and all("line.wav: not a readable audio file" in line for line in failed), text  # one line
    records = read_manifest(tmp_path / "out")
    assert sorted(r.status for r in records.values()) == ["failed", "ok", "ok"]
    assert (tmp_path / "out" / MANIFEST_NAME).is_file()
    FIGURES.tried("bad input", 3)
