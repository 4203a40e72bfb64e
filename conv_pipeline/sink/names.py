"""The names a run writes at the root of ``output.dir``, beside the features. Torch-free, so the
readers (``dataset/``, ``inspect/``) and the writers (``sink/``) share them."""

MANIFEST_NAME = "manifest.jsonl"  # one JSON record per input (sink/manifest.py)
WEIGHTS_NAME = "model.safetensors"  # the stack's weights and layer config (sink/jobdir.py)
CONFIG_NAME = "config.yaml"  # the resolved config the features were computed with
