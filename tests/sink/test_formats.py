"""The feature formats (sink/formats/): each written through the one writer interface, read back
by its own library (pyarrow, kaldiio, lhotse) and by ours (load_features, FeatureDataset), and
compared with the features handed over, transposed. Segments, index files, resume, failures,
float16 and time-major npy, remote output (moto S3)."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from conv_pipeline.dataset.features import load_features
from conv_pipeline.errors import InputError, OutputError
from conv_pipeline.geometry import LayerGeometry, StackGeometry
from conv_pipeline.sink.formats import Entry, FormatOptions, item_id, open_writer
from conv_pipeline.sink.manifest import ManifestRecord, append_records, read_manifest
from conv_pipeline.sink.outputs import OutputDir

GEOMETRY = StackGeometry([LayerGeometry(kernel_size=8, stride=4, padding=2)])
SHARDED = ("parquet", "kaldi", "lhotse")
LIBRARY = {"parquet": "pyarrow", "kaldi": "kaldiio", "lhotse": "lhotse"}


def entries(n=5, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Entry(f"in/a {i}.wav", f"/abs/in/a {i}.wav", f"a {i}.x", rng.standard_normal((channels, 7 + 3 * i)).astype(np.float32),
              16000, 4 * (7 + 3 * i), source_rate=48000, source_samples=12 * (7 + 3 * i))
        for i in range(n)
    ]


def write_all(out, fmt, items, **options):
    """What an engine does: every entry through the writer, a manifest record per committed one."""
    writer = open_writer(out, FormatOptions(format=fmt, **options), GEOMETRY, {"model": {"name": "t"}}, in_channels=2)
    done = []
    for e in items:
        done += writer.write(e)
    done += writer.flush()
    if out.path is not None:
        append_records(out.path, [
            ManifestRecord(input=e.input, key=e.key, status="ok", output=loc.output, item=loc.item, offset=loc.offset,
                           sample_rate=e.sample_rate, num_samples=e.num_samples, shape=list(e.features.shape))
            for e, loc in done
        ])
    return done


def peer_read(fmt, folder):
    """{id or input: (frames, channels)} as the format's own library reads the folder."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(os.path.join(folder, "data")).to_pylist()
        return {r["id"]: np.asarray(r["features"], dtype=np.float32).reshape(r["num_frames"], r["num_channels"]) for r in rows}
    if fmt == "kaldi":
        import kaldiio

        return {k: np.asarray(v) for k, v in kaldiio.load_scp(os.path.join(folder, "feats.scp")).items()}
    from lhotse import CutSet

    return {c.id: c.load_features() for c in CutSet.from_file(os.path.join(folder, "cuts.jsonl.gz"))}


@pytest.mark.slow  # imports torch (FeatureDataset), pyarrow and lhotse
@pytest.mark.parametrize("fmt", SHARDED)
def test_sharded_formats_read_back_by_their_library_equal_the_features_transposed(tmp_path, fmt):
    pytest.importorskip(LIBRARY[fmt])
    out = OutputDir(tmp_path)
    items = entries()
    done = write_all(out, fmt, items, shard_items=2)
    assert len(done) == 5 and {loc.output for _, loc in done} == {f"{p}-0000{i}.{s}" for i in range(3)
                                                                for p, s in [out_names(fmt)]}
    got = peer_read(fmt, str(tmp_path))
    assert set(got) == {item_id(e) for e in items}
    for e in items:
        np.testing.assert_array_equal(got[item_id(e)], e.features.T)
    # ours: one item by its record, and the whole folder as a dataset, (channels, frames) as npy
    e, loc = done[3]
    feats, meta = load_features(tmp_path / loc.output, item=loc.item)
    np.testing.assert_array_equal(feats, e.features)
    assert meta["format"] == fmt and meta["input"] == e.input and meta["hop"] is None  # no model files here
    from conv_pipeline.dataset.features import FeatureDataset

    ds = FeatureDataset(tmp_path)
    assert len(ds) == 5
    for (f, m), e in zip(ds, items):
        np.testing.assert_array_equal(f.numpy(), e.features)
        assert m["input"] == e.input


def out_names(fmt):
    return {"parquet": ("data/part", "parquet"), "kaldi": ("feats", "ark"), "lhotse": ("features", "h5")}[fmt]


