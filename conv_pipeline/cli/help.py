"""``--help`` / ``-h`` of both commands: what the command does, its presets, its flags and the
config it would run with (the overrides on the command line applied), from one composition.

Hydra's own ``--help`` walks every config group, Hydra's included, copying the whole config
repository for each (about 60 deep copies: most of a second). This one composes once, lists the
presets from the packaged config files and prints the composed config as YAML, so it costs
Hydra's import and one composition, and no torch. ``--hydra-help`` still shows Hydra's options.
"""

from __future__ import annotations

from importlib import resources
from typing import Sequence

HELP_FLAGS = ("--help", "-h")

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


def help_text(usage: str, about: str, overrides: Sequence[str], config_name: str) -> str:
    """The help of the command whose root config is ``config_name``: ``usage``, ``about`` (a
    paragraph), the presets, the flags and the config composed with ``overrides`` (the help
    flags left out). A composition error is a ``ConfigError`` (one line, exit status 2)."""
    from omegaconf import OmegaConf

    from conv_pipeline.config.compose import compose_config, plain_config

    cfg = compose_config([o for o in overrides if o not in HELP_FLAGS], config_name)
    import textwrap

    lines = [f"usage: {usage}", "", textwrap.fill(" ".join(about.split()), width=100), "", "Presets (GROUP=NAME):"]
    lines += [f"  {group}: {', '.join(names)}" for group, names in preset_groups(config_name).items()]
    lines += ["", "Flags:"]
    width = max(len(flag) for flag, _ in FLAGS)
    lines += [f"  {flag.ljust(width)}  {what}" for flag, what in FLAGS]
    lines += ["", "Config (override any key: KEY=VALUE, KEY.SUB=VALUE; shown with this command line's overrides):", ""]
    lines.append(OmegaConf.to_yaml(plain_config(cfg)).rstrip())
    return "\n".join(lines)
