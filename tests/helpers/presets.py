"""The classic front-end presets' torchaudio references and their tolerances (issue 16), shared by
the stack, CLI, batch and Ray tests: ``model=mel model.frontend.center=true`` vs
``MelSpectrogram(center=True, pad_mode="reflect")``, ``model=mfcc`` vs ``transforms.MFCC`` (its
top_db clamp included), ``model=fbank`` vs ``compliance.kaldi.fbank``."""

import torch
import torchaudio

PRESETS = {"mel": ["model=mel", "model.frontend.center=true"], "mfcc": ["model=mfcc"], "fbank": ["model=fbank"]}


def mel_center(x):
    return torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80, center=True,
                                                pad_mode="reflect")(x)


def mfcc(x):
    return torchaudio.transforms.MFCC(16000, n_mfcc=40, melkwargs=dict(n_fft=400, hop_length=160, n_mels=80,
                                                                       center=False))(x)


def fbank(x):
    return torchaudio.compliance.kaldi.fbank(x[None], num_mel_bins=80, dither=0.0, sample_frequency=16000).T


CASES = {"mel": (["model.frontend.center=true"], mel_center), "mfcc": ([], mfcc), "fbank": ([], fbank)}


def close(preset, got, ref):
    """Each preset's tolerance: mel 1e-4 relative; mfcc 1e-3 of the largest; fbank 1e-3 absolute (log)
    within 60 dB of the loudest bin, 1e-2 below."""
    assert got.shape == ref.shape
    err = (got.double() - ref.double()).abs()
    if preset == "mel":
        assert float(err.max()) <= 1e-4 * float(ref.abs().max())
    elif preset == "mfcc":
        assert float(err.max()) <= 1e-3 * float(ref.abs().max())
    else:
        loud = ref >= ref.max() - 60 * torch.log(torch.tensor(10.0)) / 10  # within 60 dB, natural log
        assert float(err[loud].max()) <= 1e-3 and float(err.max()) <= 1e-2
