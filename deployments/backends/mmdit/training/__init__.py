"""Training the bundled MMDiT checkpoints: the synthetic dataset and the trainer. Serving never
imports this package."""
