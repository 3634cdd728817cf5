"""The registered configurations: every system in a CPU-sized ``_tiny`` and the papers' ``_base``.

``_tiny`` models are random-init, train on a laptop CPU at 64 px, and are what the tests and
the default training run use. ``_base`` models have the papers' sizes (Swin-B + BERT-base at
480 for the SADLR family, CLIP ViT-B/16 at 416 for ASDA, Swin-B/T + BERT-base at 512 for
S2RM); pass ``vision_weights``/``text_weights`` to start from local pretrained files.
"""

from __future__ import annotations

from ..config import from_flat
from ..registry import register_model

SWIN_B = {"swin_embed_dim": 128, "swin_depths": (2, 2, 18, 2), "swin_heads": (4, 8, 16, 32), "swin_window": 12}
SWIN_T = {"swin_embed_dim": 96, "swin_depths": (2, 2, 6, 2), "swin_heads": (3, 6, 12, 24), "swin_window": 7}
SWIN_TINY = {"swin_embed_dim": 16, "swin_depths": (1, 1, 1, 1), "swin_heads": (1, 2, 4, 8), "swin_window": 4}
BERT_BASE = {"text_encoder": "bert", "text_dim": 768, "text_layers": 12, "text_heads": 12, "text_intermediate": 3072, "max_words": 20}
BERT_TINY = {"text_encoder": "bert", "text_dropout": 0.0, "text_dim": 32, "text_layers": 1, "text_heads": 2, "text_intermediate": 64, "max_words": 20}
# aligner_masks: the tiny aligner's mask bases (asda_tiny's), for decoder=aligner
TINY = {"image_size": 64, "drop_path": 0.0, "tokenizer": "word", **SWIN_TINY, **BERT_TINY, "decoder_dim": 32, "refiner_hidden": (16, 32), "num_queries": 4, "transformer_layers": 1,
        "aligner_masks": 8}
BASE_480 = {"image_size": 480, **SWIN_B, **BERT_BASE, "decoder_dim": 512}


# VLT's released reading (per-query response maps read out from the answers alone) learns
# nothing in a CPU budget from random weights (recorded study sadlr-table3, 500 steps of 16 on
# the generated benchmark, 3 seeds: 8.4 mIoU, below the text-blind ceiling, where "modulate"
# reaches 51.2), so the tiny VLTs keep the first reading; the base ones, which start from
# pretrained encoders, follow the released code.
TINY_VLT = {"vlt_response": "modulate"}


def _register(**flat):
    """Register the config of the flat presets below; the options its parts do not read
    (the SADLR widths of a baseline without the refiner, say) are dropped from the config but
    kept as the sizes of a part chosen later (``lavt_tiny`` with ``head=sadlr``)."""
    return register_model(from_flat(flat), preset=flat)


def _register_sadlr_family(architecture: str) -> None:
    for plugin, suffix in ((None, ""), ("sadlr", "_sadlr")):
        for size, preset in (("tiny", TINY), ("base", BASE_480)):
            name = f"{architecture}{suffix}_{size}"
            extra = TINY_VLT if architecture == "vlt" and size == "tiny" else {}
            _register(name=name, architecture=architecture, plugin=plugin, **preset, **extra)


_register_sadlr_family("lavt")
_register_sadlr_family("vlt")
_register_sadlr_family("lts")

# OpenAI's ViT-B/16 (ASDA's and CRIS's backbone) was trained with QuickGELU; the tiny model
# uses it too so that it trains the same network as the base one.
CLIP_B16 = {"vision_encoder": "clip", "clip_width": 768, "clip_layers": 12, "clip_heads": 12, "clip_patch": 16, "clip_embed_dim": 512,
            "clip_activation": "quick_gelu"}
CLIP_TEXT_BASE = {"text_encoder": "clip", "tokenizer": "clip", "text_dim": 512, "text_layers": 12, "text_heads": 8, "text_intermediate": 2048, "vocab_size": 49408}
# 9 layers so that ASDA's candidate groups (4-6, 7-9) exist; the BERT vocabulary size lets
# the tiny models share tokenizers (the CLIP text tower pools at the last real token).
CLIP_TINY = {"vision_encoder": "clip", "clip_width": 32, "clip_layers": 9, "clip_heads": 2, "clip_patch": 8, "clip_embed_dim": 32,
             "clip_activation": "quick_gelu"}
CLIP_TEXT_TINY = {"text_encoder": "clip", "tokenizer": "word", "text_dim": 32, "text_layers": 2, "text_heads": 2, "text_intermediate": 128, "vocab_size": 30522}
# ASDA Sec. 4.2: 416 px, N_c = 32 masks, n = 2 attention layers, 17 tokens with [SOS]/[EOS]
# for RefCOCO/RefCOCO+ (pass max_words=22 for G-Ref); 512 is the published aligner width.
_register(name="asda_base", architecture="asda", image_size=416, **CLIP_B16, **CLIP_TEXT_BASE,
          max_words=17, decoder_dim=512, transformer_layers=2, aligner_masks=32)
# refiner_hidden: the tiny refiner's widths, for head=sadlr (the other tiny models' too)
_register(name="asda_tiny", architecture="asda", image_size=64, **CLIP_TINY, **CLIP_TEXT_TINY,
          max_words=20, decoder_dim=32, transformer_layers=2, aligner_masks=8, refiner_hidden=TINY["refiner_hidden"])
# S2RM Sec. IV-B: 512 px, BERT-base (20 tokens), Swin pretrained on ImageNet-22K: Swin-B is
# its 384-px release (window 12, as PolyFormer, whose 512-px setting S2RM follows), Swin-T its
# only 22K release (window 7). The CASG widths are the Swin widths, so decoder_dim is unused.
_register(name="s2rm_tiny", architecture="s2rm", **TINY)
_register(name="s2rm_sadlr_tiny", architecture="s2rm", plugin="sadlr", **TINY)
_register(name="s2rm_base", architecture="s2rm", image_size=512, **SWIN_B, **BERT_BASE)
_register(name="s2rm_swint", architecture="s2rm", image_size=512, **SWIN_T, **BERT_BASE)
