"""Model kinds: what ``tinytorch train --model NAME`` trains and ``tinytorch evaluate`` reloads.

A kind is a :class:`ModelKind` subclass; the command line does the rest for every kind: run
folders, Ctrl-C, divergence, checkpoints checked before anything is built, one-line errors.
To add one (say ``cnn``):

1. Subclass :class:`ModelKind` (or :class:`ClassifierKind` for a classifier of the bundled
   data sets trained epoch by epoch, which gives data, training loop and evaluation) and set
   ``name``, ``summary``, ``options`` (its ``train`` options with their defaults and limits:
   :class:`~tinytorch.cli.options.Option`, shared ones such as :data:`LR` may be reused) and
   ``fixed`` (settings recorded in the config but not offered as options).
2. Implement :meth:`~ModelKind.state_shapes` (the shape of every entry of the model's
   ``state_dict()``, from the config alone) and :meth:`~ModelKind.build`; and
   :meth:`~ModelKind.load_data`, :meth:`~ModelKind.train`, :meth:`~ModelKind.evaluate`,
   :meth:`~ModelKind.describe` unless inherited.
   :meth:`~ModelKind.check_settings` checks options against each other when they must agree.
3. Add an instance to :data:`KINDS` in ``tinytorch/cli/__init__.py``.

Each option becomes a ``train`` flag (``--name``); a flag given for a kind that does not use
it is refused. The config of a run (``{"model": name, "seed": ..., <options>, <fixed>}`` and
what the kind adds) is stored in the checkpoint and in ``history.json``; ``evaluate`` checks
it with the same options, then checks :meth:`~ModelKind.state_shapes` against the stored
arrays, and only then builds the model. Options of the same name may differ between kinds
(their defaults, limits or choices); each kind checks the value against its own.

The kinds: :class:`MLP` here, :class:`~tinytorch.cli.cnn.CNN` (``cnn.py``) and
:class:`~tinytorch.cli.gpt.GPTKind` (``gpt.py``, which trains by steps, not epochs).
"""

import math
from dataclasses import dataclass

import numpy as np

from tinytorch.cli.options import Option

OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}
TOY_SAMPLES = 1000
MAX_CLASSES = 1000

# ----- options shared by the kinds that train with an optimizer ------------------------------

EPOCHS = Option("epochs", int, 30, "passes over the training split", low=1, high=100_000)
OPTIMIZER = Option("optimizer", str, "adam", "adam, adamw (weight decay 0.01), or sgd with "
                   "momentum 0.9", choices=OPTIMIZERS)
LR = Option("lr", float, lambda settings: DEFAULT_LR[settings["optimizer"]],
            "peak learning rate, annealed by a cosine schedule to lr/20", low=0, low_open=True,
            default_text="0.002 for adam/adamw, 0.05 for sgd")
BATCH_SIZE = Option("batch_size", int, 32, "samples per optimizer step", low=1, high=65_536)


def dataset_option(datasets=None, help=None):
    from tinytorch.datasets import DATASETS

    return Option("dataset", str, "digits", help or "data to learn: the bundled 8x8 handwritten "
                  "digits, or 1,000 points of a 2-D toy problem", choices=datasets or DATASETS)


