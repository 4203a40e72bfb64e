"""Where a run writes when ``output.dir`` is not given: ``feats/<model name>``, one folder per
model, so a second model never meets the first one's weights (``config/plan.py``)."""

from __future__ import annotations

import pytest

from conv_pipeline.config.plan import build_plan, default_output_dir
from conv_pipeline.config.schema import BatchConfig, Config, LayerConfig, ModelConfig, OutputConfig

LAYERS = [LayerConfig(out_channels=2, kernel_size=3)]


def _cfg(name: str, schema: type = Config, out: str | None = None) -> Config:
    return schema(input="song.wav", model=ModelConfig(name=name, in_channels=1, layers=list(LAYERS)),
                  output=OutputConfig(dir=out))


@pytest.mark.parametrize("kind, schema", [("file", Config), ("batch", BatchConfig)])
def test_one_folder_per_model(kind, schema):
    assert build_plan(_cfg("mel", schema), kind).output_dir == "feats/mel"
    assert build_plan(_cfg("default+custom", schema), kind).output_dir == "feats/default+custom"
    assert build_plan(_cfg("mel", schema, out="D"), kind).output_dir == "D"  # output.dir wins
    assert build_plan(_cfg("mel", schema), kind, output_dir="multirun/x/0").output_dir == "multirun/x/0"


@pytest.mark.parametrize("name, folder", [("a/../b", "feats/a_.._b"), ("..", "feats/model"), ("", "feats/model"),
                                          ("x y", "feats/x_y"), ("wav2vec2_base", "feats/wav2vec2_base")])
def test_a_model_name_is_one_safe_folder_name(name, folder):
    assert default_output_dir(name) == folder
