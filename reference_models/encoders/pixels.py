"""The pixel statistics a model's inputs are normalised with, read from its vision encoder."""

from __future__ import annotations

from torch import nn

__all__ = ["pixel_statistics"]


def pixel_statistics(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the pictures ``model`` takes: what its vision encoder states.

    Every vision encoder carries its ``pixel_mean`` and ``pixel_std`` (as timm's
    ``pretrained_cfg`` does), so training, evaluation, prediction, pictures and studies ask
    the built model instead of choosing the numbers themselves. The first submodule (in
    :meth:`~torch.nn.Module.modules` order, ``model`` itself included) that states both
    is the one read.

    Args:
        model: a built model (or a vision encoder).

    Raises:
        ValueError: no submodule states its pixel statistics.

    Example:
        >>> from reference_models.encoders import SwinEncoder
        >>> encoder = SwinEncoder(32, embed_dim=8, depths=(1,), num_heads=(1,), window_size=4)
        >>> pixel_statistics(nn.Sequential(encoder))
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    """
    for module in model.modules():
        mean, std = getattr(module, "pixel_mean", None), getattr(module, "pixel_std", None)
        if mean is not None and std is not None:
            return tuple(mean), tuple(std)
    raise ValueError(f"model: no part of this {type(model).__name__} states its pixel_mean and pixel_std (a vision encoder does)")
