"""``python -m conv_pipeline input=song.wav [overrides]``: one file through the pipeline.

``plot=true`` also draws ``<output.dir>/<stem>.png`` (waveform + features, see plot.py);
``summary=true [input_seconds=10]`` prints the model's per-layer summary and exits without audio.

Start-up: ``--help``, ``--version``, ``summary=true`` and config errors are answered before Hydra's
app runs, from one composition (``cli/common.py: run_entry_point``), and import no torch; a run
imports the engines only once its plan is built.
"""

from __future__ import annotations

from typing import Any

from conv_pipeline.cli.common import (
    exit_after,
    plan_or_summary,
    report_errors,
    run_entry_point,
)
from conv_pipeline.fs import printable


def _main(cfg: Any) -> None:
    with report_errors(cfg):
        plan = plan_or_summary(cfg, "file")
        if plan is None:
            return
        from conv_pipeline.engines.single import run

        result = run(plan)
        print(f"wrote {printable(result.output)} shape {result.shape} (weights: {printable(result.weights)})")
        if cfg.plot:
            from conv_pipeline.inspect.plot import plot_features

            drawn = plot_features(result.output, result.output.with_suffix(".png"), audio_path=cfg.input)
            print(f"wrote {printable(drawn.path)}")


ABOUT = ("One audio file through a Conv1d feature stack: the features go to OUTPUT.DIR/<stem>.npy (or .npz), "
         "with model.safetensors, config.yaml and a manifest.jsonl record. summary=true prints the model's "
         "per-layer summary (frames, receptive field, hop, FLOPs) without processing audio.")


def main() -> None:
    """The command, in this process (tests call it; it returns or raises ``SystemExit``)."""
    run_entry_point(_main, prog="conv_pipeline", config_name="config", kind="file",
                    usage="python -m conv_pipeline input=AUDIO [KEY=VALUE ...]  (or: conv-pipeline ...)", about=ABOUT)


def console() -> None:
    """``conv-pipeline`` and ``python -m conv_pipeline``: ``main`` as a program (``exit_after``)."""
    exit_after(main, prog="conv_pipeline")
