"""``edgeclf serve``: an HTTP API and a web page over one exported model (runtime install, no TensorFlow).

    >>> from edgeclf.serve import ServeConfig
    >>> from edgeclf.serve.app import create_app          # needs the 'serve' extra (FastAPI)
    >>> app = create_app(ServeConfig(model="export/cifar10-cnn"))

:mod:`.service` opens the model (:func:`edgeclf.runtime.load_classifier`) and decodes uploads;
:mod:`.app` is the FastAPI layer (routes, limits, JSON errors); :mod:`.page` the HTML page.
Run with ``edgeclf serve MODEL`` (uvicorn). Never imports TensorFlow, train, export or models.
"""

from edgeclf.serve.service import (
    DEFAULT_MAX_UPLOAD_BYTES,
    ModelService,
    ServeConfig,
    UploadError,
    decode_image,
)

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "ModelService", "ServeConfig", "UploadError", "decode_image"]
