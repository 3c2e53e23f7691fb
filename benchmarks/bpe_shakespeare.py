"""Time BPE on the whole tiny-Shakespeare corpus: training to 512 tokens, encoding, decoding.

    PYTHONPATH=. python benchmarks/bpe_shakespeare.py [--runs 5] [--vocab-size 512]

Issue 14 asks for training on the whole 1.1 MB corpus to a 512-token vocabulary in <= 60 s on
2 cores, and encoding the whole corpus in a few seconds. Each run trains a fresh tokenizer,
encodes the corpus, checks that decoding gives it back exactly, and the script prints the
median and range of each time over the runs (the machines are shared, so single runs vary).
"""

import argparse
import statistics
import time

from tinytorch.core.tokenization import BPETokenizer, CharTokenizer
from tinytorch.datasets import load_shakespeare


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args()
    text = load_shakespeare()
    times = {"bpe train": [], "bpe encode": [], "bpe decode": [], "char encode": []}
    for run in range(args.runs):
        start = time.perf_counter()
        tok = BPETokenizer(vocab_size=args.vocab_size)
        tok.train(text)
        times["bpe train"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ids = tok.encode(text)
        times["bpe encode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert tok.decode(ids) == text, "the round trip must be exact"
        times["bpe decode"].append(time.perf_counter() - start)
        chars = CharTokenizer()
        chars.build_vocab(text)
        start = time.perf_counter()
        chars.encode(text)
        times["char encode"].append(time.perf_counter() - start)
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    print(f"{len(text):,} characters -> {len(ids):,} BPE tokens "
          f"({len(text) / len(ids):.2f} characters per token), vocab_size {tok.vocab_size}, "
          f"{len(tok.merges)} merges")
    for name, values in times.items():
        print(f"{name:12s} median {statistics.median(values):6.2f} s   "
              f"range {min(values):.2f}-{max(values):.2f} s over {len(values)} runs")


if __name__ == "__main__":
    main()
