"""``tinytorch profile``: one training step of a model kind, seen by the engine's profiler.

The model is the default of ``--model`` (a kind of ``train``: :data:`tinytorch.cli.KINDS`, so
every kind registered there can be profiled), the batch the one the kind's ``graph_loss``
computes the loss on (the loss ``tinytorch graph`` draws): the first ``--batch-size`` training
samples. After one untimed warm-up step (forward, backward, update: first calls allocate and
fill caches), one step's forward and backward run inside :func:`tinytorch.profiler.profile`;
the optimizer's update is timed apart (it changes the parameters' arrays in place and records
no op). Prints the per-op table and the summary, and with ``--trace`` writes the events as a
Chrome trace.
"""

import argparse

from tinytorch.cli.options import Option, UsageError

DEFAULT_LR = 1e-3          # for kinds whose config has no learning rate


def add_command(commands, kinds):
    """Register ``profile`` among the subcommands of the ``tinytorch`` parser."""
    from tinytorch.profiler import SORT_KEYS

    default = next(iter(kinds))
    p = commands.add_parser(
        "profile", help="profile one training step: time and graph memory per op",
        description="Profile one training step of a model (--model, with its default sizes and "
                    "data) after one warm-up step: per op type, the calls, forward and backward "
                    "time and the bytes of the outputs and of what the graph keeps for backward; "
                    "then the totals (parameter, gradient and peak graph memory; forward and "
                    "backward time). --trace also writes every op and node as a Chrome trace.")
    p.add_argument("--model", choices=list(kinds), default=default,
                   help=f"the kind of model, as for 'train' (default: {default})")
    Option("batch_size", int, None, "samples in the batch (default: the model's training "
           "batch size); at most the training split's", low=1, high=65_536,
           default_text="the model's --batch-size for 'train'").add_to(p, unset=True)
    p.add_argument("--trace", metavar="FILE", default=None,
                   help="also write the events to FILE as a Chrome trace (JSON), viewable in "
                        "chrome://tracing or https://ui.perfetto.dev; missing folders are created")
    p.add_argument("--sort-by", choices=SORT_KEYS, default="total_time",
                   help="the table's order (default: total_time)")
    Option("seed", int, 0, "seeds the data split and the initial weights", low=0,
           high=2**32 - 1).add_to(p)
    from tinytorch.cli import THREADS
    THREADS.add_to(p)
    p.set_defaults(run=run)


def run(args):
    """Profile one training step of ``args.model``; print the table and the summary."""
    import time

    from tinytorch.cli import KINDS, _build, _settings, check_output, write_output
    from tinytorch.cli.kinds import make_optimizer
    from tinytorch.profiler import profile

    kind = KINDS[args.model]
    if args.trace is not None:
        check_output(args.trace, "--trace")
    config = kind.config(_settings(kind, argparse.Namespace()), args.seed)
    data = kind.load_data(config)
    batch_size = args.batch_size or config.get("batch_size", 32)
    limit = kind.graph_samples(config, data)
    if batch_size > limit:
        raise UsageError(f"argument --batch-size: must be at most {limit}, the training samples "
                         f"of {config['dataset']}, got {batch_size}")
    model = _build(kind, config, data, usage=True)
    optimizer_name = config.get("optimizer", "adamw")
    optimizer = make_optimizer(optimizer_name, model.parameters(), config.get("lr", DEFAULT_LR))

    def forward_backward():
        optimizer.zero_grad()
        kind.graph_loss(config, data, model, batch_size).backward()

    forward_backward()                           # warm-up
    optimizer.step()
    with profile() as prof:
        forward_backward()
    start = time.perf_counter()
    optimizer.step()
    update = time.perf_counter() - start

    sizes = kind.sizes(config, data) if hasattr(kind, "sizes") else ""
    print(f"one training step of {getattr(kind, 'title', kind.name)} {sizes} on "
          f"{config['dataset']}: batch {batch_size}, {optimizer_name}, seed {args.seed} (after "
          f"one warm-up step)\n")
    print(prof.table(sort_by=args.sort_by))
    print()
    print(prof.summary())
    print(f"  optimizer step ({optimizer_name}): {_ms(update)}, not in the table: it updates "
          f"the parameters' arrays in place and records no op")
    if args.trace is not None:
        write_output(args.trace, prof.export_chrome_trace)
        print(f"wrote {len(prof.events)} events to {args.trace} (open it in chrome://tracing "
              f"or https://ui.perfetto.dev)")
    return 0


def _ms(seconds):
    from tinytorch.profiler import format_time
    return format_time(seconds)
