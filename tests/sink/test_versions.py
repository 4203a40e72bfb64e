"""The versions that computed a run's features are recorded with them: in ``config.yaml`` (read
with yaml), in every ``.npz`` (read with numpy) and in the weights' metadata (read with
safetensors), and ``load_features`` returns them. Compared with ``importlib.metadata``, the
soundfile module's libsndfile version and the platform's Python version, looked up here."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from helpers.audio import write_audio
from helpers.jobs import SR, batch_cfg
from safetensors import safe_open

from conv_pipeline.config.schema import AudioConfig, Config, LayerConfig, ModelConfig, OutputConfig
from conv_pipeline.dataset.features import load_features
from conv_pipeline.engines.job import run_batch
from conv_pipeline.engines.single import run

PACKAGES = ("conv_pipeline", "torch", "torchaudio", "soundfile", "av", "hydra-core", "numpy")


def expected() -> dict[str, str]:
    out = {name: metadata.version(name) for name in PACKAGES}
    out["libsndfile"] = str(soundfile.__libsndfile_version__)
    out["python"] = platform.python_version()
    return out


def _recorded(out: Path, feature: Path) -> dict[str, dict]:
    """The versions each of the run's files records, read with each format's own library."""
    with safe_open(str(out / "model.safetensors"), framework="numpy") as f:
        weights = json.loads(f.metadata()["versions"])
    return {
        "config.yaml": yaml.safe_load((out / "config.yaml").read_text())["versions"],
        "npz": json.loads(str(np.load(feature, allow_pickle=False)["versions"])),
        "model.safetensors": weights,
        "load_features": load_features(feature)[1]["versions"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [None, 0.1], ids=["whole", "chunked"])
def test_single_file_run_records_the_versions(tmp_path, chunk):
    wav = write_audio(tmp_path / "song.wav", seconds=0.5, sr=SR)
    cfg = Config(
        input=str(wav),
        model=ModelConfig(name="tiny", layers=[LayerConfig(out_channels=3, kernel_size=5, stride=2)]),
        audio=AudioConfig(sample_rate=SR),
        output=OutputConfig(dir=str(tmp_path / "out"), format="npz"),
    )
    cfg.runtime.chunk_seconds = chunk
    result = run(cfg)
    want = expected()
    for where, got in _recorded(tmp_path / "out", result.output).items():
        assert got == want, where
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny" and list(config)[-1] == "versions"  # after the settings


@pytest.mark.slow
def test_batch_job_records_the_versions(tmp_path):
    write_audio(tmp_path / "c" / "a.wav", seconds=0.3, sr=SR)
    write_audio(tmp_path / "c" / "b.wav", seconds=0.4, sr=SR, seed=1)
    out = tmp_path / "out"
    assert run_batch(batch_cfg(tmp_path / "c", out, fmt="npz")).ok == 2
    want = expected()
    for name in ("a.npz", "b.npz"):
        for where, got in _recorded(out, out / name).items():
            assert got == want, (name, where)


def test_npy_features_get_the_folders_versions(tmp_path):
    """A ``.npy`` has no metadata of its own: ``load_features`` gives ``config.yaml``'s."""
    from conv_pipeline.sink.jobdir import CONFIG_NAME
    from conv_pipeline.sink.manifest import ManifestRecord, append_record

    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump({"audio": {"sample_rate": 8000}, "versions": {"torch": "9.9"}}))
    append_record(tmp_path, ManifestRecord(input="x.wav", status="ok", output="x.npy"))
    assert load_features(tmp_path / "x.npy")[1]["versions"] == {"torch": "9.9"}
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump({"versions": ["not", "a", "mapping"]}))
    assert load_features(tmp_path / "x.npy")[1]["versions"] is None
