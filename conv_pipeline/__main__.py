"""``python -m conv_pipeline input=song.wav [overrides]``: one file through the pipeline."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .cli import hydra_output_dir, report_errors
from .config import register_configs
from .pipeline import run


@hydra.main(version_base=None, config_path="pkg://conv_pipeline.configs", config_name="config")
def _main(cfg: DictConfig) -> None:
    with report_errors(cfg):
        result = run(cfg, output_dir=hydra_output_dir())
        print(f"wrote {result.output} shape {result.shape} (weights: {result.weights})")


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
