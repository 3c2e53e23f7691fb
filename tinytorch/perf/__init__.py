"""Performance modules under TinyTorch's own import paths (``tinytorch.perf.*``)."""
