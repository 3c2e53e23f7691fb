"""A one-layer transformer learns to reverse sequences of 8 digits (the whole engine at work)."""

import time

import numpy as np

import tinytorch as tt
from tinytorch.core.functional import cross_entropy
from tinytorch.core.optimizers import AdamW
from tinytorch.core.transformer import GPT

DIGITS, SEPARATOR, LENGTH = 10, 10, 8


def reversal_batch(rng, n):
    """Inputs ``d0..d7 SEP d7..d1`` and next-token targets; the last 8 targets are ``d7..d0``."""
    digits = rng.integers(0, DIGITS, (n, LENGTH))
    sequence = np.concatenate([digits, np.full((n, 1), SEPARATOR), digits[:, ::-1]], axis=1)
    return sequence[:, :-1], sequence[:, 1:]


def exact_match(model, inputs, targets):
    """Fraction of sequences whose 8 reversed digits are all predicted (each prediction given the
    correct digits before it; if all 8 are right, greedy decoding writes exactly them)."""
    with tt.no_grad():
        logits = model(inputs).data[:, LENGTH:]
    return float(np.mean(np.all(logits.argmax(axis=-1) == targets[:, LENGTH:], axis=1)))


def test_one_layer_transformer_learns_to_reverse_digits_within_30_seconds():
    start = time.perf_counter()
    tt.manual_seed(0)
    rng = np.random.default_rng(0)
    model = GPT(vocab_size=DIGITS + 1, embed_dim=64, num_layers=1, num_heads=4,
                max_seq_len=2 * LENGTH, dropout_prob=0.0)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    test_inputs, test_targets = reversal_batch(np.random.default_rng(1), 1000)
    accuracy = 0.0
    for step in range(1000):
        optimizer.lr = 3e-3 * min(1.0, (step + 1) / 50)             # a short warm-up
        inputs, targets = reversal_batch(rng, 64)
        logits = model(inputs)[:, LENGTH:]                           # the reversed half only
        loss = cross_entropy(logits.reshape(-1, DIGITS + 1), targets[:, LENGTH:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            accuracy = exact_match(model, test_inputs, test_targets)
            model.train()
            if accuracy >= 0.95:
                break
    elapsed = time.perf_counter() - start
    assert accuracy >= 0.95, f"exact-match accuracy {accuracy:.1%} after {step + 1} steps"
    assert elapsed <= 30, f"took {elapsed:.1f} s"
