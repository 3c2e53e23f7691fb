"""TinyTorch's curriculum modules: tensor, autograd, and (later) activations, layers, losses..."""
