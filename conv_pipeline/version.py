"""The package's version and the versions of what computes or decodes its features, without importing them
(``importlib.metadata``; soundfile only for libsndfile's own version). ``--version`` prints them,
and every run records them with its features (``VERSIONS_KEY``): in ``config.yaml``
(``sink/jobdir.py``), in the weights' safetensors metadata (``stack/checkpoint.py``) and in each
``.npz`` (``sink/writer.py: npz_metadata``), as a JSON object ``{name: version}``."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

PACKAGES = ("torch", "torchaudio", "soundfile", "av", "hydra-core", "numpy")  # av: PyAV, whose wheel bundles FFmpeg
VERSIONS_KEY = "versions"  # the key they are recorded under beside the features


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """``{name: version}``: conv_pipeline, the packages that compute or decode, libsndfile, Python
    (looked up once per process: a few milliseconds)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {"conv_pipeline": package_version("conv_pipeline")}
    out.update({name: package_version(name) for name in PACKAGES})
    try:
        import soundfile

        out["libsndfile"] = str(soundfile.__libsndfile_version__)
    except (ImportError, OSError, AttributeError):
        out["libsndfile"] = "not found"
    out["python"] = platform.python_version()
    return out


def version_line() -> str:
    """``conv_pipeline 0.1.0 (torch 2.x, torchaudio 2.x, soundfile 0.x / libsndfile 1.x, ...)``."""
    v = versions()
    deps = ", ".join(f"{k} {v[k]}" for k in ("torch", "torchaudio", "soundfile", "libsndfile", "av", "hydra-core", "numpy", "python"))
    return f"conv_pipeline {v['conv_pipeline']} ({deps})"
