"""Every hypothesis strategy of the suite: conv stacks as the config writes them, front-ends,
whole model configs (valid, and with one defect), geometry-only layers, and audio files with
mutations."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

from hypothesis import strategies as st

from conv_pipeline.config.schema import ACTIVATIONS, NORMS, WINDOWS, FrontendConfig, LayerConfig, ModelConfig
from conv_pipeline.geometry import LayerGeometry
from helpers.bad_inputs import encoded


# ---------------------------------------------------------------- conv stacks
@st.composite
def layer_lists(draw, in_channels: int, min_layers: int = 1, max_layers: int = 3, *,
                out_channels: Optional[Sequence[int]] = None, groups: Sequence[int] = (1, 2),
                kernel_size: tuple[int, int] = (1, 5), stride: tuple[int, int] = (1, 3),
                padding: tuple[int, int] = (0, 3), dilation: tuple[int, int] = (1, 3),
                activations: Sequence[Optional[str]] = (None, *ACTIVATIONS),
                norms: Sequence[Optional[str]] = (None, *NORMS)) -> list[LayerConfig]:
    """``min_layers``..``max_layers`` ``LayerConfig`` s that chain from ``in_channels``: every layer
    option the config allows, each within the given (inclusive) ranges or choices. ``groups``:
    those that divide the layer's input (and its output); ``out_channels``: choices, or ``None``
    for the layer's groups times 1..3."""
    layers, chans = [], in_channels
    for _ in range(draw(st.integers(min_layers, max_layers))):
        if out_channels is None:
            g = draw(st.sampled_from([g for g in groups if chans % g == 0]))
            out = g * draw(st.integers(1, 3))
        else:
            out = draw(st.sampled_from(out_channels))
            g = draw(st.sampled_from([g for g in groups if chans % g == 0 and out % g == 0]))
        layers.append(
            LayerConfig(
                out_channels=out,
                kernel_size=draw(st.integers(*kernel_size)),
                stride=draw(st.integers(*stride)),
                padding=draw(st.integers(*padding)),
                dilation=draw(st.integers(*dilation)),
                groups=g,
                bias=draw(st.booleans()),
                activation=draw(st.sampled_from(activations)),
                norm=draw(st.sampled_from(norms)),
            )
        )
        chans = out
    return layers


@st.composite
def stacks(draw, in_channels: st.SearchStrategy[int] = st.integers(1, 4), min_layers: int = 1, max_layers: int = 3,
           **options) -> tuple[int, list[LayerConfig]]:
    """``(in_channels, layers)``: ``layer_lists`` (with its ``options``) after an input width drawn
    from ``in_channels``."""
    chans = draw(in_channels)
    return chans, draw(layer_lists(chans, min_layers, max_layers, **options))


# geometry alone (no channels): the layer shapes ``StackGeometry`` takes
layer_geometries = st.builds(
    LayerGeometry,
    kernel_size=st.integers(1, 9),
    stride=st.integers(1, 5),
    padding=st.integers(0, 4),
    dilation=st.integers(1, 4),
)


# ---------------------------------------------------------------- whole model configs
@st.composite
def frontends(draw) -> FrontendConfig:
    kind = draw(st.sampled_from(["stft", "mel", "sinc", "mfcc", "fbank"]))
    n_fft = draw(st.integers(4, 48))
    if kind == "fbank":
        n_fft += n_fft % 2  # Kaldi's framing: an even FFT size
    n_mels = draw(st.integers(4 if kind == "fbank" else 1, 6))
    log = kind not in ("mfcc", "fbank") and draw(st.booleans())  # mfcc and fbank are log already
    db = kind in ("stft", "mel") and not log and draw(st.booleans())
    fe = FrontendConfig(
        type=kind,
        sample_rate=8000,
        n_fft=n_fft,
        win_length=draw(st.one_of(st.none(), st.integers(1, n_fft))),
        hop_length=draw(st.integers(1, 16)),
        window=draw(st.sampled_from(list(WINDOWS))),
        power=draw(st.sampled_from([None, 1.0, 2.0])),
        n_mels=n_mels,
        log=log,
        n_filters=draw(st.integers(1, 6)),
        kernel_size=draw(st.integers(0, 12)) * 2 + 1,
        n_mfcc=draw(st.integers(1, n_mels)),
        center=kind in ("stft", "mel", "mfcc") and draw(st.booleans()),
        db=db,
        top_db=draw(st.sampled_from([None, 80.0])) if kind == "mfcc" or (kind == "mel" and db) else None,
        deltas=draw(st.integers(0, 2)),
        cmvn=draw(st.sampled_from([None, "mean", "mean_var"])),
    )
    return fe


