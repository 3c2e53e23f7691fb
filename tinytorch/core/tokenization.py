"""Tokenizers turn text into integer ids and back: one id per character, or byte-pair merges.

>>> from tinytorch.core.tokenization import BPETokenizer, CharTokenizer
>>> chars = CharTokenizer()
>>> chars.build_vocab("hello world")
>>> chars.vocab_size, chars.encode("hold")
(8, [3, 5, 4, 1])
>>> bpe = BPETokenizer(vocab_size=100)
>>> bpe.train("aaabdaaabac")              # the example of Wikipedia's "Byte pair encoding"
>>> bpe.merges                            # then no pair occurs twice, so training stops early
[('a', 'a'), ('a', 'b'), ('aa', 'ab')]
>>> bpe.vocab_size, bpe.encode("aaabdaaabac")
(7, [6, 3, 6, 0, 2])
>>> bpe.decode([6, 3, 6, 0, 2])
'aaabdaaabac'

A ``corpus`` is a str or a list of str; each string is a separate text, and no token or merge
ever spans two of them. Encoding is exact: ``decode(encode(s)) == s`` for every text made of
the characters the tokenizer was built from (whitespace and newlines included).
``tok.save(path)`` writes UTF-8 JSON (``{"type": "char"|"bpe", ...}``) and
``CharTokenizer.load(path)`` / ``BPETokenizer.load(path)`` (or ``Tokenizer.load``, which reads
either kind) give back a tokenizer with the same ``encode``, ``decode`` and ``vocab_size``.
"""

import heapq
import json
import numbers
import os
import re

import numpy as np

from tinytorch.core.serialization import open_regular, parse_json, write_atomically

FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 2**20        # a tokenizer file larger than this is refused unread


