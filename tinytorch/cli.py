"""The ``tinytorch`` command line (also ``python -m tinytorch``)."""

import argparse
import sys

import numpy as np


def demo(args):
    """Fit y = 3x + 2 by gradient descent with autograd, printing the loss as it falls."""
    import tinytorch as tt

    tt.manual_seed(args.seed)
    x = tt.rand(64, 1) * 4 - 2
    y = 3 * x + 2 + 0.05 * tt.randn(64, 1)
    w = tt.zeros(1, 1, requires_grad=True)
    b = tt.zeros(1, requires_grad=True)
    for step in range(args.steps + 1):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with tt.no_grad():
            w.data -= args.lr * w.grad.data
            b.data -= args.lr * b.grad.data
        w.zero_grad()
        b.zero_grad()
        if step % max(args.steps // 10, 1) == 0:
            print(f"step {step:4d}  loss {loss.item():.6f}")
    print(f"learned y = {w.item():.3f} x + {b.item():.3f}   (true: y = 3x + 2)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tinytorch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="fit y = 3x + 2 with autograd and print the loss")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"tinytorch: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