class ModelKind:
    """The interface of a model kind (see the module's docstring for how to add one)."""

    name = ""           # the value of --model, stored in the config as "model"
    summary = ""        # one line for --help
    options = ()        # Options of 'train', resolved in order (a default may use earlier ones)
    fixed = ()          # Options whose default is recorded in the config, not on the command line
    required = ()       # config keys 'evaluate' needs besides "model" and "seed"

    def config(self, settings, seed):
        """The config of a new run from the resolved option values ``settings``."""
        return {"model": self.name, **settings,
                **{option.name: option.default for option in self.fixed}, "seed": seed}

    def check_config(self, config, where):
        """Check a config read from a checkpoint: types, ranges and sane limits of every known
        field, before anything is built. Returns it with missing ``fixed`` fields filled in
        (older checkpoints); raises ValueError naming ``where`` and the field."""
        from tinytorch.cli.options import SEED

        missing = [key for key in ("seed", *self.required) if key not in config]
        if missing:
            raise ValueError(f"{where}: the checkpoint's config lacks {', '.join(missing)}; was "
                             f"it written by 'tinytorch train'?")
        config = {**{option.name: option.default for option in self.fixed}, **config}
        for option in (SEED, *self.options, *self.fixed, *self.extra_fields()):
            if option.name in config:
                try:
                    option.check(config[option.name])
                except ValueError as error:
                    raise ValueError(f"{where}: the checkpoint's config field '{option.name}' "
                                     f"{error}") from None
        problem = self.check_settings(config)
        if problem:
            raise ValueError(f"{where}: the checkpoint's config field '{problem[0]}' "
                             f"{problem[1]}")
        return config

    def check_settings(self, settings):
        """Check settings that are valid one by one against each other (and, e.g., the memory
        they would need) before anything is built: None, or ``(option name, problem)`` where
        the problem reads after the option's name ("must be a multiple of ..."). For a
        checkpoint's config, only the ``required`` fields are sure to be there."""
        return None

    def extra_fields(self):
        """Options checking config fields the kind adds itself (e.g. the number of classes)."""
        return ()

    def load_data(self, config, checkpoint=None, where=None):
        """The data the run learns from (any object the kind's other methods understand).
        'evaluate' passes the checkpoint read, whose metadata may hold what the data needs
        (e.g. a tokenizer), and its path ``where`` for messages; its config is already
        checked."""
        raise NotImplementedError

    def check_data(self, config, data, where):
        """Raise ValueError naming ``where`` when a checkpoint's config disagrees with the data
        it was trained on (checked by 'evaluate' before building)."""

    def state_shapes(self, config, data):
        """``{name: shape}`` of every entry of the built model's ``state_dict()``, computed
        from the config without building anything."""
        raise NotImplementedError

    def build(self, config, data):
        """The model (a Module) for ``config``; the global seed is already set."""
        raise NotImplementedError

    def describe(self, config, data):
        """One line printed before training starts."""
        return f"training a {self.name} model, seed {config['seed']}"

    def train(self, config, data, model, run, compile=False):
        """Train ``model``, printing progress; call ``run.save(...)`` after each epoch (or
        evaluation interval) so that an interrupted or diverged run keeps its last good state,
        and at the end. Training stops by exception (KeyboardInterrupt, DivergenceError):
        a :class:`~tinytorch.core.training.Trainer` checks every step, with ``fit`` for epochs
        or ``train_step`` for a loop that counts steps; ``compile`` is its ``compile=``
        (``--compile``)."""
        raise NotImplementedError

    def evaluate(self, config, data, model, checkpoint, path):
        """Measure the loaded ``model`` and print the result."""
        raise NotImplementedError

    sample_name = "samples"         # what graph_samples counts, for messages

    def graph_samples(self, config, data):
        """The largest batch :meth:`graph_loss` can take."""
        raise NotImplementedError

    def graph_loss(self, config, data, model, batch_size):
        """The loss of ``model`` on a batch of ``batch_size`` training samples (for 'graph')."""
        raise NotImplementedError


# ----- classifiers of the bundled data sets -----------------------------------------------------

@dataclass
class ClassificationData:
    """Standardised train/val/test splits (``TensorDataset``) of a classification data set."""
    train: object
    val: object
    test: object
    features: int
    classes: int
    mean: np.ndarray
    std: np.ndarray


