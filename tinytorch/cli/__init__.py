"""The ``tinytorch`` command line (also ``python -m tinytorch``): train, evaluate, generate,
graph, demo, profile (in :mod:`tinytorch.cli.profile`).

Every failure ends with one line on stderr and a non-zero status: 2 for a bad option value, 1
for everything else (a missing, damaged or inconsistent file, an unwritable output, diverging
training), 130 after Ctrl-C and 128 + the signal's number after the other stop signals (143
for SIGTERM, which stops a command as Ctrl-C does). Model kinds (``train --model``) live in
:mod:`tinytorch.cli.kinds`, run folders in :mod:`tinytorch.cli.runs`.
"""

import argparse
import contextlib
import functools
import math
import os
import stat
import sys
import warnings

from tinytorch.cli.cnn import CNN
from tinytorch.cli.gpt import GPTKind
from tinytorch.cli.kinds import MLP
from tinytorch.cli.options import SEED, Option, UsageError

# The model kinds of 'train --model', by name; the first is the default.
KINDS = {kind.name: kind for kind in (MLP(), CNN(), GPTKind())}
# Largest model 'train' builds and 'evaluate' loads (parameters and buffers): 200 MB of float32.
MAX_PARAMETERS = 50_000_000
# Largest checkpoint 'evaluate' and 'generate' read, refused before its arrays are: the float32
# weights of the largest model and AdamW's two moments of them, and 1 GiB of history and
# metadata.
MAX_CHECKPOINT_BYTES = 3 * 4 * MAX_PARAMETERS + 2**30
GRAPH_FORMATS = ("svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", "dot", "gv")
THREADS = Option("threads", int, None, "threads of the BLAS library behind matrix products; "
                 "one is fastest for these small models, above all on a busy machine", low=1,
                 high=1024, default_text="1, unless OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or "
                 "MKL_NUM_THREADS is set")
GENERATE_OPTIONS = (
    Option("tokens", int, 300, "characters to generate", low=1, high=1_000_000),
    Option("temperature", float, 0.8, "divides the model's scores before sampling: lower is "
           "safer and more repetitive, higher more varied", low=0, low_open=True, high=100),
    Option("top_k", int, 40, "sample among the k likeliest characters only (0: among all)",
           low=0, high=1_000_000),
    Option("seed", int, 0, "seeds the sampling", low=0, high=2**32 - 1),
)

DESCRIPTION = """\
tinytorch: a small deep-learning framework in Python and NumPy.

commands:
  tinytorch train                      train an MLP on the bundled digits, report test accuracy
  tinytorch train --dataset moons      ... or on a 2-D toy problem (moons, spirals, xor)
  tinytorch train --model cnn          train a convolutional network on the digits
  tinytorch train --model gpt          train a character-level GPT on tiny Shakespeare
  tinytorch evaluate runs/RUN          reload a run's checkpoint and measure it again
  tinytorch generate runs/RUN          write text with a trained GPT
  tinytorch graph                      draw the autograd graph of a model's loss
  tinytorch profile                    time and graph memory per op of one training step
  tinytorch demo                       fit y = 3x + 2 with bare autograd

'tinytorch COMMAND --help' describes a command's options."""


# ----- commands ---------------------------------------------------------------------------------

def train(args):
    """Train a model of kind --model, print progress and the result, write the run's files."""
    from tinytorch.cli.runs import RUN_FILES, RunFolder, stop_reason, stop_status
    from tinytorch.core.training import DivergenceError

    kind = KINDS[args.model]
    config = kind.config(_settings(kind, args), args.seed)
    data = kind.load_data(config)
    model = _build(kind, config, data, usage=True)
    run = RunFolder.claim(args.out, overwrite=args.overwrite)
    try:
        kind.train(config, data, model, run, compile=args.compile)
    except KeyboardInterrupt as stop:                   # Ctrl-C, SIGTERM
        raise Stopped(stop_status(stop), f"{stop_reason(stop)}; {run.where()}") from None
    except DivergenceError as error:
        hint = f"; lower --lr (it was {config['lr']:g})" if "lr" in config else ""
        raise Stopped(1, f"error: {error}{hint}; {run.where()}") from None
    except BrokenPipeError:
        _silence_stdout()
        raise Stopped(1, f"output closed, training stopped; {run.where()}") from None
    finally:
        run.close()
    print(f"wrote {', '.join(sorted(run.written, key=RUN_FILES.index))} to {run.path}")
    return 0


def evaluate(args):
    """Rebuild the model and the data recorded in a checkpoint; report the result."""
    kind, config, data, model, checkpoint, path = _load_run(args.checkpoint)
    kind.evaluate(config, data, model, checkpoint, path)
    return 0


