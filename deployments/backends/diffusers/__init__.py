"""The diffusers backend: any diffusers pipeline (Qwen-Image, FLUX.1, SD3.5, ...) served under the
replica contract of ``backends/contract.py``. ``loading`` turns a ``diffusers:`` reference and its
LoRA set into pipelines; ``backend`` runs batches through them."""
