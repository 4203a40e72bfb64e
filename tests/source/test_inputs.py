"""Finding inputs (``conv_pipeline.source.inputs``): folders, globs and lists, local and on
fsspec URLs, and the output each input is planned to get."""

from __future__ import annotations

import pytest

from conv_pipeline.errors import InputError
from conv_pipeline.source.inputs import find_inputs, plan_outputs
from helpers.audio import write_audio


def test_folder_input_mirrors_the_tree_and_skips_non_audio(tmp_path):
    corpus = tmp_path / "corpus"
    for rel in ["x.wav", "sub/Y.WAV", "sub/deeper/z.flac", ".hidden.wav", ".git/h.wav", "readme.md", "sub/data.npy"]:
        if rel.endswith((".md", ".npy")):
            (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
            (corpus / rel).write_text("x")
        else:
            write_audio(corpus / rel)
    found = find_inputs(str(corpus))
    assert found.kind == "folder"
    assert found.rels == ["sub/Y.WAV", "sub/deeper/z.flac", "x.wav"]
    assert plan_outputs(found.rels, "npy") == ["sub/Y.npy", "sub/deeper/z.npy", "x.npy"]


def test_two_inputs_never_share_an_output():
    rels = ["a/x.wav", "a/x.flac", "a/y.wav", "b/x.wav", "a/X.ogg", "a/x.wav.flac"]
    outs = plan_outputs(rels, "npz")
    assert len(set(o.casefold() for o in outs)) == len(outs)
    assert outs[:4] == ["a/x.wav.npz", "a/x.flac.npz", "a/y.npz", "b/x.npz"]
    assert outs[4] == "a/X.ogg.npz"
    assert outs[5] == "a/x.wav.flac.npz"  # would have collided with x.wav's disambiguated name
    assert plan_outputs(rels, "npz") == outs  # deterministic


def test_find_inputs_on_a_filesystem_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    for rel in ["x.wav", "sub/Y.WAV", "sub/deeper/z.flac", ".hidden.wav", ".git/h.wav", "readme.md"]:
        mem.pipe_file(f"/find/corpus/{rel}", b"x")
    mem.pipe_file("/find/list.txt", b"# a list\ncorpus/x.wav\n\ncorpus/sub/deeper/z.flac\ns3://elsewhere/ignored.wav\n")
    found = find_inputs("memory://find/corpus")
    assert found.kind == "folder" and found.rels == ["sub/Y.WAV", "sub/deeper/z.flac", "x.wav"]
    assert found.paths == [f"memory://find/corpus/{r}" for r in found.rels]
    found = find_inputs("memory://find/corpus/**/*.flac")
    assert found.kind == "glob" and found.rels == ["sub/deeper/z.flac"] and found.root == "memory://find/corpus"
    with pytest.raises(InputError, match="several filesystems"):
        find_inputs("memory://find/list.txt")
    mem.pipe_file("/find/list.txt", b"corpus/x.wav\ncorpus/sub/deeper/z.flac\n")
    found = find_inputs("memory://find/list.txt")
    assert found.kind == "list" and found.paths == ["memory://find/corpus/x.wav", "memory://find/corpus/sub/deeper/z.flac"]
    assert found.rels == ["x.wav", "sub/deeper/z.flac"]
    with pytest.raises(InputError, match="no such file or folder"):
        find_inputs("memory://find/nowhere")