def generate(args):
    """Continue --prompt with characters sampled from a trained GPT; print the text."""
    from tinytorch.cli.gpt import encode

    if not args.prompt:
        raise UsageError("argument --prompt: must hold at least one character")
    _, _, data, model, _, _ = _load_run(args.checkpoint, only="gpt")
    try:
        prompt = encode(data.tokenizer, args.prompt, "the prompt")
    except ValueError as error:
        raise UsageError(f"argument --prompt: {error}") from None
    tokens = model.generate(prompt, args.tokens, temperature=args.temperature,
                            top_k=args.top_k or None, seed=args.seed)
    sys.stdout.write(data.tokenizer.decode(tokens.data) + "\n")
    return 0


def graph(args):
    """Draw the autograd graph of a model's loss on one small batch."""
    import shutil

    from tinytorch.viz import draw_graph, to_dot

    path = args.out
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in GRAPH_FORMATS:
        kind = f"a .{extension} file" if extension else "a file without an extension"
        raise UsageError(f"argument --out: cannot draw a graph as {kind}; give one of "
                         f".{', .'.join(GRAPH_FORMATS)}")
    check_output(path, "--out")
    kind = KINDS[args.model]
    settings = _settings(kind, argparse.Namespace(dataset=args.dataset, hidden=args.hidden))
    config = kind.config(settings, seed=0)
    data = kind.load_data(config)
    limit = kind.graph_samples(config, data)
    if args.batch_size > limit:
        raise UsageError(f"argument --batch-size: must be at most {limit}, the training "
                         f"{kind.sample_name} of {config['dataset']}, got {args.batch_size}")
    model = _build(kind, config, data, usage=True)
    loss = kind.graph_loss(config, data, model, args.batch_size)
    if extension not in ("dot", "gv") and shutil.which("dot") is None:
        path, extension = os.path.splitext(path)[0] + ".dot", "dot"
        print("note: the Graphviz 'dot' program is not installed, so the graph is written "
              "as DOT text (install graphviz, e.g. apt-get install graphviz, to render it)")

    def write(temporary):
        if extension in ("dot", "gv"):
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(to_dot(loss, params=model))
        else:
            draw_graph(loss, temporary, params=model, format=extension)

    try:           # only the file asked for is written, and nothing is left when that fails
        write_output(path, write)
    except RuntimeError as error:                           # Graphviz's dot failed
        raise Stopped(1, f"error: {path} was not written: "
                         f"{_shortened(str(error).removeprefix('draw_graph: '))}") from None
    print(f"wrote the graph of the loss of {kind.title} on {config['dataset']} to {path}")
    return 0