@pytest.mark.slow  # the first import of pyarrow / lhotse
def test_parquet_columns_carry_the_geometry(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    items = entries(2)
    write_all(OutputDir(tmp_path), "parquet", items)
    table = pq.read_table(tmp_path / "data")
    row = table.to_pylist()[1]
    assert row["input"] == items[1].input and row["num_frames"] == items[1].features.shape[1]
    assert (row["hop"], row["receptive_field"], row["frame_start"]) == (4, 8, -2)
    assert row["sample_rate"] == 16000 and json.loads(row["config"]) == {"model": {"name": "t"}}


@pytest.mark.slow  # the first import of pyarrow / lhotse
def test_lhotse_cuts_carry_the_geometry_and_the_source(tmp_path):
    pytest.importorskip("lhotse")
    from lhotse import CutSet

    items = entries(2)
    write_all(OutputDir(tmp_path), "lhotse", items)
    cut = CutSet.from_file(tmp_path / "cuts.jsonl.gz").to_eager()[item_id(items[0])]
    f = cut.features
    assert (f.frame_shift, f.num_frames, f.num_features, f.sampling_rate) == (4 / 16000, 7, 3, 16000)
    assert cut.num_frames == 7 and cut.custom["frame_start"] == -2 and cut.custom["left_padding"] == 2
    assert cut.recording.sources[0].source == items[0].input and cut.recording.sampling_rate == 48000
    assert cut.channel == [0, 1]  # in_channels=2


def test_lhotse_lilcom_is_lossy_but_close(tmp_path):
    pytest.importorskip("lilcom")
    from lhotse import CutSet

    items = entries(2)
    write_all(OutputDir(tmp_path), "lhotse", items, lilcom=True)
    cut = CutSet.from_file(tmp_path / "cuts.jsonl.gz").to_eager()[item_id(items[1])]
    assert cut.features.storage_type == "lilcom_hdf5"
    np.testing.assert_allclose(cut.load_features(), items[1].features.T, atol=0.05)
    feats, _ = load_features(tmp_path / cut.features.storage_path, item=cut.id)
    np.testing.assert_allclose(feats, items[1].features, atol=0.05)


@pytest.mark.parametrize("fmt", SHARDED)
def test_a_resumed_writer_continues_after_the_last_segment_and_keeps_the_index(tmp_path, fmt):
    pytest.importorskip(LIBRARY[fmt])
    out = OutputDir(tmp_path)
    first, second = entries(3, seed=1), entries(2, seed=2)
    write_all(out, fmt, first)  # segment 0
    redo = [Entry(second[0].input, first[0].key, first[0].out_rel, second[0].features, 16000, 40)]  # the same input again
    done = write_all(out, fmt, redo)
    prefix, suffix = out_names(fmt)
    assert done[0][1].output == f"{prefix}-00001.{suffix}"
    if fmt != "parquet":  # the index: every input once, the redone one pointing at its new features
        got = peer_read(fmt, str(tmp_path))
        assert set(got) == {item_id(e) for e in first}
        np.testing.assert_array_equal(got[item_id(first[0])], second[0].features.T)
        np.testing.assert_array_equal(got[item_id(first[1])], first[1].features.T)
    rec = read_manifest(tmp_path)[first[0].input] if first[0].input in read_manifest(tmp_path) else None
    feats, _ = load_features(tmp_path / done[0][1].output, item=done[0][1].item)
    np.testing.assert_array_equal(feats, second[0].features)
    assert rec is not None


@pytest.mark.parametrize("fmt", SHARDED)
def test_a_failed_segment_commits_nothing_and_hands_its_inputs_back(tmp_path, fmt, monkeypatch):
    pytest.importorskip(LIBRARY[fmt])
    out = OutputDir(tmp_path)
    writer = open_writer(out, FormatOptions(format=fmt, shard_items=10), GEOMETRY)
    items = entries(3)
    for e in items:
        assert writer.write(e) == []  # pending: nothing committed, no record yet

    def full_disk(*args, **kwargs):
        raise OutputError("cannot write x: No space left on device")

    monkeypatch.setattr(type(writer), "write_segment", full_disk)
    with pytest.raises(OutputError):
        writer.flush()
    assert writer.abandon() == items
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no segment, no index, no temporary left


@pytest.mark.parametrize("fmt", ("npy", "parquet", "lhotse"))
def test_float16_overflow_is_refused_in_one_line_and_nothing_is_kept(tmp_path, fmt):
    pytest.importorskip({"npy": "numpy", **LIBRARY}[fmt])
    out = OutputDir(tmp_path)
    writer = open_writer(out, FormatOptions(format=fmt, dtype="float16"), GEOMETRY)
    big = Entry("loud.wav", "/abs/loud.wav", "loud.npy", np.full((2, 5), 70000.0, np.float32), 16000, 20)
    with pytest.raises(InputError) as err:
        writer.write(big)
    assert "\n" not in str(err.value) and "float16" in str(err.value) and "loud.wav" in str(err.value)
    assert writer.flush() == [] and os.listdir(tmp_path) == []


def test_float16_time_major_npy_equals_float32_within_half_precision(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    items = entries(2)
    write_all(OutputDir(tmp_path / "a"), "npy", [Entry(e.input, e.key, e.out_rel[:-2] + ".npy", e.features, 16000, 9) for e in items])
    write_all(OutputDir(tmp_path / "b"), "npy", [Entry(e.input, e.key, e.out_rel[:-2] + ".npy", e.features, 16000, 9) for e in items],
              dtype="float16", time_major=True)
    for e in items:
        name = e.out_rel[:-2] + ".npy"
        full = np.load(tmp_path / "a" / name)
        half = np.load(tmp_path / "b" / name)
        assert half.dtype == np.float16 and half.shape == full.T.shape
        np.testing.assert_allclose(half.astype(np.float32), full.T, rtol=2 ** -10, atol=2 ** -14)
        np.testing.assert_array_equal(half, e.features.T.astype(np.float16))


def test_time_major_npy_reads_back_channel_major_from_its_folder(tmp_path):
    (tmp_path / "config.yaml").write_text("output:\n  time_major: true\n")
    e = entries(1)[0]
    write_all(OutputDir(tmp_path), "npy", [Entry(e.input, e.key, "a.npy", e.features, 16000, 40)], time_major=True)
    feats, meta = load_features(tmp_path / "a.npy", mmap_mode="r")
    np.testing.assert_array_equal(feats, e.features)
    assert meta["shape"] == e.features.shape


def test_compressed_npz_with_float32_frame_times_where_exact(tmp_path):
    e = entries(1)[0]
    write_all(OutputDir(tmp_path), "npz", [Entry(e.input, e.key, "a.npz", e.features, 16384, 40)], compress=True, time_major=True)
    with np.load(tmp_path / "a.npz") as z:
        assert z["frame_times"].dtype == np.float32  # (4 i + 1.5) / 16384 s: exact in float32
        np.testing.assert_array_equal(z["frame_times"], np.asarray(GEOMETRY.frame_times(e.features.shape[1], 16384)))
        assert int(z["time_major"]) == 1
        np.testing.assert_array_equal(z["features"], e.features.T)
    import zipfile

    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zipfile.ZipFile(tmp_path / "a.npz").infolist())
    feats, _ = load_features(tmp_path / "a.npz")
    np.testing.assert_array_equal(feats, e.features)


def test_frame_times_stay_float64_when_float32_is_not_exact():
    from conv_pipeline.sink.formats.files import compact_times

    assert compact_times(np.array([0.1, 0.2])).dtype == np.float64
    assert compact_times(np.array([0.25, 0.5])).dtype == np.float32


def test_item_ids_are_valid_kaldi_ids_unique_and_stable():
    a = Entry("x/my file.wav", "/abs/x/my file.wav", "x/my file.npy", np.zeros((1, 1), np.float32), 1, 1)
    b = Entry("y/my file.wav", "/abs/y/my:file.wav", "x/my file.npy", np.zeros((1, 1), np.float32), 1, 1)
    ia, ib = item_id(a), item_id(b)
    assert ia != ib and item_id(a) == ia
    assert all(c.isalnum() or c in "._-" for c in ia) and " " not in ia and ia.startswith("x__my_file-")


def test_a_shard_without_an_item_is_refused_in_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    write_all(OutputDir(tmp_path), "parquet", entries(2))
    with pytest.raises(InputError, match="many inputs"):
        load_features(tmp_path / "data/part-00000.parquet")
    with pytest.raises(InputError, match="no row"):
        load_features(tmp_path / "data/part-00000.parquet", item="nope-00000000")


def test_a_kaldi_offset_that_does_not_hold_the_item_is_refused(tmp_path):
    pytest.importorskip("kaldiio")
    done = write_all(OutputDir(tmp_path), "kaldi", entries(2))
    from conv_pipeline.dataset.shards import read_shard_item

    _, loc = done[1]
    with pytest.raises(InputError, match="disagree"):
        read_shard_item(tmp_path / loc.output, loc.item, done[0][1].offset)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SHARDED)
