"""The in-memory Python API: ``Extractor`` (features of a waveform already in memory).

Flow: **api** -> plan -> load -> stack -> execute. An entry point beside ``cli/``: where the CLI
takes a file and writes features, ``Extractor(config)(waveform, sample_rate=RATE)`` takes
samples and returns ``Features``, computed by the same plan, load stage, weights and execution.

* ``resolve.py``: the config (preset, ``config.yaml``, composed config) and keyword overrides; torch-free.
* ``waveform.py``: the caller's samples checked and converted, and through the load stage.
* ``extractor.py``: ``Extractor`` and ``Features``.
"""

from conv_pipeline.api.extractor import Extractor, Features

__all__ = ["Extractor", "Features"]
