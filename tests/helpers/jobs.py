"""Small batch jobs: one tiny stack, 8 kHz, and the config that runs it (``run_batch``), as the
job's command line writes it, and what the single-file pipeline gives for one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from conv_pipeline.config.schema import (
    AudioConfig,
    BatchConfig,
    BatchOptions,
    Config,
    EngineConfig,
    LayerConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    StorageConfig,
)
from conv_pipeline.sink.manifest import MANIFEST_NAME

SR = 8000  # the jobs resample everything to 8 kHz
# A small stack with stride, padding, dilation, a norm and activations.
LAYERS = [
    LayerConfig(out_channels=4, kernel_size=5, stride=2, padding=2, activation="relu"),
    LayerConfig(out_channels=3, kernel_size=3, padding=1, dilation=2, norm="layer_norm", activation="tanh"),
]
LAYERS_CLI = (  # the same stack as a command-line override
    "model.layers=[{out_channels:4,kernel_size:5,stride:2,padding:2,activation:relu},"
    "{out_channels:3,kernel_size:3,padding:1,dilation:2,norm:layer_norm,activation:tanh}]"
)
META = {MANIFEST_NAME, "model.safetensors", "config.yaml"}  # what a job writes besides features


def batch_cfg(input: Any, out: Any, layers=LAYERS, audio: AudioConfig | None = None, batch_size: int = 3,
              num_workers: int = 2, batch: dict | None = None, runtime: dict | None = None, fmt: str = "npy",
              engine: EngineConfig | None = None, options: Any = None, **kw) -> BatchConfig:
    """A small job (no progress output). ``batch``/``runtime``: other ``BatchOptions``/``RuntimeConfig``
    fields (the schema's defaults otherwise); ``options``: ``storage.options``; ``kw``: top-level keys."""
    return BatchConfig(
        input=str(input),
        model=ModelConfig(name="custom", layers=list(layers)),
        audio=audio or AudioConfig(sample_rate=SR),
        output=OutputConfig(dir=str(out), format=fmt),
        runtime=RuntimeConfig(batch_size=batch_size, num_workers=num_workers, **(runtime or {})),
        batch=BatchOptions(**{"progress": "none", **(batch or {})}),
        engine=engine or EngineConfig(),
        storage=StorageConfig(options=options),
        **kw,
    )


def single_file(path: Path, out_dir: Path, weights: Path, audio: AudioConfig | None = None, layers=LAYERS) -> np.ndarray:
    """What the single-file pipeline writes for ``path`` with the given weights."""
    from conv_pipeline.engines.single import run

    cfg = Config(
        input=str(path),
        model=ModelConfig(layers=list(layers), checkpoint=str(weights)),
        audio=audio or AudioConfig(sample_rate=SR),
        output=OutputConfig(dir=str(out_dir)),
    )
    return np.load(run(cfg).output)
