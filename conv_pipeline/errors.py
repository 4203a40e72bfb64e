"""The one user-facing error type.

Anything the user can fix (bad config, unreadable audio, unwritable output) raises a
``PipelineError`` whose message is one line saying what is wrong and how to fix it. The
command-line entry points print that line and exit non-zero without a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the user can fix; ``str(err)`` is a single line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(PipelineError, ValueError):
    """The configuration is invalid (raised before any audio is read)."""


class InputError(PipelineError):
    """An input file cannot be used (missing, not audio, too short, wrong channels, ...)."""


class OutputError(PipelineError):
    """Outputs cannot be written where asked."""
