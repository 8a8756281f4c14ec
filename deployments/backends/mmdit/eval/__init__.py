"""Evaluating checkpoints: the image-only adherence judge and the quality table. A model replica
never imports this package (the gateway's A/B scorer does, lazily)."""