def test_sharded_formats_on_s3(tmp_path, s3, fmt):
    pytest.importorskip(LIBRARY[fmt])
    bucket = s3.bucket(f"fmt-{fmt}")
    out = OutputDir(f"s3://{bucket}/feats", s3.options)
    items = entries(3)
    done = write_all(out, fmt, items, shard_items=2)
    prefix, suffix = out_names(fmt)
    names = {p.split("/feats/", 1)[1] for p in s3.fs.find(f"{bucket}/feats")}
    index = {"parquet": set(), "kaldi": {"feats.scp"}, "lhotse": {"cuts.jsonl.gz"}}[fmt]
    assert names == {f"{prefix}-00000.{suffix}", f"{prefix}-00001.{suffix}"} | index
    local = tmp_path / "copy"
    s3.fs.get(f"{bucket}/feats/", str(local), recursive=True)
    from conv_pipeline.dataset.shards import read_shard_item

    for e, loc in done:
        np.testing.assert_array_equal(read_shard_item(local / loc.output, loc.item, loc.offset), e.features)
    if fmt == "kaldi":  # the scp names the arks relative to output.dir
        assert (local / "feats.scp").read_text().split()[1].startswith("feats-00000.ark:")
    if fmt == "lhotse":
        cuts = [json.loads(x) for x in gzip.decompress((local / "cuts.jsonl.gz").read_bytes()).splitlines()]
        assert {c["features"]["storage_path"] for c in cuts} == {f"{prefix}-00000.h5", f"{prefix}-00001.h5"}


