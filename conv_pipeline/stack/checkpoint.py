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
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from conv_pipeline.config.schema import ModelConfig
from conv_pipeline.errors import ConfigError


# ---------------------------------------------------------------- weights on disk
def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.checkpoint={str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"model.checkpoint={str(path)!r} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.checkpoint={str(path)!r} cannot be loaded safely (weights_only=True): {first}"
        ) from None
    for wrapper in ("state_dict", "model"):  # lightning-style and fairseq-style wrappers
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConfigError(f"model.checkpoint={str(path)!r} does not hold a state_dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


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


def stack_state_dict(state: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """This stack's keys from a checkpoint: our own layout as is; a torchaudio, Hugging Face or
    fairseq wav2vec2/HuBERT model's feature-encoder weights renamed (everything else ignored)."""
    if any(_OWN_KEY.match(k) for k in state):
        return {k: v for k, v in state.items() if _OWN_KEY.match(k)}
    mapped: dict[str, torch.Tensor] = {}
    prefixes = set()
    for key, value in state.items():
        for pattern, target in _FOREIGN_KEYS:
            m = pattern.match(key)
            if m:
                prefixes.add(m.group(1))
                mapped[f"layers.{m.group(2)}.{target}.{m.group(3)}"] = value
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
    """Input channels a checkpoint's first conv expects (``weight.shape[1] * groups``)."""
    from conv_pipeline.config.checks import model_layer_specs

    state = stack_state_dict(_read_state_dict(path), path)
    weight = state.get("layers.0.conv.weight")
    if weight is None or weight.dim() != 3:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} has no 3-D 'layers.0.conv.weight' (the first conv layer); "
            "it does not fit this kind of stack"
        )
    return int(weight.shape[1]) * model_layer_specs(model)[0].groups


def load_checkpoint(stack: nn.Module, path: str | Path) -> None:
    """Load weights into ``stack``; refuse with the missing, unexpected or mismatched keys named."""
    state = stack_state_dict(_read_state_dict(path), path)
    own = stack.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
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
    stack.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def weights_metadata(stack: nn.Module) -> dict[str, str]:
    from dataclasses import asdict

    cfg = asdict(stack.model_config)
    cfg.pop("checkpoint", None)
    return {"format": "conv_pipeline", "model": json.dumps(cfg, sort_keys=True)}


def save_weights(stack: nn.Module, path: str | Path) -> None:
    """Write the stack's weights (and its layer config as metadata) atomically as safetensors.

    Serialised in memory and written by ``atomic_write`` itself: ``safetensors.save_file`` would
    create its own temporary file (a name the batch job's clean-up does not know) and report a
    full or read-only disk as a ``SafetensorError`` instead of an ``OSError``."""
    from safetensors.torch import save

    from conv_pipeline.sink.writer import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in stack.state_dict().items()}
    data = save(state, metadata=weights_metadata(stack))
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
