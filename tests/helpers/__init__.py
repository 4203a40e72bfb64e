"""Test helpers shared across stages (``tests/`` is on ``sys.path``: ``pythonpath`` in pyproject).

``paths`` (repository files), ``audio`` (writing test audio), ``run`` (the CLI, the batch script
and the single-file pipeline), ``reference`` (features recomputed with ``F.conv1d``), ``tensors``
(comparing and cutting tensors), ``files`` (what an output folder holds), ``jobs`` (small batch
jobs), ``storage`` (the URL corpus and manifests on fsspec filesystems), ``strategies`` (every
hypothesis strategy), ``figures`` (the reliability figures) and ``bad_inputs`` (the bad-input
catalogue of RELIABILITY.md). Fixtures live in ``tests/conftest.py``.
"""
