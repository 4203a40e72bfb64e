"""torchaudio's sinc resampler computed phase by phase, only the taps each phase uses: ``PolyphaseFilter``.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``signal.resample`` (the whole
file) and ``stream.StreamingResampler`` (block by block) run the filter built here; ``signal``'s
``check_resample`` sizes it (``filter_weights``) before anything is built.

``torchaudio.functional.resample`` (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99) is
one strided conv. With the rates reduced by their greatest common divisor to ``orig`` and ``new``,
``base = 0.99 * min(orig, new)`` and the half-width ``w = ceil(6 * orig / base)``, window ``m``
reads the ``span = 2w + orig`` samples from padded sample ``m * orig`` (``w`` zeros before the
signal) and gives the outputs ``m * new + j``, one per phase ``j < new``. Phase ``j``'s tap ``k``
is ``sinc(pi t) * cos(pi t / 12)**2 * base / orig`` with ``t = ((k - w) / orig - j / new) * base``,
zero where ``|t| >= 6``: a phase has at most ``taps`` (about ``12 * orig / base``) non-zero taps of
``span`` (34 of 475 for 44.1 -> 16 kHz), starting at ``first[j]``.

Only those are computed. Consecutive phases are gathered ``group`` at a time; group ``g``'s taps
lie in one stretch of ``stretch`` samples from ``start + g * step`` of the window, so all groups
are one batched matrix product ``(groups, group, stretch) @ (groups, stretch, windows)`` over a
strided view of the input (window ``m`` starts at sample ``m * orig``, group ``g`` at ``g * step``
more: nothing is copied per window or per group). The taps are computed with torchaudio's operations in
the waveform's dtype (its kernel is computed in float32 for float32 audio), so the result equals
``torchaudio.functional.resample`` up to the order of the sums: about 2e-7 on unit-scale float32.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

CPU = torch.device("cpu")
LOWPASS_WIDTH, ROLLOFF = 6, 0.99  # torchaudio.functional.resample's defaults

# Samples (all channels) one slice of matrix products reads: 4 MB of float32 stays in cache and
# bounds the scratch memory whatever the length of the input.
SLICE_SAMPLES = 1 << 20
# Products of at most this many multiply-adds run as one elementwise product and sum rather
# than a BLAS call: for a few windows, waking BLAS threads costs more than the arithmetic.
SMALL_PRODUCT = 1 << 14


@dataclass(frozen=True)
class PhaseLayout:
    """Which taps each phase uses and how phases are grouped, for ``orig_hz -> new_hz``.

    ``first``: ``(new,)`` the first tap of each phase; every phase uses ``taps`` taps from there.
    Group ``g`` holds phases ``g * group ..`` (the last may hold fewer) and reads ``stretch``
    samples of its window from ``starts[g]``. Groups come in batches of ``batch`` whose starts are
    ``step`` apart (``heads[b] + i * step``), so that one strided view holds a batch: the first
    taps of consecutive groups are ``group * orig / new`` apart, and ``stretch`` absorbs the
    fraction a batch drifts. ``reach``: the samples a window reads from its start (a few past
    ``span`` at most, where every weight is zero).
    """

    orig: int
    new: int
    width: int
    span: int
    taps: int
    first: torch.Tensor
    group: int
    groups: int
    batch: int
    step: int
    heads: tuple[int, ...]
    stretch: int

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(self.heads[g // self.batch] + (g % self.batch) * self.step for g in range(self.groups))

    @property
    def base(self) -> float:
        return min(self.orig, self.new) * ROLLOFF

    @property
    def reach(self) -> int:
        return max(self.starts) + self.stretch

    @property
    def weights(self) -> int:
        """Numbers the filter holds: ``groups x stretch x group``."""
        return self.groups * self.stretch * self.group


def phase_bounds(orig: int, new: int) -> tuple[int, int, int]:
    """``(width, span, taps)`` for rates already reduced by their gcd (``taps``: the most any
    phase uses, an upper bound computed without building anything)."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    reach = LOWPASS_WIDTH * orig / base  # |k - centre| < reach, in samples
    return width, 2 * width + orig, min(2 * width + orig, math.floor(2 * reach) + 2)


