"""Checking the command line before Hydra reads it: the overrides Hydra could not parse (with
the fix: a missing bracket named, or the quoted form), values that would start a sweep outside a
multirun, and any override that would make Hydra import code or write outside ``output.dir``.

Part of the command-line edge (``cli/``): ``common.py: run_entry_point`` calls
``check_command_line`` first, before anything is composed, imported or written.
"""

from __future__ import annotations

from typing import Any, Sequence

from conv_pipeline.errors import ConfigError

# Hydra keys whose values make Hydra import or instantiate code: callbacks (``_target_``), the
# logging configs (``logging.config.dictConfig``: ``class``, ``()``, ``ext://``), the config
# search path (config files from anywhere), launcher and sweeper plugins. None of them may be
# set from the command line; ``_target_`` is refused under any key.
CODE_KEYS = ("hydra.callbacks", "hydra.job_logging", "hydra.hydra_logging", "hydra.searchpath",
             "hydra.launcher", "hydra.sweeper")


# Hydra's override parser takes milliseconds per list item: longer values are refused before it runs.
MAX_OVERRIDE_CHARS, MAX_OVERRIDE_ITEMS = 64 * 1024, 1024
# Hydra keys that make Hydra write files of its own next to the run (outside output.dir), create
# a run folder or change the working folder (``hydra.job.chdir=false`` is allowed: it is the value).
WRITE_KEYS = ("hydra.output_subdir", "hydra.run", "hydra.job.chdir", "hydra.runtime")

# Logging configs a command line may choose (``hydra/job_logging=NAME``): the ones that write no
# file (Hydra's ``default`` job logging writes <job>.log into the working folder, its
# ``hydra_debug`` a log file too).
LOG_CHOICES = {"hydra/job_logging": ("console", "disabled", "none", "stdout"),
               "hydra/hydra_logging": ("default", "disabled", "none")}


def parsed_command_line(argv: Sequence[str]) -> tuple[Any, list[str]]:
    """Hydra's reading of ``argv``: its flags (``args.multirun``, ``args.config_dir``, ...) and the
    overrides (``KEY=VALUE`` words)."""
    from hydra._internal.utils import get_args_parser

    args, unknown = get_args_parser().parse_known_args(list(argv))
    return args, list(args.overrides or []) + [u for u in unknown if not u.startswith("-")]


def _quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra string (``'`` escaped as ``\\'``)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_command_line(argv: Sequence[str]) -> None:
    """Check the command line's overrides before Hydra composes (or instantiates) anything.

    Raises ``ConfigError`` (one line) for an override Hydra cannot parse (a path with spaces,
    quotes or non-ASCII characters must be quoted: the message gives the quoted form), a value
    with a comma outside a multirun (Hydra would read a list of values), any override that
    would make Hydra import or instantiate code (``_target_`` anywhere, ``CODE_KEYS``) and any
    that would make Hydra write files outside ``output.dir`` (``WRITE_KEYS``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, overrides = parsed_command_line(argv)
    parser = OverridesParser.create()
    for text in overrides:
        key, eq, value = text.partition("=")
        if len(text) > MAX_OVERRIDE_CHARS or text.count(",") >= MAX_OVERRIDE_ITEMS:
            raise ConfigError(
                f"the override {key}=... is too long ({len(text)} characters, {text.count(',') + 1} items; "
                f"at most {MAX_OVERRIDE_CHARS} characters and {MAX_OVERRIDE_ITEMS} items); put such a value in a config file"
            )
        try:
            override = parser.parse_overrides([text])[0]
        except HydraException:
            fix = ""
            brackets = unbalanced(value) if value[:1] in "[{" else ""  # a list or a mapping
            if brackets:
                raise ConfigError(f"cannot parse the override {text!r}: {brackets}") from None
            if eq and key and not any(c in key for c in " '\"") and value[:1] not in "[{":
                quoted = f"{key}={_quoted(value)}"
                try:
                    if parser.parse_overrides([quoted])[0].value() == value:
                        fix = f"; quote the value for Hydra: {quoted}"
                        if not any(c in quoted for c in '"$`\\!'):
                            fix += f' (in a shell: "{quoted}")'
                except HydraException:
                    pass
            raise ConfigError(
                f"cannot parse the override {text!r} (Hydra's override grammar){fix or '; see hydra.cc override grammar'}"
            ) from None
        name = override.key_or_group.replace("/", ".")
        if "_target_" in name.split(".") or any(name == k or name.startswith(k + ".") for k in CODE_KEYS):
            if "/" not in override.key_or_group:  # a config group choice (hydra/job_logging=...) is a file, allowed
                raise ConfigError(
                    f"{text!r}: refused: _target_ and Hydra's callback, logging, search-path and plugin keys "
                    "name code to import; nothing named on the command line is ever imported or instantiated"
                )
        if any(name == k or name.startswith(k + ".") for k in WRITE_KEYS) and not (
                name == "hydra.job.chdir" and override.value() is False):
            raise ConfigError(
                f"{text!r}: refused: Hydra would write its own files or folders outside output.dir or change the "
                "working folder; every output goes to output.dir (the resolved config to output.dir/config.yaml)"
            )
        check_log_choice(text, override)
        if override.is_sweep_override() and not args.multirun and eq:
            raise ConfigError(
                f"{text!r}: Hydra reads the comma as several values (a sweep); quote the value if it is one: "
                f"{key}={_quoted(value)}, or add -m to run one job per value"
            )


CLOSING = {"[": "]", "{": "}", "(": ")"}


def unbalanced(value: str) -> str:
    """What is wrong with the brackets of an override's value outside quotes (``""``: nothing)."""
    opened: list[str] = []
    quote = ""
    for c in value:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in CLOSING:
            opened.append(c)
        elif c in CLOSING.values():
            if not opened:
                return f"{c!r} closes nothing (a missing {next(o for o, e in CLOSING.items() if e == c)!r} before it?)"
            if CLOSING[opened[-1]] != c:
                return f"{c!r} where {CLOSING[opened[-1]]!r} was expected (a {opened[-1]!r} is not closed)"
            opened.pop()
    if opened and not quote:  # an unclosed quote (it's.wav) is for quoting, below
        missing = "".join(CLOSING[o] for o in reversed(opened))
        return f"{missing!r} missing at the end ({len(opened)} bracket(s) opened and not closed)"
    return ""


def check_log_choice(text: str, override: Any) -> None:
    """``hydra/job_logging=NAME`` (or ``hydra/hydra_logging``): only configs that write no log file,
    named (a deletion or a ``glob`` sweep is refused: Hydra would fail or pick unknown files)."""
    from hydra.errors import HydraException

    allowed = LOG_CHOICES.get(override.key_or_group)
    if allowed is None:
        return
    try:
        if override.is_delete():
            values = [""]
        elif override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
    except HydraException:
        values = [""]
    for value in values:
        if value not in allowed:
            what = f"{override.key_or_group}={value} would write a log file outside output.dir" if value else \
                f"{override.key_or_group} must be named"
            raise ConfigError(
                f"{text!r}: refused: {what}; choose one of {', '.join(allowed)} (log lines on the terminal, no file)"
            )
