"""The plan (``conv_pipeline/config/plan.py``): one config resolved once, the same rules for the
single-file run, the batch job and the Python API. Each of the redesign issue's six divergences
is checked here through the Python API, in process; ``tests/cli/test_entry_points.py`` checks
the same cases through the real commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.audio import write_audio

from conv_pipeline.config.channels import ChannelRule, channel_rule
from conv_pipeline.config.compose import compose_config
from conv_pipeline.config.plan import build_plan
from conv_pipeline.config.schema import (
    BatchConfig,
    Config,
    LayerConfig,
    ModelConfig,
    OutputConfig,
)
from conv_pipeline.engines.job import run_batch
from conv_pipeline.engines.single import run
from conv_pipeline.errors import ConfigError, InputError

SR = 16000


def _wav(path: Path, channels: int = 1, seed: int = 0) -> Path:
    write_audio(path, 0.5, sr=SR, seed=seed, channels=channels)
    return path


def _both(overrides: list[str], wav: Path, out: Path) -> list[str]:
    """The one-line messages of the single-file run and the batch job on the same overrides."""
    messages = []
    for name, runner in (("config", run), ("batch", run_batch)):
        with pytest.raises(ConfigError) as err:
            runner(compose_config([f"input={wav}", f"output.dir={out}", *overrides], name))
        messages.append(str(err.value))
    assert not out.exists(), "nothing is written for a refused config"
    return messages


# ---------------------------------------------------------------- 1. one sample rate
def test_a_front_end_rate_that_disagrees_with_the_audio_rate_is_refused(tmp_path):
    wav = _wav(tmp_path / "in" / "a.wav")
    for msg in _both(["model=mel", "model.frontend.sample_rate=22050"], wav, tmp_path / "out"):
        assert "model.frontend.sample_rate=22050 disagrees with audio.sample_rate=16000" in msg
        assert "set audio.sample_rate=22050" in msg and "\n" not in msg


def test_the_front_end_follows_audio_sample_rate(tmp_path):
    plan = build_plan(compose_config(["model=mel", "audio.sample_rate=22050", "input=x.wav"]))
    assert plan.sample_rate == 22050 and plan.config.model.frontend.sample_rate == 22050
    cfg = Config(input="x.wav", model=compose_config(["model=mel"]).model)
    cfg.audio.sample_rate = 8000
    cfg.model.frontend.sample_rate = None  # the Python API may leave it out: it follows the audio
    assert build_plan(cfg).config.model.frontend.sample_rate == 8000


# ---------------------------------------------------------------- 2. required layer keys
@pytest.mark.parametrize("layers", ["[{out_channels:16}]", "[{kernel_size:3}]"])
def test_a_layer_without_kernel_size_or_out_channels_is_refused(tmp_path, layers):
    wav = _wav(tmp_path / "in" / "a.wav")
    missing = "kernel_size" if "out_channels" in layers else "out_channels"
    for msg in _both([f"model.layers={layers}"], wav, tmp_path / "out"):
        assert msg == f"model.layers[0].{missing} is required: every layer in model.layers needs out_channels and kernel_size"


def test_python_api_layer_without_kernel_size_is_refused():
    cfg = Config(input="x.wav", model=ModelConfig(layers=[LayerConfig(out_channels=16)]))
    with pytest.raises(ConfigError, match=r"model.layers\[0\].kernel_size is required"):
        build_plan(cfg)


# ---------------------------------------------------------------- 3. summary and plot in the batch job
def test_batch_summary_processes_nothing_and_batch_plot_is_refused(tmp_path, capsys):
    from conv_pipeline.inspect.summary import summary_for_config

    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav")
    table = summary_for_config(compose_config([f"input={corpus}", "summary=true"], "batch"), "batch")
    assert table.startswith("model default: 3 conv layers") and "MFLOP/s" in table
    with pytest.raises(ConfigError, match=r"^plot=true draws one input's features; the batch job does not draw"):
        run_batch(compose_config([f"input={corpus}", f"output.dir={tmp_path / 'out'}", "plot=true"], "batch"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 4. the same runtime checks
@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_chunk_seconds_is_checked_the_same_everywhere(tmp_path, value):
    wav = _wav(tmp_path / "in" / "a.wav")
    for msg in _both([f"runtime.chunk_seconds={value}"], wav, tmp_path / "out"):
        assert msg.startswith("runtime.chunk_seconds must be null or a finite number of seconds > 0, got ")


# ---------------------------------------------------------------- 5. typos
@pytest.mark.parametrize("name, override, hint", [
    ("config", "inptu=x.wav", "unknown config key 'inptu' (did you mean input?)"),
    ("batch", "batch.extention=[wav]", "unknown config key 'batch.extention' (did you mean batch.extensions?)"),
    ("config", "model=mell", "model=mell: no such model preset (did you mean mel?)"),
    ("batch", "runtime.chunk_secs=1", "unknown config key 'runtime.chunk_secs' (did you mean runtime.chunk_seconds?)"),
])
def test_composition_errors_are_one_line_with_a_did_you_mean(name, override, hint):
    with pytest.raises(ConfigError) as err:
        compose_config([override], name)
    assert str(err.value).startswith(hint) and "\n" not in str(err.value)


# ---------------------------------------------------------------- 6. a corpus's channels, up front
def test_a_folder_mixing_mono_and_stereo_is_refused_before_anything_is_processed(tmp_path):
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav", 1)
    _wav(corpus / "b.wav", 2, seed=1)
    _wav(corpus / "c.wav", 2, seed=2)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_batch(compose_config([f"input={corpus}", f"output.dir={out}"], "batch"))
    msg = str(err.value)
    assert "1 file with 1 channel (e.g. " in msg and "2 files with 2 channels (e.g. " in msg
    assert "audio.channels=mono" in msg and not out.exists()
    summary = run_batch(compose_config([f"input={corpus}", f"output.dir={out}", "audio.channels=mono",
                                        "batch.progress=none"], "batch"))
    assert (summary.ok, summary.failed) == (3, 0)


def test_a_corpus_that_cannot_give_the_fixed_count_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav", 1)
    _wav(corpus / "b.wav", 2, seed=1)
    with pytest.raises(ConfigError, match=r"audio.channels=\[1\] asks for channel 1 but some files have fewer: 1 file with 1 channel"):
        run_batch(compose_config([f"input={corpus}", f"output.dir={tmp_path / 'o'}", "audio.channels=[1]"], "batch"))
    with pytest.raises(ConfigError, match=r"the stack takes 2 channel\(s\) \(model.in_channels=2\) but files have other counts.*1 file with 1 channel"):
        run_batch(compose_config([f"input={corpus}", f"output.dir={tmp_path / 'o'}", "model.in_channels=2"], "batch"))
    assert not (tmp_path / "o").exists()


def test_a_file_with_unreadable_header_does_not_stop_the_corpus_check(tmp_path):
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav", 2)
    (corpus / "broken.wav").write_bytes(b"RIFF not really")
    summary = run_batch(compose_config([f"input={corpus}", f"output.dir={tmp_path / 'o'}", "batch.progress=none"], "batch"))
    assert (summary.ok, summary.failed, summary.in_channels) == (1, 1, 2)


# ---------------------------------------------------------------- the channel rule itself
def test_channel_rule_fixes_and_refusals():
    assert channel_rule("auto", "keep", 1, None, None, None) == ChannelRule("keep", None, "the audio's own count", 1)
    assert channel_rule("auto", "mono", 1, None, None, None).count == 1
    assert channel_rule(2, "keep", 2, None, None, None).count == 2
    assert channel_rule("auto", "keep", 1, None, None, "mel").count == 1
    with pytest.raises(ConfigError, match=r"audio.channels=\[0,1\] gives 2 channel\(s\) but the stack takes 1 "
                                          r"\(model.in_channels=1\); use audio.channels=mono, or model.in_channels=2"):
        channel_rule(1, (0, 1), 1, None, None, None)
    with pytest.raises(ConfigError, match=r"takes 1 \(model.frontend=mel works on one channel\); use audio.channels=mono$"):
        channel_rule("auto", (0, 1), 1, None, None, "mel")  # a front-end's count cannot move: one fix only
    with pytest.raises(ConfigError, match="model.layers\\[0\\].groups=2 must divide its input channels"):
        channel_rule("auto", "mono", 2, None, None, None)
    rule = channel_rule(1, "keep", 1, None, None, None)
    with pytest.raises(InputError, match=r"x.wav: has 2 channel\(s\) after audio.channels=keep but the stack takes 1 "
                                         r"\(model.in_channels=1\); fix with audio.channels=mono or audio.channels=\[0\] or model.in_channels=2"):
        rule.stack_channels(2, "x.wav")
    mel = channel_rule("auto", "keep", 1, None, None, "mel")
    with pytest.raises(InputError) as err:
        mel.stack_channels(2, "x.wav")
    assert "audio.channels=mono" in str(err.value) and "model.in_channels" not in str(err.value)


def test_every_entry_point_builds_the_same_plan(tmp_path):
    """The CLI's config and the batch job's config give the same stack, geometry and rules."""
    overrides = ["input=x.wav", "model=mel", "runtime.chunk_seconds=0.5"]
    single, batch = build_plan(compose_config(overrides), "file"), build_plan(compose_config(overrides, "batch"), "batch")
    assert single.geometry.layers == batch.geometry.layers
    assert (single.channels, single.sample_rate, single.chunk_seconds) == (batch.channels, batch.sample_rate, batch.chunk_seconds)
    typed = BatchConfig(input="x.wav", model=compose_config(["model=mel"]).model, output=OutputConfig())
    typed.audio.sample_rate, typed.audio.channels, typed.runtime.chunk_seconds = 16000, "mono", 0.5
    assert build_plan(typed, "batch").channels == batch.channels


@pytest.mark.parametrize("fmt,module", [("parquet", "pyarrow"), ("kaldi", "kaldiio"), ("lhotse", "lhotse")])
def test_a_format_whose_library_is_missing_is_refused_with_its_install(monkeypatch, fmt, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(ConfigError, match=rf"output.format={fmt} needs the {module} package.*"
                                          r"pip install 'conv_pipeline\[formats\]' \(or set output.format=npy\)"):
        build_plan(compose_config(["input=x.wav", f"output.format={fmt}"]))
