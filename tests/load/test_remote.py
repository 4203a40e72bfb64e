"""Audio on fsspec URLs (``conv_pipeline.load.remote``): probing and decoding by URL give what
the local file gives, errors included."""

from __future__ import annotations

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from conv_pipeline.config.schema import AudioConfig  # noqa: E402
from conv_pipeline.errors import InputError  # noqa: E402
from conv_pipeline.load import remote as url_io  # noqa: E402
from conv_pipeline.load.audio import load_audio  # noqa: E402
from helpers.jobs import SR  # noqa: E402
from helpers.storage import tone  # noqa: E402


def test_probe_and_decode_by_url_match_local_files(tmp_path):
    tone(tmp_path / "x.flac", 0.3, 16000, 1, channels=2)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)))
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/probe/x.flac", (tmp_path / "x.flac").read_bytes())
    mem.pipe_file("/probe/bad.wav", (tmp_path / "bad.wav").read_bytes())
    local, remote = url_io.probe(str(tmp_path / "x.flac")), url_io.probe("memory://probe/x.flac")
    assert (remote.sample_rate, remote.channels, remote.frames, remote.format) == (local.sample_rate, local.channels, local.frames, local.format)
    audio = AudioConfig(sample_rate=SR, channels="mono")
    a = load_audio(tmp_path / "x.flac", audio)
    b = url_io.UrlDecoder(load_audio)("memory://probe/x.flac", audio)
    assert np.array_equal(a.waveform.numpy(), b.waveform.numpy()) and a.sample_rate == b.sample_rate
    errors = []
    for path, call in [(str(tmp_path / "bad.wav"), load_audio), ("memory://probe/bad.wav", url_io.UrlDecoder(load_audio)),
                       ("memory://probe/bad.wav", lambda p, a: url_io.probe(p))]:
        with pytest.raises(InputError) as err:
            call(path, audio)
        errors.append(str(err.value).replace(path, "<path>"))
    assert errors[0] == errors[1] == errors[2]
    assert errors[0].startswith("<path>: not a readable audio file (")
    with pytest.raises(InputError, match="memory://probe/missing.wav: no such file"):
        url_io.UrlDecoder(load_audio)("memory://probe/missing.wav", audio)
