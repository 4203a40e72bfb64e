"""The classic front-end presets against torchaudio, in the stack's own modes: whole file, chunked
(``iter_features`` with several block sizes) and padded batch (``ConvStack.forward`` with lengths):
``model=mel model.frontend.center=true`` vs ``MelSpectrogram(center=True, pad_mode="reflect")``,
``model=mfcc`` vs ``transforms.MFCC`` (its top_db clamp included), ``model=fbank`` vs
``compliance.kaldi.fbank``."""

import pytest
import torch
import torchaudio

from conv_pipeline.execute.chunked import iter_features
from conv_pipeline.stack.stack import ConvStack
from helpers.presets import CASES, close, mel_center


def signal(n=16000 * 2 + 77, seed=0):
    """Noise plus a tone, with silence at the start: the silence falls below top_db, the tone is the peak."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32) / 16000
    x = 0.05 * torch.randn(n, generator=g) + 0.5 * torch.sin(2 * torch.pi * 440 * t)
    x[:3000] = 0
    return x


def stack(preset):
    return ConvStack.from_preset(preset, CASES[preset][0], in_channels=1)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(CASES))
def test_whole_file_equals_reference(preset):
    x = signal()
    with torch.inference_mode():
        got = stack(preset)(x[None, None])[0]
    close(preset, got, CASES[preset][1](x))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(CASES))
@pytest.mark.parametrize("block", [5920, 137, 401])
def test_chunked_equals_reference(preset, block):
    x = signal(16000 + 333)
    s = stack(preset)
    blocks = [x[None, i : i + block] for i in range(0, len(x), block)]
    got = torch.cat(list(iter_features(blocks, s)), dim=1)
    close(preset, got, CASES[preset][1](x))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(CASES))
def test_padded_batch_equals_each_file_alone(preset):
    xs = [signal(16000 + 333, 1), signal(9001, 2), signal(4567, 3)]
    batch = torch.zeros(len(xs), 1, len(xs[0]))
    for i, x in enumerate(xs):
        batch[i, 0, : len(x)] = x
    s = stack(preset)
    with torch.inference_mode():
        out = s(batch, torch.tensor([len(x) for x in xs]))
    for i, x in enumerate(xs):
        ref = CASES[preset][1](x)
        close(preset, out[i, :, : ref.shape[-1]], ref)


def test_center_frames_and_both_ends():
    """L // hop + 1 frames, first and last centred on samples 0 and (frames - 1) * hop, equal to
    torchaudio at both ends (the reflected padding), for lengths around multiples of the hop."""
    s = stack("mel")
    for n in (3200, 3201, 3359, 401):
        x = signal(n, n)
        ref = mel_center(x)
        with torch.inference_mode():
            got = s(x[None, None])[0]
        assert got.shape[-1] == n // 160 + 1 == s.geometry.output_length(n)
        scale = float(ref.abs().max())
        for t in (0, 1, -2, -1):
            assert float((got[:, t] - ref[:, t]).abs().max()) <= 1e-4 * scale
    assert s.geometry.left_padding == 200 and s.geometry.frame_starts(2) == [-200, -40]
