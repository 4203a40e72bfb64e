"""``python -m conv_pipeline input=song.wav [overrides]``: see ``conv_pipeline.cli.main``."""

from conv_pipeline.cli.common import exit_after
from conv_pipeline.cli.main import main

if __name__ == "__main__":
    exit_after(main)
