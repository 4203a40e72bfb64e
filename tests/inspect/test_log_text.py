"""The first log line of a run (the file's rate, channels and samples, then what the stack took)
and the model summary logged with its line breaks while names stay escaped."""

from __future__ import annotations

import logging

from conv_pipeline.config.compose import compose_config
from conv_pipeline.fs import PRINTABLE_LOG, Lines
from conv_pipeline.inspect.summary import model_summary
from conv_pipeline.inspect.text import audio_text, channels_text


def test_audio_text_counts_samples_before_and_after():
    assert audio_text(44100, 2, 441000, 16000, 1, 160000) == (
        "44100 Hz stereo, 441000 samples (10.00 s) -> 16000 Hz mono, 160000 samples")
    assert audio_text(16000, 1, 8000, 16000, 1, 8000) == "16000 Hz mono, 8000 samples (0.50 s)"  # nothing changed
    assert "frames" not in audio_text(48000, 6, 96000, 48000, 1, 96000)
    assert [channels_text(n) for n in (1, 2, 6)] == ["mono", "stereo", "6 channels"]


def _formatted(msg: str, *args) -> str:
    record = logging.LogRecord("conv_pipeline", logging.INFO, __file__, 1, msg, args, None)
    PRINTABLE_LOG.filter(record)
    return record.getMessage()


def test_the_logged_summary_keeps_its_lines_and_names_stay_escaped():
    summary = model_summary(compose_config([]).model, 1, 16000, 1.0)
    assert isinstance(summary, Lines) and summary.count("\n") > 3
    assert _formatted("%s", summary) == str(summary)  # line breaks kept, nothing escaped
    assert _formatted("%s: %s", "a\nb.wav", "x") == "a\\x0ab.wav: x"  # a name cannot forge a log line
    assert _formatted("%s", Lines("t\x1b[2Jable\nrow")) == "t\\x1b[2Jable\nrow"  # other controls still escaped
