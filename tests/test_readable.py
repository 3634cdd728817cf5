"""``reference_models.data.readable``: the words a model's tokenizer cannot read, and evaluate's count.

Each tokenizer fails differently: the word tokenizer reads words outside its vocabulary as
``[UNK]``, BERT's WordPiece does so for unknown characters, CLIP's byte-level BPE reads every
character; all three give no word for punctuation, zero-width or control characters alone.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from reference_models import build_model
from reference_models.data.readable import content_ids, text_warnings, token_strings, unreadable_words
from reference_models.data.tokenizers import BertTokenizer, ClipTokenizer, WordTokenizer, bundled_bert_path


def test_the_word_tokenizer_names_words_outside_its_vocabulary():
    tokenizer = WordTokenizer()
    assert unreadable_words(tokenizer, "the crimson ball left of the mauve box") == ["crimson", "mauve"]
    assert unreadable_words(tokenizer, "the crimson-red ball") == ["crimson-red"]
    assert unreadable_words(tokenizer, "the red circle!") == []
    # no token at all: punctuation, zero-width and control characters
    for text in ("?!", "\u200b", "\x07\x08", "... ---"):
        assert unreadable_words(tokenizer, text) == (text.split() or [text]), repr(text)
    # a zero-width character among words reads as nothing: the words are read
    assert unreadable_words(tokenizer, "the \u200b ball") == []


def test_bert_wordpiece_names_words_with_unknown_pieces():
    tokenizer = BertTokenizer(bundled_bert_path())
    assert unreadable_words(tokenizer, "the crimson ball") == []  # in bert-base-uncased's vocabulary
    assert unreadable_words(tokenizer, "the 🦄 toy left of the \u3400") == ["🦄", "\u3400"]
    assert unreadable_words(tokenizer, "\u200b") == ["\u200b"]  # BERT drops format characters: no token
    assert unreadable_words(tokenizer, "?!") == ["?!"]  # tokens, but no word to refer with
    assert token_strings(tokenizer, *tokenizer("the 🦄"))[:4] == ["[CLS]", "the", "[UNK]", "[SEP]"]


def test_clip_bpe_has_no_unknown_word_but_refuses_sentences_without_words():
    tokenizer = ClipTokenizer()
    assert unreadable_words(tokenizer, "the crimson 🦄") == []  # byte-level: every character has tokens
    assert unreadable_words(tokenizer, "\x07") == ["\x07"]  # no token at all
    assert unreadable_words(tokenizer, "\u200b ?!") == ["\u200b", "?!"]  # tokens, but no word
    assert len(content_ids(tokenizer, "the red circle")) == 3
    assert token_strings(tokenizer, *tokenizer("red"))[1] == "red</w>"


def test_text_warnings_say_what_is_unreadable_and_what_is_cut():
    tokenizer = WordTokenizer(max_length=5)
    assert text_warnings(tokenizer, "the red ball") == []
    assert text_warnings(tokenizer, "\u200b", argument="--text") == [
        "--text: '\\u200b' has no word the model can read (no letter or digit, or no token at all); the mask cannot follow it"
    ]
    (cut,) = text_warnings(tokenizer, "the red ball left of the box")
    assert cut == "text is 9 tokens long (special tokens included); the model reads 5, so it was cut to 5 tokens"


def test_evaluate_counts_unreadable_sentences_in_its_summary():
    from reference_models.data.samples import collate, make_sample
    from reference_models.evaluate import _table, evaluate

    model = build_model("lavt_tiny")  # untrained: the count does not depend on the masks
    tokenizer = WordTokenizer()
    sentences = ["the crimson ball", "the red ball", "the mauve crimson box", "?!"]
    samples = [
        make_sample(Image.new("RGB", (64, 64)), np.ones((64, 64), bool), sentence, tokenizer=tokenizer, image_size=64,
                    resize="square", mean=(0.5,) * 3, std=(0.5,) * 3, image_id=i, ref_id=i, sent_id=i, keep_original_mask=True)
        for i, sentence in enumerate(sentences)
    ]
    result = evaluate(model, [collate(samples[:2]), collate(samples[2:])])
    assert result["unreadable"] == {"sentences": 3, "of": 4, "words": ["crimson", "?!", "mauve"]}
    assert "val: 3 of 4 sentences hold words the model cannot read (most often: 'crimson', '?!', 'mauve')" in _table({"val": result})
    readable = evaluate(model, [collate(samples[1:2])])
    assert readable["unreadable"]["sentences"] == 0 and "cannot read" not in _table({"val": readable})


def test_only_the_words_the_model_reads_are_named():
    tokenizer = WordTokenizer(max_length=5)  # [CLS] + 3 words + [SEP]
    assert unreadable_words(tokenizer, "the crimson ball mauve teal") == ["crimson"]
    assert unreadable_words(tokenizer, "the red ball mauve teal") == []  # cut before them: the cut is said instead
    # a huge sentence costs what its start does (the tokenizers read only that far)
    assert unreadable_words(WordTokenizer(), "the crimson ball " * 200_000) == ["crimson"] * 6
