"""Looking at a model or at outputs: the model summary (``summary.py``), plain-text descriptions
of feature files and folders (``describe.py``), plots (``plot.py``) and the
``python -m conv_pipeline.inspect`` command (``__main__.py``).
"""
