"""VLT (Ding et al., ICCV 2021), written from its paper, with an optional SADLR head.

The top Swin map is fused with the sentence (tile and multiply) and given a 2-D sine
position encoding. A query generation module turns the fused map and the words into
``num_queries`` queries, each reading the sentence with its own visual context; a
transformer encoder contextualises the fused visual tokens and a transformer decoder
answers every query against them. A query balance module gives each answer a confidence.
How the weighted answers reach the upsampling decoder is ``config.vlt_response``:

- ``"modulate"``: their confidence-weighted mean modulates the encoder's visual tokens at
  stride 32, and :class:`PyramidDecoder` climbs the Swin pyramid to stride 4;
- ``"spatial"`` (VLT's released code): the transformer runs on a stride-16 fused map, each
  weighted answer becomes an ``h x w`` response map
  (:class:`~reference_models.models.vlt_parts.QueryResponseMaps`), and
  :class:`~reference_models.models.vlt_parts.ResponseDecoder` reads those ``k`` maps alone
  up to stride 4.

Either way the result is the stride-4 map of ``decoder_dim`` channels that the baseline's
1x1 classifier (or SADLR's refiner, ``vlt_sadlr``) turns into a mask.

SADLR Table 3 retrains VLT with Swin-B + BERT-base at 480 (the original used DarkNet-53 +
GRU at 416), so the sizes below are ours, checked against that table's cost (142.6 G,
148.6 G with SADLR; the project counts MACs): with Swin-B + BERT-base at 480,
``"modulate"`` counts 148.5 GMACs (+SADLR: 154.4) and ``"spatial"`` 143.3 (+SADLR: 149.2)
with no size tuned to the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from rislayers import ShapeError, check_shape
from rislayers.functional import masked_softmax, sine_position_encoding_2d
from rislayers.shapes import check_mask

from ..base import RISModel, SegmentationOutput, build_swin, build_text_encoder, foreground_logit, upsample_to
from ..config import AlignerConfig, ClassifierHeadConfig, OwnDecoderConfig, VltConfig
from ..registry import register_architecture
from .heads import SegmentationHead
from .parts import AlignerDecoder, build_neck, build_pyramid_decoder, run_neck, run_pyramid_decoder
from .lavt import ConvBNReLU
from .vlt_parts import RESPONSE_TOP_CONVS, QueryResponseMaps, ResponseDecoder

__all__ = [
    "VLT",
    "TransformerLayer",
    "QueryGeneration",
    "QueryBalance",
    "PyramidDecoder",
    "attention_heads",
    "DECODER_CONVS",
    "FFN_RATIO",
]

# 3x3 conv-BN-ReLU layers per decoder stage (strides 16, 8, 4). Neither paper gives decoder
# sizes for the Swin-B re-implementation; one conv per stage at width decoder_dim puts the
# model 4% above SADLR Table 3's 142.6 GMACs (two per stage, LAVT's choice, would be +28%).
DECODER_CONVS = (1, 1, 1)
# Transformer feed-forward width as a multiple of the model width (the usual 4x).
FFN_RATIO = 4


def attention_heads(dim: int) -> int:
    """Heads for a ``dim``-wide transformer: the most of 8, 4, 2, 1 that keeps heads >= 32 wide.

    Args:
        dim: the transformer width (``decoder_dim``): 512 -> 8 heads, 32 -> 1 head.

    Example:
        >>> attention_heads(512), attention_heads(64), attention_heads(32)
        (8, 2, 1)
    """
    for heads in (8, 4, 2):
        if dim % heads == 0 and dim // heads >= 32:
            return heads
    return 1


class _Attention(nn.Module):
    """Multi-head attention written with scaled_dot_product_attention (counted by FLOP tools)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        split = "b n (heads e) -> b heads n e"
        q = rearrange(self.query(query), split, heads=self.num_heads)
        k = rearrange(self.key(key), split, heads=self.num_heads)
        v = rearrange(self.value(value), split, heads=self.num_heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(rearrange(attended, "b heads n e -> b n (heads e)"))


class TransformerLayer(nn.Module):
    """A post-norm transformer layer (DETR form): self-attention, optional cross-attention, MLP.

    Position encodings are added to the queries and keys of every attention, not to the
    values, as in DETR; VLT's encoder and decoder and LTS's localization encoder use it.

    Args:
        dim: token width ``c``.
        num_heads: attention heads (``dim`` must be divisible by it).
        ffn_dim: hidden width of the MLP.
        cross_attention: add a cross-attention from the tokens to ``memory`` (a decoder layer).

    Shape:
        - tokens: ``(b, n, c)``; pos: broadcastable to tokens or None
        - memory: ``(b, m, c)``; memory_pos: broadcastable to memory or None
        - output: ``(b, n, c)``

    Example:
        >>> layer = TransformerLayer(32, num_heads=2, ffn_dim=64)
        >>> layer(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 32])
    """

    def __init__(self, dim: int, *, num_heads: int, ffn_dim: int, cross_attention: bool = False) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"num_heads: expected a positive divisor of dim={dim}; got {num_heads}")
        if ffn_dim < 1:
            raise ValueError(f"ffn_dim: expected a positive integer; got {ffn_dim}")
        self.self_attn = _Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, num_heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        axes = check_shape(tokens, "b n c", name="tokens", c=self.norm1.normalized_shape[0])
        if self.cross_attn is not None:
            check_shape(memory, "b m c", name="memory", bound=axes)
        with_pos = tokens if pos is None else tokens + pos
        tokens = self.norm1(tokens + self.self_attn(with_pos, with_pos, tokens))
        if self.cross_attn is not None:
            keys = memory if memory_pos is None else memory + memory_pos
            with_pos = tokens if pos is None else tokens + pos
            tokens = self.norm2(tokens + self.cross_attn(with_pos, keys, memory))
        return self.norm3(tokens + self.mlp(tokens))


