"""inspect on files and folders, and the model summary against hand counts and torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.paths import MONO, ROOT, STEREO
from helpers.run import run_pipeline


def inspect_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conv_pipeline.inspect", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    """An output folder as the batch job leaves it: ok files (one nested), a failed input,
    a listed file that went missing and a stray feature file the manifest does not know."""
    from conv_pipeline.sink.manifest import ManifestRecord, append_record

    base = tmp_path_factory.mktemp("inspect")
    out = base / "feats"
    t = np.arange(8000) / 16000
    sf.write(base / "tone.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    run_pipeline(MONO, out, "output.format=npz")
    run_pipeline(base / "tone.wav", out)
    (out / "sub" / "dir").mkdir(parents=True)
    (out / "tone.npy").rename(out / "sub" / "dir" / "tone.npy")
    append_record(out, ManifestRecord(input=str(base / "tone.wav"), status="ok", output="sub/dir/tone.npy",
                                      sample_rate=16000, num_samples=8000, duration_s=0.5, shape=[128, 48]))
    append_record(out, ManifestRecord(input="in/bad.wav", status="failed", error="in/bad.wav: not a readable audio file"))
    append_record(out, ManifestRecord(input="in/gone.wav", status="ok", output="gone.npy", sample_rate=16000,
                                      num_samples=16000, duration_s=1.0, shape=[128, 98]))
    np.save(out / "stray.npy", np.zeros((128, 5), np.float32))
    return out


# ---------------------------------------------------------------- files
def test_describe_npz(batch_dir):
    from conv_pipeline.inspect.describe import describe_file

    text = describe_file(batch_dir / "example_mono.npz")
    with np.load(batch_dir / "example_mono.npz", allow_pickle=False) as z:
        f = z["features"]
    assert "float32 128 channels x 298 frames" in text
    assert "160 samples (10.00 ms), 100.00 frames/s" in text  # hop
    assert "1040 samples (65.00 ms), left padding 320 samples" in text  # receptive field
    assert "3.000 s of audio (48000 samples)" in text
    assert f"min {f.min():.6g}  max {f.max():.6g}  mean {f.astype(np.float64).mean():.6g}" in text
    assert "NaN 0  Inf 0" in text
    assert f"source           {MONO}" in text
    assert "default: conv 1->64 k400 s160 +relu | conv 64->128 k3 p1 +relu | conv 128->128 k3 p1" in text
    assert "audio.sample_rate=16000" in text and "output.format=npz" in text
    assert "note:" not in text


def test_describe_nested_npy_finds_its_root(batch_dir):
    from conv_pipeline.inspect.describe import describe_file

    text = describe_file(batch_dir / "sub" / "dir" / "tone.npy")
    assert "(npy)" in text and "128 channels x 48 frames" in text and "sample rate      16000 Hz" in text
    assert "0.500 s of audio (8000 samples)" in text and "model            default:" in text
    assert f"output folder    {batch_dir.resolve()}" in text


def test_feature_stats_against_numpy():
    from conv_pipeline.inspect.describe import feature_stats

    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 50)).astype(np.float32)
    a[0, :3] = np.nan
    a[1, 5] = np.inf
    a[2, 7] = -np.inf
    a[3, 10:14] = 0
    s = feature_stats(a)
    finite = a[np.isfinite(a)].astype(np.float64)
    assert (s["nan"], s["inf"], s["zeros"]) == (3, 2, 4)
    assert s["min"] == finite.min() and s["max"] == finite.max()
    assert s["mean"] == pytest.approx(np.nanmean(np.where(np.isinf(a), np.nan, a).astype(np.float64)), rel=1e-12)
    assert s["std"] == pytest.approx(finite.std(), rel=1e-12)
    assert feature_stats(np.full((2, 2), np.nan, np.float32))["min"] is None


# ---------------------------------------------------------------- folders
def test_describe_dir_lists_every_input(batch_dir):
    from conv_pipeline.inspect.describe import describe_dir

    lines = describe_dir(batch_dir).splitlines()
    assert lines[0].startswith(f"{batch_dir}  model default:")
    row = {}
    for line in lines[2:-1]:
        cells = line.split()
        if cells and not line.startswith(" "):
            row[cells[0]] = line
    assert re.search(r"example_mono\.npz\s+ok\s+128 x 298\s+3\.00\s+16000\s+" + re.escape(str(MONO)), row["example_mono.npz"])
    assert re.search(r"sub/dir/tone\.npy\s+ok\s+128 x 48\s+0\.50", row["sub/dir/tone.npy"])
    assert re.search(r"^-\s+failed\s+-\s+-\s+-\s+in/bad\.wav$", row["-"])
    assert any(line.strip() == "error: in/bad.wav: not a readable audio file" for line in lines)
    assert re.search(r"gone\.npy\s+ok MISSING", row["gone.npy"])
    assert re.search(r"stray\.npy\s+unlisted", row["stray.npy"])
    # the tone's first record (output tone.npy, since moved) is superseded by its last one
    assert "tone.npy" not in row
    assert lines[-1] == (
        "4 input(s): 3 ok, 0 skipped, 1 failed; 4.50 s of audio, 444 frames; "
        "1 listed file(s) MISSING; 1 feature file(s) not in the manifest"
    )


@pytest.mark.slow
def test_cli_on_folder_and_broken_files(batch_dir, tmp_path):
    ok = inspect_cli(batch_dir)
    assert ok.returncode == 0 and "sub/dir/tone.npy" in ok.stdout and ok.stderr == ""

    (tmp_path / "notes.npz").write_text("not a zip")
    for path, expect in [
        (tmp_path / "notes.npz", "not a readable .npy/.npz feature file"),
        (tmp_path / "nothing.npy", "no such file"),
        (tmp_path, "no manifest.jsonl"),
    ]:
        bad = inspect_cli(path)
        assert bad.returncode == 2, bad
        assert bad.stdout == ""
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.startswith(f"conv_pipeline.inspect: error: {path}") and expect in bad.stderr

    plot_dir = inspect_cli(batch_dir, "--plot", tmp_path / "x.png")
    assert plot_dir.returncode == 2 and "--plot draws one feature file" in plot_dir.stderr
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- model summary
def test_tutorial_summary_hand_count():
    """Conv1d(2, 3, 5) with a bias, at 16 kHz, 10 s: counted by hand."""
    from conv_pipeline.inspect.summary import model_summary, model_summary_rows
    from conv_pipeline.config.compose import compose_config

    model = compose_config(["model=tutorial"]).model
    (row,) = model_summary_rows(model.layers, 2, 16000, 160000)
    params = 3 * 2 * 5 + 3  # weights + biases = 33
    flops_per_frame = 3 * (2 * (2 * 5) + 1)  # each output: 10 multiplies + 10 adds, + 1 bias add = 63
    frames = 160000 - 5 + 1
    assert row["params"] == params == 33 and row["flops_per_frame"] == flops_per_frame == 63
    assert row["frames"] == frames and row["receptive_field"] == 5 and row["hop"] == 1
    assert row["mflops_per_s"] == pytest.approx(63 * 16000 / 1e6) == pytest.approx(1.008)
    assert row["flops"] == 63 * frames
    text = model_summary(model, 2, 16000, 10.0)
    assert "model tutorial: 1 conv layer, 2 -> 3 channels, 33 parameters" in text
    assert re.search(r"^\s+1\s+5\s+1\s+0\s+1\s+2->3\s+33\s+159996\s+5\s+0\.31\s+1\s+0\.06\s+1\.008$", text, re.M)
    assert re.search(r"^total\s+2->3\s+33\s+159996\s+5\s+0\.31\s+1\s+0\.06\s+1\.008$", text, re.M)
    assert f"10 s of audio: {63 * frames / 1e6:.3f} MFLOPs" in text


def test_summary_numbers_against_torch_and_geometry():
    """Parameters and FLOPs from torch's own modules; frames from running the stack."""
    import torch

    from conv_pipeline.config.schema import LayerConfig, ModelConfig
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.inspect.summary import model_summary_rows
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.config.compose import compose_config

    custom = ModelConfig(name="custom", in_channels=4, layers=[
        LayerConfig(8, 7, stride=2, padding=3, dilation=2, groups=2, bias=False, norm="layer_norm", activation="gelu"),
        LayerConfig(6, 4, stride=3, dilation=3),
        LayerConfig(6, 1, groups=3, norm="layer_norm"),
    ])
    for model, cin in ((compose_config([]).model, 1), (custom, 4)):
        sr, n = 16000, 16000 * 2 + 37
        rows = model_summary_rows(model.layers, cin, sr, n)
        stack = ConvStack.from_config(model, in_channels=cin)
        geometry = StackGeometry(model.layers)
        x = torch.zeros(1, cin, n)
        for i, (row, layer) in enumerate(zip(rows, stack.layers), start=1):
            assert row["params"] == sum(p.numel() for p in layer.parameters())
            w, b = layer.conv.weight, layer.conv.bias
            assert row["flops_per_frame"] == 2 * w.numel() + (0 if b is None else b.numel())
            x = layer(x)
            assert row["frames"] == x.shape[-1] == geometry.lengths(n)[i]
            assert row["receptive_field"] == geometry.receptive_field_at(i) and row["hop"] == geometry.hop_at(i)
            assert row["mflops_per_s"] == pytest.approx(row["flops_per_frame"] * sr / geometry.hop_at(i) / 1e6)
        assert sum(r["params"] for r in rows) == sum(p.numel() for p in stack.parameters())


