"""What every command-line entry point shares: one line per user error, no traceback."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Optional

from .errors import PipelineError

__all__ = ["report_errors", "hydra_output_dir"]


@contextlib.contextmanager
def report_errors(cfg: Any = None, prog: str = "conv_pipeline") -> Iterator[None]:
    """Turn a ``PipelineError`` into ``prog: error: <one line>`` on stderr and exit status 2.

    With ``debug=true`` in the config the traceback is shown instead.
    """
    try:
        yield
    except PipelineError as err:
        if cfg is not None and bool(cfg.get("debug", False)):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def hydra_output_dir() -> Optional[str]:
    """The job's own folder in a Hydra multirun, else None (single runs use output.dir or feats/)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return hc.runtime.output_dir
    return None