def demo(args):
    """Fit y = 3x + 2 by gradient descent with autograd, printing the loss as it falls.
    Training that diverges (a loss that becomes NaN or infinite, or ends above where it
    started) stops with an error, as 'train' does."""
    import tinytorch as tt
    from tinytorch.core.training import DivergenceError, format_loss

    tt.manual_seed(args.seed)
    x = tt.rand(64, 1) * 4 - 2
    y = 3 * x + 2 + 0.05 * tt.randn(64, 1)
    w = tt.zeros(1, 1, requires_grad=True)
    b = tt.zeros(1, requires_grad=True)

    def mse():
        return ((x @ w + b - y) ** 2).mean()

    first = None
    try:
        for step in range(args.steps + 1):
            loss = mse()
            value = loss.item()
            first = value if first is None else first
            if not math.isfinite(value):
                raise DivergenceError(None, step, None, f"the loss is {value}")
            loss.backward()
            with tt.no_grad():
                w.data -= args.lr * w.grad.data
                b.data -= args.lr * b.grad.data
            w.zero_grad()
            b.zero_grad()
            if step % max(args.steps // 10, 1) == 0:
                print(f"step {step:4d}  loss {format_loss(value, width=10)}")
        final = mse().item()
        if not final <= first:                              # NaN included
            raise DivergenceError(None, args.steps, None, f"the loss rose from {first:.4g} "
                                  f"at step 0 to {final:.4g}")
    except DivergenceError as error:
        raise Stopped(1, f"error: {error}; lower --lr (it was {args.lr:g})") from None
    print(f"learned y = {w.item():.3f} x + {b.item():.3f}   (true: y = 3x + 2)")
    return 0


# ----- helpers ----------------------------------------------------------------------------------

class Stopped(Exception):
    """A command stopped early: exit with ``status`` after printing ``message`` on stderr."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _option_variants():
    """{name: [(Option, [kind names])]}: each train option, with the kinds that use each of
    its definitions (kinds may define an option of the same name differently)."""
    variants = {}
    for kind in KINDS.values():
        for option in kind.options:
            for known, users in variants.setdefault(option.name, []):
                if known is option:
                    users.append(kind.name)
                    break
            else:
                variants[option.name].append((option, [kind.name]))
    return variants


def _train_options():
    """{name: Option} of every kind's train options, as the parser reads them: an option that
    kinds define differently is parsed by its type (and the union of its choices) only, and
    checked by the chosen kind's own definition afterwards (see :func:`_settings`)."""
    options = {}
    for name, variants in _option_variants().items():
        option = variants[0][0]
        if len(variants) > 1:
            choices = None
            if option.kind is str:
                choices = list(dict.fromkeys(c for o, _ in variants for c in o.choices))
            help = "; ".join(f"{', '.join(users)}: {o.help}"
                             f"{'' if o.kind is str else '; ' + o.expected}"
                             f" (default: {o.default_text})" for o, users in variants)
            option = Option(name, option.kind, None, help, choices=choices,
                            metavar=option.metavar)
        options[name] = option
    return options


def _settings(kind, args):
    """The values of ``kind``'s options: given ones checked by the kind, defaults otherwise.
    UsageError for an option of another kind given on the command line, or for options that
    disagree with each other."""
    settings = {}
    shared = {name for name, variants in _option_variants().items() if len(variants) > 1}
    for option in kind.options:
        value = getattr(args, option.name, None)
        if value is None:
            settings[option.name] = option.default_for(settings)
            continue
        try:
            settings[option.name] = option.check(value)
        except ValueError as error:
            model = f" (--model {kind.name})" if option.name in shared else ""
            raise UsageError(f"argument {option.flag}{model}: {error}") from None
    for name, option in _train_options().items():
        if name not in settings and getattr(args, name, None) is not None:
            raise UsageError(f"argument {option.flag}: does not apply to --model {kind.name}")
    problem = kind.check_settings({**settings, **{o.name: o.default for o in kind.fixed}})
    if problem:
        name, text = problem
        raise UsageError(f"argument --{name.replace('_', '-')}: {text}")
    return settings


def _load_run(run, only=None):
    """``(kind, config, data, model, checkpoint, path)`` of the checkpoint in the run folder
    (or file) ``run``: the file, its config, its data and its weights are checked, in that
    order, before the model is built. ``only``: the kind the command needs."""
    from tinytorch.core.training import read_checkpoint

    path = run
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
        if not os.path.lexists(path):
            raise ValueError(f"{run} holds no model.npz (a run folder gets it when its first "
                             f"epoch or evaluation interval ends)")
    checkpoint = read_checkpoint(path, max_bytes=MAX_CHECKPOINT_BYTES)
    metadata = checkpoint.get("metadata") or {}
    config = metadata.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the checkpoint's metadata has no config recording how to "
                         f"rebuild its model; was it written by 'tinytorch train'?")
    name = config.get("model", "mlp")         # checkpoints of tinytorch 0.1 have no "model"
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f"{path}: the checkpoint's config field 'model' must be one of "
                         f"{', '.join(KINDS)}, got {str(name)[:40]!r}")
    if only is not None and name != only:
        raise ValueError(f"{path}: holds {KINDS[name].title} (--model {name}), not "
                         f"{KINDS[only].title}; this command needs a checkpoint of "
                         f"'tinytorch train --model {only}'")
    kind = KINDS[name]
    config = kind.check_config(config, path)
    with _reading(path):
        data = kind.load_data(config, checkpoint, path)
        kind.check_data(config, data, path)
        model = _build(kind, config, data, stored=checkpoint["model"], where=path)
        model.load_state_dict(checkpoint["model"])
    return kind, config, data, model, checkpoint, path


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


def _tune_process(threads):
    """Apply --threads (None, also for commands without the option: one thread, unless the
    environment sets a number) and keep freed memory for reuse (see
    :mod:`tinytorch.cli.runtime`). A thread limit that cannot be set is warned about only when
    asked for on the command line."""
    from tinytorch.cli.runtime import environment_threads, keep_freed_memory, limit_blas_threads

    keep_freed_memory()
    if threads is None and environment_threads():
        return
    if limit_blas_threads(threads or 1) is None and threads is not None:
        print("tinytorch: warning: --threads could not reach the BLAS library; set "
              "OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) before starting instead",
              file=sys.stderr)


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


