"""Run every rislayers layer where only torch and einops can be imported.

``python tests/layers_alone.py WHEEL_DIR`` puts the unpacked wheel first on the path, makes
every other third-party package of the project unimportable, then builds each
:class:`torch.nn.Module` of ``rislayers.__all__`` and runs one forward. It prints one JSON
object: where rislayers came from, the layers run, the layers this script has no inputs
for, and the error ``import reference_models`` gave. ``tests/test_layers_alone.py`` runs it.
"""

from __future__ import annotations

import json
import sys
import warnings

#: Packages of the extras (import names): none of them may be needed by the layers.
BLOCKED = ("timm", "open_clip", "transformers", "safetensors", "PIL", "tqdm", "numpy", "matplotlib",
           "torchvision", "pytest", "hypothesis", "sphinx", "onnx", "onnxruntime", "pycocotools")


class _Blocker:
    """A meta-path finder that answers as if the blocked packages were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


def _inputs():
    """``{layer name: (build, args)}`` at small sizes; b=2, c=8, d=6, 4x4 maps."""
    import torch

    import rislayers as R

    b, c, d, l = 2, 8, 6, 5
    feats, words = torch.randn(b, c, 4, 4), torch.randn(b, l, d)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    sentence = torch.randn(b, d)
    pyramid = [torch.randn(b, c, 16, 16), torch.randn(b, c, 8, 8), torch.randn(b, c, 4, 4), torch.randn(b, c, 2, 2)]
    # ASDA's aligner and its ablation variants share one constructor (lambdas: built only if present)
    aligners = {
        name: (lambda name=name: getattr(R, name)(c, d, num_heads=2, upsample_steps=1), (feats, words, mask))
        for name in ("SingleBranchAligner", "VisualOnlyAligner", "PublishedSingleBranchAligner", "PublishedVisualOnlyAligner")
    }
    aligners["PublishedDualBranchAligner"] = (
        lambda: R.PublishedDualBranchAligner(c, d, num_masks=4, num_heads=2, upsample_steps=1), (feats, words, mask)
    )
    return {
        **aligners,
        "DynamicQueryRefiner": (lambda: R.DynamicQueryRefiner(c, d, hidden_dims=(4, 8)), (feats, words, mask)),
        "PixelWordAttention": (lambda: R.PixelWordAttention(c, d), (feats, words, mask)),
        "LanguageGate": (lambda: R.LanguageGate(c), (feats, feats)),
        "AdaptiveLayerSelector": (lambda: R.AdaptiveLayerSelector(c, d, num_candidates=3), (torch.randn(b, 3, c, 4, 4), torch.randn(b, 3, c), sentence)),
        "ScaleWiseAggregator": (lambda: R.ScaleWiseAggregator(c, d, hidden_dim=4), (feats, feats, feats, sentence)),
        "PublishedScaleWiseAggregator": (lambda: R.PublishedScaleWiseAggregator(c, d, hidden_dim=4), (feats, feats, feats, sentence)),
        "DualBranchAligner": (lambda: R.DualBranchAligner(c, d, num_masks=4, num_heads=2, upsample_steps=1), (feats, words, mask)),
        "ConcatProjectFusion": (lambda: R.ConcatProjectFusion((c, c, c), d, c), (pyramid[:3], sentence)),
        "SpatialRecurrentCoparser": (lambda: R.SpatialRecurrentCoparser(c, d, size=(4, 4)), (feats, words, mask)),
        "CASGStage": (lambda: R.CASGStage(c, (c,), d), (pyramid[0], pyramid[1:2], sentence)),
        "CASGDecoder": (lambda: R.CASGDecoder((c, c, c, c), d), (pyramid, sentence)),
        "TileConcatFusion": (lambda: R.TileConcatFusion(c, d), (feats, words, mask)),
        "FPNDecoder": (lambda: R.FPNDecoder((c, c, c, c), dim=8), (pyramid,)),
        "DeepSupervisionLoss": (lambda: R.DeepSupervisionLoss(), ([torch.randn(b, 2, 4, 4)] * 3, torch.rand(b, 4, 4) > 0.5)),
    }


def main(wheel_dir: str) -> dict:
    """Import rislayers from ``wheel_dir`` with the extras blocked and run every layer once."""
    sys.meta_path.insert(0, _Blocker())
    sys.path.insert(0, wheel_dir)
    # torch imports numpy if it can and says so when it cannot; that is the point here.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

    import rislayers

    torch.manual_seed(0)
    layers = [n for n in rislayers.__all__ if isinstance(getattr(rislayers, n), type) and issubclass(getattr(rislayers, n), torch.nn.Module)]
    cases = _inputs()
    ran = []
    for name in layers:
        if name in cases:
            build, args = cases[name]
            with torch.no_grad():
                out = build().eval()(*args)
            assert out is not None, name
            ran.append(name)
    metrics = rislayers.RISMetrics()
    metrics.update(torch.rand(2, 4, 4) > 0.5, torch.rand(2, 4, 4) > 0.5)
    try:
        import reference_models  # noqa: F401

        refused = None
    except ImportError as err:
        refused = str(err)
    return {
        "rislayers": rislayers.__file__,
        "ran": ran,
        "no_inputs": sorted(set(layers) - set(cases)),
        "metrics": sorted(metrics.compute()),
        "reference_models": refused,
        "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED)),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