def prepare_data(dataset, seed):
    """Load ``dataset`` (toy sets: 1000 points), split it 70/10/20 into train/val/test with
    ``seed``, and standardise it.

    Each feature is shifted and scaled by the training split's mean and standard deviation
    (features constant on the training split are only shifted).
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
    return ClassificationData(*splits, features=X.shape[1], classes=int(y.max()) + 1,
                              mean=mean, std=std)


def check_standardisation(checkpoint, data, where):
    """Check the ``mean`` and ``std`` a checkpoint's metadata records (untrusted input) against
    the ones recomputed from its data set and seed: ValueError naming ``where`` unless each is
    a finite float array of one value per feature (std > 0) equal to the recomputed one up to
    rounding. Checkpoints without them (written by tinytorch 0.1) pass."""
    metadata = checkpoint.get("metadata") or {}
    for name, recomputed in (("mean", data.mean), ("std", data.std)):
        if name not in metadata:
            continue
        stored = metadata[name]
        field = f"{where}: the checkpoint's metadata '{name}'"
        if not isinstance(stored, np.ndarray) or stored.dtype.kind != "f":
            raise ValueError(f"{field} must be an array of floats, got "
                             f"{getattr(stored, 'dtype', type(stored).__name__)}")
        if stored.shape != recomputed.shape:
            raise ValueError(f"{field} must hold one value per feature, shape "
                             f"{recomputed.shape}, got shape {stored.shape}")
        if not np.isfinite(stored).all() or (name == "std" and not (stored > 0).all()):
            raise ValueError(f"{field} must be finite{' and positive' if name == 'std' else ''}")
        if not np.allclose(stored, recomputed, rtol=1e-5, atol=1e-8):
            raise ValueError(f"{field} differs from the one of the training split its config "
                             f"gives (data set and seed): was the model trained on other data?")


def make_optimizer(name, params, lr):
    from tinytorch.core.optimizers import SGD, Adam, AdamW

    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9)
    return {"adam": Adam, "adamw": AdamW}[name](params, lr=lr)


def _epochs(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


class ClassifierKind(ModelKind):
    """A classifier of a bundled data set, trained epoch by epoch with :class:`Trainer`
    (cross-entropy, cosine schedule), with the test split held out for the end."""

    title = "a classifier"      # for messages: "an MLP 64-128-128-10"
    required = ("dataset", "classes")

    def config(self, settings, seed):
        return {**super().config(settings, seed), "split": SPLIT}

    def extra_fields(self):
        return (Option("classes", int, None, "", low=2, high=MAX_CLASSES),)

    def load_data(self, config, checkpoint=None, where=None):
        data = prepare_data(config["dataset"], config["seed"])
        if checkpoint is not None:
            check_standardisation(checkpoint, data, where)
        return data

    def check_data(self, config, data, where):
        if config["classes"] != data.classes:
            raise ValueError(f"{where}: the checkpoint's config gives {config['classes']} "
                             f"classes, the {config['dataset']} data has {data.classes}")

    def train(self, config, data, model, run, compile=False):
        from tinytorch.core.dataloader import DataLoader
        from tinytorch.core.losses import CrossEntropyLoss
        from tinytorch.core.training import CosineSchedule, Trainer, format_loss

        config["classes"] = data.classes
        lr = config["lr"]
        optimizer = make_optimizer(config["optimizer"], model.parameters(), lr)
        schedule = CosineSchedule(max_lr=lr, min_lr=lr / 20, total_epochs=config["epochs"])
        trainer = Trainer(model, optimizer, CrossEntropyLoss(), scheduler=schedule,
                          compile=compile)
        train_loader = DataLoader(data.train, batch_size=config["batch_size"], shuffle=True,
                                  seed=config["seed"])
        val_loader = DataLoader(data.val, batch_size=256)
        test_loader = DataLoader(data.test, batch_size=256)

        def save(history, **results):
            run.save(f"epoch {trainer.epoch}",
                     lambda path: trainer.save_checkpoint(path, config=config, mean=data.mean,
                                                          std=data.std, **results),
                     {"config": config, **history, **results})

        print(self.describe(config, data), flush=True)
        history = trainer.fit(train_loader, val_loader, epochs=config["epochs"], progress=True,
                              on_epoch_end=save)
        test_loss, test_accuracy = trainer.evaluate(test_loader)
        save(history, test_loss=test_loss, test_accuracy=test_accuracy)
        correct = round(test_accuracy * len(data.test))
        print(f"test accuracy: {test_accuracy:.2%} ({correct}/{len(data.test)})   "
              f"test loss {format_loss(test_loss).strip()}")
        title = (f"{self.title} {self.sizes(config, data)} on {config['dataset']}: "
                 f"test accuracy {test_accuracy:.2%}")
        write_curves(run, plot_curves, history, title)
        print_compile_summary(trainer)

    def evaluate(self, config, data, model, checkpoint, path):
        from tinytorch.core.dataloader import DataLoader
        from tinytorch.core.losses import CrossEntropyLoss
        from tinytorch.core.training import Trainer, format_loss

        loss, accuracy = Trainer(model, None, CrossEntropyLoss()).evaluate(
            DataLoader(data.test, batch_size=256))
        correct = round(accuracy * len(data.test))
        print(f"{path}: {self.title} {self.sizes(config, data)} on {config['dataset']} "
              f"(seed {config['seed']}), trained {_epochs(checkpoint['epoch'])}")
        print(f"test accuracy: {accuracy:.2%} ({correct}/{len(data.test)})   "
              f"test loss {format_loss(loss).strip()}")

    def describe(self, config, data):
        return (f"training {self.title} {self.sizes(config, data)} on {config['dataset']} "
                f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test "
                f"samples): {config['optimizer']} lr {config['lr']:g}, batch "
                f"{config['batch_size']}, {_epochs(config['epochs'])}, seed {config['seed']}")

    def sizes(self, config, data):
        """A short description of the model's size, e.g. "64-128-128-10"."""
        return ""

    def graph_samples(self, config, data):
        return len(data.train)

    def graph_loss(self, config, data, model, batch_size):
        """The loss of ``model`` on the first ``batch_size`` training samples."""
        from tinytorch.core.losses import CrossEntropyLoss

        inputs, targets = data.train[np.arange(batch_size)]
        return CrossEntropyLoss()(model(inputs), targets)