def check_output(path, option):
    """Refuse, before any work, an output file ``path`` (given with ``option``) that cannot be
    written: UsageError for an empty name, ValueError when it is a folder, a named pipe or a
    device, NotADirectoryError when a file stands where one of its folders would be."""
    from tinytorch.cli.runs import missing_folders
    from tinytorch.core.serialization import file_kind

    if not path:
        raise UsageError(f"argument {option}: must name a file, got an empty string")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(f"{path}: cannot be written: it is {file_kind(mode)}, not a regular "
                         f"file")
    if os.path.dirname(path):
        missing_folders(os.path.dirname(path))


def write_output(path, write):
    """Write the file ``path`` with ``write(temporary path)`` all at once (see
    :func:`~tinytorch.core.serialization.write_atomically`), creating its missing folders;
    when that fails, nothing is left: neither a partial file nor the folders made."""
    from tinytorch.cli.runs import make_folders, remove_folders
    from tinytorch.core.serialization import write_atomically

    created = make_folders(os.path.dirname(path)) if os.path.dirname(path) else []
    try:
        with write_atomically(path) as temporary:
            write(temporary)
    except BaseException:
        remove_folders(created)
        raise


def _describe(error):
    """The text of an exception for its one line: an OSError as ``<file>: <reason>`` (e.g.
    ``runs/a/model.npz: No space left on device``) rather than ``[Errno 28] ...``."""
    if isinstance(error, OSError) and error.strerror and isinstance(error.filename, (str, bytes)):
        text = f"{os.fsdecode(error.filename)}: {error.strerror}"
        if isinstance(error.filename2, (str, bytes)):
            text += f" (with {os.fsdecode(error.filename2)})"
        return text
    return str(error)


def _shortened(text, limit=300):
    """``text`` on one line, cut to ``limit`` characters (e.g. another program's stderr)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings in one line, without the source path and line Python shows by default."""
    print(f"tinytorch: warning: {' '.join(str(message).split())}", file=sys.stderr)


# ----- argument parsing ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line (the full usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} "
                     f"(see '{self.prog} --help')\n")


