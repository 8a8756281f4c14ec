"""Model backends: what a model replica runs. Each knows nothing of Serve."""
