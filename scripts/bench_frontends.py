"""Benchmark section `frontends`: every preset on the same 16 kHz mono input, whole-file vs chunked
(`runtime.chunk_seconds` pieces through the streaming executor) vs the reference implementation
(torchaudio's wav2vec2 feature extractor with the same weights, torch.stft, torchaudio's
MelSpectrogram). Prints x real time (median of rounds, the three run side by side in each round)
and the largest difference to the whole-file result.

Then `mel` against torchaudio's MelSpectrogram(center=False, same n_fft/hop/n_mels) on the same
input, with 1 and with 2 torch threads: our whole-file stack call and our chunked executor
(2 s chunks) each timed alternately with torchaudio, wall and process CPU seconds; the ratio is
the median over rounds of torchaudio's time / ours, each measured within one round (the goal
is >= 1.2). The stft/mel conv runs as an FFT (conv_pipeline/stack/spectral.py).

    python scripts/bench_frontends.py [--quick]        (or: python scripts/benchmark.py frontends)"""

from __future__ import annotations

import statistics
import time

import torch

PRESETS = ["wav2vec2_base", "wav2vec2_large", "stft", "mel", "sinc"]


def _reference(name: str, stack):
    """The reference implementation with the stack's weights, as ``x (T,) -> (C, F)``; None for sinc."""
    import torchaudio
    from torchaudio.models.wav2vec2.components import _get_feature_extractor

    if name.startswith("wav2vec2"):
        mode, bias = ("group_norm", False) if name == "wav2vec2_base" else ("layer_norm", True)
        ref = _get_feature_extractor(mode, [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2, bias=bias).eval()
        state = {k.replace("layers.", "conv_layers.").replace("norm.norm", "layer_norm"): v for k, v in stack.state_dict().items()}
        ref.load_state_dict(state)
        return lambda x: ref(x[None], None)[0][0].T
    if name == "stft":
        win = torch.hann_window(400)
        return lambda x: torch.stft(x, 400, 160, window=win, center=False, return_complex=True).abs()
    if name == "mel":
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, center=False, power=2.0)
        return mel
    return None


def _variants(stack, x: torch.Tensor, blocks, ref) -> dict:
    """``whole``, ``chunked`` (our stack) and ``reference`` (``ref(x)``, when given): ``() -> (C, F)`` each."""
    from conv_pipeline.execute.chunked import iter_features

    def whole():
        with torch.inference_mode():
            return stack(x[None, None])[0]

    def chunked():
        return torch.cat(list(iter_features(blocks, stack)), dim=-1)

    def reference():
        with torch.inference_mode():
            return ref(x)

    return {"whole": whole, "chunked": chunked} | ({"reference": reference} if ref else {})


def _timed(fn) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def mel_vs_torchaudio(seconds: float, n_rounds: int) -> None:
    """model=mel (whole and chunked) vs torchaudio's MelSpectrogram, 1 and 2 threads, alternating."""
    import torchaudio

    from conv_pipeline.stack.stack import ConvStack

    torch.manual_seed(0)
    x = 0.1 * torch.randn(int(seconds * 16000))  # (T,)
    stack = ConvStack.from_preset("mel", in_channels=1).eval()
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80, center=False, power=2.0)
    blocks = list(x[None].split(32000, dim=-1))  # 2 s chunks, (1, n) each

    fns = _variants(stack, x, blocks, mel)
    ours_whole, ours_chunked, theirs = fns["whole"], fns["chunked"], fns["reference"]
    ref = theirs()
    print(f"mel vs torchaudio MelSpectrogram(center=False), {seconds:g} s of 16 kHz, median of {n_rounds} rounds "
          f"(ratio = torchaudio time / ours, per round; goal >= 1.2):")
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for name, fn in (("whole", ours_whole), ("chunked 2 s", ours_chunked)):
                diff = float((fn() - ref).abs().max() / ref.abs().max())
                pairs = [(_timed(fn), _timed(theirs)) for _ in range(n_rounds)]
                wall = statistics.median(t[0] / o[0] for o, t in pairs)
                cpu = statistics.median(t[1] / o[1] for o, t in pairs)
                ours_s = statistics.median(o[0] for o, _ in pairs)
                print(f"    {n_threads} thread(s), ours {name:11s}: {ours_s:6.3f} s  {wall:5.2f}x torchaudio (wall)  "
                      f"{cpu:5.2f}x (CPU)  max rel diff {diff:.1e}", flush=True)
    finally:
        torch.set_num_threads(threads)


def run(args) -> None:
    from conv_pipeline.stack.stack import ConvStack

    mel_vs_torchaudio(60.0 if args.quick else 600.0, 5 if args.quick else 7)
    seconds = 10.0 if args.quick else 60.0
    n_rounds = 2 if args.quick else 3
    chunk = 32000  # 2 s, the runtime.chunk_seconds default
    torch.manual_seed(0)
    x = 0.1 * torch.randn(int(seconds * 16000))  # (T,)
    blocks = list(x[None].split(chunk, dim=-1))  # (1, n) each
    print(f"{seconds:g} s of 16 kHz mono, chunks of {chunk / 16000:g} s, {torch.get_num_threads()} torch threads; x real time:")
    print(f"{'preset':15s} {'whole':>8s} {'chunked':>8s} {'reference':>10s}  chunked/whole  ours/reference  max diff (rel)")
    for name in PRESETS:
        stack = ConvStack.from_preset(name, in_channels=1).eval()
        ref = _reference(name, stack)

        fns = _variants(stack, x, blocks, ref)
        times: dict[str, list[float]] = {k: [] for k in fns}
        outs = {}
        for _ in range(n_rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                outs[k] = fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rt = {k: seconds / v for k, v in med.items()}
        base = outs["whole"]
        scale = float(base.abs().max())
        diffs = [float((outs[k] - base).abs().max()) / scale for k in outs if k != "whole"]
        ref_txt = f"{rt['reference']:10.0f}" if "reference" in rt else f"{'-':>10s}"
        vs_ref = f"{rt['chunked'] / rt['reference']:14.2f}" if "reference" in rt else f"{'-':>14s}"
        print(f"{name:15s} {rt['whole']:8.0f} {rt['chunked']:8.0f} {ref_txt}  {rt['chunked'] / rt['whole']:13.2f}  {vs_ref}  {max(diffs):.1e}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args())
