"""Engines: what runs the stages for one file (``single.py``) or a collection (``job.py``, with the
local engine in ``local.py`` or Ray in ``ray_engine.py``). They use only the stages' public
functions; ``work.py`` is the per-file work both batch engines share, ``progress.py`` the bar,
the log lines and the summary.
"""
