"""``tinytorch train --model gpt``: a character-level GPT on tiny Shakespeare; ``generate``.

The model reads 64 characters and predicts, at every position, the character that follows
(nanoGPT's ``shakespeare_char`` task, scaled to a laptop CPU). The recipe, with the defaults:

- data: the first 90% of the corpus trains, the last 10% validates; one id per character
  (65 characters), the tokenizer stored in the checkpoint;
- model: :class:`~tinytorch.core.transformer.GPT`, 2 pre-LN blocks, embedding 64, 4 heads,
  context 64, no dropout (112,512 parameters);
- optimizer: AdamW, betas (0.9, 0.99), weight decay 0.1 on the 2-D weights only (matrices and
  embeddings; biases and LayerNorm scales are not decayed), gradients clipped to norm 1;
- schedule: linear warm-up over 100 steps to lr 0.01, then cosine decay to lr/10;
- batches of 32 windows drawn at random from the training text, every step;
- validation: a quick estimate on 256 fixed windows every ``eval_interval`` steps (when the
  checkpoint is saved), and at the end the loss over the whole validation split, cut into
  non-overlapping windows, every character counted once.

Losses are in nats per character: ln 65 = 4.17 for a uniform guess, 2.48 for counted bigram
statistics.
"""

import functools
import math
import time

import numpy as np

from tinytorch.cli.kinds import (
    BATCH_SIZE, ModelKind, parameter_count, print_compile_summary, write_curves,
)
from tinytorch.cli.options import Option

LOG_EVERY = 50                  # steps between progress lines (and evaluations, which print too)
QUICK_WINDOWS_SEED = 0          # the quick estimate's windows: the same for every run
MAX_VOCAB = 100_000             # characters a stored tokenizer may have
SHAKESPEARE_VOCAB = 65
MLP_RATIO = 4                   # the blocks' MLP is 4x as wide as the embedding (GPT-2)
# Largest step 'train' and 'evaluate' run: float32 activations kept for backward, estimated.
MAX_ACTIVATION_BYTES = 8 * 2**30
SAMPLE = {"prompt": "ROMEO:", "tokens": 200, "temperature": 0.8, "top_k": 40, "seed": 0}


