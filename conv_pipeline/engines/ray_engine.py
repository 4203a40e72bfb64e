"""``engine=ray``: the batch job's processing step as a Ray Data pipeline.

``engines.job.run_batch`` does everything else exactly as with the local engine (config checks, finding
the inputs, planning the outputs, fixing the channel count, writing ``model.safetensors`` and
``config.yaml`` once, temp clean-up, resume, the manifest and the summary); ``RayRunner.run``
gets the files still to do and returns their records:

    inputs (the driver's list: path or URL, output name)
      -> read and decode: CPU tasks (``engine.read_cpus`` each), ``engines.work.decode_item`` with
         ``load.remote.UrlDecoder`` (a remote file is copied to the worker and decoded there), checked
         against the job's channel count and the stack's minimum length (``Work.accept``)
      -> the conv stack: an actor pool (``engine.num_actors``); each actor builds the stack once
         from ``output.dir/model.safetensors`` (on its GPU with ``engine.num_gpus_per_actor``),
         cuts its rows into padded batches of ``runtime.batch_size`` files of similar length
         (``engines.local.take_batch``), and writes each file's features straight to ``output.dir``
         (``Work.write``: atomic, local or remote); a long file (``batch.long_file_seconds``)
         goes through ``process_long_file``, the local engine's chunked path (``Work.long_file``)
      -> one manifest record per file back to the driver (small JSON rows; no audio or features
         pass through the driver), which appends it to the manifest and updates the progress.

Every per-file problem is a ``failed`` record made where it happens. A worker that dies (a
crashing decoder) loses its block after Ray's retries; its files get a ``failed`` record saying
so (a rerun retries them) and the job goes on.

Resources (``plan_resources``): the actor pool holds its CPUs for the whole job, so actors that
take every CPU leave none for the decode tasks and the pipeline never advances. Defaults come
from ``ray.cluster_resources()``: a quarter of the CPUs (at least one decode task's worth) stays
for decoding, the actors share the rest (one CPU each, fewer actors with fractions on a tiny
cluster); GPU actors default to one per GPU. Settings that cannot run (more GPUs per actor than
the cluster has, actors that leave no CPU for decoding) are a one-line ``ConfigError`` before
anything is written.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import math
import os
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from conv_pipeline.config.schema import BatchOptions, Config, EngineConfig
from conv_pipeline.engines.local import SORT_WINDOW, take_batch
from conv_pipeline.engines.progress import BatchSummary, Progress, count_record
from conv_pipeline.engines.work import Decoded, Item, Work, decode_item
from conv_pipeline.errors import ConfigError, PipelineError
from conv_pipeline.fs import one_line
from conv_pipeline.load.audio import Audio, AudioInfo, load_audio
from conv_pipeline.load.remote import UrlDecoder, fetched
from conv_pipeline.sink.jobdir import WEIGHTS_NAME
from conv_pipeline.sink.manifest import ManifestRecord, record_from_data
from conv_pipeline.sink.manifest_sink import ManifestSink
from conv_pipeline.sink.outputs import OutputDir
from conv_pipeline.stack.spectral import fix_weights
from conv_pipeline.stack.stack import build_stack

log = logging.getLogger("conv_pipeline.batch")


# ---------------------------------------------------------------- resources
@dataclass(frozen=True)
class Sizing:
    """What the pipeline asks Ray for."""

    num_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    read_cpus: float  # per decode task
    torch_threads: int  # intra-op threads in each actor

    def describe(self) -> str:
        gpu = f", {self.gpus_per_actor:g} GPU" if self.gpus_per_actor else ""
        return (
            f"{self.num_actors} stack actor(s) x {self.cpus_per_actor:g} CPU{gpu}, "
            f"decode tasks {self.read_cpus:g} CPU each"
        )


def _floor2(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


def plan_resources(engine: EngineConfig, cpus: float, gpus: float) -> Sizing:
    """Actor count and CPUs/GPUs per actor and per decode task for a cluster with ``cpus`` CPUs
    and ``gpus`` GPUs (see the module docstring). ``ConfigError`` for settings that cannot run."""
    if cpus <= 0:
        raise ConfigError("the Ray cluster reports no CPUs; start its nodes with CPUs or use engine=local")
    g = float(engine.num_gpus_per_actor or 0)
    n = engine.num_actors
    if g > 0 and gpus < g:
        raise ConfigError(
            f"engine.num_gpus_per_actor={g:g} but the Ray cluster has {gpus:g} GPU(s); use "
            "engine.num_gpus_per_actor=0 (CPU actors) or join a cluster with GPUs (engine.address=...)"
        )
    if g > 0 and n is not None and n * g > gpus + 1e-9:
        raise ConfigError(
            f"engine.num_actors={n} x engine.num_gpus_per_actor={g:g} needs {n * g:g} GPUs but the Ray "
            f"cluster has {gpus:g}; use engine.num_actors={int(gpus // g)} or fewer"
        )
    r = float(engine.read_cpus) if engine.read_cpus is not None else min(1.0, _floor2(cpus / 2))
    if r > cpus:
        raise ConfigError(f"engine.read_cpus={r:g} but the Ray cluster has {cpus:g} CPU(s); use engine.read_cpus=1 or less")
    spare = cpus - max(r, cpus / 4)  # what the actors get by default
    if g > 0:
        n = n if n is not None else max(1, int(gpus // g))
    c = engine.num_cpus_per_actor
    if c is None:
        if n is None:
            c = 1.0 if spare >= 1 else _floor2(spare)
            n = max(1, int(spare // c)) if c > 0 else 1
        else:
            c = min(1.0, _floor2(spare / n)) if g > 0 else _floor2(spare / n)
    elif n is None:
        n = int((cpus - r) // c) if c > 0 else 0
        n = min(n, max(1, int(spare // c)))
        if n < 1:
            raise ConfigError(
                f"engine.num_cpus_per_actor={c:g} leaves no CPU for the decode tasks (the Ray cluster has "
                f"{cpus:g} CPU(s), decode tasks take engine.read_cpus={r:g}); use engine.num_cpus_per_actor={_floor2(cpus - r):g} or less"
            )
    if c <= 0:
        raise ConfigError(
            f"engine.num_actors={n} leaves no CPU per actor on a Ray cluster with {cpus:g} CPU(s) "
            f"(decode tasks keep {max(r, cpus / 4):g}); use fewer actors"
        )
    if n * c + r > cpus + 1e-9:
        raise ConfigError(
            f"engine.num_actors={n} x engine.num_cpus_per_actor={c:g} = {n * c:g} CPU(s) leaves less than one "
            f"decode task (engine.read_cpus={r:g}) on a Ray cluster with {cpus:g} CPU(s): the job would hang; "
            f"lower one of them (e.g. engine.num_cpus_per_actor={_floor2((cpus - r) / n):g})"
        )
    return Sizing(int(n), float(c), g, r, max(1, int(c)))


# ---------------------------------------------------------------- the pipeline's functions
DECODE_RETRIES = 2


ACTOR_TASK_RETRIES = 2


_EMPTY_ROW = {"kind": "", "wave": b"", "channels": 0, "frames": 0, "sample_rate": 0, "decode_s": 0.0, "record": ""}


def _decode_row(row: dict[str, Any], work: Work) -> dict[str, Any]:
    """A CPU task: read and decode one input (``engines.work.decode_item``), check it (``Work.accept``).

    ``kind``: ``audio`` (``wave``: float32 ``(channels, frames)`` bytes), ``long`` (for the
    actor's chunked path) or ``record`` (a ``failed`` record, JSON)."""
    item = Item.from_row(row)
    out = {**item.row(), **_EMPTY_ROW}
    decode = UrlDecoder(load_audio, work.options)
    try:
        decoded, err = decode_item(item.path, work.cfg.audio, work.long_after_s, decode, work.options), None
    except Exception as e:  # noqa: BLE001 - becomes this file's record
        decoded, err = None, e
    rec = work.accept(item, decoded, err)
    out["fingerprint"] = item.fingerprint or ""  # taken by decode_item, before the read
    if rec is not None:
        out.update(kind="record", record=rec.to_json())
        return out
    assert item.decoded is not None
    out["decode_s"] = float(item.decoded.seconds)
    audio = item.decoded.audio
    if audio is None:
        out["kind"] = "long"
        return out
    wave = audio.waveform.contiguous().numpy()  # (C, T) float32
    out.update(kind="audio", wave=wave.tobytes(), channels=int(wave.shape[0]), frames=int(wave.shape[1]), sample_rate=int(audio.sample_rate))
    return out


class _StackActor:
    """One member of the actor pool: the stack, built once from ``output.dir/model.safetensors``."""

    def __init__(self, work: Work, batch_size: int, torch_threads: int, use_gpu: bool) -> None:
        torch.set_num_threads(torch_threads)
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("this actor was given a GPU but torch sees no CUDA device")
        device = torch.device("cuda" if use_gpu else "cpu")
        with fetched(work.out.url(WEIGHTS_NAME), work.options) as weights:
            model = dataclasses.replace(work.cfg.model, checkpoint=weights)
            stack = fix_weights(build_stack(model, work.channels.count, seed=work.cfg.seed).to(device).eval())
        self.work = work.bind(stack, device)
        self.work.writer.tag = uuid.uuid4().hex[:8]  # parquet: this actor's shards, named apart from the others'
        self.batch_size = batch_size
        # writes overlap the next batch; a sharded format's writer takes one input at a time
        self.writer = cf.ThreadPoolExecutor(2 if self.work.writer.per_input else 1, thread_name_prefix="write")

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list]:
        records: list[Optional[str]] = [None] * len(rows["index"])
        writes: dict[cf.Future, int] = {}
        pool: list[Item] = []
        slot: dict[str, int] = {}  # item path -> row position
        done: list[ManifestRecord] = []  # the records of committed (or failed) writes
        for pos in range(len(records)):
            kind = str(rows["kind"][pos])
            if kind == "record":
                records[pos] = str(rows["record"][pos])
                continue
            item = Item.from_row(rows, pos)
            slot[item.path] = pos
            if kind == "long":
                item.decoded = Decoded(None, float(rows["decode_s"][pos]))
                done += self.work.long_file(item)
                continue
            c, t, sr = int(rows["channels"][pos]), int(rows["frames"][pos]), int(rows["sample_rate"][pos])
            wave = torch.from_numpy(np.frombuffer(rows["wave"][pos], dtype=np.float32).reshape(c, t).copy())
            info = AudioInfo(item.path, sr, c, t, "", "")  # only the decoded figures are used from here on
            item.decoded = Decoded(Audio(wave, sr, info), float(rows["decode_s"][pos]))
            pool.append(item)
        while pool:
            for item, res in self.work.compute(take_batch(pool, self.batch_size)):
                if isinstance(res, ManifestRecord):
                    records[slot[item.path]] = res.to_json()
                else:
                    writes[self.writer.submit(self.work.write, item, res)] = slot[item.path]
        for fut in writes:
            done += fut.result()
        done += self.work.finish()  # this call's inputs are all committed: one shard per call
        for rec in done:
            records[slot[rec.input]] = rec.to_json()
        return {"record": records}


