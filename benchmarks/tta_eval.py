"""Flip test-time augmentation on a trained model's float original: top-1 of the image alone, of its
mirror alone, and of their averaged probabilities (what ``edgeclf predict --tta`` does), paired.

    python benchmarks/tta_eval.py MODEL_DIR [MODEL_DIR ...] --data ../shared/datasets/cifar10-jpg [--ensemble]
    python benchmarks/tta_eval.py MODEL_DIR --data ../shared/datasets/cifar10-jpg --img-size 160,176,144

For each model directory (``model.keras``) prints one line with the three top-1 values on the test
split and McNemar's exact test of TTA against the plain prediction (see ``paired_eval.py``). With
``--ensemble`` one more line: the mean of all the models' probabilities, plain and with flip TTA
(what ``edgeclf train --teacher A --teacher B [--teacher-tta]`` distils from). Writes nothing. The
runtime files' TTA top-1 comes from ``edgeclf bench DIR --tta``.

``--img-size`` (transfer models, whose first layer resizes to the backbone's input size): the same
weights with that resize set to each given size instead of the trained one, one line per size. It asks
whether a test-time size above the training size gains accuracy, as it does for models trained with
random-resized-crop augmentation (Touvron et al. 2019, "Fixing the train-test resolution discrepancy",
FixRes); edgeclf's recipes shift and flip but never scale.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from paired_eval import mcnemar_exact_p  # noqa: E402

from edgeclf._keras import tf  # noqa: E402
from edgeclf.data import DataConfig, open_test_split  # noqa: E402
from edgeclf.models.io import load_keras_model  # noqa: E402
from edgeclf.models.registry import build_model  # noqa: E402
from edgeclf.train.config import load_config  # noqa: E402
from edgeclf.train.evaluate import predict_source  # noqa: E402


class _Mirrored:
    """A model called on the horizontal mirror of its input (what predict_source needs of a model)."""

    def __init__(self, model) -> None:
        self.model, self.output_shape = model, model.output_shape

    def __call__(self, images, training=False):
        return self.model(tf.image.flip_left_right(images), training=training)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dirs", nargs="+", help="model directories (model.keras)")
    ap.add_argument("--data", required=True, help="dataset whose test split they are evaluated on")
    ap.add_argument("--ensemble", action="store_true", help="also the mean of all the models, plain and TTA")
    ap.add_argument("--img-size", help="comma-separated sizes: rebuild each transfer model's resize at each")
    args = ap.parse_args()
    test, _ = open_test_split(DataConfig(source=args.data, val_split=0.0), progress=False)
    sizes = [int(s) for s in args.img_size.split(",")] if args.img_size else [None]
    plain_sum = mirror_sum = 0
    for name in args.model_dirs:
        model = load_keras_model(name)
        for size in sizes:
            m = model if size is None else _resized(model, Path(name), size)
            probs, labels = predict_source(m, test)
            mirrored, labels_m = predict_source(_Mirrored(m), test)
            assert (labels == labels_m).all()
            if size is None:
                plain_sum, mirror_sum = plain_sum + probs, mirror_sum + mirrored
            _report(name if size is None else f"{name} at {size} px", probs, mirrored, labels)
    if args.ensemble:
        _report(f"ensemble of {len(args.model_dirs)}", plain_sum, mirror_sum, labels)


def _resized(model, model_dir: Path, size: int):
    """``model``'s weights in the same registered model built with ``img_size`` = ``size``."""
    cfg = load_config(model_dir).model
    if "resize" not in [layer.name for layer in model.layers]:
        raise SystemExit(f"{model_dir}: {cfg.name} has no resize layer (not a transfer model at another size)")
    copy = build_model(replace(cfg, img_size=size, weights="none"), tuple(model.input_shape[1:]),
                       int(model.output_shape[-1]))
    copy.set_weights(model.get_weights())
    return copy


def _report(name: str, probs, mirrored, labels) -> None:
    """One line: top-1 plain / mirror / flip TTA of (N, C) probabilities (or sums), McNemar TTA vs plain."""
    plain, tta = probs.argmax(1) == labels, (probs + mirrored).argmax(1) == labels
    only_plain, only_tta = int((plain & ~tta).sum()), int((tta & ~plain).sum())
    print(f"{name}: {len(labels)} test images; top-1 plain {plain.mean():.4f}, mirror "
          f"{(mirrored.argmax(1) == labels).mean():.4f}, flip TTA {tta.mean():.4f} "
          f"({100 * (tta.mean() - plain.mean()):+.2f} points; only plain right {only_plain}, only TTA right "
          f"{only_tta}, McNemar exact p = {mcnemar_exact_p(only_plain, only_tta):.3g})")


if __name__ == "__main__":
    main()
