"""What a run keeps in ``output.dir`` beside the features: the model's weights, the resolved config,
and (batch jobs) the lock that lets one job at a time write there.

Flow: source -> load -> stack -> execute -> **sink** -> engines. Before any feature is written,
the single-file run (``engines.single``) and the batch job (``engines.job``) call
``prepare_output_dir``: ``model.safetensors`` (``WEIGHTS_NAME``) and ``config.yaml``
(``CONFIG_NAME``) are written atomically, and a folder that holds another model's weights
(``check_weights``) or features computed with other audio settings (``check_same_audio``) is
refused unless ``overwrite=true``, so every feature file in a folder matches its weights and
audio settings whichever command wrote it (one rule: ``check_output_dir``). The run's own files
there (weights, config, manifest) that are not regular files (a FIFO would block the run forever)
are refused before anything opens them (``check_regular_files``). These
work on a local folder; for a remote ``output.dir`` the batch job runs them on a staged copy
(``sink.outputs.OutputDir.metadata``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from conv_pipeline.config.plan import DEFAULT_OUTPUT_DIR  # noqa: F401 - named here for the sink's callers
from conv_pipeline.errors import OutputError
from conv_pipeline.sink.names import CONFIG_NAME, WEIGHTS_NAME
from conv_pipeline.sink.writer import check_regular_files, guard_folder, write_text
from conv_pipeline.stack.checkpoint import same_weights, save_weights
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.version import VERSIONS_KEY, versions


class OutputLock:
    """One batch job per ``output.dir`` at a time (an advisory ``flock`` on the folder; the
    kernel releases it when the process dies, even by SIGKILL).

    The lock holds on the folder, not its name: while it is held, every write of this process
    under ``out_dir`` first checks that the folder there is still the locked one
    (``writer.guard_folder``), so a job whose folder is removed (and perhaps created again, and
    locked, by another job) stops with one line instead of writing into someone else's folder."""

    def __init__(self, out_dir: Path) -> None:
        self.fd: Optional[int] = None
        self.path = Path(out_dir)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fd = os.open(out_dir, os.O_RDONLY)
        except OSError as err:
            raise OutputError(
                f"cannot open output.dir={str(out_dir)!r} ({err.strerror or err}); check its permissions "
                "or choose another output.dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"output.dir={str(out_dir)!r} is in use by another batch job; wait for it to finish "
                "or choose another output.dir"
            ) from None
        locked = os.fstat(fd)
        identity = (locked.st_dev, locked.st_ino)
        if _identity(out_dir) != identity:  # replaced between the open and the lock
            os.close(fd)
            raise OutputError(f"output.dir={str(out_dir)!r} was removed or replaced while the job started; run it again")
        self.fd = fd
        guard_folder(self.path, identity)

    def release(self) -> None:
        if self.fd is not None:
            guard_folder(self.path, None)
            os.close(self.fd)
            self.fd = None


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def make_output_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` (and its parents); True when it did not exist. ``OutputError`` when it
    is a file or cannot be created."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output.dir={str(out_dir)!r} is an existing file, not a folder; choose another output.dir")
    existed = out_dir.is_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output.dir={str(out_dir)!r}: {err.strerror or err}") from None
    return not existed


def check_same_audio(out_dir: Path, config: dict[str, Any], overwrite: bool) -> None:
    """Refuse to add features computed with other audio settings to an existing job's folder."""
    path = Path(out_dir) / CONFIG_NAME
    check_regular_files(out_dir, (CONFIG_NAME,))
    if overwrite or not path.exists():
        return
    from omegaconf import OmegaConf

    try:
        old = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # noqa: BLE001 - an unreadable config.yaml is rewritten below
        return
    if not isinstance(old, dict) or not isinstance(old.get("audio"), dict):
        return
    diffs = [
        f"audio.{key}={old['audio'][key]!r} (now {value!r})"
        for key, value in config["audio"].items()
        if key in old["audio"] and old["audio"][key] != value
    ]
    if diffs:
        raise OutputError(
            f"output.dir={str(out_dir)!r} holds features computed with {', '.join(diffs)}; "
            "use another output.dir or overwrite=true"
        )


def check_weights(weights: Path, stack: ConvStack, overwrite: bool) -> None:
    """Refuse to mix models in one folder unless ``overwrite``."""
    weights = Path(weights)
    check_regular_files(weights.parent, (weights.name,))
    if weights.exists() and not overwrite and not same_weights(stack, weights):
        raise OutputError(
            f"{weights} holds a different model's weights; its features would no longer match them. "
            "Use another output.dir or overwrite=true"
        )


def check_output_dir(out_dir: Path, stack: ConvStack, overwrite: bool, config: Optional[dict] = None) -> None:
    """The rule every run into ``out_dir`` keeps (the single-file run and the batch job alike),
    before it writes anything there: its own files are regular files (``check_regular_files``),
    and unless ``overwrite`` the folder's features were computed with the same audio settings
    (``check_same_audio``, when ``config`` is given) and the same weights (``check_weights``)."""
    check_regular_files(out_dir)
    if config is not None:
        check_same_audio(Path(out_dir), config, overwrite)
    check_weights(Path(out_dir) / WEIGHTS_NAME, stack, overwrite)


def prepare_output_dir(out_dir: Path, stack: ConvStack, overwrite: bool, config: Optional[dict] = None) -> Path:
    """Create ``out_dir``; check it (``check_output_dir``: refusing to mix models or audio
    settings unless ``overwrite``); write the weights and the resolved config there, the config
    with a ``versions`` mapping (``conv_pipeline.version.versions``: this run's package versions)
    after its settings. Returns the weights' path."""
    make_output_dir(out_dir)
    weights = out_dir / WEIGHTS_NAME
    check_output_dir(out_dir, stack, overwrite, config)
    if not weights.exists() or not same_weights(stack, weights):
        save_weights(stack, weights)
    if config is not None:
        from omegaconf import OmegaConf

        written = {**config, VERSIONS_KEY: versions()}  # what computed the features, beside how
        write_text(out_dir / CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(written)))
    return weights
