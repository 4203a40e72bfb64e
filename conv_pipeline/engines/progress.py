"""What a run tells its user while it runs and when it ends (engines: ``single.py``, ``local.py``,
``ray_engine.py``). The batch job: a tqdm bar of files on a terminal, moved as each file's record
is made (log lines otherwise, ``batch.progress``), the manifest records counted into a
``BatchSummary``, and the summary printed at the end (exit status 1 when any input failed; "nothing
to do" when every input was already done). One file in chunks (``single.py``): a bar of audio
seconds (``FileProgress``) fed by the blocks the stack reads, on a terminal only. Names are shown through
``fs.printable`` (the summary) and ``fs.PRINTABLE_LOG`` (the job's log lines): a file name holding
a terminal escape sequence is shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

from conv_pipeline.fs import PRINTABLE_LOG, join, printable
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord

log = logging.getLogger("conv_pipeline.batch")
for _name in ("conv_pipeline.batch", "conv_pipeline.audio"):  # the batch job's loggers: names in log lines escaped
    logging.getLogger(_name).addFilter(PRINTABLE_LOG)


class Progress:
    """A tqdm bar on a terminal, else a log line every ``every_s`` seconds."""

    def __init__(self, total: int, mode: str, every_s: float) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.every_s = mode, total, every_s
        self.done = self.failed = 0
        self.audio_s = 0.0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if mode == "bar" and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, smoothing=0.05)

    def update(self, record: ManifestRecord) -> None:
        self.done += 1
        if record.status == "failed":
            self.failed += 1
        elif record.duration_s:
            self.audio_s += record.duration_s
        now = time.perf_counter()
        speed = self.audio_s / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{speed:.0f} audio s/s, {self.failed} failed", refresh=False)
            self.bar.update(1)
        elif self.mode == "log" and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "batch: %d/%d files (%.0f%%), %d failed, %.0f audio s/s, ETA %s",
                self.done, self.total, 100 * self.done / self.total, self.failed, speed, _hms(eta),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- one file
FILE_BAR_DELAY_S = 1.0  # a file done sooner shows no bar


class FileProgress:
    """A bar of one file's audio, in audio seconds, with audio seconds per second: shown only
    when ``stream`` (stderr) is a terminal and the work lasts over ``FILE_BAR_DELAY_S``; nothing
    is printed (and tqdm not imported) in logs and pipes. ``samples`` per pass at
    ``sample_rate`` (0: unknown total); ``passes``: how often the stack reads the file (1 + one
    statistics pass per norm over time)."""

    def __init__(self, name: str, samples: int, sample_rate: int, passes: int = 1, stream: Optional[TextIO] = None) -> None:
        stream = sys.stderr if stream is None else stream
        self.sample_rate = sample_rate
        self.bar = None
        isatty = getattr(stream, "isatty", None)
        if callable(isatty) and isatty():
            from tqdm import tqdm

            total = passes * samples / sample_rate if samples > 0 else None
            desc = printable(name) + (f" ({passes} passes)" if passes > 1 else "")
            self.bar = tqdm(total=total, desc=desc, unit=" audio s", file=stream, dynamic_ncols=True,
                            delay=FILE_BAR_DELAY_S, leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} audio s "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")

    def add(self, samples: int) -> None:
        """``samples`` more read (at ``sample_rate``)."""
        if self.bar is not None:
            self.bar.update(samples / self.sample_rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stack_passes(stack: Any) -> int:
    """How often the chunked executor reads a file for ``stack``: once, plus once per layer with a
    norm over time (its statistics pass)."""
    return 1 + sum(bool(getattr(layer, "mixes_time", False)) for layer in getattr(stack, "layers", ()))


class CountedBlocks:
    """``stream`` (an ``AudioStream``) whose blocks are reported to ``on_block(samples)`` as the
    stack reads them, in every pass; everything else is the stream's own."""

    def __init__(self, stream: Any, on_block: Callable[[int], None]) -> None:
        self.stream, self.on_block = stream, on_block

    def __iter__(self) -> Iterator[Any]:
        for block in self.stream:  # (channels, n)
            self.on_block(int(block.shape[-1]))
            yield block

    def __getattr__(self, name: str) -> Any:  # path, channels, frames, frames_read, sample_rate, info
        return getattr(self.stream, name)


# ---------------------------------------------------------------- the job
FAILURES_KEPT = 1000  # failures listed in a BatchSummary (the manifest has them all): memory stays flat


@dataclass
class BatchSummary:
    """What a batch job did. ``exit_code``: 1 if any input failed, else 0."""

    output_dir: Path | str  # a URL for a remote output.dir
    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0  # audio processed by this run (ok files)
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error), the first FAILURES_KEPT
    in_channels: Optional[int] = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def speed(self) -> float:
        """Audio seconds per wall-clock second (times real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self, max_failures: int = 50) -> str:
        manifest = f"manifest: {printable(join(self.output_dir, MANIFEST_NAME))}"
        if self.total and self.skipped == self.total:
            return (f"batch: nothing to do: {self.total} input(s) already done (overwrite=true to redo); "
                    f"{manifest}")
        done = f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s ({self.speed:.0f}x real time)"
        if not self.ok:
            done = f"nothing processed in {self.wall_seconds:.1f} s"
        lines = [f"batch: {self.total} input(s): {self.ok} ok, {self.skipped} skipped, {self.failed} failed; {done}; {manifest}"]
        if self.failures:
            lines.append("failed:")
            lines += [f"  {printable(err)}" for _, err in self.failures[:max_failures]]
            if self.failed > max_failures:
                lines.append(f"  ... and {self.failed - max_failures} more (status \"failed\" in the manifest)")
        return "\n".join(lines)


def count_record(summary: BatchSummary, rec: ManifestRecord) -> None:
    if rec.status == "ok":
        summary.ok += 1
        summary.audio_seconds += rec.duration_s or 0.0
    elif rec.status == "skipped":
        summary.skipped += 1
    else:
        summary.failed += 1
        if len(summary.failures) < FAILURES_KEPT:
            summary.failures.append((rec.input, rec.error or ""))