class Tokenizer:
    """The interface of every tokenizer: ``encode(text) -> list[int]``, ``decode(ids) -> str``.

    ``vocab[i]`` is the text of id ``i``; ``vocab_size == len(vocab)`` and every id ``encode``
    returns lies in ``[0, vocab_size)``. Subclasses define ``encode``, ``to_dict`` and
    ``from_dict``; decoding (look up each id, concatenate), saving and loading are shared.
    """

    kind = None                      # the "type" field of the saved JSON

    def __init__(self):
        self.vocab = []

    @property
    def vocab_size(self):
        """The number of ids: the size of the embedding table a model needs."""
        return len(self.vocab)

    def encode(self, text):
        raise NotImplementedError(
            f"{type(self).__name__}.encode: Tokenizer is the interface; use CharTokenizer or "
            "BPETokenizer")

    def decode(self, ids):
        """The text of a 1-D sequence of ids (list, tuple, NumPy array or Tensor).

        Float ids holding integral values are accepted (a Tensor of ids is float32 by default).
        Raises IndexError for an id outside ``[0, vocab_size)``, TypeError for ids that are not
        integers (bools, strings, 1.5) and ValueError for a sequence that is not 1-D.
        """
        vocab = self.vocab
        return "".join([vocab[i] for i in _check_ids(ids, len(vocab))])

    # ----- saving and loading ------------------------------------------------------------------
    def to_dict(self):
        """Everything needed to rebuild this tokenizer, as JSON-able dicts, lists and strings."""
        raise NotImplementedError(f"{type(self).__name__} must define to_dict")

    @classmethod
    def from_dict(cls, data):
        """The tokenizer described by ``data`` (as :meth:`to_dict` writes it).

        ``Tokenizer.from_dict`` builds whichever kind ``data["type"]`` names; a subclass only
        its own. Raises ValueError naming the first field that is missing or malformed.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a tokenizer is described by a JSON object, got "
                             f"{type(data).__name__}")
        kinds = {sub.kind: sub for sub in (CharTokenizer, BPETokenizer)}
        kind = data.get("type")
        if kind not in kinds:
            raise ValueError(f"'type' must be one of {sorted(kinds)}, got {_short(kind)}")
        if cls is not Tokenizer and kind != cls.kind:
            raise ValueError(f"it holds a {kind!r} tokenizer, not a {cls.kind!r} one; load it "
                             f"with {kinds[kind].__name__}.load (or Tokenizer.load)")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"'version' must be a positive integer, got {_short(version)}")
        if version > FORMAT_VERSION:
            raise ValueError(f"written by a newer tinytorch (format version {_short(version)}; "
                             f"this one reads up to {FORMAT_VERSION})")
        return kinds[kind]._from_fields(data)

    def save(self, path):
        """Write this tokenizer to ``path`` as UTF-8 JSON (via a temporary file, so an
        interrupted save never leaves half a file)."""
        data = self.to_dict()
        try:
            text = json.dumps(data, ensure_ascii=False, indent=1)
            text.encode("utf-8")
        except UnicodeEncodeError:   # lone surrogates have no UTF-8 form: escape them
            text = json.dumps(data, ensure_ascii=True, indent=1)
        with write_atomically(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    @classmethod
    def load(cls, path):
        """The tokenizer :meth:`save` wrote to ``path``.

        The file is untrusted input: it is refused unread above ``MAX_FILE_BYTES``, and any
        content that is not a valid tokenizer of this kind raises one ValueError naming the
        file and the problem (a missing file raises FileNotFoundError).
        """
        path = os.fspath(path)
        with open_regular(path, "tokenizer file") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a tokenizer file")
        try:
            data = parse_json(raw.decode("utf-8"))
        except ValueError as error:             # UnicodeDecodeError is a ValueError too
            raise ValueError(f"{path}: not a tokenizer file (not UTF-8 JSON: {error})") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: not a valid tokenizer file: {error}") from None


class CharTokenizer(Tokenizer):
    """One id per character: ``vocab[i]`` is a single character.

    ``CharTokenizer(vocab=None, unk_token=None)``: ``vocab`` is an iterable of characters
    (duplicates dropped, order kept); :meth:`build_vocab` replaces it by the sorted distinct
    characters of a corpus. With ``unk_token=None`` encoding a character outside the vocabulary
    raises a ValueError whose message contains ``repr(char)``; with ``unk_token='<unk>'`` that
    token gets id 0 (the characters follow from id 1) and unknown characters encode to it, so
    ``decode`` gives the token's text in their place.

    Attributes (read them; rebuild to change them): ``vocab`` (list of str), ``char_to_id``,
    ``id_to_char`` (dicts), ``unk_token``, ``unk_id`` (0, or None without an unknown token).

    >>> tok = CharTokenizer(unk_token="<unk>")
    >>> tok.build_vocab(["ab", "ba"])
    >>> tok.vocab, tok.encode("abc")
    (['<unk>', 'a', 'b'], [1, 2, 0])
    """

    kind = "char"

    def __init__(self, vocab=None, unk_token=None):
        super().__init__()
        self.unk_token = _check_unk_token(unk_token)
        self._set_vocab([] if vocab is None else vocab)

    def build_vocab(self, corpus):
        """Make the vocabulary the distinct characters of ``corpus``, sorted by code point."""
        texts = _as_corpus(corpus)
        self._set_vocab(sorted(set().union(*texts)))

    def encode(self, text):
        """The ids of ``text``'s characters, one per character."""
        return _char_ids(text, self.char_to_id, self.unk_id, self)

    def _set_vocab(self, chars):
        if isinstance(chars, (bytes, bytearray)) or not _is_iterable(chars):
            raise TypeError(f"CharTokenizer: vocab must be an iterable of characters, got "
                            f"{type(chars).__name__}")
        unique = []
        for index, char in enumerate(chars):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(
                    f"CharTokenizer: vocab entries must be single characters, got {char!r} at "
                    f"index {index}; pass unk_token=... for an unknown-character token")
            unique.append(char)
        unique = [c for c in dict.fromkeys(unique) if c != self.unk_token]
        self.vocab = ([self.unk_token] if self.unk_token is not None else []) + unique
        self.char_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.id_to_char = dict(enumerate(self.vocab))
        self.unk_id = 0 if self.unk_token is not None else None

    def to_dict(self):
        start = 0 if self.unk_token is None else 1
        return {"type": self.kind, "version": FORMAT_VERSION, "unk_token": self.unk_token,
                "characters": self.vocab[start:]}

    @classmethod
    def _from_fields(cls, data):
        unk_token = _field(data, "unk_token", (str, type(None)))
        characters = _field(data, "characters", list)
        if unk_token == "":
            raise ValueError("'unk_token' must be a non-empty string or null")
        for index, char in enumerate(characters):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"'characters'[{index}] must be a single character, got "
                                 f"{_short(char)}")
        if len(set(characters)) != len(characters) or unk_token in characters:
            raise ValueError("'characters' holds a character twice (or the unk_token)")
        return cls(characters, unk_token=unk_token)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk_token={self.unk_token!r})"


