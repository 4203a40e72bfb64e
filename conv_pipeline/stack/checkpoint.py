"""Stack weights on disk: reading a checkpoint into a ``ConvStack``, and writing one.

Flow: source -> load -> **stack** -> execute -> sink -> engines. ``build_stack`` (``stack.py``)
loads ``model.checkpoint`` (``load_checkpoint``); the batch job writes ``model.safetensors`` to
its output folder (``save_weights``, ``same_weights``) and may take its input channels from a
checkpoint (``checkpoint_in_channels``).

Read: this package's safetensors (keys ``layers.N.<module>.<param>``, the layer config in the
metadata) and ``torch.load(weights_only=True)`` files, among them the feature encoder of a
torchaudio, Hugging Face or fairseq wav2vec2/HuBERT-family model (keys renamed by
``stack_state_dict``, everything else ignored). A checkpoint that does not fit is a one-line
``ConfigError`` naming the missing, unexpected or mismatched keys.

A checkpoint is untrusted (``open_tensors``): shapes are read first and only the tensors the
stack takes are read (memory-mapped); compressed zip records, oversized pickles and legacy files
far larger than the stack are refused; torch's reason for refusing a file is kept, its advice to
load it unsafely is not; a folder, FIFO or device is named as such and never opened.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from conv_pipeline.config.schema import ModelConfig
from conv_pipeline.errors import ConfigError
from conv_pipeline.version import VERSIONS_KEY, versions

# ---------------------------------------------------------------- weights on disk
# A checkpoint is untrusted input: its tensors are listed with their shapes first, and only the
# ones the stack takes are read (safetensors and torch's zip format are memory-mapped). What
# cannot be read in part is capped: the pickle of a zip checkpoint at MAX_PICKLE_BYTES, a legacy
# (pre-zip) torch file, read whole, at LEGACY_FACTOR x the stack's weights (at least
# LEGACY_MIN_BYTES). Compressed zip records are refused: torch.save never writes them, and a
# few MB of them can unpack to gigabytes.
MAX_PICKLE_BYTES = 16 << 20
LEGACY_FACTOR, LEGACY_MIN_BYTES = 64, 256 << 20

_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class Tensors:
    """A checkpoint's tensors by name: ``shapes`` known up front, ``read(names)`` reads only those."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], read: Callable[[list[str]], dict[str, torch.Tensor]]) -> None:
        self.shapes = shapes
        self.read = read


def _checkpoint_file(path: str | Path) -> Path:
    """``path`` once it names a regular file; ``ConfigError`` saying what it is otherwise (a FIFO
    is never opened: that would block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"model.checkpoint={str(path)!r}: no such file") from None
    except OSError as err:
        raise ConfigError(f"model.checkpoint={str(path)!r}: cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(_folder_message(Path(path)))
    for is_kind, kind in _NOT_REGULAR:
        if is_kind(st.st_mode):
            raise ConfigError(f"model.checkpoint={str(path)!r} is {kind}, not a checkpoint file; give a .safetensors or .pt file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"model.checkpoint={str(path)!r}: permission denied; make the file readable")
    return Path(path)


# Weight files a model folder (Hugging Face's layout, or a run's output.dir) may hold, best first.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "checkpoint.pt")


def _folder_message(path: Path) -> str:
    """What to give instead of a folder: the weights file inside it, when there is one."""
    found = [name for name in WEIGHT_FILES if (path / name).is_file()]
    kind = "a Hugging Face model folder" if (path / "config.json").is_file() else "a folder"
    if found:
        return (f"model.checkpoint={str(path)!r} is {kind}; give the weights file inside it: "
                f"model.checkpoint={str(path / found[0])!r}")
    return (f"model.checkpoint={str(path)!r} is {kind} without a weights file ({', '.join(WEIGHT_FILES)}); "
            "give a .safetensors file or a file saved with torch.save")


# How a file torch.save wrote begins: a zip archive (torch >= 1.6) or a pickle (the legacy format).
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _not_a_checkpoint(path: Path) -> None:
    """``ConfigError`` saying what accepted formats a file is not, when it begins like none of them."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(TORCH_MAGIC):
        raise ConfigError(
            f"model.checkpoint={str(path)!r} is not a checkpoint: neither safetensors nor a torch.save file "
            f"(it begins {head!r}); give a .safetensors file or a .pt/.pth/.bin file saved with torch.save"
        )


