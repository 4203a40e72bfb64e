"""``python -m conv_pipeline input=song.wav [overrides]``: see ``conv_pipeline/cli/main.py``."""

from conv_pipeline.cli.main import console

if __name__ == "__main__":
    console()
