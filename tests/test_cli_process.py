"""The command as a process, as a hostile or unlucky user meets it: SIGTERM stops it as Ctrl-C
does (in the first epoch of every model kind, later on, during generate), files it must not
open (named pipes, folders), a write that fails, the permissions and names of what it writes,
output that cannot encode a file name, and the same BLAS settings for every command."""

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import cli_env, one_line_error, run_cli, start_cli, strict_json
from tinytorch.cli import main
from tinytorch.cli.runs import Terminated, deferred_interrupt, stop_signals_interrupt
from tinytorch.core.training import read_checkpoint

TINY = ["--dataset", "moons", "--epochs", "1", "--hidden", "8"]
# A GPT small enough to train a few steps in a fraction of a second.
GPT = ["--model", "gpt", "--embed-dim", "8", "--heads", "2", "--layers", "1", "--context", "16",
       "--batch-size", "4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Folders of a tiny MLP run and a tiny GPT run: {"mlp": path, "gpt": path}."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("runs")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", *TINY, "--out", str(folder / "mlp")]) == 0
        assert main(["train", *GPT, "--steps", "2", "--out", str(folder / "gpt")]) == 0
    return {"mlp": folder / "mlp", "gpt": folder / "gpt"}


# ----- stop signals -------------------------------------------------------------------------------

def _stop_after(process, prefix, signum):
    """Send ``signum`` once stdout shows a line starting with ``prefix``; (lines, stderr)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=60)
    return lines + out.splitlines(keepends=True), err


def _message(signum):
    return "tinytorch: interrupted" if signum == signal.SIGINT else "tinytorch: stopped by SIGTERM"


# options that make the first save far off, and the line printed as training starts
FIRST_EPOCH = {
    "mlp": (["--hidden", "2048", "--batch-size", "4"], "training "),
    "cnn": (["--model", "cnn", "--batch-size", "1"], "training "),
    "gpt": ([*GPT, "--steps", "100000", "--eval-interval", "100000"], "step "),
}


@pytest.mark.parametrize("kind, signum", [("mlp", signal.SIGTERM), ("cnn", signal.SIGTERM),
                                          ("gpt", signal.SIGTERM), ("cnn", signal.SIGINT)])
def test_a_stop_signal_in_the_first_epoch_exits_with_its_status_and_leaves_no_folder(
        tmp_path, kind, signum):
    out = tmp_path / "run"
    options, started = FIRST_EPOCH[kind]
    process = start_cli("train", *options, "--out", out)
    _, err = _stop_after(process, started, signum)
    assert process.returncode == 128 + signum                  # 143 for SIGTERM, 130 for Ctrl-C
    assert one_line_error(err, _message(signum)).endswith("; nothing was saved")
    assert not out.exists(), "not even the empty history.json that claimed the folder"


def test_sigterm_after_two_epochs_keeps_their_checkpoint_and_history(tmp_path):
    out = tmp_path / "run"
    process = start_cli("train", "--hidden", "256", "--batch-size", "8", "--out", out)
    lines, err = _stop_after(process, "epoch  2/", signal.SIGTERM)
    assert process.returncode == 143
    line = one_line_error(err, "tinytorch: stopped by SIGTERM")
    saved = read_checkpoint(out / "model.npz")["epoch"]
    assert saved >= 2 and f"epoch {saved} are in {out}" in line
    assert strict_json(out / "history.json")["epoch"] == list(range(1, saved + 1))
    assert sorted(os.listdir(out)) == ["history.json", "model.npz"], "no temporary file left"


def _wait_until_caught(process, signum, timeout=60):
    """Wait until the process has a handler for ``signum`` (read from /proc: Linux only)."""
    status = f"/proc/{process.pid}/status"
    if not os.path.exists(status):
        pytest.skip("needs /proc to see when the command's handlers are set")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(status) as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.05)
    pytest.fail(f"the command never caught signal {signum}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_generate_exits_with_its_status_in_one_line(runs, signum):
    process = start_cli("generate", runs["gpt"], "--tokens", "1000000")
    _wait_until_caught(process, signal.SIGTERM)                # main() has started
    time.sleep(1.0)                                            # ... and is generating
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert one_line_error(err, _message(signum)) == _message(signum)
    assert out == ""


def test_sigterm_while_files_are_written_waits_until_the_block_ends():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    events = []
    with pytest.raises(Terminated) as stop:
        with stop_signals_interrupt(), deferred_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            events.append("block finished")
    assert events == ["block finished"] and stop.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is restored"


def test_sigterm_with_its_default_action_still_ends_the_process_after_the_block(tmp_path):
    script = ("import os, signal, sys\n"
              "from tinytorch.cli.runs import deferred_interrupt\n"
              "with deferred_interrupt():\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    open(sys.argv[1], 'w').write('written')\n"
              "print('after the block')\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "file")],
                            capture_output=True, text=True, env=cli_env(), timeout=60)
    assert result.returncode == -signal.SIGTERM
    assert (tmp_path / "file").read_text() == "written" and result.stdout == ""


# ----- files it must not open, writes that fail ---------------------------------------------------

@pytest.mark.parametrize("argv, status, words", [
    (["evaluate", "{pipe_run}"], 1, "model.npz: not a tinytorch checkpoint (it is a named pipe"),
    (["generate", "{pipe_run}"], 1, "model.npz: not a tinytorch checkpoint (it is a named pipe"),
    (["evaluate", "{folder_run}"], 1, "model.npz: not a tinytorch checkpoint (it is a folder"),
    (["train", *TINY, "--out", "{pipe_run}", "--overwrite"], 2, "model.npz is a named pipe"),
    (["train", *TINY, "--out", "{pipe_run}/model.npz"], 2, "model.npz is a named pipe, not a "
                                                          "folder"),
    (["graph", "--hidden", "4", "--out", "{pipe_run}/model.npz.dot"], 1, "it is a named pipe"),
    (["profile", "--batch-size", "4", "--trace", "{pipe_run}/model.npz"], 1,
     "it is a named pipe"),
])
def test_a_named_pipe_or_folder_is_refused_without_waiting(tmp_path, argv, status, words):
    (tmp_path / "pipe").mkdir()
    os.mkfifo(tmp_path / "pipe" / "model.npz")
    os.mkfifo(tmp_path / "pipe" / "model.npz.dot")
    (tmp_path / "folder" / "model.npz").mkdir(parents=True)
    argv = [arg.format(pipe_run=tmp_path / "pipe", folder_run=tmp_path / "folder")
            for arg in argv]
    result = run_cli(*argv, timeout=60)
    assert result.returncode == status
    assert words in one_line_error(result.stderr)


def test_a_write_that_fails_names_the_file_and_leaves_nothing(tmp_path):
    def small_files():                          # writes past 4 KiB fail with EFBIG, as if full
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    out = tmp_path / "run"
    result = run_cli("train", "--dataset", "moons", "--epochs", "1", "--hidden", "64",
                     "--out", out, preexec_fn=small_files)
    assert result.returncode == 1
    line = one_line_error(result.stderr, "tinytorch: error:")
    assert "File too large" in line and f"{out / 'model.npz'}" in line
    assert not out.exists()


@pytest.mark.parametrize("argv, written", [
    (["graph", "--hidden", "4", "--out", "{tmp}/new/sub/graph.dot"], "new/sub/graph.dot"),
    (["profile", "--batch-size", "4", "--trace", "{tmp}/new/sub/trace.json"],
     "new/sub/trace.json"),
])
def test_a_write_that_fails_in_graph_or_profile_names_the_file_and_leaves_nothing(
        tmp_path, capsys, monkeypatch, argv, written):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)   # 'graph' writes DOT text
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN, "Python ignores it: EFBIG"
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))    # as if the disk were full
    try:
        status = main(argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert status == 1
    line = one_line_error(capsys.readouterr().err, "tinytorch: error:")
    assert line == f"tinytorch: error: {tmp_path / written}: File too large"
    assert os.listdir(tmp_path) == [], "neither a temporary file nor the folders made"


def test_an_os_error_is_one_line_naming_the_file_then_the_reason(tmp_path, capsys):
    missing = tmp_path / "nothing.npz"
    assert main(["evaluate", str(missing)]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        f"tinytorch: error: {missing}: No such file or directory")


def test_profile_trace_is_checked_before_profiling_and_its_folders_are_made(tmp_path, capsys):
    (tmp_path / "notes").write_text("a file")
    assert main(["profile", "--trace", str(tmp_path / "notes" / "trace.json")]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        f"tinytorch: error: {tmp_path / 'notes'} is a file, not a folder")
    assert main(["profile", "--trace", ""]) == 2
    assert one_line_error(capsys.readouterr().err, "tinytorch profile: error: argument --trace: "
                                                   "must name a file, got an empty string")
    assert main(["profile", "--batch-size", "4", "--trace",
                 str(tmp_path / "new" / "trace.json")]) == 0
    assert os.listdir(tmp_path / "new") == ["trace.json"]


def test_an_out_under_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes").write_text("a file")
    assert main(["train", *TINY, "--out", str(tmp_path / "notes" / "run")]) == 1
    line = one_line_error(capsys.readouterr().err, "tinytorch: error:")
    assert line.endswith(f"{tmp_path / 'notes'} is a file, not a folder")
    assert main(["graph", "--out", str(tmp_path / "notes" / "graph.dot")]) == 1
    line = one_line_error(capsys.readouterr().err, "tinytorch: error:")
    assert line.endswith(f"{tmp_path / 'notes'} is a file, not a folder")


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_every_file_a_command_writes_gets_the_permissions_the_umask_gives(
        tmp_path, umask, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)   # 'graph' writes DOT text
    previous = os.umask(umask)
    try:
        assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
        assert main(["graph", "--hidden", "4", "--out", str(tmp_path / "graph.dot")]) == 0
        assert main(["profile", "--batch-size", "4", "--trace",
                     str(tmp_path / "trace.json")]) == 0
    finally:
        os.umask(previous)
    files = [*(tmp_path / "run").iterdir(), tmp_path / "graph.dot", tmp_path / "trace.json"]
    assert {"model.npz", "history.json", "curves.png"} <= {path.name for path in files}
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in files}
    assert modes == {path.name: oct(0o666 & ~umask) for path in files}


def test_file_names_the_output_cannot_encode_are_escaped(tmp_path):
    env = cli_env(PYTHONIOENCODING="ascii")
    result = run_cli("train", *TINY, "--out", tmp_path / "rün", env=env)
    assert result.returncode == 0, result.stderr
    assert f"to {tmp_path}/r\\xfcn" in result.stdout
    result = run_cli("evaluate", tmp_path / "nöne", env=env)
    assert result.returncode == 1
    assert "n\\xf6ne" in one_line_error(result.stderr, "tinytorch: error:")


# ----- the same process settings for every command ------------------------------------------------

PROBE = """
import sys
from tinytorch.cli import main
from tinytorch.cli.runtime import blas_threads
status = main(sys.argv[1:])
print("threads", blas_threads(), "status", status)
"""


@pytest.mark.parametrize("argv", [
    ["evaluate", "{mlp}"],
    ["generate", "{gpt}", "--tokens", "5"],
    ["graph", "--hidden", "4", "--out", "{tmp}/graph.dot"],
    ["profile", "--batch-size", "4"],
    ["demo", "--steps", "1"],
])
def test_every_command_uses_one_blas_thread_unless_told_otherwise(runs, tmp_path, argv):
    from tinytorch.cli.runtime import blas_threads

    if not blas_threads():
        pytest.skip("no OpenBLAS reachable through ctypes in this NumPy")
    env = {name: value for name, value in cli_env().items()
           if name not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    argv = [arg.format(mlp=runs["mlp"], gpt=runs["gpt"], tmp=tmp_path) for arg in argv]
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "threads [1] status 0" in result.stdout
