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

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``_Engine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``_Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import glob
import logging
import multiprocessing
import os
import posixpath
import re
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch

from . import storage
from .audio import Audio, load_audio
from .config import (
    AUDIO_EXTENSIONS,
    AudioConfig,
    BatchOptions,
    Config,
    EngineConfig,
    OutputFormat,
    StorageConfig,
    policy_channel_count,
    resolve_in_channels,
    validate_audio,
    validate_model,
)
from .errors import ConfigError, InputError, OutputError, PipelineError
from .geometry import StackGeometry
from .manifest import MANIFEST_NAME, ManifestRecord
from .model import ConvStack, build_stack, checkpoint_in_channels
from .pipeline import (
    CONFIG_NAME,
    DEFAULT_OUTPUT_DIR,
    WEIGHTS_NAME,
    extract,
    overflow_error,
    plain_config,
    prepare_output_dir,
    resolve_device,
    to_config,
)
from .storage import ManifestSink, OutputDir
from .writer import TMP_MARKER, write_features

log = logging.getLogger("conv_pipeline.batch")

__all__ = [
    "InputSet",
    "BatchSummary",
    "find_inputs",
    "plan_outputs",
    "extract_batch",
    "process_long_file",
    "clean_temp_files",
    "run_batch",
]

GLOB_CHARS = frozenset("*?[")
# Decoded files wait in a pool of up to SORT_WINDOW batches; each batch takes the run of files
# of most similar length from it (``_take_batch``), so little padding is computed: on 300
# files of 1-30 s, padding cost 53% extra stack work taking the shortest files of a 4-batch
# pool, 15% with the best run of a 4-batch pool, 7.5% with an 8-batch pool.
SORT_WINDOW = 8
# ... and the pool never holds more than this many samples (bounded memory with long files).
POOL_MAX_SAMPLES = 64 * 2**20
TEMP_RE = re.compile(r"^\..+" + re.escape(TMP_MARKER) + r"[0-9a-f]{8}$")


# ---------------------------------------------------------------- finding inputs
@dataclass
class InputSet:
    """The job's inputs.

    ``kind``: ``folder``, ``glob``, ``list`` or ``file``. ``root``: the folder the output tree
    mirrors. ``paths``: each input as it is opened and recorded in the manifest (``input``).
    ``rels``: each input's path relative to ``root`` (POSIX), never starting with ``..``.
    """

    kind: str
    root: str
    paths: list[str]
    rels: list[str]


def _has_ext(name: str, exts: frozenset[str]) -> bool:
    return os.path.splitext(name)[1][1:].lower() in exts