def test_inspect_lists_a_folder_and_a_shard_and_describes_one_item(tmp_path, capsys):
    pytest.importorskip("kaldiio")
    from conv_pipeline.inspect.__main__ import main

    done = write_all(OutputDir(tmp_path), "kaldi", entries(3), shard_items=2)
    assert main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert all(f"{loc.output} [{loc.item}]" in text for _, loc in done) and "3 ok" in text
    assert main([str(tmp_path / "feats-00000.ark")]) == 0
    text = capsys.readouterr().out
    assert "kaldi shard, 2 input(s)" in text and done[1][1].item in text and done[2][1].item not in text
    e, loc = done[1]
    assert main([str(tmp_path / loc.output), "--item", loc.item]) == 0
    text = capsys.readouterr().out
    assert f"3 channels x {e.features.shape[1]} frames" in text and e.input in text


def test_output_settings_are_refused_in_one_line():
    from conv_pipeline.config.checks import validate_output
    from conv_pipeline.config.schema import OutputConfig
    from conv_pipeline.errors import ConfigError

    validate_output(OutputConfig(), "npy")
    cases = [
        (dict(dtype="half"), "npy", None, "output.dtype must be one of float32, float16"),
        (dict(shard_items=0), "parquet", None, "output.shard_items must be an integer >= 1"),
        (dict(shard_mb=0), "parquet", None, "output.shard_mb must be"),
        (dict(dtype="float16"), "kaldi", None, "cannot be written as output.format=kaldi"),
        ({}, "lhotse", "ray", "engine=ray cannot write output.format=lhotse"),
    ]
    for kw, fmt, engine, message in cases:
        with pytest.raises(ConfigError) as err:
            validate_output(OutputConfig(**kw), fmt, engine)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_parquet_items_read_one_after_another_decode_their_row_group_once(tmp_path):
    """``load_features`` of every item of a parquet shard decodes each row group once (the last one
    is kept), and a shard rewritten in place is read anew."""
    pytest.importorskip("pyarrow")
    from conv_pipeline.dataset import shards

    out = OutputDir(tmp_path)
    items = entries()
    done = write_all(out, "parquet", items, shard_items=5)
    shards._row_group.cache_clear()
    for e, loc in done:
        np.testing.assert_array_equal(load_features(tmp_path / loc.output, item=loc.item)[0], e.features)
    assert shards._row_group.cache_info().misses == 1 and shards._row_group.cache_info().hits == 4
    e, loc = done[0]
    changed = [Entry(x.input, x.key, x.out_rel, x.features + 1, x.sample_rate, x.num_samples) for x in items]
    (tmp_path / loc.output).unlink()  # rewritten at the same path
    write_all(out, "parquet", changed, shard_items=5)
    np.testing.assert_array_equal(load_features(tmp_path / loc.output, item=loc.item)[0], e.features + 1)