class BPETokenizer(Tokenizer):
    """Byte-pair encoding over characters (Gage 1994; Sennrich et al. 2016 for subwords).

    Training starts from one token per distinct character of the corpus and repeatedly merges
    the most frequent adjacent pair of tokens into a new token, recording each merge, until
    the vocabulary holds ``vocab_size`` tokens or no pair occurs twice (so ``vocab_size`` may end
    below the request). Encoding replays the merges in the order they were learned, so the
    training text encodes exactly as training segmented it. There is no pre-splitting into
    words: a token may hold spaces and newlines ("e\\n", " the"); it never spans two texts of a
    list corpus, nor a special token.

    ``BPETokenizer(vocab_size=1000, special_tokens=(), unk_token=None)``. Ids: the ``unk_token``
    (id 0, if any), the ``special_tokens`` in order, the corpus's characters sorted by code
    point, then one id per merge. ``vocab_size`` counts all of them; a request below the number
    of characters and special tokens keeps them all (no merges).
    Special tokens (and the unk_token) found verbatim in a text encode to their own id and are
    never merged; a character outside the alphabet raises a ValueError containing
    ``repr(char)``, or encodes to ``unk_id`` when ``unk_token`` is set.

    Rules: a pair's count is the number of positions where it occurs in the training texts
    (in "aaa" the pair ('a', 'a') occurs at two positions, as in Hugging Face's tokenizers and
    minbpe); ties go to the pair whose (left, right) texts sort first; each merge replaces the
    pair's occurrences left to right ("aaa" -> "aa" "a"). Every merge spells a new string, so the
    strings in ``vocab`` are distinct: where a merge's string occurs as exactly two tokens, no
    earlier merge crossed its edges, so that span was split as the string alone is split, and it
    was merged when the string first was.

    Training is incremental: the text is a linked list of tokens, each pair keeps the set of
    positions where it occurs and a heap orders pairs by count, so a merge costs time in
    proportion to its occurrences, not to the corpus: training on the whole 1.1 MB Shakespeare
    corpus to 512 tokens takes about 8 s on 2 CPU cores, and encoding it about 1 s
    (``benchmarks/bpe_shakespeare.py``).

    Attributes (read them; retrain or load to change them): ``vocab`` (list of str),
    ``token_to_id``, ``id_to_token``, ``merges`` (list of (left, right) string pairs in learned
    order), ``target_vocab_size``, ``special_tokens``, ``unk_token``, ``unk_id``.
    """

    kind = "bpe"

    def __init__(self, vocab_size=1000, special_tokens=(), unk_token=None):
        super().__init__()
        self.target_vocab_size = _check_vocab_size(vocab_size)
        self.unk_token = _check_unk_token(unk_token)
        self.special_tokens = _check_special_tokens(special_tokens, self.unk_token)
        self._reset([])

    # ----- training ----------------------------------------------------------------------------
    def train(self, corpus, vocab_size=None):
        """Learn merges from ``corpus`` (a str or a list of str), replacing earlier training.

        ``vocab_size`` (optional) replaces the target given to the constructor.
        """
        if vocab_size is not None:
            self.target_vocab_size = _check_vocab_size(vocab_size)
        pieces = [piece for text in _as_corpus(corpus)
                  for piece in self._split_specials(text)[::2] if piece]
        self._reset(sorted(set().union(*pieces)))
        # One sequence of ids; -1 before, between and after the pieces stops pairs at the
        # borders, so no merge ever spans two texts (or a special token).
        ids = [-1]
        for piece in pieces:
            ids.extend(self._alphabet_ids[char] for char in piece)
            ids.append(-1)
        _learn_merges(self, ids)

    def _reset(self, alphabet):
        """Vocabulary = unk_token, special tokens, ``alphabet``; no merges."""
        specials = ([self.unk_token] if self.unk_token is not None else []) + self.special_tokens
        self.vocab = specials + list(alphabet)
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.id_to_token = dict(enumerate(self.vocab))
        self.unk_id = 0 if self.unk_token is not None else None
        self.merges = []
        self._rules = []                 # (left id, right id, merged id) in learned order
        self._alphabet_ids = {char: self.token_to_id[char] for char in alphabet}
        self._num_specials = len(specials)
        self._special_pattern = (re.compile("(" + "|".join(
            re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")
            if specials else None)

    def _add_merge(self, left, right):
        """Record the merge (left, right) and return the id of the new token it makes."""
        string = self.vocab[left] + self.vocab[right]
        if string in self.token_to_id:               # only a crafted file gets here
            raise ValueError(f"merge {self.vocab[left]!r} + {self.vocab[right]!r} spells "
                             f"{_short(string)}, a token made before it")
        merged = len(self.vocab)
        self.vocab.append(string)
        self.token_to_id[string] = merged
        self.id_to_token[merged] = string
        self.merges.append((self.vocab[left], self.vocab[right]))
        self._rules.append((left, right, merged))
        return merged

    # ----- encoding ----------------------------------------------------------------------------
    def encode(self, text):
        """The ids of ``text``: its characters' ids with every learned merge applied in order."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode expects a str, got {type(text).__name__}")
        parts = self._split_specials(text)
        ids = []
        for index, part in enumerate(parts):
            if index % 2:
                ids.append(self.token_to_id[part])
            elif part:
                ids.extend(_char_ids(part, self._alphabet_ids, self.unk_id, self))
        # Special and unknown ids take part in no merge, so merges never span them.
        sequence = np.array(ids, dtype=np.int32)
        for left, right, merged in self._rules:
            if len(sequence) < 2:
                break
            sequence = _apply_merge(sequence, left, right, merged)
        return sequence.tolist()

    def _split_specials(self, text):
        """``[text, special, text, special, ..., text]`` (a one-element list without specials)."""
        if self._special_pattern is None:
            return [text]
        return self._special_pattern.split(text)

    # ----- saving and loading ------------------------------------------------------------------
    def to_dict(self):
        alphabet = self.vocab[self._num_specials:self._num_specials + len(self._alphabet_ids)]
        return {"type": self.kind, "version": FORMAT_VERSION,
                "target_vocab_size": self.target_vocab_size, "unk_token": self.unk_token,
                "special_tokens": list(self.special_tokens), "alphabet": alphabet,
                "merges": [list(pair) for pair in self.merges]}

    @classmethod
    def _from_fields(cls, data):
        unk_token = _field(data, "unk_token", (str, type(None)))
        special_tokens = _field(data, "special_tokens", list)
        alphabet = _field(data, "alphabet", list)
        merges = _field(data, "merges", list)
        tokenizer = cls(_field(data, "target_vocab_size", int), special_tokens, unk_token)
        for index, char in enumerate(alphabet):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"'alphabet'[{index}] must be a single character, got "
                                 f"{_short(char)}")
        if alphabet != sorted(set(alphabet)):
            raise ValueError("'alphabet' must hold distinct characters in code-point order")
        if set(alphabet) & set(tokenizer.vocab):
            raise ValueError("'alphabet' repeats the unk_token or a special token")
        tokenizer._reset(alphabet)
        # Merges name their two tokens by text, so every token a file builds is spelled out in
        # it: the tokens can never hold more characters than the (size-checked) file.
        for index, pair in enumerate(merges):
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(s, str) for s in pair)):
                raise ValueError(f"'merges'[{index}] must be a pair of strings, got "
                                 f"{_short(pair)}")
            left, right = (tokenizer.token_to_id.get(s) for s in pair)
            if (left is None or right is None or left < tokenizer._num_specials
                    or right < tokenizer._num_specials):
                raise ValueError(f"'merges'[{index}] = {_short(pair)} joins a string that is "
                                 "not a token made before it (or a special token)")
            tokenizer._add_merge(left, right)
        return tokenizer

    def __repr__(self):
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"target_vocab_size={self.target_vocab_size})")


# ----- BPE training: incremental pair counts ------------------------------------------------------
def _learn_merges(tokenizer, ids):
    """Merge the most frequent pair of ``ids`` until the tokenizer reaches its target size.

    ``ids`` is a list of token ids with -1 at the borders of texts. The sequence is a doubly
    linked list over positions (``prev``, ``next``; a merged pair lives on at its left position).
    ``where[(a, b)]`` is the set of positions p where token a is followed by token b, so a pair's
    count is ``len(where[pair])``. The heap holds (-count, left text, right text, a, b) entries:
    a pair whose count grew is pushed again at once; an entry whose count has shrunk since it
    was pushed is noticed when it reaches the top and pushed again with its current count.
    """
    vocab = tokenizer.vocab
    prev = list(range(-1, len(ids) - 1))
    next_ = list(range(1, len(ids) + 1))
    where = {}
    for p in range(len(ids) - 1):
        a, b = ids[p], ids[p + 1]
        if a >= 0 and b >= 0:
            where.setdefault((a, b), set()).add(p)
    heap = [(-len(ps), vocab[a], vocab[b], a, b) for (a, b), ps in where.items()]
    heapq.heapify(heap)

    while tokenizer.vocab_size < tokenizer.target_vocab_size:
        while heap:                                  # drop stale entries from the top
            count, _, _, a, b = heap[0]
            current = len(where.get((a, b), ()))
            if current == -count:
                break
            heapq.heappop(heap)
            if current:
                heapq.heappush(heap, (-current, vocab[a], vocab[b], a, b))
        if not heap or -heap[0][0] < 2:
            break                                    # no pair occurs twice: stop early
        _, _, _, a, b = heapq.heappop(heap)
        merged = tokenizer._add_merge(a, b)
        grown = set()
        for p in sorted(where.pop((a, b))):          # left to right: "aaa" -> "aa" "a"
            q = next_[p]
            if ids[p] != a or ids[q] != b:           # an earlier merge here consumed p or q
                continue
            left, right = prev[p], next_[q]
            if ids[left] >= 0:                       # (x, a) at left becomes (x, merged)
                _move(where, (ids[left], a), (ids[left], merged), left, left, grown)
            if ids[right] >= 0:                      # (b, y) at q becomes (merged, y) at p
                _move(where, (b, ids[right]), (merged, ids[right]), q, p, grown)
            ids[p], ids[q] = merged, -1
            next_[p], prev[right] = right, p
        for pair in grown:
            count = len(where.get(pair, ()))
            if count:
                heapq.heappush(heap, (-count, vocab[pair[0]], vocab[pair[1]], *pair))


def _move(where, old_pair, new_pair, old_position, new_position, grown):
    """One occurrence of ``old_pair`` becomes an occurrence of ``new_pair``."""
    positions = where.get(old_pair)
    if positions is not None:                        # None: the pair being merged (popped)
        positions.discard(old_position)
    where.setdefault(new_pair, set()).add(new_position)
    grown.add(new_pair)


def _apply_merge(sequence, left, right, merged):
    """``sequence`` (int array) with each (left, right) pair replaced by ``merged``, left to right."""
    starts = np.flatnonzero(sequence[:-1] == left)
    if len(starts) == 0:
        return sequence
    starts = starts[sequence[starts + 1] == right]
    if len(starts) == 0:
        return sequence
    if left == right and len(starts) > 1:
        # A run "x x x x" matches at consecutive positions; merging left to right takes the
        # run's 1st, 3rd, ... match ("xx" "xx"), as training does.
        run_begins = np.concatenate([[True], np.diff(starts) != 1])
        first_of_run = starts[run_begins][np.cumsum(run_begins) - 1]
        starts = starts[(starts - first_of_run) % 2 == 0]
    sequence[starts] = merged
    keep = np.ones(len(sequence), dtype=bool)
    keep[starts + 1] = False
    return sequence[keep]


# ----- helpers -----------------------------------------------------------------------------------
def _as_corpus(corpus):
    """``corpus`` as a list of str (a str is one text)."""
    if isinstance(corpus, str):
        return [corpus]
    if isinstance(corpus, (bytes, bytearray)) or not _is_iterable(corpus):
        raise TypeError(f"corpus must be a str or a list of str, got {type(corpus).__name__}")
    texts = list(corpus)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"corpus[{index}] must be a str, got {type(text).__name__}")
    return texts


def _is_iterable(value):
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _char_ids(text, char_to_id, unk_id, tokenizer):
    """The ids of ``text``'s characters; unknown ones give ``unk_id``, or a ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"{type(tokenizer).__name__}.encode expects a str, got "
                        f"{type(text).__name__}")
    if unk_id is not None:
        get = char_to_id.get
        return [get(char, unk_id) for char in text]
    try:
        return [char_to_id[char] for char in text]
    except KeyError as error:
        char = error.args[0]
        hint = ("its vocabulary is empty: call build_vocab(corpus) first"
                if isinstance(tokenizer, CharTokenizer) else "train it on a corpus first")
        if any(len(token) == 1 for token in char_to_id):
            hint = ("build it from a corpus that contains this character, or pass "
                    "unk_token='<unk>' to encode unknown characters as that token")
        raise ValueError(f"{type(tokenizer).__name__}: character {char!r} (at index "
                         f"{text.index(char)} of the text) is not in the vocabulary; {hint}"
                         ) from None


def _check_ids(ids, vocab_size):
    """``ids`` as a list of Python ints in ``[0, vocab_size)``, or a clear error."""
    if isinstance(ids, (str, bytes, bytearray)) or not (
            _is_iterable(ids) or hasattr(ids, "__array__")):
        raise TypeError(f"decode expects a sequence of token ids, got {type(ids).__name__}")
    try:
        array = np.asarray(ids)
    except (ValueError, TypeError) as error:
        raise ValueError(f"decode expects a 1-D sequence of token ids: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"decode expects a 1-D sequence of token ids, got shape {array.shape}; "
                         "decode each row separately")
    if array.size == 0:
        return []
    if array.dtype.kind == "O":                      # e.g. ints too large for int64
        values = array.tolist()
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"token ids must be integers, got {value!r} at index {index}")
        array = np.array([v if 0 <= v < vocab_size else -1 for v in values])
    elif array.dtype.kind == "f":
        integral = np.isfinite(array) & (array == np.round(array))
        if not integral.all():
            index = int(np.argmin(integral))
            raise TypeError(f"token ids must be integers, got {array[index]!r} at index {index}")
    elif array.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {array.dtype}")
    outside = (array < 0) | (array >= vocab_size)
    if outside.any():
        index = int(np.argmax(outside))
        value = ids[index] if isinstance(ids, (list, tuple)) else array[index]
        raise IndexError(f"token id {value} at index {index} is out of range: ids lie in "
                         f"[0, {vocab_size}) for this tokenizer")
    return array.astype(np.int64).tolist()


