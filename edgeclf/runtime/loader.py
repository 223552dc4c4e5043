"""``load_classifier``: open a model file or model directory on the right engine, never guessing.

Engine by file suffix (:data:`ENGINES`): ``.tflite`` -> LiteRT, ``.onnx`` -> onnxruntime.

Input spec and labels: what the model declares, field by field, first source wins:

1. explicit arguments (``input_size``, ``labels_file``, ``mean``, ``std``) override everything;
2. ``manifest.json`` next to the model file, if it has an entry for that file name;
3. the ``"edgeclf"`` metadata embedded in the file (ONNX ``metadata_props``, TFLite metadata entry);
4. the standard TFLite Model Metadata (``TFLITE_METADATA``: labels file, image size and colour
   space, normalisation of a float input), as MediaPipe / Task Library models carry it;
5. the model's own input shape: a fixed ``(N, H, W, C)`` gives the size and channel count.

What no source declares is not guessed: no labels -> ``ModelLoadError`` naming ``--labels``; a
dynamic input size -> ``ModelLoadError`` naming ``--input-size``. Normalisation nobody declares: a
uint8 input takes the one its quantization implies (``(pixel - zero_point) * scale``: the pixels go in
as they are, the TFLite / MediaPipe convention); a float or int8 input is fed pixels 0-255 (mean 0,
std 1, the edgeclf convention) with a logged warning.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeclf._io import sha256_file
from edgeclf.runtime.base import Classifier, ModelLoadError
from edgeclf.runtime.manifest import (
    DEFAULT_RUN_PRECISION,
    MANIFEST_NAME,
    ArtifactEntry,
    Format,
    InputSpec,
    Manifest,
    ManifestError,
    embedded_essentials,
    read_manifest,
)

log = logging.getLogger(__name__)

#: The engine that runs each format (the only place this mapping lives).
ENGINES: dict[Format, str] = {Format.TFLITE: "litert", Format.ONNX: "onnxruntime"}
NO_LABELS = "the model declares no labels (no edgeclf or standard TFLite metadata): pass --labels FILE"
#: ``--artifact any``: the best listed artifact whose file exists (the default one must exist).
ANY_ARTIFACT = "any"
NO_SIZE = "the model's input size is dynamic and no metadata declares it: pass --input-size HxW"


def read_labels(path: str | Path) -> list[str]:
    """Read a labels file: one class name per line, in class-index order (trailing blank lines ignored).

    Raises:
        ModelLoadError: missing/unreadable file, no labels, or a blank line between labels.
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read labels file ({getattr(exc, 'strerror', None) or exc})") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ModelLoadError(f"{path}: labels file is empty")
    if "" in lines:
        raise ModelLoadError(f"{path}: blank line {lines.index('') + 1} in labels file (one class name per line)")
    return lines


def choose_artifact(manifest: Manifest, model_dir: Path, artifact: str | None) -> Path:
    """The model file to run from a model directory.

    The default (``artifact`` None) is the first listed entry in the order: format (:class:`Format`
    order: .tflite before .onnx), then :data:`DEFAULT_RUN_PRECISION` (int8) before other
    precisions, then manifest order. If its file is missing that is an error, never a silent
    switch to another file on maybe another engine; ``artifact="any"`` (:data:`ANY_ARTIFACT`) asks
    for the first entry in that order whose file exists. Any other ``artifact`` names a listed file.

    Raises:
        ModelLoadError: the named artifact is not listed or its file is missing; the default
            artifact's file is missing; no listed file exists (``"any"``).
    """
    def rank(entry: ArtifactEntry) -> tuple[int, bool]:
        return list(Format).index(entry.format), entry.precision is not DEFAULT_RUN_PRECISION

    if artifact is not None and artifact != ANY_ARTIFACT:
        if manifest.artifact(artifact) is None:
            listed = ", ".join(a.file for a in manifest.artifacts) or "none"
            raise ModelLoadError(f"{model_dir}: no artifact '{artifact}' in {MANIFEST_NAME} (available: {listed})")
        if not (model_dir / artifact).is_file():
            raise ModelLoadError(f"{model_dir / artifact}: listed in {MANIFEST_NAME} but the file is missing")
        return model_dir / artifact
    ranked = sorted(manifest.artifacts, key=rank)
    present = [a for a in ranked if (model_dir / a.file).is_file()]
    if artifact is None and ranked and not (model_dir / ranked[0].file).is_file():
        hint = (f"pass --artifact {ANY_ARTIFACT} to run the best file present ({present[0].file}) or --artifact FILE"
                if present else "re-export the model directory")
        raise ModelLoadError(f"{model_dir / ranked[0].file}: the default artifact is listed in {MANIFEST_NAME} "
                             f"but the file is missing; {hint}")
    if not present:
        raise ModelLoadError(f"{model_dir}: {MANIFEST_NAME} lists no existing .tflite or .onnx artifact")
    return model_dir / present[0].file