def filter_weights(orig_hz: int, new_hz: int) -> int:
    """An upper bound of the numbers ``PolyphaseFilter(orig_hz, new_hz)`` allocates, from the
    rates alone (nothing is built): ``check_resample`` refuses a filter above its limit."""
    g = math.gcd(int(orig_hz), int(new_hz))
    orig, new = int(orig_hz) // g, int(new_hz) // g
    _, _, taps = phase_bounds(orig, new)
    group = group_size(orig, new, taps)
    drift = drift_allowed(taps)  # what a batch's evenly spaced starts may lag behind its groups
    stretch = taps + math.ceil((group - 1) * orig / new) + 2 + drift
    return math.ceil(new / group) * group * stretch


def group_size(orig: int, new: int, taps: int) -> int:
    """Phases per group: a group's stretch is about ``taps + (group - 1) * orig / new``; twice the
    taps (half the products are of zeros) measured fastest (scripts/bench_resample.py): narrower
    groups make smaller, slower matrix products, wider ones more products of zeros."""
    return max(1, min(new, round(taps * new / orig)))


def drift_allowed(taps: int) -> int:
    """Samples a batch of groups may drift from evenly spaced starts (a quarter of the taps)."""
    return max(2, taps // 4)


@functools.lru_cache(maxsize=64)
def layout(orig_hz: int, new_hz: int) -> PhaseLayout:
    """The ``PhaseLayout`` of ``orig_hz -> new_hz`` (cached: a batch job builds it once)."""
    g = math.gcd(int(orig_hz), int(new_hz))
    orig, new = int(orig_hz) // g, int(new_hz) // g
    width, span, most = phase_bounds(orig, new)
    base = min(orig, new) * ROLLOFF
    reach = LOWPASS_WIDTH * orig / base
    centre = width + torch.arange(new, dtype=torch.float64) * orig / new  # tap k where t == 0
    lo = (torch.floor(centre - reach) + 1).clamp(min=0).long()  # first k with |t| < 6
    hi = torch.ceil(centre + reach).clamp(max=span).long()  # one past the last
    taps = int((hi - lo).max())
    first = lo.clamp(max=span - taps)
    group = group_size(orig, new, most)
    groups = -(-new // group)
    step = group * orig // new  # consecutive groups' first taps: group * orig / new apart
    lag = group * orig / new - step  # how far each group falls behind ``step``
    batch = groups if lag * groups <= drift_allowed(most) else max(1, int(drift_allowed(most) / lag))
    gi = torch.arange(groups)
    offset = (gi % batch) * step  # from the batch's head
    heads = torch.stack([(first[gi * group] - offset)[b : b + batch].min() for b in range(0, groups, batch)]).clamp(min=0)
    starts = heads[gi // batch] + offset
    ends = first[torch.clamp(gi * group + group - 1, max=new - 1)] + taps  # one past each group's last tap
    stretch = int((ends - starts).max())
    return PhaseLayout(orig, new, width, span, taps, first, group, groups, batch, step,
                       tuple(int(h) for h in heads), stretch)


def sinc_taps(lay: PhaseLayout, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(new, taps)``: phase ``j``'s taps ``first[j] ..``, computed as torchaudio computes its
    kernel (the same operations in ``dtype``: the same numbers)."""
    k = lay.first[:, None] + torch.arange(lay.taps)  # (new, taps) indices into the span
    idx = torch.arange(-lay.width, lay.width + lay.orig, dtype=dtype) / lay.orig  # (span,)
    phase = torch.arange(0, -lay.new, -1, dtype=dtype) / lay.new  # (new,)
    t = phase[:, None] + idx[k]
    t *= lay.base
    t = t.clamp_(-LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_WIDTH / 2) ** 2  # sinc_interp_hann
    t *= math.pi
    taps = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    taps *= window * (lay.base / lay.orig)
    return taps.to(device)


class PolyphaseFilter:
    """``torchaudio.functional.resample``'s filter for ``orig_hz -> new_hz``, by groups of phases.

    ``weight``: ``(groups, stretch, group)``, group ``g``'s taps over its stretch (zeros where a
    phase uses fewer). ``run`` computes windows of a signal; ``signal.resample`` and
    ``stream.StreamingResampler`` say which.
    """

    def __init__(self, orig_hz: int, new_hz: int, dtype: torch.dtype = torch.float32,
                 device: torch.device = CPU) -> None:
        lay = self.layout = layout(int(orig_hz), int(new_hz))
        self.orig, self.new, self.width, self.span = lay.orig, lay.new, lay.width, lay.span
        taps = sinc_taps(lay, dtype, device)  # (new, taps)
        j = torch.arange(lay.new)
        g, p = j // lay.group, j % lay.group
        row = (lay.first - torch.tensor(lay.starts)[g])[:, None] + torch.arange(lay.taps)  # (new, taps)
        if int(row.min()) < 0 or int(row.max()) >= lay.stretch:
            raise RuntimeError(f"internal error: the resampler's layout for {orig_hz} -> {new_hz} Hz misses taps")
        self.weight = torch.zeros(lay.groups, lay.stretch, lay.group, dtype=dtype, device=device)
        self.weight[g[:, None].expand_as(row), row, p[:, None].expand_as(row)] = taps
        self.weight_t = self.weight.transpose(1, 2).contiguous()  # (groups, group, stretch)
        self.reach = lay.reach

    def run(self, x: torch.Tensor, first: int, count: int, out: torch.Tensor) -> None:
        """Windows ``0 .. count - 1`` of ``x`` ``(C, T)`` into ``out`` ``(C, count * new)``.

        Window ``m`` reads ``x[:, first + m * orig :]`` (``span`` samples; zeros outside ``x``) and
        gives ``out[:, m * new : (m + 1) * new]``, torchaudio's phases in order. Windows inside
        ``x`` are read where they are (rows of ``x`` with unit stride), the others (the edges)
        through a zero-padded copy; a slice of windows at a time, so memory beyond ``out`` stays
        about ``SLICE_SAMPLES`` whatever ``count``.
        """
        c, t, o = int(x.shape[0]), int(x.shape[-1]), self.orig
        inner_lo = min(count, max(0, -(first // o)))  # the first window starting inside x
        inner_hi = max(inner_lo, min(count, (t - self.reach - first) // o + 1))  # one past the last inside
        if x.stride(-1) != 1 or x.dtype != self.weight.dtype:
            inner_lo = inner_hi = count
        for lo, hi in ((0, inner_lo), (inner_hi, count)):
            if hi > lo:
                self._padded(x, first + lo * o, hi - lo, out[:, lo * self.new : hi * self.new])
        if inner_hi > inner_lo:
            rows = max(1, SLICE_SAMPLES // (self.layout.groups * self.layout.group))  # products of a slice: ~4 MB
            prod = x.new_empty(self.layout.groups * self.layout.group * min(rows, inner_hi - inner_lo))
            for ch in range(c):
                for a in range(inner_lo, inner_hi, rows):
                    r = min(rows, inner_hi - a)
                    dest = out[ch : ch + 1, a * self.new : (a + r) * self.new]
                    self._windows(x[ch], x[ch].storage_offset() + first + a * o, r, prod, dest, 1, r)

    def _padded(self, x: torch.Tensor, start: int, count: int, out: torch.Tensor) -> None:
        """``count`` windows from ``x[:, start:]`` through a zero-padded copy: each channel's samples
        ``(rows + over) * orig`` apart in ``scratch``, so that one strided view, column ``i`` from
        sample ``i * orig``, holds every channel's windows (and ``over`` unused columns between channels)."""
        c, o = int(x.shape[0]), self.orig
        over = max(0, -(-(self.reach - o) // o))  # rows a window reads past its own
        rows = max(1, min(count, SLICE_SAMPLES // (c * max(o, self.layout.stretch)) - over))
        scratch = x.new_empty(c * (rows + over) * o + self.reach)
        prod = x.new_empty(self.layout.groups * self.layout.group * c * (rows + over))
        for a in range(0, count, rows):
            r = min(rows, count - a)
            per = (r + over) * o
            self._fill(x, start + a * o, scratch[: c * per].view(c, per))
            scratch[c * per : c * per + self.reach].zero_()
            self._windows(scratch, 0, c * (r + over), prod, out[:, a * self.new : (a + r) * self.new], c, r)

    def _windows(self, src: torch.Tensor, offset: int, width: int, prod: torch.Tensor, out: torch.Tensor,
                 c: int, rows: int) -> None:
        """The ``width`` windows of ``src``'s storage from ``offset``, ``orig`` apart, into ``out``
        ``(c, rows * new)``: columns ``i * width / c ..`` of the product are channel ``i``'s windows
        (the first ``rows`` of them kept)."""
        lay = self.layout
        groups = lay.groups
        prod = self._products(src, offset, width, prod[: groups * lay.group * width].view(groups, lay.group, width))
        if c * rows == width:  # one channel, every column kept: one 2-D transpose (torch's blocked copy)
            out.view(rows, self.new).copy_(prod.view(groups * lay.group, width)[: self.new].t())
            return
        phases = prod.view(groups, lay.group, c, width // c)[:, :, :, :rows].permute(2, 3, 0, 1)  # (c, rows, G, P)
        dest = out.view(c, rows, self.new)
        full = self.new // lay.group  # groups with ``group`` phases; the last may hold fewer
        if full:
            dest[:, :, : full * lay.group].view(c, rows, full, lay.group).copy_(phases[:, :, :full])
        if full * lay.group < self.new:
            dest[:, :, full * lay.group :].copy_(phases[:, :, full, : self.new - full * lay.group])

    def _products(self, src: torch.Tensor, offset: int, width: int, prod: torch.Tensor) -> torch.Tensor:
        """``(groups, group, width)``: every group's phases for the ``width`` windows of ``src``'s
        storage from ``offset`` (``orig`` apart), computed in ``prod`` (or a new tensor)."""
        lay, o = self.layout, self.orig
        if lay.batch * lay.group * lay.stretch * width <= SMALL_PRODUCT:  # a few windows (a short streamed
            for b, g in self._batches(src, offset, width):  # block): no BLAS call, whose threads cost more
                torch.sum(self.weight_t[g, :, :, None] * b[:, None], dim=2, out=prod[g])
        elif lay.groups == 1 and o < lay.stretch:  # windows overlap (few phases, short stride)
            signal = src.as_strided((1, 1, (width - 1) * o + lay.stretch), (0, 0, 1), offset + lay.heads[0])
            prod = F.conv1d(signal, self.weight_t[0, :, None, :], stride=o)  # torchaudio's strided conv, fewer taps
        else:  # (batch, group, stretch) @ (batch, stretch, windows): the wide side last
            for b, g in self._batches(src, offset, width):
                torch.bmm(self.weight_t[g], b, out=prod[g])
        return prod

    def _batches(self, src: torch.Tensor, offset: int, width: int) -> Iterator[tuple[torch.Tensor, slice]]:
        """Each batch of groups as a strided view ``(groups in it, stretch, width)`` and its slice of groups."""
        lay = self.layout
        for b, head in enumerate(lay.heads):  # starts ``step`` apart from ``head``
            g = slice(b * lay.batch, min(lay.groups, (b + 1) * lay.batch))
            yield src.as_strided((g.stop - g.start, lay.stretch, width), (lay.step, 1, self.orig), offset + head), g

    @staticmethod
    def _fill(x: torch.Tensor, start: int, dest: torch.Tensor) -> None:
        """``dest`` ``(C, n)`` = ``x[:, start : start + n]``, zeros where that lies outside ``x``."""
        n, t = int(dest.shape[-1]), int(x.shape[-1])
        lo, hi = min(max(start, 0), t), max(min(start + n, t), 0)
        if hi <= lo:
            dest.zero_()
            return
        dest[:, : lo - start].zero_()
        dest[:, lo - start : hi - start] = x[:, lo:hi]
        dest[:, hi - start :].zero_()


@functools.lru_cache(maxsize=16)
def polyphase_filter(orig_hz: int, new_hz: int, dtype: torch.dtype, device: torch.device) -> PolyphaseFilter:
    """``PolyphaseFilter``, cached (read-only once built, shared by threads)."""
    return PolyphaseFilter(orig_hz, new_hz, dtype, device)
