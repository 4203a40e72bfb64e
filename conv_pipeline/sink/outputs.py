"""``output.dir``: one interface (``OutputDir``) with two implementations, a local folder and a
remote prefix, through which the engines write every output.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``OutputDir(spec, options)``
returns the implementation ``spec`` needs:

* ``LocalOutputDir``: a local path, or a ``file://`` / ``local://`` URL. Files are written in
  place with ``writer.atomic_write`` (a temporary name beside the file, fsync, rename); a
  subfolder that is a symbolic link leading outside ``output.dir`` is refused.
* ``RemoteOutputDir``: any other fsspec URL (``s3://bucket/feats``, ``memory://...``). A file is
  produced in a local staging folder (``writing``: the feature writers run unchanged), then
  committed with one upload, atomically the way the filesystem allows (``commit``):

  - object stores (``s3``, ``gs``, ``az``/``abfs``, ``memory``, ...; ``OBJECT_STORES``): one PUT of
    the complete file (``fs.put_file``; a large file is one multipart upload, visible only when
    completed): readers see no object or the whole object;
  - any other filesystem: upload under a temporary name in the same folder
    (``.<name>.tmp-<host>-<pid>-<random>``, the name ``writer.atomic_write`` uses, so
    ``clean_temp_files`` finds it), then ``fs.mv`` it into place.

Both are picklable (Ray ships an ``OutputDir`` to each worker): the fsspec filesystem is rebuilt
from ``spec`` and ``options`` in each process. ``rel`` arguments are POSIX paths under
``output.dir`` (``fs.check_rel`` refuses any other). The manifest is written by
``sink.manifest_sink``; the weights, config and lock by ``sink.jobdir`` (its names are also
importable from here).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import posixpath
import re
import shutil
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
    printable,
    renamed_error,
    staging,
)
from conv_pipeline.sink.jobdir import (
    CONFIG_NAME,
    DEFAULT_OUTPUT_DIR,
    WEIGHTS_NAME,
    OutputLock,
    check_same_audio,
    check_weights,
    make_output_dir,
    prepare_output_dir,
)
from conv_pipeline.sink.writer import (
    TMP_MARKER,
    atomic_write,
    check_guarded,
    guard_folder,
    guarded_identity,
    host_tag,
    temp_token,
)

__all__ = [  # with sink.jobdir's names, for the callers that import them from here
    "CONFIG_NAME",
    "DEFAULT_OUTPUT_DIR",
    "TEMP_RE",
    "WEIGHTS_NAME",
    "LocalOutputDir",
    "OutputDir",
    "OutputLock",
    "RemoteOutputDir",
    "check_same_audio",
    "check_weights",
    "clean_temp_files",
    "make_output_dir",
    "prepare_output_dir",
]

# ``.<name>.tmp-<host>-<pid>-<random>`` (``writer.temp_token``), or ``.<name>.tmp-<random>`` (older runs)
TEMP_RE = re.compile(r"^\..+" + re.escape(TMP_MARKER) + r"(?:[0-9a-f]{8}-[0-9]+-)?[0-9a-f]{8}$")
_OWNER_RE = re.compile(re.escape(TMP_MARKER) + r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{8}$")

log = logging.getLogger("conv_pipeline.batch")


def temp_owner_alive(name: str) -> bool:
    """True when the temporary file ``name`` may still be written by a live process: its owner
    (``writer.temp_token``) is another host (its processes cannot be seen from here), or a process
    of this host that still exists. Names without an owner (older runs) have none alive."""
    m = _OWNER_RE.search(name)
    if m is None:
        return False
    if m["host"] != host_tag():
        return True
    pid = int(m["pid"])
    if pid == os.getpid():
        return True  # this process: another thread of it may be writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, another user's
        return True
    return True


class OutputDir(abc.ABC):
    """``output.dir``: ``OutputDir(spec, options)`` is a ``LocalOutputDir`` or, for a URL, a
    ``RemoteOutputDir``.

    ``spec``: as given (a URL without its trailing ``/``); ``options``: ``storage.options`` for
    fsspec; ``remote``: which of the two it is; ``path``: the local folder (``None`` when remote);
    ``display``: how messages name the folder."""

    remote: bool = False
    path: Optional[Path] = None

    def __new__(  # noqa: PYI034 - returns the subclass, not cls
        cls, spec: object = None, options: Optional[Mapping[str, Any]] = None
    ) -> OutputDir:
        """``OutputDir(...)`` builds the implementation the spec needs (a subclass builds itself)."""
        impl = cls
        if cls is OutputDir:
            impl = RemoteOutputDir if is_url(spec) else LocalOutputDir
        return super().__new__(impl)

    def __init__(self, spec: object, options: Optional[Mapping[str, Any]] = None) -> None:
        self.spec = str(spec)
        self.options = dict(options or {})
        self._fs: Any = None
        self._root: Optional[str] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_root": None}  # filesystem objects never travel

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, opened on first use in each process."""
        if self._fs is None:
            self._fs, root = filesystem(self.spec, self.options)
            self._root = root.rstrip("/")
        return self._fs

    @property
    def object_store(self) -> bool:
        """True when a single PUT is the atomic commit (no rename): ``OBJECT_STORES``."""
        return fs_protocol(self.fs) in OBJECT_STORES

    @property
    @abc.abstractmethod
    def display(self) -> str:
        """The folder as messages name it."""

    def url(self, rel: str) -> str:
        """Where ``rel`` lives, for messages."""
        return join(self.display, check_rel(rel))

    # -- setup and listing
    @abc.abstractmethod
    def create(self) -> None:
        """Refuse an ``output.dir`` that is a file (or, remote, cannot be reached); create a local one."""

    @abc.abstractmethod
    def files(self) -> set[str]:
        """Every file under the folder, as POSIX relative paths (one listing)."""

    @abc.abstractmethod
    def is_file(self, rel: str) -> bool:
        """True when ``rel`` exists as a file."""

    @abc.abstractmethod
    def read_bytes(self, rel: str) -> Optional[bytes]:
        """``rel``'s content, or None when it does not exist."""

    @abc.abstractmethod
    def clean_temp_files(self, pattern: re.Pattern) -> int:
        """Remove the files whose name matches ``pattern`` (temporaries of a killed run) and whose
        owner is dead (``temp_owner_alive``: the live writers' are kept); returns how many were
        removed."""

    # -- atomic writes
    @abc.abstractmethod
    def commit(self, local_file: os.PathLike | str, rel: str) -> str:
        """Put the complete local file ``local_file`` at ``rel``, atomically. Returns where it was
        written (a path or URL)."""

    @abc.abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> str:
        """``data`` at ``rel``, atomically. Returns where it was written."""

    @abc.abstractmethod
    def writing(self, rel: str) -> contextlib.AbstractContextManager[Path]:
        """A context giving a local path to write ``rel``'s complete content to (the writer's own
        atomic write), committed to ``rel`` when the block ends without an exception. Errors
        raised inside name ``rel``'s place in ``output.dir``."""

    @abc.abstractmethod
    def metadata(self, names: Sequence[str]) -> contextlib.AbstractContextManager[Path]:
        """A context giving a local folder that holds the current ``names`` (e.g.
        ``model.safetensors``, ``config.yaml``), for code that works on a folder
        (``jobdir.prepare_output_dir``); what it changes there is in ``output.dir`` after the block."""


