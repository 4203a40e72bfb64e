"""The load stage: one input file -> float32 ``(channels, frames)`` at the target rate.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``source`` finds the inputs;
this stage decodes one (whole, or block by block for chunked execution) and applies
``audio.channels``, ``audio.sample_rate`` and ``audio.normalize``; ``execute`` runs the stack on
the result.

* ``info.py``: the header (``probe`` -> ``AudioInfo``) and the libsndfile helpers; no torch import.
* ``decode.py``: a whole file's samples (``decode_frames``) and the memory check; no torch import.
* ``ffmpeg.py``: what libsndfile cannot read (AAC, Opus in WebM, video files), decoded by FFmpeg
  through PyAV (``audio.decoder``); no torch import.
* ``audio.py``: the whole file (``load_audio`` -> ``Audio``).
* ``signal.py``: what is done to a waveform (channel policy, resampling, normalisation) and the
  size checks made before it.
* ``blocks.py``: the file decoded block by block at its own rate (``BlockReader``).
* ``stream.py``: the file as blocks at the target rate (``AudioStream``, ``StreamingResampler``).
* ``remote.py``: inputs given as URLs (header through a file object, a local copy to decode).
"""
