"""``tinytorch profile``: one training step of a model kind, its table, summary and trace."""

import json
import re

import pytest

from cli_helpers import one_line_error, run_cli
from tinytorch.cli import KINDS, build_parser, main
from tinytorch.cli.kinds import MLP


def test_profile_prints_the_table_and_the_summary_and_writes_a_trace(tmp_path, capsys):
    trace = tmp_path / "out.json"
    assert main(["profile", "--trace", str(trace)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("one training step of an MLP 64-128-128-10 on digits: batch 32, "
                           "adam, seed 0")
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if re.match(r"[A-Z][A-Za-z]+ +\d+ ", line)}
    # the default MLP: three Linear layers, two ReLUs, two dropouts
    assert rows["LinearBackward"][1:2] == ["3"] and rows["ReLUBackward"][1:2] == ["2"]
    assert rows["DropoutBackward"][1:2] == ["2"] and rows["CrossEntropyBackward"][1:2] == ["1"]
    assert re.search(r"^graph memory = \d+\.\dx parameter memory; backward took \d+\.\dx "
                     r"forward$", text, flags=re.M)
    assert "optimizer step (adam)" in text and str(trace) in text
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" and e["cat"] == "forward" for e in events) == 3 + 2 + 2 + 1


def test_profile_options(tmp_path, capsys):
    assert main(["profile", "--batch-size", "4", "--sort-by", "name", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "batch 4, adam, seed 3" in text
    table = text[text.index("Op "):].splitlines()
    names = [line.split()[0] for line in table[2:table.index(table[1], 2)]]
    assert names == sorted(names)


def test_profile_refuses_a_batch_larger_than_the_training_split(capsys):
    from tinytorch.cli.kinds import prepare_data

    assert main(["profile", "--batch-size", "5000"]) == 2
    line = one_line_error(capsys.readouterr().err, "tinytorch profile: error:")
    assert f"--batch-size: must be at most {len(prepare_data('digits', 0).train)}," in line


def test_profile_reports_an_unwritable_trace_in_one_line(tmp_path, capsys):
    (tmp_path / "notes").write_text("a file, where --trace wants a folder")
    assert main(["profile", "--trace", str(tmp_path / "notes" / "t.json")]) == 1
    one_line_error(capsys.readouterr().err, "tinytorch: error:")


def test_profile_runs_as_a_command():
    result = run_cli("profile", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    assert "graph memory = " in result.stdout and result.stderr == ""


def test_every_registered_kind_can_be_profiled(monkeypatch, capsys):
    """A kind added to KINDS (as cnn and gpt will be) is profiled through its graph_loss, with
    the batch limit of its graph_samples where it has one."""
    class Tiny(MLP):
        name, title = "tiny", "a tiny MLP"
        calls = []

        def graph_samples(self, config, data):
            return 10

        def graph_loss(self, config, data, model, batch_size):
            self.calls.append(batch_size)
            return super().graph_loss(config, data, model, batch_size)

    monkeypatch.setitem(KINDS, "tiny", Tiny())
    args = build_parser().parse_args(["profile", "--model", "tiny", "--batch-size", "6"])
    assert args.run(args) == 0
    assert Tiny.calls == [6, 6]                    # the warm-up step, then the profiled one
    assert "one training step of a tiny MLP" in capsys.readouterr().out
    args = build_parser().parse_args(["profile", "--model", "tiny", "--batch-size", "11"])
    with pytest.raises(ValueError, match="at most 10"):
        args.run(args)
