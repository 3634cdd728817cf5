"""A reference model built on the device it is measured on, and random inputs for it."""

from __future__ import annotations

import sys

import torch

__all__ = ["build_on", "model_inputs"]


def build_on(config, device: torch.device | str) -> torch.nn.Module:
    """Build the model of ``config`` with its parameters created on ``device``.

    Building a ``_base`` model on the CPU and moving it costs seconds of random
    initialisation per model; under the device as the default device the initialisation
    runs there. Code that makes CPU tensors explicitly is still correct: the model is moved
    to ``device`` afterwards. Should a third-party constructor refuse the default device,
    the model is built on the CPU instead, with a note on stderr.

    Args:
        config: a :class:`~reference_models.ModelConfig`.
        device: where the model is measured.
    """
    from ..registry import build_from_config

    device = torch.device(device)
    try:
        with device:
            model = build_from_config(config)
    except (RuntimeError, TypeError, ValueError) as err:
        if device.type == "cpu":
            raise
        print(f"  building {config.name} on {device} failed ({type(err).__name__}: {err}); built on the CPU instead",
              file=sys.stderr, flush=True)
        model = build_from_config(config)
    return model.to(device)


def model_inputs(config, batch: int, device: torch.device, *, channels_last: bool = False):
    """Random images and a full-length sentence for a model: ``(images, input_ids, attention_mask)``.

    Args:
        config: the model's :class:`~reference_models.ModelConfig` (input size, words, vocabulary).
        batch: samples.
        device: where the tensors are made.
        channels_last: images in channels-last memory format.
    """
    images = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # Ids from a range every vocabulary has; every token real (the longest sentence).
    input_ids = torch.randint(1, min(1000, config.text.vocab_size), (batch, config.text.max_words), device=device)
    attention_mask = torch.ones(batch, config.text.max_words, dtype=torch.long, device=device)
    return images, input_ids, attention_mask
