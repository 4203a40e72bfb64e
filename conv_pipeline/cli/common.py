"""What every command-line entry point shares: one line per user error, no traceback; the
command line checked (``overrides.py``), a run's own config file taken as the root config,
``--help`` and ``summary=true`` answered before Hydra's app, multirun jobs' overrides recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from conv_pipeline.cli.overrides import check_command_line, parsed_command_line
from conv_pipeline.errors import ConfigError, PipelineError
from conv_pipeline.fs import one_line, printable


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
        if wants_debug(cfg):
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
        if wants_debug(cfg):
            raise
        where = f"{printable(err.filename)}: " if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {where}{err.strerror or one_line(str(err))}; rerun with debug=true for a traceback",
              file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def wants_debug(cfg: Any) -> bool:
    """``debug=true`` in ``cfg``: a composed (Dict)Config, a typed ``Config`` or a plain dict; None: no."""
    if cfg is None:
        return False
    return bool(cfg.get("debug", False) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else getattr(cfg, "debug", False))


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


JOB_OVERRIDES = "overrides.txt"  # in each multirun job's folder: the overrides that made that job


def record_job_overrides() -> None:
    """In a Hydra multirun, write the job's overrides (one per line, as on the command line, the
    swept values resolved) to ``overrides.txt`` in the job's own folder (``<sweep>/<num>``), so a
    folder says which run it holds; its ``config.yaml`` (when output.dir is left to the job) holds
    the whole config. Nothing outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    folder = hydra_output_dir()
    if folder is None:
        return
    from conv_pipeline.sink.writer import atomic_write

    text = "".join(f"{o}\n" for o in HydraConfig.get().overrides.task)
    atomic_write(Path(folder) / JOB_OVERRIDES, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def plan_or_summary(cfg: Any, kind: str) -> Any:
    """What both commands do first inside ``report_errors``: with ``summary=true`` print the model
    summary and return None; else record a multirun job's overrides and return the plan
    (``build_plan(cfg, kind)``: config errors are raised here, before torch is imported)."""
    if cfg.summary:
        from conv_pipeline.inspect.summary import summary_for_config

        print(summary_for_config(cfg, kind))
        return None
    record_job_overrides()  # a multirun job's folder says which overrides made it
    from conv_pipeline.config.plan import build_plan

    return build_plan(cfg, kind, hydra_output_dir())


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


CONFIG_FILE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn")


def without_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``argv`` without ``flags`` and their values (``--flag VALUE`` or ``--flag=VALUE``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in flags:
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def use_run_config(argv: Sequence[str], config_name: str) -> tuple[list[str], str]:
    """``--config-dir DIR [--config-name NAME]`` naming a run's own config file (``DIR/NAME.yaml``
    as a run wrote it, or a renamed copy: no ``defaults`` list): the file is registered as a root
    config on top of the command's packaged one (``register_run_config``) and the command line
    continues without those flags, so the run is the recorded one (same model, layers, seed,
    audio settings), with the command line's overrides on top. Returns ``(argv, config_name)``,
    unchanged for any other command line. A Hydra config with a ``defaults`` list is Hydra's to
    compose, unless it is named like the packaged root config (which would shadow it: refused)."""
    args, overrides = parsed_command_line(argv)
    if args.config_dir is None:
        return list(argv), config_name
    name = args.config_name or config_name
    path = os.path.join(args.config_dir, name + ".yaml")
    if not os.path.isfile(path):
        return list(argv), config_name
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{printable(path)}: not a readable YAML config ({one_line(str(err))[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{printable(path)}: a config is a mapping of keys (model, audio, output, ...)")
    if "defaults" in data:
        if name == config_name:
            raise ConfigError(
                f"{printable(path)} has a defaults list and the packaged root config has the same name, which Hydra "
                f"would compose instead; rename it (e.g. myrun.yaml) and pass --config-name myrun"
            )
        return list(argv), config_name
    choice = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "model"), None)
    if choice is not None and "model" in data:
        raise ConfigError(
            f"{choice!r}: {printable(path)} fixes the model (its model section); drop {choice} to rerun that "
            "model, or drop --config-dir/--config-name to run a preset"
        )
    from conv_pipeline.config.compose import register_run_config

    return without_flags(argv, CONFIG_FILE_FLAGS), register_run_config(data, config_name)


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


def touches_hydra(arg: str) -> bool:
    """A command-line override of Hydra's own settings (``hydra.verbose=true``,
    ``hydra/job_logging=...``): such a run goes through Hydra's app, which applies them."""
    return arg.lstrip("+~").startswith(("hydra.", "hydra/"))


def run_directly(task: Any, cfg: Any) -> None:
    """A plain run (the packaged configs, no multirun, no Hydra setting overridden): ``task(cfg)``
    on the config the pre-check composed, with the log format Hydra's app would set
    (``configs/hydra/job_logging/console.yaml``: what both commands' configs select). Hydra's app
    would compose the same config a second time and write nothing (``hydra.run.dir: .``, no
    ``.hydra`` folder, no chdir): 0.18 s of a 3 s run here (issue 13)."""
    import logging.config
    from importlib import resources

    import yaml

    text = resources.files("conv_pipeline.configs").joinpath("hydra", "job_logging", "console.yaml").read_text("utf-8")
    logging.config.dictConfig(yaml.safe_load(text))
    task(cfg)


def run_entry_point(task: Any, prog: str, config_name: str = "config", kind: str = "file",
                    usage: str = "", about: str = "") -> None:
    """What every Hydra entry point does before Hydra runs: a strict stdout prints names that are
    not UTF-8 as their bytes (as ls does) instead of failing after outputs were written; the
    schemas are registered; ``--version`` is answered; the command line is checked (one-line
    errors, exit 2; nothing instantiated from it); ``--help`` is answered (``usage``, ``about``);
    the config is composed (one-line errors, exit 2).

    With the composed config (when there is one, see ``precheck_composition``) ``answer_early``
    prints ``summary=true`` (Hydra's app does not start) or raises the plan's ``ConfigError`` for a
    run of ``kind`` (``file`` or ``batch``). Then ``task(cfg)`` runs: directly on that config for
    a plain run (``run_directly``), else under Hydra's app (a multirun, ``--config-dir``, a
    ``hydra.*`` override; ``@hydra.main`` is applied here, so that ``--version`` imports no Hydra)."""
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
        argv, config_name = use_run_config(argv, config_name)
        from conv_pipeline.config.compose import append_overrides

        argv = append_overrides(argv)  # +model.layers=[...] appends layers
        sys.argv[1:] = argv  # what Hydra's app reads
        if packaged_help(argv, usage or prog, about, config_name):
            return
        cfg = precheck_composition(argv, config_name)
    if cfg is not None:
        with report_errors({"debug": cfg.debug}, prog=prog):
            if answer_early(cfg, kind):
                return
        if not any(touches_hydra(a) for a in argv):
            run_directly(task, cfg)
            return
    if any(a.split("=")[0] in INFO_FLAGS for a in argv) and hasattr(signal, "SIGPIPE"):
        # Hydra prints (--cfg, --info, --hydra-help) and reports a closed pipe with a traceback:
        # these only print, so a closed pipe ends the process quietly, as it does `cat`
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
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

    Python's cyclic collector is off until the work starts (the engines turn it on, with what is
    alive then frozen: ``engines/memory.py: frozen_heap``): importing torch creates about a million
    objects and no garbage cycles, and the collections it triggered walked them for 0.25 s of its
    1.8 s here (issue 13).
    """
    import gc
    import logging

    gc.disable()
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
