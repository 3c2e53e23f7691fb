"""The ``tinytorch`` command line (also ``python -m tinytorch``): train, evaluate, graph, demo,
profile (in :mod:`tinytorch.cli.profile`).

Every failure ends with one line on stderr and a non-zero status: 2 for a bad option value, 1
for everything else (a missing, damaged or inconsistent file, an unwritable output, diverging
training), 130 after Ctrl-C. Model kinds (``train --model``) live in :mod:`tinytorch.cli.kinds`,
run folders in :mod:`tinytorch.cli.runs`.
"""

import argparse
import functools
import os
import sys
import warnings

from tinytorch.cli.kinds import MLP
from tinytorch.cli.options import SEED, Option, UsageError

# The model kinds of 'train --model', by name; the first is the default.
KINDS = {kind.name: kind for kind in (MLP(),)}
# Largest model 'train' builds and 'evaluate' loads (parameters and buffers): 200 MB of float32.
MAX_PARAMETERS = 50_000_000
GRAPH_FORMATS = ("svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", "dot", "gv")

DESCRIPTION = """\
tinytorch: a small deep-learning framework in Python and NumPy.

commands:
  tinytorch train                      train an MLP on the bundled digits, report test accuracy
  tinytorch train --dataset moons      ... or on a 2-D toy problem (moons, spirals, xor)
  tinytorch evaluate runs/RUN          reload a run's checkpoint and measure its test accuracy
  tinytorch graph                      draw the autograd graph of the default model's loss
  tinytorch profile                    time and graph memory per op of one training step
  tinytorch demo                       fit y = 3x + 2 with bare autograd

'tinytorch COMMAND --help' describes a command's options."""


# ----- commands ---------------------------------------------------------------------------------

def train(args):
    """Train a model of kind --model, print progress and the result, write the run's files."""
    from tinytorch.cli.runs import RunFolder
    from tinytorch.core.training import DivergenceError

    kind = KINDS[args.model]
    config = kind.config(_settings(kind, args), args.seed)
    data = kind.load_data(config)
    model = _build(kind, config, data, usage=True)
    run = RunFolder.claim(args.out, overwrite=args.overwrite)
    try:
        kind.train(config, data, model, run)
    except KeyboardInterrupt:
        raise Stopped(130, f"interrupted; {run.where()}") from None
    except DivergenceError as error:
        hint = f"; lower --lr (it was {config['lr']:g})" if "lr" in config else ""
        raise Stopped(1, f"error: {error}{hint}; {run.where()}") from None
    except BrokenPipeError:
        _silence_stdout()
        raise Stopped(1, f"output closed, training stopped; {run.where()}") from None
    finally:
        run.close()
    print(f"wrote {', '.join(sorted(run.written, key=_RUN_ORDER.index))} to {run.path}")
    return 0


def evaluate(args):
    """Rebuild the model and the test data recorded in a checkpoint; report the result."""
    from tinytorch.core.training import read_checkpoint

    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
        if not os.path.exists(path):
            raise ValueError(f"{args.checkpoint} holds no model.npz (a run folder gets it when "
                             f"its first epoch ends)")
    checkpoint = read_checkpoint(path)
    metadata = checkpoint.get("metadata") or {}
    config = metadata.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the checkpoint's metadata has no config recording how to "
                         f"rebuild its model; was it written by 'tinytorch train'?")
    name = config.get("model", "mlp")         # checkpoints of tinytorch 0.1 have no "model"
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f"{path}: the checkpoint's config field 'model' must be one of "
                         f"{', '.join(KINDS)}, got {str(name)[:40]!r}")
    kind = KINDS[name]
    config = kind.check_config(config, path)
    with _reading(path):
        data = kind.load_data(config, checkpoint)
        kind.check_data(config, data, path)
        model = _build(kind, config, data, stored=checkpoint["model"], where=path)
        model.load_state_dict(checkpoint["model"])
    kind.evaluate(config, data, model, checkpoint, path)
    return 0