def _posix_rel(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def _walk_folder(folder: str, exts: frozenset[str]) -> list[str]:
    """Audio files under ``folder`` (recursively, symlinks followed once, hidden names skipped)."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to a folder already searched
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and _has_ext(name, exts):
                found.append(os.path.join(dirpath, name))
    return found


def _glob_root(pattern: str) -> str:
    """The literal folder before the first component with a wildcard (``corpus/**/*.wav`` -> ``corpus``)."""
    parts = pattern.replace(os.sep, "/").split("/")
    literal: list[str] = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    if not literal:
        return "."
    root = "/".join(literal)
    return root or "/"


def _read_list(list_path: str) -> list[str]:
    try:
        with open(list_path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise InputError(f"input={list_path!r}: cannot read the list file ({err.strerror or err})") from None
    # names that are not UTF-8 survive as surrogates, as os.fsdecode gives them; NULs mean binary
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    if "\x00" in text:
        raise InputError(
            f"input={list_path!r} is neither a folder, a glob nor a text list; give a folder, a glob "
            "like 'corpus/**/*.wav' or a text file with one audio path per line"
        )
    base = os.path.dirname(list_path)
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entries.append(entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry)))
    return entries


def find_inputs(
    spec: str, extensions: Sequence[str] = AUDIO_EXTENSIONS, options: Optional[dict[str, Any]] = None
) -> InputSet:
    """The inputs that ``input=spec`` names.

    * a folder: every audio file below it (by extension, case-insensitive; hidden names
      skipped), relative to the folder;
    * a glob (``*``, ``?``, ``[``; ``**`` spans folders): the matching audio files, relative
      to the pattern's literal leading folder;
    * a text file: one path per line (blank lines and ``#`` comments ignored; relative paths
      are relative to the list file's folder; taken whatever their extension), relative to
      the entries' common folder, so ``../x.wav`` still gets an output inside ``output.dir``;
    * one audio file (an audio extension): that file.

    ``spec`` may be a URL (``s3://bucket/corpus``, ``gs://...``; opened with ``options``, see
    ``storage.list_inputs``): the same four kinds on that filesystem, each input named by its URL.
    ``file://`` URLs are local paths.

    Duplicates (the same file named twice) are dropped. Raises ``InputError`` when nothing is
    found.
    """
    exts = frozenset(e.lower().lstrip(".") for e in extensions)
    spec = str(spec)
    if storage.is_url(spec):
        kind, root, paths, rels = storage.list_inputs(spec, exts, options)
        unique_rels = dict(zip(paths, rels))  # the same URL twice (a list): once
        return _ordered_inputs(spec, exts, kind, root, list(unique_rels), list(unique_rels.values()))
    spec = storage.local_path(spec)
    if os.path.isdir(spec):
        kind, root, paths = "folder", spec, _walk_folder(spec, exts)
    elif os.path.isfile(spec):
        if _has_ext(spec, exts):
            kind, root, paths = "file", os.path.dirname(spec) or ".", [spec]
        else:
            kind, paths = "list", _read_list(spec)
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else "."
    elif GLOB_CHARS & set(spec):
        kind, root = "glob", _glob_root(spec)
        paths = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p) and _has_ext(p, exts)]
    else:
        raise InputError(
            f"input={spec!r}: no such file or folder; give a folder, a glob like 'corpus/**/*.wav' "
            "or a text file with one audio path per line"
        )
    unique: dict[str, str] = {}
    for p in paths:
        unique.setdefault(os.path.normcase(os.path.abspath(p)), p)
    paths = list(unique.values())
    rels = [_posix_rel(p, root) for p in paths]
    if any(r == ".." or r.startswith("../") for r in rels):  # cannot happen by construction; be sure
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        rels = [_posix_rel(p, root) for p in paths]
    return _ordered_inputs(spec, exts, kind, root, paths, rels)


def _ordered_inputs(spec: str, exts: frozenset[str], kind: str, root: str, paths: list[str], rels: list[str]) -> InputSet:
    """Sorted by relative path (a list keeps its order); ``InputError`` when there are none."""
    order = sorted(range(len(paths)), key=lambda i: rels[i]) if kind != "list" else list(range(len(paths)))
    paths, rels = [paths[i] for i in order], [rels[i] for i in order]
    if not paths:
        what = "lists no files" if kind == "list" else f"has no audio files (extensions: {', '.join(sorted(exts))})"
        raise InputError(f"input={spec!r} {what}; check the path, or set batch.extensions")
    return InputSet(kind, root, paths, rels)


def plan_outputs(rels: Sequence[str], fmt: str) -> list[str]:
    """Output path (POSIX, relative to ``output.dir``) of each input's relative path.

    ``a/b/x.wav`` -> ``a/b/x.npy``. Inputs that would share an output (``x.wav`` and
    ``x.flac`` in one folder; compared case-insensitively) keep their extension instead:
    ``x.wav.npy``, ``x.flac.npy``. Deterministic: the same inputs always give the same names.
    """
    keep = [False] * len(rels)

    def name(rel: str, keep_ext: bool) -> str:
        folder, base = posixpath.split(rel)
        stem = base if keep_ext else (posixpath.splitext(base)[0] or base)
        return posixpath.join(folder, f"{stem}.{fmt}")

    while True:
        outs = [name(r, k) for r, k in zip(rels, keep)]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, out in enumerate(outs):
            groups[out.casefold()].append(i)
        clash = [i for members in groups.values() if len(members) > 1 for i in members if not keep[i]]
        if not clash:
            break
        for i in clash:
            keep[i] = True
    for members in groups.values():
        if len(members) > 1:
            names = " and ".join(rels[i] for i in members[:2])
            raise InputError(f"{names} would write the same output {outs[members[0]]}; rename one of them")
    for rel, out in zip(rels, outs):
        parts = out.split("/")
        if out.startswith("/") or ".." in parts or "" in parts[:-1]:
            raise InputError(f"{rel}: would write outside output.dir ({out}); list paths inside one folder")
    return outs


# ---------------------------------------------------------------- computing features
def extract_batch(
    waveforms: Sequence[torch.Tensor], stack: ConvStack, device: torch.device = torch.device("cpu")
) -> list[torch.Tensor]:
    """Features of several files in one stack call: ``(C, T_i)`` each -> ``(C_out, F_i)`` each.

    The files are zero-padded to the longest into ``(B, C, T_max)``; the stack zeroes every
    item's positions past its own valid length between layers, so each result equals
    ``pipeline.extract`` on that file alone; each is trimmed to
    ``stack.geometry.output_length(T_i)``. Float32, on the CPU.

    Equal up to float rounding: a batched conv may round differently from a single-file one
    (about 1e-7), which a norm over very few, nearly equal values (``layer_norm`` over 2
    channels, ``group_norm`` over 2 frames) can amplify; in float64 the results agree to ~1e-12.
    """
    if len(waveforms) == 1:
        with torch.inference_mode():
            y = stack(waveforms[0].to(device)[None])  # (C, T) -> (1, C, T) -> (1, C_out, F)
        outs = [y[0].float().cpu()]
    else:
        lengths = [int(w.shape[-1]) for w in waveforms]
        x = waveforms[0].new_zeros(len(waveforms), int(waveforms[0].shape[0]), max(lengths))  # (B, C, T_max)
        for i, w in enumerate(waveforms):
            x[i, :, : lengths[i]] = w
        with torch.inference_mode():
            y = stack(x.to(device), torch.tensor(lengths)).float().cpu()  # (B, C_out, F_max)
        outs = [y[i, :, : stack.geometry.output_length(n)] for i, n in enumerate(lengths)]
    for w, out in zip(waveforms, outs):  # the geometry module is the contract
        expected = stack.geometry.output_length(int(w.shape[-1]))
        if out.shape[-1] != expected:
            raise RuntimeError(f"internal error: stack gave {out.shape[-1]} frames, geometry predicts {expected}")
    return outs


def process_long_file(
    path: str,
    out_path: Path,
    stack: ConvStack,
    audio: AudioConfig,
    device: torch.device,
    config: dict[str, Any],
    chunk_seconds: Optional[float],
) -> tuple[int, int, list[int]]:
    """One file longer than ``batch.long_file_seconds``, alone, in the main thread: decode, stack,
    write. Returns ``(sample_rate, num_samples, shape)``.

    The single place that decides how a long file is computed: with ``runtime.chunk_seconds``
    the chunked executor (``conv_pipeline.streaming``: the file read block by block, the
    features written as they come into a preallocated temporary file, renamed when complete;
    bounded memory, the same frames as the whole-file computation), else the whole file at once.
    """
    if chunk_seconds:
        from .streaming import extract_file_chunked, file_writer

        result = extract_file_chunked(
            path, stack, audio, chunk_seconds, device, file_writer(out_path, stack.geometry, config)
        )
        return result.sample_rate, result.num_samples, list(result.shape)
    decoded = load_audio(path, audio)
    features = extract(decoded, stack, device)  # checks the length; the stack checks channels
    write_features(out_path, features.numpy(), stack.geometry, decoded.sample_rate, config)
    return decoded.sample_rate, decoded.frames, list(features.shape)


# ---------------------------------------------------------------- the job's pieces
@dataclass(frozen=True)
class _ChannelSource:
    count: int
    source: str  # what fixed it, for messages


def _check_channels(path: str, have: int, channels: _ChannelSource) -> None:
    """Raise ``InputError`` naming the fix unless a file's channel count (after the policy) is the job's."""
    if have == channels.count:
        return
    if channels.count == 1:
        fix = "audio.channels=mono (or audio.channels=[0] to keep the first channel)"
    else:
        pick = ",".join(str(i % have) for i in range(channels.count))
        fix = f"audio.channels=mono for a mono job, or audio.channels=[{pick}] to make {channels.count} channels"
    raise InputError(
        f"{path}: has {have} channel(s) after the channel policy but this job's stack takes "
        f"{channels.count} (fixed by {channels.source}); rerun with {fix}"
    )


def _check_item(audio: Audio, geometry: StackGeometry, channels: _ChannelSource, path: str) -> None:
    """Raise ``InputError`` unless the decoded file fits the job's stack (channels, length)."""
    _check_channels(path, int(audio.waveform.shape[0]), channels)
    geometry.check_input_length(audio.frames, what=path)


@dataclass
class _Decoded:
    audio: Optional[Audio]  # None: a long file, for process_long_file
    seconds: float


def _decode(
    path: str, audio: AudioConfig, long_after_s: Optional[float], decode: Callable, options: Optional[dict] = None
) -> _Decoded:
    """Runs in a decode worker (thread, process or Ray task). ``path``: a path or URL (its
    header is read in place; ``decode`` must take URLs: ``storage.decode``)."""
    t0 = time.perf_counter()
    if long_after_s is not None:
        info = storage.probe(path, options)
        if info.duration_s > long_after_s:
            return _Decoded(None, time.perf_counter() - t0)
    return _Decoded(decode(path, audio), time.perf_counter() - t0)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_message(path: str, err: BaseException, stage: str, debug: bool) -> str:
    if isinstance(err, PipelineError):
        return str(err)
    if debug:
        log.error("%s: %s failed:\n%s", path, stage, "".join(traceback.format_exception(err)))
    detail = _one_line(str(err)) or type(err).__name__
    return f"{path}: unexpected error while {stage} ({type(err).__name__}: {detail}); rerun with debug=true for a traceback"


class _InlineExecutor(cf.Executor):
    """``runtime.num_workers=0``: decode in the main thread."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller like a worker's error
            if isinstance(err, KeyboardInterrupt):
                raise
            fut.set_exception(err)
        return fut


def _process_context() -> multiprocessing.context.BaseContext:
    """Worker processes start from a clean interpreter (never ``fork`` a process using torch)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["conv_pipeline.audio"])
        return ctx
    return multiprocessing.get_context("spawn")


class _Decoders:
    """The decode workers: threads (default), processes, or inline.

    With processes, a worker that dies (a decoder crash) breaks the pool: the files it had in
    flight are decoded again one at a time in a fresh pool, and the one that kills its worker
    again gets a ``failed`` record; the job goes on.
    """

    def __init__(self, kind: str, workers: int) -> None:
        self.kind = kind if workers > 0 else "inline"
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.Executor:
        if self.kind == "inline":
            return _InlineExecutor()
        if self.kind == "process":
            # the workers resample with torch: give them the job's thread count (the parent's
            # torch.set_num_threads does not reach them), or their OpenMP threads oversubscribe
            return cf.ProcessPoolExecutor(
                self.workers,
                mp_context=_process_context(),
                initializer=torch.set_num_threads,
                initargs=(torch.get_num_threads(),),
            )
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

    def submit(self, *args: Any) -> cf.Future:
        return self.pool.submit(_decode, *args)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def run_alone(self, *args: Any) -> cf.Future:
        """Decode one file alone and wait; a dead worker gives a ``BrokenProcessPool`` result
        (and a fresh pool for what follows)."""
        fut = self.submit(*args)
        cf.wait([fut])
        if isinstance(fut.exception(), BrokenProcessPool):
            self.restart()
        return fut

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Item:
    index: int
    path: str
    out_rel: str
    decoded: Optional[_Decoded] = None
    compute_s: float = 0.0


def clean_temp_files(out_dir: Path | str, options: Optional[dict] = None) -> int:
    """Remove ``.<name>.tmp-xxxxxxxx`` files (``writer.atomic_write``'s) left under ``out_dir``
    (a folder or URL) by a killed run. Returns how many were removed."""
    return OutputDir(out_dir, options).clean_temp_files(TEMP_RE)


class _OutputLock:
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


def _check_same_audio(out_dir: Path, config: dict[str, Any], overwrite: bool) -> None:
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


def _job_channels(
    cfg: Config, paths: Sequence[str], ckpt: Optional[int], options: Optional[dict] = None
) -> tuple[Optional[_ChannelSource], dict[str, str]]:
    """The stack's input channels for the whole job, and the probe errors met on the way."""
    errors: dict[str, str] = {}
    policy = cfg.audio.channels
    if ckpt is not None:
        count, source = ckpt, f"model.checkpoint={cfg.model.checkpoint}"
    elif cfg.model.in_channels != "auto":
        count, source = int(cfg.model.in_channels), f"model.in_channels={cfg.model.in_channels}"
    elif policy != "keep":
        count, source = policy_channel_count(policy, 0), f"audio.channels={policy}"
    else:
        count = None
        for p in paths:
            try:
                count, source = storage.probe(p, options).channels, f"the first input, {p}"
                break
            except PipelineError as err:
                errors[p] = str(err)
        if count is None:
            return None, errors
    if policy != "keep":  # a fixed count after the policy: a mismatch is a config error
        resolve_in_channels(cfg.model, policy_channel_count(policy, 0), ckpt)
    else:
        resolve_in_channels(cfg.model, count, ckpt)  # groups must divide it
    return _ChannelSource(int(count), source), errors


class _Progress:
    """A tqdm bar on a terminal, else a log line every ``every_s`` seconds."""

    def __init__(self, total: int, mode: str, every_s: float) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.every_s = mode, total, every_s
        self.done = self.failed = 0
        self.audio_s = 0.0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if mode == "bar" and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True, smoothing=0.05)

    def update(self, record: ManifestRecord) -> None:
        self.done += 1
        if record.status == "failed":
            self.failed += 1
        elif record.duration_s:
            self.audio_s += record.duration_s
        now = time.perf_counter()
        speed = self.audio_s / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{speed:.0f} audio s/s, {self.failed} failed", refresh=False)
            self.bar.update(1)
        elif self.mode == "log" and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "batch: %d/%d files (%.0f%%), %d failed, %.0f audio s/s, ETA %s",
                self.done, self.total, 100 * self.done / self.total, self.failed, speed, _hms(eta),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- the job
@dataclass
class BatchSummary:
    """What a batch job did. ``exit_code``: 1 if any input failed, else 0."""

    output_dir: Path | str  # a URL for a remote output.dir
    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0  # audio processed by this run (ok files)
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error)
    in_channels: Optional[int] = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def speed(self) -> float:
        """Audio seconds per wall-clock second (times real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def format(self, max_failures: int = 50) -> str:
        lines = [
            f"batch: {self.total} input(s): {self.ok} ok, {self.skipped} skipped, {self.failed} failed; "
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
            f"({self.speed:.0f}x real time); manifest: {storage.join(self.output_dir, MANIFEST_NAME)}"
        ]
        if self.failures:
            lines.append("failed:")
            lines += [f"  {err}" for _, err in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                lines.append(f"  ... and {len(self.failures) - max_failures} more (status \"failed\" in the manifest)")
        return "\n".join(lines)


def _batch_options(cfg: Config) -> BatchOptions:
    opts = getattr(cfg, "batch", None)
    if opts is None:
        return BatchOptions()
    if isinstance(opts, dict):
        return BatchOptions(**opts)
    return opts


def _engine_config(cfg: Config) -> EngineConfig:
    engine = getattr(cfg, "engine", None)
    if engine is None:
        return EngineConfig()
    return EngineConfig(**engine) if isinstance(engine, dict) else engine


def _storage_config(cfg: Config) -> StorageConfig:
    st = getattr(cfg, "storage", None)
    if st is None:
        return StorageConfig()
    return StorageConfig(**st) if isinstance(st, dict) else st


def storage_options(cfg: Config) -> dict[str, Any]:
    """``storage.options`` as a plain dict (``{}`` when null); ``ConfigError`` unless a mapping."""
    from collections.abc import Mapping

    options = _storage_config(cfg).options
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"storage.options must be a mapping of fsspec options like '{{anon: true}}', got {options!r}"
        )
    return dict(options)


def written_config(cfg: Config) -> dict[str, Any]:
    """The resolved config written to ``config.yaml`` and ``.npz`` files: what the features were
    computed with. ``engine`` and ``storage`` (where the job ran; credentials may be among
    ``storage.options`` and ``engine.env_vars``) are left out, so both engines write the same."""
    config = plain_config(cfg)
    config.pop("engine", None)
    config.pop("storage", None)
    return config


def _validate_runtime(cfg: Config, opts: BatchOptions) -> None:
    rt = cfg.runtime

    def bad(key: str, allowed: str, got: object) -> ConfigError:
        return ConfigError(f"{key} must be {allowed}, got {got!r}")

    if not isinstance(rt.batch_size, int) or isinstance(rt.batch_size, bool) or rt.batch_size < 1:
        raise bad("runtime.batch_size", "an integer >= 1", rt.batch_size)
    if not isinstance(rt.num_workers, int) or isinstance(rt.num_workers, bool) or rt.num_workers < 0:
        raise bad("runtime.num_workers", "an integer >= 0 (0 decodes in the main thread)", rt.num_workers)
    if rt.chunk_seconds is not None and not rt.chunk_seconds > 0:
        raise bad("runtime.chunk_seconds", "null or a number of seconds > 0", rt.chunk_seconds)
    if opts.workers not in ("thread", "process"):
        raise bad("batch.workers", "'thread' or 'process'", opts.workers)
    if opts.progress not in ("auto", "bar", "log", "none"):
        raise bad("batch.progress", "one of auto, bar, log, none", opts.progress)
    if not opts.extensions:
        raise bad("batch.extensions", "a non-empty list like [wav, flac]", list(opts.extensions))
    if not opts.log_every_s > 0:
        raise bad("batch.log_every_s", "a number of seconds > 0", opts.log_every_s)
    if opts.long_file_seconds is not None and not opts.long_file_seconds > 0:
        raise bad("batch.long_file_seconds", "null or a number of seconds > 0", opts.long_file_seconds)
    engine = _engine_config(cfg)
    if engine.name not in ("local", "ray"):
        raise bad("engine", "local or ray (engine=ray runs the job on a Ray cluster)", engine.name)
    if not _storage_config(cfg).manifest_flush_s > 0:
        raise bad("storage.manifest_flush_s", "a number of seconds > 0", _storage_config(cfg).manifest_flush_s)
    storage_options(cfg)


def compute_threads(num_workers: int, device: torch.device) -> int:
    """Torch intra-op threads while the job runs: the cores shared out between the decode
    workers (their resampling calls torch too) and the main thread's stack.

    Never more threads than cores in total: torch's OpenMP threads wait for each other at
    every parallel region, so an oversubscribed (or shared, busy) machine makes each region
    wait for a descheduled thread. Measured on the 2-core machine with another process
    busy: one 6 s resample took 160 ms with 2 threads and 3 ms with 1 (BENCHMARKS.md).
    """
    del device  # the same on GPU: the CPU work left is decoding and resampling
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (num_workers + 1))


def run_batch(
    cfg: Any,
    output_dir: Optional[str] = None,
    decode: Callable[[str, AudioConfig], Audio] = load_audio,
) -> BatchSummary:
    """Process every input of ``cfg.input`` (see ``find_inputs``) into ``output.dir``.

    ``cfg``: a ``BatchConfig``/``Config`` or a composed Hydra config. ``output_dir`` is used
    when ``cfg.output.dir`` is null (a multirun job's folder), else ``feats``. ``decode``:
    ``path, AudioConfig -> Audio`` (``load_audio``; a module-level function with
    ``batch.workers=process``; local engine only; worker processes import the main module, so a
    script calling ``run_batch`` with processes needs the ``if __name__ == "__main__":`` guard,
    as ``scripts/batch_process.py`` has). Raises ``PipelineError`` (exit 2) for config
    and setup problems, before any audio is decoded; per-file problems become ``failed`` records.
    ``engine.name=ray`` runs step 4 on Ray (``conv_pipeline.ray_engine``); its resource settings
    are checked against the cluster before anything is written.
    """
    t_start = time.perf_counter()
    cfg = to_config(cfg)
    opts = _batch_options(cfg)
    if not cfg.input:
        raise ConfigError("no input given: add input=corpus/ (a folder, a glob like 'corpus/**/*.wav' or a list file)")
    validate_model(cfg.model)
    validate_audio(cfg.audio)
    _validate_runtime(cfg, opts)
    options = storage_options(cfg)
    out = OutputDir(cfg.output.dir or output_dir or DEFAULT_OUTPUT_DIR, options)
    runner = None
    if _engine_config(cfg).name == "ray":
        from .ray_engine import RayRunner

        runner = RayRunner(cfg, _engine_config(cfg), out)  # static checks (Ray installed, keys, URLs)
        device = torch.device("cpu")  # the driver only writes the weights; each actor picks its device
    else:
        device = resolve_device(cfg.runtime.device)
    fmt = cfg.output.format.value if isinstance(cfg.output.format, OutputFormat) else str(cfg.output.format)
    ckpt = checkpoint_in_channels(cfg.model.checkpoint, cfg.model) if cfg.model.checkpoint else None

    inputs = find_inputs(cfg.input, opts.extensions, options)
    outputs = plan_outputs(inputs.rels, fmt)
    channels, probe_errors = _job_channels(cfg, inputs.paths, ckpt, options)
    try:
        if runner is not None:
            runner.start()  # connects; impossible resource settings fail here, nothing written
        out.create()
        lock = _OutputLock(out.path) if out.path is not None else None  # no lock on remote storage
        try:
            return _run_locked(cfg, opts, inputs, outputs, channels, probe_errors, out, device, decode, t_start, runner)
        finally:
            if lock is not None:
                lock.release()
    finally:
        if runner is not None:
            runner.close()


def _run_locked(
    cfg: Config,
    opts: BatchOptions,
    inputs: InputSet,
    outputs: list[str],
    channels: Optional[_ChannelSource],
    probe_errors: dict[str, str],
    out: OutputDir,
    device: torch.device,
    decode: Callable,
    t_start: float,
    runner: Any = None,
) -> BatchSummary:
    summary = BatchSummary(output_dir=out.path if out.path is not None else out.spec, total=len(inputs.paths))
    config = written_config(cfg)
    stack: Optional[ConvStack] = None
    if channels is not None:
        config["model"]["in_channels"] = channels.count
        summary.in_channels = channels.count
        stack = build_stack(cfg.model, channels.count, seed=cfg.seed).to(device).eval()
        with out.metadata([WEIGHTS_NAME, CONFIG_NAME]) as meta:  # remote: a staged copy, committed after
            _check_same_audio(meta, config, cfg.overwrite)
            prepare_output_dir(meta, stack, cfg.overwrite, config)
    # logged once every setup check has passed, so a refused job prints its error line only
    log.info("batch: %d input(s) (%s, root %s) -> %s", len(inputs.paths), inputs.kind, inputs.root, out.display)
    if channels is not None:
        log.info("batch: stack takes %d channel(s) (fixed by %s)", channels.count, channels.source)

    removed = out.clean_temp_files(TEMP_RE)
    if removed:
        log.info("batch: removed %d temporary file(s) left by an interrupted run", removed)
    manifest = ManifestSink(out, _storage_config(cfg).manifest_flush_s)  # local: ends a torn last line
    try:
        _run_manifest(cfg, opts, inputs, outputs, channels, probe_errors, out, manifest, stack, config, device, decode, summary, runner)
    finally:
        manifest.close()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _run_manifest(
    cfg: Config,
    opts: BatchOptions,
    inputs: InputSet,
    outputs: list[str],
    channels: Optional[_ChannelSource],
    probe_errors: dict[str, str],
    out: OutputDir,
    manifest: ManifestSink,
    stack: Optional[ConvStack],
    config: dict[str, Any],
    device: torch.device,
    decode: Callable,
    summary: BatchSummary,
    runner: Any,
) -> None:
    # Resume: an output under its final name is complete (atomic writes); skip it.
    previous = {r.output: r for r in manifest.read().values() if r.status in ("ok", "skipped") and r.output}
    existing = out.files() if out.remote else None  # one listing instead of a request per file
    todo: list[_Item] = []
    early: list[ManifestRecord] = []
    for i, (path, rel) in enumerate(zip(inputs.paths, outputs)):
        if stack is None:  # no input could even be probed: nothing to build a stack for
            early.append(ManifestRecord(input=path, status="failed", error=probe_errors.get(path) or f"{path}: not probed"))
        elif not cfg.overwrite and (rel in existing if existing is not None else out.local(rel).is_file()):
            prev = previous.get(rel)
            early.append(
                ManifestRecord(
                    input=path, status="skipped", output=rel,
                    sample_rate=prev.sample_rate if prev else None,
                    num_samples=prev.num_samples if prev else None,
                    duration_s=prev.duration_s if prev else None,
                    shape=prev.shape if prev else None,
                    seconds=0.0,
                )
            )
        else:
            todo.append(_Item(i, path, rel))
    manifest.add(early)
    for rec in early:
        _count(summary, rec)
    if early:
        log.info("batch: %d input(s) already done (skipped), %d to process", summary.skipped, len(todo))

    if todo and stack is not None and channels is not None:
        if runner is not None:
            runner.run(_Work(cfg, None, channels, out, device, config), todo, manifest, summary, opts)
            return
        threads_before = torch.get_num_threads()
        torch.set_num_threads(compute_threads(cfg.runtime.num_workers, device))
        try:
            _Engine(cfg, opts, stack, channels, out, manifest, device, config, decode, summary).run(todo)
        finally:
            torch.set_num_threads(threads_before)


def _count(summary: BatchSummary, rec: ManifestRecord) -> None:
    if rec.status == "ok":
        summary.ok += 1
        summary.audio_seconds += rec.duration_s or 0.0
    elif rec.status == "skipped":
        summary.skipped += 1
    else:
        summary.failed += 1
        summary.failures.append((rec.input, rec.error or ""))


def _take_batch(pool: list[_Item], size: int) -> list[_Item]:
    """Remove and return the ``size`` files of most similar length from ``pool``: among runs of
    consecutive files in length order, the one whose padding costs the least relative to its
    valid samples (new arrivals are random, so the shortest ones would not be similar)."""
    pool.sort(key=lambda it: it.decoded.audio.frames)  # type: ignore[union-attr]
    if len(pool) <= size:
        batch = pool[:]
        pool.clear()
        return batch
    frames = [it.decoded.audio.frames for it in pool]  # type: ignore[union-attr]
    best, best_waste = 0, float("inf")
    total = sum(frames[:size])
    for i in range(len(pool) - size + 1):
        if i:
            total += frames[i + size - 1] - frames[i - 1]
        waste = size * frames[i + size - 1] / total
        if waste < best_waste:
            best, best_waste = i, waste
    batch = pool[best : best + size]
    del pool[best : best + size]
    return batch


class _Work:
    """What happens to a batch of decoded files, or to one long file, in either engine (the local
    engine's main and writer threads, a Ray actor): the stack (a batch that fails is split into
    single files), each file's features written atomically under ``output.dir`` (a folder or a
    URL), and a manifest record for every outcome. Nothing here touches the manifest.

    Picklable without its stack: the Ray engine ships it to each actor, which ``bind``s its own
    stack and device.
    """

    def __init__(
        self,
        cfg: Config,
        stack: Optional[ConvStack],
        channels: _ChannelSource,
        out: OutputDir,
        device: torch.device,
        config: dict[str, Any],
    ) -> None:
        self.cfg, self.stack, self.channels, self.out, self.device, self.config = cfg, stack, channels, out, device, config
        self.options = storage_options(cfg)
        self.chunk_seconds = cfg.runtime.chunk_seconds
        self.long_after_s = _batch_options(cfg).long_file_seconds  # longer files: long_file()
        self.debug = bool(cfg.debug)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stack": None}

    def bind(self, stack: ConvStack, device: torch.device) -> "_Work":
        self.stack, self.device = stack, device
        return self

    @property
    def geometry(self) -> StackGeometry:
        if self.stack is not None:
            return self.stack.geometry
        if getattr(self, "_geometry", None) is None:  # a Ray decode task: no stack, same geometry
            self._geometry = validate_model(self.cfg.model)
        return self._geometry

    def accept(self, item: _Item, decoded: Optional[_Decoded], err: Optional[BaseException]) -> Optional[ManifestRecord]:
        """A decode finished (``decoded``, or the exception ``err``): a ``failed`` record, or None
        when the file goes on (``item.decoded`` set; its audio is None for a long file)."""
        if err is not None:
            return self.failed(item, _error_message(item.path, err, "decoding", self.debug))
        assert decoded is not None
        item.decoded = decoded
        if decoded.audio is None:
            return None
        try:
            _check_item(decoded.audio, self.geometry, self.channels, item.path)
        except PipelineError as e:
            return self.failed(item, str(e), decoded.audio)
        return None

    @staticmethod
    def item_seconds(item: _Item) -> float:
        return (item.decoded.seconds if item.decoded else 0.0) + item.compute_s

    def failed(self, item: _Item, error: str, audio: Optional[Audio] = None) -> ManifestRecord:
        return ManifestRecord(
            input=item.path,
            status="failed",
            error=_one_line(error),
            sample_rate=audio.sample_rate if audio else None,
            num_samples=audio.frames if audio else None,
            duration_s=audio.frames / audio.sample_rate if audio else None,
            seconds=round(self.item_seconds(item), 4),
        )

    def compute(self, batch: list[_Item]) -> list[tuple[_Item, Any]]:
        """``(item, features)`` for every file the stack ran on, ``(item, failed record)`` for the others."""
        assert self.stack is not None
        t0 = time.perf_counter()
        waves = [it.decoded.audio.waveform for it in batch]  # type: ignore[union-attr]
        try:
            feats = extract_batch(waves, self.stack, self.device)
        except Exception as err:  # noqa: BLE001
            if len(batch) > 1:  # find the file that breaks the stack; the others go on
                return [res for it in batch for res in self.compute([it])]
            it = batch[0]
            return [(it, self.failed(it, _error_message(it.path, err, "running the stack", self.debug), it.decoded.audio))]  # type: ignore[union-attr]
        share = (time.perf_counter() - t0) / len(batch)
        out: list[tuple[_Item, Any]] = []
        for it, y in zip(batch, feats):
            it.compute_s = share
            finite = torch.isfinite(y)
            if not bool(finite.all()):  # float32 overflow: refuse, naming the input, never write it
                err = overflow_error(it.path, int(y.numel() - finite.sum()), float(it.decoded.audio.waveform.abs().max()))  # type: ignore[union-attr]
                out.append((it, self.failed(it, str(err), it.decoded.audio)))  # type: ignore[union-attr]
            else:
                out.append((it, y))
        return out

    def write(self, item: _Item, features: torch.Tensor) -> ManifestRecord:
        """Write one file's features atomically; its record (``failed`` if the write failed)."""
        assert item.decoded is not None and item.decoded.audio is not None
        audio = item.decoded.audio
        t0 = time.perf_counter()
        try:
            with self.out.writing(item.out_rel) as out_path:
                write_features(out_path, features.numpy(), self.geometry, audio.sample_rate, self.config)
        except Exception as err:  # noqa: BLE001 - one file's write problem fails that file only
            msg = str(err) if isinstance(err, PipelineError) else f"cannot write {self.out.url(item.out_rel)}: {_one_line(str(err)) or type(err).__name__}"
            return ManifestRecord(input=item.path, status="failed", error=_one_line(msg))
        return ManifestRecord(
            input=item.path,
            status="ok",
            output=item.out_rel,
            sample_rate=audio.sample_rate,
            num_samples=audio.frames,
            duration_s=audio.frames / audio.sample_rate,
            shape=list(features.shape),
            seconds=round(self.item_seconds(item) + time.perf_counter() - t0, 4),
        )

    def long_file(self, item: _Item) -> ManifestRecord:
        """A file longer than ``batch.long_file_seconds``: ``process_long_file`` on a local copy
        of a remote input, into a local file committed to ``output.dir``."""
        assert self.stack is not None
        t0 = time.perf_counter()
        try:
            info = storage.probe(item.path, self.options)
            _check_channels(item.path, policy_channel_count(self.cfg.audio.channels, info.channels), self.channels)
            with storage.fetched(item.path, self.options) as local_in, self.out.writing(item.out_rel) as out_path:
                sr, n, shape = process_long_file(
                    local_in, out_path, self.stack, self.cfg.audio, self.device, self.config, self.chunk_seconds
                )
        except Exception as err:  # noqa: BLE001
            item.compute_s = time.perf_counter() - t0
            return self.failed(item, _error_message(item.path, err, "processing a long file", self.debug))
        return ManifestRecord(
            input=item.path, status="ok", output=item.out_rel, sample_rate=sr, num_samples=n,
            duration_s=n / sr, shape=shape, seconds=round(self.item_seconds(item) + time.perf_counter() - t0, 4),
        )


