#!/usr/bin/env python
"""Paired CPU-time ratios of run.py's workloads, for a shared, noisy machine.

    python benchmarks/paired.py W1 W7                  # tinytorch, compiled and floor, 1 thread
    python benchmarks/paired.py W8 --rounds 20 --libs compiled,floor

``run.py`` compares medians of wall-clock samples taken in blocks: load from other processes
moves single runs by 10-50% here. This script measures what that load disturbs least: the CPU
time of this thread (``time.thread_time``) per step, the libraries alternating sample by sample
(each round runs each library once, in an order in which each follows each other equally
often), and reports the median and quartiles of the per-round ratios. Same step functions as
``run.py`` (the compiled one recorded first, see ``tinytorch_step``), BLAS and torch on one
thread. CPU time leaves out time spent waiting for a core, not time lost to a busy memory bus
or cache, so it is steadier, not immune.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import run  # noqa: E402

# ratio name -> (numerator, denominators): "min" is the lower of the denominators per round
RATIOS = {"compiled / floor": ("compiled", ("floor",)),
          "compiled / min(floor, eager)": ("compiled", ("floor", "tinytorch")),
          "compiled / eager": ("compiled", ("tinytorch",)),
          "eager / floor": ("tinytorch", ("floor",)),
          "compiled / torch": ("compiled", ("torch",))}


def paired(name, libs, rounds, min_sample_s=0.002):
    """``{lib: [seconds per step, one per round]}`` of CPU time for one workload."""
    spec = run.WORKLOADS[name]
    data = spec["data"](np.random.default_rng(0))
    builds = run.library_steps(spec)
    steps = {lib: builds[lib](data)[0] for lib in libs if lib in builds}
    inner = {}
    for lib, step in steps.items():
        step()
        start = time.thread_time()
        step()
        inner[lib] = max(1, round(min_sample_s / max(time.thread_time() - start, 1e-7)))
    samples = {lib: [] for lib in steps}
    order = run._balanced_order(list(steps), rounds)
    for lib in order:
        step, n = steps[lib], inner[lib]
        start = time.thread_time()
        for _ in range(n):
            step()
        samples[lib].append((time.thread_time() - start) / n)
    return samples


def quartiles(values):
    q1, median, q3 = statistics.quantiles(values, n=4)
    return median, q1, q3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="+", choices=sorted(run.WORKLOADS))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--libs", default="tinytorch,compiled,floor",
                        help="comma-separated, from " + ", ".join(run.LIBS))
    args = parser.parse_args()
    if run.torch is not None:
        run.torch.set_num_threads(1)
    libs = [lib.strip() for lib in args.libs.split(",")]
    print(f"CPU time per step (1 thread), {args.rounds} rounds; median [quartiles] of the "
          f"per-round ratios")
    for name in args.workloads:
        samples = paired(name, libs, args.rounds)
        times = ", ".join(f"{lib} {run._fmt_time(statistics.median(s))}" for lib, s in samples.items())
        print(f"{name}: {times}")
        for label, (top, bottom) in RATIOS.items():
            if top not in samples or any(b not in samples for b in bottom):
                continue
            ratios = [samples[top][i] / min(samples[b][i] for b in bottom)
                      for i in range(len(samples[top]))]
            median, q1, q3 = quartiles(ratios)
            print(f"  {label}: {median:.3f}x [{q1:.3f}-{q3:.3f}]")


if __name__ == "__main__":
    main()
