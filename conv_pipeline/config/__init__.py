"""The config stage: the schema (``schema.py``), composing it (``compose.py``), checking values
(``checks.py``), the channel rule (``channels.py``) and the plan every entry point builds
(``plan.py``). Torch-free: a config error costs no torch import.
"""
