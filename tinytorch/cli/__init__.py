"""The ``tinytorch`` command line (also ``python -m tinytorch``).

    tinytorch train                     train an MLP on the bundled digits, report test accuracy
    tinytorch train --dataset moons     ... or on a 2-D toy problem (moons, spirals, xor)
    tinytorch evaluate runs/X/model.npz reload a checkpoint and measure its test accuracy
    tinytorch graph                     draw the autograd graph of the default model's loss
    tinytorch demo                      fit y = 3x + 2 with bare autograd
"""

import argparse
import json
import os
import sys
import time

import numpy as np

OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
HIDDEN_LAYERS = 2
DROPOUT = 0.1
TOY_SAMPLES = 1000


# ----- data and model --------------------------------------------------------------------------

def prepare_data(dataset, seed):
    """Load ``dataset`` (toy sets: 1000 points), split it 70/10/20 into train/val/test with
    ``seed``, and standardise it.

    Each feature is shifted and scaled by the training split's mean and standard deviation
    (features constant on the training split are only shifted). Returns the three
    ``TensorDataset`` s, the number of classes and the ``(mean, std)`` used.
    """
    from tinytorch.core.dataloader import TensorDataset, random_split
    from tinytorch.datasets import load_dataset

    X, y = load_dataset(dataset, n_samples=None if dataset == "digits" else TOY_SAMPLES,
                        seed=seed)
    parts = random_split(TensorDataset(X, y), list(SPLIT.values()), seed=seed)
    train, val, test = (part.indices for part in parts)
    mean = X[train].mean(axis=0)
    std = X[train].std(axis=0)
    std[std < 1e-6] = 1.0
    X = ((X - mean) / std).astype(np.float32)
    splits = [TensorDataset(X[idx], y[idx]) for idx in (train, val, test)]
    return splits, int(y.max()) + 1, (mean, std)


def build_mlp(in_features, hidden, classes, hidden_layers=HIDDEN_LAYERS, dropout=DROPOUT):
    """``Linear -> ReLU -> Dropout`` ``hidden_layers`` times, then a ``Linear`` giving one score
    per class."""
    from tinytorch.core.activations import ReLU
    from tinytorch.core.layers import Dropout, Linear, Sequential

    layers, width = [], in_features
    for _ in range(hidden_layers):
        layers += [Linear(width, hidden), ReLU()] + ([Dropout(dropout)] if dropout else [])
        width = hidden
    return Sequential(*layers, Linear(width, classes))


def make_optimizer(name, params, lr):
    from tinytorch.core.optimizers import SGD, Adam, AdamW

    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9)
    return {"adam": Adam, "adamw": AdamW}[name](params, lr=lr)


# ----- commands ---------------------------------------------------------------------------------