class _CommandParser(_Parser):
    """The parser of one command: it refuses arguments it does not know itself, so that the
    message names the command ('tinytorch train: error: unrecognized arguments: --bogus')."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser():
    from tinytorch import __version__

    parser = _Parser(prog="tinytorch", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tinytorch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_CommandParser)

    p = commands.add_parser(
        "train", help="train a model and report how well it does",
        description="Train a model and write model.npz, history.json and curves.png to a run "
                    "folder. The MLP (two hidden ReLU layers, dropout 0.1; the default) and the "
                    "CNN (--model cnn) learn the digits on a 70/10/20 train/val/test split, "
                    "print one line per epoch and the test accuracy, and save after every "
                    "epoch. The GPT (--model gpt) learns tiny Shakespeare character by "
                    "character, prints its loss and speed every 50 steps, estimates the "
                    "validation loss and saves every --eval-interval steps, and ends with the "
                    "loss over the whole validation split and a sample of text. Ctrl-C (or "
                    "SIGTERM) stops at once and keeps the last saved epoch (or step); training "
                    "that diverges (NaN or infinity) stops with an error and keeps it too.")
    p.add_argument("--model", choices=list(KINDS), default=next(iter(KINDS)),
                   help="the kind of model: " + "; ".join(f"{kind.name}, {kind.summary}"
                                                          for kind in KINDS.values())
                        + f" (default: {next(iter(KINDS))})")
    variants = _option_variants()
    for name, option in _train_options().items():
        if len(variants[name]) == 1:
            users = variants[name][0][1]
            option.add_to(p, "" if len(users) == len(KINDS) else f" ({', '.join(users)} only)",
                          unset=True)
        else:                       # the kinds' own definitions, each named in the help text
            p.add_argument(option.flag, type=option.parse, choices=option.choices, dest=name,
                           default=None, metavar=option.metavar, help=option.help)
    SEED.add_to(p)
    THREADS.add_to(p)
    p.add_argument("--compile", action="store_true",
                   help="run each step's forward and backward with tinytorch.compile: recorded "
                        "once per batch shape, then replayed; the same numbers, faster")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the run's files; refused if it holds a run already, unless "
                        "--overwrite is given (default: a new folder runs/<date>-<time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace the run it holds (once this run saves its first "
                        "epoch)")
    p.set_defaults(run=train)

    p = commands.add_parser(
        "evaluate", help="reload a checkpoint and report its test accuracy (or validation loss)",
        description="Rebuild the model and the data recorded in a checkpoint written by "
                    "'tinytorch train', and print its test accuracy (for a GPT: its loss over "
                    "the whole validation split). The checkpoint is checked (types, sizes, "
                    "consistency with its weights; for a GPT its tokenizer) before anything "
                    "is built.")
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run folder (its model.npz is read) or a model.npz")
    THREADS.add_to(p)
    p.set_defaults(run=evaluate)

    p = commands.add_parser(
        "generate", help="write text with a GPT trained by 'tinytorch train --model gpt'",
        description="Continue a prompt with characters sampled one at a time from a GPT "
                    "checkpoint (written by 'tinytorch train --model gpt'), and print the "
                    "prompt and the continuation. Each character is drawn from the softmax of "
                    "the model's scores divided by --temperature, among the --top-k likeliest; "
                    "the same --seed gives the same text. The checkpoint and its tokenizer "
                    "are checked before anything is built.")
    p.add_argument("checkpoint", metavar="RUN",
                   help="a run folder of 'tinytorch train --model gpt' (its model.npz is read) "
                        "or a model.npz")
    p.add_argument("--prompt", default="\n", metavar="TEXT",
                   help="text to continue, made of characters the model knows (default: a "
                        "newline)")
    for option in GENERATE_OPTIONS:
        option.add_to(p)
    THREADS.add_to(p)
    p.set_defaults(run=generate)

    p = commands.add_parser(
        "graph", help="draw the autograd graph of a model's loss",
        description="Draw the autograd graph (ops, shapes, parameter names) of the loss of a "
                    "model (--model, with its default sizes) on one small batch. Images need "
                    "Graphviz's 'dot' program; without it the graph is written as DOT text.")
    p.add_argument("--model", choices=list(KINDS), default=next(iter(KINDS)),
                   help=f"the kind of model, as for 'train' (default: {next(iter(KINDS))})")
    p.add_argument("--out", default="graph.svg", metavar="FILE",
                   help=f"file to write, its type from its extension: "
                        f".{', .'.join(GRAPH_FORMATS[:-2])} (rendered by Graphviz) or .dot, .gv "
                        f"(DOT text); missing folders are created (default: graph.svg)")
    p.add_argument("--dataset", type=str, default=None,
                   choices=_train_options()["dataset"].choices,
                   help="data the loss is computed on (default: the model's, as for 'train')")
    Option("hidden", int, 128, "units in each of the two hidden layers (mlp only)",
           low=1, high=4096).add_to(p, unset=True)
    Option("batch_size", int, 8, "samples (for gpt: windows of text) in the batch, at most "
           "the training split's", low=1, high=65_536).add_to(p)
    THREADS.add_to(p)
    p.set_defaults(run=graph)

    p = commands.add_parser(
        "demo", help="fit y = 3x + 2 with autograd and print the loss",
        description="Fit y = 3x + 2 to 64 noisy points by plain gradient descent on two "
                    "tensors with requires_grad, printing the loss as it falls.")
    Option("steps", int, 200, "gradient-descent steps", low=1, high=1_000_000).add_to(p)
    Option("lr", float, 0.1, "learning rate", low=0, low_open=True).add_to(p)
    Option("seed", int, 0, "seeds the 64 noisy points", low=0, high=2**32 - 1).add_to(p)
    p.set_defaults(run=demo)

    from tinytorch.cli import profile
    profile.add_command(commands, KINDS)
    return parser


@functools.cache
def _parser():
    return build_parser()


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from tinytorch.cli.runs import stop_reason, stop_signals_interrupt, stop_status

    _escape_unencodable_output()
    try:
        with stop_signals_interrupt():
            args = _parser().parse_args(argv)
            _tune_process(getattr(args, "threads", None))
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
    except KeyboardInterrupt as stop:                   # Ctrl-C, SIGTERM
        return _fail(stop_status(stop), f"tinytorch: {stop_reason(stop)}")
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except (ValueError, OSError) as error:
        return _fail(1, f"tinytorch: error: {_describe(error)}")
    except MemoryError:
        return _fail(1, "tinytorch: error: out of memory")


def _fail(status, message):
    """Print ``message`` on one line of stderr, with characters that are not printable (e.g.
    from a hostile file's entry names) escaped; return ``status``."""
    text = " ".join(str(message).split())
    with contextlib.suppress(OSError):                  # stderr gone (e.g. after SIGHUP)
        print("".join(c if c.isprintable() else ascii(c)[1:-1] for c in text), file=sys.stderr)
    return status


def _escape_unencodable_output():
    """Let stdout and stderr write characters their encoding lacks as escapes (``\\xfc``)
    instead of failing: a run folder named 'ü' under LANG=C or PYTHONIOENCODING=ascii, or
    a file name holding bytes that are not UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
