"""Running the tool: the CLI and the batch script as real processes, the single-file pipeline in
this one, and what a clear error looks like."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import ROOT, SCRIPT


def run_cli(*args: str, cwd: Path | None = None, module: str = "conv_pipeline", env: dict | None = None):
    """``python -m conv_pipeline ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=str(cwd or ROOT),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python scripts/batch_process.py ARGS`` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def run_pipeline(audio: Path, out_dir: Path, *overrides: str):
    """The single-file pipeline in this process (what ``python -m conv_pipeline`` runs); its result."""
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.engines.single import run

    return run(compose_config([f"input={audio}", f"output.dir={out_dir}", *overrides]))


@dataclass
class CliRun:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


SCRIPT_MODULES = {"batch_process.py": "conv_pipeline.cli.batch"}  # a script -> the module whose main() it runs


def cli_inprocess(argv: list[str], capfd, main: str = "conv_pipeline.cli.main") -> CliRun:
    """Run a Hydra entry point's ``main()`` in this process with ``argv``, as the command line
    would (exit status, and everything written to file descriptors 1 and 2, C libraries
    included), without the 3 s a new interpreter costs. Logging is restored afterwards."""
    import importlib
    import logging
    import sys

    from hydra.core.global_hydra import GlobalHydra

    # a script (scripts/batch_process.py) runs as its module's main(): the script itself ends the
    # process with os._exit (cli.common.exit_after), which would end pytest too
    argv0 = main if "/" in main else "prog"
    module = importlib.import_module(SCRIPT_MODULES.get(os.path.basename(main), main))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    GlobalHydra.instance().clear()
    capfd.readouterr()
    old_argv = sys.argv
    sys.argv = [argv0, *argv]
    try:
        module.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()
        root.handlers[:] = saved[0]  # Hydra's job_logging replaced them
        root.setLevel(saved[1])
    out, err = capfd.readouterr()
    return CliRun(code, out, err)


def cli_completed(argv: list[str], capfd) -> subprocess.CompletedProcess:
    """``cli_inprocess`` of ``python -m conv_pipeline ARGV``, as the ``CompletedProcess`` that
    ``run_cli`` would return (for checks written against a real process)."""
    r = cli_inprocess(list(argv), capfd)
    return subprocess.CompletedProcess(["conv_pipeline", *argv], r.code, r.out, r.err)


def assert_one_line_error(proc, *needles: str) -> str:
    """Non-zero exit, no traceback, one non-empty line on stderr containing every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
