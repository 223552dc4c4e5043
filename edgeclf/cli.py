"""The ``edgeclf`` command line: thin click commands that build a config and call the library.

Heavy modules (TensorFlow) are imported inside the commands that need them, so ``edgeclf predict``
and ``edgeclf webcam`` never load TensorFlow.
"""

from __future__ import annotations

import logging
import sys

import click

from edgeclf import __version__
from edgeclf._cli_bench import bench_cmd
from edgeclf._cli_export import export_cmd
from edgeclf._cli_runtime import predict_cmd, webcam_cmd

MODEL_CHOICES = ("cnn", "cnn-small", "mobilenet_v2")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "tf2onnx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgeclf")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """edgeclf: train an image classifier, prune + int8-quantize it, export TFLite/ONNX, run it on the edge.

    \b
    Typical flow:
      edgeclf train --model cnn --data cifar10            # -> export/cifar10-cnn/
      edgeclf export export/cifar10-cnn --quantize int8   # -> .tflite/.onnx + manifest.json
      edgeclf predict export/cifar10-cnn photo.jpg
      edgeclf bench export/cifar10-cnn
    """
    _setup_logging(verbose)


def _size(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
        if len(parts) == 1:
            parts *= 2
        h, w = parts
        return h, w
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected N or HxW, e.g. 32 or 32x32") from None


# Options that only some runs use: (applies when, CLI parameter names). Giving one explicitly for a
# run that would ignore it is refused instead of silently dropped.
_ONLY_FOR = (
    ("--model cnn", lambda model, augment: model == "cnn", ("width",)),
    ("--model mobilenet_v2", lambda model, augment: model == "mobilenet_v2",
     ("head_epochs", "fine_tune_layers", "fine_tune_lr", "weights", "alpha", "img_size")),
    ("--augment", lambda model, augment: augment, ("translate", "rotate", "zoom", "cutout")),
)


def _refuse_unused_options(ctx: click.Context, model_name: str, augment: bool) -> None:
    from click.core import ParameterSource

    for needs, applies, names in _ONLY_FOR:
        if applies(model_name, augment):
            continue
        given = [f"--{n.replace('_', '-')}" for n in names
                 if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with {needs}")


@cli.command("train")
@click.option("--model", "model_name", type=click.Choice(MODEL_CHOICES), default="cnn", show_default=True,
              help="Architecture: cnn (residual CNN for 32 px), cnn-small (reference notebook CNN), "
                   "mobilenet_v2 (ImageNet transfer learning).")
@click.option("--data", default="cifar10", show_default=True,
              help="cifar10, fashion_mnist (Keras loaders; Fashion-MNIST falls back to Debian's IDX files), or DIR "
                   "with train/ and test/ (or val/) class folders, or one class-folder tree.")
@click.option("--input-size", default=None, help="Resize images to HxW (default: the dataset's native size).")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Epochs (mobilenet_v2: fine-tuning epochs after --head-epochs). Default per model.")
@click.option("--head-epochs", type=click.IntRange(min=0), default=None,
              help="mobilenet_v2 phase 1: epochs training only the head, base frozen.")
@click.option("--fine-tune-layers", type=int, default=None,
              help="mobilenet_v2 phase 2: last N base layers made trainable (-1 = all; BatchNorm stays frozen).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step. Default per model.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None, help="Default per model.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (warm-up + cosine decay). Default per model.")
@click.option("--fine-tune-lr", type=float, default=None, help="mobilenet_v2 phase-2 peak learning rate.")
@click.option("--weight-decay", type=float, default=None, help="Decoupled weight decay. Default per model.")
@click.option("--label-smoothing", type=float, default=None, help="Cross-entropy label smoothing. Default per model.")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Early stopping on validation top-1 after N epochs without improvement (0 = off); "
                   "the best weights are always restored.")
@click.option("--val-split", type=float, default=0.1, show_default=True,
              help="Fraction of train held out (stratified) for validation.")
@click.option("--limit", type=click.IntRange(min=10), default=None,
              help="Stratified random subset of N training images (and N/5 test images) for quick runs.")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
              help="'balanced' weights the loss by inverse class frequency (imbalanced data).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="On-the-fly augmentation: flip + translate (+ --rotate/--zoom/--cutout).")
@click.option("--translate", type=click.IntRange(min=0), default=4, show_default=True, help="Max shift in pixels.")
@click.option("--rotate", type=float, default=0.0, show_default=True, help="Max rotation in degrees.")
@click.option("--zoom", type=float, default=0.0, show_default=True, help="Max zoom fraction.")
@click.option("--cutout", type=click.IntRange(min=0), default=0, show_default=True,
              help="Side in pixels of a random square erased per image (0 = off).")
@click.option("--width", type=click.IntRange(min=4), default=32, show_default=True, help="cnn: base channel width.")
@click.option("--weights", default="imagenet", show_default=True,
              help="mobilenet_v2 base weights: imagenet (Keras download), none, or a path to an .h5 file.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="mobilenet_v2 width multiplier.")
@click.option("--img-size", type=click.IntRange(min=32), default=96, show_default=True,
              help="mobilenet_v2 internal input size (the model resizes inside itself).")
@click.option("--dropout", type=float, default=None, help="Dropout before the classifier (default 0.2).")
@click.option("--mixed-precision", is_flag=True,
              help="Train in mixed_bfloat16 (only faster on CPUs with AMX/AVX512-BF16); saves float32.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--name", default="", help="Model directory name (default <dataset>-<model>).")
@click.option("--out", default="export", show_default=True, help="Output root; the model directory is OUT/NAME.")
def train_cmd(model_name, data, input_size, epochs, head_epochs, fine_tune_layers, batch_size, optimizer, lr,
              fine_tune_lr, weight_decay, label_smoothing, patience, val_split, limit, class_weight, augment,
              translate, rotate, zoom, cutout, width, weights, alpha, img_size, dropout, mixed_precision, seed,
              name, out):
    """Train a model and write its model directory (model.keras, metrics, plots, labels, config)."""
    from edgeclf.data import AugmentConfig, DataConfig, DataError
    from edgeclf.models import ModelConfig
    from edgeclf.models.mobilenet_v2 import WeightsError
    from edgeclf.train_config import RECIPES, ClassWeight, Optimizer, TrainConfig

    _refuse_unused_options(click.get_current_context(), model_name, augment)
    recipe = dict(RECIPES[model_name])
    given = dict(epochs=epochs, head_epochs=head_epochs, fine_tune_layers=fine_tune_layers, batch_size=batch_size,
                 optimizer=Optimizer(optimizer) if optimizer else None, lr=lr, fine_tune_lr=fine_tune_lr,
                 weight_decay=weight_decay, label_smoothing=label_smoothing)
    recipe.update({k: v for k, v in given.items() if v is not None})
    try:
        mcfg = ModelConfig(name=model_name, width=width, alpha=alpha, img_size=img_size, weights=weights,
                           **({"dropout": dropout} if dropout is not None else {}))
        dcfg = DataConfig(source=data, image_size=_size(input_size), val_split=val_split, limit=limit, seed=seed)
        acfg = (AugmentConfig(translate_px=translate, rotate_deg=rotate, zoom=zoom, cutout_px=cutout) if augment
                else AugmentConfig(flip=False, translate_px=0))
        cfg = TrainConfig(model=mcfg, data=dcfg, augment=acfg, patience=patience,
                          class_weight=ClassWeight(class_weight), mixed_precision=mixed_precision, seed=seed,
                          name=name, out=out, **recipe)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    from edgeclf.train import train

    try:
        result = train(cfg)
    except (DataError, WeightsError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted before the first epoch finished; nothing was written") from None
    m = result.metrics
    click.echo(f"{'interrupted; ' if result.interrupted else ''}test top-1 accuracy {m['top1_acc']:.4f} on "
               f"{m['n_test']} images, {m['params']:,} params, {m['flops_per_image'] / 1e6:.1f} MFLOPs/image, "
               f"trained in {m['train_seconds']:.0f} s -> {result.model_dir}")


@cli.command("eval")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--data", default=None, help="Evaluate on this data instead of the one in config.json.")
def eval_cmd(model_dir, data):
    """Re-evaluate MODEL_DIR/model.keras on the test split; rewrites metrics.json and confusion_matrix.png."""
    from pathlib import Path

    from edgeclf.data import DataError
    from edgeclf.eval_dir import evaluate_dir

    try:
        m = evaluate_dir(Path(model_dir), data)
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"test top-1 accuracy {m['top1_acc']:.4f} (loss {m['loss']:.4f}) on {m['n_test']} images")


cli.add_command(predict_cmd, "predict")
cli.add_command(webcam_cmd, "webcam")
cli.add_command(export_cmd, "export")
cli.add_command(bench_cmd, "bench")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeclf")


if __name__ == "__main__":
    main()