PRESETS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_summary_against_its_torch_stack(preset):
    """The README shows the summary per preset: check each one's totals on the stack it builds."""
    import torch

    from conv_pipeline.inspect.summary import summary_for_config
    from conv_pipeline.stack.stack import ConvStack
    from conv_pipeline.config.compose import compose_config

    cfg = compose_config([f"model={preset}", "input_seconds=1"])
    text = summary_for_config(cfg)
    in_channels = int(re.search(r"^  in_channels: (\d+) ", text, re.M).group(1))
    sample_rate = int(re.search(r"^  sample rate: (\d+) Hz", text, re.M).group(1))
    stack = ConvStack.from_config(cfg.model, in_channels=in_channels)
    convs = [m for m in stack.modules() if isinstance(m, torch.nn.Conv1d)]
    rows = re.findall(r"^\s+(\d+)\s+\d+\s+\d+\s+\d+\s+\d+\s+(\d+)->(\d+)\s", text, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, len(convs) + 1))
    assert [(int(a), int(b)) for _, a, b in rows] == [(c.in_channels, c.out_channels) for c in convs]
    total = re.search(r"^total\s+(\d+)->(\d+)\s+([\d,]+)\s+(\d+)\s", text, re.M)
    with torch.inference_mode():
        out = stack(torch.zeros(1, in_channels, sample_rate))
    assert int(total.group(1)) == in_channels and int(total.group(2)) == out.shape[1]
    assert int(total.group(3).replace(",", "")) == sum(p.numel() for p in stack.parameters())
    assert int(total.group(4)) == out.shape[-1]
    # MFLOP/s: 2 per MAC (one per weight per output frame) + bias adds, at each conv's frame rate
    mflops = float(text.split("\ntotal")[1].splitlines()[0].split()[-1])
    hops = re.findall(r"^\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+\S+\s+[\d,]+\s+\d+\s+\d+\s+[\d.]+\s+(\d+)\s", text, re.M)
    expect = sum((2 * c.weight.numel() + (c.bias.numel() if c.bias is not None else 0)) * sample_rate / int(h)
                 for c, h in zip(convs, hops)) / 1e6
    assert len(hops) == len(convs) and mflops == pytest.approx(expect, abs=0.0011)


