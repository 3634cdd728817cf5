"""S2RM (Yang et al., "Spatial Semantic Recurrent Mining for Referring Image Segmentation"),
composed from rislayers, with an optional SADLR head.

How the paper's features flow (Sec. III-A to III-C, Fig. 1), and where each goes here:

- Swin gives four *pure* vision maps ``V_1..V_4`` at strides 4, 8, 16, 32 with the Swin
  widths ``C_i^vis``; BERT gives the words ``T`` (``(b, l, 768)``) and their padding mask.
  No language enters the backbone: S2RM is "installed on top of feature extractors", so
  one image's features could serve every expression about it.
- :class:`~rislayers.SpatialRecurrentCoparser` fuses the words into ``V_4`` only (Eq. 1-10:
  distribute language, coparse, balance, compress and add to ``V_4``): that is
  ``F_4^cross``. Its ``size`` is the stride-32 map, fixed by ``config.image_size``.
- :class:`~rislayers.CASGDecoder` receives ``[V_1, V_2, V_3, F_4^cross]`` and the sentence
  vector ``AvgP(T)``, the mean of the real words (Sec. III-C: "V1, V2, V3, F4cross and
  AvgP(T) are together sent to CASG"; BERT's [CLS] is not used). Its stages keep the Swin
  widths (``F_i^cross`` has ``C_i^vis`` channels) with 3x3 convs.
- The final mask: "F_1^cross is fed to another 2D convolution followed by 4x bilinear
  upsampling and sigmoid", i.e. one foreground logit at the input resolution. The sigmoid
  belongs to the loss (Dice on the sigmoid probability).
- with SADLR's refiner as ``config.head``: the decoder is built without its classifier
  (``num_classes=None``) and ``F_1^cross`` (stride 4, ``C_1^vis`` channels), the map the
  classifier would read, feeds :class:`~reference_models.models.heads.SegmentationHead`
  (SADLR's :class:`~rislayers.DynamicQueryRefiner`), exactly as SADLR replaces the
  baselines' classifiers; the loss is then SADLR's iteration-weighted 2-class Dice.
"""

from __future__ import annotations

import torch

from rislayers import ShapeError, SpatialRecurrentCoparser, check_shape, dice_loss

from ..base import RISModel, SegmentationOutput, build_swin, build_text_encoder, foreground_logit, upsample_to
from ..config import S2rmConfig
from ..registry import register_architecture
from .heads import SegmentationHead
from .parts import build_neck, build_pyramid_decoder, run_neck, run_pyramid_decoder

__all__ = ["S2RM"]

# Swin's last stage is at stride 32 of the image; the coparser is built for that map.
COPARSER_STRIDE = 32


