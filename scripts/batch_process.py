"""Batch feature extraction for whole collections: ``conv-pipeline-batch`` as a script
(``conv_pipeline/cli/batch.py`` says what it does).

    python scripts/batch_process.py input=corpus/ output.dir=feats/
"""

from conv_pipeline.cli.batch import console

if __name__ == "__main__":
    console()
