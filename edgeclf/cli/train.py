"""``edgeclf train`` and ``edgeclf eval``: build a TrainConfig from the model's recipe and the options
given, call the library, print the result. TensorFlow is imported only inside the commands."""

from __future__ import annotations

import dataclasses

import click

from edgeclf.cli._errors import user_errors
from edgeclf.cli.options import parse_size
from edgeclf.errors import ConfigError
from edgeclf.models import MODEL_OPTIONS, MODELS
from edgeclf.train.config import DistillConfig

#: DistillConfig's defaults, for the help texts.
_DISTILL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DistillConfig)}

_AUGMENT_OPTIONS = ("translate", "rotate", "zoom", "cutout")
_TRAIN_FIELDS = ("epochs", "head_epochs", "fine_tune_layers", "train_bn", "batch_size", "optimizer", "lr", "fine_tune_lr",
                 "weight_decay", "label_smoothing", "mixup_alpha", "ema_decay", "progressive_size",
                 "progressive_fraction",
                 "mixed_precision")
_MODEL_FIELDS = ("width", "logit_scale", "stem", "alpha", "img_size", "weights", "dropout", "bn_batch_stats")
_DISTILL_OPTIONS = {"distill_alpha": "alpha", "temperature": "temperature", "teacher_targets": "targets",
                    "teacher_tta": "tta"}


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _given(ctx: click.Context, names) -> list[str]:
    """The parameters among ``names`` set on the command line."""
    from click.core import ParameterSource

    return [n for n in names if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]


def _refuse_unused_options(ctx: click.Context, spec, augment: bool, teacher: bool) -> None:
    """Refuse options the run would ignore (another model's options; augmentation amounts with
    --no-augment; distillation settings without --teacher) instead of silently dropping them.
    Which model options apply comes from the model spec."""
    by_needs: dict[str, list[str]] = {}
    for n in _given(ctx, sorted(MODEL_OPTIONS - spec.options)):
        owners = " or ".join(m for m, s in MODELS.items() if n in s.options)
        by_needs.setdefault(f"--model {owners}", []).append(_flag(n))
    if not augment and _given(ctx, _AUGMENT_OPTIONS):
        by_needs["--augment"] = [_flag(n) for n in _given(ctx, _AUGMENT_OPTIONS)]
    if not teacher and _given(ctx, _DISTILL_OPTIONS):
        by_needs["--teacher"] = [_flag(n) for n in _given(ctx, _DISTILL_OPTIONS)]
    for needs, flags in by_needs.items():
        raise click.UsageError(f"{', '.join(flags)} only appl{'ies' if len(flags) == 1 else 'y'} with {needs}")


def _model_help() -> str:
    return "Architecture. " + "; ".join(f"{n}: {s.summary}" for n, s in MODELS.items()) + "."


def _input_size_help() -> str:
    caps = [f"{n}: {s.auto_input_size} px" for n, s in MODELS.items()
            if "img_size" not in s.options and s.auto_input_size]
    if any("img_size" in s.options for s in MODELS.values()):
        caps.append("transfer models: their --img-size")
    return ("Resize images to HxW. Default: the images' own size, reduced for large images (image folders) to what "
            f"the model needs on the longer side ({', '.join(caps)}); the size chosen is logged.")


def _img_size_help() -> str:
    sizes: dict[int, list[str]] = {}
    for n, s in MODELS.items():
        if "img_size" in s.options:
            sizes.setdefault(int(s.defaults["img_size"]), []).append(n)
    per = "; ".join(f"{', '.join(names)}: {px}" for px, names in sizes.items())
    return f"Transfer models: internal input size in pixels, resized inside the model [default per model: {per}]."


def _resume(ctx: click.Context, path: str) -> None:
    """``--resume PATH``: continue the checkpointed run; every other option is refused."""
    others = [_flag(n) for n in _given(ctx, [p.name for p in ctx.command.params if p.name != "resume"])]
    if others:
        raise click.UsageError(f"--resume continues a run with its own configuration (from its checkpoint); "
                               f"drop {', '.join(others)}")
    from edgeclf.train import resume

    try:
        result = resume(path)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted before an epoch finished; the checkpoint is unchanged") from None
    _echo_result(result)