class MLP(ClassifierKind):
    """``Linear -> ReLU -> Dropout`` ``hidden_layers`` times, then a ``Linear`` giving one score
    per class."""

    name = "mlp"
    title = "an MLP"
    summary = "a multi-layer perceptron (hidden ReLU layers with dropout)"
    options = (dataset_option(),
               Option("hidden", int, 128, "units in each hidden layer", low=1, high=4096),
               EPOCHS, OPTIMIZER, LR, BATCH_SIZE)
    fixed = (Option("hidden_layers", int, 2, "hidden layers", low=0, high=16),
             Option("dropout", float, 0.1, "dropout probability", low=0, high=1,
                    high_open=True))
    required = ClassifierKind.required + ("hidden",)

    def layers(self, config, data):
        """The layers as tuples: ``("linear", in, out)``, ``("relu",)``, ``("dropout", p)``."""
        plan, width, hidden = [], data.features, config["hidden"]
        for _ in range(config["hidden_layers"]):
            plan += [("linear", width, hidden), ("relu",)]
            plan += [("dropout", config["dropout"])] if config["dropout"] else []
            width = hidden
        return plan + [("linear", width, data.classes)]

    def state_shapes(self, config, data):
        return {f"{i}.{name}": shape
                for i, (layer, *sizes) in enumerate(self.layers(config, data))
                if layer == "linear"
                for name, shape in (("weight", tuple(sizes)), ("bias", (sizes[1],)))}

    def build(self, config, data):
        from tinytorch.core.activations import ReLU
        from tinytorch.core.layers import Dropout, Linear, Sequential

        make = {"linear": Linear, "relu": ReLU, "dropout": Dropout}
        return Sequential(*(make[layer](*sizes) for layer, *sizes in self.layers(config, data)))

    def sizes(self, config, data):
        return "-".join(str(n) for n in [data.features]
                        + [config["hidden"]] * config["hidden_layers"] + [data.classes])


def print_compile_summary(trainer):
    """With --compile: how many steps were recorded (one per batch shape) and replayed."""
    step = trainer._compiled_step
    if step is not None:
        print(f"compiled: {step.recordings} step shape{'s' if step.recordings != 1 else ''} "
              f"recorded in {sum(step.record_seconds):.2f}s, {step.replays} steps replayed")


def write_curves(run, plot, history, title):
    """Write the run's curves.png with ``plot(history, path, title)``; without matplotlib, say
    so instead."""
    if not run.write_file("curves.png", lambda path: plot(history, path, title)):
        print("note: matplotlib is not installed, so curves.png was skipped "
              "(pip install 'tinytorch[plot]')")


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


def parameter_count(shapes):
    return sum(math.prod(shape) for shape in shapes.values())


def check_state(shapes, stored, where):
    """Raise ValueError unless the stored arrays ``stored`` ({name: array}) have exactly the
    names and ``shapes`` the config describes."""
    missing = [name for name in shapes if name not in stored]
    unexpected = [name for name in stored if name not in shapes]
    if missing or unexpected:
        def listed(names):              # names from the file may be long: cut each one
            cut = [name if len(name) <= 40 else name[:37] + "..." for name in names[:3]]
            return ", ".join(cut) + (" ..." if len(names) > 3 else "")
        parts = []
        if missing:
            parts.append(f"lacks {listed(missing)}")
        if unexpected:
            parts.append(f"has no place for {listed(unexpected)}")
        raise ValueError(f"{where}: the checkpoint's weights do not match its config: the model "
                         f"it describes has {len(shapes)} arrays, the file {len(stored)} "
                         f"({'; '.join(parts)})")
    for name, shape in shapes.items():
        if tuple(stored[name].shape) != tuple(shape):
            raise ValueError(f"{where}: the checkpoint's weights do not match its config: "
                             f"{name} has shape {tuple(stored[name].shape)}, the config gives "
                             f"{tuple(shape)}")
