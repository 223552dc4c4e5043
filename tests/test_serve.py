"""``edgeclf serve``: the API in-process (FastAPI TestClient), over real HTTP on 127.0.0.1 (the CLI with
2 worker processes, 16 concurrent clients), bad uploads, and the page in headless Chromium."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_fixtures import LABELS, build_models

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'edgeclf[serve]'")
import httpx  # noqa: E402  (installed with the serve/dev extras)

from edgeclf.runtime import load_classifier  # noqa: E402
from edgeclf.serve import ServeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 1024


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def client(models):
    from fastapi.testclient import TestClient

    from edgeclf.serve.app import create_app

    with TestClient(create_app(ServeConfig(model=str(models.model_dir), max_upload_bytes=LIMIT))) as c:
        yield c


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def _expected_top1(models) -> list[str]:
    from edgeclf.preprocess import to_model_batch

    clf = load_classifier(models.model_dir)
    return [LABELS[i] for i in clf.predict(to_model_batch(models.images, 32, 32)).argmax(1)]


def _error(r, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == code and "\n" not in body["detail"], body
    return body["detail"]


# -- in-process ---------------------------------------------------------------------------------------
def test_health_model_info_and_page(client, models):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    path = models.model_dir / "model_int8.tflite"
    assert info["labels"] == LABELS and info["file"] == path.name and info["engine"] == "litert"
    assert info["precision"] == "int8" and info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["input"]["height"] == 32 and info["input"]["dtype"] == "int8"
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "/v1/classify" in page.text and "getUserMedia" in page.text and "<script" in page.text
    _error(client.get("/nope"), 404, "not_found")


def test_classify_multipart_and_raw_match_the_runtime(client, models):
    want = _expected_top1(models)
    got = []
    for i, img in enumerate(models.images):
        data = _png(img)
        if i % 2:
            r = client.post("/v1/classify?top_k=2", files={"file": ("x.png", data, "image/png")})
        else:
            r = client.post("/v1/classify?top_k=2", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["top_k"]) == 2 and body["top_k"][0]["prob"] >= body["top_k"][1]["prob"]
        assert body["image"] == {"width": 32, "height": 32} and body["model"]["sha256"]
        got.append(body["top_k"][0]["label"])
    assert got == want
    r = client.post("/v1/classify?top_k=10", content=_png(models.images[0]), headers={"content-type": "image/png"})
    assert [t["label"] for t in r.json()["top_k"]] and len(r.json()["top_k"]) == 3  # capped to the classes


@pytest.mark.parametrize("kind,status,code", [
    ("text file", 415, "unsupported_media_type"),
    ("json body", 415, "unsupported_media_type"),
    ("not an image", 400, "not_an_image"),
    ("truncated png", 400, "not_an_image"),
    ("truncated jpeg", 400, "not_an_image"),
    ("empty", 400, "empty"),
    ("too large raw", 413, "too_large"),
    ("too large multipart", 413, "too_large"),
    ("no file field", 400, "no_file"),
    ("bad top_k", 422, "bad_request"),
    ("top_k 0", 422, "bad_top_k"),
])
def test_bad_uploads_get_4xx_json(client, models, kind, status, code):
    png = _png(models.images[0])
    big = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", big)[1].tobytes()
    raw = {"content-type": "image/png"}
    requests = {
        "text file": lambda: client.post("/v1/classify", files={"file": ("a.txt", b"hello", "text/plain")}),
        "json body": lambda: client.post("/v1/classify", content=b"{}", headers={"content-type": "application/json"}),
        "not an image": lambda: client.post("/v1/classify", content=b"GIF89a? no" * 10, headers=raw),
        "truncated png": lambda: client.post("/v1/classify", content=png[: len(png) // 2], headers=raw),
        "truncated jpeg": lambda: client.post("/v1/classify", files={"file": ("t.jpg", jpeg[: len(jpeg) // 2],
                                                                              "image/jpeg")}),
        "empty": lambda: client.post("/v1/classify", content=b"", headers=raw),
        "too large raw": lambda: client.post("/v1/classify", content=b"\0" * (LIMIT + 1), headers=raw),
        "too large multipart": lambda: client.post("/v1/classify", files={"file": ("b.png", b"\0" * LIMIT, "image/png")}),
        "no file field": lambda: client.post("/v1/classify", data={"note": "no file"},
                                             files={"other": (None, b"x")}),
        "bad top_k": lambda: client.post("/v1/classify?top_k=abc", content=png, headers=raw),
        "top_k 0": lambda: client.post("/v1/classify?top_k=0", content=png, headers=raw),
    }
    detail = _error(requests[kind](), status, code)
    assert detail


# -- over real HTTP: the CLI, 2 worker processes ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model: Path, *extra: str) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "serve", str(model), "--port", str(port),
                             "--no-access-log", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"edgeclf serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise AssertionError("edgeclf serve did not come up in 60 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(models):
    url, proc = _start_server(models.model_dir, "--workers", "2", "--max-upload-mb", "1")
    yield url
    _stop(proc)


def test_real_http_concurrent_clients_and_limits(server, models):
    want = _expected_top1(models)
    bodies = [_png(img) for img in models.images]

    def one(i: int) -> str:
        with httpx.Client(base_url=server, timeout=30) as c:
            r = c.post("/v1/classify", files={"file": (f"{i}.png", bodies[i], "image/png")})
            assert r.status_code == 200, r.text
            return r.json()["top_k"][0]["label"]

    with ThreadPoolExecutor(16) as pool:  # 16 clients, each image 3 times
        got = list(pool.map(one, [i for _ in range(3) for i in range(len(bodies))]))
    assert got == want * 3
    assert httpx.get(f"{server}/v1/model").json()["labels"] == LABELS
    big = httpx.post(f"{server}/v1/classify", content=b"\0" * (2 * 2**20), headers={"content-type": "image/png"})
    _error(big, 413, "too_large")
    bomb = cv2.imencode(".png", np.zeros((7000, 7000), np.uint8))[1].tobytes()  # 49 MP in ~50 kB
    assert len(bomb) < 2**20
    _error(httpx.post(f"{server}/v1/classify", content=bomb, headers={"content-type": "image/png"}, timeout=30),
           413, "image_too_large")


def test_serve_bad_model_is_one_line_and_stays_tensorflow_free(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "edgeclf.cli", "serve", str(junk), "--port", str(_free_port())],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and r.stderr.strip().startswith("Error:") and "Traceback" not in r.stderr
    code = ("import sys, edgeclf.serve.app, edgeclf.cli.serve; "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr


# -- the page, as a person uses it -------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory):
    """A tiny ``cnn`` trained briefly on 3000 CIFAR-10 JPEGs, exported to int8 .tflite; and a CIFAR-10 test
    photo it classifies right (its most confident correct one among 100), with the true label."""
    from conftest import CIFAR10_JPG

    if not (CIFAR10_JPG / "train").is_dir():
        pytest.skip(f"{CIFAR10_JPG} missing")
    from edgeclf.data import AugmentConfig, DataConfig
    from edgeclf.export import export_model
    from edgeclf.export.config import ExportConfig, Format, Precision
    from edgeclf.models import MODELS, ModelConfig
    from edgeclf.preprocess import load_image, to_model_batch
    from edgeclf.train import train
    from edgeclf.train.config import Optimizer, TrainConfig

    out = tmp_path_factory.mktemp("cifar")
    cfg = TrainConfig(model=ModelConfig(name="cnn", **MODELS["cnn"].tiny),
                      data=DataConfig(source=str(CIFAR10_JPG), val_split=0.1, seed=0, limit=3000),
                      augment=AugmentConfig(flip=True, translate_px=2), epochs=3, batch_size=64,
                      optimizer=Optimizer.ADAM, lr=3e-3, weight_decay=0.0, label_smoothing=0.0,
                      name="cifar10-tiny", out=str(out), seed=0)
    model_dir = train(cfg, progress=False).model_dir
    export_model(model_dir, ExportConfig(formats=(Format.TFLITE,), precisions=(Precision.INT8,), val_samples=200,
                                         calibration_samples=64, allow_drop=True), progress=False)
    clf = load_classifier(model_dir)
    photos = [p for c in clf.labels for p in sorted((CIFAR10_JPG / "test" / c).glob("*.jpg"))[:10]]
    probs = clf.predict(to_model_batch([load_image(p) for p in photos], 32, 32))
    right = [i for i, p in enumerate(photos) if clf.labels[probs[i].argmax()] == p.parent.name]
    assert right, "the tiny CIFAR-10 model got none of 100 test photos right"
    best = max(right, key=lambda i: probs[i].max())
    return model_dir, photos[best], photos[best].parent.name


@pytest.fixture(scope="module")  # module scope like cifar_model: pytest sets up higher scopes first
def browser_available() -> None:
    """Skip unless selenium and Debian's chromium + chromedriver are installed; requested before
    ``cifar_model`` so a machine without them skips before the training."""
    pytest.importorskip("selenium", reason="selenium is not installed (.ci/run installs it)")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian chromium + chromium-driver are not installed (.ci/run installs them)")


@pytest.mark.slow
def test_page_in_headless_chromium_classifies_a_cifar10_photo(browser_available, cifar_model, tmp_path):
    """Load the page, choose a CIFAR-10 test photo, see the right label on top; save a screenshot
    (copied to $EDGECLF_SCREENSHOT if set)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model_dir, photo, label = cifar_model
    url, proc = _start_server(model_dir)
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,760", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "classes" in d.find_element(By.ID, "model-facts").text)
        driver.execute_script("document.getElementById('file').hidden = false;")
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .row"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#results .row")
        assert rows[0].find_element(By.CLASS_NAME, "label").text == label
        assert len(rows) == 5 and driver.find_element(By.ID, "error").text == ""
        shot = tmp_path / "serve_page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("EDGECLF_SCREENSHOT"):
            shutil.copy(shot, os.environ["EDGECLF_SCREENSHOT"])
    finally:
        driver.quit()
        _stop(proc)
