"""One feature file with everything known about it: the work behind ``load_features``.

A ``.npz`` carries its own metadata; for a ``.npy`` (or what a ``.npz`` lacks) the metadata is
found at the root of its output folder: the sample rate from the file's manifest record (else
``audio.sample_rate`` of ``config.yaml``), the layers, hence hop, receptive field and frame times,
from the weights' metadata or ``config.yaml``. What cannot be known stays None, with a one-line
note in ``meta["warnings"]``; so does metadata that contradicts the file.

Imports numpy and the torch-free parts of the package only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.dataset.arrays import NPZ_SCALARS, npz_scalar, read_array_file
from conv_pipeline.dataset.folder import OutputRoot, PathLike, find_output_root
from conv_pipeline.dataset.model import layer_configs, model_geometry
from conv_pipeline.dataset.shards import SHARD_SUFFIXES, read_shard_item
from conv_pipeline.geometry import StackGeometry


@dataclass
class _Known:
    """What is known so far about one file's timing and origin; None where unknown."""

    sample_rate: Optional[int] = None
    hop: Optional[int] = None
    receptive_field: Optional[int] = None
    left_padding: Optional[int] = None
    frame_times: Optional[np.ndarray] = None  # float64 (frames,)
    frame_starts: Optional[np.ndarray] = None  # int64 (frames,)
    config: Any = None
    model: Optional[dict] = None
    versions: Optional[dict] = None  # {package: version} that computed it


def read_features(
    path: PathLike, root: Optional[OutputRoot] = None, record: Any = None, lazy: bool = False, item: Optional[str] = None,
    mmap: bool = False,
) -> tuple[np.ndarray, dict]:
    """The work behind ``load_features``; ``root`` (already read) and ``record`` save re-reading;
    ``item``: the input's id in a shard (``parquet``/``kaldi``/``lhotse``; else its record's);
    ``mmap``: a ``.npy``'s features mapped read-only (``lazy`` implies it).

    ``lazy=True`` (``inspect``: memory that stays flat whatever the file's size): a ``.npy``'s
    features are mapped read-only instead of read, and the per-frame axes are not built
    (``frame_times``/``frame_starts`` are None unless the file holds them; ``frame_centres``
    gives the times of the frames wanted)."""
    path = Path(path)
    root, record = _root_and_record(path, root, record, item)
    if path.suffix in SHARD_SUFFIXES:
        place = (item or getattr(record, "item", None), getattr(record, "offset", None))
        features, arrays = read_shard_item(path, *place), None
    else:
        features, arrays = read_array_file(path, mmap=lazy or mmap)
        if _time_major(arrays, root):
            features = features.T  # stored (frames, channels): the same view as every format
    n_channels, n_frames = (int(s) for s in features.shape)
    warnings: list[str] = list(root.problems) if root is not None else []

    known = _npz_metadata(arrays, n_frames, warnings) if arrays is not None else _Known()
    if known.config is None and root is not None:
        known.config = root.config
    if known.model is None and root is not None:
        known.model = root.model
    if known.versions is None and root is not None and isinstance(root.config, dict):
        known.versions = _mapping(root.config.get("versions"))  # config.yaml: the run that wrote it last
    geometry = _fill_from_model(known, n_channels, warnings)
    _fill_sample_rate(known, record)
    if not lazy:
        _fill_frame_axes(known, n_frames)
    fmt = SHARD_SUFFIXES.get(path.suffix) or ("npz" if arrays is not None else "npy")
    if fmt != "npz" and root is None:
        warnings.append("no model.safetensors/manifest.jsonl found beside it or above: hop, sample rate and frame times unknown")
    elif known.sample_rate is None:
        warnings.append("sample rate unknown (no manifest record or audio.sample_rate): frame times unknown")
    if record is not None:
        warnings += _record_mismatches(record, geometry, n_channels, n_frames)
    return features, _meta_dict(path, fmt, features, known, root, record, warnings)


def _root_and_record(path: Path, root: Optional[OutputRoot], record: Any, item: Optional[str] = None) -> tuple[Optional[OutputRoot], Any]:
    """The file's output folder (found by walking up when not given) and its manifest record."""
    if root is None:
        root_path = find_output_root(path)
        root = OutputRoot.read(root_path) if root_path is not None else None
    if record is None and root is not None and (item is not None or path.suffix not in SHARD_SUFFIXES):
        record = root.record_for(path, item)
    return root, record


def _time_major(arrays: Optional[dict], root: Optional[OutputRoot]) -> bool:
    """True when the file holds ``(frames, channels)``: a ``.npz``'s ``time_major`` array, else
    ``output.time_major`` of the folder's ``config.yaml``."""
    if arrays is not None and "time_major" in arrays:
        return bool(npz_scalar(arrays, "time_major", int))
    config = root.config if root is not None else None
    output = config.get("output") if isinstance(config, dict) else None
    return isinstance(output, dict) and output.get("time_major") is True