def _safetensors(path: Path) -> Tensors:
    from safetensors import SafetensorError, safe_open

    def read(names: list[str]) -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in names}
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"model.checkpoint={str(path)!r} is not a readable safetensors file ({err})") from None

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"model.checkpoint={str(path)!r} is not a readable safetensors file ({err})") from None
    return Tensors(shapes, read)


def torch_reason(err: Exception) -> str:
    """torch's reason for refusing a file, without its advice to load it unsafely."""
    advice = ("weights only load failed", "weights_only", "trusted source", "check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if not any(a in line.lower() for a in advice)]
    return (reasons or [type(err).__name__])[0]


def _zip_check(path: Path) -> bool:
    """True for a zip checkpoint (torch's format, read memory-mapped) once its records are checked."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # torch.load says what is wrong
    packed = sorted((i for i in infos if i.compress_type != zipfile.ZIP_STORED), key=lambda i: -i.file_size)
    if packed:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} holds compressed records ({packed[0].filename}: {packed[0].file_size:,} "
            f"bytes from {packed[0].compress_size:,}): torch.save never compresses; re-save the weights with torch.save"
        )
    pickles = [i for i in infos if i.filename.endswith("data.pkl")]
    if any(i.file_size > MAX_PICKLE_BYTES for i in pickles):
        raise ConfigError(
            f"model.checkpoint={str(path)!r}: its pickle is larger than {MAX_PICKLE_BYTES >> 20} MB (a state_dict's "
            "is a few kB); save a state_dict of tensors"
        )
    return True


def _torch_file(path: Path, stack_bytes: int) -> Tensors:
    _not_a_checkpoint(path)
    mapped = _zip_check(path)
    cap = max(LEGACY_MIN_BYTES, LEGACY_FACTOR * stack_bytes)
    size = path.stat().st_size
    if not mapped and size > cap:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} is {size / 2**20:.0f} MB in torch's legacy format, which is read whole: "
            f"more than {cap / 2**20:.0f} MB ({LEGACY_FACTOR}x this stack's weights); re-save it with torch.save "
            "or save the feature encoder's weights alone"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ConfigError(
            f"model.checkpoint={str(path)!r} cannot be loaded safely (weights_only=True): {torch_reason(err)}"
        ) from None
    for wrapper in ("state_dict", "model"):  # lightning-style and fairseq-style wrappers
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConfigError(f"model.checkpoint={str(path)!r} does not hold a state_dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return Tensors({k: tuple(v.shape) for k, v in state.items()}, lambda names: {k: state[k] for k in names})


def open_tensors(path: str | Path, stack_bytes: int) -> Tensors:
    """A checkpoint's tensors, listed with their shapes and read only when asked. ``stack_bytes``:
    the stack's weights, which cap a file that can only be read whole."""
    path = _checkpoint_file(path)
    if path.suffix == ".safetensors":
        return _safetensors(path)
    return _torch_file(path, stack_bytes)


# Feature-encoder keys of wav2vec2-family checkpoints -> this stack's keys. Any prefix before
# "feature_extractor." is accepted (wav2vec2., hubert., wavlm., w2v_encoder.w2v_model., ...).
_FOREIGN_KEYS = [
    # torchaudio and Hugging Face transformers: conv_layers.{i}.conv / .layer_norm
    (re.compile(r"^(.*?)feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)$"), "conv"),
    (re.compile(r"^(.*?)feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)$"), "norm.norm"),
    # fairseq: conv_layers.{i} = Sequential(conv, dropout, norm or Sequential(transpose, norm, transpose), gelu)
    (re.compile(r"^(.*?)feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$"), "conv"),
    (re.compile(r"^(.*?)feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)$"), "norm.norm"),
    (re.compile(r"^(.*?)feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$"), "norm.norm"),
]


_OWN_KEY = re.compile(r"^layers\.\d+\.")


def stack_state_dict(state: Mapping[str, object], path: str | Path = "checkpoint") -> dict[str, str]:
    """This stack's keys -> the checkpoint's: our own layout as is; a torchaudio, Hugging Face or
    fairseq wav2vec2/HuBERT model's feature-encoder weights renamed (everything else ignored).
    ``state``: the checkpoint's names (a mapping or any collection of them)."""
    if any(_OWN_KEY.match(k) for k in state):
        return {k: k for k in state if _OWN_KEY.match(k)}
    mapped: dict[str, str] = {}
    prefixes = set()
    for key in state:
        for pattern, target in _FOREIGN_KEYS:
            m = pattern.match(key)
            if m:
                prefixes.add(m.group(1))
                mapped[f"layers.{m.group(2)}.{target}.{m.group(3)}"] = key
                break
    if len(prefixes) > 1:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} holds several feature encoders (prefixes {sorted(prefixes)}); "
            "save the one you want on its own"
        )
    if not mapped:
        sample = ", ".join(sorted(state)[:4]) or "no tensors"
        raise ConfigError(
            f"model.checkpoint={str(path)!r} has no feature-encoder weights (looked for 'layers.N.conv.weight' "
            f"or '[prefix.]feature_extractor.conv_layers.N...'; found {sample})"
        )
    return mapped


