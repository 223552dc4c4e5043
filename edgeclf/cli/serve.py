"""``edgeclf serve``: thin click command -> ServeConfig -> the FastAPI app on uvicorn.

Never imports TensorFlow (runtime install + the ``serve`` extra). The model is opened before the
server starts, so a bad model or option ends in one ``Error:`` line, not a half-started server.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgeclf.cli._errors import user_errors
from edgeclf.cli.options import parse_floats, parse_size
from edgeclf.cli.runtime import model_options
from edgeclf.errors import ConfigError, one_line


@click.command("serve")
@click.argument("model", type=click.Path(path_type=Path))
@model_options(1, "Per worker process.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 serves every network interface: the API has no authentication.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (uvicorn), each with its own copy of the model; one request at a time "
                   "per engine, so use about one per CPU core.")
@click.option("--max-upload-mb", default=10.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Largest request body accepted (larger uploads get 413).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@user_errors
def serve_cmd(model, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta,
              host, port, workers, max_upload_mb, access_log):
    """Serve MODEL (a .tflite/.onnx file or a model directory) over HTTP, with a web page.

    \b
    POST /v1/classify?top_k=3   an image: multipart field 'file', or the raw bytes with
                                Content-Type image/* -> top-k labels and probabilities (JSON)
    GET  /v1/model              labels, input size, precision, engine, sha256
    GET  /healthz               {"status": "ok"}
    GET  /                      a page: drop a photo or take one with the camera, see the top-k bars
    \b
    Example:
      edgeclf serve export/cifar10-cnn
      curl -F file=@cat.jpg 'http://127.0.0.1:8000/v1/classify?top_k=3'
    """
    from edgeclf.serve.service import ModelService, ServeConfig, limit_image_pixels

    try:
        cfg = ServeConfig(model=str(Path(model).absolute()), artifact=artifact,
                          labels_file=str(Path(labels_file).absolute()) if labels_file else None,
                          input_size=parse_size(input_size, "--input-size"), mean=parse_floats(mean, "--mean"),
                          std=parse_floats(std, "--std"),
                          providers=tuple(p.strip() for p in providers.split(",") if p.strip()) if providers else None,
                          threads=threads, max_upload_bytes=int(max_upload_mb * 2**20), verify=not no_verify,
                          tta=tta)
    except ConfigError as exc:
        raise click.UsageError(one_line(exc)) from None
    import uvicorn

    from edgeclf.serve.app import CONFIG_ENV, create_app

    limit_image_pixels()
    service = ModelService(cfg)  # fail here, with one line, if the model cannot be opened
    info = service.info
    click.echo(f"serving {info['name']} ({info['file']}, {info['precision']}, {info['engine']}, "
               f"{info['num_classes']} classes) on http://{host}:{port}/ with {workers} worker(s)", err=True)
    if workers == 1:
        uvicorn.run(create_app(cfg, service), host=host, port=port, access_log=access_log, log_level="info")
        return
    service.close()  # the workers open their own copies
    os.environ[CONFIG_ENV] = cfg.to_json()  # each worker process rebuilds the app from it
    uvicorn.run("edgeclf.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                access_log=access_log, log_level="info")
