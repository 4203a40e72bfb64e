"""Front-ends against their reference implementations: wav2vec2/HuBERT encoders (torchaudio,
Hugging Face transformers, fairseq key layouts), STFT, mel and sinc filterbanks."""


import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from torchaudio.models.wav2vec2.components import _get_feature_extractor

from conv_pipeline.load.signal import normalize_waveform
from conv_pipeline.errors import ConfigError
from conv_pipeline.stack.frontends import sinc_cutoffs
from conv_pipeline.stack.stack import ConvStack, build_stack
from conv_pipeline.config.compose import compose_config
from helpers.audio import make_audio
from helpers.paths import ROOT
from helpers.run import assert_one_line_error, run_cli

SHAPES = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
MODES = {"wav2vec2_base": ("group_norm", False), "wav2vec2_large": ("layer_norm", True)}


def reference_extractor(preset, seed=0):
    mode, bias = MODES[preset]
    torch.manual_seed(seed)
    ref = _get_feature_extractor(mode, SHAPES, bias=bias).eval()
    with torch.no_grad():  # non-trivial norm parameters, so a swapped weight/bias would show
        for name, p in ref.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.2, 0.2)
    return ref


def speech(seconds=1.5, seed=0):
    """The bundled vowel-like example, resampled content as the stack sees it (16 kHz mono)."""
    w, sr = sf.read(ROOT / "data" / "example_mono.flac", dtype="float32")
    assert sr == 16000
    return torch.from_numpy(w[: int(seconds * sr)])


@pytest.mark.parametrize("preset", ["wav2vec2_base", "wav2vec2_large"])
def test_encoder_presets_geometry(preset):
    cfg = compose_config([f"model={preset}"])
    stack = ConvStack.from_config(cfg.model, in_channels=1)
    assert (stack.geometry.receptive_field, stack.geometry.hop) == (400, 320)
    assert cfg.audio.sample_rate == 16000 and cfg.audio.channels == "mono" and cfg.audio.normalize
    assert stack.mixes_time == (preset == "wav2vec2_base")


