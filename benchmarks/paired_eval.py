"""Compare two trained model directories on the same test images (an A/B of a training change).

    python benchmarks/paired_eval.py A_DIR B_DIR --data ../shared/datasets/cifar10-jpg

Prints each model's test top-1 and McNemar's exact test on the images where exactly one of them is
right (b: only A right, c: only B right; two-sided binomial test of b vs c with p = 0.5, McNemar
1947). A paired test sees far smaller differences than two separate accuracies' confidence intervals,
since both models get most images right or wrong together. Writes nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgeclf.data import DataConfig, load_dataset  # noqa: E402
from edgeclf.models.io import load_keras_model  # noqa: E402
from edgeclf.train.evaluate import predict_source  # noqa: E402


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min(b, c)) doubled, X ~ Binomial(b + c, 1/2)."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n) if n else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="model directory A (model.keras)")
    ap.add_argument("b", help="model directory B (model.keras)")
    ap.add_argument("--data", required=True, help="dataset whose test split both are evaluated on")
    args = ap.parse_args()
    ds = load_dataset(DataConfig(source=args.data, val_split=0.0), progress=False)
    right = {}
    for name in (args.a, args.b):
        probs, labels = predict_source(load_keras_model(name), ds.test)
        right[name] = probs.argmax(1) == labels
        print(f"{name}: test top-1 {right[name].mean():.4f} on {len(labels)} images")
    a, b = right[args.a], right[args.b]
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = mcnemar_exact_p(only_a, only_b)
    print(f"B - A: {100 * (b.mean() - a.mean()):+.2f} points; only A right {only_a}, only B right {only_b}, "
          f"McNemar exact p = {p:.3g}")


if __name__ == "__main__":
    main()
