"""Geometry of a Conv1d stack: lengths, receptive field, hop and frame positions.

Pure Python, no tensors. Every other stage asks this module: shape prediction, config
validation, trimming padded batches, chunked execution and timestamps. The formulas are
those of ``docs/geometry.md``:

    e_i = d_i * (k_i - 1) + 1                         effective kernel of layer i
    L_i = floor((L_{i-1} + 2 p_i - e_i) / s_i) + 1      output length (torch's rule)
    J_i = J_{i-1} * s_i                                hop of layer i, in input samples
    R_i = R_{i-1} + (e_i - 1) * J_{i-1}                receptive field, in input samples
    P_i = P_{i-1} + p_i * J_{i-1}                      left padding seen from the input

Frame ``t`` of the last layer reads input samples ``[t*J - P, t*J - P + R - 1]``.

A layer's padding is zeros unless its ``edge`` says otherwise: ``reflect`` (``torch.stft``'s
``center=True``: the input mirrored about its first and last sample) or ``replicate`` (the first
and last frame repeated, as ``compute_deltas`` pads). Edge padding sits at the file's true start
and end only; it counts like zeros in every formula above, but reflecting ``p`` samples needs at
least ``p + 1`` of them (fewer give no frame), replicating needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from conv_pipeline.errors import ConfigError


@dataclass(frozen=True)
class LayerGeometry:
    """Time geometry of one ``Conv1d`` layer (channels do not matter here)."""

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    edge: str = "zeros"  # what the padding holds: zeros, reflect or replicate (at the file's true ends)

    def __post_init__(self) -> None:
        _check_int("kernel_size", self.kernel_size, minimum=1)
        _check_int("stride", self.stride, minimum=1)
        _check_int("padding", self.padding, minimum=0)
        _check_int("dilation", self.dilation, minimum=1)
        if self.edge not in EDGES:
            raise ConfigError(f"edge must be one of {', '.join(EDGES)}, got {self.edge!r}")

    @property
    def min_valid_input(self) -> int:
        """Fewest input frames the padding itself needs: ``padding + 1`` to reflect, 1 to replicate, else 1."""
        return self.padding + 1 if self.edge == "reflect" and self.padding else 1

    @property
    def effective_kernel(self) -> int:
        """Span of input samples read by one output: ``dilation * (kernel_size - 1) + 1``."""
        return self.dilation * (self.kernel_size - 1) + 1

    def output_length(self, length: int) -> int:
        """Output frames for ``length`` input frames; 0 when the padded input is shorter than the kernel."""
        span = length + 2 * self.padding - self.effective_kernel
        if length < self.min_valid_input or span < 0:
            return 0
        return span // self.stride + 1

    def min_input_length(self, out_length: int = 1) -> int:
        """Smallest input length giving at least ``out_length`` (>= 1) output frames."""
        return max(self.min_valid_input, (out_length - 1) * self.stride + self.effective_kernel - 2 * self.padding)


EDGES = ("zeros", "reflect", "replicate")


class StackGeometry:
    """Geometry of a stack of layers, first layer first.

    Args:
        layers: the layers' time geometry (``LayerGeometry`` or anything with ``kernel_size``,
            ``stride``, ``padding`` and ``dilation`` attributes).
    """

    def __init__(self, layers: Iterable[LayerGeometry]) -> None:
        self.layers: tuple[LayerGeometry, ...] = tuple(
            layer
            if isinstance(layer, LayerGeometry)
            else LayerGeometry(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                               getattr(layer, "edge", "zeros"))
            for layer in layers
        )
        if not self.layers:
            raise ConfigError("model.layers is empty: give at least one layer, e.g. model=default")
        jumps, fields, pads = [1], [1], [0]
        for layer in self.layers:
            fields.append(fields[-1] + (layer.effective_kernel - 1) * jumps[-1])
            pads.append(pads[-1] + layer.padding * jumps[-1])
            jumps.append(jumps[-1] * layer.stride)
        self._jumps = tuple(jumps)
        self._fields = tuple(fields)
        self._pads = tuple(pads)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"StackGeometry({list(self.layers)!r})"

    # ---- per-layer quantities (index 0 is the input, i is layer i, 1-based) ----
    def hop_at(self, i: int) -> int:
        """Hop ``J_i`` of layer ``i`` (1-based; 0 is the input) in input samples."""
        return self._jumps[i]

    def receptive_field_at(self, i: int) -> int:
        """Receptive field ``R_i`` of layer ``i`` in input samples."""
        return self._fields[i]

    def left_padding_at(self, i: int) -> int:
        """Total left padding ``P_i`` seen from the input, in input samples."""
        return self._pads[i]

    # ---- whole stack ----
    @property
    def hop(self) -> int:
        """Hop of the last layer in input samples (product of strides)."""
        return self._jumps[-1]

    @property
    def receptive_field(self) -> int:
        """Input samples one output frame depends on."""
        return self._fields[-1]

    @property
    def left_padding(self) -> int:
        """Samples of zero padding, seen from the input, before the first frame's window starts."""
        return self._pads[-1]

    def lengths(self, length: int) -> list[int]:
        """``[L_0, L_1, ..., L_n]`` for ``length`` input frames (a layer with no output gives 0 onwards)."""
        _check_int("length", length, minimum=0)
        out = [length]
        for layer in self.layers:
            out.append(layer.output_length(out[-1]))
        return out

    def output_length(self, length: int) -> int:
        """Frames the whole stack outputs for ``length`` input frames (0 if too short)."""
        return self.lengths(length)[-1]

    @property
    def min_input_length(self) -> int:
        """Fewest input samples that give one output frame."""
        need = 1
        for layer in reversed(self.layers):
            need = layer.min_input_length(need)
        return need

    def check_input_length(self, length: int, what: str = "input") -> int:
        """Return the output length, or raise ``InputError`` when ``length`` gives no frame."""
        from conv_pipeline.errors import InputError

        n = self.output_length(length)
        if n < 1:
            raise InputError(
                f"{what} has {length} samples but the stack needs at least {self.min_input_length} "
                f"(receptive field {self.receptive_field}, left padding {self.left_padding}); "
                "use a longer file or a stack with a smaller receptive field"
            )
        return n

    def frame_starts(self, n_frames: int) -> list[int]:
        """First input sample read by each output frame (negative inside the left padding)."""
        return [t * self.hop - self.left_padding for t in range(n_frames)]

    def frame_span(self, t: int) -> tuple[int, int]:
        """Inclusive ``(first, last)`` input sample read by output frame ``t``."""
        start = t * self.hop - self.left_padding
        return start, start + self.receptive_field - 1

    def frame_times(self, n_frames: int, sample_rate: float) -> list[float]:
        """Centre of each output frame's receptive field, in seconds."""
        if sample_rate <= 0:
            raise ConfigError(f"sample_rate must be > 0, got {sample_rate}")
        centre = (self.receptive_field - 1) / 2 - self.left_padding
        return [(t * self.hop + centre) / sample_rate for t in range(n_frames)]

    def layer_elements(self, length: int, channels: Sequence[tuple[int, int]]) -> list[int]:
        """Float elements each layer holds at once for ``length`` input frames: its input, the
        input zero-padded (``L + 2p``) and its output, ``channels`` being each layer's ``(in, out)``.
        The plan checks the largest against the memory available before any weight or sample exists."""
        lengths = self.lengths(length)
        return [
            c_in * (2 * lengths[i] + 2 * layer.padding) + c_out * lengths[i + 1]
            for i, (layer, (c_in, c_out)) in enumerate(zip(self.layers, channels))
        ]

    def summary_rows(self, length: int | None, channels: Sequence[tuple[int, int]] | None = None):
        """One dict per layer: kernel, stride, padding, dilation, in/out channels, output frames, RF, hop."""
        lengths = self.lengths(length) if length is not None else None
        rows = []
        for i, layer in enumerate(self.layers, start=1):
            row = {
                "layer": i,
                "kernel": layer.kernel_size,
                "stride": layer.stride,
                "padding": layer.padding,
                "dilation": layer.dilation,
                "edge": layer.edge,
                "frames": lengths[i] if lengths is not None else None,
                "receptive_field": self.receptive_field_at(i),
                "hop": self.hop_at(i),
            }
            if channels is not None:
                row["in_channels"], row["out_channels"] = channels[i - 1]
            rows.append(row)
        return rows


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def conv_parameters(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, bias: bool = True) -> int:
    """Weights and biases of one ``Conv1d``: ``out * (in / groups) * kernel`` (+ ``out`` with a bias)."""
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("out_channels", out_channels, minimum=1)
    _check_int("kernel_size", kernel_size, minimum=1)
    _check_int("groups", groups, minimum=1)
    return out_channels * (in_channels // groups) * kernel_size + (out_channels if bias else 0)


def conv_macs_per_frame(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> int:
    """Multiply-accumulates for one output frame (all output channels): ``out * (in / groups) * kernel``."""
    return conv_parameters(in_channels, out_channels, kernel_size, groups, bias=False)


def conv_flops_per_frame(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1, bias: bool = True) -> int:
    """FLOPs for one output frame: ``2 * MACs`` plus ``out_channels`` bias adds when ``bias``.

    ``Conv1d(2, 3, 5)`` (the tutorial layer): 2 * 30 + 3 = 63 FLOPs per frame.
    """
    macs = conv_macs_per_frame(in_channels, out_channels, kernel_size, groups)
    return 2 * macs + (out_channels if bias else 0)


def frames_per_second(geometry: StackGeometry, i: int, sample_rate: float) -> float:
    """Steady-state output frames per second of audio of layer ``i`` (1-based): ``sample_rate / J_i``.

    Edges aside (a finite input of ``T`` samples gives ``L_i``, about ``T / J_i`` frames), this is the
    rate at which layer ``i`` produces frames, so ``flops_per_frame * frames_per_second`` is its cost
    per second of audio.
    """
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate must be > 0, got {sample_rate}")
    return sample_rate / geometry.hop_at(i)
