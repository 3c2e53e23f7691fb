"""Runs are never lost: a folder of their own, Ctrl-C and divergence keep the last good epoch,
a failed or refused run leaves nothing behind, a closed pipe ends quietly."""

import os
import signal
import subprocess
import threading

import numpy as np
import pytest

from cli_helpers import (cli_env, command, one_line_error, overflow_adam_at, run_cli,
                         start_cli, strict_json)
from tinytorch.cli import main
from tinytorch.cli.runs import RunFolder, deferred_interrupt, write_json
from tinytorch.core.training import read_checkpoint

TINY = ["--dataset", "moons", "--epochs", "2", "--hidden", "8"]


def _folders(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# ----- a folder of its own ------------------------------------------------------------------------

def test_back_to_back_runs_in_the_same_second_get_folders_of_their_own(
        tmp_path, monkeypatch, capsys):
    import tinytorch.cli.runs as runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-120000")
    for seed in (1, 2, 3):
        assert main(["train", *TINY, "--seed", str(seed)]) == 0
    assert _folders(tmp_path / "runs") == ["20260101-120000", "20260101-120000-2",
                                           "20260101-120000-3"]
    seeds = [strict_json(tmp_path / "runs" / name / "history.json")["config"]["seed"]
             for name in _folders(tmp_path / "runs")]
    assert seeds == [1, 2, 3], "each run keeps its own files"
    assert "to runs/20260101-120000-3" in capsys.readouterr().out


def test_runs_started_at_the_same_moment_get_folders_of_their_own(tmp_path):
    processes = [subprocess.Popen(command("train", *TINY, "--seed", seed), cwd=tmp_path,
                                  env=cli_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    folders = _folders(tmp_path / "runs")
    assert len(folders) == 2, folders
    seeds = sorted(strict_json(tmp_path / "runs" / name / "history.json")["config"]["seed"]
                   for name in folders)
    assert seeds == [1, 2]


def test_claims_of_one_timestamp_from_many_threads_are_all_distinct(tmp_path):
    claimed, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        claimed.append(RunFolder.claim(base=str(tmp_path / "runs"), stamp="same").path)
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8
    assert len(_folders(tmp_path / "runs")) == 8


def test_out_that_holds_a_run_is_refused_naming_the_overwrite_option(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in _folders(out)}
    capsys.readouterr()
    assert main(["train", *TINY, "--seed", "5", "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err, "tinytorch train: error:")
    assert "--overwrite" in line and "already holds a run" in line
    assert {name: (out / name).read_bytes() for name in _folders(out)} == before


def test_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert main(["train", *TINY, "--seed", "5", "--out", str(out), "--overwrite"]) == 0
    assert strict_json(out / "history.json")["config"]["seed"] == 5
    assert read_checkpoint(out / "model.npz")["metadata"]["config"]["seed"] == 5


def test_overwrite_keeps_the_old_run_when_the_new_one_saves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in _folders(out)}
    assert main(["train", *TINY, "--lr", "1e10", "--out", str(out), "--overwrite"]) == 1
    assert {name: (out / name).read_bytes() for name in _folders(out)} == before


def test_a_diverged_run_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--lr", "1e10", "--out", "new/nested/run"]) == 1
    assert main(["train", *TINY, "--lr", "1e10"]) == 1             # into runs/<timestamp>
    assert _folders(tmp_path) == [], "neither --out, its parents nor runs/ are left behind"


@pytest.mark.parametrize("bad", [["--hidden", "0"], ["--dataset", "mnist"], ["--lr", "inf"]])
def test_a_refused_run_leaves_no_folder_behind(tmp_path, monkeypatch, capsys, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, *bad, "--out", "new/nested/run"])
    assert exit_info.value.code == 2
    assert _folders(tmp_path) == []


def test_unwritable_out_is_a_one_line_error_with_status_1(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["train", *TINY, "--out", str(blocker / "run")]) == 1
    assert "a-file" in one_line_error(capsys.readouterr().err, "tinytorch: error:")


# ----- Ctrl-C -------------------------------------------------------------------------------------

def _interrupt_after(process, prefix):
    """Send SIGINT once stdout shows a line starting with ``prefix``; the lines read."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=60)
    return lines + out.splitlines(keepends=True), err


def test_ctrl_c_during_training_keeps_the_last_completed_epoch(tmp_path):
    out = tmp_path / "run"
    process = start_cli("train", "--hidden", "256", "--batch-size", "8", "--out", out)
    lines, err = _interrupt_after(process, "epoch  2/")
    assert process.returncode == 130
    line = one_line_error(err, "tinytorch: interrupted")
    saved = read_checkpoint(out / "model.npz")["epoch"]
    assert saved >= 2 and f"epoch {saved} are in {out}" in line
    history = strict_json(out / "history.json")
    assert history["epoch"] == list(range(1, saved + 1)), "checkpoint and history agree"
    printed = [l for l in lines if l.startswith("epoch ")]
    assert len(printed) in (saved - 1, saved), "nothing after the interrupt was saved"
    result = run_cli("evaluate", out)
    assert result.returncode == 0 and f"trained {saved} epochs" in result.stdout


def test_ctrl_c_before_the_first_epoch_prints_no_traceback_and_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    process = start_cli("train", "--hidden", "2048", "--batch-size", "4", "--out", out)
    _, err = _interrupt_after(process, "training ")
    assert process.returncode == 130
    assert "nothing was saved" in one_line_error(err, "tinytorch: interrupted")
    assert not out.exists()


def test_ctrl_c_while_files_are_written_waits_until_the_block_ends():
    events = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            events.append("block finished")
    assert events == ["block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ----- divergence -------------------------------------------------------------------------------

def test_diverging_training_stops_with_one_line_and_status_1(tmp_path):
    result = run_cli("train", "--dataset", "moons", "--lr", "1e10", "--out", tmp_path / "run")
    assert result.returncode == 1
    line = one_line_error(result.stderr, "tinytorch: error: training diverged")
    for words in ("epoch 1", "step", "exp_avg_sq", "inf", "lower --lr", "nothing was saved"):
        assert words in line, words
    assert not (tmp_path / "run").exists()


def test_divergence_after_two_epochs_keeps_their_checkpoint(tmp_path, capsys, monkeypatch):
    overflow_adam_at(monkeypatch, 50)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "moons", "--hidden", "8", "--out", str(out)]) == 1
    line = one_line_error(capsys.readouterr().err, "tinytorch: error:")
    assert "epoch 3 at step 50" in line and "exp_avg_sq" in line and "0.weight" in line
    assert f"epoch 2 are in {out}" in line
    assert read_checkpoint(out / "model.npz")["epoch"] == 2
    assert strict_json(out / "history.json")["epoch"] == [1, 2]


def test_large_losses_print_in_fixed_width_columns(tmp_path, capsys):
    assert main(["train", "--dataset", "moons", "--hidden", "16", "--epochs", "3",
                 "--lr", "1e9", "--out", str(tmp_path / "run")]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch ")]
    assert any("e+2" in l for l in lines), "the losses of this run are about 1e26"
    assert len({len(l) for l in lines}) == 1
    assert len({tuple(i for i, c in enumerate(l) if c == "|") for l in lines}) == 1


def test_history_json_is_strict_json(tmp_path):
    path = tmp_path / "history.json"
    write_json(path, {"loss": [0.5, float("nan"), float("inf"), -float("inf")],
                      "accuracy": np.float32(0.25), "nested": {"x": (float("nan"),)}})
    assert strict_json(path) == {"loss": [0.5, None, None, None], "accuracy": 0.25,
                                 "nested": {"x": [None]}}


# ----- broken pipes -----------------------------------------------------------------------------

def test_training_piped_into_head_stops_quietly_and_keeps_its_epochs(tmp_path):
    out = tmp_path / "run"
    pipeline = f"{' '.join(command('train', '--dataset', 'moons', '--out', out))} | head -3"
    result = subprocess.run(["bash", "-c", f"{pipeline}; exit ${{PIPESTATUS[0]}}"],
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert len(result.stdout.splitlines()) == 3
    assert result.returncode == 1
    line = one_line_error(result.stderr, "tinytorch: output closed")
    assert "Broken pipe" not in line and f"are in {out}" in line
    assert read_checkpoint(out / "model.npz")["epoch"] >= 2


@pytest.mark.parametrize("argv", [["demo"], ["train", *TINY]])
def test_a_closed_stdout_ends_with_status_1_and_no_traceback(tmp_path, argv):
    process = start_cli(*argv, cwd=tmp_path)
    process.stdout.close()                    # nobody reads: every write hits a broken pipe
    err = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err
    if argv[0] == "demo":
        assert err == ""
    else:
        assert "output closed" in one_line_error(err, "tinytorch: output closed")


def test_one_explicit_out_claimed_at_the_same_moment_goes_to_one_run(tmp_path):
    from tinytorch.cli.options import UsageError

    results, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        try:
            results.append(RunFolder.claim(str(tmp_path / "shared")).path)
        except UsageError as error:
            results.append(error)
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, str) for r in results) == 1
    assert all("already holds a run" in str(r) for r in results if not isinstance(r, str))
