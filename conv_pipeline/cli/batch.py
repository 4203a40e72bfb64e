"""``conv-pipeline-batch`` / ``python scripts/batch_process.py``: a whole collection.

    conv-pipeline-batch input=corpus/ output.dir=feats/
    conv-pipeline-batch input='corpus/**/*.flac' output.dir=feats/ runtime.batch_size=16
    conv-pipeline-batch input=list.txt output.dir=feats/ audio.channels=mono
    conv-pipeline-batch input=corpus/ output.dir=feats/ engine=ray      # a local Ray instance
    conv-pipeline-batch input=s3://bucket/corpus output.dir=s3://bucket/feats engine=ray \
        engine.address=auto engine.num_gpus_per_actor=1 runtime.device=auto runtime.batch_size=32

``engine=local`` (default) runs in this process; ``engine=ray`` runs on a Ray cluster
(``conv_pipeline/engines/ray_engine.py``, needs the ray extra). Inputs and output.dir may be
fsspec URLs (storage.options: the filesystem's options, e.g. an S3 endpoint and credentials).

Exit status: 0 when every input is ok or skipped, 1 when any failed, 2 for a config or setup
error (one line on stderr, before any audio is read), 130 / 143 after Ctrl-C / SIGTERM (one line;
the files finished so far and their records are kept, and the same command resumes the job).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from conv_pipeline.cli.common import (
    exit_after,
    plan_or_summary,
    report_errors,
    run_entry_point,
)

# what a re-run after Ctrl-C or SIGTERM does (every finished file and its record are kept)
RESUME = "finished files are kept; run the same command again to resume"


def _prog() -> str:
    """The name the user typed: ``batch_process`` for the script, ``conv-pipeline-batch`` for the console script."""
    name = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0]
    return name if name and name != "-c" else "conv-pipeline-batch"


def _main(cfg: Any) -> None:
    with report_errors(cfg, prog=_prog(), resume=RESUME):
        plan = plan_or_summary(cfg, "batch")
        if plan is None:
            return
        from conv_pipeline.engines.job import run_batch

        summary = run_batch(plan)
    print(summary.format(), flush=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)


ABOUT = ("A whole collection (a folder searched recursively, a glob or a list file; local or URLs) through a "
         "Conv1d feature stack: one feature file per input under OUTPUT.DIR (mirroring the input tree), "
         "model.safetensors, config.yaml and manifest.jsonl; an interrupted job resumes when run again. "
         "Exit status 0 (all ok or skipped), 1 (some failed), 2 (config error), 130/143 (interrupted). "
         "summary=true prints the model's per-layer summary without processing audio.")


def main() -> None:
    """The command, in this process (tests call it; it returns or raises ``SystemExit``)."""
    run_entry_point(_main, prog=_prog(), config_name="batch", kind="batch",
                    usage="conv-pipeline-batch input=FOLDER|GLOB|LIST output.dir=DIR [KEY=VALUE ...]  "
                          "(or: python scripts/batch_process.py ...)", about=ABOUT)


def console() -> None:
    """``conv-pipeline-batch`` and ``scripts/batch_process.py``: ``main`` as a program (``exit_after``)."""
    exit_after(main, prog=_prog())
