"""Looking at outputs without writing code, and the model summary.

    python -m conv_pipeline.inspect feats/song.npz                 # one feature file
    python -m conv_pipeline.inspect feats/                         # an output folder: its manifest as a table
    python -m conv_pipeline.inspect feats/song.npz --plot out.png  # also draw it (see plot.py)

Plain text on stdout; a broken or non-feature file gives one line on stderr and exit status 2.
This module imports numpy, yaml and the torch-free parts of the package only, so it starts fast.

``model_summary`` / ``summary_for_config`` build the per-layer table of ``python -m conv_pipeline
summary=true input_seconds=10``: kernel, stride, padding, dilation, channels, parameters, output
frames, receptive field and hop, and MFLOP/s of audio. FLOPs: 2 per multiply-accumulate plus 1 per
bias add; activations and norms are not counted (see ``geometry.conv_flops_per_frame``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .config import NORMS, Config, LayerConfig, ModelConfig
from .errors import ConfigError, InputError
from .features import FEATURE_SUFFIXES, OutputRoot, _layers, _read_features
from .geometry import StackGeometry, conv_flops_per_frame, conv_parameters, frames_per_second

__all__ = [
    "describe_file",
    "describe_dir",
    "feature_stats",
    "model_summary_rows",
    "model_summary",
    "summary_for_config",
    "ASSUMED_SAMPLE_RATE",
    "main",
]

PROG = "conv_pipeline.inspect"
ASSUMED_SAMPLE_RATE = 16000  # summary without audio when audio.sample_rate is null
ASSUMED_IN_CHANNELS = 1  # summary without audio when model.in_channels is auto and nothing else tells
FLOP_CONVENTION = "FLOPs: 2 per multiply-accumulate + 1 per bias add; activations and norms not counted"
# Parameters of each norm for ``channels`` channels (model.py): LayerNorm over channels and
# GroupNorm with a group per channel both have an affine weight and bias per channel.
_NORM_PARAMETERS = {"layer_norm": lambda channels: 2 * channels, "group_norm": lambda channels: 2 * channels}


# ---------------------------------------------------------------- small formatting helpers
def _ms(samples: Optional[int], sample_rate: Optional[float]) -> str:
    return f"{1000 * samples / sample_rate:.2f}" if samples is not None and sample_rate else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> list[str]:
    """Aligned columns: the columns in ``left`` flush left, the others right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _layer_text(layer: LayerConfig, in_channels: Any) -> str:
    parts = [f"conv {in_channels}->{layer.out_channels} k{layer.kernel_size}"]
    parts += [f"{k}{v}" for k, v, d in (("s", layer.stride, 1), ("p", layer.padding, 0), ("d", layer.dilation, 1), ("g", layer.groups, 1)) if v != d]
    if not layer.bias:
        parts.append("nobias")
    text = " ".join(parts)
    for extra in (layer.norm, layer.activation):
        if extra:
            text += f" +{extra}"
    return text


def _frontend_text(fe: dict) -> str:
    keys = {"stft": ("n_fft", "hop_length", "power", "log"), "mel": ("n_fft", "hop_length", "n_mels", "log"),
            "sinc": ("n_filters", "kernel_size", "hop_length", "log")}.get(fe.get("type"), ())
    return f"{fe.get('type')} front-end (" + ", ".join(f"{k} {fe.get(k)}" for k in keys) + ")"


def _model_line(model: Optional[dict]) -> str:
    layers = _layers(model) or []
    fe = model.get("frontend") if isinstance(model, dict) else None
    if not layers and not isinstance(fe, dict):
        return "unknown (no model config found)"
    chans = [model.get("in_channels", "?")] + [l.out_channels for l in layers]
    if isinstance(fe, dict):
        chans[0] = "?"  # the front-end's output channels: see the model summary
    parts = [_frontend_text(fe)] if isinstance(fe, dict) else []
    body = " | ".join(parts + [_layer_text(l, chans[i]) for i, l in enumerate(layers)])
    ckpt = model.get("checkpoint")
    return f"{model.get('name', '?')}: {body}" + (f" (checkpoint {ckpt})" if ckpt else "")


