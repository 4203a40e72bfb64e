"""Where the batch job's inputs and outputs live: local paths or fsspec URLs.

Both engines (``batch.py``'s local one and ``ray_engine.py``) read and write through this module,
so every worker reads its inputs and writes its outputs where they live, with nothing passing
through the driver. A spec is

* a local path, or a ``file://`` / ``local://`` URL (the same thing: ``file:///data/x`` is
  ``/data/x``): the existing path-based code runs unchanged;
* any other URL fsspec knows (``s3://bucket/corpus``, ``gs://...``, ``memory://...``, chained
  ``simplecache::s3://...``): a *remote* location, opened with ``fsspec.core.url_to_fs(url,
  **storage.options)`` in each process that needs it (filesystem objects never travel; the
  options do, so every Ray worker builds its own client with the same endpoint and credentials).

Reading remote inputs: headers are read through a file object (``soundfile`` decodes by
content); a file to decode is copied to a local temporary file (``fs.get_file``: streamed,
bounded memory) and decoded by the same ``load_audio`` / chunked executor as a local file;
messages name the URL, never the temporary copy.

Writing remote outputs, atomically, the way the filesystem allows (``OutputDir.commit``):

* object stores (``s3``, ``gs``, ``az``/``abfs``, ``memory``, ...; ``OBJECT_STORES``): one PUT
  of the complete file (``fs.put_file``; a large file is one multipart upload, which becomes
  visible only when completed): readers see no object or the whole object;
* any other remote filesystem: upload under a temporary name in the same folder
  (``.<name>.tmp-xxxxxxxx``, the name ``writer.atomic_write`` uses, so temp clean-up finds it),
  then ``fs.mv`` it into place.

A feature file is produced locally first (``writer.write_features``, or the chunked executor's
streaming writer, unchanged) in a staging folder, then committed with one upload.

The manifest (``ManifestSink``): a local ``manifest.jsonl`` is appended to, one write + fsync per
call, as before. Object stores cannot append, so a remote manifest is rewritten whole, atomically
(one PUT of the previous content plus every new record), at most every ``storage.manifest_flush_s``
seconds and when the job ends (also on errors and interrupts). A run killed in between loses
only those manifest lines: their feature files exist, so the next run records them as
``skipped`` (without their metadata, which was in the lost lines).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .errors import ConfigError, InputError, OutputError, PipelineError
from .manifest import MANIFEST_NAME, ManifestRecord, read_manifest
from .writer import TMP_MARKER

__all__ = [
    "OBJECT_STORES",
    "is_url",
    "local_path",
    "join",
    "filesystem",
    "list_inputs",
    "probe",
    "fetched",
    "decode",
    "OutputDir",
    "ManifestSink",
]

# Protocols without a rename: a single PUT of the complete object is the atomic commit.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"})
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_LOCAL_PREFIXES = ("file://", "local://")
GLOB_CHARS = frozenset("*?[")


# ---------------------------------------------------------------- specs
def is_url(spec: object) -> bool:
    """True for a remote location: a URL (or a chained ``a::b://`` URL) other than ``file://``."""
    s = str(spec)
    if s.startswith(_LOCAL_PREFIXES):
        return False
    return bool(_URL_RE.match(s)) or ("::" in s and "://" in s)


def local_path(spec: object) -> str:
    """A local spec as a path: ``file:///data/x`` -> ``/data/x``; anything else unchanged."""
    s = str(spec)
    for prefix in _LOCAL_PREFIXES:
        if s.startswith(prefix):
            return s[len(prefix) :] or "/"
    return s


def join(base: object, rel: str) -> str:
    """``base`` (a path or URL) joined with a POSIX relative path, in ``base``'s own style."""
    base = str(base)
    if is_url(base):
        return base.rstrip("/") + "/" + rel
    return os.path.join(base, rel)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def filesystem(url: str, options: Optional[Mapping[str, Any]] = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; ``ConfigError`` (one line) when the
    URL cannot be opened (fsspec or the protocol's package missing, bad options)."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            f"{url}: URLs need fsspec; install the ray extra (pip install -e '.[ray]') or fsspec and s3fs"
        ) from None
    try:
        return fsspec.core.url_to_fs(url, **dict(options or {}))
    except ImportError as err:
        raise ConfigError(f"{url}: {_one_line(err)}; install the package it names") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{url}: cannot open this URL ({_one_line(err)}); check it and storage.options") from None


def _protocol(fs: Any) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


def _has_ext(name: str, exts: frozenset[str]) -> bool:
    return posixpath.splitext(name)[1][1:].lower() in exts


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    literal: list[str] = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    return "/".join(literal)


def _storage_error(url: str, err: BaseException, what: str) -> InputError:
    if isinstance(err, PipelineError):
        return InputError(str(err))
    if isinstance(err, FileNotFoundError):
        return InputError(f"{url}: no such file or folder; check the URL")
    if isinstance(err, PermissionError):
        return InputError(f"{url}: permission denied while {what}; check the credentials in storage.options")
    return InputError(f"{url}: cannot {what} ({type(err).__name__}: {_one_line(err) or 'no detail'}); check the URL and storage.options")


# ---------------------------------------------------------------- inputs
def list_inputs(
    spec: str, exts: frozenset[str], options: Optional[Mapping[str, Any]] = None
) -> tuple[str, str, list[str], list[str]]:
    """The inputs a remote ``spec`` names: ``(kind, root, inputs, rels)`` as in
    ``batch.find_inputs`` (a folder searched recursively with hidden names skipped, a glob, a text
    list of paths or URLs, one audio file). ``inputs`` are URLs in ``spec``'s own spelling
    (``root`` + ``/`` + ``rel``); ``rels`` are POSIX paths under ``root``."""
    fs, path = filesystem(spec, options)
    spec = spec.rstrip("/") if not spec.endswith("://") else spec
    path = path.rstrip("/") or path
    try:
        fs.invalidate_cache()
        if GLOB_CHARS & set(path):
            root = _glob_root(spec)
            root_path = fs._strip_protocol(root).rstrip("/")
            found = fs.glob(path, detail=True)
            files = [p for p, info in found.items() if info.get("type") == "file"]
            rels = [p[len(root_path) + 1 :] for p in files if p.startswith(root_path + "/")]
            rels = [r for r in rels if _has_ext(r, exts)]
            return "glob", root, [join(root, r) for r in rels], rels
        if fs.isdir(path):
            found = fs.find(path, detail=True)
            rels = []
            for p, info in found.items():
                if info.get("type") != "file" or not p.startswith(path + "/"):
                    continue
                rel = p[len(path) + 1 :]
                if any(part.startswith(".") for part in rel.split("/")) or not _has_ext(rel, exts):
                    continue
                rels.append(rel)
            return "folder", spec, [join(spec, r) for r in rels], rels
        if fs.isfile(path):
            parent = spec.rsplit("/", 1)[0]
            name = spec.rsplit("/", 1)[1]
            if _has_ext(name, exts):
                return "file", parent, [spec], [name]
            return _list_file(fs, path, spec, parent)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - a listing failure is one line naming the URL
        raise _storage_error(spec, err, "list it") from None
    raise InputError(
        f"input={spec!r}: no such file or folder; give a folder, a glob like "
        "'s3://bucket/corpus/**/*.wav' or a text file with one audio path per line"
    )


def _list_file(fs: Any, path: str, spec: str, parent: str) -> tuple[str, str, list[str], list[str]]:
    raw = fs.cat_file(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise InputError(
            f"input={spec!r} is neither a folder, a glob nor a text list; give a folder, a glob "
            "like 's3://bucket/corpus/**/*.wav' or a text file with one audio path per line"
        )
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_url(entry):  # relative to the list's folder, in the list's filesystem
            entry = _normjoin(parent, entry)
        entries.append(entry)
    if not entries:
        return "list", parent, [], []
    # rels under the entries' common folder, so outputs stay inside output.dir
    split = [_split_url(e) for e in entries]
    prefixes = {p for p, _ in split}
    if len(prefixes) > 1:
        raise InputError(f"input={spec!r} lists files on several filesystems ({', '.join(sorted(prefixes))}); use one list per filesystem")
    prefix = prefixes.pop()
    paths = [p for _, p in split]
    common = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    rels = [posixpath.relpath(p, common) for p in paths]
    return "list", prefix + common, entries, rels


def _split_url(url: str) -> tuple[str, str]:
    """``s3://b/x/y`` -> ``("s3://", "b/x/y")``."""
    head, sep, rest = url.partition("://")
    return head + sep, rest


def _normjoin(base_url: str, rel: str) -> str:
    prefix, path = _split_url(base_url)
    joined = posixpath.normpath(posixpath.join(path, rel))
    if joined.startswith("../") or joined == "..":
        raise InputError(f"{rel}: a list entry that leaves {base_url}; give full URLs in the list")
    return prefix + joined


def probe(path: str, options: Optional[Mapping[str, Any]] = None):
    """``audio.probe`` for a path or URL: the header only (a remote file is read through a file
    object, never copied). Raises ``InputError`` as ``audio.probe`` does."""
    from .audio import AudioInfo
    from .audio import probe as probe_local

    if not is_url(path):
        return probe_local(local_path(path))
    import soundfile as sf

    fs, p = filesystem(path, options)
    try:
        info = fs.info(p)
    except Exception as err:  # noqa: BLE001
        raise _storage_error(path, err, "read it") from None
    if info.get("type") == "directory":
        raise InputError(f"{path}: is a directory, expected an audio file")
    if not info.get("size"):
        raise InputError(f"{path}: empty file (0 bytes), not audio")
    try:
        with fs.open(p, "rb") as f:
            header = sf.info(f)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = _one_line(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        detail = re.sub(r"^Error opening .*?: ", "", detail)
        raise InputError(f"{path}: not a readable audio file ({detail})") from None
    except Exception as err:  # noqa: BLE001
        raise _storage_error(path, err, "read it") from None
    return AudioInfo(path, int(header.samplerate), int(header.channels), int(header.frames), header.format, header.subtype)


def _renamed(err: PipelineError, local: str, url: str) -> PipelineError:
    """The same error, naming ``url`` where it named the local copy ``local``."""
    return type(err)(str(err).replace(local, url))


@contextlib.contextmanager
def fetched(path: str, options: Optional[Mapping[str, Any]] = None) -> Iterator[str]:
    """A local path to read ``path`` from: the path itself, or for a URL a temporary copy
    (removed on exit). ``PipelineError``s raised inside name the URL, not the copy."""
    if not is_url(path):
        yield local_path(path)
        return
    fs, p = filesystem(path, options)
    tmpdir = tempfile.mkdtemp(prefix="conv_pipeline-in-")
    local = os.path.join(tmpdir, posixpath.basename(p.rstrip("/")) or "input")
    try:
        try:
            fs.get_file(p, local)
        except Exception as err:  # noqa: BLE001
            raise _storage_error(path, err, "read it") from None
        try:
            yield local
        except PipelineError as err:
            raise _renamed(err, local, path) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


class decode:  # noqa: N801 - used like a function; a class so that worker processes can pickle it
    """``decode(path, audio)`` for paths and URLs: ``inner`` (``audio.load_audio`` by default) on
    the path, or on a local copy of the URL."""

    def __init__(self, inner: Callable, options: Optional[Mapping[str, Any]] = None) -> None:
        self.inner = inner
        self.options = dict(options or {})

    def __call__(self, path: str, audio: Any) -> Any:
        if not is_url(path):
            return self.inner(local_path(path), audio)
        with fetched(path, self.options) as local:
            return self.inner(local, audio)


# ---------------------------------------------------------------- outputs
def check_rel(rel: str) -> str:
    """``rel`` if it is a plain relative POSIX path that stays under its folder, else ``OutputError``."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts) or _URL_RE.match(rel):
        raise OutputError(f"{rel!r}: would write outside output.dir; outputs must stay under it")
    return rel


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
        return _protocol(self.fs) in OBJECT_STORES

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
            raise OutputError(f"output.dir={self.spec!r}: cannot reach it ({type(err).__name__}: {_one_line(err)}); check the URL and storage.options") from None
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
            from .writer import atomic_write

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
            raise OutputError(f"cannot write {self.url(rel)}: {type(err).__name__}: {_one_line(err) or 'no detail'}") from None
        return self.url(rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """``data`` at ``rel``, atomically."""
        check_rel(rel)
        if not self.remote:
            from .writer import atomic_write

            dest = self.local(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dest, lambda tmp: tmp.write_bytes(data))
            return str(dest)
        with _staging() as folder:
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
        with _staging() as folder:
            local = Path(folder) / posixpath.basename(rel)
            try:
                yield local
            except PipelineError as err:
                raise _renamed(err, str(local), self.url(rel)) from None
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
        with _staging() as folder:
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
                raise _renamed(err, str(stage), self.spec) from None
            for name in names:
                path = stage / name
                if path.is_file():
                    st = path.stat()
                    if before.get(name) != (st.st_size, st.st_mtime_ns):
                        self.commit(path, name)


@contextlib.contextmanager
def _staging() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="conv_pipeline-out-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the manifest
class ManifestSink:
    """``output.dir/manifest.jsonl``, record by record (one writer: the local engine's writer
    thread or the Ray driver). See the module docstring for object stores."""

    def __init__(self, out: OutputDir, flush_s: float = 30.0) -> None:
        self.out = out
        self.flush_s = float(flush_s)
        self._pending: list[str] = []
        self._base = b""
        self._last = time.monotonic()
        if out.remote:
            self._base = out.read_bytes(MANIFEST_NAME) or b""
            if self._base and not self._base.endswith(b"\n"):
                self._base += b"\n"  # a torn last line stays torn (skipped when read)
        else:
            self._repair_tail()

    def _repair_tail(self) -> None:
        """A run killed mid-append can leave a last line without its newline; end it, so the next
        record starts on a line of its own (the torn line is skipped by ``read_manifest``)."""
        assert self.out.path is not None
        try:  # never through a symbolic link (``add`` refuses one with a message)
            fd = os.open(self.out.path / MANIFEST_NAME, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.pwrite(fd, b"\n", size)
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> dict[str, ManifestRecord]:
        """The current record of every input (``manifest.read_manifest``)."""
        if not self.out.remote:
            return read_manifest(self.out.path)  # type: ignore[arg-type]
        with _staging() as folder:
            Path(folder, MANIFEST_NAME).write_bytes(self._base)
            return read_manifest(folder)

    def add(self, records: Sequence[ManifestRecord]) -> None:
        """Append ``records`` (local: one write and one fsync; remote: flushed every ``flush_s``)."""
        if not records:
            return
        lines = "".join(r.to_json() + "\n" for r in records)
        if not self.out.remote:  # one write and one fsync for all of them (as manifest.append_record)
            assert self.out.path is not None
            path = self.out.path / MANIFEST_NAME
            data = lines.encode("utf-8")
            try:  # never through a symbolic link: it could point outside output.dir
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                if path.is_symlink():
                    raise OutputError(f"{path} is a symbolic link; the manifest is never written through one (remove it)") from None
                raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
            try:
                written = os.write(fd, data)
                os.fsync(fd)
            except OSError as err:
                raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
            finally:
                os.close(fd)
            if written != len(data):
                raise OutputError(f"cannot append to {path}: only {written} of {len(data)} bytes written (disk full?)")
            return
        self._pending.append(lines)
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Remote: rewrite the manifest object with everything so far (one atomic PUT)."""
        if not self.out.remote or not self._pending:
            return
        data = self._base + "".join(self._pending).encode("utf-8")
        self.out.write_bytes(MANIFEST_NAME, data)  # on failure everything stays pending
        self._base, self._pending = data, []
        self._last = time.monotonic()

    def close(self) -> None:
        self.flush()
