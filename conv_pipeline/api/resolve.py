"""The Python API's config: a preset, a run's ``config.yaml`` or a composed config, plus keyword
overrides, as one typed ``Config`` (which ``config/plan.py: build_plan`` then resolves).

Flow: **api** (an entry point, like ``cli/``) -> plan -> load -> stack -> execute. What the
source may be (``resolve_config``):

* a preset name (``"mel"``, ``configs/model/``): composed as ``python -m conv_pipeline model=NAME``
  composes it (``config/compose.py: compose_hydra_run``), interpolations kept until the overrides
  are in, so ``audio.sample_rate`` moves a preset's front-end rate as on the command line;
* a path to a YAML config (the ``config.yaml`` a run wrote into its output folder), or that
  folder: the run's settings, checked against the schema;
* a ``Config`` / ``BatchConfig`` (``compose_config``, ``to_config``), an OmegaConf ``DictConfig``
  or a plain mapping of the same keys (copied: the caller's object is never changed).

Overrides are ``{dotted key: value}`` (Python values, not strings): ``"model.frontend.n_mels": 64``
or ``"audio": {"channels": "mono"}`` (a mapping is merged into the section, as a group of dotted
keys). Each is type-checked against the schema; an unknown key or a wrong type is one
``ConfigError`` line, with a did-you-mean for an unknown key. Torch-free.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conv_pipeline.config.compose import (
    RECORD_KEYS,
    compose_hydra_run,
    config_keys,
    key_hint,
    omegaconf_message,
    to_config,
)
from conv_pipeline.config.schema import BatchConfig, Config
from conv_pipeline.errors import ConfigError
from conv_pipeline.sink.names import CONFIG_NAME

YAML_SUFFIXES = (".yaml", ".yml")


def is_path(source: Any) -> bool:
    """Whether ``source`` names a config file or folder rather than a preset: a path object, or a
    string with a folder separator or a YAML suffix (a bare word is a preset name)."""
    if isinstance(source, os.PathLike):
        return True
    return isinstance(source, str) and ("/" in source or os.sep in source or source.endswith(YAML_SUFFIXES))


def _typed(cfg: Any, where: str) -> Any:
    """``cfg`` (a ``DictConfig``) checked against the root schema (``BatchConfig`` when it has
    ``batch`` keys), its ``hydra`` node dropped; a copy."""
    from omegaconf import DictConfig, OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{where}: a config is a mapping of keys (model, audio, runtime, ...), got {type(cfg).__name__}")
    cfg = copy.deepcopy(cfg)
    if "hydra" in cfg:
        with open_dict(cfg):
            del cfg["hydra"]
    typed = OmegaConf.get_type(cfg)
    if isinstance(typed, type) and issubclass(typed, Config):
        return cfg
    schema = BatchConfig if "batch" in cfg else Config
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_override_message(err, schema)}") from None


def _from_file(source: Any) -> Any:
    """The typed config of a YAML file, or of ``config.yaml`` inside a folder."""
    from omegaconf import OmegaConf

    path = Path(source)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{str(source)!r}: no such config file; give a preset name (like 'mel'), a config.yaml a run wrote, "
            "or the output folder holding it"
        )
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - YAML and OmegaConf errors alike: one line
        raise ConfigError(f"{path}: not a readable YAML config ({' '.join(str(err).split())[:200]})") from None
    from omegaconf import DictConfig, open_dict

    if isinstance(loaded, DictConfig):
        with open_dict(loaded):
            for key in RECORD_KEYS:  # what the file records about its run (versions), not settings
                loaded.pop(key, None)
    return _typed(loaded, str(path))


def _from_preset(name: str) -> Any:
    """The config ``python -m conv_pipeline model=NAME`` composes, interpolations unresolved."""
    return _typed(compose_hydra_run("config", None, [f"model={name}"]), f"model={name}")


def base_config(source: Any) -> Any:
    """``source`` as a typed OmegaConf ``DictConfig`` (a copy); see the module docstring."""
    from omegaconf import DictConfig, OmegaConf

    if is_path(source):
        return _from_file(source)
    if isinstance(source, str):
        return _from_preset(source)
    if isinstance(source, Config):
        return OmegaConf.structured(source)  # a copy: the plan fills in derived values
    if isinstance(source, (DictConfig, Mapping)):
        return _typed(OmegaConf.create(source) if not isinstance(source, DictConfig) else source, "config")
    raise ConfigError(
        f"a config is a preset name (like 'mel'), a path to a config.yaml or a composed config, "
        f"got {type(source).__name__}"
    )


def _override_message(err: Exception, schema: type = Config) -> str:
    """One line for an OmegaConf error from an override: did-you-mean for an unknown key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = str(getattr(err, "full_key", "") or "")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        general = re.sub(r"\.\d+\.", ".N.", key)
        hint = key_hint(general, config_keys("batch" if schema is BatchConfig else "config"))
        return f"unknown config key {key!r}{hint}"
    return omegaconf_message(err)


def _plain(value: Any) -> Any:
    """A Python value as OmegaConf takes it: tuples as lists, paths as strings."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> None:
    """Set each ``{dotted key: value}`` in the typed ``cfg``, in order; a mapping value is merged
    into the section it names (or becomes it, when the section is null, like ``model.frontend``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.get_type(cfg)
    for key, value in overrides.items():
        value = _plain(value)
        merge = isinstance(value, dict) and OmegaConf.select(cfg, key, default=None) is not None
        try:
            OmegaConf.update(cfg, key, value, merge=merge)
        except OmegaConfBaseException as err:
            raise ConfigError(_override_message(err, schema)) from None


def resolve_config(source: Any, overrides: Mapping[str, Any]) -> Config:
    """The typed ``Config`` of ``source`` with ``overrides`` applied (not yet checked by the plan)."""
    from omegaconf.errors import OmegaConfBaseException

    cfg = base_config(source)
    apply_overrides(cfg, overrides)
    try:
        return to_config(cfg)
    except OmegaConfBaseException as err:  # an interpolation an override broke
        raise ConfigError(omegaconf_message(err)) from None