def _echo_result(result) -> None:
    if not result.is_chief:
        click.echo(f"worker done; the chief wrote {result.model_dir}")
        return
    m = result.metrics
    click.echo(f"{'interrupted; ' if result.interrupted else ''}test top-1 accuracy {m['top1_acc']:.4f} on "
               f"{m['n_test']} images, {m['params']:,} params, {m['flops_per_image'] / 1e6:.1f} MFLOPs/image, "
               f"trained in {m['train_seconds']:.0f} s -> {result.model_dir}")
    if result.interrupted:
        click.echo(f"continue with: edgeclf train --resume {result.model_dir}")


def _time_budget(hours: float | None) -> dict:
    """``--time-budget`` as from_recipe fields: none given = the recipe's ({}), 0 = no budget."""
    if hours is None:
        return {}
    return {"time_budget_hours": hours or None}


@click.command("train")
@click.option("--model", "model_name", type=click.Choice(list(MODELS)), default="cnn", show_default=True,
              help=_model_help())
@click.option("--data", default="cifar10", show_default=True,
              help="cifar10, fashion_mnist (Keras loaders; Fashion-MNIST falls back to Debian's IDX files), or DIR "
                   "with train/ and test/ (or val/) class folders, or one class-folder tree.")
@click.option("--input-size", default=None, help=_input_size_help())
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Epochs (mobilenet_v2: fine-tuning epochs after --head-epochs). Default per model.")
@click.option("--head-epochs", type=click.IntRange(min=0), default=None,
              help="mobilenet_v2 phase 1: epochs training only the head, base frozen.")
@click.option("--fine-tune-layers", type=int, default=None,
              help="mobilenet_v2 phase 2: last N base layers made trainable (-1 = all).")
@click.option("--train-bn/--no-train-bn", "train_bn", default=None,
              help="Transfer models, phase 2: train BatchNorm scale and offset (gamma, beta) too; its moving "
                   "statistics never change (inference mode) unless --bn-batch-stats. Default per model "
                   "(mobilenet_v2: on; its int8 PTQ files lose more, so export adds QAT, docs/training.md).")
@click.option("--bn-batch-stats/--no-bn-batch-stats", "bn_batch_stats", default=None,
              help="Transfer models, phase 2 with --train-bn: BatchNorm in training mode, normalising with each "
                   "batch's statistics and updating its moving statistics (recalibrated on 2,048 training "
                   "images first, output unchanged). Default: off (inference mode).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step. Default per model.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None, help="Default per model.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (warm-up + cosine decay). Default per model.")
@click.option("--fine-tune-lr", type=float, default=None, help="mobilenet_v2 phase-2 peak learning rate.")
@click.option("--weight-decay", type=float, default=None, help="Decoupled weight decay. Default per model.")
@click.option("--label-smoothing", type=float, default=None, help="Cross-entropy label smoothing. Default per model.")
@click.option("--mixup", "mixup_alpha", type=click.FloatRange(min=0), default=None, metavar="ALPHA",
              help="Mixup (Zhang et al. 2018): blend each training batch with its reverse, images and labels, "
                   "lam ~ Beta(ALPHA, ALPHA) per batch; BiT fine-tunes with 0.1. 0 = off. Not with --teacher. "
                   "Default per model (0).")
@click.option("--ema-decay", "ema_decay", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              metavar="DECAY",
              help="Keep an exponential moving average of the weights in the last phase (decay per step, "
                   "e.g. 0.9995 = an average over ~2,000 steps), validate with it and save it as the model. "
                   "0 = off. Default per model.")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Early stopping on validation top-1 after N epochs without improvement (0 = off); "
                   "the best weights are always restored.")
@click.option("--progressive-size", "progressive_size", type=click.IntRange(min=32), default=None, metavar="PX",
              help="Progressive resizing (transfer models): train the first --progressive-fraction of the last "
                   "phase's epochs at PX, the rest at --img-size (faster epochs; the model is saved, exported "
                   "and evaluated at --img-size). Default: off.")