class LocalOutputDir(OutputDir):
    """``output.dir`` on the local filesystem: files written in place, atomically."""

    remote = False

    def __init__(self, spec: object, options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(spec, options)
        self.path: Path = Path(local_path(self.spec))

    @property
    def display(self) -> str:
        return str(self.path)

    def local(self, rel: str) -> Path:
        """``rel``'s local path; refuses a subfolder that is a link leading outside ``output.dir``."""
        dest = self.path / check_rel(rel)
        root = os.path.realpath(self.path)
        parent = os.path.realpath(dest.parent)
        if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
            raise OutputError(
                f"{dest.parent} leads outside output.dir (to {parent}) through a symbolic link; "
                "remove the link or choose another output.dir"
            )
        return dest

    def __getstate__(self) -> dict:
        # a process this folder is shipped to (a Ray actor) checks the same lock's folder
        return {**super().__getstate__(), "guard": guarded_identity(self.path)}

    def __setstate__(self, state: dict) -> None:
        guard = state.pop("guard", None)
        self.__dict__.update(state)
        if guard is not None:
            guard_folder(self.path, guard)

    def _prepared(self, rel: str) -> Path:
        """``local(rel)``, its folder created (never a locked folder that is gone: ``check_guarded``)."""
        dest = self.local(rel)
        check_guarded(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot write {dest}: {err.strerror or err}") from None
        return dest

    def create(self) -> None:
        make_output_dir(self.path)

    def files(self) -> set[str]:
        return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}

    def is_file(self, rel: str) -> bool:
        return self.local(rel).is_file()

    def read_bytes(self, rel: str) -> Optional[bytes]:
        try:
            return self.local(rel).read_bytes()
        except FileNotFoundError:
            return None

    def clean_temp_files(self, pattern: re.Pattern) -> int:
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.path):
            for name in filter(pattern.match, filenames):
                if temp_owner_alive(name):
                    continue
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as err:  # a read-only subfolder: the file stays, the job goes on
                    log.warning("cannot remove the temporary file %s (%s); it is left in place",
                                printable(os.path.join(dirpath, name)), err.strerror or err)
        return removed

    def commit(self, local_file: os.PathLike | str, rel: str) -> str:
        source = str(local_file)
        return str(atomic_write(self._prepared(rel), lambda tmp: shutil.copyfile(source, tmp)))

    def write_bytes(self, rel: str, data: bytes) -> str:
        return str(atomic_write(self._prepared(rel), lambda tmp: tmp.write_bytes(data)))

    @contextlib.contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        yield self._prepared(rel)  # the final path: the writer's atomic write is the commit

    @contextlib.contextmanager
    def metadata(self, names: Sequence[str]) -> Iterator[Path]:
        yield self.path  # the output folder itself


