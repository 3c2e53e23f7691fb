"""What the Trainer's divergence check (``check_finite=True``) costs per training step.

Times, on the model of ``tinytorch train`` with its defaults (digits, MLP 64-128-128-10, Adam,
batch 32): the check alone (the code ``Trainer`` runs each step: the gradients before the
optimizer step, the optimizer's state after it; the loss check is one ``math.isfinite``), and
a whole training step with the check off, each as the minimum of repeated timings, reported
as min / median / max over ``--rounds`` rounds.

    OPENBLAS_NUM_THREADS=1 python benchmarks/divergence_check.py --rounds 15
"""

import argparse
import statistics
import time
import timeit

import tinytorch as tt
from tinytorch.cli.kinds import MLP, make_optimizer, prepare_data
from tinytorch.core.dataloader import DataLoader
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.training import Trainer, _all_finite, _array, _parameters, _state_arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds

    kind, data = MLP(), prepare_data("digits", seed=0)
    tt.manual_seed(0)
    model = kind.build({"hidden": 128, "hidden_layers": 2, "dropout": 0.1}, data)
    trainer = Trainer(model, make_optimizer("adam", model.parameters(), 2e-3),
                      CrossEntropyLoss(), check_finite=False)
    loader = DataLoader(data.train, batch_size=32, shuffle=True, seed=0)
    trainer.train_epoch(loader)                       # Adam's state exists from here on
    inputs, targets = next(iter(loader))
    CrossEntropyLoss()(model(inputs), targets).backward()
    optimizer = trainer.optimizer

    def check():                                       # what _update adds per step
        params = _parameters(optimizer, model)
        _all_finite([_array(p.grad) for p in params if p.grad is not None])
        _all_finite(_state_arrays(optimizer))

    arrays = (len(list(model.parameters())), len(_state_arrays(optimizer)))
    checks, steps = [], []
    for _ in range(rounds):
        checks.append(min(timeit.repeat(check, number=200, repeat=5)) / 200)
        start, first = time.perf_counter(), trainer.step
        trainer.train_epoch(loader)
        steps.append((time.perf_counter() - start) / (trainer.step - first))
    print(f"{arrays[0]} gradients + {arrays[1]} optimizer state arrays checked per step")
    for name, values in (("check", checks), ("step without the check", steps)):
        values = sorted(v * 1e6 for v in values)
        print(f"{name:24s} min {values[0]:7.1f}  median {statistics.median(values):7.1f}  "
              f"max {values[-1]:7.1f} us")
    ratios = sorted(c / s for c, s in zip(checks, steps))
    print(f"check / step             min {ratios[0]:7.1%}  median {statistics.median(ratios):7.1%}"
          f"  max {ratios[-1]:7.1%}")


if __name__ == "__main__":
    main()
