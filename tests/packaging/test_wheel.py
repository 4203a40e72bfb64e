"""A plain (non-editable) install from a wheel finds its configs from any working directory."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest

from helpers.audio import make_audio
from helpers.paths import ROOT


@pytest.mark.slow
def test_wheel_ships_configs_and_runs_from_anywhere(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = dist.glob("conv_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "conv_pipeline/configs/config.yaml" in names
    assert "conv_pipeline/configs/model/default.yaml" in names
    assert "conv_pipeline/configs/model/tutorial.yaml" in names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    work = tmp_path / "elsewhere"  # no configs/ here, no checkout on the path
    wav = work / "x.wav"
    make_audio(wav, channels=2, frames=50, sr=8000)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    code = "import conv_pipeline, sys; print(conv_pipeline.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "conv_pipeline", "input=x.wav", "model=tutorial", "output.dir=out"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(work / "out" / "x.npy").shape == (3, 46)
