"""What every command-line entry point shares: one line per user error, no traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator, Optional, Sequence

from conv_pipeline.errors import ConfigError, PipelineError
from conv_pipeline.fs import one_line, printable

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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (as Python raises ``KeyboardInterrupt`` for SIGINT) so
    that the job ends the same way: finished outputs kept, one line, exit status 143."""


SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def signal_line(prog: str, signum: int) -> str:
    """The one line a signal ends a command with."""
    return f"{prog}: interrupted (SIGINT)" if signum == signal.SIGINT else f"{prog}: terminated (SIGTERM)"


def handle_signals(prog: str) -> None:
    """SIGINT raises ``KeyboardInterrupt`` and SIGTERM ``Terminated`` in the main thread: the
    job stops, its writer finishes and records what is finished, ``report_errors`` prints one
    line (exit status 130 / 143). A second signal while that happens ends the process at once
    (every output is written atomically: nothing partial is left under a final name)."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if seen:
            with contextlib.suppress(OSError, ValueError):
                print(signal_line(prog, seen[0]), file=sys.stderr, flush=True)
            os._exit(SIGNAL_EXIT[seen[0]])
        seen.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    for signum in SIGNAL_EXIT:
        signal.signal(signum, handler)


@contextlib.contextmanager
def report_errors(cfg: Any = None, prog: str = "conv_pipeline", resume: str = "") -> Iterator[None]:
    """Turn a ``PipelineError`` into ``prog: error: <one line>`` on stderr and exit status 2, and
    Ctrl-C / SIGTERM into one line (plus ``resume``, what a re-run does) and exit status 130 / 143.

    With ``debug=true`` in the config the traceback is shown instead.
    """
    try:
        yield
    except PipelineError as err:
        if cfg is not None and bool(cfg.get("debug", False)):
            raise
        print(f"{prog}: error: {printable(str(err))}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except (KeyboardInterrupt, Terminated) as err:
        signum = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
        print(signal_line(prog, signum) + (f"; {resume}" if resume else ""), file=sys.stderr, flush=True)
        raise SystemExit(SIGNAL_EXIT[signum]) from None
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        quiet_stdout()
        raise SystemExit(0) from None
    except OSError as err:  # a backstop: a file-system error no stage turned into its own line
        if cfg is not None and bool(cfg.get("debug", False)):
            raise
        where = f"{printable(err.filename)}: " if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {where}{err.strerror or one_line(str(err))}; rerun with debug=true for a traceback",
              file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def quiet_stdout() -> None:
    """Point stdout at /dev/null (the reader of a pipe left: flushing must not fail again)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def hydra_output_dir() -> Optional[str]:
    """The job's own folder in a Hydra multirun, else None (single runs use output.dir or feats/)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return hc.runtime.output_dir
    return None


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

    from conv_pipeline.errors import ConfigError

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
            if eq and key and not any(c in key for c in " '\""):
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


def check_log_choice(text: str, override: Any) -> None:
    """``hydra/job_logging=NAME`` (or ``hydra/hydra_logging``): only configs that write no log file,
    named (a deletion or a ``glob`` sweep is refused: Hydra would fail or pick unknown files)."""
    from hydra.errors import HydraException

    from conv_pipeline.errors import ConfigError

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


# Hydra's own flags that print something and run no job (checked by Hydra itself).
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
              "--resolve", "--package", "-p")


def precheck_composition(argv: Sequence[str], config_name: str) -> Optional[Any]:
    """Compose the config the way Hydra will, before Hydra runs, so that an unknown key, a
    missing preset, a wrong type or a required key left out is one ``ConfigError`` line (exit
    status 2, a did-you-mean) instead of Hydra's report and exit status 1. A config file picked
    with ``--config-dir``/``--config-name`` is composed with its ``hydra`` settings, which must
    not make Hydra write outside ``output.dir`` or change the working folder
    (``check_hydra_settings``). Multiruns and ``--config-path`` runs are left to Hydra.

    Returns the typed config (``Config`` / ``BatchConfig``) when the packaged configs were
    composed (no ``--config-dir``/``--config-name``), else None: ``run_entry_point`` answers
    ``summary=true`` and checks the plan from it without composing again."""
    args, overrides = parsed_command_line(argv)
    if args.multirun or args.config_path is not None or any(a.split("=")[0] in INFO_FLAGS for a in argv):
        return None
    if args.config_dir is None and args.config_name is None:
        from conv_pipeline.config.compose import compose_config

        return compose_config(overrides, config_name)
    from conv_pipeline.config.compose import compose_hydra_run

    check_hydra_settings(compose_hydra_run(args.config_name or config_name, args.config_dir, overrides))
    return None


def check_hydra_settings(cfg: Any) -> None:
    """``ConfigError`` when a composed config's ``hydra`` node would make Hydra write outside
    ``output.dir`` (a run folder, its own ``.hydra`` files, a log file), change the working folder
    or run callbacks: what the command line may not set may not come from a config file either."""
    hc = cfg.hydra
    problems = []
    if str(hc.run.dir) not in (".", "./"):
        problems.append(f"hydra.run.dir={hc.run.dir}")
    if hc.job.chdir:
        problems.append("hydra.job.chdir=true")
    if hc.output_subdir is not None:
        problems.append(f"hydra.output_subdir={hc.output_subdir}")
    if hc.callbacks:
        problems.append("hydra.callbacks")
    for name in ("job_logging", "hydra_logging"):
        handlers = (hc.get(name) or {}).get("handlers") or {}
        if any("filename" in (h or {}) for h in handlers.values()):
            problems.append(f"a hydra/{name} that writes a log file")
    if problems:
        raise ConfigError(
            f"the config file sets {', '.join(problems)}: Hydra would write outside output.dir or change the "
            "working folder; remove those keys (the run writes only to output.dir)"
        )


def packaged_help(argv: Sequence[str], usage: str, about: str, config_name: str) -> bool:
    """Print this command's ``--help`` (``cli/help.py``) and return True when ``argv`` asks for it
    with the packaged configs; False otherwise (``--hydra-help``, ``--config-dir`` and the like
    are Hydra's to answer)."""
    from conv_pipeline.cli.help import help_text, wants_help

    if not wants_help(argv):
        return False
    args, overrides = parsed_command_line(argv)
    if args.config_dir is not None or args.config_name is not None or args.config_path is not None:
        return False
    print(help_text(usage, about, overrides, config_name), flush=True)
    return True


def answer_early(cfg: Any, kind: str) -> bool:
    """What needs no Hydra app, from the config the pre-check composed: ``summary=true`` printed
    (True: the command is done), else the plan's ``ConfigError`` raised before Hydra composes
    again (False: the run goes on and builds its plan under Hydra, with a multirun job's folder)."""
    if cfg.summary:
        from conv_pipeline.inspect.summary import summary_for_config

        print(summary_for_config(cfg, kind), flush=True)
        return True
    from conv_pipeline.config.plan import build_plan

    build_plan(cfg, kind)
    return False


def run_entry_point(task: Any, prog: str, config_name: str = "config", kind: str = "file",
                    usage: str = "", about: str = "") -> None:
    """What every Hydra entry point does before Hydra runs: a strict stdout prints names that are
    not UTF-8 as their bytes (as ls does) instead of failing after outputs were written; the
    schemas are registered; ``--version`` is answered; the command line is checked (one-line
    errors, exit 2; nothing instantiated from it); ``--help`` is answered (``usage``, ``about``);
    the config is composed (one-line errors, exit 2).

    With the composed config (when there is one, see ``precheck_composition``) ``answer_early``
    prints ``summary=true`` (Hydra's app does not start) or raises the plan's ``ConfigError`` for a
    run of ``kind`` (``file`` or ``batch``). Then Hydra's app runs ``task(cfg)`` (``@hydra.main``
    is applied here, so that ``--version`` imports no Hydra)."""
    from conv_pipeline.config.schema import register_configs

    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    argv = sys.argv[1:]
    if "--version" in argv:  # ours, not Hydra's: the versions that make the features
        from conv_pipeline.version import version_line

        print(version_line(), flush=True)
        raise SystemExit(0)
    register_configs()
    with report_errors(prog=prog):
        check_command_line(argv)  # before Hydra parses or instantiates anything
        if packaged_help(argv, usage or prog, about, config_name):
            return
        cfg = precheck_composition(argv, config_name)
    if cfg is not None:
        with report_errors({"debug": cfg.debug}, prog=prog):
            if answer_early(cfg, kind):
                return
    import hydra

    hydra.main(version_base=None, config_path="pkg://conv_pipeline.configs", config_name=config_name)(task)()


def observed() -> bool:
    """True when a tracer or profiler watches this process (``coverage run``, ``python -m
    cProfile``, a debugger): they write their data at the interpreter's normal exit."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: coverage's sys.monitoring core
    return monitoring is not None and any(monitoring.get_tool(i) for i in range(6))


def exit_after(main: Any, prog: str = "conv_pipeline") -> None:
    """Run ``main()`` as a program and end the process without the interpreter's teardown.

    SIGINT and SIGTERM end it with one line and exit status 130 / 143 (``handle_signals``), also
    when they come before or after ``report_errors`` is in place (Hydra's start, the summary).

    Every output is already fsynced and renamed into place when ``main`` returns; the teardown
    only unloads libraries, and with torch's CUDA builds it pages in ~125 MB of library code on
    the way out (measured: peak RSS of a 2-hour chunked run 571 MB while it runs, 693 MB at exit).
    Streams and logging are flushed first. Every console script and ``python -m`` entry point
    ends this way; when a tracer or profiler is attached (``observed``) the normal exit is kept
    so that it writes its data.
    """
    import logging

    handle_signals(prog)
    try:
        main()
        code: Any = 0
    except SystemExit as exit_:
        code = exit_.code
    except (KeyboardInterrupt, Terminated) as err:
        signum = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
        with contextlib.suppress(OSError, ValueError):
            print(signal_line(prog, signum), file=sys.stderr, flush=True)
        code = SIGNAL_EXIT[signum]
    except BrokenPipeError:  # `--help | head`: the reader left; say nothing more
        quiet_stdout()
        code = 0
    if observed():
        raise SystemExit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message") prints the message
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)
