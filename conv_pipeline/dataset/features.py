"""Loading features back: one file (``load_features``) or a whole output folder (``FeatureDataset``).

An output folder (``output.dir`` of a CLI run or of the batch job) holds feature files
(``<stem>.npy`` or ``<stem>.npz``, possibly in subfolders) and, at its root, ``model.safetensors``,
``config.yaml`` and ``manifest.jsonl``. A ``.npz`` carries its own metadata; for a ``.npy`` the
metadata is found by walking up from the file to that root: the sample rate from the file's
manifest record, the layers (hence hop, receptive field and frame times) from the weights'
metadata or ``config.yaml``.

Everything is read with ``allow_pickle=False``. This module imports numpy only; torch is imported
when ``FeatureDataset`` is first used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from conv_pipeline.config.schema import FrontendConfig, ModelConfig
from conv_pipeline.errors import InputError
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord

PathLike = Union[str, "os.PathLike[str]"]


FEATURE_SUFFIXES = (".npy", ".npz")


# The names pipeline.py writes at the root of output.dir (repeated here: pipeline.py imports torch).
WEIGHTS_NAME = "model.safetensors"


CONFIG_NAME = "config.yaml"


_NPZ_SCALARS = ("sample_rate", "hop", "receptive_field", "left_padding")


# ---------------------------------------------------------------- the folder a feature file belongs to
@dataclass
class OutputRoot:
    """The root of an output folder and what it says about its files.

    ``config``: ``config.yaml`` as plain data (None when absent or unreadable); ``model``: the model
    config (``name``, ``in_channels``, ``layers``) from the weights' metadata, else from ``config.yaml``;
    ``records``: the current manifest record of every input, keyed by input.
    """

    path: Path
    config: Optional[dict] = None
    model: Optional[dict] = None
    records: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    @classmethod
    def read(cls, path: PathLike) -> "OutputRoot":
        from conv_pipeline.sink.manifest import read_manifest

        root = cls(Path(path))
        cfg_path = root.path / CONFIG_NAME
        if cfg_path.is_file():
            root.config = _read_yaml(cfg_path, root.problems)
        weights = root.path / WEIGHTS_NAME
        if weights.is_file():
            root.model = _weights_model(weights, root.problems)
        if root.model is None and root.config and isinstance(root.config.get("model"), dict):
            root.model = root.config["model"]
        root.records = read_manifest(root.path)
        return root

    def record_for(self, feature_path: Path) -> "Optional[ManifestRecord]":
        """The current manifest record whose ``output`` is ``feature_path`` (None when there is none)."""
        try:
            rel = Path(os.path.relpath(Path(feature_path).resolve(), self.path.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            return None
        for rec in self.records.values():
            if rec.output == rel:
                return rec
        return None

    def geometry(self) -> "Optional[StackGeometry]":
        """The stack's geometry from the model config, or None when unknown."""
        return model_geometry(self.model)


def find_output_root(path: PathLike) -> Optional[Path]:
    """The nearest folder at or above ``path`` (a feature file or a folder) holding
    ``manifest.jsonl`` or ``model.safetensors``; None when there is none."""
    p = Path(path).resolve()
    start = p if p.is_dir() else p.parent
    for folder in (start, *start.parents):
        if (folder / MANIFEST_NAME).is_file() or (folder / WEIGHTS_NAME).is_file():
            return folder
    return None


def _read_yaml(path: Path, problems: list) -> Optional[dict]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problems.append(f"{path} is unreadable ({type(err).__name__})")
        return None
    return data if isinstance(data, dict) else None


def _weights_model(path: Path, problems: list) -> Optional[dict]:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        model = json.loads(meta["model"]) if "model" in meta else None
    except Exception as err:  # safetensors raises its own error types for damaged files
        problems.append(f"{path} is unreadable ({type(err).__name__})")
        return None
    return model if isinstance(model, dict) else None


def layer_configs(model: Optional[dict]) -> Optional[list]:
    """``LayerConfig``s from a model config dict, or None when it has no usable layers."""
    from conv_pipeline.config.schema import LayerConfig

    if not model or not isinstance(model.get("layers"), list) or not model["layers"]:
        return None
    names = {f.name for f in fields(LayerConfig)}
    try:
        return [LayerConfig(**{k: v for k, v in layer.items() if k in names}) for layer in model["layers"]]
    except (TypeError, AttributeError):
        return None


