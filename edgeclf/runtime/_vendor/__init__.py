"""Third-party code kept inside edgeclf, unmodified (each file names its source, version and licence).

``metadata_schema_py_generated.py``: the FlatBuffers bindings of the TensorFlow Lite Model Metadata
schema (``metadata_schema.fbs`` 1.5.0, Apache-2.0, copy of the licence in ``LICENSE``), taken from the
``mediapipe==1.2.2`` wheel. edgeclf writes (export) and reads (runtime) the standard metadata that
MediaPipe Tasks, the TFLite Task Library and Model Maker use; the bindings need only ``flatbuffers``
(already a LiteRT dependency). Why vendored rather than a dependency:

* ``mediapipe`` 1.2.2 ships them, but it is a large package that requires ``opencv-contrib-python``
  (which clashes with our ``opencv-python-headless``), and its metadata *writers* fail to import
  (``mediapipe.tasks.cc`` is missing from the wheel); the runtime must stay small (Raspberry Pi);
* ``tflite-support`` 0.4.4 (2023) pins ``protobuf`` 3.20, which TensorFlow 2.21 cannot use, and
  needs libusb.

The schema is append-only and versioned (``min_parser_version``), so a frozen copy keeps reading
and writing files that current MediaPipe / Task Library releases accept.
"""
