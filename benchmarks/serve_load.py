"""Load test of ``edgeclf serve`` on loopback: C concurrent clients, N requests in total.

Starts ``edgeclf serve MODEL`` on a free 127.0.0.1 port (a subprocess, ``--no-access-log``),
waits for ``/healthz``, sends ``--warmup`` requests, reads the server's resident set size, then
lets ``--clients`` concurrent httpx clients post ``--requests`` CIFAR-10 test JPEGs (raw body,
``Content-Type: image/jpeg``) as fast as the server answers, reads the RSS again, and writes
``serve_load.json`` + ``serve_load.md`` into ``--out``: errors (non-200 or transport), throughput
(requests/s over the wall time of the timed phase), client-side latency p50/p95/p99/max (ms,
``time.perf_counter`` around each request, so it includes queueing in the server), top-1 accuracy
of the answers against the folder labels, and RSS before/after/peak (``VmRSS``/``VmHWM`` of
``/proc/PID/status``, MiB). Linux only (``/proc``).

Usage:
    python benchmarks/serve_load.py MODEL_DIR --data ../shared/datasets/cifar10-jpg/test \\
        --clients 16 --requests 2000 --out benchmarks/results/serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> dict[str, float]:
    """VmRSS (current) and VmHWM (peak) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _images(root: Path, limit: int) -> list[tuple[bytes, str]]:
    """Up to ``limit`` (jpeg bytes, class name) pairs, round-robin over the class folders."""
    per_class = {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}
    out, i = [], 0
    while len(out) < limit and any(i < len(f) for f in per_class.values()):
        out += [(f[i].read_bytes(), name) for name, f in per_class.items() if i < len(f)]
        i += 1
    return out[:limit]


async def _run(url: str, images, clients: int, requests: int):
    latencies, errors, correct = [], [], 0
    counter = iter(range(requests))

    async def client():
        nonlocal correct
        async with httpx.AsyncClient(timeout=30.0) as http:
            for k in counter:
                body, label = images[k % len(images)]
                t0 = time.perf_counter()
                try:
                    r = await http.post(url, content=body, headers={"Content-Type": "image/jpeg"})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                elif r.json()["top_k"][0]["label"] == label:
                    correct += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, np.array(latencies), errors, correct


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="class folders of test JPEGs (labels = folder names)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--artifact", default=None, help="passed to edgeclf serve --artifact")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    images = _images(Path(args.data), 1000)
    port = _free_port()
    cmd = [sys.executable, "-m", "edgeclf.cli", "serve", args.model, "--port", str(port), "--no-access-log"]
    if args.artifact:
        cmd += ["--artifact", args.artifact]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {server.stdout.read() if server.stdout else ''}")
            time.sleep(0.2)
        info = httpx.get(f"{base}/v1/model").json()
        asyncio.run(_run(f"{base}/v1/classify", images, args.clients, args.warmup))
        rss_before = _rss_mib(server.pid)
        wall, lat, errors, correct = asyncio.run(_run(f"{base}/v1/classify", images, args.clients, args.requests))
        rss_after = _rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    cpu_flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                 if f in Path("/proc/cpuinfo").read_text()]
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
    result = {
        "model": args.model, "artifact": info.get("file"), "engine": info.get("engine"),
        "precision": info.get("precision"), "sha256": info.get("sha256"),
        "clients": args.clients, "requests": args.requests, "warmup_requests": args.warmup,
        "errors": len(errors), "error_samples": errors[:5],
        "wall_s": round(wall, 3), "throughput_rps": round(args.requests / wall, 1),
        "latency_ms": {q: round(float(np.percentile(lat, p)), 2) for q, p in
                       (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} if len(lat) else {},
        "top1_accuracy": round(correct / args.requests, 4),
        "server_rss_mib": {"before": round(rss_before["VmRSS"], 1), "after": round(rss_after["VmRSS"], 1),
                           "growth": round(rss_after["VmRSS"] - rss_before["VmRSS"], 1),
                           "peak": round(rss_after["VmHWM"], 1)},
        "machine": {"cpu": cpu_model, "flags": cpu_flags, "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    lat_ms = result["latency_ms"]
    rss = result["server_rss_mib"]
    (out / "serve_load.md").write_text(
        f"# edgeclf serve load test ({result['date']})\n\n"
        f"`{result['command']}`\n\n"
        f"{result['clients']} concurrent clients on loopback, {result['requests']} requests (after "
        f"{result['warmup_requests']} warm-up), CIFAR-10 test JPEGs as raw bodies; server: one uvicorn "
        f"worker, {result['engine']} {result['precision']} `{result['artifact']}`; machine: "
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, flags {', '.join(cpu_flags)}; "
        f"clients and server share the cores.\n\n"
        "| errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms | top-1 | RSS before → after (MiB) | peak RSS (MiB) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {result['errors']} | {result['throughput_rps']} | {lat_ms.get('p50')} | {lat_ms.get('p95')} | "
        f"{lat_ms.get('p99')} | {lat_ms.get('max')} | {result['top1_accuracy']:.4f} | {rss['before']} → "
        f"{rss['after']} ({rss['growth']:+.1f}) | {rss['peak']} |\n")
    print(json.dumps(result, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
