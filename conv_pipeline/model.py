"""The conv stack: an ordinary ``nn.Module`` built from a ``ModelConfig``.

Each layer is ``Conv1d -> norm (optional, per frame) -> activation (optional)``. With
``lengths`` the stack runs a padded batch exactly as if each item ran alone: positions past
each item's valid length (from the geometry module) are zeroed before every layer, so padding
never leaks into valid frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .config import ACTIVATIONS, NORMS, FrontendConfig, LayerConfig, ModelConfig, validate_model
from .errors import ConfigError, InputError

__all__ = ["ConvStack", "build_stack", "load_checkpoint", "save_weights", "checkpoint_in_channels"]

_ACTIVATION_TYPES = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}
assert set(_ACTIVATION_TYPES) == set(ACTIVATIONS)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at every frame: ``(batch, channels, frames)`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) -> (B, T, C) -> (B, C, T)


class TimeGroupNorm(nn.Module):
    """GroupNorm with one group per channel: each channel normalised over the item's whole
    time axis (``nn.GroupNorm(C, C)``, as in the wav2vec2 base feature encoder).

    ``forward(x, valid)``: with ``valid`` (frames per item, ``(batch,)``), statistics use only each
    item's first ``valid[b]`` frames, so a padded batch gives each item's single-file result.
    ``normalize(x, mean, var)`` applies known statistics (``(batch, C)`` each): the second pass of
    chunked execution.
    """

    mixes_time = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(channels, channels, affine=True)

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt(var.to(x.dtype) + self.norm.eps)[..., None]  # (B, C, 1)
        y = (x - mean.to(x.dtype)[..., None]) * inv  # (B, C, T)
        return y * self.norm.weight[:, None] + self.norm.bias[:, None]

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        if valid is None:
            valid = [x.shape[-1]] * x.shape[0]
        if x.shape[-1] > 1 and all(v >= x.shape[-1] for v in valid):
            return self.norm(x)  # nn.GroupNorm refuses a single frame; the masked path handles it
        idx = torch.arange(x.shape[-1], device=x.device)
        n = torch.tensor(valid, device=x.device, dtype=x.dtype).clamp(min=1)  # (B,)
        mask = (idx[None, :] < n[:, None]).to(x.dtype)[:, None, :]  # (B, 1, T)
        mean = (x * mask).sum(-1) / n[:, None]  # (B, C)
        var = (((x - mean[..., None]) * mask) ** 2).sum(-1) / n[:, None]  # (B, C)
        return self.normalize(x, mean, var)


_NORM_TYPES = {"layer_norm": ChannelLayerNorm, "group_norm": TimeGroupNorm}
assert set(_NORM_TYPES) == set(NORMS)


def _row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides. A per-frame norm leaves its output transposed, and torch's
    CPU grouped conv segfaults on such a tensor of 1 frame; ``contiguous()`` is not enough there
    (a 1-frame tensor counts as contiguous whatever its strides). No copy for the usual input."""
    b, c, t = x.shape
    if x.stride() == (c * t, t, 1):
        return x
    return x.clone(memory_format=torch.contiguous_format)


