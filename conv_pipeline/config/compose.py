"""Composing configs: Hydra's compose API outside any Hydra app, and the typed ``Config``.

The command-line modules (``conv_pipeline/cli``) and the Python API compose here; every
composition error becomes one ``ConfigError`` line (exit status 2) with a did-you-mean for an
unknown key or preset, instead of Hydra's multi-line report. ``to_config`` turns a composed
config into the dataclasses of ``config/schema.py`` (a required key left out is one line too).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Optional, Sequence

from conv_pipeline.config.schema import Config
from conv_pipeline.errors import ConfigError


def written_config(cfg: Config) -> dict[str, Any]:
    """The resolved config written to ``config.yaml`` and ``.npz`` files: what the features were
    computed with. ``engine`` and ``storage`` (where the job ran; credentials may be among
    ``storage.options`` and ``engine.env_vars``) are left out, so both engines write the same."""
    config = plain_config(cfg)
    config.pop("engine", None)
    config.pop("storage", None)
    return config


def to_config(cfg: Any) -> Config:
    """A typed ``Config`` from a Hydra/OmegaConf config (or a ``Config``, returned as is)."""
    if isinstance(cfg, Config):
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(omegaconf_message(err)) from None
    if not isinstance(obj, Config):  # composed without the schema
        obj = Config(**{k: v for k, v in obj.items() if k in {f.name for f in dataclasses.fields(Config)}})
    settle_layers(obj.model)
    return obj


# ---------------------------------------------------------------- layers added or replaced
CUSTOM = "custom"  # the name of a model whose preset's layers were replaced or changed


def preset_layers(name: str) -> Optional[list[Any]]:
    """The layers of the packaged model preset ``name`` (``configs/model/NAME.yaml``) as
    ``LayerConfig``s, or None when ``name`` is no preset."""
    from importlib import resources

    import yaml

    from conv_pipeline.config.schema import LayerConfig

    if not re.fullmatch(r"\w+", name or ""):
        return None
    path = resources.files("conv_pipeline.configs") / "model" / f"{name}.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [LayerConfig(**layer) for layer in (data.get("model") or {}).get("layers") or []]


def settle_layers(model: Any) -> None:
    """Move ``model.append_layers`` to the end of ``model.layers`` and name the model for what it
    is: a preset whose layers were only added to is ``<preset>+custom``; one whose layers were
    replaced or changed is ``custom``; a preset's own layers keep its name, and so does any name
    that is no preset (a name given with ``model.name=...``, a rerun's ``default+custom``)."""
    model.layers = [*model.layers, *model.append_layers]
    model.append_layers = []
    preset = preset_layers(model.name)
    if preset is None or model.layers == preset:
        return
    added = len(model.layers) > len(preset) and model.layers[:len(preset)] == preset
    model.name = f"{model.name}+{CUSTOM}" if added else CUSTOM


APPEND = re.compile(r"\+model\.layers=(.*)", re.S)


def append_overrides(overrides: Sequence[str]) -> list[str]:
    """``+model.layers=[{...}, ...]`` (or ``+model.layers={...}``, one layer) appends layers after
    the preset's: rewritten to ``model.append_layers=[...]`` (several such overrides become one
    list, in order, where the first stood). Other overrides are returned as they are."""
    values = [m.group(1).strip() for m in map(APPEND.fullmatch, overrides) if m]
    if not values:
        return list(overrides)
    items = [v[1:-1].strip() if v.startswith("[") and v.endswith("]") else v for v in values]
    merged = "model.append_layers=" + (values[0] if len(values) == 1 and values[0].startswith("[")
                                        else "[" + ",".join(i for i in items if i) + "]")
    out: list[str] = []
    for text in overrides:
        if not APPEND.fullmatch(text):
            out.append(text)
        elif merged:
            out.append(merged)
            merged = ""
    return out


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> Config:
    """Compose the packaged configs with Hydra-style overrides, outside any Hydra app."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from conv_pipeline.config.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conv_pipeline.configs", version_base=None):
            cfg = compose(config_name=config_name, overrides=append_overrides(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(composition_message(err, config_name)) from None
    except (AttributeError, AssertionError) as err:  # OmegaConf's own failure to set keys under a null node
        raise ConfigError(
            f"cannot apply the overrides ({_first_line(str(err))}): keys under a node that is null in this config "
            "cannot be set, e.g. model.frontend of a model without a front-end; start from a preset that has it "
            "(model=mel, model=stft, model=sinc) and override its keys"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    from omegaconf import OmegaConf

    typed = OmegaConf.get_type(cfg)
    if isinstance(typed, type) and issubclass(typed, Config):  # typed by base_config / base_batch_config
        return to_config(cfg)  # (merging it into the schema again would cost a fifth of the composition)
    cfg_dict = {k: v for k, v in cfg.items() if k != "hydra"}
    from conv_pipeline.config.schema import BatchConfig

    schema = BatchConfig if "batch" in cfg_dict else Config  # config_name="batch": the batch job's keys
    return to_config(OmegaConf.merge(OmegaConf.structured(schema), cfg_dict))


def compose_hydra_run(config_name: str, config_dir: Optional[str], overrides: Sequence[str]) -> Any:
    """The config Hydra composes for a run of ``config_name`` with ``--config-dir config_dir``
    (``None``: the packaged configs only) and ``overrides``, its ``hydra`` node included, without
    running anything. Every composition error is one ``ConfigError`` line."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from conv_pipeline.config.schema import register_configs

    register_configs()
    search_path = create_automatic_config_search_path(None, None, "pkg://conv_pipeline.configs")
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise ConfigError(f"--config-dir {config_dir!r}: no such folder")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="conv_pipeline", config_search_path=search_path)
        return hydra.compose_config(config_name=config_name, overrides=append_overrides(overrides), run_mode=RunMode.RUN,
                                    with_log_configuration=False)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(composition_message(err, config_name)) from None
    finally:
        GlobalHydra.instance().clear()


