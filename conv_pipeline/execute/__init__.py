"""The execute stage: a stack run on one file's audio, its result checked.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Input: waveforms from ``load``
and a ``ConvStack``; output: float32 features ``(out_channels, frames)`` with ``frames =
StackGeometry.output_length(samples)``, refused when they overflow float32; ``sink`` writes them
and ``engines`` drive it all.

* ``whole.py``: a decoded file at once (``extract``) or several as a padded batch
  (``extract_batch``); ``check_finite``, the overflow check every path uses; ``resolve_device``.
* ``chunked.py``: a file as a stream, in bounded memory, with the same frames (``iter_features``);
  ``stream_layer.py``: one layer of it; ``stream_file.py``: one file through it to a writer
  (``extract_stream``).
"""