class ConvLayer(nn.Module):
    """``Conv1d``, then an optional per-frame norm, then an optional activation."""

    def __init__(self, in_channels: int, spec: LayerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=spec.bias,
        )
        self.norm = _NORM_TYPES[spec.norm](spec.out_channels) if spec.norm else None
        self.act = _ACTIVATION_TYPES[spec.activation]() if spec.activation else None

    @property
    def mixes_time(self) -> bool:
        """True when the norm pools over time (its output depends on the whole item)."""
        return bool(getattr(self.norm, "mixes_time", False))

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``(B, C_in, T) -> (B, C_out, T')``; ``valid``: each item's valid output frames (time norms)."""
        x = self.conv(_row_major(x))  # (B, C_in, T) -> (B, C_out, T')
        if self.norm is not None:
            x = self.norm(x, valid) if self.mixes_time else self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ConvStack(nn.Module):
    """A stack of ``ConvLayer``s.

    Args:
        in_channels: channels of the input audio.
        layers: layer specs, first layer first.

    Shapes: ``forward(x)`` takes ``(batch, in_channels, frames)`` and returns
    ``(batch, out_channels, geometry.output_length(frames))``.
    """

    def __init__(
        self, in_channels: int, layers: Sequence[LayerConfig], frontend: Optional[FrontendConfig] = None
    ) -> None:
        super().__init__()
        from .config import frontend_out_channels
        from .frontends import build_frontend

        self.model_config = ModelConfig(in_channels=in_channels, layers=list(layers), frontend=frontend)
        self.geometry = validate_model(self.model_config)
        self.in_channels = in_channels
        modules: list[nn.Module] = build_frontend(frontend, in_channels) if frontend is not None else []
        chans = frontend_out_channels(frontend) if frontend is not None else in_channels
        for spec in layers:
            modules.append(ConvLayer(chans, spec))
            chans = spec.out_channels
        self.out_channels = chans
        self.layers = nn.ModuleList(modules)

    @property
    def mixes_time(self) -> bool:
        """True when some layer normalises over time (chunked execution then needs two passes)."""
        return any(layer.mixes_time for layer in self.layers)

    @classmethod
    def from_config(cls, model: ModelConfig, in_channels: Optional[int] = None, seed: int = 0) -> "ConvStack":
        """Build with weights initialised from ``seed`` (same config and seed give the same weights)."""
        channels = in_channels if in_channels is not None else model.in_channels
        if channels == "auto":
            raise ConfigError("model.in_channels is 'auto': pass in_channels (the audio's channel count)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stack = cls(int(channels), model.layers, model.frontend)
        stack.model_config.name = model.name
        return stack

    @classmethod
    def from_preset(cls, name: str, overrides: Sequence[str] = (), in_channels: Optional[int] = None, seed: int = 0):
        """Build from a preset under ``configs/model`` plus Hydra-style overrides, e.g.
        ``ConvStack.from_preset("default", ["model.layers.0.out_channels=32"], in_channels=1)``;
        ``model.checkpoint=PATH`` among the overrides loads those weights."""
        from .pipeline import compose_config

        cfg = compose_config([f"model={name}", *overrides])
        stack = cls.from_config(cfg.model, in_channels=in_channels, seed=seed)
        if cfg.model.checkpoint:
            load_checkpoint(stack, cfg.model.checkpoint)
        return stack

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for each item's valid input ``lengths`` (shape ``(batch,)``)."""
        return torch.tensor([self.geometry.output_length(int(n)) for n in lengths], dtype=torch.long)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``(batch, in_channels, frames)``; ``lengths``: valid frames per item, or None.

        Returns ``(batch, out_channels, frames_out)``; with ``lengths``, each item's frames past
        its own valid output length are padding (trim them with ``output_lengths``).
        """
        if x.dim() != 3:
            raise InputError(f"input must be 3-D (batch, channels, frames), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"input has {x.shape[1]} channels, the stack expects {self.in_channels}")
        if lengths is None:
            for layer in self.layers:
                x = layer(x)
            return x
        per_layer = [self.geometry.lengths(int(n)) for n in lengths]  # per item: [L_0, ..., L_n]
        in_place_ok = not torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            # the caller's input is never modified; a layer's own output may be, when no autograd
            x = _zero_past(x, [lens[i] for lens in per_layer], in_place=i > 0 and in_place_ok)
            x = layer(x, [lens[i + 1] for lens in per_layer])
        return x


def _zero_past(x: torch.Tensor, valid: Sequence[int], in_place: bool = False) -> torch.Tensor:
    """Zero ``x[b, :, valid[b]:]`` for every item shorter than the batch (``in_place``: only
    the padded tails are touched, no new tensor)."""
    frames = x.shape[-1]
    short = [(b, v) for b, v in enumerate(valid) if v < frames]
    if not short:
        return x
    if in_place:
        for b, v in short:
            x[b, :, v:] = 0
        return x
    idx = torch.arange(frames, device=x.device)  # (T,)
    keep = idx[None, :] < torch.tensor(valid, device=x.device)[:, None]  # (B, T)
    return x * keep[:, None, :].to(x.dtype)  # (B, C, T)


def build_stack(model: ModelConfig, in_channels: int, seed: int = 0) -> ConvStack:
    """A stack for ``in_channels`` input channels: seeded weights, or the checkpoint's when one is set."""
    stack = ConvStack.from_config(model, in_channels=in_channels, seed=seed)
    if model.checkpoint:
        load_checkpoint(stack, model.checkpoint)
    return stack


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
    from .config import model_layer_specs

    state = stack_state_dict(_read_state_dict(path), path)
    weight = state.get("layers.0.conv.weight")
    if weight is None or weight.dim() != 3:
        raise ConfigError(
            f"model.checkpoint={str(path)!r} has no 3-D 'layers.0.conv.weight' (the first conv layer); "
            "it does not fit this kind of stack"
        )
    return int(weight.shape[1]) * model_layer_specs(model)[0].groups


def load_checkpoint(stack: ConvStack, path: str | Path) -> None:
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


def weights_metadata(stack: ConvStack) -> dict[str, str]:
    from dataclasses import asdict

    cfg = asdict(stack.model_config)
    cfg.pop("checkpoint", None)
    return {"format": "conv_pipeline", "model": json.dumps(cfg, sort_keys=True)}


def save_weights(stack: ConvStack, path: str | Path) -> None:
    """Write the stack's weights (and its layer config as metadata) atomically as safetensors.

    Serialised in memory and written by ``atomic_write`` itself: ``safetensors.save_file`` would
    create its own temporary file (a name the batch job's clean-up does not know) and report a
    full or read-only disk as a ``SafetensorError`` instead of an ``OSError``."""
    from safetensors.torch import save

    from .writer import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in stack.state_dict().items()}
    data = save(state, metadata=weights_metadata(stack))
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def same_weights(stack: ConvStack, path: str | Path) -> bool:
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
