"""``FeatureDataset``: a whole output folder as a torch ``Dataset``.

One item per input listed in the folder's ``manifest.jsonl``, read with ``read_features`` when
it is fetched. This module imports torch; ``conv_pipeline.dataset.features`` imports it on the
first use of ``FeatureDataset``, so loading single files stays torch-free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from conv_pipeline.dataset.folder import OutputRoot, PathLike, is_regular_file
from conv_pipeline.dataset.reader import read_features
from conv_pipeline.errors import InputError
from conv_pipeline.sink.manifest import MANIFEST_NAME

log = logging.getLogger("conv_pipeline.dataset")


class FeatureDataset(Dataset):
    """A torch ``Dataset`` over an output folder, one item per input in its manifest.

    Args:
        root: the output folder (``output.dir``) holding ``manifest.jsonl``.
        statuses: manifest statuses to include; ``ok`` and ``skipped`` (already done) by default.
            Failed inputs have no features and are never items.
        missing: ``error`` (default) raises when a listed feature file is absent; ``skip`` drops it.
        mmap_mode: ``"r"`` maps ``.npy`` features read-only instead of reading them.

    Every format reads the same way: over a ``parquet``, ``kaldi`` or ``lhotse`` output each item is
    read from its shard (the record's ``output``, ``item`` and ``offset``), ``(channels, frames)`` as over npy.

    Items, in manifest order (first time each input was seen; the last record per input counts):
    ``(features, meta)`` with ``features`` a float32 tensor ``(channels, frames)`` (frames differ
    between items) and ``meta`` the dict of ``load_features`` (``frame_times``, ``sample_rate``,
    ``hop``, ``input``, ...). ``records`` lists the manifest records behind the items; ``refused``
    the ``output`` of records naming a file outside the folder (``../``, absolute, a symlink out),
    which are skipped with one logged warning and never opened. To batch
    items of different lengths use ``collate_fn=FeatureDataset.pad_collate``.
    """

    def __init__(self, root: PathLike, statuses: Iterable[str] = ("ok", "skipped"), missing: str = "error",
                 mmap_mode: Optional[str] = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder; FeatureDataset takes an output folder (output.dir)")
        if not (root / MANIFEST_NAME).is_file():
            raise InputError(f"{root}: no {MANIFEST_NAME}; not a conv_pipeline output folder (pass output.dir of a run)")
        self.mmap = mmap_mode == "r"
        self.root = OutputRoot.read(root)
        self.records, self.refused = _dataset_items(self.root, statuses, missing)
        if self.refused:
            log.warning(_refused_line(self.root, self.refused))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        path = self.root.feature_path(rec.output)  # checked again: the folder may have changed
        if path is None:
            raise InputError(_refused_line(self.root, [rec.output]))
        features, meta = read_features(path, root=self.root, record=rec, mmap=self.mmap)
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


# Shown (and pickled) under its public import path; that module's __getattr__ returns this class.
FeatureDataset.__module__ = "conv_pipeline.dataset.features"


def _dataset_items(root: OutputRoot, statuses: Iterable[str], missing: str) -> tuple[list, list]:
    """The records with status in ``statuses`` whose feature file exists (``missing``: error or skip),
    and the ``output`` of those refused because it lies outside the folder (never opened)."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    wanted = set(statuses)
    items, absent, refused = [], [], []
    for rec in root.records.values():
        if rec.status in wanted and rec.output:
            path = root.feature_path(rec.output)
            if path is None:
                refused.append(rec.output)
            elif is_regular_file(path):
                items.append(rec)
            else:
                absent.append(rec.output)
    if absent and missing == "error":
        raise InputError(
            f"{root.path}: {len(absent)} feature file(s) listed in {MANIFEST_NAME} are missing (first: {absent[0]}); "
            "re-run the batch job or pass missing='skip'"
        )
    return items, refused


def _refused_line(root: OutputRoot, refused: list) -> str:
    return (
        f"{root.path}: skipped {len(refused)} {MANIFEST_NAME} record(s) whose output is not a path inside the folder "
        f"(../, absolute, a symlink leading out; first: {refused[0]!r}); such files are never read"
    )
