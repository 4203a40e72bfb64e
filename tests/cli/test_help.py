"""``--help`` / ``-h`` of both commands (``cli/help.py``): the presets found in the config folder,
the flags, and the config composed with the command line's overrides; ``--hydra-help`` stays
Hydra's. Run in this process (``cli_inprocess``); ``tests/packaging/test_imports.py`` runs them
as real processes and checks that they import no torch."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from conv_pipeline.config.schema import BatchConfig, Config
from helpers.paths import ROOT
from helpers.run import cli_inprocess

BATCH = "conv_pipeline.cli.batch"


def _presets(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml")))


def _config_part(out: str) -> dict:
    """The YAML the help ends with, parsed."""
    head, _, tail = out.partition("\nConfig (")
    assert tail, out
    return yaml.safe_load(tail.split("\n", 1)[1])


@pytest.mark.slow
def test_help_shows_the_presets_and_the_config_with_the_overrides(capfd):
    r = cli_inprocess(["--help", "model=mel", "runtime.batch_size=3", "input=song.wav"], capfd)
    assert r.code == 0 and r.err == "", r.err
    assert r.out.startswith("usage: python -m conv_pipeline input=AUDIO")
    assert f"  model: {_presets('model')}\n" in r.out and "engine:" not in r.out.split("\nConfig (")[0]
    cfg = _config_part(r.out)
    assert set(cfg) == {f.name for f in fields(Config)}
    assert cfg["input"] == "song.wav" and cfg["runtime"]["batch_size"] == 3
    assert cfg["model"]["name"] == "mel" and cfg["model"]["frontend"]["type"] == "mel"
    assert cfg["output"]["format"] == "npy"  # enums as their values
    assert cli_inprocess(["-h", "model=mel", "runtime.batch_size=3", "input=song.wav"], capfd).out == r.out


def test_batch_help_shows_the_batch_keys_and_engines(capfd):
    r = cli_inprocess(["--help", "engine=ray"], capfd, main=BATCH)
    assert r.code == 0, r.err
    assert f"  engine: {_presets('engine')}\n" in r.out and f"  model: {_presets('model')}\n" in r.out
    cfg = _config_part(r.out)
    assert set(cfg) == {f.name for f in fields(BatchConfig)}
    assert cfg["engine"]["name"] == "ray" and cfg["batch"]["workers"] == "thread"


def test_help_with_a_bad_override_is_one_line(capfd):
    r = cli_inprocess(["--help", "model=mell"], capfd)
    assert r.code == 2 and r.out == "" and r.err_lines == [
        "conv_pipeline: error: model=mell: no such model preset (did you mean mel?); choose one of "
        f"{_presets('model')}"]
    r = cli_inprocess(["--help", "hydra.callbacks.x._target_=os.system"], capfd)
    assert r.code == 2 and len(r.err_lines) == 1 and "refused" in r.err_lines[0]


@pytest.mark.slow
def test_hydra_help_is_still_hydras(capfd):
    r = cli_inprocess(["--hydra-help"], capfd)
    assert r.code == 0 and "Hydra (" in r.out and "--multirun" in r.out
