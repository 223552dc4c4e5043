"""The ``edgeclf`` command line: thin click commands that build a config and call the library.

Heavy modules (TensorFlow) are imported inside the commands that need them, so ``edgeclf predict``
and ``edgeclf webcam`` never load TensorFlow.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from edgeclf import __version__
from edgeclf.cli import _signals
from edgeclf.cli.bench import bench_cmd
from edgeclf.cli.export import export_cmd
from edgeclf.cli.runtime import predict_cmd, webcam_cmd
from edgeclf.cli.serve import serve_cmd
from edgeclf.cli.train import eval_cmd, train_cmd


def _setup_logging(verbose: int) -> None:
    """edgeclf's INFO lines always; TensorFlow's / LiteRT's own C++ start-up lines and noise warnings
    only with ``-v`` (through ``TF_CPP_MIN_LOG_LEVEL``, read when TensorFlow / LiteRT load: see
    :mod:`edgeclf._keras`); debug output with ``-vv``."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "tf2onnx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgeclf")
@click.option("-v", "--verbose", count=True,
              help="Also show TensorFlow's and LiteRT's own start-up/C++ log lines (hidden by default); "
                   "-vv adds debug output.")
def cli(verbose: int) -> None:
    """edgeclf: train an image classifier, prune + int8-quantize it, export TFLite/ONNX, run it on the edge.

    \b
    Typical flow:
      edgeclf train --model cnn --data cifar10            # -> export/cifar10-cnn/
      edgeclf export export/cifar10-cnn --quantize int8   # -> .tflite/.onnx + manifest.json
      edgeclf predict export/cifar10-cnn photo.jpg
      edgeclf serve export/cifar10-cnn                    # HTTP API + web page on 127.0.0.1:8000
      edgeclf bench export/cifar10-cnn
    """
    _setup_logging(verbose)


cli.add_command(train_cmd, "train")
cli.add_command(eval_cmd, "eval")
cli.add_command(predict_cmd, "predict")
cli.add_command(webcam_cmd, "webcam")
cli.add_command(export_cmd, "export")
cli.add_command(bench_cmd, "bench")
cli.add_command(serve_cmd, "serve")


def main() -> None:
    """Console-script entry point.

    SIGTERM is handled like Ctrl-C (see :mod:`edgeclf.cli._signals`); a run ended by it exits with
    status 143 (128 + 15) after its clean-up, whatever the command reported.
    """
    _signals.install()
    try:
        cli(prog_name="edgeclf")
    except SystemExit as exc:
        signum = _signals.received()
        if signum is None:
            raise
        name = signal.Signals(signum).name
        click.echo(f"edgeclf: stopped by {name}; temporary files removed", err=True)
        raise SystemExit(_signals.exit_status(signum)) from exc
    signum = _signals.received()
    if signum is not None:  # standalone click always exits; kept for callers that disable that
        raise SystemExit(_signals.exit_status(signum))


if __name__ == "__main__":
    main()
