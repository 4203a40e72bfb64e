"""The model behind a feature file, rebuilt from its plain-data config.

An output folder records its model as plain data (the weights' metadata, ``config.yaml``, the
``config`` array of a ``.npz``). This module turns that dict back into ``LayerConfig``s, a
``ModelConfig`` and the stack's ``StackGeometry`` (hop, receptive field, left padding), keeping
the keys this version knows. Each returns None rather than raising when the config is missing,
damaged or from a version it cannot describe: the caller reports the unknown values.

Imports no torch.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

from conv_pipeline.config.checks import validate_model
from conv_pipeline.config.schema import FrontendConfig, LayerConfig, ModelConfig
from conv_pipeline.errors import PipelineError
from conv_pipeline.geometry import StackGeometry


def layer_configs(model: Optional[dict]) -> Optional[list]:
    """``LayerConfig``s from a model config dict, or None when it has no usable layers."""
    if not model or not isinstance(model.get("layers"), list) or not model["layers"]:
        return None
    names = {f.name for f in fields(LayerConfig)}
    try:
        return [LayerConfig(**{k: v for k, v in layer.items() if k in names}) for layer in model["layers"]]
    except (TypeError, AttributeError):
        return None


def model_config(model: Optional[dict]) -> Optional[ModelConfig]:
    """A ``ModelConfig`` from its plain-data form (config.yaml, the weights' metadata, a .npz's
    config), keeping the keys this version knows; None when it has neither layers nor a front-end,
    or a front-end this version cannot describe."""
    if not isinstance(model, dict):
        return None
    layers = layer_configs(model) or []
    kwargs: dict = {"layers": layers}
    known = {f.name for f in fields(ModelConfig)}
    for key in ("name", "in_channels", "checkpoint"):
        if key in model and key in known:
            kwargs[key] = model[key]
    frontend = model.get("frontend")
    if isinstance(frontend, dict) and "frontend" in known:
        names = {f.name for f in fields(FrontendConfig)}
        kwargs["frontend"] = FrontendConfig(**{k: v for k, v in frontend.items() if k in names})
    elif frontend is not None:  # a front-end this version cannot describe: the geometry would be wrong
        return None
    if not layers and kwargs.get("frontend") is None:
        return None
    try:
        return ModelConfig(**kwargs)
    except TypeError:
        return None


def model_geometry(model: Optional[dict]) -> Optional[StackGeometry]:
    """The whole stack's geometry (front-end included) from a model config dict; None when unknown
    or invalid. ``config.checks.validate_model`` is the one place that knows which layers make the stack."""
    mc = model_config(model)
    if mc is None:
        return None
    try:
        return validate_model(mc)
    except (PipelineError, TypeError, ValueError):
        return None