# ---------------------------------------------------------------- one feature file
def feature_stats(features: np.ndarray) -> dict:
    """min/max/mean/std over the finite values (float64), and NaN, Inf and zero counts."""
    finite_mask = np.isfinite(features)
    finite = features[finite_mask].astype(np.float64)
    nan = int(np.isnan(features).sum())
    stats = {"nan": nan, "inf": int(features.size - finite.size - nan), "zeros": int((features == 0).sum()), "size": int(features.size)}
    if finite.size:
        stats.update(min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()), std=float(finite.std()))
    else:
        stats.update(min=None, max=None, mean=None, std=None)
    return stats


def describe_file(path: os.PathLike | str) -> str:
    """A readable summary of one feature file. Raises ``InputError`` for a broken or non-feature file."""
    features, meta = _read_features(path)
    c, f = meta["shape"]
    sr, hop, rf = meta["sample_rate"], meta["hop"], meta["receptive_field"]
    lines = [f"{meta['path']}  ({meta['format']})"]
    rows: list[tuple[str, str]] = [("features", f"{meta['dtype']} {c} channels x {f} frames, shape {tuple(features.shape)}")]
    rows.append(("sample rate", f"{sr} Hz" if sr else "unknown"))
    if hop is not None:
        rate = f", {sr / hop:.2f} frames/s" if sr else ""
        rows.append(("hop", f"{hop} samples ({_ms(hop, sr)} ms){rate}"))
        rows.append(("receptive field", f"{rf} samples ({_ms(rf, sr)} ms), left padding {meta['left_padding']} samples"))
    else:
        rows.append(("hop", "unknown"))
    ft = meta["frame_times"]
    if meta["duration_s"] is not None:
        dur = f"{meta['duration_s']:.3f} s of audio"
        if meta["num_samples"] is not None:
            dur += f" ({meta['num_samples']} samples)"
        rows.append(("duration", dur))
    elif ft is not None and hop is not None and sr:
        rows.append(("duration", f"about {f * hop / sr:.3f} s of audio ({f} frames x hop; no manifest record)"))
    else:
        rows.append(("duration", "unknown"))
    if ft is not None and f:
        rows.append(("frame times", f"{ft[0]:.4f} s .. {ft[-1]:.4f} s (frame centres)"))
    s = feature_stats(features)
    if s["min"] is not None:
        stat = f"min {s['min']:.6g}  max {s['max']:.6g}  mean {s['mean']:.6g}  std {s['std']:.6g}"
    else:
        stat = "no finite values"
    stat += f"  NaN {s['nan']}  Inf {s['inf']}  zeros {100 * s['zeros'] / max(s['size'], 1):.1f}%"
    rows.append(("stats", stat))
    rows.append(("source", str(meta["input"]) if meta["input"] else "unknown"))
    rows.append(("model", _model_line(meta["model"])))
    cfg = meta["config"]
    if isinstance(cfg, dict):
        audio = cfg.get("audio") or {}
        out = cfg.get("output") or {}
        rt = cfg.get("runtime") or {}
        rows.append(
            (
                "config",
                f"audio.sample_rate={audio.get('sample_rate')} audio.channels={audio.get('channels')} "
                f"output.format={out.get('format')} seed={cfg.get('seed')} runtime.device={rt.get('device')} "
                f"runtime.chunk_seconds={rt.get('chunk_seconds')}",
            )
        )
    else:
        rows.append(("config", "unknown (no config found)"))
    if meta["root"]:
        rows.append(("output folder", meta["root"]))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  note: {w}" for w in meta["warnings"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- an output folder
