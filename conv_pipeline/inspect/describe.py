"""Plain-text descriptions of outputs: one feature file (``describe_file``) or an output folder
(``describe_dir``), as printed by ``python -m conv_pipeline.inspect`` (``__main__.py``).

``describe_file``: shape, sample rate, hop, receptive field, duration, frame times, value
statistics (``feature_stats``), source, model and run config, then the reader's warnings.
``describe_dir``: every input of the folder's manifest with its status, shape and duration, then
totals, missing files and feature files the manifest does not list.

The text helpers it shares with the model summary (``text_table``, ``ms_text``) are in
``text.py``. Imports numpy and the torch-free parts of the package only, so the command starts fast.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.config.checks import cmvn_value
from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.dataset.folder import FEATURE_SUFFIXES, OutputRoot, find_output_root, is_regular_file
from conv_pipeline.dataset.model import layer_configs
from conv_pipeline.dataset.reader import frame_centres, read_features
from conv_pipeline.dataset.shards import SHARD_SUFFIXES
from conv_pipeline.errors import InputError
from conv_pipeline.inspect.text import ms_text, text_table

_STATS_BLOCK = 1 << 19  # values per block of feature_stats (2 MiB of float32)
_REFUSED_NOTE = "its output is not a path inside the output folder (../, absolute, a symlink leading out); not read"


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
            "sinc": ("n_filters", "kernel_size", "hop_length", "log"),
            "mfcc": ("n_fft", "hop_length", "n_mels", "n_mfcc", "top_db"),
            "fbank": ("win_length", "hop_length", "n_mels")}.get(fe.get("type"), ())
    set_options = [k for k in ("center", "db", "deltas") if fe.get(k) not in (None, False, 0, "False", "false")]
    set_options += ["cmvn"] if cmvn_value(fe.get("cmvn")) is not None else []
    return f"{fe.get('type')} front-end (" + ", ".join(f"{k} {fe.get(k)}" for k in (*keys, *set_options)) + ")"


def _model_line(model: Optional[dict]) -> str:
    layers = layer_configs(model) or []
    fe = model.get("frontend") if isinstance(model, dict) else None
    if not layers and not isinstance(fe, dict):
        return "unknown (no model config found)"
    chans = [model.get("in_channels", "?")] + [layer.out_channels for layer in layers]
    if isinstance(fe, dict):
        chans[0] = "?"  # the front-end's output channels: see the model summary
    parts = [_frontend_text(fe)] if isinstance(fe, dict) else []
    body = " | ".join(parts + [_layer_text(layer, chans[i]) for i, layer in enumerate(layers)])
    ckpt = model.get("checkpoint")
    return f"{model.get('name', '?')}: {body}" + (f" (checkpoint {ckpt})" if ckpt else "")


# ---------------------------------------------------------------- one feature file
def feature_stats(features: np.ndarray) -> dict:
    """min/max/mean/std over the finite values (float64), and NaN, Inf and zero counts.

    Computed block by block (``_STATS_BLOCK`` values at a time, the blocks' moments merged), so a
    memory-mapped file is never read into memory whole."""
    flat = features.ravel(order="K")  # a view for a contiguous array or memmap
    nan = inf = zeros = count = 0
    low, high, mean, m2 = np.inf, -np.inf, 0.0, 0.0
    for start in range(0, flat.size, _STATS_BLOCK):
        block = np.asarray(flat[start : start + _STATS_BLOCK])
        finite_mask = np.isfinite(block)
        finite = block[finite_mask].astype(np.float64)
        n_nan = int(np.isnan(block).sum())
        nan, inf = nan + n_nan, inf + int(block.size - finite.size - n_nan)
        zeros += int(block.size - np.count_nonzero(block))
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
            b_mean = float(finite.sum()) / finite.size
            finite -= b_mean  # in place: one float64 copy of a block at a time
            b_m2 = float(np.square(finite, out=finite).sum())
            total = count + finite.size
            delta = b_mean - mean
            mean += delta * finite.size / total
            m2 += b_m2 + delta * delta * count * finite.size / total
            count = total
    stats = {"nan": nan, "inf": inf, "zeros": zeros, "size": int(flat.size)}
    if count:
        stats.update(min=low, max=high, mean=mean, std=math.sqrt(m2 / count))
    else:
        stats.update(min=None, max=None, mean=None, std=None)
    return stats


def describe_shard(path: Path) -> Optional[str]:
    """The inputs a shard file (parquet, Kaldi ark, lhotse HDF5) holds, from its folder's manifest;
    None when ``path`` is not a shard."""
    if path.suffix not in SHARD_SUFFIXES:
        return None
    root_path = find_output_root(path)
    if root_path is None:
        raise InputError(f"{path}: a {SHARD_SUFFIXES[path.suffix]} shard outside its output folder (no manifest.jsonl above it)")
    root = OutputRoot.read(root_path)
    rel = path.resolve().relative_to(root.path.resolve()).as_posix()
    recs = [r for r in root.records.values() if r.output == rel and r.status != "failed"]
    rows = [[str(r.item), str(r.offset), f"{r.shape[0]} x {r.shape[1]}" if r.shape and len(r.shape) == 2 else "-", str(r.input)]
            for r in recs]
    lines = [f"{path}  ({SHARD_SUFFIXES[path.suffix]} shard, {len(recs)} input(s) in the manifest)"]
    lines += text_table(["item", "offset", "shape", "input"], rows, left=(0, 3)) if rows else []
    lines.append(f"  one input: python -m conv_pipeline.inspect {path} --item ITEM")
    return "\n".join(lines)


def describe_file(path: os.PathLike | str, item: Optional[str] = None) -> str:
    """A readable summary of one feature file (``item``: one input of a shard; a shard without it
    lists its inputs). Raises ``InputError`` for a broken or non-feature file."""
    if item is None and (shard := describe_shard(Path(path))) is not None:
        return shard
    features, meta = read_features(path, lazy=True, item=item)  # a .npy is mapped, never read whole
    c, f = meta["shape"]
    sr, hop, rf = meta["sample_rate"], meta["hop"], meta["receptive_field"]
    lines = [f"{meta['path']}  ({meta['format']})"]
    rows: list[tuple[str, str]] = [("features", f"{meta['dtype']} {c} channels x {f} frames, shape {tuple(features.shape)}")]
    rows.append(("sample rate", f"{sr} Hz" if sr else "unknown"))
    if hop is not None:
        rate = f", {sr / hop:.2f} frames/s" if sr else ""
        rows.append(("hop", f"{hop} samples ({ms_text(hop, sr)} ms){rate}"))
        rows.append(("receptive field", f"{rf} samples ({ms_text(rf, sr)} ms), left padding {meta['left_padding']} samples"))
    else:
        rows.append(("hop", "unknown"))
    ft = meta["frame_times"]
    if ft is None and f:  # lazy: the first and last frames' times only
        ft = frame_centres(np.array([0, f - 1]), hop, rf, meta["left_padding"], sr)
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
    audio_s, frames, missing, refused = 0.0, 0, 0, 0
    listed = set()
    for rec in root.records.values():
        counts[rec.status] = counts.get(rec.status, 0) + 1
        status = rec.status
        if rec.output:
            listed.add(rec.output)
            inside = root.feature_path(rec.output)  # outside the folder: never opened nor looked at
            if inside is None:
                status += " REFUSED"
                refused += 1
                errors[len(rows)] = _REFUSED_NOTE
            elif not is_regular_file(inside):
                status += " MISSING"
                missing += 1
        if rec.status != "failed":
            audio_s += rec.duration_s or 0.0
            frames += rec.shape[1] if rec.shape and len(rec.shape) == 2 else 0
        shape = f"{rec.shape[0]} x {rec.shape[1]}" if rec.shape and len(rec.shape) == 2 else "-"
        dur = f"{rec.duration_s:.2f}" if rec.duration_s is not None else "-"
        if rec.error:
            errors[len(rows)] = "; ".join(filter(None, (errors.get(len(rows)), rec.error)))
        place = f"{rec.output} [{rec.item}]" if rec.output and rec.item else (rec.output or "-")
        rows.append([place, status, shape, dur, str(rec.sample_rate or "-"), str(rec.input)])
    unlisted = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix in FEATURE_SUFFIXES and p.suffix not in SHARD_SUFFIXES and p.is_file() and not p.name.startswith(".")
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
    table = text_table(["output", "status", "shape", "audio s", "Hz", "input"], rows, left=(0, 1, 5))
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
        + (f"; {refused} record(s) REFUSED (output not inside the folder)" if refused else "")
        + (f"; {len(unlisted)} feature file(s) not in the manifest" if unlisted else "")
    )
    return "\n".join(lines)
