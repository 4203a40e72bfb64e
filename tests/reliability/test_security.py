"""Issue 7: the tool cannot be turned against the machine it runs on.

* A checkpoint carrying code (a pickle whose ``__reduce__`` would create a marker file) is refused
  in every form (raw pickle, ``torch.save`` zip, renamed ``.safetensors``, a wrapper dict), through
  the CLI (also as a real process) and the batch job; the marker is never created, and a plain
  ``pickle.load`` of the same bytes does create it (so the test can fail).
* Feature files, ``config.yaml`` and checkpoints are read without unpickling or YAML object tags
  (``load_features``, ``FeatureDataset``, ``inspect``, plots, the batch job's resume check).
* No input name, list entry or config value writes outside ``output.dir``: ``../`` and absolute
  list entries, odd names, symlinks planted in ``output.dir`` (file, manifest, subfolder), Hydra's
  own output keys. Every file under ``tmp_path`` is listed before and after.
* Config values that name code resolve only within fixed registries; ``_target_`` and Hydra's
  callback/logging keys on the command line instantiate nothing (a module on ``sys.path`` whose
  class would create the marker proves it).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conv_pipeline.engines.job import run_batch
from conv_pipeline.config.schema import ACTIVATIONS, FRONTENDS, NORMS, WINDOWS
from conv_pipeline.errors import ConfigError, InputError, OutputError, PipelineError
from conv_pipeline.sink.manifest import MANIFEST_NAME, read_manifest
from conv_pipeline.config.compose import compose_config
from conv_pipeline.engines.single import run
from helpers.bad_inputs import BY_NAME, MATRIX_OVERRIDES, build, compose_batch
from helpers.figures import FIGURES
from helpers.paths import SCRIPT
from helpers.run import cli_inprocess



class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_checkpoints(folder: Path, marker: Path) -> list[Path]:
    """The payload in every shape a checkpoint can take."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = _Payload(marker)
    raw = folder / "evil.pt"
    raw.write_bytes(pickle.dumps({"layers.0.conv.weight": payload}))
    zipped = folder / "evil_zip.ckpt"
    torch.save({"state_dict": {"layers.0.conv.weight": torch.zeros(64, 2, 400)}, "extra": payload}, zipped)
    renamed = folder / "evil.safetensors"
    renamed.write_bytes(pickle.dumps(payload))
    binary = folder / "pytorch_model.bin"
    torch.save({"model": {"feature_extractor.conv_layers.0.conv.weight": payload}}, binary)
    return [raw, zipped, renamed, binary]


def test_the_payload_is_real(tmp_path):
    """Without the defences, these files do run code (so the tests below can fail)."""
    marker = tmp_path / "PWNED"
    for ckpt in malicious_checkpoints(tmp_path / "ckpt", marker)[:1]:
        pickle.loads(ckpt.read_bytes())
        assert marker.exists()
        marker.unlink()
    torch.load(tmp_path / "ckpt" / "evil_zip.ckpt", weights_only=False)
    assert marker.exists()


@pytest.mark.slow
def test_malicious_checkpoint_is_refused_everywhere(tmp_path, capfd):
    marker = tmp_path / "PWNED"
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    for ckpt in malicious_checkpoints(tmp_path / "ckpt", marker):
        out = tmp_path / f"out_{ckpt.stem}"
        r = cli_inprocess([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, f"model.checkpoint={ckpt}"], capfd)
        lines = r.err_lines
        ok = r.code == 2 and len(lines) == 1 and str(ckpt) in lines[0] and not marker.exists() and not out.exists()
        FIGURES.outcome("attack", ok, f"pickle checkpoint via CLI {ckpt.name}: {r.err[-300:]}")
        assert ok, r.err
        with pytest.raises(ConfigError) as err:
            run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={out}", *MATRIX_OVERRIDES,
                                     f"model.checkpoint={ckpt}", "batch.progress=none"]))
        ok = str(ckpt) in str(err.value) and not marker.exists() and not out.exists()
        FIGURES.outcome("attack", ok, f"pickle checkpoint via batch {ckpt.name}: {err.value}")
        assert ok


