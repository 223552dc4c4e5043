"""The page ``edgeclf serve`` shows at ``GET /``: one self-contained HTML file (inline CSS and JS, no
build step, nothing fetched from elsewhere).

A person drops a photo (or picks one, or takes one with the browser camera: ``getUserMedia``, which
browsers allow on ``localhost`` / ``127.0.0.1`` and over https), the page posts it to
``/v1/classify`` and draws the top-k labels as bars; the header shows the model from ``/v1/model``.
Labels and error texts are inserted with ``textContent`` (never as HTML).
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeclf</title>
<style>
  :root { --fg: #1d2330; --muted: #5d6677; --line: #d9dee8; --accent: #2f6fdb; --bg: #f6f8fb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--fg); background: var(--bg); }
  header { padding: 18px 24px; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 22px; }
  header p { margin: 4px 0 0; color: var(--muted); font-size: 14px; }
  main { display: grid; grid-template-columns: minmax(280px, 1fr) minmax(280px, 1fr); gap: 24px;
         padding: 24px; max-width: 1100px; margin: 0 auto; }
  @media (max-width: 760px) { main { grid-template-columns: 1fr; } }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px; }
  #drop { border: 2px dashed #aab4c6; border-radius: 10px; min-height: 260px; display: flex;
          flex-direction: column; align-items: center; justify-content: center; gap: 12px;
          text-align: center; padding: 16px; cursor: pointer; background: #fbfcfe; }
  #drop.over { border-color: var(--accent); background: #eef4ff; }
  #preview { width: 320px; max-width: 100%; max-height: 320px; object-fit: contain; border-radius: 6px;
             display: none; }
  #video { width: 100%; border-radius: 6px; display: none; background: #000; }
  .buttons { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 14px; }
  button, select { font: inherit; padding: 8px 14px; border-radius: 6px; border: 1px solid var(--line);
                   background: #fff; cursor: pointer; }
  button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
  button:disabled { opacity: .5; cursor: default; }
  h2 { margin: 0 0 12px; font-size: 18px; }
  .row { display: grid; grid-template-columns: 9em 1fr 4.2em; align-items: center; gap: 10px;
         margin: 9px 0; }
  .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .row.top .label { font-weight: 600; }
  .bar { height: 18px; background: #e8ecf3; border-radius: 9px; overflow: hidden; }
  .bar > div { height: 100%; background: var(--accent); border-radius: 9px; }
  .row:not(.top) .bar > div { background: #8fb0ea; }
  .pct { text-align: right; font-variant-numeric: tabular-nums; }
  #status { color: var(--muted); font-size: 14px; min-height: 1.4em; }
  #error { color: #b3261e; background: #fdecea; border-radius: 6px; padding: 10px; display: none; }
  footer { text-align: center; color: var(--muted); font-size: 13px; padding: 0 0 24px; }
  a { color: var(--accent); }
</style>
</head>
<body>
<header>
  <h1>edgeclf &middot; <span id="model-name">loading model&hellip;</span></h1>
  <p id="model-facts"></p>
</header>
<main>
  <section class="card">
    <div id="drop" tabindex="0" role="button" aria-label="Drop a photo here or choose one">
      <img id="preview" alt="the photo being classified">
      <video id="video" autoplay playsinline muted></video>
      <div id="drop-hint"><strong>Drop a photo here</strong><br>or click to choose one</div>
    </div>
    <input id="file" type="file" accept="image/*" hidden>
    <div class="buttons">
      <button id="choose" class="primary">Choose photo</button>
      <button id="camera">Use camera</button>
      <button id="snap" hidden>Take photo</button>
      <label>top <select id="topk"><option>3</option><option selected>5</option><option>10</option></select></label>
    </div>
  </section>
  <section class="card">
    <h2>Prediction</h2>
    <div id="results"><p id="empty" style="color:var(--muted)">No photo yet.</p></div>
    <p id="status"></p>
    <div id="error" role="alert"></div>
  </section>
</main>
<footer>API: <a href="/v1/model">/v1/model</a> &middot; POST /v1/classify &middot;
  <a href="/docs">/docs</a> &middot; <a href="/healthz">/healthz</a></footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let stream = null, lastBlob = null;

function showError(text) { $("error").textContent = text; $("error").style.display = text ? "block" : "none"; }

async function loadModel() {
  try {
    const m = await (await fetch("/v1/model")).json();
    $("model-name").textContent = m.name;
    const i = m.input;
    $("model-facts").textContent = `${m.num_classes} classes \\u00b7 ${i.width}\\u00d7${i.height} ` +
      `${i.color_order} input \\u00b7 ${m.precision} \\u00b7 ${m.engine} \\u00b7 ${m.file} ` +
      `(sha256 ${m.sha256.slice(0, 12)}\\u2026)`;
    const n = Math.min(5, m.num_classes);
    $("topk").value = String([3, 5, 10].includes(n) ? n : 3);
  } catch (e) { showError("cannot read /v1/model: " + e); }
}

function render(result) {
  const box = $("results");
  box.replaceChildren();
  result.top_k.forEach((item, k) => {
    const row = document.createElement("div");
    row.className = "row" + (k === 0 ? " top" : "");
    const label = document.createElement("div");
    label.className = "label"; label.textContent = item.label; label.title = item.label;
    const bar = document.createElement("div"); bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = (100 * item.prob).toFixed(1) + "%";
    bar.appendChild(fill);
    const pct = document.createElement("div");
    pct.className = "pct"; pct.textContent = (100 * item.prob).toFixed(1) + "%";
    row.append(label, bar, pct);
    box.appendChild(row);
  });
  const t = result.timing_ms;
  $("status").textContent = `${result.image.width}\\u00d7${result.image.height} photo \\u00b7 ` +
    `decode ${t.decode.toFixed(1)} ms \\u00b7 inference ${t.inference.toFixed(1)} ms`;
}

async function classify(blob, name) {
  lastBlob = { blob, name };
  showError("");
  $("status").textContent = "classifying\\u2026";
  const form = new FormData();
  form.append("file", blob, name || "photo.jpg");
  try {
    const res = await fetch("/v1/classify?top_k=" + $("topk").value, { method: "POST", body: form });
    const body = await res.json();
    if (!res.ok) { $("status").textContent = ""; showError(`${res.status}: ${body.detail || body.error}`); return; }
    render(body);
  } catch (e) { $("status").textContent = ""; showError("request failed: " + e); }
}

function usePhoto(file) {
  if (!file) return;
  stopCamera();
  $("preview").onload = () => {  // small images (CIFAR-10 is 32x32) shown as crisp pixels
    $("preview").style.imageRendering = $("preview").naturalWidth < 160 ? "pixelated" : "auto";
  };
  $("preview").src = URL.createObjectURL(file);
  $("preview").style.display = "block";
  $("drop-hint").style.display = "none";
  classify(file, file.name);
}

function stopCamera() {
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
  $("video").style.display = "none"; $("snap").hidden = true; $("camera").textContent = "Use camera";
}

async function toggleCamera() {
  if (stream) { stopCamera(); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The camera needs a secure page: open it as http://localhost or over https."); return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (e) { showError("camera unavailable: " + e.message); return; }
  $("video").srcObject = stream;
  $("video").style.display = "block"; $("preview").style.display = "none"; $("drop-hint").style.display = "none";
  $("snap").hidden = false; $("camera").textContent = "Close camera";
}

function snap() {
  const v = $("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob((blob) => {
    stopCamera();
    $("preview").src = URL.createObjectURL(blob); $("preview").style.display = "block";
    classify(blob, "camera.jpg");
  }, "image/jpeg", 0.92);
}

const drop = $("drop");
drop.addEventListener("click", () => { if (!stream) $("file").click(); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); usePhoto(e.dataTransfer.files[0]); });
$("file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
$("choose").addEventListener("click", () => $("file").click());
$("camera").addEventListener("click", toggleCamera);
$("snap").addEventListener("click", snap);
$("topk").addEventListener("change", () => { if (lastBlob) classify(lastBlob.blob, lastBlob.name); });
loadModel();
</script>
</body>
</html>
"""
