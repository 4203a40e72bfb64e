"""The README as a user meets it: its quick start run verbatim, and its reference complete.

The quick-start block is read from README.md itself and run line by line, as real processes, in
an empty folder holding a generated ``song.wav`` (``python`` replaced by this interpreter): every
line exits 0, every ``-> PATH`` its comment promises exists afterwards, each run that reads
``song.wav`` writes a new feature file, and every folder of features holds one model (its
weights' metadata names the model the folder is named for).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.paths import ROOT

from conv_pipeline.config.compose import config_keys

README = ROOT / "README.md"
FEATURES = ("*.npy", "*.npz")


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def quick_start_commands() -> list[str]:
    """The lines of the first code block under "## Quick start", continuation lines joined."""
    section = _section(README.read_text(encoding="utf-8"), "Quick start")
    block = section.split("```", 2)[1]
    commands, pending = [], ""
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append((pending + line).strip())
        pending = ""
    assert not pending, "the quick start ends inside a continued line"
    return commands


def _features(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for pattern in FEATURES for p in folder.rglob(pattern)}


def _sweep_size(argv: list[str]) -> int:
    """Jobs of a Hydra multirun: the longest comma-separated value among the overrides."""
    return max((len(a.split("=", 1)[1].split(",")) for a in argv if "=" in a), default=1)


def _run_line(line: str, cwd: Path) -> None:
    argv = shlex.split(line, comments=True)
    assert argv and argv[0] == "python", f"a quick-start line that is not a python command: {line}"
    before = _features(cwd)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=str(cwd), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    promised = re.search(r"->\s*(\S+)", line.split("#", 1)[1]) if "#" in line else None
    if promised and "<" not in promised.group(1):
        assert (cwd / promised.group(1)).is_file(), f"{line}: no {promised.group(1)}"
    args = argv[3:] if argv[1] == "-m" else argv[2:]  # after `python -m MODULE` (or the script)
    if any(a.startswith("input=") for a in args) and "--help" not in args:
        new = _features(cwd) - before
        want = _sweep_size(args) if {"-m", "--multirun"} & set(args) else 1
        assert len(new) == want, f"{line}: wrote {sorted(map(str, new))}, expected {want} new feature file(s)"


def _check_one_model_per_folder(cwd: Path) -> int:
    """Every folder holding features holds one model: one record per input in its manifest, and
    (under ``feats/``) weights whose metadata names the folder's model."""
    from safetensors import safe_open

    folders = {(cwd / f).parent for f in _features(cwd)}
    for folder in folders:
        records = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line]
        assert [r["status"] for r in records] == ["ok"], (folder, records)
        with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
            model = json.loads(f.metadata()["model"])
        if folder.parent == cwd / "feats":
            assert folder.name == re.sub(r"[^A-Za-z0-9+._-]", "_", model["name"]), (folder, model["name"])
    return len(folders)


def _song(path: Path, channels: int) -> None:
    """3 s at 44.1 kHz: a tone with vibrato plus a little noise, ``channels`` channels."""
    sr = 44100
    t = np.arange(3 * sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * (220 * t + 3 * np.sin(2 * np.pi * 5 * t)))
    noise = 0.02 * np.random.default_rng(0).standard_normal((t.size, channels))
    sf.write(str(path), (tone[:, None] + noise).astype(np.float32), sr)


@pytest.mark.slow
@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
def test_quick_start_runs_verbatim(tmp_path, channels):
    commands = quick_start_commands()
    assert len(commands) >= 4
    _song(tmp_path / "song.wav", channels)
    for line in commands:
        _run_line(line, tmp_path)
    runs = sum(1 for c in commands if "input=song.wav" in c)
    assert _check_one_model_per_folder(tmp_path) >= runs  # no two runs shared a folder


def test_quick_start_is_read_from_the_readme():
    commands = quick_start_commands()
    assert commands[0].startswith("python -m conv_pipeline input=song.wav")
    assert any("'model.layers=[" in c for c in commands)  # the continued line was joined
    assert all(not c.endswith("\\") for c in commands)


def test_no_table_is_split_by_a_blank_line():
    lines = README.read_text(encoding="utf-8").splitlines()
    split = [i + 1 for i in range(2, len(lines)) if lines[i].startswith("|") and not lines[i - 1].strip()
             and lines[i - 2].startswith("|")]
    assert not split, f"README.md: a blank line splits a table before line(s) {split}"


def _documented(key: str, text: str) -> bool:
    """``key`` is in the README: by its name, or (front-end and layer keys) in its table or row."""
    if f"`{key}`" in text or f"`{key}=" in text:
        return True
    leaf = key.rsplit(".", 1)[-1]
    if key.startswith("model.frontend."):
        return any(line.startswith("| ") and f"`{leaf}`" in line for line in _section(text, "Pretrained speech encoders and filterbanks").splitlines())
    if key.startswith("model.layers.N."):
        row = next(line for line in text.splitlines() if line.startswith("| `model.layers` |"))
        return f"{leaf}" in row
    if key == "engine.name":
        return "| `engine` |" in text
    return False


@pytest.mark.parametrize("config_name", ["config", "batch"])
def test_every_config_key_is_in_the_readme(config_name):
    text = README.read_text(encoding="utf-8")
    keys = config_keys(config_name)
    leaves = [k for k in keys if not any(other.startswith(k + ".") for other in keys)]  # a section is its keys
    missing = [k for k in leaves if not _documented(k, text)]
    assert not missing, f"README.md does not describe {missing}"
