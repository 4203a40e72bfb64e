"""The stack stage: the ``nn.Module`` that turns a waveform into features.

Flow: source -> load -> **stack** -> execute -> sink -> engines. A ``ConvStack`` maps
``(batch, in_channels, frames)`` to ``(batch, out_channels, frames')``, ``frames'`` from its
``StackGeometry`` (``docs/geometry.md``); ``execute`` runs it on whole files, padded batches or
chunks.

* ``layer.py``: ``ConvLayer`` and the activation and norm tables.
* ``frontends.py``: analytic front-ends (stft, mel, sinc) as fixed-kernel ``ConvLayer``s.
* ``stack.py``: ``ConvStack`` (front-end, then layers; padded batches) and ``build_stack``.
* ``checkpoint.py``: weights from and to disk.
"""
