"""Batch feature extraction for whole collections (see conv_pipeline/batch.py).

    python scripts/batch_process.py input=corpus/ output.dir=feats/
    python scripts/batch_process.py input='corpus/**/*.flac' output.dir=feats/ runtime.batch_size=16
    python scripts/batch_process.py input=list.txt output.dir=feats/ audio.channels=mono
    python scripts/batch_process.py input=corpus/ output.dir=feats/ engine=ray      # a local Ray instance
    python scripts/batch_process.py input=s3://bucket/corpus output.dir=s3://bucket/feats engine=ray \
        engine.address=auto engine.num_gpus_per_actor=1 runtime.device=auto runtime.batch_size=32

``engine=local`` (default) runs in this process; ``engine=ray`` runs on a Ray cluster
(conv_pipeline/ray_engine.py, needs the ray extra). Inputs and output.dir may be fsspec URLs
(storage.options: the filesystem's options, e.g. an S3 endpoint and credentials).

Exit status: 0 when every input is ok or skipped, 1 when any failed, 2 for a config or setup
error (one line on stderr, before any audio is read).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from conv_pipeline.batch import run_batch
from conv_pipeline.cli import exit_after, hydra_output_dir, report_errors, run_entry_point


@hydra.main(version_base=None, config_path="pkg://conv_pipeline.configs", config_name="batch")
def _main(cfg: DictConfig) -> None:
    with report_errors(cfg, prog="batch_process"):
        summary = run_batch(cfg, output_dir=hydra_output_dir())
    print(summary.format(), flush=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)


def main() -> None:
    run_entry_point(_main, prog="batch_process")


if __name__ == "__main__":
    exit_after(main)
