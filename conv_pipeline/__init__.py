"""conv_pipeline: audio feature extraction with configurable Conv1d stacks.

    from conv_pipeline import Extractor, load_features, FeatureDataset, ConvStack, StackGeometry, PipelineError

Names are imported on first use (PEP 562), so ``import conv_pipeline`` and
``python -m conv_pipeline.inspect`` do not pay for torch unless they need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Extractor", "Features", "load_features", "FeatureDataset", "ConvStack", "StackGeometry", "PipelineError"]

_LAZY = {
    "Extractor": ".api",
    "Features": ".api",
    "load_features": ".dataset.features",
    "FeatureDataset": ".dataset.features",
    "ConvStack": ".stack.stack",
    "StackGeometry": ".geometry",
    "PipelineError": ".errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import Extractor, Features
    from .dataset.features import FeatureDataset, load_features
    from .errors import PipelineError
    from .geometry import StackGeometry
    from .stack.stack import ConvStack


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
