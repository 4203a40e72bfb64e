"""Progress (issue 14, item 11): a bar of audio seconds for one file in chunks, on a terminal only;
the batch job's bar moved once per file; the summary line when every input was already done.
tqdm is replaced by a recorder; the terminal is a fake stream whose ``isatty`` is True."""

from __future__ import annotations

import io
import sys
import threading

import pytest

from conv_pipeline.config.schema import AudioConfig, Config, LayerConfig, ModelConfig, OutputConfig, RuntimeConfig
from conv_pipeline.engines import progress as progress_mod
from conv_pipeline.engines.job import run_batch
from conv_pipeline.engines.progress import BatchSummary, FileProgress
from helpers.audio import write_audio
from helpers.jobs import batch_cfg


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeBar:
    """Records what a tqdm bar is given."""

    made: list["FakeBar"] = []

    def __init__(self, total=None, **kw) -> None:
        self.total, self.kw, self.updates, self.closed = total, kw, [], False
        FakeBar.made.append(self)

    def update(self, n=1) -> None:
        self.updates.append(n)

    def set_postfix_str(self, *a, **kw) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    import tqdm

    FakeBar.made = []
    monkeypatch.setattr(tqdm, "tqdm", FakeBar)
    return FakeBar.made


def _run_chunked(tmp_path, layers, seconds=3.0, chunk=0.25):
    from conv_pipeline.engines.single import run

    audio = write_audio(tmp_path / "long.wav", seconds, sr=16000, seed=1)
    cfg = Config(input=str(audio), model=ModelConfig(layers=layers), audio=AudioConfig(sample_rate=8000),
                 output=OutputConfig(dir=str(tmp_path / "out")), runtime=RuntimeConfig(chunk_seconds=chunk))
    return run(cfg)


@pytest.mark.parametrize("norm, passes", [(None, 1), ("group_norm", 2)])
def test_one_file_bar_counts_every_chunk_to_the_total(tmp_path, monkeypatch, fake_tqdm, norm, passes):
    monkeypatch.setattr(sys, "stderr", Terminal())
    layers = [LayerConfig(out_channels=4, kernel_size=5, stride=2, norm=norm, activation="relu")]
    res = _run_chunked(tmp_path, layers)
    assert len(fake_tqdm) == 1
    bar = fake_tqdm[0]
    seconds = 3.0  # 24000 samples at 8 kHz after resampling, read `passes` times
    assert bar.total == pytest.approx(passes * seconds)
    assert bar.kw["file"] is sys.stderr and bar.closed
    assert len(bar.updates) >= passes * seconds / 0.25  # one update per block, not one at the end
    assert sum(bar.updates) == pytest.approx(passes * seconds)
    assert res.shape[1] > 0


def test_no_bar_and_no_output_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, fake_tqdm, capsys):
    _run_chunked(tmp_path, [LayerConfig(out_channels=4, kernel_size=5, stride=2)])
    assert fake_tqdm == []  # tqdm never built
    assert capsys.readouterr().err == ""

    pipe = io.StringIO()
    p = FileProgress("x.wav", 16000, 16000, stream=pipe)
    p.add(8000)
    p.close()
    assert p.bar is None and pipe.getvalue() == "" and fake_tqdm == []


def test_real_tqdm_on_a_terminal_shows_audio_seconds(monkeypatch):
    monkeypatch.setattr(progress_mod, "FILE_BAR_DELAY_S", 0.0)
    term = Terminal()
    p = FileProgress("speech.wav", 48000, 16000, passes=2, stream=term)
    for _ in range(6):
        p.add(16000)
    shown = str(p.bar)  # what the bar shows now
    p.close()
    assert "speech.wav (2 passes)" in term.getvalue()  # drawn on the terminal stream
    assert "100%" in shown and "6/6 audio s" in shown and "audio s/s" in shown


def test_batch_bar_moves_once_per_file_as_it_is_written(tmp_path, monkeypatch, fake_tqdm):
    corpus = tmp_path / "corpus"
    for i in range(7):
        write_audio(corpus / f"f{i}.wav", 0.2 + 0.05 * i, sr=8000, seed=i)
    calls: list[tuple[str, str]] = []
    real_update = progress_mod.Progress.update

    def spy(self, record):
        calls.append((record.input, threading.current_thread().name))
        return real_update(self, record)

    monkeypatch.setattr(progress_mod.Progress, "update", spy)
    monkeypatch.setattr(sys, "stderr", Terminal())
    s = run_batch(batch_cfg(corpus, tmp_path / "out", batch_size=3, batch={"progress": "bar"}))
    assert s.ok == 7
    assert sorted(c[0] for c in calls) == sorted(str(p) for p in corpus.glob("*.wav"))  # each file once
    assert all(name.startswith("write") for _, name in calls)  # as the writer makes each record
    bar = fake_tqdm[0]
    assert bar.total == 7 and bar.updates == [1] * 7


def test_summary_when_everything_was_already_done(tmp_path):
    text = BatchSummary(output_dir=tmp_path, total=120, skipped=120, wall_seconds=0.1).format()
    assert text.startswith("batch: nothing to do: 120 input(s) already done (overwrite=true to redo); manifest: ")
    assert "real time" not in text and "0.000 h" not in text

    corpus = tmp_path / "corpus"
    for i in range(3):
        write_audio(corpus / f"f{i}.wav", 0.2, sr=8000, seed=i)
    out = tmp_path / "out"
    first = run_batch(batch_cfg(corpus, out)).format()
    assert "3 ok" in first and "x real time" in first
    again = run_batch(batch_cfg(corpus, out)).format()
    assert again.startswith("batch: nothing to do: 3 input(s) already done (overwrite=true to redo)")

    failed = BatchSummary(output_dir=tmp_path, total=2, failed=2, wall_seconds=0.5).format()
    assert "0 ok, 0 skipped, 2 failed; nothing processed in 0.5 s" in failed and "real time" not in failed
