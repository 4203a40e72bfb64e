"""The model summary: one per-layer table (kernel, stride, padding, dilation, channels,
parameters, output frames, receptive field and hop in samples and ms, MFLOP/s) with totals.

Computed from the config and the geometry alone (no torch): ``summary=true`` on the command
line (``summary_for_config``), the log of every run, and ``python -m conv_pipeline.inspect``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from conv_pipeline.config.checks import (
    cmvn_mode,
    frontend_channels,
    frontend_out_channels,
    model_layer_specs,
)
from conv_pipeline.config.plan import Plan, build_plan
from conv_pipeline.config.schema import NORMS, LayerConfig, ModelConfig
from conv_pipeline.errors import ConfigError
from conv_pipeline.fs import Lines, printable
from conv_pipeline.geometry import (
    StackGeometry,
    conv_flops_per_frame,
    conv_parameters,
    frames_per_second,
)
from conv_pipeline.inspect.text import ms_text, text_table

ASSUMED_SAMPLE_RATE = 16000  # summary without audio when audio.sample_rate is null


ASSUMED_IN_CHANNELS = 1  # summary without audio when model.in_channels is auto and nothing else tells


FLOP_CONVENTION = "FLOPs: 2 per multiply-accumulate + 1 per bias add; activations and norms not counted"


# Parameters of each norm for ``channels`` channels (stack/layer.py): LayerNorm over channels and
# GroupNorm with a group per channel both have an affine weight and bias per channel.
NORM_PARAMETERS = {"layer_norm": lambda channels: 2 * channels, "group_norm": lambda channels: 2 * channels}


# ---------------------------------------------------------------- model summary
def model_summary_rows(
    layers: Sequence[LayerConfig],
    in_channels: "int | Sequence[tuple[int, int]]",
    sample_rate: float,
    num_samples: Optional[int] = None,
) -> list[dict]:
    """One dict per conv layer: the geometry's ``summary_rows`` (kernel, stride, padding, dilation,
    channels, frames for ``num_samples`` input samples, receptive_field, hop) plus ``params``
    (conv weights, bias and norm), ``flops_per_frame``, ``mflops_per_s`` (per second of audio at
    ``sample_rate``) and ``flops`` (for ``num_samples``, from the exact output frames; None without).

    ``in_channels``: the stack's input channels (each layer then reads the previous one's output),
    or each layer's ``(in, out)`` channels when something between layers changes them (a front-end).
    """
    geometry = StackGeometry(layers)
    if isinstance(in_channels, int):
        chans, c = [], in_channels
        for layer in layers:
            chans.append((c, layer.out_channels))
            c = layer.out_channels
    else:
        chans = [(int(a), int(b)) for a, b in in_channels]
    rows = geometry.summary_rows(num_samples, chans)
    for i, (row, layer) in enumerate(zip(rows, layers), start=1):
        cin, cout = chans[i - 1]
        params = conv_parameters(cin, cout, layer.kernel_size, layer.groups, layer.bias)
        if layer.norm:
            if layer.norm not in NORM_PARAMETERS:  # a norm added to config.NORMS without a count here
                raise ConfigError(f"model.layers[{i - 1}].norm={layer.norm!r}: no parameter count known ({', '.join(NORMS)})")
            params += NORM_PARAMETERS[layer.norm](cout)
        per_frame = conv_flops_per_frame(cin, cout, layer.kernel_size, layer.groups, layer.bias)
        row.update(
            params=params,
            flops_per_frame=per_frame,
            mflops_per_s=per_frame * frames_per_second(geometry, i, sample_rate) / 1e6,
            flops=None if row["frames"] is None else per_frame * row["frames"],
        )
    return rows


def model_summary(
    model: ModelConfig,
    in_channels: int,
    sample_rate: float,
    input_seconds: Optional[float] = None,
    notes: Sequence[str] = (),
) -> Lines:
    """The per-layer table with totals, for ``input_seconds`` of audio at ``sample_rate``.

    ``notes`` are printed under the title (say there where ``in_channels`` / ``sample_rate`` came from).
    """
    num_samples = None if input_seconds is None else int(round(input_seconds * sample_rate))
    layers, chans, n_frontend = _stack_layers(model, in_channels)
    rows = model_summary_rows(layers, chans, sample_rate, num_samples)
    geometry = StackGeometry(layers)
    total_params = sum(r["params"] for r in rows)
    total_mflops = sum(r["mflops_per_s"] for r in rows)
    out_channels = chans[-1][1] if not model.layers else layers[-1].out_channels
    if n_frontend and not model.layers:
        out_channels = frontend_out_channels(model.frontend)
    title = (
        f"model {printable(model.name)}: {len(layers)} conv layer{'s' if len(layers) != 1 else ''}, "
        f"{in_channels} -> {out_channels} channels, {total_params:,} parameters"
    )
    lines = [title, *(f"  {n}" for n in notes)]
    if n_frontend:
        which = "layer 1" if n_frontend == 1 else f"layers 1-{n_frontend}"
        log = " and log" if model.frontend.log else ""
        if model.frontend.type == "sinc":
            steps = f"rectification{log} not counted in FLOPs"
        else:
            steps = f"layer 1 outputs (re, im) pairs, each becoming one magnitude channel; magnitude{log} not counted in FLOPs"
        lines.append(f"  {which}: the {model.frontend.type} front-end (fixed kernels, counted in params; {steps})")
        lines += [f"    {role}" for role in frontend_roles(model.frontend)]
    if num_samples is not None:
        lines.append(f"  input: {input_seconds:g} s = {num_samples} samples at {sample_rate:g} Hz")
    body = [
        [
            str(r["layer"]),
            str(r["kernel"]),
            str(r["stride"]),
            str(r["padding"]) + ("" if r.get("edge", "zeros") == "zeros" else f" {r['edge']}"),
            str(r["dilation"]),
            f"{r['in_channels']}->{r['out_channels']}",
            f"{r['params']:,}",
            "-" if r["frames"] is None else str(r["frames"]),
            str(r["receptive_field"]),
            ms_text(r["receptive_field"], sample_rate),
            str(r["hop"]),
            ms_text(r["hop"], sample_rate),
            f"{r['mflops_per_s']:.3f}",
        ]
        for r in rows
    ]
    body.append(
        [
            "total", "", "", "", "",
            f"{in_channels}->{out_channels}",
            f"{total_params:,}",
            "-" if num_samples is None else str(rows[-1]["frames"]),
            str(geometry.receptive_field),
            ms_text(geometry.receptive_field, sample_rate),
            str(geometry.hop),
            ms_text(geometry.hop, sample_rate),
            f"{total_mflops:.3f}",
        ]
    )
    header = ["layer", "kernel", "stride", "pad", "dil", "channels", "params", "frames", "RF", "RF ms", "hop", "hop ms", "MFLOP/s"]
    lines += text_table(header, body, left=())
    lines.append(f"{FLOP_CONVENTION}.")
    lines.append("MFLOP/s: per second of audio = FLOPs per output frame x frames per second (sample rate / hop).")
    if num_samples is not None:
        total_flops = sum(r["flops"] for r in rows)
        lines.append(f"{input_seconds:g} s of audio: {total_flops / 1e6:.3f} MFLOPs (each layer's output frames x FLOPs per frame)")
    return Lines("\n".join(lines))  # logged with its line breaks (fs.PrintableArgs)


def frontend_roles(fe: Any) -> list[str]:
    """One line per front-end conv of a spectral preset (stft, mel, mfcc, fbank): what it computes."""
    if fe.type == "sinc":
        return []
    power = fe.power if fe.power is not None else (1.0 if fe.type == "stft" else 2.0)
    first = ("Kaldi framing (DC removal, pre-emphasis, window) and DFT" if fe.type == "fbank"
             else "windowed DFT" + (", centred (reflect padding at the file's ends)" if fe.center else ""))
    roles = [f"layer 1: {first}, then |X|^{power:g}" + (" in dB" if fe.db and fe.type == "stft" else "")]
    if fe.type != "stft":
        scale = "Kaldi mel" if fe.type == "fbank" else "mel (HTK)"
        after = ", then dB" if fe.db or fe.type == "mfcc" else ", then log" if fe.log else ""
        clamp = f" clamped at the file's peak - {fe.top_db:g} dB (one statistics pass when chunked)" if fe.top_db else ""
        roles.append(f"layer 2: {scale} matrix{after}{clamp}")
    if fe.type == "mfcc":
        roles.append("layer 3: DCT-II (ortho) as a 1x1 conv")
    n = len(roles)
    roles += [f"layer {n + i + 1}: {'deltas' if i == 0 else 'delta-deltas'} (5 taps, edges replicated)"
              for i in range(int(fe.deltas or 0))]
    if cmvn_mode(fe) is not None:
        roles.append(f"CMVN ({fe.cmvn}) over the whole file on the last front-end layer (one statistics pass when chunked)")
    return roles


def _stack_layers(model: ModelConfig, in_channels: int) -> tuple[list, "int | list[tuple[int, int]]", int]:
    """``(conv layer specs, channels, front-end layer count)`` of the whole stack, front-end first.

    Without a front-end each layer reads the previous one's output (``channels`` is ``in_channels``);
    a front-end changes channels between its convs (``config.checks.frontend_channels``).
    """
    if model.frontend is None:
        return list(model.layers), in_channels, 0
    chans = frontend_channels(model.frontend)
    c = chans[-1][1] if model.frontend.type == "sinc" else frontend_out_channels(model.frontend)
    for layer in model.layers:
        chans.append((c, layer.out_channels))
        c = layer.out_channels
    return model_layer_specs(model), chans, len(chans) - len(model.layers)


def summary_for_plan(plan: Plan, info: Any = None) -> str:
    """The model summary of a plan, without decoding audio (``info``: the input's header, if read).

    ``in_channels``: fixed by the plan (``model.in_channels``, the checkpoint, a front-end or a
    ``mono``/list policy), else the input's channels after ``audio.channels``, else 1 (a mono
    file), said so in the output. ``sample_rate``: ``audio.sample_rate``, else the input's, else
    16000 Hz (said so). ``input_seconds`` sizes the frames and total-FLOPs columns (null: the
    input's duration, or per-second numbers only).
    """
    cfg, rule = plan.config, plan.channels
    if rule.count is not None:
        in_channels, why = rule.count, rule.source
    elif info is not None:
        in_channels = rule.stack_channels(info.channels, info.path)
        why = f"{info.path} has {info.channels}, audio.channels={cfg.audio.channels}"
    else:
        in_channels = ASSUMED_IN_CHANNELS
        why = "assumed: model.in_channels=auto and no audio, so a mono file; set model.in_channels=N to size for N channels"
    if in_channels % rule.groups:
        raise ConfigError(
            f"model.layers[0].groups={rule.groups} must divide its input channels ({in_channels}: {why})"
        )
    notes = [f"in_channels: {in_channels} ({why})"]
    if plan.sample_rate:
        sample_rate, why = int(plan.sample_rate), "audio.sample_rate"
    elif info is not None:
        sample_rate, why = info.sample_rate, f"{info.path}'s rate"
    else:
        sample_rate = ASSUMED_SAMPLE_RATE
        why = "assumed: audio.sample_rate is null, so runs keep each file's rate; set audio.sample_rate=N to size for N Hz"
    notes.append(f"sample rate: {sample_rate} Hz ({why})")
    seconds = cfg.input_seconds
    if seconds is None and info is not None:
        seconds = info.frames / info.sample_rate
    return model_summary(cfg.model, in_channels, sample_rate, seconds, notes)


def summary_for_config(cfg: Any, kind: str = "file") -> str:
    """``summary=true``: the plan's model summary; the input's header is read when ``input`` is
    one audio file (a batch job's folder, glob or list is not opened)."""
    plan = build_plan(cfg, kind, need_input=False)
    info = None
    if plan.input and kind == "file":
        from conv_pipeline.load.info import probe  # header only: nothing is decoded

        info = probe(plan.input, getattr(plan.config.audio, "decoder", "auto"))
    return summary_for_plan(plan, info)