class _Engine:
    """Decode workers -> length-sorted pool -> padded batches in the main thread -> writer thread."""

    def __init__(
        self,
        cfg: Config,
        opts: BatchOptions,
        stack: ConvStack,
        channels: _ChannelSource,
        out: OutputDir,
        manifest: ManifestSink,
        device: torch.device,
        config: dict[str, Any],
        decode: Callable,
        summary: BatchSummary,
    ) -> None:
        self.cfg, self.opts, self.stack, self.channels = cfg, opts, stack, channels
        self.out, self.manifest, self.device, self.config, self.summary = out, manifest, device, config, summary
        self.work = _Work(cfg, stack, channels, out, device, config)
        self.decode = storage.decode(decode, self.work.options)  # paths and URLs
        self.batch_size = cfg.runtime.batch_size
        self.chunk_seconds = cfg.runtime.chunk_seconds
        self.debug = bool(cfg.debug)
        self.writer = cf.ThreadPoolExecutor(1, thread_name_prefix="write")
        self.writes: list[cf.Future] = []
        self.max_writes = 2 * self.batch_size + 4

    # -- records: every record goes through the single writer thread, in order
    def _append(self, rec: ManifestRecord) -> ManifestRecord:
        self.manifest.add([rec])
        return rec

    def _record_failed(self, item: _Item, error: str, audio: Optional[Audio] = None) -> None:
        rec = self.work.failed(item, error, audio)
        self._submit_write(lambda: self._append(rec))

    def _write_ok(self, item: _Item, features: torch.Tensor) -> ManifestRecord:
        """Runs in the writer thread: write the features atomically, then append the record."""
        return self._append(self.work.write(item, features))

    def _submit_write(self, fn: Callable[[], ManifestRecord]) -> None:
        self.writes.append(self.writer.submit(fn))
        if len(self.writes) > self.max_writes:  # bounded backlog: wait for the oldest
            cf.wait([self.writes[0]])
        self._harvest_writes()

    def _harvest_writes(self, wait: bool = False) -> None:
        if wait:
            cf.wait(self.writes)
        pending = []
        for fut in self.writes:
            if not fut.done():
                pending.append(fut)
                continue
            err = fut.exception()
            if err is not None:  # the manifest itself cannot be written
                raise OutputError(f"cannot append to {storage.join(self.out.display, MANIFEST_NAME)}: {_one_line(str(err))}")
            rec = fut.result()
            _count(self.summary, rec)
            self.progress.update(rec)
        self.writes = pending

    # -- compute
    def _compute(self, batch: list[_Item]) -> None:
        for it, res in self.work.compute(batch):
            if isinstance(res, ManifestRecord):
                self._submit_write(lambda rec=res: self._append(rec))
            else:
                self._submit_write(lambda it=it, f=res: self._write_ok(it, f))

    def _long_file(self, item: _Item) -> None:
        rec = self.work.long_file(item)
        self._submit_write(lambda: self._append(rec))

    def _accept(self, item: _Item, fut: cf.Future, pool: list[_Item]) -> None:
        """A decode finished: into the pool, to the long-file path, or a failed record."""
        err = fut.exception()
        if isinstance(err, BrokenProcessPool):
            raise err
        rec = self.work.accept(item, None if err is not None else fut.result(), err)
        if rec is not None:
            self._submit_write(lambda: self._append(rec))
        elif item.decoded.audio is None:  # type: ignore[union-attr]
            self._long_file(item)
        else:
            pool.append(item)

    def run(self, todo: list[_Item]) -> None:
        self.progress = _Progress(len(todo), self.opts.progress, self.opts.log_every_s)
        decoders = _Decoders(self.opts.workers, self.cfg.runtime.num_workers)
        args = (self.cfg.audio, self.work.long_after_s, self.decode, self.work.options)
        max_inflight = max(1, 2 * self.cfg.runtime.num_workers + self.batch_size)
        window = SORT_WINDOW * self.batch_size
        queue: Iterator[_Item] = iter(todo)
        inflight: dict[cf.Future, _Item] = {}
        pool: list[_Item] = []
        pool_samples = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < max_inflight:
                    item = next(queue, None)
                    if item is None:
                        exhausted = True
                        break
                    inflight[decoders.submit(item.path, *args)] = item
                # harvest finished decodes
                done = [f for f in inflight if f.done()]
                if not done and inflight and len(pool) < (self.batch_size if exhausted else window) and pool_samples < POOL_MAX_SAMPLES:
                    done = list(cf.wait(inflight, return_when=cf.FIRST_COMPLETED).done)
                broken = False
                for f in done:
                    if isinstance(f.exception(), BrokenProcessPool):
                        broken = True
                    else:
                        self._accept(inflight.pop(f), f, pool)
                if broken:  # a worker process died: its files are retried one at a time
                    self._recover(decoders, inflight, pool, args)
                pool_samples = sum(it.decoded.audio.waveform.numel() for it in pool)  # type: ignore[union-attr]
                drain = exhausted and not inflight
                # once every file is submitted, a full batch need not wait for a full window:
                # the stack then overlaps the last decodes
                target = self.batch_size if exhausted else window
                while pool and (len(pool) >= target or pool_samples >= POOL_MAX_SAMPLES or drain):
                    batch = _take_batch(pool, self.batch_size)
                    pool_samples -= sum(it.decoded.audio.waveform.numel() for it in batch)  # type: ignore[union-attr]
                    self._compute(batch)
                    if not drain:
                        break
                self._harvest_writes()
                if drain and not pool:
                    break
            self._harvest_writes(wait=True)
        finally:
            decoders.close()
            self.writer.shutdown(wait=True)
            self.progress.close()

    def _recover(self, decoders: _Decoders, inflight: dict[cf.Future, _Item], pool: list[_Item], args: tuple) -> None:
        """A worker process died: decode each file it may have held alone, in a fresh pool."""
        suspects = list(inflight.values())
        inflight.clear()
        log.warning("batch: a decode worker died; retrying its %d file(s) one at a time", len(suspects))
        decoders.restart()
        for item in suspects:
            fut = decoders.run_alone(item.path, *args)
            if isinstance(fut.exception(), BrokenProcessPool):
                self._record_failed(
                    item,
                    f"{item.path}: the decoder crashed on this file (its worker process died); "
                    "the file is probably corrupt: check or re-encode it",
                )
            else:
                self._accept(item, fut, pool)
