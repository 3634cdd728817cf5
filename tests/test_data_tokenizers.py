"""Tokenizers without the hub: word-level, BERT WordPiece from a local directory, CLIP BPE."""

from __future__ import annotations

import pickle

import pytest
import torch

from reference_models.data.lexicon import SYNTHETIC_WORDS
from reference_models.data.synthetic import SyntheticReferDataset
from reference_models.data.tokenizers import (
    BertTokenizer,
    ClipTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    bundled_bert_path,
)


def _check_format(out, max_length):
    assert out.input_ids.shape == (max_length,) and out.input_ids.dtype == torch.int64
    assert out.attention_mask.shape == (max_length,) and out.attention_mask.dtype == torch.int64
    assert set(out.attention_mask.tolist()) <= {0, 1}
    length = int(out.attention_mask.sum())
    # Real tokens first, then padding id 0 with attention 0.
    assert out.attention_mask[:length].all() and not out.attention_mask[length:].any()
    assert not out.input_ids[length:].any()
    return length


def test_word_tokenizer_format_and_specials():
    tok = WordTokenizer(max_length=10)
    out = tok("The RED circle, to the left of the blue square!")
    length = _check_format(out, 10)
    assert length == 10  # truncated: [CLS] + the first 8 of 10 words + [SEP]
    assert out.input_ids[0] == tok.cls_id and out.input_ids[length - 1] == tok.sep_id
    assert tok.decode(out.input_ids) == "the red circle to the left of the"
    assert tok("the zebra").input_ids[2] == tok.unk_id
    assert tok.vocab_size == len(SYNTHETIC_WORDS) + 4


def test_word_tokenizer_without_specials():
    tok = WordTokenizer(max_length=4, add_special_tokens=False)
    out = tok("red circle")
    assert _check_format(out, 4) == 2
    assert tok.decode(out.input_ids) == "red circle"


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_every_generated_sentence_is_in_vocabulary(level):
    data = SyntheticReferDataset(
        "val", level=level, length=60, seed=3, sentences_per_ref=2, multi_target_prob=0.2, no_target_prob=0.2
    )
    tok = WordTokenizer(max_length=32)
    for index in range(len(data)):
        for expression in data.ref(index)[1].expressions:
            ids = tok(expression.sentence).input_ids
            assert tok.unk_id not in ids.tolist(), expression.sentence
            assert len(tok.split(expression.sentence)) <= 18, expression.sentence  # fits max_length 20


def test_bert_from_local_directory_matches_transformers():
    from transformers import AutoTokenizer

    path = bundled_bert_path()
    tok = BertTokenizer(path)
    assert isinstance(tok, Tokenizer) and tok.max_length == 20
    sentence = "the man in a striped shirt holding an umbrella on the left"
    out = tok(sentence)
    length = _check_format(out, 20)
    reference = AutoTokenizer.from_pretrained(str(path), local_files_only=True)(sentence)["input_ids"]
    assert out.input_ids[:length].tolist() == reference
    assert out.input_ids[0] == 101 and out.input_ids[length - 1] == 102  # [CLS], [SEP]
    long = tok(" ".join(["word"] * 40))
    assert _check_format(long, 20) == 20 and long.input_ids[-1] == 102
    restored = pickle.loads(pickle.dumps(tok))
    assert torch.equal(restored(sentence).input_ids, out.input_ids)


@pytest.mark.parametrize("max_length", [17, 22])
def test_clip_bpe_from_bundled_vocabulary(max_length):
    tok = ClipTokenizer(max_length=max_length)
    out = tok("the red circle!")
    length = _check_format(out, max_length)
    start, end = 49406, 49407
    assert out.input_ids[0] == start and out.input_ids[length - 1] == end
    assert tok.vocab_size == 49408
    long = tok(" ".join(["giraffe"] * 40))
    assert _check_format(long, max_length) == max_length
    assert long.input_ids[0] == start and long.input_ids[-1] == end
    restored = pickle.loads(pickle.dumps(tok))
    assert torch.equal(restored("the red circle!").input_ids, out.input_ids)


def test_build_tokenizer_and_errors(tmp_path):
    assert build_tokenizer("word").max_length == 20
    assert build_tokenizer("clip").max_length == 17
    assert build_tokenizer("bert", max_length=12).max_length == 12
    with pytest.raises(ValueError, match="kind"):
        build_tokenizer("gpt")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        BertTokenizer(tmp_path)
    with pytest.raises(ValueError, match="max_length"):
        WordTokenizer(max_length=2)
    with pytest.raises(ValueError, match="vocabulary"):
        WordTokenizer(["Red"])
