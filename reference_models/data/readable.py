"""Which words of a sentence a model's tokenizer cannot read, so tools can say so.

A tokenizer never fails: the word tokenizer of the tiny models maps a word outside its
vocabulary to ``[UNK]`` ("the crimson ball" reads as "the [UNK] ball"), BERT's WordPiece does
the same for characters outside its vocabulary (emoji, rare scripts), and a sentence of
punctuation, zero-width or control characters becomes no word at all. The model then
segments something, or nothing, with no hint why. :func:`unreadable_words` finds those
words for the three tokenizers of :mod:`reference_models.data.tokenizers`;
:func:`text_warnings` words them for a user, and :class:`UnreadableTextWarning` is the
category tools warn with, so a notebook can filter or escalate it.

CLIP's byte-pair tokenizer has no unknown token (every byte has one), so with CLIP only a
sentence without letters or digits is unreadable.

Example:
    >>> from reference_models.data.tokenizers import WordTokenizer
    >>> unreadable_words(WordTokenizer(), "the crimson ball left of the mauve box")
    ['crimson', 'mauve']
    >>> unreadable_words(WordTokenizer(), "?!")
    ['?!']
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

__all__ = [
    "UnreadableTextWarning", "token_count", "content_ids", "unreadable_words", "token_strings", "text_warnings",
    "UnreadableCount", "unreadable_summary",
]


class UnreadableTextWarning(UserWarning):
    """A sentence holds words the model's tokenizer cannot read, or is cut to the model's length."""


def _widened(tokenizer: Any, text: str) -> Any:
    """A copy of ``tokenizer`` whose ``max_length`` cuts nothing of ``text``."""
    # Every token but the specials takes at least one character, so this length cuts nothing.
    wide = copy.copy(tokenizer)
    wide.max_length = max(tokenizer.max_length, len(text) + 2)
    return wide


def token_count(tokenizer: Any, text: str) -> int:
    """How many tokens ``text`` has before the tokenizer cuts it to ``max_length``.

    Special tokens (``[CLS]``/``[SEP]``, CLIP's start and end) count, as they do in
    ``max_length``.

    Args:
        tokenizer: one of :mod:`reference_models.data.tokenizers`' tokenizers.
        text: the sentence.

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> token_count(WordTokenizer(max_length=4), "the red circle left of the blue square")
        10
    """
    return int(_widened(tokenizer, text)(text).attention_mask.sum())


def content_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids ``text`` becomes, uncut, without the special tokens around them.

    Args:
        tokenizer: one of :mod:`reference_models.data.tokenizers`' tokenizers.
        text: the sentence.

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> content_ids(WordTokenizer(max_length=3), "the red crimson"), content_ids(WordTokenizer(), "?!")
        ([4, 8, 1], [])
    """
    return _read_ids(_widened(tokenizer, text), text)


def _read_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids the model reads of ``text`` (cut to ``max_length``), without the special tokens."""
    tokens = tokenizer(text)
    ids = tokens.input_ids[tokens.attention_mask.bool()].tolist()
    # BERT and CLIP always wrap the words in a start and an end token; the word tokenizer may not.
    return ids[1:-1] if getattr(tokenizer, "add_special_tokens", True) else ids


def _reads_nothing(ids: list[int], text: str) -> bool:
    """Whether a text whose content ids are ``ids`` gives the model no word to read."""
    return not ids or not any(character.isalnum() for character in text)


def unreadable_words(tokenizer: Any, text: str) -> list[str]:
    """The words of ``text`` the tokenizer cannot read (empty when it reads them all).

    A word (a whitespace-separated piece of the text) is unreadable when any of its tokens is
    the tokenizer's unknown token; only the words within the tokens the model reads
    (``tokenizer.max_length``) are named. When the text has no letter or digit, or becomes no
    token at all (punctuation only, zero-width or control characters), every word is unreadable.

    Args:
        tokenizer: a :class:`~reference_models.data.tokenizers.WordTokenizer`,
            :class:`~reference_models.data.tokenizers.BertTokenizer` or
            :class:`~reference_models.data.tokenizers.ClipTokenizer`.
        text: the sentence.

    Returns:
        The unreadable words as they appear in ``text`` (the whole text when it has no
        whitespace-separated word, e.g. ``""``).

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> unreadable_words(WordTokenizer(), "the red ball"), unreadable_words(WordTokenizer(), "the \\u200b")
        ([], [])
        >>> unreadable_words(WordTokenizer(), "\\u200b\\x07")
        ['\\u200b\\x07']
    """
    # Only the part the model reads counts (a longer sentence is cut, with its own warning), and
    # the tokenizers read only that part: a huge sentence costs what its start does.
    ids = _read_ids(tokenizer, text)
    if _reads_nothing(ids, text):
        return text.split() or [text]
    unknown = tokenizer.unknown_id  # None for CLIP's byte-level BPE: every byte has a token
    if unknown is None or unknown not in ids:
        return []  # the common case costs one tokenization; only a sentence with unknowns is split
    found, read = [], 0
    for match in re.finditer(r"\S+", text):
        word_ids = content_ids(tokenizer, match.group())
        if unknown in word_ids:
            found.append(match.group())
        read += len(word_ids)
        if read >= len(ids):
            break
    return found


def token_strings(tokenizer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
    """The tokens a tokenized sentence holds, as text (specials and padding included, padding not).

    Args:
        tokenizer: the tokenizer that made the ids.
        input_ids: ``(l,)`` ids.
        attention_mask: ``(l,)``, 1 on real tokens.

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> tokens = WordTokenizer(max_length=6)("the crimson ball")
        >>> token_strings(WordTokenizer(), *tokens)
        ['[CLS]', 'the', '[UNK]', 'ball', '[SEP]']
    """
    return [tokenizer.token_name(i) for i in input_ids[attention_mask.bool()].tolist()]


def text_warnings(tokenizer: Any, text: str, *, argument: str = "text") -> list[str]:
    """What a user should be told about ``text`` before a model reads it (one line each).

    Two things are said: words the model cannot read (:func:`unreadable_words`), and a
    sentence longer than the model reads (``tokenizer.max_length`` tokens), which is cut.

    Args:
        tokenizer: the model's tokenizer.
        text: the sentence.
        argument: what the messages call the text (``"--text"`` on a command line).

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> for line in text_warnings(WordTokenizer(max_length=5), "the crimson ball left of the box"):
        ...     print(line)
        text: the model cannot read 'crimson' (outside its tokenizer's vocabulary, read as unknown); the mask cannot follow them
        text is 9 tokens long (special tokens included); the model reads 5, so it was cut to 5 tokens
    """
    messages = []
    if _reads_nothing(content_ids(tokenizer, text), text):
        messages.append(f"{argument}: {text!r} has no word the model can read (no letter or digit, or no token at all); the mask cannot follow it")
    elif words := unreadable_words(tokenizer, text):
        named = ", ".join(repr(word) for word in words)
        messages.append(f"{argument}: the model cannot read {named} (outside its tokenizer's vocabulary, read as unknown); the mask cannot follow them")
    count, limit = token_count(tokenizer, text), tokenizer.max_length
    if count > limit:
        messages.append(f"{argument} is {count} tokens long (special tokens included); the model reads {limit}, so it was cut to {limit} tokens")
    return messages


class UnreadableCount:
    """How many sentences of a dataset hold words a tokenizer cannot read, and which words.

    Args:
        tokenizer: the model's tokenizer.
        examples: how many of the most frequent unreadable words :meth:`compute` names.

    Example:
        >>> from reference_models.data.tokenizers import WordTokenizer
        >>> count = UnreadableCount(WordTokenizer())
        >>> count.update(["the crimson ball", "the red ball", "the crimson box"])
        >>> count.compute()
        {'sentences': 2, 'of': 3, 'words': ['crimson']}
    """

    def __init__(self, tokenizer: Any, *, examples: int = 5) -> None:
        self.tokenizer = tokenizer
        self.examples = examples
        self.sentences = 0
        self.total = 0
        self.words: dict[str, int] = {}

    def update(self, sentences: list[str]) -> None:
        """Add a batch of sentences."""
        for sentence in sentences:
            self.total += 1
            words = unreadable_words(self.tokenizer, sentence)
            self.sentences += bool(words)
            for word in words:
                self.words[word] = self.words.get(word, 0) + 1

    def compute(self) -> dict[str, Any]:
        """``{"sentences": unreadable, "of": all, "words": the most frequent unreadable words}``."""
        frequent = sorted(self.words, key=lambda word: (-self.words[word], word))[: self.examples]
        return {"sentences": self.sentences, "of": self.total, "words": frequent}


def unreadable_summary(split: str, count: dict[str, Any]) -> str | None:
    """One line for a report on a split's :meth:`UnreadableCount.compute`, or None when all read.

    Args:
        split: the split's name.
        count: what :meth:`UnreadableCount.compute` returned.

    Example:
        >>> unreadable_summary("val", {"sentences": 2, "of": 3, "words": ["crimson"]})
        "val: 2 of 3 sentences hold words the model cannot read (most often: 'crimson'); their masks cannot follow them"
    """
    if not count["sentences"]:
        return None
    words = ", ".join(repr(word) for word in count["words"])
    return f"{split}: {count['sentences']} of {count['of']} sentences hold words the model cannot read (most often: {words}); their masks cannot follow them"
