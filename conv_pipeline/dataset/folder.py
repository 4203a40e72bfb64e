"""An output folder's root: the files a run writes there and what they say about its features.

An output folder (``output.dir`` of a CLI run or of the batch job) holds feature files
(``<stem>.npy`` or ``<stem>.npz``, possibly in subfolders; or the shards of ``parquet``, ``kaldi``,
``lhotse``) and, at its root, ``model.safetensors``
(whose metadata carries the model config), ``config.yaml`` (the run's resolved config) and
``manifest.jsonl`` (one record per input). ``find_output_root`` walks up from a feature file to
that root; ``OutputRoot.read`` reads the three files, noting unreadable ones in ``problems``
instead of raising.

Imports no torch: the weights' metadata is read with safetensors' numpy reader.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from conv_pipeline.dataset.model import model_geometry
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord, read_manifest
from conv_pipeline.sink.names import CONFIG_NAME, WEIGHTS_NAME
from conv_pipeline.sink.writer import check_regular_files

PathLike = Union[str, "os.PathLike[str]"]


FEATURE_SUFFIXES = (".npy", ".npz", ".parquet", ".ark", ".h5")  # the last three: shards (dataset/shards.py)


@dataclass
class OutputRoot:
    """The root of an output folder and what it says about its files.

    ``config``: ``config.yaml`` as plain data (None when absent or unreadable); ``model``: the model
    config (``name``, ``in_channels``, ``layers``) from the weights' metadata, else from ``config.yaml``;
    ``records``: the current manifest record of every input, keyed by input; ``problems``: one line
    per root file that could not be read.
    """

    path: Path
    config: Optional[dict] = None
    model: Optional[dict] = None
    records: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    @classmethod
    def read(cls, path: PathLike) -> "OutputRoot":
        root = cls(Path(path))
        check_regular_files(root.path)  # a FIFO planted as the run's own files would block forever
        cfg_path = root.path / CONFIG_NAME
        if cfg_path.is_file():
            root.config = _read_yaml(cfg_path, root.problems)
        weights = root.path / WEIGHTS_NAME
        if weights.is_file():
            root.model = _weights_model(weights, root.problems)
        if root.model is None and root.config and isinstance(root.config.get("model"), dict):
            root.model = root.config["model"]
        root.records = read_manifest(root.path, root.problems)  # skipped lines become notes
        return root

    def record_for(self, feature_path: Path, item: Optional[str] = None) -> Optional[ManifestRecord]:
        """The current manifest record whose ``output`` is ``feature_path`` (and, in a shard, whose
        ``item`` is ``item``); None when there is none."""
        try:
            rel = Path(os.path.relpath(Path(feature_path).resolve(), self.path.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            return None
        for rec in self.records.values():
            if rec.output == rel and (item is None or rec.item == item):
                return rec
        return None

    def feature_path(self, output: Any) -> Path | None:
        """The file a manifest record's ``output`` names, when it lies inside this folder.

        None for anything else, which is then never opened: not a relative path string, a path
        leaving the folder (``..``, absolute) or one whose symlinks lead out of it.
        """
        if not isinstance(output, str) or not output or "\0" in output:
            return None
        rel = Path(output)
        if rel.is_absolute() or ".." in rel.parts:
            return None
        try:
            base = self.path.resolve()
            target = (base / rel).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable folder
            return None
        return self.path / rel if target != base and target.is_relative_to(base) else None

    def geometry(self) -> Optional[StackGeometry]:
        """The stack's geometry from the model config, or None when unknown."""
        return model_geometry(self.model)


def is_regular_file(path: Path) -> bool:
    """``path`` is a regular file; False (never an error) for a name the system cannot even look up."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a component not a folder, ...
        return False


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
