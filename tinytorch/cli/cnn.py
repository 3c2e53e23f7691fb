"""``tinytorch train --model cnn``: a small convolutional network on the bundled 8x8 digits.

The MLP sees an image as 64 unrelated numbers; a convolution slides the same 3x3 filters over
every position, so a stroke is recognised wherever it is. Two conv-BN-ReLU-pool blocks and a
linear head (21,482 parameters with the defaults) reach about 99.4% test accuracy over seeds
0-4, against the MLP's 98.2%, with the MLP's training recipe (Adam, cosine schedule, 30 epochs)::

    (N, 1, 8, 8) -> Conv2d(1, 32, 3, padding=1) - BatchNorm2d - ReLU - MaxPool2d(2)  (N, 32, 4, 4)
                 -> Conv2d(32, 64, 3, padding=1) - BatchNorm2d - ReLU - MaxPool2d(2) (N, 64, 2, 2)
                 -> Flatten - Linear(256, 10)                                       (N, 10)

The convolutions have no bias: the BatchNorm after each one subtracts the batch mean and adds
its own shift.
"""

import math
from dataclasses import replace

from tinytorch.cli.kinds import (
    BATCH_SIZE, EPOCHS, LR, OPTIMIZER, ClassifierKind, dataset_option,
)
from tinytorch.cli.options import Option

IMAGE = (1, 8, 8)               # the digits: one channel of 8x8 pixels


class CNN(ClassifierKind):
    """``blocks`` times ``Conv2d(3x3, padding 1, no bias) -> BatchNorm2d -> ReLU ->
    MaxPool2d(2)``, the channels doubling from block to block, then ``Flatten -> Linear``."""

    name = "cnn"
    title = "a CNN"
    summary = "a convolutional network (conv-BatchNorm-ReLU-maxpool blocks, a linear head)"
    options = (dataset_option(("digits",), "data to learn: the bundled 8x8 handwritten digits, "
                              "as images of one channel"),
               Option("channels", int, 32, "output channels of the first convolution; each "
                      "further block doubles them", low=1, high=512),
               EPOCHS, OPTIMIZER, LR, BATCH_SIZE)
    fixed = (Option("blocks", int, 2, "conv-BN-ReLU-pool blocks, each halving the image",
                    low=1, high=int(math.log2(IMAGE[1]))),)
    required = ClassifierKind.required + ("channels",)

    def load_data(self, config, checkpoint=None, where=None):
        """The MLP's splits (same seed, same samples, same standardisation) as images."""
        data = super().load_data(config, checkpoint, where)      # checks the stored mean, std
        return replace(data, train=_as_images(data.train), val=_as_images(data.val),
                       test=_as_images(data.test))

    def layers(self, config, data):
        """The layers as tuples: ``("conv", in, out)``, ``("batchnorm", channels)``,
        ``("relu",)``, ``("maxpool",)``, ``("flatten",)``, ``("linear", in, out)``."""
        plan, channels, side = [], IMAGE[0], IMAGE[1]
        for block in range(config["blocks"]):
            width = config["channels"] * 2 ** block
            plan += [("conv", channels, width), ("batchnorm", width), ("relu",), ("maxpool",)]
            channels, side = width, side // 2
        return plan + [("flatten",), ("linear", channels * side * side, data.classes)]

    def state_shapes(self, config, data):
        shapes = {}
        for i, (layer, *sizes) in enumerate(self.layers(config, data)):
            if layer == "conv":
                shapes[f"{i}.weight"] = (sizes[1], sizes[0], 3, 3)
            elif layer == "batchnorm":
                for name in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{i}.{name}"] = (sizes[0],)
                shapes[f"{i}.num_batches_tracked"] = ()
            elif layer == "linear":
                shapes[f"{i}.weight"], shapes[f"{i}.bias"] = tuple(sizes), (sizes[1],)
        return shapes

    def build(self, config, data):
        from tinytorch.core.activations import ReLU
        from tinytorch.core.layers import Flatten, Linear, Sequential
        from tinytorch.core.spatial import BatchNorm2d, Conv2d, MaxPool2d

        make = {"conv": lambda i, o: Conv2d(i, o, 3, padding=1, bias=False),
                "batchnorm": BatchNorm2d, "relu": ReLU, "maxpool": lambda: MaxPool2d(2),
                "flatten": Flatten, "linear": Linear}
        return Sequential(*(make[layer](*sizes) for layer, *sizes in self.layers(config, data)))

    def sizes(self, config, data):
        widths = [config["channels"] * 2 ** block for block in range(config["blocks"])]
        return f"with {'-'.join(map(str, widths))} channels"


def _as_images(dataset):
    """A TensorDataset of flat digits (N, 64) as one with images (N, 1, 8, 8)."""
    from tinytorch.core.dataloader import TensorDataset

    X, y = dataset.tensors
    return TensorDataset(X.data.reshape(-1, *IMAGE), y)