@register_architecture("s2rm")
class S2RM(RISModel):
    """S2RM: Swin + BERT, the spatial recurrent coparser on stride 32, the CASG decoder.

    See the module docstring for the feature flow. The input size is fixed at
    construction (``config.image_size``, a multiple of 32): the coparser's balance and
    compress convolutions read one channel per position of the stride-32 map.

    Config parts read: ``vision`` (a Swin of four stages), ``text``, ``neck`` (the
    coparser, ``model.coparser``, or a Table IV/VII baseline, ``model.fusion``), ``decoder``
    (CASG or FPN), ``head`` (None, or SADLR's refiner), and ``norm`` (every conv norm).

    Args:
        config: a :class:`~reference_models.config.S2rmConfig`.

    Shape:
        - images: ``(b, 3, image_size, image_size)``
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput` with logits
          ``(b, 1, H, W)``; ``aux_logits`` is ``[decoder logits (b, 1, H, W)]``, or with
          SADLR one 2-class map ``(b, 2, H/4, W/4)`` per refinement iteration

    Example:
        >>> import torch
        >>> from reference_models import build_model
        >>> model = build_model("s2rm_tiny").eval()
        >>> ids = torch.randint(1, 1000, (2, 6))
        >>> out = model(torch.randn(2, 3, 64, 64), ids, torch.ones(2, 6, dtype=torch.long))
        >>> out.logits.shape, out.aux_logits[0].shape
        (torch.Size([2, 1, 64, 64]), torch.Size([2, 1, 64, 64]))
        >>> model.coparser.size
        (2, 2)
    """

    def __init__(self, config: S2rmConfig) -> None:
        super().__init__(config)
        if config.vision.kind != "swin":
            raise ValueError(f"vision_encoder: S2RM is built on Swin; expected 'swin', got {config.vision.kind!r}")
        if len(config.vision.depths) != 4:
            raise ValueError(f"swin_depths: S2RM decodes four Swin stages; expected 4 depths, got {config.vision.depths!r}")
        if config.image_size % COPARSER_STRIDE:
            raise ValueError(
                f"image_size: S2RM's coparser is built for the stride-{COPARSER_STRIDE} map, so the input size "
                f"must be a multiple of {COPARSER_STRIDE}; got {config.image_size}"
            )
        self.text_encoder = build_text_encoder(config.text)
        self.backbone = build_swin(config.vision, config.image_size)
        dims, text_dim = self.backbone.out_channels, self.text_encoder.out_dim
        neck = build_neck(config.neck, dims[-1], text_dim, size=config.image_size // COPARSER_STRIDE, norm=config.norm)
        # The paper's fusion keeps the name `coparser`; the Table IV/VII baselines are `fusion`.
        self.coparser = neck if isinstance(neck, SpatialRecurrentCoparser) else None
        self.fusion = None if self.coparser is not None else neck
        refiner = config.head is not None
        # With SADLR the refiner replaces the final classifier, so the decoder has none.
        self.decoder = build_pyramid_decoder(config.decoder, dims, text_dim, norm=config.norm, num_classes=None if refiner else 1)
        self.head = SegmentationHead(self.decoder.out_channels, text_dim, config.head, norm=config.norm) if refiner else None

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        try:
            check_shape(images, "b 3 H W", name="images", H=size, W=size)
        except ShapeError as err:
            raise ShapeError(
                f"{err}; S2RM's coparser is fixed to the stride-{COPARSER_STRIDE} map of the configured "
                f"image_size={size}: resize the images, or build the model with a matching image_size"
            ) from None

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        self._check_images(images)
        text = self.encode_text(input_ids, attention_mask)
        vis_1, vis_2, vis_3, vis_4 = self.backbone(images)
        # F_4^cross (Eq. 1-10), or a Table IV/VII baseline's fusion
        fused_4 = run_neck(self.coparser if self.coparser is not None else self.fusion, vis_4, text)
        decoded = run_pyramid_decoder(self.decoder, [vis_1, vis_2, vis_3, fused_4], text)  # Eq. 11-15
        size = images.shape[-2:]
        if self.head is None:
            # The decoder already ends with the paper's conv and 4x bilinear upsampling.
            return SegmentationOutput(logits=upsample_to(decoded, size), aux_logits=[decoded])
        logits = self.head(decoded, text)
        return SegmentationOutput(logits=upsample_to(foreground_logit(logits[-1]), size), aux_logits=logits)

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """Dice on the sigmoid foreground probability (S2RM), or SADLR's loss with the plug-in.

        S2RM's output is one channel followed by a sigmoid, so its "dice loss" is the
        single-class (foreground) soft Dice; averaging in a background Dice term is SADLR's
        2-class variant, used here only when SADLR's refiner is plugged in (its
        iteration-weighted 2-class Dice, ``loss_weights``).

        Args:
            output: this model's output.
            target: the ground-truth mask ``(b, H, W)``, bool or {0, 1}.

        Returns:
            A scalar float32 loss.
        """
        if self.head is not None:
            return self.head.loss(output.aux_logits, target)
        logits = output.aux_logits[-1]
        check_shape(target, "b H W", name="target", b=logits.shape[0])
        return dice_loss(upsample_to(logits, tuple(target.shape[-2:])), target, classes="foreground")
