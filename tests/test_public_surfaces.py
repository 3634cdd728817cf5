"""Loose ends of issues 24 and 25: what readable asks of a tokenizer is public, viz holds no dead
code, and the README and guides say what the code does (percent; the padding-mask check).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from reference_models.data import readable
from reference_models.data.tokenizers import BertTokenizer, ClipTokenizer, WordTokenizer, bundled_bert_path

ROOT = Path(__file__).resolve().parents[1]


class _PublicOnly:
    """A tokenizer showing only the public surface of the wrapped one (no ``_load``, ``unk_id``, ``vocabulary``)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.max_length = inner.max_length

    def __call__(self, text: str):
        inner = copy.copy(self._inner)
        inner.max_length = self.max_length
        return inner(text)

    @property
    def unknown_id(self):
        return self._inner.unknown_id

    def token_name(self, token_id: int) -> str:
        return self._inner.token_name(token_id)


@pytest.fixture(scope="module")
def tokenizers():
    return {"word": WordTokenizer(), "bert": BertTokenizer(bundled_bert_path()), "clip": ClipTokenizer()}


def test_each_tokenizer_names_its_unknown_id_and_tokens(tokenizers):
    word, bert, clip = tokenizers["word"], tokenizers["bert"], tokenizers["clip"]
    assert (word.unknown_id, bert.unknown_id, clip.unknown_id) == (1, 100, None)
    assert [word.token_name(i) for i in (0, 1, 2, 3)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert bert.token_name(bert.unknown_id) == "[UNK]" and bert.token_name(1996) == "the"
    assert clip.token_name(49406) == "<start_of_text>" and clip.token_name(49407) == "<end_of_text>"
    for tokenizer in tokenizers.values():
        for bad in (-1, tokenizer.vocab_size, 2.0, True):
            with pytest.raises(ValueError, match=rf"^token_id: expected an integer in \[0, {tokenizer.vocab_size}\); got "):
                tokenizer.token_name(bad)


@pytest.mark.parametrize(("kind", "text", "unreadable", "tokens"), [
    ("word", "the crimson ball", ["crimson"], ["[CLS]", "the", "[UNK]", "ball", "[SEP]"]),
    ("bert", "the \u2603 ball", ["\u2603"], ["[CLS]", "the", "[UNK]", "ball", "[SEP]"]),
    ("clip", "the red ball", [], ["<start_of_text>", "the</w>", "red</w>", "ball</w>", "<end_of_text>"]),
])
def test_readable_works_through_the_public_surface_alone(tokenizers, kind, text, unreadable, tokens):
    public = _PublicOnly(tokenizers[kind])
    assert readable.unreadable_words(public, text) == unreadable
    assert readable.token_strings(public, *public(text)) == tokens


def test_readable_reaches_into_no_private_part_of_a_tokenizer():
    source = (ROOT / "reference_models" / "data" / "readable.py").read_text()
    assert not re.search(r"\._load\b|\.decoder\b|\bunk_id\b|convert_ids_to_tokens", source)


def test_every_public_name_of_viz_is_used():
    from reference_models import viz

    package = [p for p in (ROOT / "reference_models").rglob("*.py") if p.name != "viz.py"]
    text = "\n".join(p.read_text() for p in package)
    unused = [name for name in viz.__all__ if not re.search(rf"\b{name}\b", text)]
    assert not unused, f"reference_models.viz: {unused} used nowhere in the package"


def test_readme_and_guides_quote_metrics_in_percent_as_the_tools_print_them():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]
    fractions = [f"{p.name}: {m.group()}" for p in pages for m in re.finditer(r"\b(?:val )?[om]IoU (?:of )?0\.\d+", p.read_text())]
    assert not fractions, fractions
    assert re.search(r"val oIoU \d\d \(in percent", (ROOT / "README.md").read_text())


def test_clip_guide_states_when_the_padding_mask_is_read():
    guide = " ".join((ROOT / "docs" / "guides" / "clip_model.md").read_text().split())
    assert "once or twice per layer" not in guide and "checks its first masks" not in guide
    assert "the mask is read at every call, one host sync (the same mask handed to several layers is read once)" in guide
    assert "skipped inside {func}`torch.compile`" in guide and "a row without a single real token" in guide


def test_the_guides_claim_holds_a_correct_mask_does_not_silence_a_later_wrong_one():
    import warnings

    from rislayers import DynamicQueryRefiner, PaddingMaskWarning

    layer = DynamicQueryRefiner(8, 6, num_iters=1, hidden_dims=(4,))
    feats, words = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 6)
    good = torch.tensor([[True, True, False], [True, True, True]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(feats, words, good)
        layer(feats, words, ~good)  # inverted: row 0 goes False then True, row 1 has no real token
    assert [w.category for w in caught] == [PaddingMaskWarning]