class GPTKind(ModelKind):
    """A character-level GPT trained for a number of steps (see the module's docstring)."""

    name = "gpt"
    title = "a GPT"
    summary = "a character-level GPT (pre-LN transformer) on tiny Shakespeare"
    options = (
        Option("dataset", str, "shakespeare", "data to learn: the tiny-Shakespeare text "
               "shipped with tinytorch", choices=("shakespeare",)),
        Option("steps", int, 2000, "optimizer steps, one batch each", low=1, high=10_000_000),
        Option("embed_dim", int, 64, "width of the token vectors (a multiple of --heads)",
               low=4, high=2048),
        Option("layers", int, 2, "transformer blocks", low=1, high=48),
        Option("heads", int, 4, "attention heads per block", low=1, high=64),
        Option("context", int, 64, "characters the model reads at once (the window length)",
               low=2, high=4096),
        Option("dropout", float, 0.0, "dropout probability in the blocks", low=0, high=1,
               high_open=True),
        BATCH_SIZE,
        Option("lr", float, 1e-2, "peak learning rate (AdamW), reached after the warm-up, "
               "then a cosine decay to lr/10", low=0, low_open=True),
        Option("warmup", int, 100, "steps of linear learning-rate warm-up", low=0,
               high=10_000_000),
        Option("eval_interval", int, 250, "steps between validation estimates, each "
               "saving the checkpoint", low=1, high=10_000_000),
    )
    fixed = (
        Option("weight_decay", float, 0.1, "AdamW weight decay of the 2-D weights", low=0,
               high=1),
        Option("beta1", float, 0.9, "AdamW beta1", low=0, high=1, high_open=True),
        Option("beta2", float, 0.99, "AdamW beta2", low=0, high=1, high_open=True),
        Option("min_lr_ratio", float, 0.1, "the final learning rate over the peak", low=0,
               high=1),
        Option("grad_clip", float, 1.0, "largest gradient norm", low=0, low_open=True),
        Option("eval_windows", int, 256, "validation windows of the quick estimate", low=1,
               high=100_000),
    )
    required = ("dataset", "vocab_size", "embed_dim", "layers", "heads", "context", "dropout",
                "batch_size")

    def extra_fields(self):
        return (Option("vocab_size", int, None, "", low=2, high=MAX_VOCAB),)

    def check_settings(self, settings):
        embed, heads = settings["embed_dim"], settings["heads"]
        if embed % heads:
            return "embed_dim", f"must be a multiple of the number of heads ({heads}), got {embed}"
        need = activation_bytes(settings)
        if need > MAX_ACTIVATION_BYTES:
            return "batch_size", (
                f"a step of {settings['batch_size']} windows of {settings['context']} "
                f"characters would keep about {need / 2**30:,.0f} GiB of activations, more than "
                f"the limit of {MAX_ACTIVATION_BYTES // 2**30} GiB; lower the batch size, "
                f"context, embedding or layers")
        return None

    # ----- data -------------------------------------------------------------------------------
    def load_data(self, config, checkpoint=None, where=None):
        from tinytorch.core.tokenization import CharTokenizer

        if checkpoint is None:
            from tinytorch.datasets import load_shakespeare

            text = load_shakespeare()
            tokenizer = CharTokenizer()
            tokenizer.build_vocab(text)
            return TextData(tokenizer, text)
        return TextData(stored_tokenizer(checkpoint, where), None, where)

    def check_data(self, config, data, where):
        if config["vocab_size"] != data.vocab_size:
            raise ValueError(f"{where}: the checkpoint's config gives a vocabulary of "
                             f"{config['vocab_size']}, its tokenizer has {data.vocab_size} "
                             f"characters")

    # ----- model ------------------------------------------------------------------------------
    def state_shapes(self, config, data):
        V, D, T = data.vocab_size, config["embed_dim"], config["context"]
        H = MLP_RATIO * D
        shapes = {"token_embedding.weight": (V, D), "position_embedding.weight": (T, D)}
        for i in range(config["layers"]):
            block = f"blocks.{i}"
            for norm in ("ln1", "ln2"):
                shapes[f"{block}.{norm}.weight"] = shapes[f"{block}.{norm}.bias"] = (D,)
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{block}.attn.{projection}.weight"] = (D, D)
                shapes[f"{block}.attn.{projection}.bias"] = (D,)
            shapes[f"{block}.mlp.linear1.weight"], shapes[f"{block}.mlp.linear1.bias"] = \
                (D, H), (H,)
            shapes[f"{block}.mlp.linear2.weight"], shapes[f"{block}.mlp.linear2.bias"] = \
                (H, D), (D,)
        shapes["ln_f.weight"] = shapes["ln_f.bias"] = (D,)
        shapes["lm_head.weight"] = (D, V)
        return shapes

    def build(self, config, data):
        from tinytorch.core.transformer import GPT

        return GPT(data.vocab_size, config["embed_dim"], config["layers"], config["heads"],
                   max_seq_len=config["context"], dropout_prob=config["dropout"])

    def describe(self, config, data):
        return (f"training {self.title} {self.sizes(config, data)} on {config['dataset']} "
                f"({len(data.train):,} train / {len(data.val):,} val characters, "
                f"{data.vocab_size} distinct): adamw lr {config['lr']:g}, batch "
                f"{config['batch_size']} x {config['context']} characters, {config['steps']} "
                f"steps, seed {config['seed']}")

    def sizes(self, config, data):
        count = parameter_count(self.state_shapes(config, data))
        layers, heads = config["layers"], config["heads"]
        return (f"({layers} layer{'s' if layers != 1 else ''}, {heads} "
                f"head{'s' if heads != 1 else ''}, embedding {config['embed_dim']}, context "
                f"{config['context']}; {count:,} parameters)")

    # ----- training ---------------------------------------------------------------------------
    def train(self, config, data, model, run, compile=False):
        from tinytorch.core.optimizers import AdamW
        from tinytorch.core.training import Trainer, format_loss

        config["vocab_size"] = data.vocab_size
        V, T, B, steps = data.vocab_size, config["context"], config["batch_size"], config["steps"]
        decay = [p for p in model.parameters() if p.ndim == 2]
        no_decay = [p for p in model.parameters() if p.ndim != 2]
        optimizer = AdamW([{"params": decay, "weight_decay": config["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=config["lr"], betas=(config["beta1"], config["beta2"]))
        trainer = Trainer(model, optimizer, next_token_loss(V), grad_clip_norm=config["grad_clip"],
                          compile=compile)
        rng = np.random.default_rng(config["seed"])
        quick = quick_windows(data.val, T, config["eval_windows"])
        history = {"config": config, "step": [], "train_loss": [], "lr": [], "seconds": [],
                   "tokens_per_second": [], "eval_step": [], "val_loss": []}
        tokenizer = data.tokenizer.to_dict()

        def save(step, **results):
            run.save(f"step {step}",
                     lambda path: trainer.save_checkpoint(path, config=config,
                                                          tokenizer=tokenizer, **results),
                     {**history, **results})

        print(self.describe(config, data), flush=True)
        width = len(str(steps))
        start = time.perf_counter()
        losses, trained, line_start = [], 0.0, time.perf_counter()
        for step in range(1, steps + 1):
            optimizer.lr = learning_rate(config, step - 1)
            x, y = random_windows(data.train, T, B, rng)
            losses.append(trainer.train_step(x, y))
            evaluating = step % config["eval_interval"] == 0 or step == steps
            if not (step == 1 or step % LOG_EVERY == 0 or evaluating):
                continue
            now = time.perf_counter()
            trained += now - line_start
            speed = len(losses) * B * T / (now - line_start)
            history["step"].append(step)
            history["train_loss"].append(float(np.mean(losses)))
            history["lr"].append(optimizer.lr)
            history["seconds"].append(now - start)
            history["tokens_per_second"].append(speed)
            val = " " * 18
            if evaluating:
                val_loss = validation_loss(model, data.val, T, B, quick)
                history["eval_step"].append(step)
                history["val_loss"].append(val_loss)
                if step < steps:
                    save(step)
                val = f"val loss {format_loss(val_loss)} "
            print(f"step {step:{width}d}/{steps} | train loss {format_loss(np.mean(losses))} | "
                  f"{val}| lr {optimizer.lr:.2e} | {speed:6,.0f} tok/s | "
                  f"{time.perf_counter() - start:6.1f}s", flush=True)
            losses, line_start = [], time.perf_counter()

        windows = all_windows(data.val, T)
        final = validation_loss(model, data.val, T, B, windows)
        characters = len(windows) * T
        tokens = model.generate(data.tokenizer.encode(SAMPLE["prompt"]), SAMPLE["tokens"],
                                temperature=SAMPLE["temperature"], top_k=SAMPLE["top_k"],
                                seed=SAMPLE["seed"])
        sample = data.tokenizer.decode(tokens.data)
        save(steps, final_val_loss=final, train_seconds=trained, sample=sample)
        print(f"validation loss: {final:.4f} nats per character over the whole validation "
              f"split ({characters:,} characters; perplexity {math.exp(final):.2f})")
        print(f"training took {trained:.0f}s ({steps * B * T / trained:,.0f} tok/s)")
        print(f"sample (temperature {SAMPLE['temperature']}, top-k {SAMPLE['top_k']}, "
              f"seed {SAMPLE['seed']}):")
        print(sample)
        print("-" * 40)
        title = (f"a GPT on {config['dataset']} ({config['layers']} layers, embedding "
                 f"{config['embed_dim']}, {config['steps']} steps): validation loss {final:.4f}")
        write_curves(run, plot_losses, history, title)
        print_compile_summary(trainer)

    def evaluate(self, config, data, model, checkpoint, path):
        T, B = config["context"], config["batch_size"]
        windows = all_windows(data.val, T)
        loss = validation_loss(model, data.val, T, B, windows)
        steps = checkpoint["step"]
        print(f"{path}: {self.title} {self.sizes(config, data)} on {config['dataset']} "
              f"(seed {config['seed']}), trained {steps} step{'s' if steps != 1 else ''}")
        print(f"validation loss: {loss:.4f} nats per character over the whole validation split "
              f"({len(windows) * T:,} characters; perplexity {math.exp(loss):.2f})")

    sample_name = "windows"

    def graph_samples(self, config, data):
        return len(all_windows(data.train, config["context"]))

    def graph_loss(self, config, data, model, batch_size):
        """The loss of ``model`` on the first ``batch_size`` windows of the training text."""
        T = config["context"]
        starts = np.arange(batch_size) * T
        x, y = _windows(data.train, starts, T)
        return next_token_loss(data.vocab_size)(model(x), y)


# ----- data -------------------------------------------------------------------------------------

class TextData:
    """A tokenizer and, when training, the corpus as ids (the first 90% train, the rest val),
    encoded on first use (``generate`` needs only the tokenizer)."""

    def __init__(self, tokenizer, text, where=None):
        self.tokenizer, self._text, self._where = tokenizer, text, where

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    @functools.cached_property
    def _ids(self):
        if self._text is None:
            from tinytorch.datasets import load_shakespeare

            self._text = load_shakespeare()
        what = "the corpus" if self._where is None else f"{self._where}: the corpus"
        return encode(self.tokenizer, self._text, what)

    @property
    def train(self):
        return self._ids[:int(0.9 * len(self._ids))]

    @property
    def val(self):
        return self._ids[int(0.9 * len(self._ids)):]


def encode(tokenizer, text, what):
    """``text`` as an int64 array of ids (vectorised: one lookup per distinct code point).
    ValueError naming ``what`` and the first character outside the vocabulary."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    vocab = np.array([ord(c) for c in tokenizer.vocab], dtype=np.uint32)
    order = np.argsort(vocab)
    position = np.minimum(np.searchsorted(vocab[order], codes), len(vocab) - 1)
    known = vocab[order][position] == codes
    if not known.all():
        char = chr(codes[np.argmin(known)])
        raise ValueError(f"{what} has the character {char!r}, which is not among the "
                         f"{len(vocab)} characters the model knows")
    return order[position].astype(np.int64)


def stored_tokenizer(checkpoint, where):
    """The character tokenizer stored in a checkpoint's metadata, checked (untrusted input):
    ValueError naming ``where`` unless it is one 'tinytorch train' could have written."""
    from tinytorch.core.tokenization import CharTokenizer

    stored = (checkpoint.get("metadata") or {}).get("tokenizer")
    if not isinstance(stored, dict):
        raise ValueError(f"{where}: the checkpoint holds no tokenizer (metadata 'tokenizer')")
    if stored.get("type") != "char":
        raise ValueError(f"{where}: the checkpoint's tokenizer must be a character tokenizer "
                         f"(type 'char'), got type {str(stored.get('type'))[:20]!r}")
    characters = stored.get("characters")
    if not isinstance(characters, list) or len(characters) > MAX_VOCAB:
        raise ValueError(f"{where}: the checkpoint's tokenizer must list at most "
                         f"{MAX_VOCAB:,} characters")
    try:
        tokenizer = CharTokenizer.from_dict(stored)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: the checkpoint's tokenizer is not valid: {error}") from None
    if tokenizer.unk_token is not None:
        raise ValueError(f"{where}: the checkpoint's tokenizer has an unknown-character token, "
                         f"which 'tinytorch train' never writes")
    if len(tokenizer.vocab) != len(characters):
        raise ValueError(f"{where}: the checkpoint's tokenizer lists a character twice")
    return tokenizer


def random_windows(ids, T, B, rng):
    """``B`` windows of ``T`` ids at random places, and the ids that follow each position."""
    return _windows(ids, rng.integers(0, len(ids) - T, B), T)


def all_windows(ids, T):
    """Start positions of the non-overlapping windows of ``T`` ids that cover ``ids`` (each
    with its next id)."""
    return np.arange((len(ids) - 1) // T) * T


def quick_windows(ids, T, count):
    """``count`` windows of :func:`all_windows` chosen by a fixed seed (the same every run)."""
    starts = all_windows(ids, T)
    rng = np.random.default_rng(QUICK_WINDOWS_SEED)
    return np.sort(rng.choice(starts, size=min(count, len(starts)), replace=False))


def _windows(ids, starts, T):
    index = starts[:, None] + np.arange(T)                   # (B, T)
    return ids[index], ids[index + 1]


# ----- training helpers -------------------------------------------------------------------------

def next_token_loss(vocab_size):
    """The loss of a step: cross-entropy of logits (B, T, V) against the next ids (B, T)."""
    from tinytorch.core.functional import cross_entropy

    def loss(logits, targets):
        return cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
    return loss


def learning_rate(config, step):
    """The learning rate of ``step`` (from 0): linear warm-up to ``lr`` over ``warmup`` steps,
    then cosine decay to ``lr * min_lr_ratio`` at the last step (as nanoGPT)."""
    lr, warmup, steps = config["lr"], config["warmup"], config["steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    low = lr * config["min_lr_ratio"]
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return low + (lr - low) * (1 + math.cos(math.pi * progress)) / 2


def validation_loss(model, ids, T, B, starts):
    """Mean cross-entropy per character over the windows at ``starts``, in eval mode."""
    from tinytorch.core.autograd import no_grad
    from tinytorch.core.functional import cross_entropy

    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with no_grad():
            for i in range(0, len(starts), B):
                x, y = _windows(ids, starts[i:i + B], T)
                logits = model(x)
                total += cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                       reduction="sum").item()
    finally:
        model.train(was_training)
    return total / (len(starts) * T)


def activation_bytes(config):
    """About how many bytes of float32 activations a training step keeps for backward: per
    block ~24 arrays (B, T, D) (the MLP's are 4x wider) and 3 of the attention's (B, heads, T,
    T), and 3 arrays of logits (B, T, vocab)."""
    B, T, D = config["batch_size"], config["context"], config["embed_dim"]
    vocab = config.get("vocab_size", SHAKESPEARE_VOCAB)
    per_layer = B * T * D * 24 + 3 * B * config["heads"] * T * T
    return 4 * (config["layers"] * per_layer + 3 * B * T * vocab)


def plot_losses(history, path, title=""):
    """Save the training and validation loss per step to ``path``; False without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(history["step"], history["train_loss"], marker=".", label="train (mean since "
              "the last point)")
    axes.plot(history["eval_step"], history["val_loss"], marker="o", label="validation "
              "(quick estimate)")
    axes.set(xlabel="step", ylabel="cross-entropy (nats per character)")
    axes.set_title(title, fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100)
    return True
