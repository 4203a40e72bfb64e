"""Plain-text helpers shared by the model summary (``summary.py``) and the descriptions of outputs
(``describe.py``): aligned columns (``text_table``) and sample counts as milliseconds (``ms_text``);
and the first log line of a run, the audio as read and as the stack takes it (``audio_text``).

Standard library only, so ``summary=true`` (which needs these and no feature file) imports
neither numpy nor torch.
"""

from __future__ import annotations

from typing import Optional, Sequence


def ms_text(samples: Optional[int], sample_rate: Optional[float]) -> str:
    """``samples`` as milliseconds at ``sample_rate`` (two decimals), or ``-`` when either is unknown."""
    return f"{1000 * samples / sample_rate:.2f}" if samples is not None and sample_rate else "-"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> list[str]:
    """Aligned columns: the columns in ``left`` flush left, the others right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(r) for r in rows)]


def channels_text(channels: int) -> str:
    """``mono``, ``stereo`` or ``N channels``."""
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def audio_text(rate: int, channels: int, samples: int, to_rate: int, to_channels: int, to_samples: int) -> str:
    """The audio as the file holds it and as the stack takes it (after audio.channels, resampling),
    counted in samples (per channel; frames are the stack's output): ``44100 Hz stereo, 441000
    samples (10.00 s) -> 16000 Hz mono, 160000 samples``; one side when nothing changed."""
    seconds = f" ({samples / rate:.2f} s)" if rate else ""
    source = f"{rate} Hz {channels_text(channels)}, {samples} samples{seconds}"
    if (rate, channels, samples) == (to_rate, to_channels, to_samples):
        return source
    return f"{source} -> {to_rate} Hz {channels_text(to_channels)}, {to_samples} samples"
