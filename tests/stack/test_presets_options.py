"""Front-end options of the spectral presets against independent computations: dB with and without
top_db (``AmplitudeToDB``), deltas (``compute_deltas``), CMVN (per-channel mean/variance over the
file), in whole, chunked and padded-batch modes; their geometry (edge padding) and config errors."""

import pytest
import torch
import torchaudio
import torchaudio.functional as AF

from conv_pipeline.config.compose import compose_config
from conv_pipeline.config.checks import validate_model
from conv_pipeline.errors import ConfigError
from conv_pipeline.execute.chunked import iter_features
from conv_pipeline.geometry import LayerGeometry, StackGeometry
from conv_pipeline.stack.stack import ConvStack


def signal(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.randn(n, generator=g)
    x[: n // 5] *= 1e-4  # far below the rest: top_db clamps it
    return x


def reference(x, power=2.0, db=False, top_db=None, deltas=0, cmvn=None, kind="mel"):
    if kind == "stft":
        f = torch.stft(x, 400, 160, window=torch.hann_window(400), center=False, return_complex=True).abs() ** power
    else:
        f = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80, center=False,
                                                 power=power)(x)
    if db:
        f = torchaudio.transforms.AmplitudeToDB("power" if power == 2 else "magnitude", top_db=top_db)(f)
    feats = [f]
    for _ in range(deltas):
        feats.append(AF.compute_deltas(feats[-1], win_length=5))
    f = torch.cat(feats).double()
    if cmvn:
        f = f - f.mean(-1, keepdim=True)
        if cmvn == "mean_var":
            f = f / f.std(-1, unbiased=False, keepdim=True)
    return f


OPTIONS = [
    ("mel", ["model.frontend.db=true"], dict(db=True)),
    ("mel", ["model.frontend.db=true", "model.frontend.top_db=50"], dict(db=True, top_db=50.0)),
    ("mel", ["model.frontend.db=true", "model.frontend.power=1", "model.frontend.top_db=40"],
     dict(db=True, power=1.0, top_db=40.0)),
    ("stft", ["model.frontend.db=true"], dict(db=True, power=1.0, kind="stft")),
    ("mel", ["model.frontend.db=true", "model.frontend.deltas=1"], dict(db=True, deltas=1)),
    ("mel", ["model.frontend.db=true", "model.frontend.deltas=2", "model.frontend.cmvn=mean_var"],
     dict(db=True, deltas=2, cmvn="mean_var")),
    ("mel", ["model.frontend.log=true", "model.frontend.log_offset=1e-6", "model.frontend.cmvn=mean"], None),
    ("stft", ["model.frontend.db=true", "model.frontend.cmvn=mean_var"], dict(db=True, power=1.0, kind="stft", cmvn="mean_var")),
]


def expected(x, preset, overrides, kwargs):
    if kwargs is not None:
        return reference(x, **kwargs)
    f = torch.log(reference(x) + 1e-6)  # the log-mel with mean CMVN case
    return f - f.mean(-1, keepdim=True)


def assert_close(got, ref):
    assert got.shape == ref.shape
    assert float((got.double() - ref).abs().max()) <= 1e-3 * float(ref.abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("preset,overrides,kwargs", OPTIONS)
def test_options_whole_chunked_and_batched(preset, overrides, kwargs):
    s = ConvStack.from_preset(preset, overrides, in_channels=1)
    xs = [signal(16000 + 901, 0), signal(7000, 1)]
    refs = [expected(x, preset, overrides, kwargs) for x in xs]
    with torch.inference_mode():
        assert_close(s(xs[0][None, None])[0], refs[0])
        batch = torch.zeros(2, 1, len(xs[0]))
        for i, x in enumerate(xs):
            batch[i, 0, : len(x)] = x
        out = s(batch, torch.tensor([len(x) for x in xs]))
    for i, ref in enumerate(refs):
        assert_close(out[i, :, : ref.shape[-1]], ref)
    for block in (1234, 333):
        blocks = [xs[0][None, i : i + block] for i in range(0, len(xs[0]), block)]
        assert_close(torch.cat(list(iter_features(blocks, s)), dim=1), refs[0])


@pytest.mark.slow
def test_top_db_clamps_relative_to_the_file_peak():
    """The clamp really bites here (so the chunked statistics pass is exercised): the quiet fifth
    sits at the floor, peak - top_db."""
    x = signal(16000)
    s = ConvStack.from_preset("mfcc", [], in_channels=1)
    mel_db = ConvStack.from_preset("mel", ["model.frontend.db=true", "model.frontend.top_db=80"], in_channels=1)
    with torch.inference_mode():
        y = mel_db(x[None, None])[0]
    assert float(y.min()) == pytest.approx(float(y.max()) - 80, abs=1e-3)
    assert (y <= y.max() - 80 + 1e-3).float().mean() > 0.05
    assert s.mixes_time and mel_db.mixes_time


def test_edge_geometry():
    """Reflect padding counts like zeros for positions but needs pad + 1 samples; replicate needs one."""
    centred = StackGeometry([LayerGeometry(400, 160, 200, edge="reflect")])
    assert [centred.output_length(n) for n in (200, 201, 16000)] == [0, 2, 101]
    assert centred.min_input_length == 201 and centred.left_padding == 200
    assert centred.frame_times(2, 16000) == [(-200 + 199.5) / 16000, (160 - 200 + 199.5) / 16000]
    deltas = StackGeometry([LayerGeometry(400, 160), LayerGeometry(5, 1, 2, edge="replicate")])
    assert deltas.output_length(400) == 1 and deltas.min_input_length == 400
    with pytest.raises(ConfigError):
        LayerGeometry(3, edge="circular")
    g = validate_model(compose_config(["model=mfcc", "model.frontend.center=true", "model.frontend.deltas=2"]).model)
    assert g.output_length(16000) == 101 and [lay.edge for lay in g.layers] == ["reflect", "zeros", "zeros",
                                                                                "replicate", "replicate"]


@pytest.mark.parametrize("overrides,needle", [
    (["model=fbank", "model.frontend.center=true"], "center"),
    (["model=stft", "model.frontend.top_db=80"], "top_db"),
    (["model=mel", "model.frontend.top_db=80"], "top_db"),
    (["model=mel", "model.frontend.db=true", "model.frontend.log=true"], "pick one"),
    (["model=mfcc", "model.frontend.deltas=3"], "deltas"),
    (["model=mfcc", "model.frontend.cmvn=yes"], "cmvn"),
    (["model=mfcc", "model.frontend.n_mfcc=81"], "n_mfcc"),
    (["model=mfcc", "model.frontend.db=true"], "db"),
])
def test_config_errors_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        validate_model(compose_config(overrides).model)
    assert "\n" not in str(err.value)


def test_cmvn_false_reads_as_off():
    from conv_pipeline.stack.classic import Cmvn

    cfg = compose_config(["model=mfcc", "model.frontend.cmvn=false"])
    s = ConvStack.from_config(cfg.model, in_channels=1)
    assert s.out_channels == 40 and len(s.layers) == 3
    assert not any(isinstance(layer.norm, Cmvn) for layer in s.layers)


def test_fbank_framing_runs_as_rfft_and_equals_its_conv():
    """fbank's framing kernel (DC removal, pre-emphasis, Povey window, 512-point DFT, folded) is
    recognised from its weights and run as frames -> rfft; equal to F.conv1d with those weights;
    other weights run as the conv."""
    import torch.nn.functional as F

    from conv_pipeline.stack.spectral import Framing

    s = ConvStack.from_preset("fbank", [], in_channels=1)
    layer = s.layers[0]
    x = signal(4000)[None, None]
    with torch.inference_mode():
        assert isinstance(layer.spectral.window(layer.conv), Framing)
        fast = layer(x)
        re_im = F.conv1d(x, layer.conv.weight, stride=160)
        dense = re_im[:, :257] ** 2 + re_im[:, 257:] ** 2
    assert fast.shape == dense.shape == (1, 257, 1 + (4000 - 400) // 160)
    assert float((fast - dense).abs().max()) <= 1e-5 * float(dense.abs().max())
    with torch.no_grad():
        layer.conv.weight[3, 0, 7] += 0.5
        assert layer.spectral.window(layer.conv) is None
