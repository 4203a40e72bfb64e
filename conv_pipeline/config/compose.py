"""Batch processing of whole collections: many files -> features, resumable and failure-isolated.

Plain Python; Hydra stays in ``scripts/batch_process.py``. The job (``run_batch``):

1. checks the config (exit 2 before any audio is read), finds the inputs (a folder searched
   recursively, a glob, a text file with one path per line, or one audio file) and plans one
   output per input, mirroring the input tree under ``output.dir`` (``plan_outputs``);
2. fixes the stack's input channels once for the whole job (``model.in_channels``, the
   checkpoint, or with ``auto`` the first input's count after ``audio.channels``), builds the
   stack and writes ``model.safetensors`` and ``config.yaml`` to ``output.dir`` (refusing a
   different model or different audio settings unless ``overwrite=true``);
3. removes temporary files left by a killed run, records every input whose output already
   exists as ``skipped`` (outputs are written atomically, so existing means complete);
4. decodes and resamples the rest in ``runtime.num_workers`` threads (or worker processes with
   ``batch.workers=process``) while the main thread runs the stack on ``runtime.batch_size``
   files at a time (padded batch of files of similar length, each output trimmed to its own
   length, ``extract_batch``), and one writer thread writes each file's features atomically,
   then appends its manifest record.

Every input gets one record in ``output.dir/manifest.jsonl``. A file that cannot be used
(unreadable, corrupt, empty, too short, wrong channel count, NaN/Inf samples, a crashing
decoder) gets a ``failed`` record with a one-line message and the job goes on.

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``LocalEngine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from conv_pipeline.config.schema import Config


def written_config(cfg: Config) -> dict[str, Any]:
    """The resolved config written to ``config.yaml`` and ``.npz`` files: what the features were
    computed with. ``engine`` and ``storage`` (where the job ran; credentials may be among
    ``storage.options`` and ``engine.env_vars``) are left out, so both engines write the same."""
    config = plain_config(cfg)
    config.pop("engine", None)
    config.pop("storage", None)
    return config


def to_config(cfg: Any) -> Config:
    """A typed ``Config`` from a Hydra/OmegaConf config (or a ``Config``, returned as is)."""
    if isinstance(cfg, Config):
        return cfg
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # composed without the schema
        obj = Config(**{k: v for k, v in obj.items() if k in {f.name for f in dataclasses.fields(Config)}})
    return obj


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> Config:
    """Compose the packaged configs with Hydra-style overrides, outside any Hydra app."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from conv_pipeline.config.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conv_pipeline.configs", version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    cfg_dict = {k: v for k, v in cfg.items() if k != "hydra"}
    from omegaconf import OmegaConf

    from conv_pipeline.config.schema import BatchConfig

    schema = BatchConfig if "batch" in cfg_dict else Config  # config_name="batch": the batch job's keys
    return to_config(OmegaConf.merge(OmegaConf.structured(schema), cfg_dict))


def plain_config(cfg: Config) -> dict[str, Any]:
    """The config as JSON-able plain data (enums as their values)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if hasattr(v, "value") and not isinstance(v, (int, float, str)):
            return v.value
        return v

    return conv(cfg)
