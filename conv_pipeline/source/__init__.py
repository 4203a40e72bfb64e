"""The source stage: ``input=`` -> the list of files a job processes, and their output names.

Flow: **source** -> load -> stack -> execute -> sink -> engines. Nothing is decoded here: the
inputs are found by name (``load`` reads them), on a local path or an fsspec URL.

* ``inputs.py``: ``find_inputs`` (a folder, a glob, a list file or one file -> ``InputSet``) and
  ``plan_outputs`` (each input's output path under ``output.dir``).
* ``local.py``: a local folder walked, a local list file read.
* ``remote.py``: the same on a URL (``list_inputs``).
* ``patterns.py``: the naming rules both share (extensions, glob wildcards, list-file lines).
"""
