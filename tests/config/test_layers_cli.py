"""Extending ``model.layers`` from the command line (``+model.layers=[...]`` appends) and the
model's name after its layers were changed, decided when the config is composed
(``config/compose.py: settle_layers``), so the log, plots, inspect and the default output folder agree."""

from __future__ import annotations

import pytest
import yaml
from helpers.paths import ROOT

from conv_pipeline.config.compose import append_overrides, compose_config
from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.errors import ConfigError


def _preset_layers(name: str) -> list[LayerConfig]:
    """The preset's layers read straight from its YAML file."""
    data = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())
    return [LayerConfig(**d) for d in data["model"].get("layers") or []]


def test_plus_model_layers_appends_after_the_presets_layers():
    cfg = compose_config(["+model.layers=[{out_channels: 16, kernel_size: 3, activation: relu}]"])
    default = _preset_layers("default")
    assert cfg.model.layers[:len(default)] == default and len(cfg.model.layers) == len(default) + 1
    assert cfg.model.layers[-1] == LayerConfig(out_channels=16, kernel_size=3, activation="relu")
    assert cfg.model.append_layers == [] and cfg.model.name == "default+custom"


def test_several_appends_keep_their_order_and_a_single_mapping_is_one_layer():
    cfg = compose_config(["model=mel", "+model.layers={out_channels: 8, kernel_size: 1}", "seed=2",
                          "+model.layers=[{out_channels: 4, kernel_size: 3}, {out_channels: 2, kernel_size: 1}]"])
    assert [(l.out_channels, l.kernel_size) for l in cfg.model.layers] == [(8, 1), (4, 3), (2, 1)]
    assert cfg.model.name == "mel+custom" and cfg.seed == 2 and cfg.model.frontend.type == "mel"


def test_the_rewrite_leaves_other_overrides_alone():
    assert append_overrides(["seed=1", "model.layers=[]"]) == ["seed=1", "model.layers=[]"]
    assert append_overrides(["a=1", "+model.layers={x: 1}", "b=2", "+model.layers=[{y: 2}]"]) == [
        "a=1", "model.append_layers=[{x: 1},{y: 2}]", "b=2"]


@pytest.mark.parametrize("overrides,name", [
    ([], "default"),
    (["model=wav2vec2_base"], "wav2vec2_base"),
    (["model=mel", "model.frontend.n_mels=40"], "mel"),  # front-end settings: still the mel preset's stack
    (["model.layers=[{out_channels: 16, kernel_size: 3}]"], "custom"),  # replaced
    (["model.layers.0.out_channels=32"], "custom"),  # changed
    (["model.layers=[{out_channels: 16, kernel_size: 3}]", "model.name=mine"], "mine"),  # named by the user
])
def test_the_model_is_named_for_what_it_is(overrides, name):
    assert compose_config(overrides).model.name == name


def test_a_layer_past_the_end_says_how_to_append():
    for override in ("+model.layers.3={out_channels: 4, kernel_size: 3}", "model.layers.5.out_channels=3"):
        with pytest.raises(ConfigError) as err:
            compose_config([override])
        msg = str(err.value)
        assert "\n" not in msg and "has no layer" in msg and "+model.layers=[{" in msg, msg
