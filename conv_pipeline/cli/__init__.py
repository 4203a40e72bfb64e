"""The command-line edge: the only modules that use Hydra's app machinery (``@hydra.main``).

``main.py`` (``python -m conv_pipeline``, ``conv-pipeline``), ``batch.py`` (``conv-pipeline-batch``,
``scripts/batch_process.py``) and ``common.py`` (one-line errors, the command-line checks, the fast
exit). Each is a thin layer over the library: it composes a config and hands it to ``engines/``.
"""