@pytest.mark.parametrize("preset", ["wav2vec2_base", pytest.param("wav2vec2_large", marks=pytest.mark.slow)])
@pytest.mark.parametrize("layout", ["torchaudio", "huggingface_head", "fairseq"])
def test_checkpoint_layouts_equal_torchaudio(tmp_path, preset, layout):
    ref = reference_extractor(preset)
    sd = ref.state_dict()  # conv_layers.{i}.conv.weight, conv_layers.{i}.layer_norm.*
    if layout == "torchaudio":  # as in a full torchaudio Wav2Vec2Model state_dict
        state = {f"feature_extractor.{k}": v for k, v in sd.items()}
        state["encoder.feature_projection.projection.weight"] = torch.zeros(768, 512)  # ignored
    elif layout == "huggingface_head":  # Wav2Vec2ForCTC: task-head prefix
        state = {f"wav2vec2.feature_extractor.{k}": v for k, v in sd.items()}
        state["lm_head.weight"] = torch.zeros(32, 768)
    else:  # fairseq: Sequential(conv, dropout, norm [or (transpose, norm, transpose)], gelu) in a "model" entry
        mode = MODES[preset][0]
        state = {}
        for k, v in sd.items():
            k = k.replace(".conv.", ".0.")
            k = k.replace(".layer_norm.", ".2.1." if mode == "layer_norm" else ".2.")
            state[f"feature_extractor.{k}"] = v
        state = {"model": state, "cfg": {"model": {"extractor_mode": "default"}}}
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    cfg = compose_config([f"model={preset}", f"model.checkpoint={path}"])
    stack = build_stack(cfg.model, in_channels=1).eval()
    x = torch.stack([speech(1.0), speech(1.0).flip(0)])  # (2, 16000)
    with torch.no_grad():
        expected, _ = ref(x, None)  # (B, frames, 512)
        got = stack(x[:, None])  # (B, 512, frames)
    torch.testing.assert_close(got, expected.transpose(1, 2), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_huggingface_models_equal(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    for norm, preset, cls, cfg_cls in [
        ("group", "wav2vec2_base", "Wav2Vec2Model", "Wav2Vec2Config"),
        ("layer", "wav2vec2_large", "HubertModel", "HubertConfig"),
    ]:
        hf_cfg = getattr(transformers, cfg_cls)(
            feat_extract_norm=norm, conv_bias=norm == "layer", num_hidden_layers=1, hidden_size=32,
            num_attention_heads=2, intermediate_size=32,
        )
        torch.manual_seed(1)
        model = getattr(transformers, cls)(hf_cfg).eval()
        path = tmp_path / f"{preset}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        stack = build_stack(compose_config([f"model={preset}", f"model.checkpoint={path}"]).model, 1).eval()
        x = speech(1.0)[None]
        with torch.no_grad():
            expected = model.feature_extractor(x)  # (1, 512, frames)
            got = stack(x[:, None])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_group_norm_exact_in_padded_batches():
    """Statistics over each item's valid frames only: every item equals torchaudio run alone."""
    ref = reference_extractor("wav2vec2_base", seed=3)
    stack = ConvStack.from_config(compose_config(["model=wav2vec2_base"]).model, in_channels=1).eval()
    stack.load_state_dict({k.replace("conv_layers.", "layers.").replace("layer_norm", "norm.norm"): v for k, v in ref.state_dict().items()})
    lengths = [16000, 9000, 4321]
    batch = torch.zeros(3, 1, 16000)
    items = [speech(n / 16000, seed=i)[:n] * (i + 1) for i, n in enumerate(lengths)]
    for i, it in enumerate(items):
        batch[i, 0, : it.numel()] = it
    with torch.no_grad():
        y = stack(batch, torch.tensor(lengths))
        for i, it in enumerate(items):
            alone, _ = ref(it[None], None)
            n = stack.geometry.output_length(lengths[i])
            assert alone.shape[1] == n
            torch.testing.assert_close(y[i, :, :n], alone[0].T, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_cli_with_torchaudio_checkpoint_equals_reference(tmp_path):
    ref = reference_extractor("wav2vec2_base", seed=5)
    ckpt = tmp_path / "w2v.pt"
    torch.save({f"feature_extractor.{k}": v for k, v in ref.state_dict().items()}, ckpt)
    wav = tmp_path / "speech.wav"
    make_audio(wav, channels=2, frames=44100, sr=44100, subtype="PCM_16")
    out = tmp_path / "out"
    proc = run_cli(f"input={wav}", "model=wav2vec2_base", f"model.checkpoint={ckpt}", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    got = np.load(out / "speech.npy")
    data, _ = sf.read(wav, dtype="float32", always_2d=True)
    x = torchaudio.functional.resample(torch.from_numpy(data.T).mean(0, keepdim=True), 44100, 16000)
    x = normalize_waveform(x)
    with torch.no_grad():
        expected, _ = ref(x, None)
    np.testing.assert_allclose(got, expected[0].T.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_bad_checkpoints_are_refused_with_the_keys_named(tmp_path):
    large = reference_extractor("wav2vec2_large")
    path = tmp_path / "large.pt"
    torch.save({f"feature_extractor.{k}": v for k, v in large.state_dict().items()}, path)
    base = compose_config(["model=wav2vec2_base", f"model.checkpoint={path}"]).model
    with pytest.raises(ConfigError, match=r"unexpected layers.0.conv.bias"):
        build_stack(base, 1)
    nothing = tmp_path / "nothing.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, nothing)
    with pytest.raises(ConfigError, match=r"has no feature-encoder weights .*found encoder.weight"):
        build_stack(compose_config(["model=wav2vec2_base", f"model.checkpoint={nothing}"]).model, 1)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(path.read_bytes()[: 5000])
    proc = run_cli("input=data/example_mono.flac", "model=wav2vec2_large", f"model.checkpoint={truncated}",
                   f"output.dir={tmp_path / 'o'}")
    assert_one_line_error(proc, "cannot be loaded safely")


@pytest.mark.slow
def test_stft_equals_torch_stft():
    x = speech(3.0)
    stack = ConvStack.from_config(compose_config(["model=stft"]).model, in_channels=1).eval()
    with torch.no_grad():
        got = stack(x[None, None])[0]
    ref = torch.stft(x, 400, 160, window=torch.hann_window(400), center=False, return_complex=True).abs()
    assert got.shape == ref.shape == (201, stack.geometry.output_length(x.numel()))
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    # power and log options
    p = ConvStack.from_config(compose_config(["model=stft", "model.frontend.power=2", "model.frontend.log=true"]).model, 1)
    with torch.no_grad():
        torch.testing.assert_close(p(x[None, None])[0], torch.log(ref**2 + 1e-6), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("overrides, kwargs", [([], {}), (["model.frontend.n_mels=40", "model.frontend.f_min=50", "model.frontend.f_max=7000"], dict(n_mels=40, f_min=50.0, f_max=7000.0))])
def test_mel_equals_torchaudio(overrides, kwargs):
    x = speech(3.0)
    stack = ConvStack.from_config(compose_config(["model=mel", *overrides]).model, in_channels=1).eval()
    with torch.no_grad():
        got = stack(x[None, None])[0]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, hop_length=160, center=False, power=2.0, **{"n_mels": 80, **kwargs}
    )
    ref = mel(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.slow
def test_sinc_filters_pass_their_band_and_stop_the_rest():
    cfg = compose_config(["model=sinc"])
    stack = ConvStack.from_config(cfg.model, in_channels=1)
    fe = cfg.model.frontend
    kernels = stack.layers[0].conv.weight.detach()[:, 0].double()  # (80, 251)
    cutoffs = sinc_cutoffs(fe.n_filters, 16000, fe.min_low_hz, fe.min_band_hz, 8000 - fe.min_band_hz)
    assert kernels.shape == (80, 251)
    n_fft = 8192
    response = torch.fft.rfft(kernels, n=n_fft).abs()  # (80, 4097)
    freqs = torch.arange(n_fft // 2 + 1) * 16000 / n_fft
    lows = [lo for lo, _ in cutoffs]
    assert all(b > a for a, b in zip(lows, lows[1:]))  # increasing, mel-spaced
    widths = [hi - lo for lo, hi in cutoffs]
    assert widths[-1] > 5 * widths[0]  # wider bands at high frequencies, as on the mel scale
    transition = 3.3 * 16000 / 251  # Hamming window main-lobe width
    for i, (lo, hi) in enumerate(cutoffs):
        centre = (lo + hi) / 2
        gain_centre = response[i, int(round(centre * n_fft / 16000))]
        assert abs(gain_centre - 1) < 0.02
        stop = (freqs < lo - transition) | (freqs > hi + transition)
        assert response[i, stop].max() < 0.05, (i, lo, hi)  # below -26 dB away from the band


def test_frontend_config_errors():
    with pytest.raises(ConfigError, match=r"model.frontend=mel needs the sample rate"):
        ConvStack.from_config(compose_config(["model=mel", "audio.sample_rate=null"]).model, 1)
    with pytest.raises(ConfigError, match=r"model.frontend.window must be one of hann"):
        ConvStack.from_config(compose_config(["model=stft", "model.frontend.window=kaiser"]).model, 1)
    with pytest.raises(ConfigError, match=r"works on one channel but model.in_channels=2; use model.in_channels=1 audio.channels=mono"):
        ConvStack.from_config(compose_config(["model=stft", "model.in_channels=auto"]).model, 2)
    with pytest.raises(ConfigError, match=r"f_max"):
        ConvStack.from_config(compose_config(["model=mel", "model.frontend.f_max=9000"]).model, 1)


@pytest.mark.slow
def test_from_preset_loads_a_checkpoint(tmp_path):
    ref = reference_extractor("wav2vec2_large", seed=2)
    path = tmp_path / "large.pt"
    torch.save({f"feature_extractor.{k}": v for k, v in ref.state_dict().items()}, path)
    stack = ConvStack.from_preset("wav2vec2_large", [f"model.checkpoint={path}"], in_channels=1).eval()
    x = speech(0.5)[None]
    with torch.no_grad():
        torch.testing.assert_close(stack(x[:, None]), ref(x, None)[0].transpose(1, 2), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_batch_job_with_a_torchaudio_checkpoint_equals_reference(tmp_path):
    """wav2vec2_base (GroupNorm over time) through the batch job: files of different lengths share
    padded batches, and each equals torchaudio's extractor on that file alone."""
    from conv_pipeline.engines.job import run_batch

    ref = reference_extractor("wav2vec2_base", seed=7)
    ckpt = tmp_path / "w2v.pt"
    torch.save({f"feature_extractor.{k}": v for k, v in ref.state_dict().items()}, ckpt)
    lengths = {"a.wav": 16000, "b.wav": 9100, "c.wav": 5555}
    for i, (name, n) in enumerate(lengths.items()):
        make_audio(tmp_path / "in" / name, channels=1, frames=n, sr=16000, seed=i, subtype="FLOAT")
    out = tmp_path / "out"
    cfg = compose_config([f"input={tmp_path / 'in'}", f"output.dir={out}", "model=wav2vec2_base",
                          f"model.checkpoint={ckpt}", "runtime.batch_size=3", "batch.progress=none"],
                         config_name="batch")
    summary = run_batch(cfg)
    assert summary.exit_code == 0
    for name in lengths:
        data, _ = sf.read(tmp_path / "in" / name, dtype="float32", always_2d=True)
        x = normalize_waveform(torch.from_numpy(data.T))
        with torch.no_grad():
            expected, _ = ref(x, None)
        got = np.load(out / name.replace(".wav", ".npy"))
        np.testing.assert_allclose(got, expected[0].T.numpy(), atol=1e-4, rtol=1e-4)