def train(args):
    """Train an MLP, print progress and the test accuracy, write the run's files to --out."""
    import tinytorch as tt
    from tinytorch.core.dataloader import DataLoader
    from tinytorch.core.losses import CrossEntropyLoss
    from tinytorch.core.training import CosineSchedule, Trainer

    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)

    (train_set, val_set, test_set), classes, (mean, std) = prepare_data(args.dataset, args.seed)
    tt.manual_seed(args.seed)
    model = build_mlp(mean.size, args.hidden, classes)
    optimizer = make_optimizer(args.optimizer, model.parameters(), lr)
    schedule = CosineSchedule(max_lr=lr, min_lr=lr / 20, total_epochs=args.epochs)
    trainer = Trainer(model, optimizer, CrossEntropyLoss(), scheduler=schedule)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    val_loader = DataLoader(val_set, batch_size=256)
    test_loader = DataLoader(test_set, batch_size=256)

    sizes = "-".join(str(n) for n in [mean.size] + [args.hidden] * HIDDEN_LAYERS + [classes])
    print(f"training an MLP {sizes} on {args.dataset} ({len(train_set)} train / "
          f"{len(val_set)} val / {len(test_set)} test samples): {args.optimizer} lr {lr:g}, "
          f"batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}")
    history = trainer.fit(train_loader, val_loader, epochs=args.epochs, progress=True)
    test_loss, test_accuracy = trainer.evaluate(test_loader)
    correct = round(test_accuracy * len(test_set))
    print(f"test accuracy: {test_accuracy:.2%} ({correct}/{len(test_set)})   "
          f"test loss {test_loss:.4f}")

    config = {"dataset": args.dataset, "hidden": args.hidden, "hidden_layers": HIDDEN_LAYERS,
              "dropout": DROPOUT, "classes": classes, "epochs": args.epochs, "lr": lr,
              "optimizer": args.optimizer, "batch_size": args.batch_size, "seed": args.seed,
              "split": SPLIT}
    trainer.save_checkpoint(os.path.join(out, "model.npz"), config=config,
                            mean=mean, std=std, test_accuracy=test_accuracy)
    record = {"config": config, **history, "test_loss": test_loss,
              "test_accuracy": test_accuracy}
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(record, f, indent=1)
    written = ["model.npz", "history.json"]
    if plot_curves(history, os.path.join(out, "curves.png"),
                   title=f"MLP {sizes} on {args.dataset}: test accuracy {test_accuracy:.2%}"):
        written.append("curves.png")
    else:
        print("note: matplotlib is not installed, so curves.png was skipped "
              "(pip install 'tinytorch[plot]')")
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def evaluate(args):
    """Rebuild the model and the test split recorded in a checkpoint; report test accuracy."""
    from tinytorch.core.dataloader import DataLoader
    from tinytorch.core.losses import CrossEntropyLoss
    from tinytorch.core.training import Trainer, read_checkpoint

    with _reading(args.checkpoint):
        config = _checkpoint_config(args.checkpoint, read_checkpoint(args.checkpoint))
        (_, _, test_set), classes, _ = prepare_data(config["dataset"], config["seed"])
        if classes != config["classes"]:
            raise ValueError(f"{args.checkpoint}: the checkpoint has {config['classes']} "
                             f"classes, the {config['dataset']} data has {classes}")
        in_features = test_set.tensors[0].shape[1]
        model = build_mlp(in_features, config["hidden"], classes, config["hidden_layers"],
                          config["dropout"])
        trainer = Trainer(model, None, CrossEntropyLoss())
        trainer.load_checkpoint(args.checkpoint)
    loss, accuracy = trainer.evaluate(DataLoader(test_set, batch_size=256))
    correct = round(accuracy * len(test_set))
    print(f"{args.checkpoint}: MLP on {config['dataset']} (hidden {config['hidden']}, "
          f"seed {config['seed']}), trained {trainer.epoch} epochs")
    print(f"test accuracy: {accuracy:.2%} ({correct}/{len(test_set)})   test loss {loss:.4f}")
    return 0


def _checkpoint_config(path, checkpoint):
    """The model and data settings recorded by 'tinytorch train' in a checkpoint, checked.

    Returns the metadata's ``config`` with ``hidden_layers`` and ``dropout`` filled in when
    absent. Raises ValueError naming ``path`` and the field when a field is missing or of the
    wrong type or range (a damaged or hand-edited file).
    """
    from tinytorch.datasets import DATASETS

    metadata = checkpoint.get("metadata", {})
    config = metadata.get("config") if isinstance(metadata, dict) else None
    needed = ("dataset", "hidden", "seed", "classes")
    if not isinstance(config, dict) or any(key not in config for key in needed):
        raise ValueError(f"{path}: the checkpoint's metadata has no config recording how to "
                         f"rebuild its model and test split ({', '.join(needed)}); was it "
                         f"written by 'tinytorch train'?")
    config = {"hidden_layers": HIDDEN_LAYERS, "dropout": DROPOUT, **config}

    def bad(field, expected):
        return ValueError(f"{path}: the checkpoint's config field '{field}' must be {expected}, "
                          f"got {config[field]!r}")

    if not isinstance(config["dataset"], str) or config["dataset"] not in DATASETS:
        raise bad("dataset", f"one of {', '.join(DATASETS)}")
    for field, low in (("hidden", 1), ("seed", 0), ("classes", 2), ("hidden_layers", 0)):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(field, f"an integer >= {low}")
    dropout = config["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        raise bad("dropout", "a probability in [0, 1)")
    return config


class _reading:
    """Context manager: a TypeError or KeyError raised while using the contents of the user's
    file ``path`` becomes a ValueError naming the file, which :func:`main` reports in one line.

    Only wraps code that consumes file contents, so programming errors elsewhere keep their
    traceback.
    """

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, (TypeError, KeyError)):
            text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
            raise ValueError(f"{self.path}: unusable contents ({kind.__name__}: "
                             f"{' '.join(text.split())})") from error
        return False