# A run's own config file (the ``config.yaml`` it wrote, or a renamed copy: no ``defaults`` list),
# picked with ``--config-dir``/``--config-name``, is composed as the command's root config (its
# schema, presets and Hydra settings) with the file's keys on top, stored in Hydra's ConfigStore
# under these names (a file named like a packaged root config would otherwise be shadowed by it).
RUN_CONFIG_NAMES = {"config": "conv_pipeline_run_config", "batch": "conv_pipeline_run_batch"}
# Top-level keys a written config records about the run (not settings): left out when it is rerun.
RECORD_KEYS = ("versions",)


def root_config_name(config_name: str) -> str:
    """The packaged root config (``config`` or ``batch``) behind ``config_name``."""
    return next((root for root, name in RUN_CONFIG_NAMES.items() if name == config_name), config_name)


def register_run_config(data: dict[str, Any], root: str) -> str:
    """Store a run's written config (plain data, no ``defaults``) as a root config: ``root``
    (``config`` or ``batch``) first, then the file's keys (``_self_``), less what records the run
    rather than sets it (``RECORD_KEYS``, the folder it wrote to: ``output.dir``) and, for one
    file, the batch job's own keys. Returns its name."""
    from hydra.core.config_store import ConfigStore

    from conv_pipeline.config.schema import BatchConfig

    skip = set(RECORD_KEYS)
    if root == "config":  # a batch job's config rerun on one file: its batch-only keys make no features
        skip |= {f.name for f in dataclasses.fields(BatchConfig)} - {f.name for f in dataclasses.fields(Config)}
    node = {key: value for key, value in data.items() if key not in skip}
    if isinstance(node.get("output"), dict):  # where that run wrote is no setting of this one (feats/<model>, a job's folder)
        node["output"] = {key: value for key, value in node["output"].items() if key != "dir"}
    name = RUN_CONFIG_NAMES[root]
    ConfigStore.instance().store(name=name, node={"defaults": [root, "_self_"], **node})
    return name


