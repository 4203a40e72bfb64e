"""The colours of a feature heatmap: which values ``inspect/plot.py`` draws for a feature map.

Reads features after the sink (``(channels, frames)`` arrays read back by ``dataset/``) and the
model's plain-data config; numpy only. ``heatmap_values`` reduces the frames to at most
``columns`` columns and puts them on a scale that shows something for every preset:

- **dB** for a spectrum (a stft/mel/sinc front-end with no layers after it and ``log=false``):
  each column the mean power of its frames, ``10 * log10`` of power (``20 * log10`` of a
  magnitude, ``model.frontend.power``), the colour range the top ``DB_RANGE`` dB;
- **log** as written for a front-end with ``log=true`` (each column the mean of its frames);
- **per-channel z-score** for a stack with learned layers (``default``, ``tutorial``, ...): every
  channel standardised over the drawn columns, so a channel's changes over time show whatever
  its offset and scale. Each column is the mean of its frames, unless averaging would cancel
  most of the channels' variation (features that oscillate from frame to frame, as a raw conv
  of the waveform does): then each column is the RMS of its frames about the channel's mean;
- the values themselves, on one scale, when the model is unknown.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from conv_pipeline.config.checks import cmvn_value

DB_RANGE = 80.0  # dB shown below the loudest column of a spectrum
MEAN_SHARE = 0.25  # averaging keeps less than this share of the channels' variance: draw the RMS instead


@dataclass
class Heatmap:
    """What the heatmap draws: ``data`` ``(channels, columns)`` (NaN: nothing), ``times``
    ``(columns,)`` the columns' centres, ``per`` frames per column, the colour range and the
    colour bar's label."""

    data: np.ndarray
    times: np.ndarray
    per: int
    vmin: float
    vmax: float
    label: str
    scale: str  # "db", "log", "zscore" or "value"


def spectrum_power(model: Optional[dict]) -> Optional[float]:
    """The exponent of a spectrum's values (2: power, 1: magnitude) when ``model`` is a front-end
    alone whose values are still a spectrum; None otherwise (learned layers follow; values already
    in dB or log (``log``, ``db``, mfcc, fbank), with deltas appended or normalised (``cmvn``); or unknown)."""
    if not isinstance(model, dict) or not isinstance(model.get("frontend"), dict) or model.get("layers"):
        return None
    front = model["frontend"]
    kind = front.get("type")
    if front.get("log") or front.get("db") or kind in ("mfcc", "fbank") or front.get("deltas") \
            or cmvn_value(front.get("cmvn")) is not None:
        return None
    power = front.get("power")
    if power is None:
        power = 2.0 if kind == "mel" else 1.0  # the schema's defaults; sinc: a pooled envelope
    return float(power) if float(power) > 0 else None


def scale_kind(model: Optional[dict]) -> str:
    """``db``, ``log``, ``zscore`` or ``value`` for ``model`` (see the module docstring)."""
    if not isinstance(model, dict):
        return "value"
    if spectrum_power(model) is not None:
        return "db"
    if isinstance(model.get("frontend"), dict) and not model.get("layers"):
        return "log"
    return "zscore"


def group_frames(features: np.ndarray, times: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(C, F)`` -> float64 ``(C, G, per)`` groups of ``per`` consecutive frames (G <= ``limit``,
    the last group padded with NaN), their centre times ``(G,)`` and ``per``."""
    c, f = features.shape
    per = max(1, math.ceil(f / max(limit, 1)))
    pad = (-f) % per
    data = np.pad(features.astype(np.float64), ((0, 0), (0, pad)), constant_values=np.nan)
    t = np.pad(np.asarray(times, dtype=np.float64), (0, pad), constant_values=np.nan).reshape(-1, per)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return data.reshape(c, -1, per), np.nanmean(t, axis=1), per


def colour_limits(data: np.ndarray) -> tuple[float, float]:
    """The 1st..99th percentile of the finite values, widened until it is not empty."""
    finite = data[np.isfinite(data)]
    if not finite.size:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(finite, [1, 99]))
    if not vmax > vmin:
        vmin, vmax = float(finite.min()), float(finite.max())
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return vmin, vmax


def standardize_rows(data: np.ndarray) -> np.ndarray:
    """Each row (channel) to zero mean and unit standard deviation over its finite values; a
    constant row becomes 0."""
    with warnings.catch_warnings():  # all-NaN rows stay NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(data, axis=1, keepdims=True)
        std = np.nanstd(data, axis=1, keepdims=True)
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, np.inf)  # constant: (x - mean) / inf = 0
    return (data - mean) / std


def mean_keeps_variation(groups: np.ndarray) -> bool:
    """Whether the groups' means keep at least ``MEAN_SHARE`` of the channels' variance over
    frames (median over the channels that vary). ``groups``: ``(C, G, per)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        total = np.nanvar(groups.reshape(groups.shape[0], -1), axis=1)
        between = np.nanvar(np.nanmean(groups, axis=2), axis=1)
    varies = total > 0
    return not varies.any() or float(np.median(between[varies] / total[varies])) >= MEAN_SHARE


def heatmap_values(features: np.ndarray, times: np.ndarray, columns: int, model: Optional[dict]) -> Heatmap:
    """The heatmap of ``features`` ``(C, F)`` at frame ``times`` ``(F,)`` in at most ``columns``
    columns, on the scale ``scale_kind(model)`` picks."""
    groups, t, per = group_frames(features, times, columns)
    kind = scale_kind(model)
    many = f" of {per} frames" if per > 1 else ""
    with warnings.catch_warnings():  # an all-NaN group stays NaN (drawn blank), silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(groups, axis=2)  # (C, G)
        if kind == "db":
            power = spectrum_power(model)
            assert power is not None
            positive = mean[np.isfinite(mean) & (mean > 0)]
            floor = positive.max() * 1e-30 if positive.size else 1e-30
            data = (20.0 / power) * np.log10(np.maximum(mean, floor))
            vmax = float(np.nanmax(data)) if np.isfinite(data).any() else 0.0
            vmin = max(colour_limits(data)[0], vmax - DB_RANGE)
            what = "power" if power == 2 else ("magnitude" if power == 1 else f"|X|^{power:g}")
            label = f"{what} (dB{', mean' + many if many else ''})"
            return Heatmap(data, t, per, vmin if vmax > vmin else vmax - 1.0, vmax, label, kind)
        if kind == "zscore":
            if per > 1 and not mean_keeps_variation(groups):
                centre = np.nanmean(groups.reshape(groups.shape[0], -1), axis=1)[:, None, None]
                data = standardize_rows(np.sqrt(np.nanmean((groups - centre) ** 2, axis=2)))
                label = f"RMS{many}, z-score per channel"
            else:
                data = standardize_rows(mean)
                label = f"{'mean' + many + ', ' if many else ''}z-score per channel"
            return Heatmap(data, t, per, *colour_limits(data), label, kind)
    label = "log value (model.frontend.log=true)" if kind == "log" else "feature value"
    return Heatmap(mean, t, per, *colour_limits(mean), label + (f", mean{many}" if many else "") + " (1st-99th pct)", kind)
