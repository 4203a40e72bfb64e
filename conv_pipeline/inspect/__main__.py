"""``python -m conv_pipeline.inspect``: looking at outputs without writing code.

    python -m conv_pipeline.inspect feats/song.npz                 # one feature file
    python -m conv_pipeline.inspect feats/                         # an output folder: its manifest as a table
    python -m conv_pipeline.inspect feats/song.npz --plot out.png  # also draw it (inspect/plot.py)
    python -m conv_pipeline.inspect feats/data/part-00000.parquet  # a shard: the inputs it holds
    python -m conv_pipeline.inspect feats/feats-00000.ark --item ID  # one input of a shard

Plain text on stdout (``inspect/describe.py``); a broken or non-feature file gives one line on
stderr and exit status 2. Imports numpy, yaml and the torch-free parts of the package only (``--help``
not even numpy), so it starts fast. The model summary of ``summary=true`` lives in ``inspect/summary.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from conv_pipeline.errors import InputError
from conv_pipeline.fs import printable

PROG = "conv_pipeline.inspect"  # the command's name in its usage and error lines


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Summarise a conv_pipeline feature file (.npy/.npz, or a parquet/Kaldi/lhotse shard) or an "
                    "output folder (its manifest).",
    )
    p.add_argument("path", help="a feature file (.npy, .npz, .parquet, .ark, .h5) or an output folder (output.dir)")
    p.add_argument("--item", metavar="ID", help="one input of a shard file (its item in manifest.jsonl)")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the feature file (waveform + heatmap) to this PNG")
    p.add_argument("--audio", metavar="AUDIO", help="source audio for --plot when the recorded input is elsewhere")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def _run(args: argparse.Namespace) -> None:
    from conv_pipeline.cli.common import report_errors
    from conv_pipeline.inspect.describe import describe_dir, describe_file  # numpy: not for --help

    with report_errors(prog=PROG):
        path = Path(args.path)
        if path.is_dir():
            if args.plot:
                raise InputError(f"{path}: --plot draws one feature file; give a .npy/.npz file, not a folder")
            print(printable(describe_dir(path), keep="\n"))
        else:
            refuse_audio(path)
            print(printable(describe_file(path, args.item), keep="\n"))
            if args.plot:
                from conv_pipeline.inspect.plot import plot_features

                result = plot_features(path, args.plot, audio_path=args.audio)
                print(f"wrote {printable(result.path)}")


def refuse_audio(path: Path) -> None:
    """``InputError`` when ``path`` (not a .npy/.npz) is an audio file: inspect reads what a run wrote."""
    if path.suffix.lower() in (".npy", ".npz") or not path.is_file():
        return
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError):  # not audio either: describe_file says what it is
        return
    raise InputError(
        f"{printable(str(path))}: an audio file ({info.samplerate} Hz, {info.channels} channel(s), {info.duration:.2f} s), not a "
        "feature file; inspect reads what a run wrote: a .npy/.npz feature file or an output folder "
        f"(features of this file: python -m conv_pipeline input={printable(str(path))})"
    )


if __name__ == "__main__":
    sys.exit(main())