def graph(args):
    """Draw the autograd graph of the default model's loss on one small batch."""
    import shutil

    from tinytorch.viz import draw_graph, to_dot

    path = args.out
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in GRAPH_FORMATS:
        kind = f"a .{extension} file" if extension else "a file without an extension"
        raise UsageError(f"argument --out: cannot draw a graph as {kind}; give one of "
                         f".{', .'.join(GRAPH_FORMATS)}")
    kind = KINDS["mlp"]
    settings = _settings(kind, argparse.Namespace(dataset=args.dataset, hidden=args.hidden))
    config = kind.config(settings, seed=0)
    data = kind.load_data(config)
    if args.batch_size > len(data.train):
        raise UsageError(f"argument --batch-size: must be at most {len(data.train)}, the "
                         f"training samples of {args.dataset}, got {args.batch_size}")
    model = _build(kind, config, data, usage=True)
    loss = kind.graph_loss(config, data, model, args.batch_size)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if extension not in ("dot", "gv") and shutil.which("dot") is None:
        path = os.path.splitext(path)[0] + ".dot"
        print("note: the Graphviz 'dot' program is not installed, so the graph is written "
              "as DOT text (install graphviz, e.g. apt-get install graphviz, to render it)")
    if path.endswith((".dot", ".gv")):
        with open(path, "w") as f:
            f.write(to_dot(loss, params=model))
    else:
        try:
            draw_graph(loss, path, params=model)
        except RuntimeError as error:           # Graphviz's dot failed
            raise Stopped(1, f"error: {error}") from None
    print(f"wrote the graph of the loss of {kind.title} on {args.dataset} to {path}")
    return 0


def demo(args):
    """Fit y = 3x + 2 by gradient descent with autograd, printing the loss as it falls."""
    import tinytorch as tt
    from tinytorch.core.training import format_loss

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
            print(f"step {step:4d}  loss {format_loss(loss.item(), width=10)}")
    print(f"learned y = {w.item():.3f} x + {b.item():.3f}   (true: y = 3x + 2)")
    return 0


# ----- helpers ----------------------------------------------------------------------------------

_RUN_ORDER = ["model.npz", "history.json", "curves.png"]


class Stopped(Exception):
    """A command stopped early: exit with ``status`` after printing ``message`` on stderr."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _train_options():
    """{name: Option} of every kind's train options (the first kind's wins for the parser)."""
    options = {}
    for kind in KINDS.values():
        for option in kind.options:
            options.setdefault(option.name, option)
    return options


def _settings(kind, args):
    """The values of ``kind``'s options: given ones checked by the kind, defaults otherwise.
    UsageError for an option of another kind given on the command line."""
    settings = {}
    for option in kind.options:
        value = getattr(args, option.name, None)
        if value is None:
            settings[option.name] = option.default_for(settings)
            continue
        try:
            settings[option.name] = option.check(value)
        except ValueError as error:
            raise UsageError(f"argument {option.flag}: {error}") from None
    for name, option in _train_options().items():
        if name not in settings and getattr(args, name, None) is not None:
            raise UsageError(f"argument {option.flag}: does not apply to --model {kind.name}")
    return settings


def _build(kind, config, data, stored=None, where=None, usage=False):
    """The model of ``config``, built only after its size passed the limit and, for a
    checkpoint, its state shapes matched the ``stored`` arrays."""
    import tinytorch as tt
    from tinytorch.cli.kinds import check_state, parameter_count

    shapes = kind.state_shapes(config, data)
    if stored is not None:
        check_state(shapes, stored, where)
    count = parameter_count(shapes)
    if count > MAX_PARAMETERS:
        message = (f"the model would have {count:,} parameters, more than the limit of "
                   f"{MAX_PARAMETERS:,}")
        raise UsageError(message) if usage else ValueError(f"{where}: {message}")
    tt.manual_seed(config["seed"])
    return kind.build(config, data)


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


def _silence_stdout():
    """After a broken pipe: point stdout at /dev/null, so that Python's final flush is quiet."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass                                    # not a real file (e.g. captured by a test)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings in one line, without the source path and line Python shows by default."""
    print(f"tinytorch: warning: {' '.join(str(message).split())}", file=sys.stderr)


# ----- argument parsing ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line (the full usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} "
                     f"(see '{self.prog} --help')\n")