def model_config(model: Optional[dict]) -> "Optional[ModelConfig]":
    """A ``ModelConfig`` from its plain-data form (config.yaml, the weights' metadata, a .npz's
    config), keeping the keys this version knows; None when it has no layers."""

    if not isinstance(model, dict):
        return None
    layers = layer_configs(model) or []
    kwargs: dict = {"layers": layers}
    known = {f.name for f in fields(ModelConfig)}
    for key in ("name", "in_channels", "checkpoint"):
        if key in model and key in known:
            kwargs[key] = model[key]
    frontend = model.get("frontend")
    frontend_type = FrontendConfig
    if isinstance(frontend, dict) and frontend_type is not None and "frontend" in known:
        names = {f.name for f in fields(frontend_type)}
        kwargs["frontend"] = frontend_type(**{k: v for k, v in frontend.items() if k in names})
    elif frontend is not None:  # a front-end this version cannot describe: the geometry would be wrong
        return None
    if not layers and kwargs.get("frontend") is None:
        return None
    try:
        return ModelConfig(**kwargs)
    except TypeError:
        return None


def model_geometry(model: Optional[dict]) -> "Optional[StackGeometry]":
    """The whole stack's geometry (front-end included) from a model config dict; None when unknown
    or invalid. ``config.validate_model`` is the one place that knows which layers make the stack."""
    from conv_pipeline.config.checks import validate_model
    from conv_pipeline.errors import PipelineError

    mc = model_config(model)
    if mc is None:
        return None
    try:
        return validate_model(mc)
    except (PipelineError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------- one file
def _fail(path: PathLike, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def _read_array_file(path: Path) -> tuple[np.ndarray, Optional[dict]]:
    """``(features, npz_arrays or None)``; raises ``InputError`` (one line) for anything else."""
    if not path.exists():
        raise _fail(path, "no such file; check the path")
    if path.is_dir():
        raise _fail(path, "is a folder; load its files with FeatureDataset (or inspect the folder)")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes), not a feature file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except PermissionError:
        raise _fail(path, "permission denied; make the file readable") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(path, f"not a readable .npy/.npz feature file ({detail})") from None
    if isinstance(loaded, np.ndarray):
        return _check_features(path, loaded), None
    with loaded:  # NpzFile
        names = list(loaded.files)
        if "features" not in names:
            raise _fail(path, f".npz has no 'features' array (it has {', '.join(names) or 'nothing'}); not a conv_pipeline feature file")
        arrays = {}
        try:
            for name in names:
                arrays[name] = loaded[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _fail(path, f"damaged .npz: array {name!r} is unreadable ({detail})") from None
    return _check_features(path, arrays.pop("features")), arrays


def _check_features(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2:
        raise _fail(path, f"holds a {arr.ndim}-D array of shape {arr.shape}; features are 2-D (channels, frames)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise _fail(path, f"holds {arr.dtype} values; conv_pipeline features are float32 (not a feature file)")
    return arr


def _scalar(arrays: dict, name: str, kind: type) -> Any:
    if name not in arrays:
        return None
    value = arrays[name]
    if np.ndim(value) != 0:
        return None
    return kind(value.item() if hasattr(value, "item") else value)


def read_features(path: PathLike, root: Optional[OutputRoot] = None, record: Any = None) -> tuple[np.ndarray, dict]:
    """The work behind ``load_features``; ``root`` (already read) and ``record`` save re-reading."""
    path = Path(path)
    features, arrays = _read_array_file(path)
    n_channels, n_frames = (int(s) for s in features.shape)
    if root is None:
        root_path = find_output_root(path)
        root = OutputRoot.read(root_path) if root_path is not None else None
    if record is None and root is not None:
        record = root.record_for(path)
    warnings: list[str] = list(root.problems) if root is not None else []

    config: Optional[dict] = None
    model: Optional[dict] = None
    sample_rate = hop = receptive_field = left_padding = None
    frame_times = frame_starts = None
    if arrays is not None:  # .npz: what was written beside the features
        fmt = "npz"
        sample_rate = _scalar(arrays, "sample_rate", int)
        hop = _scalar(arrays, "hop", int)
        receptive_field = _scalar(arrays, "receptive_field", int)
        left_padding = _scalar(arrays, "left_padding", int)
        if "config" in arrays and np.ndim(arrays["config"]) == 0:
            try:
                config = json.loads(str(arrays["config"]))
            except json.JSONDecodeError:
                warnings.append("the 'config' array is not JSON")
        if isinstance(config, dict) and isinstance(config.get("model"), dict):
            model = config["model"]
        if "frame_times" in arrays and arrays["frame_times"].shape == (n_frames,):
            frame_times = np.asarray(arrays["frame_times"], dtype=np.float64)
        if "frame_starts" in arrays and arrays["frame_starts"].shape == (n_frames,):
            frame_starts = np.asarray(arrays["frame_starts"], dtype=np.int64)
        missing = [k for k in ("frame_times", *_NPZ_SCALARS) if k not in arrays]
        if missing:
            warnings.append(f".npz lacks {', '.join(missing)}")
    else:
        fmt = "npy"
    if config is None and root is not None:
        config = root.config
    if model is None and root is not None:
        model = root.model
    geometry = model_geometry(model)
    layers = layer_configs(model)
    if model is not None and geometry is None:
        warnings.append("the model config is not one this version can read: hop and receptive field unknown")
    if geometry is not None:
        if layers and layers[-1].out_channels != n_channels:
            warnings.append(
                f"the model outputs {layers[-1].out_channels} channels but the file has {n_channels}: "
                "it was written by another model (output.dir reused with overwrite=true?)"
            )
        hop = geometry.hop if hop is None else hop
        receptive_field = geometry.receptive_field if receptive_field is None else receptive_field
        left_padding = geometry.left_padding if left_padding is None else left_padding
    if sample_rate is None and record is not None and record.sample_rate:
        sample_rate = int(record.sample_rate)
    if sample_rate is None and isinstance(config, dict) and isinstance(config.get("audio"), dict):
        sr = config["audio"].get("sample_rate")
        sample_rate = int(sr) if isinstance(sr, int) and sr > 0 else None
    if frame_starts is None and hop is not None and left_padding is not None:
        frame_starts = np.arange(n_frames, dtype=np.int64) * hop - left_padding
    if frame_times is None and sample_rate and hop is not None and receptive_field is not None and left_padding is not None:
        centre = (receptive_field - 1) / 2 - left_padding  # geometry.md: frame centre in samples
        frame_times = (np.arange(n_frames, dtype=np.float64) * hop + centre) / sample_rate
    if fmt == "npy" and root is None:
        warnings.append("no model.safetensors/manifest.jsonl found beside it or above: hop, sample rate and frame times unknown")
    elif sample_rate is None:
        warnings.append("sample rate unknown (no manifest record or audio.sample_rate): frame times unknown")

    num_samples = duration_s = None
    if record is not None:
        num_samples = record.num_samples
        duration_s = record.duration_s
        if record.shape is not None and list(record.shape) != [n_channels, n_frames]:
            warnings.append(f"the manifest says shape {list(record.shape)} but the file holds {[n_channels, n_frames]}")
        if geometry is not None and num_samples and geometry.output_length(int(num_samples)) != n_frames:
            warnings.append(
                f"{num_samples} input samples give {geometry.output_length(int(num_samples))} frames with this model, "
                f"the file has {n_frames}"
            )
    source = record.input if record is not None else None
    if source is None and isinstance(config, dict):
        source = config.get("input")
    meta = {
        "path": str(path),
        "format": fmt,
        "shape": (n_channels, n_frames),
        "dtype": str(features.dtype),
        "sample_rate": sample_rate,
        "hop": hop,
        "receptive_field": receptive_field,
        "left_padding": left_padding,
        "frame_times": frame_times,
        "frame_starts": frame_starts,
        "num_samples": num_samples,
        "duration_s": duration_s,
        "input": source,
        "preset": (model or {}).get("name") if isinstance(model, dict) else None,
        "model": model,
        "config": config,
        "record": asdict(record) if record is not None else None,
        "root": str(root.path) if root is not None else None,
        "warnings": warnings,
    }
    return features, meta


def load_features(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read one feature file written by conv_pipeline.

    Returns ``(features, meta)``: ``features`` is the stored array, float32 ``(channels, frames)``;
    ``meta`` is a dict with

    - ``frame_times``: float64 ``(frames,)``, seconds of each frame's centre (None if the sample rate is unknown)
    - ``frame_starts``: int64 ``(frames,)``, first input sample of each frame (negative inside the left padding)
    - ``sample_rate`` (Hz the features were computed at), ``hop``, ``receptive_field``, ``left_padding``
      (input samples)
    - ``config`` (the run's resolved config, plain data), ``model`` (its model part), ``preset`` (model name)
    - ``input``, ``num_samples``, ``duration_s``, ``record``: from the file's manifest record, when found
    - ``path``, ``format`` (``npy``/``npz``), ``shape``, ``dtype``, ``root`` (the output folder, or None)
    - ``warnings``: list of one-line notes (missing metadata, a file that does not match the model)

    Unknown values are None. Raises ``InputError`` (one line) for a missing, damaged or non-feature file.
    """
    return read_features(path)


# ---------------------------------------------------------------- a folder as a torch Dataset
def _dataset_items(root: OutputRoot, statuses: Iterable[str], missing: str) -> list:
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    wanted = set(statuses)
    items, absent = [], []
    for rec in root.records.values():
        if rec.status in wanted and rec.output:
            if (root.path / rec.output).is_file():
                items.append(rec)
            else:
                absent.append(rec.output)
    if absent and missing == "error":
        raise InputError(
            f"{root.path}: {len(absent)} feature file(s) listed in {MANIFEST_NAME} are missing (first: {absent[0]}); "
            "re-run the batch job or pass missing='skip'"
        )
    return items


def _make_dataset_class() -> type:
    import torch
    from torch.utils.data import Dataset

    class FeatureDataset(Dataset):
        """A torch ``Dataset`` over an output folder, one item per input in its manifest.

        Args:
            root: the output folder (``output.dir``) holding ``manifest.jsonl``.
            statuses: manifest statuses to include; ``ok`` and ``skipped`` (already done) by default.
                Failed inputs have no features and are never items.
            missing: ``error`` (default) raises when a listed feature file is absent; ``skip`` drops it.

        Items, in manifest order (first time each input was seen; the last record per input counts):
        ``(features, meta)`` with ``features`` a float32 tensor ``(channels, frames)`` (frames differ
        between items) and ``meta`` the dict of ``load_features`` (``frame_times``, ``sample_rate``,
        ``hop``, ``input``, ...). ``records`` lists the manifest records behind the items. To batch
        items of different lengths use ``collate_fn=FeatureDataset.pad_collate``.
        """

        def __init__(self, root: PathLike, statuses: Iterable[str] = ("ok", "skipped"), missing: str = "error") -> None:
            root = Path(root)
            if not root.is_dir():
                raise InputError(f"{root}: not a folder; FeatureDataset takes an output folder (output.dir)")
            if not (root / MANIFEST_NAME).is_file():
                raise InputError(f"{root}: no {MANIFEST_NAME}; not a conv_pipeline output folder (pass output.dir of a run)")
            self.root = OutputRoot.read(root)
            self.records = _dataset_items(self.root, statuses, missing)

        def __len__(self) -> int:
            return len(self.records)

        def __getitem__(self, index: int):
            rec = self.records[index]
            features, meta = read_features(self.root.path / rec.output, root=self.root, record=rec)
            return torch.from_numpy(np.ascontiguousarray(features)), meta

        @staticmethod
        def pad_collate(batch):
            """``[(features (C, F_i), meta), ...]`` -> ``(features (B, C, max F_i)`` zero-padded,
            ``lengths (B,)`` int64, ``[meta, ...])``."""
            feats = [f for f, _ in batch]
            lengths = torch.tensor([f.shape[-1] for f in feats], dtype=torch.long)
            out = feats[0].new_zeros((len(feats), feats[0].shape[0], int(lengths.max())))
            for i, f in enumerate(feats):
                out[i, :, : f.shape[-1]] = f
            return out, lengths, [m for _, m in batch]

        def __repr__(self) -> str:
            return f"FeatureDataset({str(self.root.path)!r}, {len(self)} items)"

    FeatureDataset.__module__ = __name__
    FeatureDataset.__qualname__ = "FeatureDataset"
    return FeatureDataset


def __getattr__(name: str) -> Any:
    # PEP 562: ``FeatureDataset`` subclasses torch's Dataset, so it is built on first use; the
    # rest of this module (and ``python -m conv_pipeline.inspect``) stays torch-free.
    if name == "FeatureDataset":
        cls = _make_dataset_class()
        globals()["FeatureDataset"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