@click.option("--progressive-fraction", "progressive_fraction", type=click.FloatRange(0, 1, min_open=True,
              max_open=True), default=None, help="Share of the last phase's epochs at --progressive-size "
                                                 "(default 0.5).")
@click.option("--time-budget", "time_budget", type=click.FloatRange(min=0), default=None,
              metavar="HOURS",
              help="Wall-clock budget of the training in hours (e.g. 2 or 0.5): after each epoch of the last phase the "
                   "epochs still to run are re-planned from the measured epoch time so the run ends within it, and "
                   "the learning-rate schedule is shortened to still decay to 0 (or lengthened again when later epochs "
                   "measure faster; never more epochs than --epochs; as Ultralytics' time=). The epochs run are in "
                   "metrics.json. 0 = no budget. Default per model (cnn: 2 h for its 90 epochs, mobilenet_v2: 2 h "
                   "for its 14 fine-tune epochs; the others: none).")
@click.option("--val-split", type=float, default=0.1, show_default=True,
              help="Fraction of train held out (stratified) for validation.")
@click.option("--limit", type=click.IntRange(min=10), default=None,
              help="Stratified random subset of N training images (and N/5 test images) for quick runs.")
@click.option("--stream/--no-stream", "stream", default=None,
              help="Image folders: decode the images from disk batch by batch during training (tf.data, parallel "
                   "decode, bounded memory) instead of all into memory first. Default: stream when the decoded images "
                   "would exceed 2 GiB (or a quarter of the RAM); EDGECLF_STREAM=1/0 sets the default.")
@click.option("--cache", default=None, metavar="DIR",
              help="Streaming: cache the decoded, resized images in DIR (written in the first epoch, reused by later "
                   "epochs and runs on the same files). Implies --stream.")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none",
              show_default=True,
              help="tf.distribute: mirrored = every GPU of this machine; multi-worker = the machines in TF_CONFIG "
                   "(run the same command on each; docs/distributed.md). --batch-size is the GLOBAL batch, split "
                   "across replicas, and --lr is used as given (not rescaled): to grow the batch with the number of "
                   "replicas, scale --lr linearly yourself. Only the chief writes OUT/NAME.")
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
@click.option("--logit-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="cnn: constant factor on the logits before the softmax (ResNet-9 1/8, airbench 1/9); lets the "
                   "convolutions train at a higher --lr. [default: cnn, cnn-resnet9: 0.125]")
@click.option("--stem", type=click.Choice(["conv", "whiten"]), default=None,
              help="cnn: first layer. conv: 3x3 Conv-BN-ReLU; whiten: airbench94's frozen 2x2 patch-whitening "
                   "convolution, computed from 5,000 training images before the first epoch. [default: conv]")
@click.option("--weights", default=None,
              help="Pretrained base weights: imagenet (Keras download, default), none, or a path to an .h5 file.")
@click.option("--alpha", type=float, default=None, help="MobileNet width multiplier [default: 1.0].")
@click.option("--img-size", type=click.IntRange(min=32), default=None,
              help=_img_size_help())
@click.option("--dropout", type=float, default=None, help="Dropout before the classifier (default 0.2).")
@click.option("--mixed-precision/--no-mixed-precision", default=None,
              help="Train in mixed_bfloat16 (saves float32). Default per model: cnn and cnn-resnet9 use it where "
                   "the CPU has AMX-BF16 or AVX512-BF16 (measured 1.7-2.1x faster there); the others train in "
                   "float32 (no faster in bf16).")
@click.option("--teacher", multiple=True, metavar="MODEL_DIR",
              help="Knowledge distillation (Hinton et al. 2015): also learn the soft outputs of this trained edgeclf "
                   "model (same input size and classes as the student). Repeat for an ensemble teacher (the mean of "
                   "the teachers' probabilities). The saved model is the plain student.")
@click.option("--distill-alpha", type=float, default=None,
              help="Weight A in (0, 1] of the distillation term; the label cross-entropy gets 1 - A "
                   f"[default: {_DISTILL_DEFAULTS['alpha']:g}].")
