"""Neural-network functions (activations and losses) as fused differentiable ops."""

__all__ = []
