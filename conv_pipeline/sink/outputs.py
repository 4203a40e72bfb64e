"""Batch processing of whole collections: many files -> features, resumable and failure-isolated.

Plain Python; Hydra stays in ``scripts/batch_process.py``. The job (``run_batch``):

1. checks the config (exit 2 before any audio is read), finds the inputs (a folder searched
   recursively, a glob, a text file with one path per line, or one audio file) and plans one
   output per input, mirroring the input tree under ``output.dir`` (``plan_outputs``);
2. fixes the stack's input channels once for the whole job (``model.in_channels``, the
   checkpoint, or with ``auto`` the first input's count after ``audio.channels``), builds the
   stack and writes ``model.safetensors`` and ``config.yaml`` to ``output.dir`` (refusing a
   different model or different audio settings unless ``overwrite=true``);
3. removes temporary files left by a killed run, records every input whose output already
   exists as ``skipped`` (outputs are written atomically, so existing means complete);
4. decodes and resamples the rest in ``runtime.num_workers`` threads (or worker processes with
   ``batch.workers=process``) while the main thread runs the stack on ``runtime.batch_size``
   files at a time (padded batch of files of similar length, each output trimmed to its own
   length, ``extract_batch``), and one writer thread writes each file's features atomically,
   then appends its manifest record.

Every input gets one record in ``output.dir/manifest.jsonl``. A file that cannot be used
(unreadable, corrupt, empty, too short, wrong channel count, NaN/Inf samples, a crashing
decoder) gets a ``failed`` record with a one-line message and the job goes on.

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``LocalEngine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from conv_pipeline.errors import OutputError, PipelineError
from conv_pipeline.fs import (
    OBJECT_STORES,
    check_rel,
    filesystem,
    fs_protocol,
    is_url,
    join,
    local_path,
    one_line,
    staging,
)
from conv_pipeline.load.remote import renamed_error
from conv_pipeline.sink.writer import TMP_MARKER, write_text
from conv_pipeline.stack.checkpoint import same_weights, save_weights
from conv_pipeline.stack.stack import ConvStack

TEMP_RE = re.compile(r"^\..+" + re.escape(TMP_MARKER) + r"[0-9a-f]{8}$")


def clean_temp_files(out_dir: Path | str, options: Optional[dict] = None) -> int:
    """Remove ``.<name>.tmp-xxxxxxxx`` files (``writer.atomic_write``'s) left under ``out_dir``
    (a folder or URL) by a killed run. Returns how many were removed."""
    return OutputDir(out_dir, options).clean_temp_files(TEMP_RE)


class OutputLock:
    """One batch job per ``output.dir`` at a time (an advisory ``flock`` on the folder; the
    kernel releases it when the process dies, even by SIGKILL)."""

    def __init__(self, out_dir: Path) -> None:
        self.fd: Optional[int] = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(out_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"output.dir={str(out_dir)!r} is in use by another batch job; wait for it to finish "
                "or choose another output.dir"
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_same_audio(out_dir: Path, config: dict[str, Any], overwrite: bool) -> None:
    """Refuse to add features computed with other audio settings to an existing job's folder."""
    path = out_dir / CONFIG_NAME
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


DEFAULT_OUTPUT_DIR = "feats"


WEIGHTS_NAME = "model.safetensors"


CONFIG_NAME = "config.yaml"


def make_output_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` (and its parents); True when it did not exist."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output.dir={str(out_dir)!r} is an existing file, not a folder; choose another output.dir")
    existed = out_dir.is_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output.dir={str(out_dir)!r}: {err.strerror or err}") from None
    return not existed


def check_weights(weights: Path, stack: ConvStack, overwrite: bool) -> None:
    """Refuse to mix models in one folder unless ``overwrite``."""
    if weights.exists() and not overwrite and not same_weights(stack, weights):
        raise OutputError(
            f"{weights} holds a different model's weights; its features would no longer match them. "
            "Use another output.dir or overwrite=true"
        )


def prepare_output_dir(out_dir: Path, stack: ConvStack, overwrite: bool, config: Optional[dict] = None) -> Path:
    """Create ``out_dir``; write the weights and the resolved config there (refusing to mix
    models unless ``overwrite``). Returns the weights' path."""
    make_output_dir(out_dir)
    weights = out_dir / WEIGHTS_NAME
    check_weights(weights, stack, overwrite)
    if not weights.exists() or not same_weights(stack, weights):
        save_weights(stack, weights)
    if config is not None:
        from omegaconf import OmegaConf

        write_text(out_dir / CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(config)))
    return weights


class OutputDir:
    """``output.dir``: a local folder or a remote prefix. Picklable (the filesystem object is
    rebuilt from ``spec`` and ``options`` in each process)."""

    def __init__(self, spec: object, options: Optional[Mapping[str, Any]] = None) -> None:
        spec = str(spec)
        self.remote = is_url(spec)
        self.options = dict(options or {})
        self.spec = spec.rstrip("/") if self.remote and not spec.endswith("://") else spec
        self.path: Optional[Path] = None if self.remote else Path(local_path(spec))
        self._fs: Any = None
        self._root: Optional[str] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_root": None}

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, root = filesystem(self.spec, self.options)
            self._root = root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - opens the filesystem
        assert self._root is not None
        return self._root

    @property
    def display(self) -> str:
        return self.spec if self.remote else str(self.path)

    @property
    def object_store(self) -> bool:
        return fs_protocol(self.fs) in OBJECT_STORES

    def url(self, rel: str) -> str:
        """Where ``rel`` lives, for messages."""
        return join(self.display, check_rel(rel))

    def key(self, rel: str) -> str:
        return f"{self.root}/{check_rel(rel)}"

    def local(self, rel: str) -> Path:
        """``rel``'s local path; refuses a subfolder that is a link leading outside ``output.dir``."""
        assert self.path is not None
        dest = self.path / check_rel(rel)
        root = os.path.realpath(self.path)
        parent = os.path.realpath(dest.parent)
        if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
            raise OutputError(
                f"{dest.parent} leads outside output.dir (to {parent}) through a symbolic link; "
                "remove the link or choose another output.dir"
            )
        return dest

    # -- setup
    def create(self) -> None:
        """Refuse an ``output.dir`` that is a file; create a local one."""
        if not self.remote:
            assert self.path is not None
            if self.path.exists() and not self.path.is_dir():
                raise OutputError(f"output.dir={self.display!r} is an existing file, not a folder; choose another output.dir")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(f"cannot create output.dir={self.display!r}: {err.strerror or err}") from None
            return
        try:
            self.fs.invalidate_cache()
            is_file = self.fs.isfile(self.root)
        except Exception as err:  # noqa: BLE001
            raise OutputError(f"output.dir={self.spec!r}: cannot reach it ({type(err).__name__}: {one_line(err)}); check the URL and storage.options") from None
        if is_file:
            raise OutputError(f"output.dir={self.spec!r} is an existing file, not a folder; choose another output.dir")

    def files(self) -> set[str]:
        """Every file under the folder, as POSIX relative paths (one listing)."""
        if not self.remote:
            assert self.path is not None
            return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        return {p[len(self.root) + 1 :] for p in found if p.startswith(self.root + "/")}

    def is_file(self, rel: str) -> bool:
        if not self.remote:
            return self.local(rel).is_file()
        self.fs.invalidate_cache()
        return bool(self.fs.isfile(self.key(rel)))

    def read_bytes(self, rel: str) -> Optional[bytes]:
        """The file's content, or None when it does not exist."""
        try:
            if not self.remote:
                return self.local(rel).read_bytes()
            return self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None

    def clean_temp_files(self, pattern: re.Pattern) -> int:
        """Remove files whose name matches ``pattern`` (temporaries of a killed run)."""
        removed = 0
        if not self.remote:
            assert self.path is not None
            for dirpath, _dirnames, filenames in os.walk(self.path):
                for name in filenames:
                    if pattern.match(name):
                        try:
                            os.unlink(os.path.join(dirpath, name))
                            removed += 1
                        except FileNotFoundError:
                            pass
            return removed
        for rel in self.files():
            if pattern.match(posixpath.basename(rel)):
                try:
                    self.fs.rm_file(self.key(rel))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    # -- atomic writes
    def commit(self, local_file: os.PathLike | str, rel: str) -> str:
        """Put the complete local file ``local_file`` at ``rel``, atomically (see the module
        docstring). Returns the URL written."""
        local_file = str(local_file)
        if not self.remote:
            dest = self.local(rel)
            from conv_pipeline.sink.writer import atomic_write

            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, lambda tmp: shutil.copyfile(local_file, tmp))
            return str(dest)
        key = self.key(rel)
        try:
            if self.object_store:
                self.fs.put_file(local_file, key)
            else:
                parent, name = posixpath.split(key)
                tmp = f"{parent}/.{name}{TMP_MARKER}{uuid.uuid4().hex[:8]}"
                self.fs.makedirs(parent, exist_ok=True)
                try:
                    self.fs.put_file(local_file, tmp)
                    self.fs.mv(tmp, key)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.fs.rm_file(tmp)
                    raise
        except Exception as err:  # noqa: BLE001
            raise OutputError(f"cannot write {self.url(rel)}: {type(err).__name__}: {one_line(err) or 'no detail'}") from None
        return self.url(rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """``data`` at ``rel``, atomically."""
        check_rel(rel)
        if not self.remote:
            from conv_pipeline.sink.writer import atomic_write

            dest = self.local(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, lambda tmp: tmp.write_bytes(data))
            return str(dest)
        with staging() as folder:
            tmp = os.path.join(folder, "data")
            with open(tmp, "wb") as f:
                f.write(data)
            return self.commit(tmp, rel)

    @contextlib.contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        """A local path to write ``rel``'s complete content to (the writer's own atomic write);
        committed to ``rel`` when the block ends without an exception.

        Local folders: the final path itself (its folder created). Remote: a file in a local
        staging folder, uploaded with ``commit``. Errors inside name ``rel``'s URL."""
        check_rel(rel)
        if not self.remote:
            dest = self.local(rel)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(f"cannot write {dest}: {err.strerror or err}") from None
            yield dest
            return
        with staging() as folder:
            local = Path(folder) / posixpath.basename(rel)
            try:
                yield local
            except PipelineError as err:
                raise renamed_error(err, str(local), self.url(rel)) from None
            self.commit(local, rel)

    @contextlib.contextmanager
    def metadata(self, names: Sequence[str]) -> Iterator[Path]:
        """A local folder holding the current ``names`` (e.g. ``model.safetensors``,
        ``config.yaml``) for code that works on a folder (``pipeline.prepare_output_dir``).

        Local: the output folder itself. Remote: a staging copy; files created or changed inside
        the block are committed in ``names`` order when it ends without an exception."""
        if not self.remote:
            assert self.path is not None
            yield self.path
            return
        with staging() as folder:
            stage = Path(folder)
            before: dict[str, tuple[int, int]] = {}
            for name in names:
                data = self.read_bytes(name)
                if data is not None:
                    (stage / name).write_bytes(data)
                    st = (stage / name).stat()
                    before[name] = (st.st_size, st.st_mtime_ns)
            try:
                yield stage
            except PipelineError as err:
                raise renamed_error(err, str(stage), self.spec) from None
            for name in names:
                path = stage / name
                if path.is_file():
                    st = path.stat()
                    if before.get(name) != (st.st_size, st.st_mtime_ns):
                        self.commit(path, name)