# the fuzzing campaign's layers: wider than the unit tests' (groups of 3, longer kernels and strides)
FUZZ_LAYERS = dict(groups=(1, 2, 3), kernel_size=(1, 7), stride=(1, 4), padding=(0, 4))


@st.composite
def valid_models(draw) -> tuple[ModelConfig, int]:
    """(ModelConfig, in_channels): any stack the config allows, front-end or not."""
    fe = draw(st.one_of(st.none(), frontends()))
    if fe is not None:
        from conv_pipeline.config.checks import frontend_out_channels

        in_channels = 1
        layers = draw(layer_lists(frontend_out_channels(fe), 0, **FUZZ_LAYERS))
    else:
        in_channels = draw(st.integers(1, 3))
        layers = draw(layer_lists(in_channels, 1, **FUZZ_LAYERS))
    return ModelConfig(name="fuzz", in_channels=in_channels, frontend=fe, layers=layers), in_channels


def _break(model: ModelConfig, draw) -> ModelConfig:
    """One defect, drawn from everything validation must catch."""
    layers = [dataclasses.replace(l) for l in model.layers]
    fe = dataclasses.replace(model.frontend) if model.frontend is not None else None
    options = ["layer", "type", "in_channels", "empty"] + (["frontend"] if fe is not None else [])
    kind = draw(st.sampled_from(options if layers else ["in_channels", "frontend"] if fe else ["in_channels"]))
    if kind == "layer" or kind == "type":
        i = draw(st.integers(0, len(layers) - 1))
        if kind == "layer":
            field, value = draw(st.sampled_from([
                ("kernel_size", 0), ("kernel_size", -3), ("stride", 0), ("padding", -1), ("dilation", 0),
                ("out_channels", 0), ("groups", 0), ("activation", "swish"), ("activation", "os.system"),
                ("norm", "batch_norm"), ("norm", "torch.nn.LayerNorm"),
            ]))
        else:
            field = draw(st.sampled_from(["kernel_size", "stride", "padding", "dilation", "out_channels", "groups"]))
            value = draw(st.sampled_from([2.5, True, "3", None, [1]]))
        layers[i] = dataclasses.replace(layers[i], **{field: value})
        return dataclasses.replace(model, layers=layers)
    if kind == "in_channels":
        return dataclasses.replace(model, in_channels=draw(st.sampled_from([0, -1, "two", 2.0, True])))
    if kind == "empty":
        return dataclasses.replace(model, layers=[], frontend=None)
    field, value = draw(st.sampled_from([
        ("type", "cqt"), ("window", "kaiser"), ("n_fft", 0), ("hop_length", 0), ("win_length", 10_000),
        ("power", -1.0), ("log_offset", 0.0), ("f_min", 1e9), ("sample_rate", None),
    ]))
    if field in ("sample_rate", "f_min") and fe.type == "stft":  # checked for mel and sinc only
        field, value = "window", "kaiser"
    return dataclasses.replace(model, frontend=dataclasses.replace(fe, **{field: value}))


@st.composite
def broken_models(draw):
    model, _ = draw(valid_models())
    return _break(model, draw)


# ---------------------------------------------------------------- audio files with mutations
_seed = functools.partial(encoded, sr=8000, frames=1200)  # a valid file: 0.15 s, stereo unless said
SEEDS = {
    "wav": _seed("WAV", "PCM_16"),
    "flac": _seed("FLAC", "PCM_16"),
    "float.wav": _seed("WAV", "FLOAT"),
    "u8.wav": _seed("WAV", "PCM_U8", channels=1),
    "aiff": _seed("AIFF", "PCM_24"),
    "au": _seed("AU", "ULAW"),
    "ogg": _seed("OGG", "VORBIS"),
    "mp3": _seed("MP3", "MPEG_LAYER_III"),
    "w64": _seed("W64", "PCM_16"),
    "adpcm.wav": _seed("WAV", "IMA_ADPCM"),
}
EXTENSIONS = ["wav", "flac", "ogg", "mp3", "aiff", "au", "w64", "bin"]


@st.composite
def mutated(draw):
    """A valid file of some format with a few mutations: header bytes or 32-bit fields overwritten,
    cut short, bytes inserted or deleted; named with any extension."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["byte", "field", "cut", "insert", "delete"]))
        if not data:
            break
        if op == "byte":
            i = draw(st.integers(0, min(len(data), 96) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "field":
            i = draw(st.integers(0, max(0, min(len(data), 64) - 4)))
            data[i : i + 4] = draw(st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 16001, 44056, 3, 1024,
                                                    draw(st.integers(0, 2**32 - 1))])).to_bytes(4, "little")
        elif op == "cut":
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        else:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 64))]
    return bytes(data), draw(st.sampled_from([name.rsplit(".", 1)[-1], *EXTENSIONS]))