def plot_curves(history, path, title=""):
    """Save loss and accuracy curves per epoch to ``path``; False when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = history["epoch"]
    for split in ("train", "val"):
        if history[f"{split}_loss"]:
            loss_axes.plot(epochs, history[f"{split}_loss"], marker=".", label=split)
            accuracy_axes.plot(epochs, np.array(history[f"{split}_accuracy"]) * 100,
                               marker=".", label=split)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return True


def graph(args):
    """Draw the autograd graph of the default model's loss on one small batch."""
    import shutil

    from tinytorch.core.losses import CrossEntropyLoss
    from tinytorch.core.tensor import manual_seed
    from tinytorch.viz import draw_graph, to_dot

    (train_set, _, _), classes, (mean, _) = prepare_data(args.dataset, seed=0)
    manual_seed(0)
    model = build_mlp(mean.size, args.hidden, classes)
    inputs, targets = train_set[np.arange(args.batch_size)]
    loss = CrossEntropyLoss()(model(inputs), targets)
    path = args.out
    if path.endswith((".dot", ".gv")) or shutil.which("dot") is None:
        if not path.endswith((".dot", ".gv")):
            path = os.path.splitext(path)[0] + ".dot"
            print("note: the Graphviz 'dot' program is not installed, so the graph is written "
                  "as DOT text (install graphviz, e.g. apt-get install graphviz, to render it)")
        with open(path, "w") as f:
            f.write(to_dot(loss, params=model))
    else:
        draw_graph(loss, path, params=model)
    print(f"wrote the graph of the loss of an MLP on {args.dataset} to {path}")
    return 0


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


# ----- argument parsing ------------------------------------------------------------------------

def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def build_parser():
    from tinytorch.datasets import DATASETS

    parser = argparse.ArgumentParser(prog="tinytorch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train an MLP classifier and report its test accuracy",
                            description="Train an MLP (two hidden ReLU layers, dropout 0.1) on "
                                        "a 70/10/20 train/val/test split, print one line per "
                                        "epoch and the test accuracy, and write model.npz, "
                                        "history.json and curves.png to --out.")
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="data to learn (default: digits, the bundled 8x8 handwritten digits)")
    p.add_argument("--hidden", type=_positive(int), default=128,
                   help="units in each hidden layer (default: 128)")
    p.add_argument("--epochs", type=_positive(int), default=30,
                   help="passes over the training split (default: 30)")
    p.add_argument("--lr", type=_positive(float), default=None,
                   help="peak learning rate, annealed by a cosine schedule to lr/20 "
                        "(default: 0.002 for adam/adamw, 0.05 for sgd)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="adam, adamw, or sgd with momentum 0.9 (default: adam)")
    p.add_argument("--batch-size", type=_positive(int), default=32,
                   help="samples per optimizer step (default: 32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the initial weights and the shuffling (default: 0)")
    p.add_argument("--out", default=None,
                   help="directory for model.npz, history.json, curves.png "
                        "(default: runs/<timestamp>)")
    p.set_defaults(run=train)

    p = commands.add_parser("evaluate", help="reload a checkpoint and report its test accuracy")
    p.add_argument("checkpoint", help="a model.npz written by 'tinytorch train'")
    p.set_defaults(run=evaluate)

    p = commands.add_parser("graph", help="draw the autograd graph of the default model's loss")
    p.add_argument("--out", default="graph.svg",
                   help="file to write: .svg/.png/.pdf need Graphviz's dot, .dot is plain text "
                        "(default: graph.svg; written as .dot when dot is missing)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--hidden", type=_positive(int), default=128)
    p.add_argument("--batch-size", type=_positive(int), default=8)
    p.set_defaults(run=graph)

    p = commands.add_parser("demo", help="fit y = 3x + 2 with autograd and print the loss")
    p.add_argument("--steps", type=_positive(int), default=200)
    p.add_argument("--lr", type=_positive(float), default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"tinytorch: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinytorch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