def _check_vocab_size(vocab_size):
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) \
            or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    return int(vocab_size)


def _check_unk_token(unk_token):
    if unk_token is not None and (not isinstance(unk_token, str) or not unk_token):
        raise ValueError(f"unk_token must be a non-empty str or None, got {unk_token!r}")
    return unk_token


def _check_special_tokens(special_tokens, unk_token):
    if isinstance(special_tokens, str) or not _is_iterable(special_tokens):
        raise TypeError(f"special_tokens must be a list of str, got "
                        f"{type(special_tokens).__name__}")
    tokens = list(special_tokens)
    for index, token in enumerate(tokens):
        if not isinstance(token, str) or not token:
            raise ValueError(f"special_tokens[{index}] must be a non-empty str, got "
                             f"{_short(token)}")
    if len(set(tokens)) != len(tokens) or unk_token in tokens:
        raise ValueError(f"special_tokens must be distinct and differ from the unk_token, got "
                         f"{tokens!r}")
    return tokens


def _field(data, name, types):
    if name not in data:
        raise ValueError(f"the field {name!r} is missing")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"the field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _short(value):
    """``repr(value)``, cut to a readable length for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----- TinyTorch's curriculum helpers ---------------------------------------------------------------
def create_tokenizer(strategy="char", vocab_size=1000, corpus=None):
    """A ``CharTokenizer`` (``strategy="char"``) or ``BPETokenizer`` (``"bpe"``), built from
    ``corpus`` when one is given (TinyTorch's factory)."""
    if strategy == "char":
        tokenizer = CharTokenizer()
        if corpus is not None:
            tokenizer.build_vocab(corpus)
    elif strategy == "bpe":
        tokenizer = BPETokenizer(vocab_size=vocab_size)
        if corpus is not None:
            tokenizer.train(corpus)
    else:
        raise ValueError(f"unknown tokenization strategy {strategy!r}; choose 'char' or 'bpe'")
    return tokenizer


def tokenize_dataset(texts, tokenizer, max_length=None):
    """``[tokenizer.encode(t) for t in texts]``, each cut to its first ``max_length`` ids."""
    if max_length is not None and (isinstance(max_length, bool)
                                   or not isinstance(max_length, numbers.Integral)
                                   or max_length < 0):
        raise ValueError(f"max_length must be a non-negative integer or None, got {max_length!r}")
    return [tokenizer.encode(text)[:max_length] for text in _as_corpus(texts)]


def analyze_tokenization(texts, tokenizer):
    """Statistics of encoding ``texts``: ``vocab_size``, ``avg_sequence_length``,
    ``max_sequence_length``, ``total_tokens``, ``compression_ratio`` (characters per token, 0
    when there are no tokens) and ``unique_tokens``."""
    texts = _as_corpus(texts)
    encoded = [tokenizer.encode(text) for text in texts]
    lengths = [len(ids) for ids in encoded]
    total = sum(lengths)
    return {"vocab_size": tokenizer.vocab_size,
            "avg_sequence_length": total / len(lengths) if lengths else 0.0,
            "max_sequence_length": max(lengths, default=0),
            "total_tokens": total,
            "compression_ratio": sum(map(len, texts)) / total if total else 0,
            "unique_tokens": len({i for ids in encoded for i in ids})}


__all__ = ["Tokenizer", "CharTokenizer", "BPETokenizer", "create_tokenizer", "tokenize_dataset",
           "analyze_tokenization"]