def checkpoint_in_channels(path: str | Path, model: ModelConfig) -> int:
    """Input channels a checkpoint's first conv expects (``weight.shape[1] * groups``), from its
    shape alone: no tensor is read."""
    from conv_pipeline.config.checks import model_layer_specs, stack_parameters

    tensors = open_tensors(path, 4 * stack_parameters(model, 1))
    names = stack_state_dict(tensors.shapes, path)
    shape = tensors.shapes.get(names.get("layers.0.conv.weight", ""))
    if shape is None or len(shape) != 3:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} has no 3-D 'layers.0.conv.weight' (the first conv layer); "
            "it does not fit this kind of stack"
        )
    return int(shape[1]) * model_layer_specs(model)[0].groups


def load_checkpoint(stack: nn.Module, path: str | Path) -> None:
    """Load weights into ``stack``; refuse with the missing, unexpected or mismatched keys named.
    Shapes are compared first; only the tensors the stack takes are then read."""
    own = stack.state_dict()
    tensors = open_tensors(path, sum(v.numel() * v.element_size() for v in own.values()))
    names = stack_state_dict(tensors.shapes, path)
    shapes = {k: tensors.shapes[src] for k, src in names.items()}
    missing = sorted(set(own) - set(names))
    unexpected = sorted(set(names) - set(own))
    mismatched = [
        f"{k} {shapes[k]} vs model {tuple(own[k].shape)}"
        for k in own
        if k in shapes and shapes[k] != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:6]) + (" ..." if len(unexpected) > 6 else ""))
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:6]))
    if problems:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} does not fit model.layers: {'; '.join(problems)}; "
            "use the model config the checkpoint was written with"
        )
    state = tensors.read([names[k] for k in own])
    stack.load_state_dict({k: state[names[k]].to(own[k].dtype) for k in own})


def weights_metadata(stack: nn.Module) -> dict[str, str]:
    from dataclasses import asdict

    cfg = asdict(stack.model_config)
    cfg.pop("checkpoint", None)
    return {"format": "conv_pipeline", "model": json.dumps(cfg, sort_keys=True)}


def save_weights(stack: nn.Module, path: str | Path) -> None:
    """Write the stack's weights atomically as safetensors, with metadata ``model`` (the layer
    config, JSON: what ``same_weights`` compares) and ``versions`` (JSON: the package versions
    that wrote them, ``conv_pipeline.version.versions``).

    Serialised in memory and written by ``atomic_write`` itself: ``safetensors.save_file`` would
    create its own temporary file (a name the batch job's clean-up does not know) and report a
    full or read-only disk as a ``SafetensorError`` instead of an ``OSError``."""
    from safetensors.torch import save

    from conv_pipeline.sink.writer import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in stack.state_dict().items()}
    meta = {**weights_metadata(stack), VERSIONS_KEY: json.dumps(versions(), sort_keys=True)}  # not compared
    data = save(state, metadata=meta)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def same_weights(stack: nn.Module, path: str | Path) -> bool:
    """True when ``path`` holds exactly ``stack``'s weights and layer config."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("model") != weights_metadata(stack)["model"]:
                return False
            own = stack.state_dict()
            if set(f.keys()) != set(own):
                return False
            return all(torch.equal(f.get_tensor(k), own[k].detach().cpu()) for k in own)
    except Exception:
        return False
