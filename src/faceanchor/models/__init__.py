"""Model registry, resolution of model references into local files, and dummy weights."""