@pytest.mark.slow
def test_malicious_checkpoint_real_process(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = malicious_checkpoints(tmp_path / "ckpt", marker)[1]
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "conv_pipeline", f"input={wav}", f"output.dir={tmp_path / 'out'}",
                           *MATRIX_OVERRIDES, f"model.checkpoint={ckpt}"], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    ok = proc.returncode == 2 and len(lines) == 1 and "cannot be loaded safely (weights_only=True)" in lines[0] \
        and not marker.exists()
    FIGURES.outcome("attack", ok, f"pickle checkpoint, real process: {proc.stderr[-300:]}")
    assert ok, proc.stderr


# ---------------------------------------------------------------- reading back without pickle
def _malicious_feature_files(folder: Path, marker: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(marker)
    npy = folder / "evil.npy"
    np.save(npy, obj, allow_pickle=True)
    npz = folder / "evil.npz"
    np.savez(npz, features=np.zeros((2, 3), np.float32), config=obj)
    npz2 = folder / "evil2.npz"
    np.savez(npz2, features=obj)
    return [npy, npz, npz2]


@pytest.mark.slow
def test_outputs_read_back_without_pickle(tmp_path):
    """What the CLI (npy, npz, chunked) and the batch job write loads with allow_pickle=False: plain
    arrays only, never an object array."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    for fmt, chunk in (("npy", "null"), ("npz", "null"), ("npz", "0.1")):
        out = tmp_path / f"out_{fmt}_{chunk}"
        result = run(compose_config([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, f"output.format={fmt}",
                                     f"runtime.chunk_seconds={chunk}"]))
        loaded = np.load(result.output, allow_pickle=False)
        arrays = [loaded] if fmt == "npy" else [loaded[k] for k in loaded.files]
        assert all(a.dtype != object for a in arrays)
    s = run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={tmp_path / 'batch'}", *MATRIX_OVERRIDES,
                                 "output.format=npz", "batch.progress=none"]))
    assert s.ok == 1
    with np.load(tmp_path / "batch" / "pcm24.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_feature_readers_never_unpickle(tmp_path, capsys):
    from conv_pipeline.inspect import __main__ as inspect_mod
    from conv_pipeline.dataset.features import FeatureDataset
    from conv_pipeline.dataset.features import load_features
    from conv_pipeline.inspect.plot import plot_features

    marker = tmp_path / "PWNED"
    folder = tmp_path / "feats"
    for path in _malicious_feature_files(folder, marker):
        for reader in (load_features, lambda p: plot_features(p, tmp_path / "x.png")):
            with pytest.raises(InputError) as err:
                reader(path)
            ok = path.name in str(err.value) and not marker.exists()
            FIGURES.outcome("attack", ok, f"object array {path.name}: {err.value}")
            assert ok
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            inspect_mod.main([str(path)])
        err = capsys.readouterr().err
        ok = exit_.value.code == 2 and path.name in err and len(err.strip().splitlines()) == 1 and not marker.exists()
        FIGURES.outcome("attack", ok, f"inspect {path.name}: {err}")
        assert ok, err
    # a folder whose config.yaml carries a YAML object tag: read with safe_load, never built
    (folder / "config.yaml").write_text(f"model: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    try:
        FeatureDataset(folder)
    except PipelineError:
        pass
    FIGURES.outcome("attack", not marker.exists(), "config.yaml object tag via FeatureDataset")
    assert not marker.exists()


def test_batch_resume_check_reads_config_yaml_safely(tmp_path):
    marker = tmp_path / "PWNED"
    build(BY_NAME["pcm_24"], tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text(f"audio: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    s = run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={out}", *MATRIX_OVERRIDES,
                                 "batch.progress=none"]))
    FIGURES.outcome("attack", not marker.exists(), "config.yaml object tag via the batch job")
    assert s.ok == 1 and not marker.exists()


# ---------------------------------------------------------------- nothing written outside output.dir
def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime) and folder (None) under ``root``, links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            found[os.path.join(dirpath, d)] = None
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            found[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return found


def changed_outside(before: dict, after: dict, out: Path) -> list[str]:
    """Files created, changed or removed, and folders created, anywhere but under ``out``."""
    inside = str(out) + os.sep
    return sorted(p for p in set(before) | set(after) if not p.startswith(inside) and p != str(out)
                  and before.get(p, "gone") != after.get(p, "gone"))


def test_list_entries_and_names_stay_inside_output_dir(tmp_path):
    """List entries with ../, absolute paths from other trees, and odd names: every output lands
    under output.dir, mirrored from the entries' common folder."""
    work = tmp_path / "work"
    elsewhere = tmp_path / "elsewhere" / "deep"
    for p in (work / "a" / "x.wav", work / "b" / "..wav", elsewhere / "y.wav", tmp_path / "top.wav",
              work / "a" / " .wav"):
        p.parent.mkdir(parents=True, exist_ok=True)
        BY_NAME["pcm_24"].make(p)
    listing = work / "a" / "list.txt"
    listing.write_text(f"x.wav\n../b/..wav\n../../elsewhere/deep/y.wav\n{tmp_path / 'top.wav'}\n ./ .wav\n"
                       "../a/../a/x.wav\n", encoding="utf-8")
    out = work / "a" / "out"
    before = snapshot(tmp_path)
    s = run_batch(compose_batch([f"input={listing}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
    after = snapshot(tmp_path)
    outside = changed_outside(before, after, out)
    FIGURES.outcome("attack", not outside, f"list entries wrote outside output.dir: {outside}")
    assert not outside
    assert s.ok == s.total == 5  # x.wav listed twice: once
    for rec in read_manifest(out).values():
        if rec.output:
            assert (out / rec.output).resolve().is_relative_to(out.resolve())


@pytest.mark.slow
def test_symlinks_planted_in_output_dir_are_never_followed_by_the_cli(tmp_path):
    """A feature file, config.yaml or the manifest planted as a symlink to a file outside: the
    CLI replaces the link (rename) or refuses (the manifest); the outside file never changes."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f"{wav.stem}.npy", "config.yaml"):
        os.symlink(victim, out / name)
    run(compose_config([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, "overwrite=true"]))
    assert not (out / f"{wav.stem}.npy").is_symlink() and not (out / "config.yaml").is_symlink()
    (out / MANIFEST_NAME).unlink()
    os.symlink(victim, out / MANIFEST_NAME)
    with pytest.raises(OutputError, match="is a symbolic link; the manifest is never written through one"):
        run(compose_config([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES]))
    FIGURES.outcome("attack", victim.read_text() == "precious", "symlink planted in output.dir (CLI)")
    assert victim.read_text() == "precious"


def test_batch_never_writes_through_a_planted_subfolder_link(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    BY_NAME["pcm_24"].make(corpus / "sub" / "x.wav")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "sub")
    try:
        run_batch(compose_batch([f"input={corpus}", f"output.dir={out}", *MATRIX_OVERRIDES, "batch.progress=none"]))
    except PipelineError:
        pass
    ok = FIGURES.outcome("attack", not any(elsewhere.iterdir()), "subfolder symlink (batch)")
    assert ok


def test_hydra_output_keys_cannot_write_outside(tmp_path, capfd):
    """A single run creates no Hydra folder; ``hydra.output_subdir`` (Hydra writing its own
    config files into the run folder, outside output.dir) is refused with the code keys."""
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    r = cli_inprocess([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES], capfd)
    assert r.code == 0, r.err
    assert not changed_outside(before, snapshot(tmp_path), out)
    r = cli_inprocess([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, "hydra.output_subdir=.hydra",
                       f"hydra.run.dir={tmp_path / 'run'}"], capfd)
    ok = r.code == 2 and len(r.err_lines) == 1 and "hydra.output_subdir" in r.err and not (tmp_path / "run").exists()
    FIGURES.outcome("attack", ok, f"hydra.output_subdir: {r.err[-300:]}")
    assert ok, r.err


# ---------------------------------------------------------------- code named by config values
@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path whose class and function create the marker when used."""
    marker = tmp_path / "PWNED"
    pkg = tmp_path / "evilpkg"
    pkg.mkdir()
    (pkg / "evil_mod.py").write_text(
        "from pathlib import Path\n"
        f"MARKER = Path({str(marker)!r})\n"
        "class Evil:\n"
        "    def __init__(self, *a, **k):\n"
        "        MARKER.write_text('x')\n"
        "def evil(*a, **k):\n"
        "    MARKER.write_text('x')\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    return marker


@pytest.mark.parametrize("overrides, needles", [
    (["model.layers.0.activation=evil_mod.Evil"], ["activation must be null or one of"]),
    (["model.layers.0.activation=torch.nn.ReLU"], ["activation must be null or one of"]),
    (["model.layers.0.norm=evil_mod.evil"], ["norm must be null or one of"]),
    (["model=stft", "model.frontend.type=evil_mod.Evil"], ["model.frontend.type must be one of"]),
    (["model=stft", "model.frontend.window=evil_mod.evil"], ["model.frontend.window must be one of"]),
    (["+model._target_=evil_mod.Evil"], ["refused"]),
    (["+_target_=evil_mod.Evil"], ["refused"]),
    (["+hydra.callbacks.x._target_=evil_mod.Evil"], ["refused"]),
    (["hydra.job_logging.handlers.console.class=evil_mod.Evil"], ["refused"]),
    (["+hydra.job_logging.formatters.plain.()=evil_mod.evil"], ["refused", "cannot parse"]),
    (["hydra.job_logging.handlers.console.stream=ext://evil_mod.evil"], ["refused"]),
    (["hydra.searchpath=[file:///tmp]"], ["refused"]),
    (["output.format=evil_mod.Evil"], ["output.format"]),
    (["runtime.device=evil_mod.Evil"], ["runtime.device"]),
], ids=lambda v: "+".join(v) if isinstance(v, list) and "=" in v[0] else None)
def test_config_values_never_name_code(overrides, needles, evil_module, tmp_path, capfd):
    wav = build(BY_NAME["pcm_24"], tmp_path / "in")
    out = tmp_path / "out"
    r = cli_inprocess([f"input={wav}", f"output.dir={out}", *MATRIX_OVERRIDES, *overrides], capfd)
    ok = r.code != 0 and any(n in r.err for n in needles) and "Traceback" not in r.err \
        and not evil_module.exists() and not out.exists()
    if not overrides[0].startswith(("output.format", "runtime.device")):  # Hydra's own type errors: several lines
        ok = ok and len(r.err_lines) == 1
    FIGURES.outcome("attack", ok, f"{overrides}: {r.err[-300:]}")
    assert ok, r.err


def test_batch_config_values_never_name_code(evil_module, tmp_path):
    build(BY_NAME["pcm_24"], tmp_path / "in")
    for override, needle in (("engine.name=evil_mod.Evil", "engine must be one of local, ray"),
                             ("model.layers.0.activation=evil_mod.evil", "activation must be null or one of"),
                             ("batch.workers=evil_mod.Evil", "batch.workers")):
        with pytest.raises(ConfigError, match=needle):
            run_batch(compose_batch([f"input={tmp_path / 'in'}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES,
                                     override, "batch.progress=none"]))
        FIGURES.outcome("attack", not evil_module.exists(), override)
        assert not evil_module.exists() and not (tmp_path / "out").exists()


def test_batch_script_command_line_instantiates_nothing(evil_module, tmp_path, capfd):
    build(BY_NAME["pcm_24"], tmp_path / "in")
    r = cli_inprocess([f"input={tmp_path / 'in'}", f"output.dir={tmp_path / 'out'}", *MATRIX_OVERRIDES,
                       "+hydra.callbacks.x._target_=evil_mod.Evil"], capfd, main=str(SCRIPT))
    ok = FIGURES.outcome("attack", not evil_module.exists() and r.code == 2 and len(r.err_lines) == 1,
                         f"batch script _target_: {r.err[-200:]}")
    assert ok


def test_registries_are_fixed_tables():
    """The names config values may use are the tables' keys; nothing else resolves."""
    from conv_pipeline.stack import frontends, layer

    assert set(layer.ACTIVATION_TYPES) == set(ACTIVATIONS)
    assert set(layer.NORM_TYPES) == set(NORMS)
    assert all(isinstance(v, type) and issubclass(v, torch.nn.Module) for v in layer.ACTIVATION_TYPES.values())
    assert set(FRONTENDS) == {"stft", "mel", "sinc", "mfcc", "fbank"} and "hann" in WINDOWS
    assert not hasattr(frontends, "importlib")
