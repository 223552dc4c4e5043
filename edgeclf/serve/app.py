"""The HTTP layer of ``edgeclf serve``: a FastAPI app over one :class:`~edgeclf.serve.service.ModelService`.

Routes:

* ``POST /v1/classify?top_k=3``: the image as ``multipart/form-data`` (field ``file``) or as the raw
  body (``Content-Type: image/*`` or ``application/octet-stream``) -> ``{"top_k": [{"label",
  "index", "prob"}], "image": {"width", "height"}, "timing_ms": {...}, "model": {"name", "sha256"}}``;
* ``GET /v1/model``: labels, input spec, precision, engine, file, sha256, size, limits;
* ``GET /healthz``: ``{"status": "ok"}`` once the model is loaded;
* ``GET /``: a page (no build step, :mod:`edgeclf.serve.page`) to drop a photo or take one with
  the camera and see the top-k labels as bars.

Every refusal is a 4xx JSON ``{"error": <code>, "detail": <one line>}``: 400 not a decodable
image / truncated / empty / malformed multipart, 413 body above ``max_upload_bytes`` (checked
from ``Content-Length`` and while reading), 415 a content type that is not an image, 422 a bad
``top_k``, 404 / 405 unknown routes. Decoding and inference run in the thread pool, so the event
loop keeps accepting requests; the engine itself is used under a lock.

Needs the ``serve`` extra: ``pip install 'edgeclf[serve]'`` (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import os

from edgeclf import __version__
from edgeclf.serve.page import PAGE_HTML
from edgeclf.serve.service import ModelService, ServeConfig, UploadError, limit_image_pixels

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("edgeclf serve needs FastAPI and uvicorn: pip install 'edgeclf[serve]'") from exc

#: Environment variable carrying the ServeConfig JSON to uvicorn worker processes (``--workers`` > 1).
CONFIG_ENV = "EDGECLF_SERVE_CONFIG"
_IMAGE_TYPES_HELP = ("send multipart/form-data with a 'file' field, or the image bytes with Content-Type "
                     "image/* (or application/octet-stream)")


def _is_image_type(media_type: str) -> bool:
    return media_type.startswith("image/") or media_type == "application/octet-stream"


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) before and while reading it."""
    too_large = UploadError(413, "too_large", f"the upload is larger than the limit of {limit} bytes "
                                              f"({limit / 2**20:.1f} MiB)")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise UploadError(400, "bad_request", f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes from a multipart form (field ``file``, else the first file) or the raw body.

    Raises:
        UploadError: 415 wrong content type, 413 too large, 400 malformed multipart or no file in it.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type != "multipart/form-data" and not _is_image_type(media_type):
        raise UploadError(415, "unsupported_media_type", f"content type '{media_type}' is not an image: "
                                                         f"{_IMAGE_TYPES_HELP}")
    body = await _read_body(request, limit)
    if media_type != "multipart/form-data":
        return body

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except HTTPException as exc:  # starlette turns multipart parse errors into 400s
        raise UploadError(400, "bad_multipart", f"malformed multipart body ({exc.detail})") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    named = form.get("file")
    upload = named if isinstance(named, UploadFile) else (files[0] if files else None)
    if upload is None:
        raise UploadError(400, "no_file", "the multipart body has no file (expected a 'file' field)")
    file_type = (upload.content_type or "").split(";")[0].strip().lower()
    if file_type and not _is_image_type(file_type):
        raise UploadError(415, "unsupported_media_type", f"the uploaded file is '{file_type}', not an image")
    return await upload.read()


def create_app(cfg: ServeConfig, service: ModelService | None = None) -> FastAPI:
    """The FastAPI app serving ``cfg.model``.

    Args:
        cfg: the model and limits.
        service: an already opened model (default: open ``cfg.model`` now).

    Raises:
        ModelLoadError: the model cannot be opened.
    """
    limit_image_pixels()  # before anything is decoded in this process
    service = service or ModelService(cfg)
    app = FastAPI(title="edgeclf", version=__version__, summary=f"Image classifier {service.info['name']}",
                  redoc_url=None)
    app.state.service = service
    brief = {"name": service.info["name"], "sha256": service.info["sha256"]}

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return JSONResponse({"error": "bad_request", "detail": f"{where}: {first.get('msg', 'invalid')}"},
                            status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the model is loaded."""
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_info() -> dict:
        """The served model: labels, input spec, precision, engine, file, sha256, size, limits."""
        return service.info

    @app.post("/v1/classify")
    async def classify(request: Request, top_k: int = 3) -> dict:
        """Top-k labels of one image (multipart field ``file`` or the raw body)."""
        data = await read_upload(request, cfg.max_upload_bytes)
        result = await run_in_threadpool(service.classify, data, top_k)
        result["model"] = brief
        return result

    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: the ServeConfig comes as JSON in ``EDGECLF_SERVE_CONFIG``."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))