class RemoteOutputDir(OutputDir):
    """``output.dir`` on an fsspec URL: files produced in a local staging folder, then committed
    with one upload (see the module docstring)."""

    remote = True

    def __init__(self, spec: object, options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(spec, options)
        if not self.spec.endswith("://"):
            self.spec = self.spec.rstrip("/")

    @property
    def display(self) -> str:
        return self.spec

    @property
    def root(self) -> str:
        """The folder's path within ``fs``."""
        self.fs  # noqa: B018 - opens the filesystem
        assert self._root is not None
        return self._root

    def key(self, rel: str) -> str:
        """``rel``'s path within ``fs``."""
        return f"{self.root}/{check_rel(rel)}"

    def create(self) -> None:
        try:
            self.fs.invalidate_cache()
            is_file = self.fs.isfile(self.root)
        except Exception as err:  # noqa: BLE001
            raise OutputError(f"output.dir={self.spec!r}: cannot reach it ({type(err).__name__}: {one_line(err)}); check the URL and storage.options") from None
        if is_file:
            raise OutputError(f"output.dir={self.spec!r} is an existing file, not a folder; choose another output.dir")

    def files(self) -> set[str]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        return {p[len(self.root) + 1 :] for p in found if p.startswith(self.root + "/")}

    def is_file(self, rel: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.isfile(self.key(rel)))

    def read_bytes(self, rel: str) -> Optional[bytes]:
        try:
            return self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None

    def clean_temp_files(self, pattern: re.Pattern) -> int:
        removed = 0
        for rel in self.files():
            name = posixpath.basename(rel)
            if pattern.match(name) and not temp_owner_alive(name):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.key(rel))
                    removed += 1
        return removed

    def commit(self, local_file: os.PathLike | str, rel: str) -> str:
        key = self.key(rel)
        try:
            if self.object_store:
                self.fs.put_file(str(local_file), key)
            else:
                self._upload_and_rename(str(local_file), key)
        except Exception as err:  # noqa: BLE001
            raise OutputError(f"cannot write {self.url(rel)}: {type(err).__name__}: {one_line(err) or 'no detail'}") from None
        return self.url(rel)

    def _upload_and_rename(self, local_file: str, key: str) -> None:
        """A filesystem with a rename: upload under a temporary name beside ``key``, then move it."""
        parent, name = posixpath.split(key)
        tmp = f"{parent}/.{name}{TMP_MARKER}{temp_token()}"
        self.fs.makedirs(parent, exist_ok=True)
        try:
            self.fs.put_file(local_file, tmp)
            self.fs.mv(tmp, key)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def write_bytes(self, rel: str, data: bytes) -> str:
        check_rel(rel)
        with staging() as folder:
            tmp = os.path.join(folder, "data")
            with open(tmp, "wb") as f:
                f.write(data)
            return self.commit(tmp, rel)

    @contextlib.contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        check_rel(rel)
        with staging() as folder:
            local = Path(folder) / posixpath.basename(rel)
            try:
                yield local
            except PipelineError as err:
                raise renamed_error(err, str(local), self.url(rel)) from None
            self.commit(local, rel)

    @contextlib.contextmanager
    def metadata(self, names: Sequence[str]) -> Iterator[Path]:
        """A staging copy of ``names``; the files created or changed inside the block are committed
        in ``names`` order when it ends without an exception."""
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


def clean_temp_files(out_dir: Path | str, options: Optional[dict] = None) -> int:
    """Remove ``.<name>.tmp-...`` files (``writer.atomic_write``'s) left under ``out_dir`` (a folder
    or URL) by a killed run; those of live writers are kept. Returns how many were removed."""
    return OutputDir(out_dir, options).clean_temp_files(TEMP_RE)