@click.option("--temperature", type=float, default=None,
              help="Distillation softmax temperature T > 0 (the soft term is scaled by T^2) "
                   f"[default: {_DISTILL_DEFAULTS['temperature']:g}].")
@click.option("--teacher-targets", type=click.Choice(["cached", "per-batch"]), default=None,
              help="cached: the teacher's outputs computed once on the un-augmented training images (faster beyond one "
                   "epoch); "
                   "per-batch: on every augmented batch, the images the student sees "
                   f"[default: {_DISTILL_DEFAULTS['targets'].value}].")
@click.option("--teacher-tta", is_flag=True, default=False,
              help="Average each teacher over the image and its horizontal mirror (flip TTA, as predict --tta).")
@click.option("--resume", default=None, metavar="MODEL_DIR",
              help="Continue an interrupted run from its last finished epoch (optimizer state, learning-rate schedule "
                   "position, history) using the checkpoint OUT/.NAME.partial beside MODEL_DIR (or that checkpoint "
                   "directory itself). The configuration comes from the checkpoint: give no other option.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--name", default="", help="Model directory name (default <dataset>-<model>).")
@click.option("--out", default="export", show_default=True, help="Output root; the model directory is OUT/NAME.")
@user_errors
def train_cmd(**opts):
    """Train a model and write its model directory (model.keras, metrics, plots, labels, config).

    Defaults come from the model's recipe (its ModelSpec); the options given override them. After
    every epoch the run is checkpointed in OUT/.NAME.partial (deleted when the run finishes), so an
    interrupted run continues with --resume OUT/NAME.
    """
    from edgeclf.data import AugmentConfig, DataConfig
    from edgeclf.models import ModelConfig, get_spec
    from edgeclf.train.config import TrainConfig

    ctx = click.get_current_context()
    if opts["resume"] is not None:
        return _resume(ctx, opts["resume"])
    spec = get_spec(opts["model_name"])
    _refuse_unused_options(ctx, spec, opts["augment"], bool(opts["teacher"]))
    try:
        mcfg = ModelConfig(name=spec.name, **{k: opts[k] for k in _MODEL_FIELDS if opts[k] is not None})
        dcfg = DataConfig(source=opts["data"], image_size=parse_size(opts["input_size"]),
                          val_split=opts["val_split"], limit=opts["limit"], seed=opts["seed"],
                          stream=opts["stream"], cache=opts["cache"])
        acfg = (AugmentConfig(translate_px=opts["translate"], rotate_deg=opts["rotate"], zoom=opts["zoom"],
                              cutout_px=opts["cutout"]) if opts["augment"]
                else AugmentConfig(flip=False, translate_px=0))
        distill = None
        if opts["teacher"]:
            distill = DistillConfig(teacher=opts["teacher"],
                                    **{f: opts[o] for o, f in _DISTILL_OPTIONS.items() if opts[o] is not None})
        cfg = TrainConfig.from_recipe(
            mcfg, {k: opts[k] for k in _TRAIN_FIELDS}, data=dcfg, augment=acfg, patience=opts["patience"],
            class_weight=opts["class_weight"], seed=opts["seed"],
            distill=distill, distribute=opts["distribute"], name=opts["name"], out=opts["out"],
            **_time_budget(opts["time_budget"]))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from edgeclf.train import train

    try:
        result = train(cfg)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted before the first epoch finished; nothing was written") from None
    _echo_result(result)


@click.command("eval")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--data", default=None, help="Evaluate on this data instead of the one in config.json.")
@user_errors
def eval_cmd(model_dir, data):
    """Re-evaluate MODEL_DIR/model.keras on the test split; rewrites metrics.json and confusion_matrix.png."""
    from pathlib import Path

    from edgeclf.train.evaluate import evaluate_dir

    m = evaluate_dir(Path(model_dir), data)
    click.echo(f"test top-1 accuracy {m['top1_acc']:.4f} (loss {m['loss']:.4f}) on {m['n_test']} images")