# ---------------------------------------------------------------- the runner
def _mapping(value: Any, key: str) -> dict[str, str]:
    from collections.abc import Mapping

    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping like '{{NAME: value}}', got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def _number(value: Any, key: str, minimum: float, integer: bool = False, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key} must be {'null or ' if allow_none else ''}{kind} >= {minimum:g}, got {value!r}")


def _ray_error(err: BaseException) -> str:
    """A Ray exception as one line: the original cause when Ray wrapped one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    lines = [l for l in str(err).splitlines() if l.strip()]
    text = lines[-1] if lines else type(err).__name__
    return f"{type(err).__name__}: {one_line(text)[:300]}"


class RayRunner:
    """Runs ``engines.job.run_batch``'s processing step on Ray: ``start`` (connect, size), ``run``,
    ``close`` (shut down the instance it started)."""

    def __init__(self, cfg: Config, engine: EngineConfig, out: OutputDir) -> None:
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise ConfigError("engine=ray needs Ray Data: pip install -e '.[ray]' (or pip install 'ray[data]')") from None
        _number(engine.num_actors, "engine.num_actors", 1, integer=True)
        _number(engine.num_cpus_per_actor, "engine.num_cpus_per_actor", 0.01)
        _number(engine.num_gpus_per_actor, "engine.num_gpus_per_actor", 0, allow_none=False)
        _number(engine.read_cpus, "engine.read_cpus", 0.01)
        _number(engine.num_cpus, "engine.num_cpus", 1, integer=True)
        if engine.num_cpus is not None and engine.address is not None:
            raise ConfigError("engine.num_cpus sizes a local Ray instance (engine.address=null); a cluster has its own CPUs")
        self.env_vars = _mapping(engine.env_vars, "engine.env_vars")
        for spec, key in ((str(cfg.input), "input"), (out.spec if out.remote else "", "output.dir")):
            if spec.startswith("memory://"):
                raise ConfigError(
                    f"{key}={spec!r}: memory:// lives inside one process, Ray workers cannot see it; "
                    "use engine=local, or storage every worker reaches (s3://, gs://, a shared path)"
                )
        device = cfg.runtime.device.value if hasattr(cfg.runtime.device, "value") else str(cfg.runtime.device)
        if device == "cuda" and not engine.num_gpus_per_actor:
            raise ConfigError("runtime.device=cuda with engine=ray needs GPU actors: set engine.num_gpus_per_actor=1")
        if device == "cpu" and engine.num_gpus_per_actor:
            raise ConfigError(
                f"engine.num_gpus_per_actor={engine.num_gpus_per_actor:g} reserves GPUs but runtime.device=cpu; "
                "set runtime.device=auto (or cuda)"
            )
        self.cfg, self.engine, self.out = cfg, engine, out
        self.started = False
        self.sizing: Optional[Sizing] = None

    # -- connection and sizing
    def _runtime_env(self) -> dict[str, Any]:
        env: dict[str, Any] = {}
        if self.env_vars:
            env["env_vars"] = dict(self.env_vars)
        if self.engine.ship_package:
            env["py_modules"] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]  # the conv_pipeline package
        return env

    def start(self) -> Sizing:
        import ray

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Ray Data's bars are off (ours counts records); it would warn about that once per process
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        if not ray.is_initialized():
            # Ray's own start-up notices stay out of the job's output (errors still show); the
            # workers' output stays in Ray's logs: every per-file problem is in the manifest
            kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            if self.engine.address is None:
                if self.engine.num_cpus is not None:
                    kwargs["num_cpus"] = int(self.engine.num_cpus)
            else:
                kwargs["address"] = self.engine.address
            if self._runtime_env():
                kwargs["runtime_env"] = self._runtime_env()
            try:
                ray.init(**kwargs)
            except Exception as err:  # noqa: BLE001 - a connection problem is one line
                where = f"engine.address={self.engine.address!r}" if self.engine.address else "a local Ray instance"
                raise ConfigError(
                    f"cannot start or reach {where} ({_ray_error(err)}); check the address (auto needs 'ray start' "
                    "on this machine, ray://host:10001 a Ray client server) or use engine.address=null"
                ) from None
            self.started = True
        resources = ray.cluster_resources()
        try:
            self.sizing = plan_resources(self.engine, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))
        except ConfigError:
            self.close()
            raise
        log.info(
            "batch: engine=ray on %g CPU(s), %g GPU(s): %s",
            resources.get("CPU", 0), resources.get("GPU", 0), self.sizing.describe(),
        )
        return self.sizing

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    # -- the job
    def run(self, work: Work, todo: list[Item], manifest: ManifestSink, summary: BatchSummary, opts: BatchOptions) -> None:
        import ray
        import ray.data

        assert self.sizing is not None, "start() first"
        ctx = ray.data.DataContext.get_current()
        settings = {
            "enable_progress_bars": False,  # ours: one per job, fed by the records
            "print_on_execution_start": False,
            "max_errored_blocks": -1,  # a block lost to a dead worker: its files get failed records below
        }
        saved = {key: getattr(ctx, key) for key in settings}
        try:
            for key, value in settings.items():
                setattr(ctx, key, value)
            self._run(ray, work, todo, manifest, summary, opts)
        finally:  # the process's DataContext as it was (a caller may use Ray Data too)
            for key, value in saved.items():
                setattr(ctx, key, value)

    def _run(self, ray: Any, work: Work, todo: list[Item], manifest: ManifestSink, summary: BatchSummary, opts: BatchOptions) -> None:
        sizing = self.sizing
        assert sizing is not None
        batch_size = int(self.cfg.runtime.batch_size)
        # rows per actor call: up to SORT_WINDOW batches to pick similar lengths from, but at least
        # a few calls per actor so that every actor gets work; files per decode block: a few
        # blocks per actor
        per_call = batch_size * max(1, min(SORT_WINDOW, len(todo) // max(1, sizing.num_actors * batch_size * 4)))
        per_block = max(1, min(batch_size, math.ceil(len(todo) / max(1, 4 * sizing.num_actors))))
        progress = Progress(len(todo), opts.progress, opts.log_every_s)
        done: set[str] = set()

        def record(recs: Sequence[ManifestRecord]) -> None:
            manifest.add(recs)
            for rec in recs:
                done.add(rec.input)
                count_record(summary, rec)
                progress.update(rec)

        try:
            self._pass(ray, work, todo, record, done, per_block, per_call, DECODE_RETRIES)
            lost = [it for it in todo if it.path not in done]
            if lost and (per_block > 1 or per_call > 1):
                # a worker died with several files (the local engine's process workers do the same)
                log.warning("batch: %d file(s) were lost with a worker that died; retrying them one at a time", len(lost))
                self._pass(ray, work, lost, record, done, 1, 1, 0)
            record([
                ManifestRecord(
                    input=it.path, status="failed", key=it.key,
                    error=f"{it.path}: no result from the Ray pipeline (its decode task or actor died: a crashing "
                    "decoder, a lost node, or the pipeline stopped); check the file, rerun to retry it",
                )
                for it in todo if it.path not in done
            ])
        finally:
            progress.close()

    def _pass(
        self, ray: Any, work: Work, items: list[Item], record: Any, done: set[str],
        per_block: int, per_call: int, decode_retries: int,
    ) -> None:
        """One Ray Data pipeline over ``items``; every record it returns goes to ``record``."""
        sizing = self.sizing
        assert sizing is not None
        rows = [it.row() for it in items]
        runtime_env = self._runtime_env() or None
        # Bounded retries (Ray Data's defaults retry forever, so a file that kills its worker every
        # time would hang the job): a decode task whose worker dies is retried ``decode_retries``
        # times, an actor call ACTOR_TASK_RETRIES times (actors themselves are restarted as Ray
        # Data does by default); then the block is dropped (max_errored_blocks=-1) and its files
        # are retried alone, then recorded as failed (``_run``). The decode tasks' remote args then
        # differ from the actors', which also keeps Ray Data from fusing the decoding into the
        # actors: it stays in CPU tasks that scale on their own. Ray has no named parameters for
        # these limits yet, hence the remote-args keywords (deprecated for Ray 2.64).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
            ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
            ds = ds.map(
                _decode_row, fn_kwargs={"work": work}, num_cpus=sizing.read_cpus, runtime_env=runtime_env,
                max_retries=decode_retries,
            )
            ds = ds.map_batches(
                _StackActor,
                fn_constructor_kwargs={
                    "work": work, "batch_size": int(self.cfg.runtime.batch_size),
                    "torch_threads": sizing.torch_threads, "use_gpu": sizing.gpus_per_actor > 0,
                },
                batch_size=per_call,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(sizing.num_actors, len(rows))),
                num_cpus=sizing.cpus_per_actor,
                num_gpus=sizing.gpus_per_actor or None,
                runtime_env=runtime_env,
                udf_modifying_row_count=False,
                max_task_retries=ACTOR_TASK_RETRIES,
            )
        # a dropped block is logged by Ray Data with a traceback; its files get records here instead
        quiet = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        first = not done
        try:
            for row in ds.iter_rows():
                record([record_from_data(json.loads(row["record"]))])
        except (KeyboardInterrupt, PipelineError):
            raise
        except Exception as err:  # noqa: BLE001
            if first and not done:  # nothing ran: a setup problem (an actor that cannot start, ...)
                raise PipelineError(
                    f"engine=ray: the pipeline failed before any file was done ({_ray_error(err)}); "
                    "rerun with debug=true for the full error"
                ) from (err if self.cfg.debug else None)
            log.error("batch: the Ray pipeline stopped (%s); the files it did not finish are recorded as failed", _ray_error(err))
        finally:
            quiet.setLevel(level)