class QueryGeneration(nn.Module):
    """VLT's query generation module: ``k`` queries, each a visually guided reading of the words.

    Our reading of the paper: ``k`` spatial attention maps (softmax over the ``n``
    positions of a 1x1-conv projection of the fused map) pool ``k`` visual context vectors
    ``v_q``; every word feature is multiplied by each context vector, a linear score on that
    product gives the query's attention over the words (padding words masked out), and the
    query is the attention-weighted sum of the projected words, layer-normalised. Different
    visual contexts thus emphasise different words. (The original flattens each spatial map
    and projects it with a fully connected layer, which ties the module to one input size;
    attention pooling keeps it size-agnostic.)

    Args:
        dim: channels ``c`` of the fused map and of the queries.
        text_dim: word channels ``d``.
        num_queries: ``k`` (VLT: 16).
        norm: the spatial maps' convolution norm, ``"batch"`` or ``"group"``.

    Shape:
        - vis: ``(b, c, h, w)``
        - words: ``(b, l, d)``; word_mask: ``(b, l)`` bool or None
        - output: ``(b, k, c)``

    Example:
        >>> qgm = QueryGeneration(32, 24, num_queries=4)
        >>> qgm(torch.randn(2, 32, 5, 5), torch.randn(2, 7, 24)).shape
        torch.Size([2, 4, 32])
    """

    def __init__(self, dim: int, text_dim: int, *, num_queries: int, norm: str = "batch") -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries: expected a positive integer; got {num_queries}")
        self.dim, self.text_dim, self.num_queries = dim, text_dim, num_queries
        # no bias on the last conv: a per-query constant cancels in the softmax over positions
        self.spatial_maps = nn.Sequential(ConvBNReLU(dim, dim, kernel=1, norm=norm), nn.Conv2d(dim, num_queries, 1, bias=False))
        self.word_proj = nn.Linear(text_dim, dim)
        # no bias: a constant added to every word's score cancels in the softmax
        self.word_score = nn.Linear(dim, 1, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, vis: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> torch.Tensor:
        axes = check_shape(vis, "b c h w", name="vis", c=self.dim)
        check_shape(words, "b l d", name="words", bound=axes, d=self.text_dim)
        check_mask(word_mask, name="word_mask", bound=axes)
        where = rearrange(self.spatial_maps(vis), "b k h w -> b k (h w)").softmax(-1)
        context = torch.einsum("bkn,bcn->bkc", where, rearrange(vis, "b c h w -> b c (h w)"))
        projected = self.word_proj(words)
        guided = rearrange(context, "b k c -> b k 1 c") * rearrange(projected, "b l c -> b 1 l c")
        scores = self.word_score(guided).squeeze(-1)
        # rislayers' word softmax accumulates in float32; the einsum below reads the scores' dtype
        emphasis = masked_softmax(scores, word_mask, dim=-1).to(scores.dtype)
        return self.norm(torch.einsum("bkl,blc->bkc", emphasis, projected))


class QueryBalance(nn.Module):
    """VLT's query balance module: a confidence in ``(0, 1)`` per query from (query, answer).

    Args:
        dim: query width ``c``.

    Shape:
        - queries, responses: ``(b, k, c)``
        - output: ``(b, k)``

    Example:
        >>> QueryBalance(32)(torch.randn(2, 4, 32), torch.randn(2, 4, 32)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.score = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))

    def forward(self, queries: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        axes = check_shape(queries, "b k c", name="queries", c=self.dim)
        check_shape(responses, "b k c", name="responses", bound=axes)
        return torch.sigmoid(self.score(torch.cat([queries, responses], dim=-1))).squeeze(-1)


class PyramidDecoder(nn.Module):
    """Upsampling decoder: from the coarsest map, upsample, concatenate the next finer map,
    then ``convs[i]`` 3x3 conv-BN-ReLU layers, down to the finest map's resolution.

    Args:
        in_dims: channels of the maps, finest first (the coarsest is the decoder's input).
        dim: output and hidden width.
        convs: conv layers per stage, coarse to fine (one entry per skip map).
        norm: the convolutions' norm, ``"batch"`` or ``"group"``.

    Shape:
        - feats: maps finest first, ``(b, in_dims[i], h_i, w_i)``
        - output: ``(b, dim, h_0, w_0)``

    Example:
        >>> dec = PyramidDecoder((8, 16, 32), 16, convs=(2, 1))
        >>> dec([torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]).shape
        torch.Size([1, 16, 16, 16])
    """

    def __init__(self, in_dims: Sequence[int], dim: int, *, convs: Sequence[int], norm: str = "batch") -> None:
        super().__init__()
        in_dims = list(in_dims)
        if len(convs) != len(in_dims) - 1 or any(n < 1 for n in convs):
            raise ValueError(f"convs: expected {len(in_dims) - 1} positive counts (one per skip map); got {tuple(convs)}")
        blocks = []
        prev = in_dims[-1]
        for skip, count in zip(reversed(in_dims[:-1]), convs):
            layers = [ConvBNReLU(prev + skip, dim, norm=norm)] + [ConvBNReLU(dim, dim, norm=norm) for _ in range(count - 1)]
            blocks.append(nn.Sequential(*layers))
            prev = dim
        self.blocks = nn.ModuleList(blocks)
        self.in_dims = tuple(in_dims)
        #: channels of the decoded map.
        self.out_channels = dim

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.in_dims):
            raise ShapeError(f"feats: expected {len(self.in_dims)} maps (finest first); got {len(feats)}")
        batch = check_shape(feats[0], "b c h w", name="feats[0]", c=self.in_dims[0])["b"]
        for i in range(1, len(feats)):
            check_shape(feats[i], "b c h w", name=f"feats[{i}]", bound={"b": batch}, c=self.in_dims[i])
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            x = block(torch.cat([upsample_to(x, skip.shape[-2:]), skip], dim=1))
        return x


@register_architecture("vlt")
class VLT(RISModel):
    """VLT with a 2-class classifier, or SADLR's refiner as its head.

    Uses ``decoder_dim`` (transformer width ``C`` and decoder width; must be a multiple of
    4 for the sine position encoding), ``num_queries``, ``transformer_layers`` (depth of
    both the encoder and the decoder) and ``vlt_response``. Heads: :func:`attention_heads`;
    MLP width ``FFN_RATIO * C``; no dropout.

    Steps: top Swin map ``F4`` -> 1x1 conv-BN-ReLU to ``C`` -> times ``tanh(Linear(sentence))``
    tiled over the map (the fused map). ``vlt_response="spatial"`` then upsamples it to
    stride 16, concatenates the Swin map ``F3`` and applies a 1x1 conv-BN-ReLU to ``C``
    (VLT's code runs its transformer at stride 16). The fused map + sine position encoding
    -> encoder; the query generation module reads the fused map and the words; the decoder
    answers the generated queries against the encoder memory; the query balance module
    weighs the answers. ``"modulate"``: the memory tokens are multiplied channel-wise by the
    confidence-weighted mean answer, and the modulated map and the Swin maps of strides 16,
    8, 4 go through :class:`PyramidDecoder` (``DECODER_CONVS`` convs per stage).
    ``"spatial"``: :class:`~reference_models.models.vlt_parts.QueryResponseMaps` turns the
    weighted answers into ``k`` maps at stride 16 and
    :class:`~reference_models.models.vlt_parts.ResponseDecoder` (``RESPONSE_TOP_CONVS``
    convs, then one per upsampling) reads them alone. Both end at ``(b, C, H/4, W/4)``.

    Args:
        config: a :class:`~reference_models.config.VltConfig`.

    Shape:
        - images: ``(b, 3, H, W)``
        - input_ids, attention_mask: ``(b, l)``
        - output: :class:`~reference_models.base.SegmentationOutput`, logits ``(b, 1, H, W)``;
          aux_logits: the head's 2-class logits at stride 4 (one per SADLR iteration)

    Example:
        >>> from reference_models import build_model
        >>> ids = torch.randint(1, 100, (2, 6))
        >>> for response in ("modulate", "spatial"):
        ...     model = build_model("vlt_tiny", vlt_response=response).eval()
        ...     out = model(torch.randn(2, 3, 64, 64), ids, torch.ones(2, 6, dtype=torch.long))
        ...     print(tuple(out.logits.shape), tuple(out.aux_logits[-1].shape))
        (2, 1, 64, 64) (2, 2, 16, 16)
        (2, 1, 64, 64) (2, 2, 16, 16)
    """

    def __init__(self, config: VltConfig) -> None:
        super().__init__(config)
        dim, query, norm = config.query.dim, config.query, config.norm
        if dim % 4 != 0:
            raise ValueError(f"decoder_dim: VLT needs a multiple of 4 (2-D sine position encoding); got {dim}")
        self.response = query.response
        spatial = self.response == "spatial"
        self.text_encoder = build_text_encoder(config.text)
        self.backbone = build_swin(config.vision, config.image_size)
        dims, text_dim = self.backbone.out_channels, self.text_encoder.out_dim
        if spatial and len(dims) < 3:
            raise ValueError(f"swin_depths: vlt_response='spatial' needs at least 3 Swin stages; got {len(dims)}")
        heads, ffn = attention_heads(dim), FFN_RATIO * dim
        # "modulate" builds exactly the modules of the version before the option, in the
        # same order, so a seed gives it the same weights.
        self.vis_proj = ConvBNReLU(dims[-1], dim, kernel=1, norm=norm)
        self.text_proj = nn.Linear(text_dim, dim)
        if spatial:
            self.fuse_16 = ConvBNReLU(dim + dims[-2], dim, kernel=1, norm=norm)
        self.query_generation = QueryGeneration(dim, text_dim, num_queries=query.num_queries, norm=norm)
        self.encoder = nn.ModuleList(TransformerLayer(dim, num_heads=heads, ffn_dim=ffn) for _ in range(query.layers))
        self.decoder = nn.ModuleList(
            TransformerLayer(dim, num_heads=heads, ffn_dim=ffn, cross_attention=True) for _ in range(query.layers)
        )
        self.query_balance = QueryBalance(dim)
        if spatial:
            self.response_maps = QueryResponseMaps(dim)
            self.mask_decoder = ResponseDecoder(query.num_queries, dim, top_convs=RESPONSE_TOP_CONVS, steps=len(dims) - 2, norm=norm)
        elif isinstance(config.decoder, OwnDecoderConfig):
            self.mask_decoder = PyramidDecoder((*dims[:-1], dim), dim, convs=DECODER_CONVS, norm=norm)
        elif isinstance(config.decoder, AlignerConfig):  # ASDA's aligner over the modulated stride-32 map and the words
            predicts, stride = isinstance(config.head, ClassifierHeadConfig), self.backbone.strides[-1]
            self.mask_decoder = AlignerDecoder(config.decoder, dim, text_dim, stride=stride, norm=norm, predicts=predicts)
        else:  # a plug-in decoder over the Swin maps and the modulated stride-32 map (CASG or FPN)
            self.mask_decoder = build_pyramid_decoder(config.decoder, (*dims[:-1], dim), text_dim, norm=norm, num_classes=None)
        from_logit = isinstance(self.mask_decoder, AlignerDecoder) and self.mask_decoder.predicts
        self.head = SegmentationHead(self.mask_decoder.out_channels, text_dim, config.head, from_logit=from_logit, norm=norm)
        self.neck = None
        if config.neck is not None:  # a plug-in on the stride-32 map, after VLT's own modules
            size = config.image_size // self.backbone.strides[-1]
            self.neck = build_neck(config.neck, dims[-1], text_dim, size=size, norm=norm)

    def _answers(self, fused: torch.Tensor, text) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, encoder, decoder, balance: memory ``(b, n, C)``, answers ``(b, k, C)``, confidences ``(b, k)``."""
        _, _, h, w = fused.shape
        queries = self.query_generation(fused, text.words, text.word_mask)
        pos = rearrange(
            sine_position_encoding_2d(h, w, fused.shape[1], device=fused.device, dtype=fused.dtype), "c h w -> 1 (h w) c"
        )
        memory = rearrange(fused, "b c h w -> b (h w) c")
        for layer in self.encoder:
            memory = layer(memory, pos)
        responses = queries
        for layer in self.decoder:
            responses = layer(responses, memory=memory, memory_pos=pos)
        return memory, responses, self.query_balance(queries, responses)

    def _decode(self, pyramid: Sequence[torch.Tensor], text) -> torch.Tensor:
        """The stride-4 decoder map ``(b, C, H/4, W/4)`` from the Swin maps and the text."""
        top = pyramid[-1]
        fused = self.vis_proj(top) * rearrange(torch.tanh(self.text_proj(text.sentence)), "b c -> b c 1 1")
        if self.response == "spatial":
            fused = self.fuse_16(torch.cat([upsample_to(fused, pyramid[-2].shape[-2:]), pyramid[-2]], dim=1))
            _, responses, confidence = self._answers(fused, text)
            maps = self.response_maps(responses, confidence, size=fused.shape[-2:])
            return self.mask_decoder(maps, [p.shape[-2:] for p in reversed(pyramid[:-2])])
        memory, responses, confidence = self._answers(fused, text)
        answer = torch.einsum("bk,bkc->bc", confidence, responses) / confidence.shape[1]
        modulated = rearrange(memory * rearrange(answer, "b c -> b 1 c"), "b (h w) c -> b c h w", h=top.shape[2])
        if isinstance(self.mask_decoder, PyramidDecoder):
            return self.mask_decoder([*pyramid[:-1], modulated])
        if isinstance(self.mask_decoder, AlignerDecoder):
            return self.mask_decoder(modulated, text)
        return run_pyramid_decoder(self.mask_decoder, [*pyramid[:-1], modulated], text)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        self.check_inputs(images, input_ids, attention_mask)
        text = self.encode_text(input_ids, attention_mask)
        pyramid = list(self.backbone(images))
        if self.neck is not None:
            pyramid[-1] = run_neck(self.neck, pyramid[-1], text)
        logits = self.head(self._decode(pyramid, text), text)
        final = upsample_to(foreground_logit(logits[-1]), images.shape[-2:])
        return SegmentationOutput(logits=final, aux_logits=logits)

    def loss(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """2-class Dice on the prediction (iteration-weighted over SADLR's iterations)."""
        return self.head.loss(output.aux_logits, target)
