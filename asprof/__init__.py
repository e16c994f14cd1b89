"""asprof: measure Apple Silicon machines, simulate distributed training on Mac clusters,
and check the prediction against real MLX training runs."""

__version__ = "0.1.0"
