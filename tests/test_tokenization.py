"""Tokenizers: hand-computed merges, a textbook BPE as the oracle, exact round trips, unknown
characters, special tokens, save/load and the errors a user meets."""

import functools
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch as tt
import tinytorch.core.tokenization as tokenization
from tinytorch.core.tokenization import (
    BPETokenizer, CharTokenizer, Tokenizer, analyze_tokenization, create_tokenizer,
    tokenize_dataset,
)
from tinytorch.datasets import load_shakespeare

SETTINGS = settings(max_examples=60, deadline=None, database=None)


@functools.cache
def shakespeare():
    """The corpus (a function, not a fixture, so hypothesis never prints 1.1 MB of it)."""
    return load_shakespeare()


@pytest.fixture(scope="module")
def char_shakespeare():
    tok = CharTokenizer()
    tok.build_vocab(shakespeare())
    return tok


@pytest.fixture(scope="module")
def bpe_slice():
    """BPE trained on the first 100,000 characters, plus one text holding each of the corpus's
    65 characters once (so the whole corpus encodes); the full 1.1 MB run is measured by a
    script, not here."""
    tok = BPETokenizer(vocab_size=300)
    tok.train([shakespeare()[:100_000], "".join(sorted(set(shakespeare())))])
    return tok


# ----- a textbook BPE, the oracle: recount every pair after every merge -----------------------------
def reference_merge(tokens, pair):
    """Replace each occurrence of ``pair`` in the list of strings ``tokens``, left to right."""
    out, i = [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == pair:
            out.append(tokens[i] + tokens[i + 1])
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def reference_train(texts, target):
    """(vocab, merges) of the documented rule: the most frequent pair by positions, ties to the
    pair whose texts sort first, stop at ``target`` distinct strings or when no pair occurs twice."""
    sequences = [list(text) for text in texts]
    vocab = sorted(set("".join(texts)))
    merges = []
    while len(vocab) < target:
        counts = Counter(pair for seq in sequences for pair in zip(seq, seq[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        if counts[pair] < 2:
            break
        merges.append(pair)
        if pair[0] + pair[1] not in vocab:
            vocab.append(pair[0] + pair[1])
        sequences = [reference_merge(seq, pair) for seq in sequences]
    return vocab, merges


def reference_encode(text, merges):
    tokens = list(text)
    for pair in merges:
        tokens = reference_merge(tokens, pair)
    return tokens


# ----- CharTokenizer ---------------------------------------------------------------------------------
def test_char_vocab_is_the_sorted_distinct_characters():
    tok = CharTokenizer()
    tok.build_vocab("hello world")
    assert tok.vocab == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hold") == [3, 5, 4, 1]
    assert tok.char_to_id["w"] == 7 and tok.id_to_char[7] == "w"
    assert tok.unk_id is None


def test_char_corpus_list_is_the_union_of_its_texts():
    tok = CharTokenizer()
    tok.build_vocab(["ba", "c", ""])
    assert tok.vocab == ["a", "b", "c"]


def test_char_given_vocab_keeps_order_and_drops_duplicates():
    tok = CharTokenizer(["x", "b", "x", "a"])
    assert tok.vocab == ["x", "b", "a"]
    assert tok.encode("abx") == [2, 1, 0]


def test_char_build_vocab_replaces_the_given_vocab():
    tok = CharTokenizer(list("wxyz"))
    tok.build_vocab(["hola", "test"])
    assert "w" not in tok.char_to_id and "t" in tok.char_to_id


def test_char_unknown_character_raises_with_its_repr():
    tok = CharTokenizer()
    tok.build_vocab("abc")
    for char in ["\t", "é", "Z"]:
        with pytest.raises(ValueError) as info:
            tok.encode("ab" + char + "c")
        assert repr(char) in str(info.value)
        assert "index 2" in str(info.value)


def test_char_empty_vocabulary_says_to_build_it():
    with pytest.raises(ValueError, match="build_vocab"):
        CharTokenizer().encode("a")


def test_char_unk_token_gets_id_0_and_stands_for_unknown_characters():
    tok = CharTokenizer(unk_token="<unk>")
    tok.build_vocab("ba")
    assert tok.vocab == ["<unk>", "a", "b"] and tok.vocab_size == 3 and tok.unk_id == 0
    assert tok.encode("a?b!") == [1, 0, 2, 0]
    assert tok.decode([1, 0, 2]) == "a<unk>b"


def test_char_unk_token_given_in_vocab_is_not_duplicated():
    tok = CharTokenizer(["?", "a", "?"], unk_token="?")
    assert tok.vocab == ["?", "a"]


def test_char_rejects_multi_character_vocab_entries():
    with pytest.raises(ValueError, match="single characters.*'<UNK>'"):
        CharTokenizer(["<UNK>", "a"])


def test_char_shakespeare_has_65_ids_and_encodes_in_range(char_shakespeare):
    assert char_shakespeare.vocab_size == 65       # /work/shared/data/README.md: 65 distinct
    ids = np.array(char_shakespeare.encode(shakespeare()[:5000]))
    assert ids.min() >= 0 and ids.max() < 65


@SETTINGS
@given(data=st.data())
def test_char_round_trip_is_exact(char_shakespeare, data):
    text = data.draw(st.text(alphabet=char_shakespeare.vocab, max_size=300))
    assert char_shakespeare.decode(char_shakespeare.encode(text)) == text


def test_char_round_trip_of_whitespace_repeats_and_empty(char_shakespeare):
    for text in ["", "\n", "\n\n\n", "   ", " \n \n", "aaaaaaa", "ROMEO:\nO, she doth teach!"]:
        assert char_shakespeare.decode(char_shakespeare.encode(text)) == text


# ----- BPETokenizer: hand-computed merges -----------------------------------------------------------
def test_bpe_wikipedia_example():
    # "aaabdaaabac": ('a','a') occurs at 4 positions -> "aa"; then ('aa','a') and ('a','b')
    # both occur twice and ('a','b') sorts first -> "ab"; then ('aa','ab') twice -> "aaab";
    # then every pair occurs once, so training stops at 4 characters + 3 merges.
    tok = BPETokenizer(vocab_size=1000)
    tok.train("aaabdaaabac")
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.vocab == ["a", "b", "c", "d", "aa", "ab", "aaab"]
    assert tok.vocab_size == 7
    assert [tok.vocab[i] for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c"]


@pytest.mark.parametrize("vocab_size, merges", [
    (4, []), (5, [("a", "a")]), (6, [("a", "a"), ("a", "b")]),
])
def test_bpe_stops_at_the_requested_vocab_size(vocab_size, merges):
    tok = BPETokenizer(vocab_size=vocab_size)
    tok.train("aaabdaaabac")
    assert tok.merges == merges and tok.vocab_size == vocab_size


def test_bpe_stops_early_when_no_pair_occurs_twice():
    tok = BPETokenizer(vocab_size=1000)
    tok.train("abcd")
    assert tok.merges == [] and tok.vocab_size == 4 and tok.target_vocab_size == 1000


def test_bpe_request_below_the_alphabet_keeps_every_character():
    tok = BPETokenizer(vocab_size=2)
    tok.train(["abcdef"])
    assert tok.vocab_size == 6 and tok.target_vocab_size == 2
    assert tok.decode(tok.encode("fedcba")) == "fedcba"


def test_bpe_run_of_one_character_merges_left_to_right():
    # "aaaa": ('a','a') at 3 positions -> "aa" "aa"; ('aa','aa') then occurs once: stop.
    tok = BPETokenizer(vocab_size=1000)
    tok.train("aaaa")
    assert tok.vocab == ["a", "aa"]
    assert tok.encode("aaaaa") == [1, 1, 0]


def test_bpe_merges_never_span_two_texts():
    joined = BPETokenizer(vocab_size=1000)
    joined.train("ab" * 5)
    assert ("a", "b") in joined.merges
    separate = BPETokenizer(vocab_size=1000)
    separate.train(["a", "b"] * 5)                 # 'a' never meets 'b' inside one text
    assert separate.merges == [] and separate.vocab_size == 2


def test_bpe_list_corpus_merges_only_pairs_inside_texts():
    # ('x','a') and ('b','y') occur 3 times each ('b','y' sorts first); ('a','b') only across texts.
    tok = BPETokenizer(vocab_size=1000)
    tok.train(["xa", "by"] * 3)
    assert tok.merges == [("b", "y"), ("x", "a")]
    assert [tok.vocab[i] for i in tok.encode("xaby")] == ["xa", "by"]


@settings(max_examples=150, deadline=None, database=None)
@given(texts=st.lists(st.text(alphabet="ab c", max_size=40), min_size=1, max_size=4),
       target=st.integers(1, 40), probe=st.text(alphabet="ab c", max_size=40))
def test_bpe_matches_the_textbook_algorithm(texts, target, probe):
    vocab, merges = reference_train(texts, target)
    tok = BPETokenizer(vocab_size=target)
    tok.train(texts)
    assert tok.merges == merges
    assert tok.vocab == vocab
    assert tok.vocab_size == len(set("".join(texts))) + len(tok.merges), "each merge: a new token"
    for text in texts + [probe] if set(probe) <= set("".join(texts)) else texts:
        assert [tok.vocab[i] for i in tok.encode(text)] == reference_encode(text, merges)
        assert tok.decode(tok.encode(text)) == text


# ----- BPETokenizer on Shakespeare ------------------------------------------------------------------
def test_bpe_slice_reaches_its_vocab_size_and_compresses(bpe_slice):
    assert bpe_slice.vocab_size == 300
    text = shakespeare()[:100_000]
    ids = bpe_slice.encode(text)
    assert all(0 <= i < 300 for i in ids)
    assert len(ids) < 0.6 * len(text), "300 tokens should cut the length well below 1 per char"


@SETTINGS
@given(data=st.data())
def test_bpe_round_trip_of_random_text_over_the_alphabet(bpe_slice, data):
    alphabet = [t for t in bpe_slice.vocab if len(t) == 1]
    text = data.draw(st.text(alphabet=alphabet, max_size=300))
    assert bpe_slice.decode(bpe_slice.encode(text)) == text


@SETTINGS
@given(start=st.integers(0, 1_115_000), length=st.integers(0, 2000))
def test_bpe_round_trip_of_corpus_passages(bpe_slice, start, length):
    text = shakespeare()[start:start + length]     # beyond the training slice too
    assert bpe_slice.decode(bpe_slice.encode(text)) == text


def test_bpe_round_trip_of_whitespace_repeats_and_empty(bpe_slice):
    for text in ["", " ", "\n", "\n\n\n\n", "    ", "e e e e e", "ttttttttt", ":\n\n:\n"]:
        assert bpe_slice.decode(bpe_slice.encode(text)) == text


# ----- unknown characters, unk_token, special tokens ------------------------------------------------
def test_bpe_unknown_character_raises_with_its_repr(bpe_slice):
    with pytest.raises(ValueError) as info:
        bpe_slice.encode("Romeo\tand")
    assert repr("\t") in str(info.value)


def test_bpe_unk_token_gets_id_0():
    # "abab": ('a','b') occurs twice -> "ab"; ('ab','ab') then once: stop.
    tok = BPETokenizer(vocab_size=100, unk_token="<unk>")
    tok.train("abab")
    assert tok.vocab == ["<unk>", "a", "b", "ab"] and tok.unk_id == 0
    assert tok.encode("abzab") == [3, 0, 3]
    assert tok.decode(tok.encode("abzab")) == "ab<unk>ab"
    assert tok.encode("<unk>") == [0], "the unk_token's own text encodes to it"


def test_bpe_special_tokens_get_their_own_ids_and_are_never_merged():
    # Pieces "abab", "abab": ('a','b') 4 times -> "ab"; ('ab','ab') twice -> "abab"; stop.
    tok = BPETokenizer(vocab_size=100, special_tokens=["<|s|>"])
    tok.train("abab<|s|>abab")
    assert tok.vocab == ["<|s|>", "a", "b", "ab", "abab"]
    assert tok.encode("abab<|s|>ab<|s|>") == [4, 0, 3, 0]
    assert tok.decode(tok.encode("ab<|s|><|s|>abab")) == "ab<|s|><|s|>abab"
    assert all("<" not in left + right for left, right in tok.merges)


def test_bpe_special_tokens_are_validated():
    with pytest.raises(ValueError, match="distinct"):
        BPETokenizer(special_tokens=["<s>", "<s>"])
    with pytest.raises(ValueError, match="non-empty"):
        BPETokenizer(special_tokens=[""])
    with pytest.raises(TypeError, match="list of str"):
        BPETokenizer(special_tokens="<s>")


# ----- vocab_size, corpus and encode arguments ------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_bpe_rejects_bad_vocab_size(bad):
    with pytest.raises(ValueError, match="positive integer"):
        BPETokenizer(vocab_size=bad)
    tok = BPETokenizer(10)
    if bad is not None:                           # train(vocab_size=None) keeps the target
        with pytest.raises(ValueError, match="positive integer"):
            tok.train("abc", vocab_size=bad)


def test_bpe_untrained_has_no_ids_and_says_to_train():
    tok = BPETokenizer()
    assert tok.vocab_size == 0 and tok.encode("") == []
    with pytest.raises(ValueError, match="train"):
        tok.encode("a")


@pytest.mark.parametrize("make", [CharTokenizer, BPETokenizer])
def test_corpus_must_be_str_or_list_of_str(make):
    tok = make()
    train = tok.build_vocab if make is CharTokenizer else tok.train
    with pytest.raises(TypeError, match="bytes"):
        train(b"abc")
    with pytest.raises(TypeError, match=r"corpus\[1\] must be a str, got int"):
        train(["abc", 3])
    with pytest.raises(TypeError, match="encode expects a str"):
        tok.encode(["abc"])


# ----- decode's argument -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [CharTokenizer, BPETokenizer])
def test_decode_accepts_lists_arrays_and_tensors(make):
    tok = make()
    (tok.build_vocab if make is CharTokenizer else tok.train)("abc")
    assert tok.decode([2, 0, 1]) == "cab"
    assert tok.decode((2, 0)) == "ca"
    assert tok.decode(np.array([1, 2], dtype=np.uint8)) == "bc"
    assert tok.decode(np.array([0.0, 2.0])) == "ac"
    assert tok.decode(tt.Tensor([2, 1])) == "cb"            # float32 by default
    assert tok.decode([]) == ""


@pytest.mark.parametrize("ids, error, words", [
    ([0, 3], IndexError, "token id 3 at index 1"),
    ([-1], IndexError, "token id -1"),
    ([0, 2**70], IndexError, "out of range"),
    ([0, 1.5], TypeError, "integers"),
    ([float("nan")], TypeError, "integers"),
    ([True, False], TypeError, "dtype bool"),
    (["a"], TypeError, "integers"),
    ([[0, 1], [1, 2]], ValueError, r"shape \(2, 2\)"),
    ("abc", TypeError, "sequence of token ids"),
    (3, TypeError, "sequence of token ids"),
])
def test_decode_errors_name_the_problem(ids, error, words):
    tok = CharTokenizer(list("abc"))
    with pytest.raises(error, match=words):
        tok.decode(ids)


# ----- save and load -----------------------------------------------------------------------------------
def test_bpe_save_load_gives_an_identical_tokenizer(bpe_slice, tmp_path):
    path = tmp_path / "bpe.json"
    bpe_slice.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe"
    loaded = BPETokenizer.load(path)
    assert type(loaded) is BPETokenizer
    assert loaded.vocab_size == bpe_slice.vocab_size and loaded.vocab == bpe_slice.vocab
    assert loaded.merges == bpe_slice.merges
    text = shakespeare()[500_000:520_000]
    ids = bpe_slice.encode(text)
    assert loaded.encode(text) == ids
    assert loaded.decode(ids) == bpe_slice.decode(ids) == text


def test_bpe_save_load_keeps_special_and_unknown_tokens(tmp_path):
    tok = BPETokenizer(vocab_size=50, special_tokens=["<|end|>"], unk_token="<unk>")
    tok.train(["héllo wörld<|end|>héllo", "wörld"])
    tok.save(tmp_path / "t.json")
    assert "héllo" in (tmp_path / "t.json").read_text(encoding="utf-8") or \
        "é" in (tmp_path / "t.json").read_text(encoding="utf-8"), "UTF-8, not \\u escapes"
    loaded = Tokenizer.load(tmp_path / "t.json")
    text = "wörld<|end|>héllo?"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.vocab == tok.vocab and loaded.unk_id == 0 and loaded.special_tokens == ["<|end|>"]


def test_char_save_load_gives_an_identical_tokenizer(char_shakespeare, tmp_path):
    char_shakespeare.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["type"] == "char"
    loaded = CharTokenizer.load(tmp_path / "c.json")
    assert loaded.vocab == char_shakespeare.vocab and loaded.vocab_size == 65
    assert loaded.encode("To be, or not") == char_shakespeare.encode("To be, or not")
    with_unk = CharTokenizer(list("ab"), unk_token="<unk>")
    with_unk.save(tmp_path / "u.json")
    again = Tokenizer.load(tmp_path / "u.json")
    assert isinstance(again, CharTokenizer) and again.encode("abz") == [1, 2, 0]


def test_load_with_the_wrong_class_names_the_kind(char_shakespeare, bpe_slice, tmp_path):
    char_shakespeare.save(tmp_path / "c.json")
    bpe_slice.save(tmp_path / "b.json")
    with pytest.raises(ValueError, match="'char' tokenizer.*CharTokenizer.load"):
        BPETokenizer.load(tmp_path / "c.json")
    with pytest.raises(ValueError, match="'bpe' tokenizer.*BPETokenizer.load"):
        CharTokenizer.load(tmp_path / "b.json")


def _bpe_file(**changes):
    data = {"type": "bpe", "version": 1, "target_vocab_size": 10, "unk_token": None,
            "special_tokens": [], "alphabet": ["a", "b"], "merges": [["a", "b"]]}
    data.update(changes)
    return {k: v for k, v in data.items() if v != "<drop>"}


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00", "not UTF-8 JSON"),
    (b"{\"type\": \"bpe\",", "not UTF-8 JSON"),
    (b"[" * 100_000, "not UTF-8 JSON"),
    (b"[1, 2]", "JSON object"),
    (_bpe_file(type="wordpiece"), "'type'"),
    (_bpe_file(version=99), "newer"),
    (_bpe_file(version="1"), "'version'"),
    (_bpe_file(merges="<drop>"), "'merges' is missing"),
    (_bpe_file(merges="ab"), "'merges' has the wrong type"),
    (_bpe_file(merges=[["a"]]), r"'merges'\[0\] must be a pair of strings"),
    (_bpe_file(merges=[["a", "b"], ["ab", "zz"]]), r"'merges'\[1\].*not a token"),
    (_bpe_file(merges=[["a", "b"], ["a", "b"]]), "'ab', a token made before it"),
    (_bpe_file(alphabet=["ab"]), "single character"),
    (_bpe_file(alphabet=["b", "a"]), "code-point order"),
    (_bpe_file(alphabet=[1]), "single character"),
    (_bpe_file(target_vocab_size=0), "positive integer"),
    (_bpe_file(target_vocab_size=True), "'target_vocab_size' has the wrong type"),
    (_bpe_file(unk_token=""), "unk_token"),
    (_bpe_file(special_tokens=[7]), "special_tokens"),
    (_bpe_file(special_tokens=["a"]), "repeats the unk_token or a special token"),
    ({"type": "char", "version": 1, "unk_token": None, "characters": ["a", "a"]}, "twice"),
    ({"type": "char", "version": 1, "unk_token": None, "characters": ["ab"]}, "single character"),
    ({"type": "char", "version": 1, "characters": []}, "'unk_token' is missing"),
])
def test_load_rejects_bad_files_with_one_clear_error(tmp_path, content, words):
    path = tmp_path / "tok.json"
    if isinstance(content, dict):
        content = json.dumps(content).encode()
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words) as info:
        Tokenizer.load(path)
    assert str(path) in str(info.value)


def test_load_refuses_oversized_files_unread(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_bpe_file()))
    monkeypatch.setattr(tokenization, "MAX_FILE_BYTES", 20)
    with pytest.raises(ValueError, match="larger than 20 bytes"):
        BPETokenizer.load(path)


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        BPETokenizer.load(tmp_path / "nope.json")


# ----- TinyTorch's curriculum usage -------------------------------------------------------------------
def test_curriculum_attributes_and_helpers():
    corpus = ["hello world", "test text"]
    char = create_tokenizer("char", corpus=corpus)
    assert isinstance(char, CharTokenizer) and char.vocab_size == len(set("".join(corpus)))
    bpe = create_tokenizer("bpe", vocab_size=50, corpus=corpus)
    assert isinstance(bpe, BPETokenizer) and bpe.target_vocab_size == 50
    assert set(bpe.token_to_id) == set(bpe.vocab) and bpe.id_to_token[0] == bpe.vocab[0]
    assert tokenize_dataset(["hello", "test"], char, max_length=3) == [
        char.encode("hel"), char.encode("tes")]
    assert tokenize_dataset(["test"], char, max_length=0) == [[]]
    with pytest.raises(ValueError, match="max_length"):
        tokenize_dataset(["test"], char, max_length=-1)
    stats = analyze_tokenization(["hello", "world"], char)
    assert stats["total_tokens"] == 10 and stats["compression_ratio"] == 1.0
    assert stats["max_sequence_length"] == 5 and stats["unique_tokens"] == 7
    with pytest.raises(ValueError, match="strategy"):
        create_tokenizer("wordpiece")


def test_curriculum_bpe_usage_round_trips():
    tok = BPETokenizer(vocab_size=20)
    tok.train(["low lower low lowest"])
    assert tok.merges
    assert tok.decode(tok.encode("low lower")) == "low lower"
    tok.train(["hello"], vocab_size=1000)         # retraining replaces the merges
    assert tok.vocab_size == len(tok.vocab) == 4 and tok.merges == []


def test_base_tokenizer_is_an_interface():
    with pytest.raises(NotImplementedError, match="CharTokenizer or BPETokenizer"):
        Tokenizer().encode("abc")


def test_package_root_exports_the_tokenizers():
    assert tt.CharTokenizer is CharTokenizer and tt.BPETokenizer is BPETokenizer
