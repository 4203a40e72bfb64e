"""Drawing a feature file: the waveform on top, the feature map below, on one time axis.

``plot_features`` draws one PNG per file, for ``python -m conv_pipeline.inspect FILE --plot OUT.png``
and ``plot=true`` of ``python -m conv_pipeline``, with matplotlib's Agg canvas (no display, no
pyplot state; matplotlib is imported on the first call):

- top: the source audio, seconds on the x axis, one colour per channel (the channels the model
  saw: ``audio.channels`` of the run is applied). Long files are drawn as a min/max envelope read
  in blocks with soundfile, so a file is never loaded whole just to be drawn. The receptive field
  of the middle frame (the loudest one if the middle is silent) is shaded, and its samples are
  drawn zoomed in a panel of their own to the right (above the colour bar), so nothing covers the
  waveform; the legend sits above the axes.
- bottom: the features as a heatmap, channels by frames, each frame drawn at its centre time
  from the geometry (``frame_times``), with a colour bar. The values and their scale come from
  ``inspect/scale.py``: dB for spectra, a z-score per channel for learned stacks. More frames
  than ``MAX_HEATMAP_FRAMES`` (or the axes' pixels) are reduced in groups (the colour bar says how).
- title: file name, model preset, output shape, hop and receptive field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from conv_pipeline.dataset.reader import read_features
from conv_pipeline.inspect.scale import Heatmap, heatmap_values
from conv_pipeline.sink.writer import atomic_write

PathLike = Union[str, "os.PathLike[str]"]


ENVELOPE_COLUMNS = 2400  # min/max pairs drawn across the width; more than the pixels of the axes


BLOCK_FRAMES = 1 << 18  # audio frames read per block when building an envelope


MAX_HEATMAP_FRAMES = 4000  # at most this many columns; never more than the heatmap's pixel width


@dataclass
class Envelope:
    """A waveform ready to draw. ``times`` (n,) in seconds; ``low``/``high`` (channels, n): the min
    and max of each group of ``samples_per_column`` samples (equal when that is 1: the samples)."""

    times: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sample_rate: int
    frames: int
    samples_per_column: int


@dataclass
class PlotResult:
    """What ``plot_features`` drew. Boxes are pixel ``(left, top, right, bottom)`` in the PNG
    (origin top-left); ``xlim`` is the shared time axis, in seconds (frames if no sample rate)."""

    path: Path
    size: tuple[int, int]
    waveform_box: tuple[int, int, int, int]
    heatmap_box: tuple[int, int, int, int]
    xlim: tuple[float, float]
    audio: Optional[str]
    heatmap: Optional[Heatmap] = None  # the values drawn, their colour range and label
    zoom_box: Optional[tuple[int, int, int, int]] = None  # the receptive-field zoom panel, when drawn
    legend_box: Optional[tuple[int, int, int, int]] = None  # the waveform's legend, when drawn


def _apply_channels(block: np.ndarray, channels: Any) -> np.ndarray:
    """``(n, file_channels)`` -> ``(n, channels')`` with the run's ``audio.channels`` policy."""
    if channels == "mono":
        return block.mean(axis=1, keepdims=True)
    if isinstance(channels, (list, tuple)) and channels and all(isinstance(c, int) and 0 <= c < block.shape[1] for c in channels):
        return block[:, list(channels)]
    return block


def waveform_envelope(
    path: PathLike,
    columns: int = ENVELOPE_COLUMNS,
    channels: Any = "keep",
    block_frames: int = BLOCK_FRAMES,
) -> Envelope:
    """Min/max envelope of an audio file in about ``columns`` columns, read block by block.

    Memory stays at one block (``block_frames`` frames) whatever the file's length. Raises
    ``soundfile``'s errors for unreadable files.
    """
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr, total = int(f.samplerate), int(f.frames)
        per = max(1, math.ceil(total / max(columns, 1)))
        block = max(per, (max(block_frames, 1) // per) * per)  # whole columns per block
        lows, highs, read = [], [], 0
        for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):  # (n, C)
            data = _apply_channels(data, channels)
            n = data.shape[0]
            full = (n // per) * per
            if full:
                grouped = data[:full].reshape(full // per, per, data.shape[1])  # (cols, per, C)
                lows.append(grouped.min(axis=1))
                highs.append(grouped.max(axis=1))
            if n > full:  # the file's last, partial column
                lows.append(data[full:].min(axis=0, keepdims=True))
                highs.append(data[full:].max(axis=0, keepdims=True))
            read += n
    if not lows:
        empty = np.zeros((1, 0), dtype=np.float32)
        return Envelope(np.zeros(0), empty, empty, sr, 0, per)
    low = np.concatenate(lows).T  # (C, cols)
    high = np.concatenate(highs).T
    starts = np.arange(low.shape[1]) * per
    ends = np.minimum(starts + per, read)
    times = (starts + ends - 1) / 2 / sr if per > 1 else starts / sr
    return Envelope(times, low, high, sr, read, per)


def _resolve_audio(audio_path: Optional[PathLike], meta: dict) -> Optional[Path]:
    """The audio to draw: ``audio_path``, else the recorded input (as given, then relative to the
    output folder and its parent)."""
    if audio_path is not None:
        return Path(audio_path)
    src = meta.get("input")
    if not src or "://" in str(src):
        return None
    candidates = [Path(src)]
    if meta.get("root") and not Path(src).is_absolute():
        root = Path(meta["root"])
        candidates += [root / src, root.parent / src]
    return next((c for c in candidates if c.is_file()), None)


def _box(fig: Any, ax: Any) -> tuple[int, int, int, int]:
    bb = ax.get_window_extent()
    height = fig.bbox.height
    return (int(round(bb.x0)), int(round(height - bb.y1)), int(round(bb.x1)), int(round(height - bb.y0)))


def _shown_frame(env, times: np.ndarray, n_frames: int) -> int:
    """The frame whose receptive field is drawn: the middle one, unless the audio is (nearly)
    silent there, then the frame at the loudest point, so the zoomed inset shows signal."""
    middle = n_frames // 2
    swing = (env.high - env.low).max(axis=0)  # (columns,) peak-to-peak over channels
    if swing.size == 0 or swing.max() <= 0:
        return middle
    at = int(np.clip(np.searchsorted(env.times, times[middle]), 0, swing.size - 1))
    if swing[at] >= 0.1 * swing.max():
        return middle
    loudest = env.times[int(np.argmax(swing))]
    return int(np.clip(np.argmin(np.abs(np.asarray(times) - loudest)), 0, n_frames - 1))


def plot_features(
    feature_path: PathLike,
    out_path: PathLike,
    audio_path: Optional[PathLike] = None,
    size: Sequence[float] = (12.0, 6.5),
    dpi: int = 100,
) -> PlotResult:
    """Draw ``feature_path`` (and its source audio) to the PNG ``out_path``, written atomically.

    The audio is ``audio_path``, else the input recorded in the manifest/config; without it the
    figure has the heatmap only and says so. The PNG is ``size`` inches at ``dpi``
    (1200 x 650 pixels by default). Raises ``InputError`` for a broken feature file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    features, meta = read_features(feature_path)
    frame_times = meta["frame_times"]
    timed = frame_times is not None
    times = frame_times if timed else np.arange(meta["shape"][1], dtype=np.float64)

    fig = Figure(figsize=tuple(size), dpi=dpi)
    FigureCanvasAgg(fig)
    # columns: the shared time axis | the colour bar | its labels; the zoom panel spans the last
    # two above the colour bar, beside the waveform (never over it)
    gs = fig.add_gridspec(2, 3, width_ratios=[50, 1, 8], height_ratios=[1, 1.4], hspace=0.12, wspace=0.02,
                          left=0.06, right=0.965, top=0.88, bottom=0.09)
    ax_w = fig.add_subplot(gs[0, 0])
    ax_f = fig.add_subplot(gs[1, 0], sharex=ax_w if timed else None)
    cax = fig.add_subplot(gs[1, 1])
    ax_z = fig.add_subplot(gs[0, 1:])
    heat, extent = _draw_heatmap(fig, ax_f, cax, features, times, meta)
    audio = _draw_waveform(ax_w, ax_z, meta, audio_path, times, extent)
    _draw_titles(fig, meta)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    xlim = ax_f.get_xlim()
    legend = ax_w.get_legend()
    return PlotResult(
        out,
        (int(round(fig.bbox.width)), int(round(fig.bbox.height))),
        _box(fig, ax_w),
        _box(fig, ax_f),
        (float(xlim[0]), float(xlim[1])),
        str(audio) if audio is not None else None,
        heat,
        _box(fig, ax_z) if ax_z.get_visible() else None,
        _box(fig, legend) if legend is not None else None,
    )


def _draw_heatmap(
    fig: Any, ax: Any, cax: Any, features: np.ndarray, times: np.ndarray, meta: dict
) -> tuple[Heatmap, tuple[float, float, float, float]]:
    """Channels x frames on the frame-time axis, with its colour bar in ``cax``; returns what was
    drawn and the image's extent ``(left, right, bottom, top)``."""
    from matplotlib.ticker import MaxNLocator

    n_ch, n_fr = meta["shape"]
    sr, hop = meta["sample_rate"], meta["hop"]
    timed = meta["frame_times"] is not None
    # More frames than pixels: reduce groups of frames (drawing them all would alias).
    columns = min(MAX_HEATMAP_FRAMES, max(100, int(ax.get_window_extent().width)))
    heat = heatmap_values(features, times, columns, meta.get("model"))
    t = heat.times
    col = (t[1] - t[0]) if len(t) > 1 else (hop / sr if timed and hop else 1.0)
    extent = (t[0] - col / 2, t[-1] + col / 2, -0.5, n_ch - 0.5)
    im = ax.imshow(np.ma.masked_invalid(heat.data), aspect="auto", origin="lower", interpolation="nearest",
                   extent=extent, cmap="magma", vmin=heat.vmin, vmax=heat.vmax)
    fig.colorbar(im, cax=cax, label=heat.label)
    cax.yaxis.label.set_size(8)
    ax.set_ylabel("feature channel")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    xlabel = "time (s), frames at their centres" if timed else "frame (no sample rate known)"
    if heat.per > 1:
        xlabel += f"; each column stands for {heat.per} frames"
    ax.set_xlabel(xlabel)
    return heat, extent


def _read_waveform(
    audio_path: Optional[PathLike], meta: dict, channels: Any
) -> tuple[Optional[Path], Optional[Envelope], Optional[str]]:
    """``(audio file, its envelope, why there is none)``: one of the last two is None."""
    audio = _resolve_audio(audio_path, meta)
    if audio is None:
        if meta.get("input"):
            return None, None, f"source audio not found ({meta['input']}); pass --audio"
        return None, None, "source audio not recorded"
    try:
        return audio, waveform_envelope(audio, channels=channels), None
    except Exception as err:  # soundfile raises several types for unreadable files
        return audio, None, f"cannot read {audio} ({type(err).__name__})"


def _draw_waveform(
    ax: Any, ax_zoom: Any, meta: dict, audio_path: Optional[PathLike], times: np.ndarray, extent: Sequence[float]
) -> Optional[Path]:
    """The source audio over the heatmap's time axis, or a line saying why it is not drawn, and
    the shown frame's receptive field zoomed in ``ax_zoom`` (hidden when there is none); returns
    the audio file drawn (None when none was read)."""
    channels = ((meta.get("config") or {}).get("audio") or {}).get("channels", "keep")
    audio, env, why_none = _read_waveform(audio_path, meta, channels)
    timed = meta["frame_times"] is not None
    xmax = extent[1]
    zoomed = False
    if env is not None and env.frames and timed:
        xmax = max(xmax, env.frames / env.sample_rate)
        _draw_envelope(ax, env, audio)
        n_fr = meta["shape"][1]
        if n_fr and meta["receptive_field"] and meta["sample_rate"] and meta["frame_starts"] is not None:
            zoomed = _draw_receptive_field(ax, ax_zoom, audio, meta, channels, _shown_frame(env, times, n_fr))
        # above the axes, right-aligned (the panel's title is on the left): it covers no samples
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, fontsize=8, frameon=False,
                  borderaxespad=0.2, handlelength=1.5, columnspacing=1.0)
    elif env is not None and not timed:
        why_none = "features have no sample rate: waveform and frames cannot share a time axis"
    if not zoomed:
        ax_zoom.set_visible(False)
    ax.set_ylabel("amplitude")
    if why_none:
        ax.text(0.5, 0.5, why_none, transform=ax.transAxes, ha="center", va="center", fontsize=10)
        ax.set_yticks([])
    if timed:
        ax.set_xlim(min(0.0, extent[0]), xmax)
    ax.tick_params(labelbottom=False)
    return audio if env is not None else None