def verify_artifact(path: Path, entry: ArtifactEntry) -> None:
    """Check that ``path``'s bytes still have the sha256 its manifest entry recorded at export.

    Cost: one read of the file through :func:`hashlib.sha256` (OpenSSL), measured with
    ``benchmarks/sha256_cost.py`` on the 2-core AMD EPYC dev VM, file in the page cache: 0.04 ms for
    a 40 kB file (an int8 CIFAR-10 cnn), 1.0 ms for 1 MB, 6 ms for 10 MB, 60 ms for 100 MB (about
    1.6 GB/s); far less than opening the file on its engine. An entry without a sha256 (older
    edgeclf) is not checked.

    Raises:
        ModelLoadError: the hashes differ; the message names the file and both hashes.
    """
    if not entry.sha256:
        log.debug("%s: no sha256 in %s; not verified", path, MANIFEST_NAME)
        return
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    if actual != entry.sha256.lower():
        raise ModelLoadError(f"{path}: sha256 {actual} does not match {entry.sha256} recorded in {MANIFEST_NAME} "
                             "(the file changed after export); re-export it, or pass --no-verify to run it anyway")


def open_engine(path: Path, threads: int | None = None, providers: list[str] | None = None) -> Classifier:
    """Open ``path`` on the engine its suffix names (:data:`ENGINES`); the result is not bound yet.

    Call :meth:`Classifier.bind` with an input spec and labels before predicting
    (:func:`load_classifier` does both).

    Args:
        path: a ``.tflite`` or ``.onnx`` file.
        threads: engine CPU threads; None = the engine's default.
        providers: onnxruntime execution providers (``.onnx`` only).

    Raises:
        ModelLoadError: unknown suffix, missing file, providers for a .tflite file, or the engine
            cannot load the file.
    """
    path = Path(path)
    fmt = Format.of_path(path)
    if fmt is None:
        raise ModelLoadError(f"{path}: unsupported model format '{path.suffix}' (expected .tflite or .onnx)")
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    if fmt is Format.TFLITE:
        if providers:
            raise ModelLoadError(f"{path}: --providers applies to .onnx models only")
        from edgeclf.runtime.litert import LiteRTClassifier

        return LiteRTClassifier(path, threads=threads)
    from edgeclf.runtime.ort import OrtClassifier

    return OrtClassifier(path, threads=threads, providers=providers)