def describe_dir(path: os.PathLike | str) -> str:
    """Every input of an output folder's manifest with its status, then totals and stray files.

    Raises ``InputError`` when the folder has no ``manifest.jsonl``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; check the path")
    root = OutputRoot.read(folder)
    if not (folder / "manifest.jsonl").is_file():
        raise InputError(f"{folder}: no manifest.jsonl; not a conv_pipeline output folder (inspect a feature file instead)")
    rows, errors = [], {}
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    audio_s, frames, missing = 0.0, 0, 0
    listed = set()
    for rec in root.records.values():
        counts[rec.status] = counts.get(rec.status, 0) + 1
        status = rec.status
        if rec.output:
            listed.add(rec.output)
            if not (folder / rec.output).is_file():
                status += " MISSING"
                missing += 1
        if rec.status != "failed":
            audio_s += rec.duration_s or 0.0
            frames += rec.shape[1] if rec.shape and len(rec.shape) == 2 else 0
        shape = f"{rec.shape[0]} x {rec.shape[1]}" if rec.shape and len(rec.shape) == 2 else "-"
        dur = f"{rec.duration_s:.2f}" if rec.duration_s is not None else "-"
        if rec.error:
            errors[len(rows)] = rec.error
        rows.append([rec.output or "-", status, shape, dur, str(rec.sample_rate or "-"), str(rec.input)])
    unlisted = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix in FEATURE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        and p.relative_to(folder).as_posix() not in listed
    )
    for rel in unlisted:
        rows.append([rel, "unlisted", "-", "-", "-", "(not in the manifest)"])
    geometry_line = ""
    geometry = root.geometry()
    if geometry is not None:
        geometry_line = f"; hop {geometry.hop}, receptive field {geometry.receptive_field} samples"
    lines = [f"{folder}  model {_model_line(root.model)}{geometry_line}"]
    lines += [f"  note: {p}" for p in root.problems]
    table = _table(["output", "status", "shape", "audio s", "Hz", "input"], rows, left=(0, 1, 5))
    lines.append(table[0])
    for i, line in enumerate(table[1:]):
        lines.append(line)
        if i in errors:
            lines.append(f"    error: {errors[i]}")
    total = sum(counts.values())
    lines.append(
        f"{total} input(s): {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed; "
        f"{audio_s:.2f} s of audio, {frames} frames"
        + (f"; {missing} listed file(s) MISSING" if missing else "")
        + (f"; {len(unlisted)} feature file(s) not in the manifest" if unlisted else "")
    )
    return "\n".join(lines)


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
            if layer.norm not in _NORM_PARAMETERS:  # a norm added to config.NORMS without a count here
                raise ConfigError(f"model.layers[{i - 1}].norm={layer.norm!r}: no parameter count known ({', '.join(NORMS)})")
            params += _NORM_PARAMETERS[layer.norm](cout)
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
) -> str:
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
        out_channels = _frontend_out_channels(model)
    title = (
        f"model {model.name}: {len(layers)} conv layer{'s' if len(layers) != 1 else ''}, "
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
    if num_samples is not None:
        lines.append(f"  input: {input_seconds:g} s = {num_samples} samples at {sample_rate:g} Hz")
    body = [
        [
            str(r["layer"]),
            str(r["kernel"]),
            str(r["stride"]),
            str(r["padding"]),
            str(r["dilation"]),
            f"{r['in_channels']}->{r['out_channels']}",
            f"{r['params']:,}",
            "-" if r["frames"] is None else str(r["frames"]),
            str(r["receptive_field"]),
            _ms(r["receptive_field"], sample_rate),
            str(r["hop"]),
            _ms(r["hop"], sample_rate),
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
            _ms(geometry.receptive_field, sample_rate),
            str(geometry.hop),
            _ms(geometry.hop, sample_rate),
            f"{total_mflops:.3f}",
        ]
    )
    header = ["layer", "kernel", "stride", "pad", "dil", "channels", "params", "frames", "RF", "RF ms", "hop", "hop ms", "MFLOP/s"]
    lines += _table(header, body, left=())
    lines.append(f"{FLOP_CONVENTION}.")
    lines.append("MFLOP/s: per second of audio = FLOPs per output frame x frames per second (sample rate / hop).")
    if num_samples is not None:
        total_flops = sum(r["flops"] for r in rows)
        lines.append(f"{input_seconds:g} s of audio: {total_flops / 1e6:.3f} MFLOPs (each layer's output frames x FLOPs per frame)")
    return "\n".join(lines)


def _frontend_out_channels(model: ModelConfig) -> int:
    from . import config as schema

    return schema.frontend_out_channels(model.frontend)


def _stack_layers(model: ModelConfig, in_channels: int) -> tuple[list, "int | list[tuple[int, int]]", int]:
    """``(conv layer specs, channels, front-end layer count)`` of the whole stack, front-end first.

    Without a front-end each layer reads the previous one's output (``channels`` is ``in_channels``);
    a front-end changes channels between its convs (an STFT's (re, im) pairs become one magnitude
    each), so the built stack's own convs say what each layer reads.
    """
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        return list(model.layers), in_channels, 0
    from . import config as schema
    from .model import ConvStack

    specs = schema.model_layer_specs(model)
    stack = ConvStack.from_config(model, in_channels=in_channels)
    from torch import nn

    convs = [m for m in stack.modules() if isinstance(m, nn.Conv1d)]
    if len(convs) != len(specs):
        raise RuntimeError(f"internal error: {len(convs)} Conv1d modules for {len(specs)} layer specs")
    return specs, [(c.in_channels, c.out_channels) for c in convs], len(specs) - len(model.layers)


def summary_for_config(cfg: Config) -> str:
    """The model summary for a composed config, without decoding audio.

    ``in_channels``: ``model.in_channels`` when a number, else the checkpoint's, else (with ``input``
    set) the input's channels after ``audio.channels`` read from its header, else what
    ``audio.channels`` implies (``mono``: 1, a list: its length), else 1 (a mono file), said so in
    the output. ``sample_rate``: ``audio.sample_rate``, else the input's header, else 16000 Hz (said so).
    ``input_seconds`` sizes the frames and total-FLOPs columns (null: per-second numbers only).
    """
    from .config import policy_channel_count, resolve_in_channels, validate_audio, validate_model

    validate_model(cfg.model)
    validate_audio(cfg.audio)
    seconds = cfg.input_seconds
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 or math.isinf(seconds)):
        raise ConfigError(f"input_seconds must be a number of seconds > 0, got {seconds!r}")
    info = None
    if cfg.input:
        from .audio import probe  # header only: nothing is decoded

        info = probe(cfg.input)
    notes = []
    if not (cfg.model.in_channels == "auto"):
        in_channels, why = int(cfg.model.in_channels), "model.in_channels"
    elif cfg.model.checkpoint:
        from .model import checkpoint_in_channels

        in_channels, why = checkpoint_in_channels(cfg.model.checkpoint, cfg.model), "from model.checkpoint"
    elif info is not None:
        in_channels = policy_channel_count(cfg.audio.channels, info.channels)
        why = f"{info.path} has {info.channels}, audio.channels={cfg.audio.channels}"
    elif cfg.audio.channels != "keep":
        in_channels, why = policy_channel_count(cfg.audio.channels, 1), f"audio.channels={cfg.audio.channels}"
    else:
        in_channels = ASSUMED_IN_CHANNELS
        why = "assumed: model.in_channels=auto and no audio, so a mono file; set model.in_channels=N to size for N channels"
    resolve_in_channels(cfg.model, in_channels)  # groups must divide the input channels
    notes.append(f"in_channels: {in_channels} ({why})")
    if cfg.audio.sample_rate:
        sample_rate, why = int(cfg.audio.sample_rate), "audio.sample_rate"
    elif info is not None:
        sample_rate, why = info.sample_rate, f"{info.path}'s rate"
    else:
        sample_rate = ASSUMED_SAMPLE_RATE
        why = "assumed: audio.sample_rate is null, so runs keep each file's rate; set audio.sample_rate=N to size for N Hz"
    notes.append(f"sample rate: {sample_rate} Hz ({why})")
    if seconds is None and info is not None:
        seconds = info.frames / info.sample_rate
    return model_summary(cfg.model, in_channels, sample_rate, seconds, notes)


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Summarise a conv_pipeline feature file (.npy/.npz) or an output folder (its manifest).",
    )
    p.add_argument("path", help="a feature file (.npy or .npz) or an output folder (output.dir)")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the feature file (waveform + heatmap) to this PNG")
    p.add_argument("--audio", metavar="AUDIO", help="source audio for --plot when the recorded input is elsewhere")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def _run(args: argparse.Namespace) -> None:
    from .cli import report_errors

    with report_errors(prog=PROG):
        path = Path(args.path)
        if path.is_dir():
            if args.plot:
                raise InputError(f"{path}: --plot draws one feature file; give a .npy/.npz file, not a folder")
            print(describe_dir(path))
        else:
            print(describe_file(path))
            if args.plot:
                from .plot import plot_features

                result = plot_features(path, args.plot, audio_path=args.audio)
                print(f"wrote {result.path}")


if __name__ == "__main__":
    sys.exit(main())