def _draw_envelope(ax: Any, env: Envelope, audio: Path) -> None:
    """One colour per channel: a filled min/max band, or the samples as a line when there are few."""
    for c in range(env.low.shape[0]):
        colour = f"C{c % 10}"
        label = f"channel {c}"
        if env.samples_per_column > 1:
            # the outline keeps quiet or slowly varying stretches (min close to max) visible
            ax.fill_between(env.times, env.low[c], env.high[c], facecolor=colour, edgecolor=colour,
                            alpha=0.55, lw=0.6, label=label)
        else:
            ax.plot(env.times, env.low[c], color=colour, lw=0.8, alpha=0.85, label=label)
    ax.set_title(f"waveform: {audio.name} ({env.low.shape[0]} ch, {env.sample_rate} Hz"
                 + (", envelope" if env.samples_per_column > 1 else "") + ")", fontsize=9, loc="left")


def _draw_titles(fig: Any, meta: dict) -> None:
    """File name, preset and shape; below it the sample rate, hop and receptive field when known."""
    n_ch, n_fr = meta["shape"]
    sr, hop, rf = meta["sample_rate"], meta["hop"], meta["receptive_field"]
    preset = meta.get("preset") or "unknown model"
    fig.suptitle(f"{Path(meta['path']).name}  ·  model {preset}  ·  features {n_ch} × {n_fr} (channels × frames)",
                 fontsize=12, y=0.975)
    if meta["frame_times"] is not None and hop and rf:
        fig.text(0.5, 0.925, f"{sr} Hz · hop {hop} samples ({1000 * hop / sr:.2f} ms, {sr / hop:.1f} frames/s) · "
                 f"receptive field {rf} samples ({1000 * rf / sr:.2f} ms)", ha="center", fontsize=9, color="0.3")


