"""The dataset stage: reading features back from an output folder (see ``features.py``)."""