def _npz_metadata(arrays: dict, n_frames: int, warnings: list) -> _Known:
    """What was written beside the features in a ``.npz``; frame axes of another length are ignored."""
    known = _Known(
        sample_rate=npz_scalar(arrays, "sample_rate", int),
        hop=npz_scalar(arrays, "hop", int),
        receptive_field=npz_scalar(arrays, "receptive_field", int),
        left_padding=npz_scalar(arrays, "left_padding", int),
    )
    if "config" in arrays and np.ndim(arrays["config"]) == 0:
        try:
            known.config = json.loads(str(arrays["config"]))
        except json.JSONDecodeError:
            warnings.append("the 'config' array is not JSON")
    if isinstance(known.config, dict) and isinstance(known.config.get("model"), dict):
        known.model = known.config["model"]
    if "versions" in arrays and np.ndim(arrays["versions"]) == 0:
        try:
            known.versions = _mapping(json.loads(str(arrays["versions"])))
        except json.JSONDecodeError:
            warnings.append("the 'versions' array is not JSON")
    if "frame_times" in arrays and arrays["frame_times"].shape == (n_frames,):
        known.frame_times = np.asarray(arrays["frame_times"], dtype=np.float64)
    if "frame_starts" in arrays and arrays["frame_starts"].shape == (n_frames,):
        known.frame_starts = np.asarray(arrays["frame_starts"], dtype=np.int64)
    missing = [k for k in ("frame_times", *NPZ_SCALARS) if k not in arrays]
    if missing:
        warnings.append(f".npz lacks {', '.join(missing)}")
    return known


def _mapping(value: Any) -> Optional[dict]:
    """``value`` when it is a mapping of names to version strings, else None."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    return None


def _fill_from_model(known: _Known, n_channels: int, warnings: list) -> Optional[StackGeometry]:
    """The model's geometry; fills the hop, receptive field and left padding the file lacks."""
    geometry = model_geometry(known.model)
    if known.model is not None and geometry is None:
        warnings.append("the model config is not one this version can read: hop and receptive field unknown")
    if geometry is None:
        return None
    layers = layer_configs(known.model)
    if layers and layers[-1].out_channels != n_channels:
        warnings.append(
            f"the model outputs {layers[-1].out_channels} channels but the file has {n_channels}: "
            "it was written by another model (output.dir reused with overwrite=true?)"
        )
    known.hop = geometry.hop if known.hop is None else known.hop
    known.receptive_field = geometry.receptive_field if known.receptive_field is None else known.receptive_field
    known.left_padding = geometry.left_padding if known.left_padding is None else known.left_padding
    return geometry


def _fill_sample_rate(known: _Known, record: Any) -> None:
    """The sample rate, when the file lacks it: the manifest record's, else ``audio.sample_rate``."""
    if known.sample_rate is None and record is not None and record.sample_rate:
        known.sample_rate = int(record.sample_rate)
    config = known.config
    if known.sample_rate is None and isinstance(config, dict) and isinstance(config.get("audio"), dict):
        sr = config["audio"].get("sample_rate")
        known.sample_rate = int(sr) if isinstance(sr, int) and sr > 0 else None


def _fill_frame_axes(known: _Known, n_frames: int) -> None:
    """Each frame's first input sample and centre time, from the geometry, when the file lacks them."""
    hop, rf, left = known.hop, known.receptive_field, known.left_padding
    if known.frame_starts is None and hop is not None and left is not None:
        known.frame_starts = np.arange(n_frames, dtype=np.int64) * hop - left
    if known.frame_times is None:
        known.frame_times = frame_centres(np.arange(n_frames), hop, rf, left, known.sample_rate)


def frame_centres(
    indices: np.ndarray, hop: Optional[int], receptive_field: Optional[int], left_padding: Optional[int], sample_rate: Any
) -> Optional[np.ndarray]:
    """Seconds of the centres of frames ``indices`` (float64); None when any value is unknown."""
    if not sample_rate or hop is None or receptive_field is None or left_padding is None:
        return None
    centre = (receptive_field - 1) / 2 - left_padding  # geometry.md: frame centre in samples
    return (np.asarray(indices, dtype=np.float64) * hop + centre) / sample_rate


def _record_mismatches(record: Any, geometry: Optional[StackGeometry], n_channels: int, n_frames: int) -> list[str]:
    """Notes where the manifest record disagrees with the file (or, through the model, its length)."""
    notes = []
    if record.shape is not None and list(record.shape) != [n_channels, n_frames]:
        notes.append(f"the manifest says shape {list(record.shape)} but the file holds {[n_channels, n_frames]}")
    num_samples = record.num_samples
    if geometry is not None and num_samples and geometry.output_length(int(num_samples)) != n_frames:
        notes.append(
            f"{num_samples} input samples give {geometry.output_length(int(num_samples))} frames with this model, "
            f"the file has {n_frames}"
        )
    return notes


def _meta_dict(
    path: Path, fmt: str, features: np.ndarray, known: _Known, root: Optional[OutputRoot], record: Any, warnings: list
) -> dict:
    """The ``meta`` dict of ``load_features`` (its docstring lists the keys)."""
    source = record.input if record is not None else None
    if source is None and isinstance(known.config, dict):
        source = known.config.get("input")
    model = known.model
    return {
        "path": str(path),
        "format": fmt,
        "shape": tuple(int(s) for s in features.shape),
        "dtype": str(features.dtype),
        "sample_rate": known.sample_rate,
        "hop": known.hop,
        "receptive_field": known.receptive_field,
        "left_padding": known.left_padding,
        "frame_times": known.frame_times,
        "frame_starts": known.frame_starts,
        "num_samples": record.num_samples if record is not None else None,
        "duration_s": record.duration_s if record is not None else None,
        "input": source,
        "preset": model.get("name") if isinstance(model, dict) else None,
        "model": model,
        "config": known.config,
        "versions": known.versions,
        "record": asdict(record) if record is not None else None,
        "root": str(root.path) if root is not None else None,
        "warnings": warnings,
    }