ZOOM_MAX_SAMPLES = 1 << 16  # a wider receptive field is shaded only, not read again for the zoom


def _draw_receptive_field(ax: Any, ax_zoom: Any, audio: Path, meta: dict, channels: Any, frame: int) -> bool:
    """Shade the input span frame ``frame`` reads and draw its samples (and as many on each side)
    in ``ax_zoom``; returns whether the zoom was drawn."""
    sr, rf = meta["sample_rate"], meta["receptive_field"]
    first = int(meta["frame_starts"][frame])
    t0, t1 = first / sr, (first + rf) / sr
    label = f"receptive field of frame {frame} ({rf} samples, {1000 * rf / sr:.2f} ms)"
    ax.axvspan(t0, t1, color="red", alpha=0.3, lw=0, label=label)
    ax.axvline((t0 + t1) / 2, color="red", lw=0.8, alpha=0.9)
    import soundfile as sf

    try:  # the samples around the span, at the file's own rate
        with sf.SoundFile(str(audio)) as f:
            fsr = f.samplerate
            pad = max(t1 - t0, 8 / fsr)
            start = max(0, int(math.floor((t0 - pad) * fsr)))
            stop = min(f.frames, int(math.ceil((t1 + pad) * fsr)) + 1)
            if not 0 < stop - start <= ZOOM_MAX_SAMPLES:
                return False
            f.seek(start)
            seg = _apply_channels(f.read(stop - start, dtype="float32", always_2d=True), channels)
    except Exception:
        return False
    if not len(seg):
        return False
    ms = ((start + np.arange(len(seg))) / fsr - t0) * 1000  # ms from the frame's first sample
    for c in range(seg.shape[1]):
        ax_zoom.plot(ms, seg[:, c], color=f"C{c % 10}", lw=0.9, marker="." if len(seg) <= 80 else None, ms=3)
    ax_zoom.axvspan(0, (t1 - t0) * 1000, color="red", alpha=0.3, lw=0)
    ax_zoom.set_title(f"frame {frame} zoomed (ms)", fontsize=8, loc="left")
    ax_zoom.tick_params(labelsize=6)
    ax_zoom.yaxis.tick_right()  # the waveform's edge is on the left
    ax_zoom.ticklabel_format(useOffset=False)
    return True