def build_parser():
    from tinytorch import __version__
    from tinytorch.datasets import DATASETS

    parser = _Parser(prog="tinytorch", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tinytorch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train", help="train a model and report its test accuracy",
        description="Train a model (by default an MLP with two hidden ReLU layers and dropout "
                    "0.1) on a 70/10/20 train/val/test split, print one line per epoch and the "
                    "test accuracy, and write model.npz and history.json (after every epoch) "
                    "and curves.png to a run folder. Ctrl-C stops at once and keeps the last "
                    "completed epoch; training that diverges (NaN or infinity) stops with an "
                    "error and keeps the last good epoch.")
    p.add_argument("--model", choices=list(KINDS), default=next(iter(KINDS)),
                   help="the kind of model: " + "; ".join(f"{kind.name}, {kind.summary}"
                                                          for kind in KINDS.values())
                        + f" (default: {next(iter(KINDS))})")
    for name, option in _train_options().items():
        users = [kind.name for kind in KINDS.values() if name in
                 {o.name for o in kind.options}]
        option.add_to(p, "" if len(users) == len(KINDS) else f" ({', '.join(users)} only)",
                      unset=True)
    SEED.add_to(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the run's files; refused if it holds a run already, unless "
                        "--overwrite is given (default: a new folder runs/<date>-<time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace the run it holds (once this run saves its first "
                        "epoch)")
    p.set_defaults(run=train)

    p = commands.add_parser(
        "evaluate", help="reload a checkpoint and report its test accuracy",
        description="Rebuild the model and the test split recorded in a checkpoint written by "
                    "'tinytorch train', and print its test accuracy. The checkpoint is checked "
                    "(types, sizes, consistency with its weights) before anything is built.")
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run folder (its model.npz is read) or a model.npz")
    p.set_defaults(run=evaluate)

    p = commands.add_parser(
        "graph", help="draw the autograd graph of the default model's loss",
        description="Draw the autograd graph (ops, shapes, parameter names) of the loss of an "
                    "MLP on one small batch. Images need Graphviz's 'dot' program; without it "
                    "the graph is written as DOT text.")
    p.add_argument("--out", default="graph.svg", metavar="FILE",
                   help=f"file to write, its type from its extension: "
                        f".{', .'.join(GRAPH_FORMATS[:-2])} (rendered by Graphviz) or .dot, .gv "
                        f"(DOT text); missing folders are created (default: graph.svg)")
    Option("dataset", str, "digits", "data the loss is computed on",
           choices=DATASETS).add_to(p)
    Option("hidden", int, 128, "units in each of the two hidden layers",
           low=1, high=4096).add_to(p)
    Option("batch_size", int, 8, "samples in the batch (at most the training split)",
           low=1, high=65_536).add_to(p)
    p.set_defaults(run=graph)

    p = commands.add_parser(
        "demo", help="fit y = 3x + 2 with autograd and print the loss",
        description="Fit y = 3x + 2 to 64 noisy points by plain gradient descent on two "
                    "tensors with requires_grad, printing the loss as it falls.")
    Option("steps", int, 200, "gradient-descent steps", low=1, high=1_000_000).add_to(p)
    Option("lr", float, 0.1, "learning rate", low=0, low_open=True).add_to(p)
    SEED.add_to(p)
    p.set_defaults(run=demo)

    from tinytorch.cli import profile
    profile.add_command(commands, KINDS)
    return parser


@functools.cache
def _parser():
    return build_parser()


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            import numpy as np
            with np.errstate(all="ignore"):    # non-finite results are reported, not warned
                status = args.run(args)
        sys.stdout.flush()
        return status
    except UsageError as error:
        command = f"tinytorch {args.command}"
        return _fail(2, f"{command}: error: {error} (see '{command} --help')")
    except Stopped as stop:
        return _fail(stop.status, f"tinytorch: {stop}")
    except KeyboardInterrupt:
        return _fail(130, "tinytorch: interrupted")
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except (ValueError, OSError) as error:
        return _fail(1, f"tinytorch: error: {error}")
    except MemoryError:
        return _fail(1, "tinytorch: error: out of memory")


def _fail(status, message):
    """Print ``message`` on one line of stderr, with characters that are not printable (e.g.
    from a hostile file's entry names) escaped; return ``status``."""
    text = " ".join(str(message).split())
    print("".join(c if c.isprintable() else ascii(c)[1:-1] for c in text), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
