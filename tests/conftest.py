"""Shared test helpers: make audio files, run the CLI in a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def make_audio(path: Path, channels: int = 2, frames: int = 4000, sr: int = 16000, seed: int = 0, **kw) -> np.ndarray:
    """Write deterministic noise-plus-tone audio; return what soundfile reads back, as (channels, frames)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sr
    data = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.2 * rng.standard_normal((frames, channels))
    data = np.clip(data, -0.99, 0.99).astype(np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, **kw)
    back, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return back.T.copy()


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


def assert_one_line_error(proc, *needles: str) -> str:
    """Non-zero exit, no traceback, one non-empty line on stderr containing every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def audio_file(tmp_path):
    return make_audio


def reference_features(out_dir: Path, waveform: np.ndarray) -> np.ndarray:
    """Recompute features independently: F.conv1d layer by layer with the weights in
    ``out_dir/model.safetensors`` and the layer specs in ``out_dir/config.yaml``.

    ``waveform``: ``(channels, frames)`` as the stack sees it (after channel policy/resampling).
    """
    import torch
    import torch.nn.functional as F
    import yaml
    from safetensors.torch import load_file

    cfg = yaml.safe_load((Path(out_dir) / "config.yaml").read_text())
    state = load_file(str(Path(out_dir) / "model.safetensors"))
    x = torch.from_numpy(np.asarray(waveform, np.float32))[None]  # (1, C, T)
    for i, spec in enumerate(cfg["model"]["layers"]):
        w, b = state[f"layers.{i}.conv.weight"], state.get(f"layers.{i}.conv.bias")
        x = F.conv1d(x, w, b, spec["stride"], spec["padding"], spec["dilation"], spec["groups"])
        if spec["norm"] == "layer_norm":
            x = F.layer_norm(
                x.transpose(1, 2), (x.shape[1],), state[f"layers.{i}.norm.norm.weight"], state[f"layers.{i}.norm.norm.bias"]
            ).transpose(1, 2)
        act = spec["activation"]
        if act is not None:
            x = getattr(F, act)(x) if act not in ("tanh", "sigmoid") else getattr(torch, act)(x)
    return x[0].numpy()


# ---------------------------------------------------------------- reliability figures (issue 7)
RELIABILITY_MODULES = ("test_reliability.py", "test_faults.py", "test_security.py", "test_fuzz.py")


class Figures:
    """What the reliability suite tried, printed at the end of ``make test`` (``terminal_summary``).

    ``tried(kind, n)`` counts attempts: ``bad input`` (one input through one entry point and
    mode), ``fault`` (one injected fault: a kill, a full disk, an unwritable folder, ...),
    ``fuzz`` (one generated example) and ``attack`` (one security probe). ``outcome(kind, ok,
    what)`` records the attempt and, when it ended in anything but a clear error or a correct
    output, what happened (the test then fails). ``expecting_defect(what)``: inside it, bad
    outcomes are the known defect ``what`` of a file this suite does not own (its test is
    ``xfail(strict=True)`` until the owner fixes it), listed apart.
    """

    KINDS = ("bad input", "fault", "fuzz", "attack")

    def __init__(self) -> None:
        self.counts = {k: 0 for k in self.KINDS}
        self.bad: list[str] = []
        self.known_defects: dict[str, int] = {}
        self.failed_tests: list[str] = []
        self._expecting: Optional[str] = None

    def tried(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n

    def outcome(self, kind: str, ok: bool, what: str, count: bool = True) -> bool:
        """``count=False``: one more check of an attempt already counted (each record after one kill)."""
        if count:
            self.tried(kind)
        if not ok:
            if self._expecting is not None:
                self.known_defects[self._expecting] = self.known_defects.get(self._expecting, 0) + 1
            else:
                self.bad.append(f"{kind}: {what}")
        return ok

    @contextlib.contextmanager
    def expecting_defect(self, what: Optional[str]):
        """Bad outcomes inside are the known defect ``what`` (an ``xfail(strict=True)`` test), not news."""
        self._expecting = what
        try:
            yield
        finally:
            self._expecting = None

    def lines(self) -> list[str]:
        c = self.counts
        out = [
            f"bad inputs tried: {c['bad input']}; faults injected: {c['fault']}; fuzz examples run: {c['fuzz']}; "
            f"security probes: {c['attack']}",
            f"ended in anything but a clear error or a correct output: {len(self.bad)} (target 0); "
            f"failed reliability tests: {len(self.failed_tests)}",
        ]
        out += [f"  {b}" for b in self.bad[:20]]
        out += [f"  failed test: {t}" for t in self.failed_tests[:20]]
        if self.known_defects:
            n = sum(self.known_defects.values())
            out.append(f"known defects in files owned elsewhere, proven by xfail(strict) tests: "
                       f"{len(self.known_defects)} ({n} outcome(s))")
            out += [f"  {k}" for k in self.known_defects]
        return out


FIGURES = Figures()


@pytest.fixture
def figures() -> Figures:
    return FIGURES


def pytest_runtest_logreport(report):
    if report.failed and any(m in report.nodeid for m in RELIABILITY_MODULES):
        FIGURES.failed_tests.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not any(FIGURES.counts.values()) and not FIGURES.failed_tests:
        return
    terminalreporter.section("reliability figures (issue 7)")
    for line in FIGURES.lines():
        terminalreporter.write_line(line)
