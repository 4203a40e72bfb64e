"""``--help`` / ``-h`` of both commands: what the command does, its presets, its flags and every
key of its config with the value it would run with (the overrides on the command line applied)
and its one-line description (``config/schema.py``, the only place keys are described), from one
composition.

Hydra's own ``--help`` walks every config group, Hydra's included, copying the whole config
repository for each (about 60 deep copies: most of a second). This one composes once, lists the
presets from the packaged config files and lists the keys from the composed config, so it costs
Hydra's import and one composition, and no torch. ``--hydra-help`` still shows Hydra's options.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from importlib import resources
from typing import Any, Sequence

HELP_FLAGS = ("--help", "-h")

KEY_WIDTH = 36  # the KEY=VALUE column of the keys' list

FLAGS = (
    ("--version", "the versions of conv_pipeline and of what computes the features"),
    ("--cfg job", "print the composed config and exit (Hydra)"),
    ("-m KEY=A,B", "multirun: one run per value (Hydra)"),
    ("--config-dir DIR", "also read config files (and presets) from DIR"),
    ("--hydra-help", "Hydra's own options"),
)


def wants_help(argv: Sequence[str]) -> bool:
    """True when the command line asks for this help (``--hydra-help`` is Hydra's)."""
    return any(a in HELP_FLAGS for a in argv)


def preset_groups(config_name: str) -> dict[str, list[str]]:
    """``{group: [preset, ...]}`` for the groups the root config ``config_name`` picks from
    (``model``, and ``engine`` for the batch job), read from the packaged config files."""
    import yaml

    root = resources.files("conv_pipeline.configs")
    defaults = yaml.safe_load((root / f"{config_name}.yaml").read_text(encoding="utf-8")).get("defaults") or []
    groups = [key for entry in defaults if isinstance(entry, dict) for key in entry
              if " " not in key and not key.startswith("hydra")]
    return {g: sorted(p.name[:-5] for p in (root / g).iterdir() if p.name.endswith(".yaml")) for g in groups}


def value_text(value: Any) -> str:
    """A config value as it is written on the command line (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if dataclasses.is_dataclass(value):
        defaults = type(value)()
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in items if v != getattr(defaults, k)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def key_lines(schema: type, cfg: Any, prefix: str = "", batch: bool = True) -> list[tuple[str, str]]:
    """``(KEY=VALUE, description)`` for every key of the dataclass ``schema`` (a section first,
    then its keys), the values taken from ``cfg`` (the composed config; None: the schema's
    defaults). The layers' keys are listed once, as ``model.layers.N.KEY`` with their defaults.
    ``batch=False``: the keys only the batch job uses are left out."""
    from conv_pipeline.config.schema import FrontendConfig, LayerConfig, key_help

    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(schema):
        if f.metadata.get("batch_only") and not batch:
            continue
        name, what = prefix + f.name, key_help(f)
        value = getattr(cfg, f.name) if cfg is not None else (
            f.default_factory() if callable(f.default_factory) else f.default)  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            out.append((f"{name}:", what))
            out += key_lines(type(value), value, name + ".", batch)
        elif f.name == "frontend":
            out.append((f"{name}={value_text(value) if value is None else '(below)'}", what))
            out += key_lines(FrontendConfig, value, name + ".")
        elif f.name in ("layers", "append_layers"):
            out.append((f"{name}={'[]' if not value else f'[{len(value)} layers, below]'}", what))
            out += [(f"  {i}: {value_text(layer)}", "") for i, layer in enumerate(value)]
            if f.name == "layers":
                out += key_lines(LayerConfig, None, name + ".N.")
        else:
            out.append((f"{name}={value_text(value)}", what))
    return out


def help_text(usage: str, about: str, overrides: Sequence[str], config_name: str) -> str:
    """The help of the command whose root config is ``config_name``: ``usage``, ``about`` (a
    paragraph), the presets, the flags and every key with its value as composed with
    ``overrides`` (the help flags left out) and its one-line description (``config/schema.py``).
    A composition error is a ``ConfigError`` (one line, exit status 2)."""
    import textwrap

    from conv_pipeline.config.compose import compose_config, root_config_name

    cfg = compose_config([o for o in overrides if o not in HELP_FLAGS], config_name)
    lines = [f"usage: {usage}", "", textwrap.fill(" ".join(about.split()), width=100), "", "Presets (GROUP=NAME):"]
    lines += [f"  {group}: {', '.join(names)}" for group, names in preset_groups(root_config_name(config_name)).items()]
    lines += ["", "Flags:"]
    width = max(len(flag) for flag, _ in FLAGS)
    lines += [f"  {flag.ljust(width)}  {what}" for flag, what in FLAGS]
    lines += ["", "Keys (KEY=VALUE on the command line; the values this command line gives, "
                  "with the defaults of the presets it picks):"]
    for text, what in key_lines(type(cfg), cfg, batch=root_config_name(config_name) == "batch"):
        if not what:
            lines.append(f"      {text}")
        elif len(text) <= KEY_WIDTH:
            lines.append(f"  {text.ljust(KEY_WIDTH)}  {what}")
        else:
            lines.append(f"  {text}  {what}")
    return "\n".join(lines)