@pytest.mark.slow
def test_summary_for_config_states_its_assumptions():
    from conv_pipeline.errors import ConfigError
    from conv_pipeline.inspect.summary import summary_for_config
    from conv_pipeline.config.compose import compose_config

    text = summary_for_config(compose_config(["input_seconds=10"]))
    assert "in_channels: 1 (assumed: model.in_channels=auto" in text
    assert "sample rate: 16000 Hz (audio.sample_rate)" in text and "input: 10 s = 160000 samples" in text
    # 160000 samples: (160000 - 400) // 160 + 1 = 998 frames
    assert re.search(r"^total\s+1->128\s+99,648\s+998\s+1040\s+65\.00\s+160\s+10\.00\s+19\.898$", text, re.M)

    text = summary_for_config(compose_config(["model=tutorial"]))
    assert "sample rate: 16000 Hz (assumed: audio.sample_rate is null" in text
    assert "in_channels: 2 (model.in_channels=2)" in text and "s of audio:" not in text

    text = summary_for_config(compose_config([f"input={STEREO}", "audio.channels=mono"]))  # header only
    assert "in_channels: 1 (audio.channels=mono)" in text
    assert "input: 2.5 s = 40000 samples at 16000 Hz" in text

    with pytest.raises(ConfigError, match="input_seconds must be a finite number of seconds > 0"):
        summary_for_config(compose_config(["input_seconds=0"]))
    # with the assumed single channel, a layer with groups=2 cannot run: said before anything else
    from conv_pipeline.config.schema import Config, LayerConfig, ModelConfig

    grouped = ModelConfig(name="g", in_channels="auto", layers=[LayerConfig(4, 3, groups=2)])
    with pytest.raises(ConfigError, match=r"groups=2 must divide its input channels"):
        summary_for_config(Config(model=grouped, input_seconds=1.0))


@pytest.mark.slow
def test_cli_summary_writes_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "conv_pipeline", "summary=true", "input_seconds=10", "model=tutorial"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model tutorial: 1 conv layer, 2 -> 3 channels, 33 parameters")
    assert re.search(r"^total\s+2->3\s+33\s+159996\s+5\s+0\.31\s+1\s+0\.06\s+1\.008$", proc.stdout, re.M)
    assert list(tmp_path.iterdir()) == []  # no feats/, no outputs/
