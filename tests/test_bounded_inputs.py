"""Sentences, refs files and pictures are read in time and memory bounded by what is used.

Tokenizers read only what ``max_length`` tokens can come from, and CLIP's byte-pair merging
is ``O(n log n)``; a refs file may not expand past its size through shared refs; a picture
is refused from its header above :data:`~reference_models.data.images.MAX_PIXELS`.
"""

from __future__ import annotations

import pickle
import random
import signal
import struct
import zlib
from contextlib import contextmanager

import pytest

from reference_models.data.bpe import merge_pairs
from reference_models.data.errors import DataError
from reference_models.data.images import MAX_PIXELS, PictureTooLargeError, load_image
from reference_models.data.refer import ReferDataset
from reference_models.data.synthetic import export_refer
from reference_models.data.tokenizers import BertTokenizer, ClipTokenizer, WordTokenizer, bundled_bert_path


@contextmanager
def _within(seconds: int):
    """Fail, rather than hang, when the block takes longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def clip() -> ClipTokenizer:
    tokenizer = ClipTokenizer(max_length=17)
    tokenizer._load()
    return tokenizer


def _open_clip_ids(tokenizer: ClipTokenizer, sentence: str) -> list[int]:
    """What the tokenizer gave before: open_clip's own encode, cut as CLIP cuts."""
    backend = tokenizer._load()
    ids = [backend.sot_token_id, *backend.encode(sentence), backend.eot_token_id]
    return ids if len(ids) <= tokenizer.max_length else [*ids[: tokenizer.max_length - 1], backend.eot_token_id]


def _letters(count: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(count))


def _ids(tokenized) -> list[int]:
    return tokenized.input_ids[: int(tokenized.attention_mask.sum())].tolist()


# -- tokenizers -----------------------------------------------------------------------------------


def test_merge_pairs_is_open_clips_merge(clip):
    backend, rng = clip._load(), random.Random(0)
    for _ in range(300):
        word = "".join(rng.choice(rng.choice(["ab", "aeiou", "thequickbrownfx", "0123"])) for _ in range(rng.randint(1, 30)))
        assert merge_pairs([*word[:-1], word[-1] + "</w>"], backend.bpe_ranks) == backend.bpe(word).split(" "), word


def test_clip_gives_open_clips_ids(clip):
    sentences = [
        "the red circle", "Man in a BLUE shirt &amp; hat, left!!", "café naïve — 你好 🙂🙂🙂 <end_of_text> x",
        "a" * 50, "1234567890 " * 5, "&lt;b&gt; the   left\tone\n", "", "mojibake: cafÃ©", "don't you'll it's",
        _letters(2000, seed=1),  # one long word
    ]
    for sentence in sentences:
        assert _ids(clip(sentence)) == _open_clip_ids(clip, sentence), sentence


def test_clip_is_linear_in_a_long_word(clip):
    word = _letters(50_000, seed=2)
    with _within(10):  # open_clip's quadratic merge: 4 s for 8,000 letters, 129 s for 100,000
        assert len(_ids(clip(word))) == clip.max_length
        merged = merge_pairs([*word[:-1], word[-1] + "</w>"], clip._load().bpe_ranks)
    assert "".join(merged) == word + "</w>"


def test_clip_cleans_only_what_it_can_read(clip, monkeypatch):
    backend, seen = clip._load(), []
    clean = backend.clean_fn
    monkeypatch.setattr(backend, "clean_fn", lambda text: seen.append(len(text.split(" "))) or clean(text))
    clip("the cat " * 500_000)  # a million words
    assert seen and max(seen) <= 8 * clip.char_budget() // 3 + 2  # three letters a word


def test_bert_reads_only_the_words_it_can_use(monkeypatch):
    tokenizer = BertTokenizer(bundled_bert_path(), max_length=20)
    backend, seen = tokenizer._load(), []
    monkeypatch.setattr(tokenizer, "_backend", lambda text, **kw: seen.append(len(text)) or backend(text, **kw))
    for sentence in ("a," * 500_000, "dog " * 250_000, "x" * 1_000_000 + " tail"):
        tokenizer(sentence)
        assert seen[-1] <= 4 * (100 + 18) + 100, sentence[:10]  # a word is cut after 4 * (100 + 18)


def test_bert_keeps_its_ids_where_words_are_cut():
    tokenizer = BertTokenizer(bundled_bert_path(), max_length=12)
    backend, rng = tokenizer._load(), random.Random(3)
    alphabet = "abc de,.!?-_'é\u0301\x00中文™©«»—  \t"
    for _ in range(300):
        sentence = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        sentence += rng.choice(["x", "é", "a\u0301", "中"]) * rng.randint(0, 700) + " tail words here"
        expected = backend(sentence, padding="max_length", truncation=True, max_length=12)
        padded = [i if keep else 0 for i, keep in zip(expected["input_ids"], expected["attention_mask"])]
        assert tokenizer(sentence).input_ids.tolist() == padded, repr(sentence)


def test_word_tokenizer_stops_at_max_length_words():
    tokenizer = WordTokenizer(max_length=6)
    with _within(5):
        assert tokenizer("red " * 2_000_000).input_ids.tolist() == tokenizer("red red red red red red").input_ids.tolist()


# -- refs files -----------------------------------------------------------------------------------


def test_a_refs_file_naming_one_ref_many_times_is_refused(tmp_path):
    export_refer(tmp_path, counts={"train": 2, "val": 1, "test": 1}, progress=False)
    refs_file = tmp_path / "synthetic" / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    one = next(ref for ref in refs if ref["split"] == "val")
    refs_file.write_bytes(pickle.dumps([one] * 50_000, protocol=2))  # 100 kB, read as 50,000 refs
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: refusing data that expands to more than [\d,]+ values"):
        ReferDataset(tmp_path, "synthetic", "unc", "val", tokenizer=WordTokenizer(), check_images=False)


# -- pictures -------------------------------------------------------------------------------------


def _blank_png(path, width: int, height: int) -> None:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels (small: zeros compress)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_picture_above_the_pixel_limit_is_refused_from_its_header(tmp_path):
    file = tmp_path / "huge.png"
    _blank_png(file, 9000, 9000)  # 81 megapixels in about 100 kB; Pillow only warns
    assert 9000 * 9000 > MAX_PIXELS and file.stat().st_size < 200_000
    with _within(5), pytest.raises(PictureTooLargeError) as caught:
        load_image(file)
    assert str(caught.value) == (
        f"{file}: refusing a picture of 9000 x 9000 pixels before decoding it; "
        "at most 67,108,864 pixels are read (8192 x 8192); scale it down first"
    )


def test_the_pixel_limit_is_an_argument(tmp_path):
    file = tmp_path / "small.png"
    _blank_png(file, 40, 30)
    assert load_image(file).size == (40, 30)
    with pytest.raises(PictureTooLargeError, match="at most 1,000 pixels"):
        load_image(file, max_pixels=1000)
