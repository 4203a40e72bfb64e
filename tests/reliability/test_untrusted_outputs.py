"""Issue 12, findings 14-17 (reading outputs back): feature files and manifests are untrusted input.

* 14: a ``.npy``/``.npz`` header claiming ``(1e6, 1e6)`` is checked against the file's size before
  anything is allocated; features must be little-endian float32 or float16 (what conv_pipeline writes), so a
  big-endian or float128 file is refused in one line by ``load_features`` and ``FeatureDataset`` alike.
* 15: ``inspect`` maps a ``.npy`` and computes its statistics block by block: its memory stays far
  below the file's size (it was about 5x the size).
* 16: ``FeatureDataset`` and ``inspect`` never open a manifest ``output`` outside the folder
  (``../``, absolute, a symlink leading out): such records are skipped/marked with one line.
* 17: a text file read as features gets our own one-line message, not numpy's advice to load it
  unsafely.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conv_pipeline.dataset.features import FeatureDataset, load_features
from conv_pipeline.errors import InputError
from conv_pipeline.inspect.describe import describe_dir, describe_file, feature_stats
from conv_pipeline.sink.manifest import ManifestRecord, append_record
from helpers.figures import FIGURES
from helpers.run import run_cli

HUGE = (10**6, 10**6)  # 4 TB of float32


def _header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _one_line_error(call) -> str:
    with pytest.raises(InputError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _folder_with(tmp_path: Path, name: str, write) -> Path:
    """An output folder whose manifest lists one ``ok`` feature file ``name``, written by ``write(path)``."""
    out = tmp_path / f"out_{name.replace('.', '_')}"
    out.mkdir()
    write(out / name)
    append_record(out, ManifestRecord(input=f"in/{name}.wav", status="ok", output=name, shape=[2, 3]))
    return out


# ---------------------------------------------------------------- finding 14: lying headers, foreign dtypes
LYING_FILES = {
    "huge.npy": lambda p: p.write_bytes(_header(HUGE) + bytes(64)),
    "huge.npz": lambda p: _zip(p, {"features.npy": _header(HUGE) + bytes(64)}),
    "huge_meta.npz": lambda p: _zip(
        p, {"features.npy": _npy_bytes(np.ones((2, 3), np.float32)), "frame_times.npy": _header((10**12,), "<f8")}
    ),
    "huge_3d.npy": lambda p: p.write_bytes(_header((10**4, 10**4, 10**4)) + bytes(64)),
}


@pytest.mark.parametrize("name", sorted(LYING_FILES))
def test_lying_headers_are_refused_before_any_allocation(tmp_path, name):
    out = _folder_with(tmp_path, name, LYING_FILES[name])
    path = out / name
    tracemalloc.start()
    try:
        msg = _one_line_error(lambda: load_features(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ok = str(path) in msg and peak < 16 << 20 and ("header promises" in msg or "3-D array" in msg)
    FIGURES.outcome("bad input", ok, f"lying header {name}: {msg} (peak {peak} bytes)")
    assert ok, (msg, peak)
    ds = FeatureDataset(out)
    assert _one_line_error(lambda: ds[0]) == msg


def _big_endian(p: Path) -> None:
    np.save(p, np.ones((2, 3), ">f4"))


def _float128(p: Path) -> None:
    np.save(p, np.ones((2, 3), np.longdouble))


def _big_endian_npz(p: Path) -> None:
    np.savez(p, features=np.ones((2, 3), ">f4"), sample_rate=np.int64(16000))


@pytest.mark.parametrize("name, write", [("be.npy", _big_endian), ("f128.npy", _float128), ("be.npz", _big_endian_npz)])
def test_foreign_dtypes_are_refused_in_one_line_everywhere(tmp_path, name, write):
    out = _folder_with(tmp_path, name, write)
    path = out / name
    msg = _one_line_error(lambda: load_features(path))
    ds = FeatureDataset(out)
    ok = "conv_pipeline features are float32 or float16, little-endian" in msg and _one_line_error(lambda: ds[0]) == msg
    r = run_cli(str(path), module="conv_pipeline.inspect")
    ok = ok and r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "float32" in r.stderr
    FIGURES.outcome("bad input", ok, f"foreign dtype {name}: {msg} / inspect: {r.stderr[-300:]}")
    assert ok, (msg, r.stderr)


def test_float32_files_still_load_exactly(tmp_path):
    """What conv_pipeline writes, C or Fortran order, .npy or .npz, still loads unchanged (and mapped)."""
    a = np.arange(24, dtype=np.float32).reshape(4, 6) - 7.5
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    np.savez(tmp_path / "s.npz", features=a, sample_rate=np.int64(8000))
    np.savez_compressed(tmp_path / "z.npz", features=a, sample_rate=np.int64(8000))
    for name in ("c.npy", "f.npy", "s.npz", "z.npz"):
        feats, meta = load_features(tmp_path / name)
        np.testing.assert_array_equal(feats, a)
        assert feats.dtype == np.float32 and feats.flags.writeable
    assert "min -7.5  max 15.5" in describe_file(tmp_path / "f.npy")
    _, meta = load_features(tmp_path / "s.npz")
    assert meta["sample_rate"] == 8000


# ---------------------------------------------------------------- finding 15: inspect in bounded memory
def test_inspect_memory_stays_far_below_the_file_size(tmp_path):
    """96 MiB of features in an output folder whose timing is known (so per-frame axes could be built:
    with 2 channels they alone would be twice the file's size): inspect's peak stays under a quarter."""
    out = tmp_path / "out"
    out.mkdir()
    model = {"name": "tiny", "in_channels": 1, "layers": [{"out_channels": 2, "kernel_size": 400, "stride": 160}]}
    (out / "config.yaml").write_text(json.dumps({"audio": {"sample_rate": 16000}, "model": model}))
    path = out / "big.npy"
    channels, frames = 2, 12 * 1024 * 1024
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(channels, frames))
    for c in range(channels):
        mm[c] = np.linspace(-1, 1, frames, dtype=np.float32) * (c + 1)
    mm.flush()
    del mm
    append_record(out, ManifestRecord(input="big.wav", status="ok", output="big.npy", sample_rate=16000))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        text = describe_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    last = ((frames - 1) * 160 + 199.5) / 16000
    ok = (
        peak < size / 4
        and "min -2  max 2" in text
        and "2 channels x 12582912 frames" in text
        and f"frame times      0.0125 s .. {last:.4f} s" in text
        and "hop              160 samples" in text
    )
    FIGURES.outcome("bad input", ok, f"inspect of a {size}-byte .npy: peak {peak} bytes")
    assert ok, (peak, size, text)


def test_block_statistics_match_numpy():
    """Several blocks, NaN/Inf and zeros spread over them: the merged moments equal numpy's."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((3, 1_100_000)) * 5 + 2).astype(np.float32)
    a[0, ::997] = np.nan
    a[1, 5::1003] = np.inf
    a[2, 7::1009] = -np.inf
    a[:, 100:200] = 0
    s = feature_stats(a)
    finite = a[np.isfinite(a)].astype(np.float64)
    assert (s["nan"], s["inf"], s["zeros"]) == (int(np.isnan(a).sum()), int(np.isinf(a).sum()), int((a == 0).sum()))
    assert s["min"] == finite.min() and s["max"] == finite.max() and s["size"] == a.size
    assert s["mean"] == pytest.approx(finite.mean(), rel=1e-9) and s["std"] == pytest.approx(finite.std(), rel=1e-9)
    s = feature_stats(np.asfortranarray(a[:, :10]))
    assert s["mean"] == pytest.approx(a[:, :10][np.isfinite(a[:, :10])].astype(np.float64).mean(), rel=1e-12)


# ---------------------------------------------------------------- finding 16: paths outside the folder
_OPENED: list[str] = []
_WATCH: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if _WATCH and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _outside_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with one honest record and four whose output leads outside it (to a 'secret' .npy)."""
    secret = tmp_path / "secret" / "private.npy"
    secret.parent.mkdir()
    np.save(secret, np.full((2, 3), 7.0, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "good.npy", np.ones((2, 3), np.float32))
    (out / "link.npy").symlink_to(secret)
    outputs = ["good.npy", "../secret/private.npy", str(secret), "link.npy", "sub/../../secret/private.npy"]
    for i, output in enumerate(outputs):
        append_record(out, ManifestRecord(input=f"in/{i}.wav", status="ok", output=output, shape=[2, 3]))
    return out, secret


def test_outputs_outside_the_folder_are_never_opened(tmp_path, caplog):
    out, secret = _outside_folder(tmp_path)
    _OPENED.clear()
    _WATCH.append(True)
    try:
        with caplog.at_level(logging.WARNING, logger="conv_pipeline.dataset"):
            ds = FeatureDataset(out)
            items = [ds[i] for i in range(len(ds))]
        text = describe_dir(out)
    finally:
        _WATCH.clear()
    opened = [p for p in _OPENED if Path(p).resolve() == secret.resolve()]
    warnings = [r.getMessage() for r in caplog.records if r.name == "conv_pipeline.dataset"]
    ok = (
        [r.output for r in ds.records] == ["good.npy"]
        and len(ds.refused) == 4
        and all(float(f[0, 0]) == 1.0 for f, _ in items)
        and not opened
        and len(warnings) == 1
        and "4 manifest.jsonl record(s) whose output is not a path inside the folder" in warnings[0]
        and text.count("REFUSED") == 5  # four rows and the totals
        and "4 record(s) REFUSED" in text
    )
    FIGURES.outcome("attack", ok, f"manifest outputs outside the folder: opened {opened}, warnings {warnings}\n{text}")
    assert ok, (opened, warnings, text)


def test_inspect_never_lists_a_system_file_as_ok(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    append_record(out, ManifestRecord(input="x.wav", status="ok", output="/etc/passwd", shape=[2, 3]))
    r = run_cli(str(out), module="conv_pipeline.inspect")
    row = [line for line in r.stdout.splitlines() if line.startswith("/etc/passwd")]
    ok = r.returncode == 0 and len(row) == 1 and "REFUSED" in row[0] and "not a path inside the output folder" in r.stdout
    FIGURES.outcome("attack", ok, f"inspect of a manifest naming /etc/passwd: {r.stdout[-400:]}")
    assert ok, r.stdout + r.stderr


def test_odd_manifest_outputs_are_refused_or_missing_never_a_crash(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "good.npy", np.ones((2, 3), np.float32))
    odd = ["good.npy", "x\0y.npy", "a" * 5000 + ".npy", "/".join(["b" * 200] * 30) + ".npy", "sub/../good.npy"]
    for i, output in enumerate(odd):
        append_record(out, ManifestRecord(input=f"in/{i}.wav", status="ok", output=output, shape=[2, 3]))
    ds = FeatureDataset(out, missing="skip")
    text = describe_dir(out)
    ok = [r.output for r in ds.records] == ["good.npy"] and len(ds.refused) == 2 and "2 listed file(s) MISSING" in text
    FIGURES.outcome("attack", ok, f"odd manifest outputs: {ds.refused} / {text[-200:]}")
    assert ok, text


# ---------------------------------------------------------------- finding 17: our own message
@pytest.mark.parametrize("content", [b"hello, not numpy\n", b"\x80\x04K\x01.", b"PK\x03\x04 not really a zip"])
def test_a_foreign_file_gets_our_own_message(tmp_path, content):
    path = tmp_path / "notes.npy"
    path.write_bytes(content)
    msg = _one_line_error(lambda: load_features(path))
    r = run_cli(str(path), module="conv_pipeline.inspect")
    lines = r.stderr.strip().splitlines()
    ok = (
        "not a readable .npy/.npz feature file" in msg
        and not any(w in msg.lower() for w in ("unsafe", "allow_pickle", "pickle.load", "if you trust"))
        and r.returncode == 2
        and len(lines) == 1
        and "allow_pickle" not in r.stderr
    )
    FIGURES.outcome("bad input", ok, f"foreign file {content[:8]!r}: {msg} / {r.stderr[-300:]}")
    assert ok, (msg, r.stderr)
