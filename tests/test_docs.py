"""The guides in docs/ run as written: every ```python example runs, and what it prints matches
the ```text block under it, except for times (which vary by machine and load)."""

import pathlib

import pytest

from doc_blocks import examples, normalised, run

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = [(path, i, code, printed) for path in sorted(DOCS.glob("*.md"))
            for i, (code, printed) in enumerate(examples(path.read_text()))]


def test_the_autograd_guide_has_examples_with_their_output():
    guide = [e for e in EXAMPLES if e[0].name == "autograd.md"]
    assert len(guide) >= 11 and all(printed for *_, printed in guide)


@pytest.mark.parametrize("path, index, code, printed", EXAMPLES,
                         ids=[f"{e[0].name}-{e[1]}" for e in EXAMPLES])
def test_doc_example_prints_what_the_guide_shows(path, index, code, printed, tmp_path,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = run(code, f"{path.name} example {index}")
    if printed is not None:
        assert normalised(output) == normalised(printed)
