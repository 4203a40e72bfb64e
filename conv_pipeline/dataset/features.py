"""Loading features back: one file (``load_features``) or a whole output folder (``FeatureDataset``).

The dataset stage's public names, importable from here:

- ``load_features`` (below) and ``read_features`` (``reader.py``): one feature file and its metadata;
- ``FeatureDataset`` (``torch_dataset.py``): an output folder as a torch ``Dataset``;
- ``OutputRoot``, ``find_output_root``, ``FEATURE_SUFFIXES``, ``WEIGHTS_NAME``, ``CONFIG_NAME``
  (``folder.py``): an output folder's root files;
- ``layer_configs``, ``model_config``, ``model_geometry`` (``model.py``): the model from its plain-data config.

Feature files are untrusted input (``arrays.py``): headers are checked against the file's size
before anything is allocated, no object array is ever read (nothing is unpickled), and features
must be little-endian float32, as conv_pipeline writes them. This module imports numpy only;
torch is imported when ``FeatureDataset`` is first used.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from conv_pipeline.dataset.folder import (
    CONFIG_NAME,
    FEATURE_SUFFIXES,
    WEIGHTS_NAME,
    OutputRoot,
    PathLike,
    find_output_root,
)
from conv_pipeline.dataset.model import layer_configs, model_config, model_geometry
from conv_pipeline.dataset.reader import read_features

# FeatureDataset is left out: ``import *`` would import torch.
__all__ = [
    "load_features",
    "read_features",
    "OutputRoot",
    "find_output_root",
    "FEATURE_SUFFIXES",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "layer_configs",
    "model_config",
    "model_geometry",
]


def load_features(path: PathLike, item: Optional[str] = None, mmap_mode: Optional[str] = None) -> tuple[np.ndarray, dict]:
    """Read one feature file written by conv_pipeline: a ``.npy``/``.npz``, or one input (``item``:
    its id, the ``item`` of its manifest record) of a ``parquet``/``kaldi``/``lhotse`` shard
    (``part-00000.parquet``, ``feats-00000.ark``, ``features-00000.h5``). ``mmap_mode="r"``: a
    ``.npy``'s features are mapped read-only instead of read.

    Returns ``(features, meta)``: ``features`` float32 (float16 when written so) ``(channels,
    frames)`` whatever the stored layout (a time-major file is returned transposed, a view);
    ``meta`` is a dict with

    - ``frame_times``: float64 ``(frames,)``, seconds of each frame's centre (None if the sample rate is unknown)
    - ``frame_starts``: int64 ``(frames,)``, first input sample of each frame (negative inside the left padding)
    - ``sample_rate`` (Hz the features were computed at), ``hop``, ``receptive_field``, ``left_padding``
      (input samples)
    - ``config`` (the run's resolved config, plain data), ``model`` (its model part), ``preset`` (model name)
    - ``versions``: ``{package: version}`` that computed it (a ``.npz``'s own; for a ``.npy``, those in
      the folder's ``config.yaml``: the run that wrote it last)
    - ``input``, ``num_samples``, ``duration_s``, ``record``: from the file's manifest record, when found
    - ``path``, ``format`` (``npy``, ``npz``, ``parquet``, ``kaldi``, ``lhotse``), ``shape``, ``dtype``,
      ``root`` (the output folder, or None)
    - ``warnings``: list of one-line notes (missing metadata, a file that does not match the model)

    Unknown values are None. Raises ``InputError`` (one line) for a missing, damaged or non-feature file.
    """
    if mmap_mode not in (None, "r"):
        raise ValueError(f"mmap_mode must be None or 'r' (features are never written through), got {mmap_mode!r}")
    return read_features(path, item=item, mmap=mmap_mode == "r")


def __getattr__(name: str) -> Any:
    # PEP 562: ``FeatureDataset`` subclasses torch's Dataset, so its module is imported on first
    # use; the rest of this module (and ``python -m conv_pipeline.inspect``) stays torch-free.
    if name == "FeatureDataset":
        from conv_pipeline.dataset.torch_dataset import FeatureDataset

        globals()["FeatureDataset"] = FeatureDataset
        return FeatureDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
