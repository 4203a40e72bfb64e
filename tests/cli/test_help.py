"""``--help`` / ``-h`` of both commands (``cli/help.py``): the presets found in the config folder,
the flags, and every key with its value as composed with the command line's overrides and its
description (every leaf of Hydra's own composition is listed); ``--hydra-help`` stays
Hydra's. Run in this process (``cli_inprocess``); ``tests/packaging/test_imports.py`` runs them
as real processes and checks that they import no torch."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from helpers.paths import ROOT
from helpers.run import cli_inprocess

from conv_pipeline.config.schema import BatchConfig, Config

BATCH = "conv_pipeline.cli.batch"


def _presets(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml")))


KEY_LINE = re.compile(r"^  ([\w.]+)=(.*?)  +(\S.*)$")


def _keys_part(out: str) -> dict[str, tuple[str, str]]:
    """``{KEY: (VALUE, description)}`` from the keys' list the help ends with."""
    head, _, tail = out.partition("\nKeys (")
    assert tail, out
    found = {}
    for line in tail.splitlines()[1:]:
        m = KEY_LINE.match(line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def _composed_keys(config_name: str, overrides: list[str]) -> set[str]:
    """Every dotted leaf key of the config Hydra composes (its own API, not the help's code):
    list items as ``N``, a null section's keys left out."""
    from omegaconf import OmegaConf

    from conv_pipeline.config.compose import compose_hydra_run

    cfg = OmegaConf.to_container(compose_hydra_run(config_name, None, overrides), resolve=False)
    cfg.pop("hydra", None)
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                keys.add(prefix + k)
                for item in v:
                    walk(item, f"{prefix}{k}.N.")
            else:
                keys.add(prefix + k)

    walk(cfg, "")
    return keys


@pytest.mark.slow
def test_help_shows_the_presets_and_every_key_with_the_overrides(capfd):
    r = cli_inprocess(["--help", "model=mel", "audio.normalize=true", "input=song.wav"], capfd)
    assert r.code == 0 and r.err == "", r.err
    assert r.out.startswith("usage: python -m conv_pipeline input=AUDIO")
    head = r.out.split("\nKeys (")[0]
    assert f"  model: {_presets('model')}\n" in head and "engine" not in head
    keys = _keys_part(r.out)
    assert {k.split(".")[0] for k in keys} == {f.name for f in fields(Config)}
    assert keys["input"][0] == "song.wav" and keys["audio.normalize"][0] == "true"
    assert keys["model.name"][0] == "mel" and keys["model.frontend.type"][0] == "mel"
    assert keys["model.frontend.n_mels"][0] == "80" and keys["output.format"][0] == "npy"  # enums as their values
    # the single-file command lists nothing only the batch job uses
    assert not any(k.startswith(("engine", "batch", "storage")) for k in keys)
    assert "runtime.batch_size" not in keys and "runtime.num_workers" not in keys
    assert cli_inprocess(["-h", "model=mel", "audio.normalize=true", "input=song.wav"], capfd).out == r.out


def test_batch_help_shows_the_batch_keys_and_engines(capfd):
    r = cli_inprocess(["--help", "engine=ray"], capfd, main=BATCH)
    assert r.code == 0, r.err
    assert f"  engine: {_presets('engine')}\n" in r.out and f"  model: {_presets('model')}\n" in r.out
    keys = _keys_part(r.out)
    assert {k.split(".")[0] for k in keys} == {f.name for f in fields(BatchConfig)}
    assert keys["engine.name"][0] == "ray" and keys["batch.workers"][0] == "thread"
    assert keys["runtime.batch_size"][0] == "null" and "the model's own" in keys["runtime.batch_size"][1]


@pytest.mark.slow
@pytest.mark.parametrize("config_name,preset", [("config", "default"), ("config", "mel"), ("config", "sinc"),
                                                ("config", "wav2vec2_base"), ("batch", "stft")])
def test_every_composed_key_is_in_help_with_a_description(config_name, preset, capfd):
    """Each leaf key of the composed config (Hydra's composition, walked here) has a line
    ``KEY=VALUE  description`` in that command's --help, except the two keys only the batch job
    uses, which the single-file command leaves out."""
    overrides = [f"model={preset}"]
    r = cli_inprocess(["--help", *overrides], capfd, **({"main": BATCH} if config_name == "batch" else {}))
    assert r.code == 0, r.err
    listed = _keys_part(r.out)
    expected = _composed_keys(config_name, overrides)
    if config_name == "config":
        expected -= {"runtime.batch_size", "runtime.num_workers"}
    missing = sorted(k for k in expected if k not in listed or len(listed[k][1]) < 10)
    assert not missing, missing


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
