"""Config composition (Hydra compose API) and validation before any audio is read."""

import pytest

from conv_pipeline.config.schema import Config, LayerConfig, ModelConfig, OutputFormat
from conv_pipeline.config.checks import validate_model
from conv_pipeline.errors import ConfigError
from conv_pipeline.config.compose import compose_config


def test_presets_compose():
    cfg = compose_config([])
    assert isinstance(cfg, Config)
    assert cfg.model.name == "default" and cfg.audio.sample_rate == 16000
    geo = validate_model(cfg.model)
    assert (geo.hop, geo.receptive_field) == (160, 1040)
    tut = compose_config(["model=tutorial", "output.format=npz"])
    assert tut.model.in_channels == 2 and tut.audio.sample_rate is None
    assert [(l.out_channels, l.kernel_size, l.stride) for l in tut.model.layers] == [(3, 5, 1)]
    assert tut.output.format is OutputFormat.npz


def test_layer_list_override_is_typed():
    cfg = compose_config(
        ["model.in_channels=1", "audio.channels=mono",
         "model.layers=[{out_channels:16,kernel_size:400,stride:160},{out_channels:32,kernel_size:3,padding:1,activation:relu}]"]
    )
    assert all(isinstance(l, LayerConfig) for l in cfg.model.layers)
    assert cfg.model.layers[1].padding == 1 and cfg.model.layers[1].dilation == 1
    assert cfg.audio.channels == "mono"


@pytest.mark.parametrize(
    "override, line",
    [
        ("model.kernel=3", "unknown config key 'model.kernel' (did you mean model.frontend.kernel_size?)"),
        ("model.layers.0.kernal_size=3", "unknown config key 'model.layers.0.kernal_size' (did you mean model.layers.0.kernel_size?)"),
        ("output.format=wav", "output.format=wav: Invalid value 'wav', expected one of [npy, npz, parquet, kaldi, lhotse]"),
        ("seed=abc", "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        ("runtime.device=tpu", "runtime.device=tpu: Invalid value 'tpu', expected one of [cpu, cuda, auto]"),
    ],
)
def test_typos_and_wrong_types_fail_in_composition(override, line):
    """Hydra's composition errors become one ConfigError line (exit status 2 on the command line)."""
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def layers(**kw):
    return ModelConfig(in_channels=2, layers=[LayerConfig(out_channels=4, kernel_size=3, **kw)])


@pytest.mark.parametrize(
    "model, needle",
    [
        (ModelConfig(layers=[LayerConfig(out_channels=4, kernel_size=0)]),
         r"model.layers\[0\].kernel_size must be an integer >= 1, got 0"),
        (layers(stride=0), r"model.layers\[0\].stride must be an integer >= 1"),
        (layers(dilation=0), r"model.layers\[0\].dilation must be an integer >= 1"),
        (layers(padding=-1), r"model.layers\[0\].padding must be an integer >= 0"),
        (layers(groups=3), r"groups=3 must divide out_channels=4"),
        (ModelConfig(in_channels=3, layers=[LayerConfig(out_channels=4, kernel_size=3, groups=2)]),
         r"groups=2 must divide its input channels \(model.in_channels=3\)"),
        (ModelConfig(layers=[LayerConfig(out_channels=3, kernel_size=3), LayerConfig(out_channels=4, kernel_size=1, groups=2)]),
         r"model.layers\[1\].groups=2 must divide its input channels \(model.layers\[0\].out_channels=3\)"),
        (layers(activation="swish"), r"activation must be null or one of relu, gelu"),
        (layers(norm="batch"), r"norm must be null or one of layer_norm"),
        (ModelConfig(layers=[]), r"model.layers is empty"),
        (ModelConfig(in_channels=0, layers=[LayerConfig(out_channels=4, kernel_size=3)]), r"model.in_channels must be 'auto' or an integer >= 1"),
    ],
)
def test_invalid_layer_specs(model, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_model(model)
