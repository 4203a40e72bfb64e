"""What the batch job tells its user while it runs and when it ends: a tqdm bar on a terminal
(log lines otherwise, ``batch.progress``), the manifest records counted into a ``BatchSummary``,
and the summary printed at the end (exit status 1 when any input failed). Names are shown through
``fs.printable`` (the summary) and ``fs.PRINTABLE_LOG`` (the job's log lines): a file name holding
a terminal escape sequence is shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

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
        lines = [
            f"batch: {self.total} input(s): {self.ok} ok, {self.skipped} skipped, {self.failed} failed; "
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
            f"({self.speed:.0f}x real time); manifest: {printable(join(self.output_dir, MANIFEST_NAME))}"
        ]
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