def _manifest_entry(path: Path) -> tuple[Manifest, ArtifactEntry] | None:
    """The manifest next to ``path`` and its entry for ``path``'s file name, or None."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = read_manifest(path.parent)
    except ManifestError as exc:
        raise ModelLoadError(str(exc)) from None
    entry = manifest.artifact(path.name)
    return None if entry is None else (manifest, entry)


def _from_embedded(path: Path, meta: dict | None) -> tuple[InputSpec, list[str], str | None] | None:
    if meta is None:
        return None
    try:
        return embedded_essentials(meta, str(path))
    except ManifestError as exc:
        raise ModelLoadError(str(exc)) from None


def _fixed(dim) -> int | None:
    return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else None


def _from_model(path: Path, clf: Classifier, input_size: tuple[int, int] | None, labels_given: bool,
                explicit_norm: bool) -> tuple[InputSpec, list[str] | None, str | None]:
    """Input spec and labels from what the file itself declares besides edgeclf metadata: the
    standard TFLite metadata, then the input shape. Labels None = nobody declares them.

    Raises:
        ModelLoadError: no labels declared and none given; the input size is dynamic, undeclared
            and not given.
    """
    std_meta = clf.standard
    if not labels_given and (std_meta is None or std_meta.labels is None):
        raise ModelLoadError(f"{path}: {NO_LABELS}")
    shape = clf.input_tensor.shape
    h, w, c = (_fixed(d) for d in shape[1:4]) if len(shape) == 4 else (None, None, None)
    if std_meta is not None and std_meta.image_size is not None:
        h, w = h or std_meta.image_size[0], w or std_meta.image_size[1]
    if input_size is None and (h is None or w is None):
        raise ModelLoadError(f"{path}: {NO_SIZE}")
    if c not in (1, 3):
        c = 1 if std_meta is not None and std_meta.color_space == "GRAY" else 3
    spec = InputSpec(height=h or 1, width=w or 1, channels=c, color_order="GRAY" if c == 1 else "RGB")
    t = clf.input_tensor
    if std_meta is not None and std_meta.mean is not None:
        spec = replace(spec, mean=std_meta.mean, std=std_meta.std)
    elif t.dtype == np.dtype(np.uint8) and t.scale:
        # the normalisation its quantization implies, real = (pixel - zero_point) * scale: the pixels
        # go in as they are, as MediaPipe / the Task Library / Coral feed a uint8 image input
        spec = replace(spec, mean=(float(t.zero_point),), std=(1.0 / t.scale,))
    elif not explicit_norm:
        log.warning("%s: the model declares no input normalisation; feeding pixels 0-255 "
                    "(pass --mean/--std if it expects otherwise)", path)
    return spec, (std_meta.labels if std_meta is not None else None), None


def load_classifier(
    path: str | Path,
    labels_file: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
    artifact: str | None = None,
    verify: bool = True,
    tta: bool = False,
) -> Classifier:
    """Open a model for inference.

    Args:
        path: a ``.tflite``/``.onnx`` file, or a model directory with ``manifest.json``.
        labels_file: one class name per line; overrides the metadata's labels.
        input_size: (height, width) in pixels; overrides the metadata's size.
        mean, std: per-channel (or single) normalisation on the [0, 255] scale; override the metadata.
        threads: engine CPU threads; None = the engine's default.
        providers: onnxruntime execution providers (``.onnx`` only).
        artifact: file name of the artifact to use when ``path`` is a model directory, or
            ``"any"``: the best one whose file exists (see :func:`choose_artifact`).
        verify: check the file's sha256 against its ``manifest.json`` entry (when there is one)
            before opening it (:func:`verify_artifact`; cost: one read of the file).
        tta: flip test-time augmentation: average each image's and its mirror's probabilities
            (:attr:`Classifier.tta <edgeclf.runtime.base.Classifier.tta>`; two inferences per image).

    Returns:
        a bound :class:`~edgeclf.runtime.base.Classifier`.

    Raises:
        ModelLoadError: one line naming the file: missing/corrupt/unsupported model, labels or a
            dynamic input size that no source declares and no argument gives (see the module
            docstring for the order), options that contradict the model, a file whose sha256
            differs from its manifest entry, or a manifest entry whose file is missing.
    """
    path = Path(path)
    if path.is_dir():
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            raise ModelLoadError(str(exc)) from None
        path = choose_artifact(manifest, path, artifact)
    elif artifact is not None:
        raise ModelLoadError(f"{path}: --artifact needs a model directory, not a model file")
    elif not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory")
    if threads is not None and threads < 1:
        raise ModelLoadError(f"{path}: threads must be >= 1, got {threads}")

    listed = _manifest_entry(path)
    if listed is not None and verify:
        verify_artifact(path, listed[1])
    clf = open_engine(path, threads, providers)
    if listed is not None:
        manifest, entry = listed
        found = manifest.input, manifest.labels, entry.precision.value
    else:
        found = _from_embedded(path, clf.embedded)
    if found is None:
        spec, labels, precision = _from_model(path, clf, input_size, labels_file is not None,
                                              mean is not None or std is not None)
    else:
        spec, labels, precision = found
    if input_size is not None:
        spec = replace(spec, height=int(input_size[0]), width=int(input_size[1]))
    if mean is not None:
        spec = replace(spec, mean=tuple(float(v) for v in mean))
    if std is not None:
        spec = replace(spec, std=tuple(float(v) for v in std))
    if labels_file is not None:
        labels = read_labels(labels_file)
    elif labels is None:
        raise ModelLoadError(f"{path}: {NO_LABELS}")
    clf.tta = bool(tta)
    return clf.bind(spec, labels, precision)