def plain_config(cfg: Config) -> dict[str, Any]:
    """The config as JSON-able plain data (enums as their values)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if hasattr(v, "value") and not isinstance(v, (int, float, str)):
            return v.value
        return v

    return conv(cfg)


# ---------------------------------------------------------------- one-line composition errors
def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def omegaconf_message(err: Exception) -> str:
    """One line for an OmegaConf error: the key, what is wrong, and the fix where there is one."""
    from omegaconf.errors import MissingMandatoryValue

    key = getattr(err, "full_key", None) or ""
    if isinstance(err, MissingMandatoryValue) and key:
        if key.startswith("model.layers["):
            return f"{key} is required: every layer in model.layers needs out_channels and kernel_size"
        return f"{key} is required: give it a value ({key}=...)"
    detail = _first_line(getattr(err, "msg", None) or str(err))
    return f"{key}: {detail}" if key and key not in detail else detail


def config_keys(config_name: str = "config") -> list[str]:
    """Every dotted key of the root schema (``config`` or ``batch``): what a key may be."""
    from dataclasses import fields, is_dataclass

    from conv_pipeline.config.schema import BatchConfig, LayerConfig

    out: list[str] = []

    def walk(cls: Any, prefix: str) -> None:
        for f in fields(cls):
            key = prefix + f.name
            out.append(key)
            sub = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            if is_dataclass(sub):
                walk(type(sub), key + ".")
            elif f.name == "frontend":
                from conv_pipeline.config.schema import FrontendConfig

                walk(FrontendConfig, key + ".")
            elif f.name == "layers":
                walk(LayerConfig, key + ".N.")

    walk(BatchConfig if root_config_name(config_name) == "batch" else Config, "")
    return out


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def key_hint(key: str, keys: Sequence[str]) -> str:
    """A did-you-mean for an unknown dotted key, matched on its last part: a sibling first (the
    same parent), else a key elsewhere whose last part is close (sharing most of the path)."""
    import difflib

    parent, _, leaf = key.rpartition(".")
    for pool in ([k for k in keys if k.rpartition(".")[0] == parent], list(keys)):
        leaves = sorted({k.rpartition(".")[2] for k in pool})
        close = difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.6)
        if close:
            matches = [k for k in pool if k.rpartition(".")[2] == close[0]]
            best = max(matches, key=lambda k: len(os.path.commonprefix([k, key])))
            return f" (did you mean {best}?)"
    return ""


def composition_message(err: Exception, config_name: str = "config") -> str:
    """One line for a Hydra composition error, with a did-you-mean for unknown keys and presets."""
    text = str(err)
    m = re.search(r"Could not find '(\w+)/([^']*)'", text)
    if m:
        group, name = m.groups()
        options = re.findall(r"^\t(\S+)$", text, re.M)
        return (f"{group}={name}: no such {group} preset{did_you_mean(name, options)}; "
                f"choose one of {', '.join(options)}")
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '[^']+' not in '\w+'\s+full_key: (\S+)", text)
    if m:
        key = m.group(1)
        index = re.search(r"\.(\d+)\.", key)
        general = re.sub(r"\.\d+\.", ".N.", key)  # model.layers.0.kernal_size -> model.layers.N.kernal_size
        keys = config_keys(config_name)
        if general in keys:
            return f"{key}: {_first_line(err.__cause__ or text)}"
        hint = key_hint(general, keys)
        if index:
            hint = hint.replace(".N.", f".{index.group(1)}.")
        scope = "the batch job's" if root_config_name(config_name) == "batch" else "this command's"
        where = " in the config file" if "Could not override" not in text else ""
        return f"unknown config key {key!r}{where}{hint}; --help lists {scope} keys"
    cause = err.__cause__
    if cause is not None and cause is not err:
        m = re.search(r"override (\S+)", text)
        where = f"{m.group(1)}: " if m else ""
        beyond = re.match(r"\+*(model\.(?:append_)?layers\.(\d+))", m.group(1) if m else "")
        if beyond and (isinstance(cause, IndexError) or "is not a subclass of LayerConfig" in str(cause)):
            return (f"{beyond.group(1)}: model.layers has no layer {beyond.group(2)} (numbered from 0); to add layers "
                    "after the model's, use '+model.layers=[{out_channels: 32, kernel_size: 3}]' (quoted in a shell)")
        return where + _first_line(getattr(cause, "msg", None) or str(cause))
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, OmegaConfBaseException):
        return omegaconf_message(err)
    return _first_line(text)
