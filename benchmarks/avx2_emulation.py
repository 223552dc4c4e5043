"""int8 ONNX accuracy on an AVX2-only x86 CPU, observed on any x86 machine by emulating one (issue 11).

onnxruntime's MLAS picks its uint8 x int8 (U8S8) GEMM per CPU from CPUID/XGETBV when it loads
(``onnxruntime/core/mlas/lib/platform.cpp``): with AVX-512 VNNI it sums the products in 32 bits
(``VPDPBUSD``); with AVX2 only it uses ``VPMADDUBSW``, which adds each pair of products into a
saturating int16. On a VNNI machine that cannot be seen natively, so this script runs the same
edgeclf runtime code (``edgeclf.runtime.load_classifier`` -> ``OrtClassifier``, which sets
``session.x64quantprecision`` from ``EDGECLF_ORT_X64_PRECISION``) twice: natively, and inside
``qemu-x86_64 -cpu Haswell`` (QEMU user-mode TCG: the process sees a CPU with AVX2/FMA and no
AVX-512, and XCR0 without the AVX-512 state). Nothing is simulated in the computation: MLAS
dispatches on what the emulated CPUID says and QEMU executes its AVX2 instructions, saturation
included. Emulated timing means nothing and is not recorded.

Steps (all at the caller's priority: run it under ``nice -n 19``):

1. for each recipe R: copy MODEL_DIR to WORK/<name>-R and ``edgeclf export --formats onnx
   --quantize int8 --onnx-int8 R --allow-drop --val-samples V`` it natively (skipped if the copy's
   manifest already lists that recipe); MODEL_DIR itself is never written;
2. a stratified sample of N test images (N/classes per class, seeded) through
   ``edgeclf.preprocess`` at the model's input size -> WORK/x.npy (natively, once);
3. one worker process natively and one under QEMU: the CPU as the process sees it (CPUID, XCR0,
   edgeclf's ``cpu_features()``), a one-node kernel probe (``MatMulInteger`` 255 x 127 over K=64:
   exact 2 072 640, VPMADDUBSW-saturated 1 048 544), then class probabilities for every
   (recipe, EDGECLF_ORT_X64_PRECISION in 0, 1) and for ``model_fp32.onnx``;
4. top-1, agreement with the native float model, predictions changed against the native run of
   the same file -> OUT/results.json (one entry per model name, merged) and OUT/README.md.

Usage::

    nice -n 19 python benchmarks/avx2_emulation.py MODEL_DIR [--recipes u8s8,u8s8-reduce-range,...]
        [--n 1000] [--cpu Haswell] [--data ../shared/datasets/cifar10-jpg/test]
        [--work /tmp/avx2-emulation] [--out benchmarks/results/avx2-emulation] [--skip-export]

Needs ``qemu-user`` (Debian: ``apt-get install qemu-user``; QEMU >= 7.2 for AVX2 in TCG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("u8s8", "u8s8-reduce-range", "s8s8", "u8u8", "from-tflite")
PROBE_K = 64   # MatMulInteger probe depth: 255 * 127 * 64 exact; 32 pairs of 32767 saturated


# -- the CPU as this process sees it ---------------------------------------------------------------
def _machine_code(code: bytes, restype, argtypes):
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    fn = ctypes.CFUNCTYPE(restype, *argtypes)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
    fn._buf = buf  # keep the page alive
    return fn


def cpuid_view() -> dict:
    """CPUID and XCR0 as this process sees them (x86-64 SysV only): the bits MLAS dispatches on.

    Returns {"brand", "xcr0", "fma", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni",
    "avx_vnni", "amx_int8", "mlas_u8s8_kernel"}; the last is the kernel MLAS's platform.cpp
    selects for those bits (``MlasGemmU8S8Kernel*``), derived, not observed.
    """
    # push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid; mov [r8..r8+12],eax/ebx/ecx/edx; pop rbx; ret
    cpuid = _machine_code(bytes.fromhex("5389f889f14989d00fa2418900418958044189480841895" "00c5bc3"),
                          None, [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p])
    # mov ecx,edi; xgetbv; shl rdx,32; or rax,rdx; ret
    xgetbv = _machine_code(bytes.fromhex("89f90f01d048c1e2204809d0c3"), ctypes.c_uint64, [ctypes.c_uint32])

    def leaf(n: int, sub: int = 0) -> list[int]:
        out = (ctypes.c_uint32 * 4)()
        cpuid(n, sub, ctypes.addressof(out))
        return list(out)

    c1, l7, l7_1 = leaf(1), leaf(7), leaf(7, 1)
    xcr0 = int(xgetbv(0)) if c1[2] >> 27 & 1 else 0
    brand = b"".join(struct.pack("<4I", *leaf(n)) for n in (0x80000002, 0x80000003, 0x80000004))
    v = {"brand": brand.rstrip(b"\0").decode(errors="replace").strip(), "xcr0": hex(xcr0),
         "fma": bool(c1[2] >> 12 & 1), "avx": bool(c1[2] >> 28 & 1), "avx2": bool(l7[1] >> 5 & 1),
         "avx512f": bool(l7[1] >> 16 & 1), "avx512bw": bool(l7[1] >> 30 & 1),
         "avx512_vnni": bool(l7[2] >> 11 & 1), "avx_vnni": bool(l7_1[0] >> 4 & 1), "amx_int8": bool(l7[3] >> 25 & 1)}
    avx_os, avx512_os = (xcr0 & 0x6) == 0x6, (xcr0 & 0xE0) == 0xE0
    kernel = "Sse"
    if v["avx"] and avx_os and v["fma"] and v["avx2"]:
        kernel = "Avx2"
        if v["avx_vnni"]:
            kernel = "AvxVnni"
        if v["avx512f"] and avx512_os and v["avx512bw"]:
            kernel = "Avx512Vnni" if v["avx512_vnni"] else "Avx512Core"
    v["mlas_u8s8_kernel"] = "MlasGemmU8S8Kernel" + kernel
    return v


def kernel_probe(precision: int) -> dict:
    """One ``MatMulInteger`` (uint8 A = 255, int8 constant B = 127, K = PROBE_K, zero points 0).

    Exact int32 result 255*127*K; a VPMADDUBSW kernel clips each pair sum to 32767, giving
    32767*K/2. ``precision`` sets ``session.x64quantprecision`` (B is rewritten to uint8 then).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeclf.runtime.ort import X64_PRECISION_KEY

    b = helper.make_tensor("B", TensorProto.INT8, [PROBE_K, 8], np.full(PROBE_K * 8, 127, np.int8).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "probe",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [4, PROBE_K])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [4, 8])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if precision:
        opts.add_session_config_entry(X64_PRECISION_KEY, "1")
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y = int(sess.run(None, {"A": np.full((4, PROBE_K), 255, np.uint8)})[0][0, 0])
    exact, saturated = 255 * 127 * PROBE_K, 32767 * PROBE_K // 2
    return {"x64quantprecision": precision, "result": y, "exact": exact, "vpmaddubsw_saturated": saturated,
            "verdict": "exact" if y == exact else "saturated" if y == saturated else "other"}


# -- worker: runs natively or under qemu ------------------------------------------------------------
def worker(spec_path: Path) -> None:
    """Run the probes and every task of the spec JSON; write <out>/<task>.npy and <out>/cpu.json."""
    from edgeclf.runtime import ModelLoadError, load_classifier
    from edgeclf.runtime.cpu import cpu_features
    from edgeclf.runtime.ort import X64_PRECISION_ENV

    spec = json.loads(spec_path.read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    cpu = {"cpuid": cpuid_view(), "edgeclf_cpu_features": cpu_features().to_dict(),
           "kernel_probe": [kernel_probe(p) for p in (0, 1)], "sessions": {}}
    (out / "cpu.json").write_text(json.dumps(cpu, indent=2))
    x = np.load(spec["x"])
    for task in spec["tasks"]:  # resumable: a task whose .npy and .json exist is not rerun
        dest, info = out / f"{task['name']}.npy", out / f"{task['name']}.json"
        if not info.is_file():
            os.environ[X64_PRECISION_ENV] = str(task["precision"])
            try:
                clf = load_classifier(task["file"], threads=1)
            except ModelLoadError as exc:  # recorded, not fatal: onnxruntime may refuse a file in one mode
                info.write_text(json.dumps({"file": task["file"], "env_precision": task["precision"],
                                            "error": str(exc)}))
                cpu["sessions"][task["name"]] = json.loads(info.read_text())
                print(f"{spec['mode']} {task['name']} failed: {exc}", flush=True)
                continue
            probs = np.concatenate([clf.predict(x[i:i + 100]) for i in range(0, len(x), 100)])
            np.save(out / f".{task['name']}.tmp.npy", probs)
            os.replace(out / f".{task['name']}.tmp.npy", dest)
            info.write_text(json.dumps({"file": task["file"], "env_precision": task["precision"],
                                        "x64_precision_set": bool(getattr(clf, "x64_precision", False))}))
        cpu["sessions"][task["name"]] = json.loads(info.read_text())
        (out / "cpu.json").write_text(json.dumps(cpu, indent=2))
        print(f"{spec['mode']} {task['name']} done", flush=True)


def run_worker(mode: str, spec: dict, work: Path, qemu: list[str]) -> None:
    spec_path = work / f"spec-{mode}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [*(qemu if mode == "emulated" else []), sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    env.pop("EDGECLF_CPU_FLAGS", None)
    env.pop("EDGECLF_CPU_ARCH", None)
    with open(work / f"worker-{mode}.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


# -- orchestration (native) ------------------------------------------------------------------------
def export_recipe(src: Path, work: Path, recipe: str, val_samples: int, skip: bool) -> Path:
    """A copy of ``src`` exported with ``--onnx-int8 recipe``; returns its model_int8.onnx."""
    dst = work / f"{src.name}-{recipe}"
    man = dst / "manifest.json"
    done = man.is_file() and any(a.get("file") == "model_int8.onnx" and a.get("quantizer") == recipe
                                 for a in json.loads(man.read_text()).get("artifacts", []))
    if not done:
        if skip:
            raise SystemExit(f"Error: {dst}: no model_int8.onnx exported with recipe {recipe} (drop --skip-export)")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        cmd = [sys.executable, "-m", "edgeclf.cli", "export", str(dst), "--formats", "onnx", "--quantize", "int8",
               "--onnx-int8", recipe, "--allow-drop", "--val-samples", str(val_samples)]
        with open(work / f"export-{recipe}.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    return dst / "model_int8.onnx"


def stratified_images(model_dir: Path, data: Path, n: int, seed: int, work: Path) -> tuple[np.ndarray, list[str]]:
    """(labels int64 (n,), files): n // classes images per class of ``data``, seeded; x.npy in ``work``."""
    from edgeclf.preprocess import load_image, to_model_batch

    manifest = json.loads((model_dir / "manifest.json").read_text())
    labels, inp = manifest["labels"], manifest["input"]
    rng = np.random.default_rng(seed)
    files, y = [], []
    for i, name in enumerate(labels):
        pool = sorted(p for p in (data / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(pool) < n // len(labels):
            raise SystemExit(f"Error: --data {data}: class '{name}' has {len(pool)} images, need {n // len(labels)}")
        for j in sorted(rng.choice(len(pool), n // len(labels), replace=False)):
            files.append(str(pool[j]))
            y.append(i)
    listed = work / "x_files.json"
    if not ((work / "x.npy").is_file() and listed.is_file() and json.loads(listed.read_text()) == files):
        x = to_model_batch([load_image(f) for f in files], inp["height"], inp["width"], inp["channels"])
        np.save(work / ".x.tmp.npy", x.astype(np.float32))
        os.replace(work / ".x.tmp.npy", work / "x.npy")
        listed.write_text(json.dumps(files))
    return np.asarray(y, np.int64), files


def metrics(preds: dict, y: np.ndarray, ref: np.ndarray) -> dict:
    """Per (mode, task): top-1, agreement with ``ref`` (the native float top-1), changes against native."""
    rows = {}
    for mode, by_task in preds.items():
        for task, p in by_task.items():
            nat = preds["native"][task]
            rows.setdefault(task, {})[mode] = {
                "top1_acc": round(float((p.argmax(1) == y).mean()), 4),
                "acc_drop_pp": round(100 * float((ref == y).mean() - (p.argmax(1) == y).mean()), 2),
                "top1_agreement_float": round(float((p.argmax(1) == ref).mean()), 4),
                "changed_vs_native": int((p.argmax(1) != nat.argmax(1)).sum()),
                "max_abs_prob_diff_vs_native": round(float(np.abs(p - nat).max()), 5)}
    return rows


def readme(results: dict) -> str:
    lines = ["# int8 ONNX on an emulated AVX2-only CPU (issue 11)", "",
             "Written by `benchmarks/avx2_emulation.py` (see its docstring for the method). Emulated timing",
             "is not a speed measurement and is not recorded. `p0`/`p1` = `EDGECLF_ORT_X64_PRECISION`",
             "(`session.x64quantprecision`). *changed* = top-1 predictions that differ from the native run",
             "of the same file and setting; *agree* = top-1 agreement with the native float model.", ""]
    for name, r in results.items():
        h, e = r["native_cpu"], r["emulated_cpu"]
        lines += [f"## {name}", "", *([f"- {r['note']}"] if r.get("note") else []),
                  f"- command: `{r['command']}`", f"- date: {r['date']}",
                  f"- host: {r['host']['lscpu_model']} ({', '.join(r['host']['int8_flags'])}); "
                  f"onnxruntime {r['onnxruntime']}; {r['qemu']}",
                  f"- emulated: `-cpu {r['cpu']}`: CPUID brand \"{e['cpuid']['brand']}\", "
                  + ", ".join(f"{k} {int(v)}" for k, v in e["cpuid"].items() if isinstance(v, bool))
                  + f", XCR0 {e['cpuid']['xcr0']} -> MLAS selects `{e['cpuid']['mlas_u8s8_kernel']}` "
                  f"(native: `{h['cpuid']['mlas_u8s8_kernel']}`)",
                  f"- edgeclf `cpu_features()` inside the emulated process: "
                  f"`{e['edgeclf_cpu_features']['int8_kernel_class']}` (it reads the host's /proc/cpuinfo)",
                  f"- kernel probe (MatMulInteger 255 x 127, K={PROBE_K}; exact {h['kernel_probe'][0]['exact']}, "
                  f"saturated {h['kernel_probe'][0]['vpmaddubsw_saturated']}): "
                  + "; ".join(f"{m} p{k['x64quantprecision']} = {k['result']} ({k['verdict']})"
                              for m, c in (("native", h), ("emulated", e)) for k in c["kernel_probe"]),
                  f"- {r['n_images']} stratified test images from `{r['data']}`; native float top-1 "
                  f"{r['float_top1_acc']:.4f}",
                  *([f"- **not run under emulation** (partial run, or load error): {', '.join(r['not_run'])}"]
                    if r.get("not_run") else []),
                  *[f"- **load error** {m} `{t}`: {i['error']}" for m, c in (("native", h), ("emulated", e))
                    for t, i in c["sessions"].items() if "error" in i],
                  "",
                  "| file | native top-1 p0 / p1 | emulated top-1 p0 / p1 | emulated drop pp p0 / p1 "
                  "| native agree p0 / p1 | emulated agree p0 / p1 | emulated changed p0 / p1 "
                  "| export validation (native) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for recipe in [*r["recipes"], "float"]:
            m = r["rows"]
            k0, k1 = (f"{recipe}-p0", f"{recipe}-p1") if recipe != "float" else ("float", "float")
            val = r["export_validation"].get(recipe, {})

            def pair(key, mode, a=k0, b=k1, m=m):
                cell = [str(m[k][mode][key]) if k in m and mode in m[k] else "–" for k in dict.fromkeys((a, b))]
                return " / ".join(cell)
            lines.append(f"| {recipe} | {pair('top1_acc', 'native')} | {pair('top1_acc', 'emulated')} | "
                         f"{pair('acc_drop_pp', 'emulated')} | {pair('top1_agreement_float', 'native')} | "
                         f"{pair('top1_agreement_float', 'emulated')} | "
                         f"{pair('changed_vs_native', 'emulated')} | "
                         f"{_validation_cell(val)} |")
        lines.append("")
    return "\n".join(lines)


def _validation_cell(val: dict) -> str:
    return f"{val['top1_acc']} (drop {val['acc_drop_pp']}, {val['n_images']} images)" if val else ""


def host_facts() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("Flags")), [])
    return {"lscpu_model": model, "int8_flags": [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512bw",
            "avx512_vnni", "avx_vnni", "amx_int8")], "machine": platform.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path, nargs="?")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--n", type=int, default=1000, help="test images (stratified; a multiple of the class count)")
    ap.add_argument("--cpu", default="Haswell", help="qemu -cpu model (AVX2, no AVX-512)")
    ap.add_argument("--qemu", default="qemu-x86_64")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/cifar10-jpg/test")
    ap.add_argument("--work", type=Path, default=Path("/tmp/avx2-emulation"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/avx2-emulation")
    ap.add_argument("--val-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="free text for the README (e.g. where MODEL_DIR came from)")
    ap.add_argument("--precisions", default="0,1", help="EDGECLF_ORT_X64_PRECISION values to run")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="run no worker: report the tasks already done in both modes (a partial run)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    if a.model_dir is None or not (a.model_dir / "manifest.json").is_file():
        raise SystemExit(f"Error: MODEL_DIR {a.model_dir}: no manifest.json (give an exported edgeclf model directory)")
    recipes = [r for r in a.recipes.split(",") if r]
    if bad := [r for r in recipes if r not in RECIPES]:
        raise SystemExit(f"Error: --recipes: unknown {', '.join(bad)} (known: {', '.join(RECIPES)})")
    if shutil.which(a.qemu) is None:
        raise SystemExit(f"Error: --qemu {a.qemu}: not found (apt-get install qemu-user)")
    src = a.model_dir.resolve()
    work = a.work / src.name
    work.mkdir(parents=True, exist_ok=True)
    float_file = src / "model_fp32.onnx"
    if not float_file.is_file():
        raise SystemExit(f"Error: {float_file}: missing (edgeclf export {src} --formats onnx --quantize none)")
    files = {r: export_recipe(src, work, r, a.val_samples, a.skip_export or a.report_only) for r in recipes}
    y, images = stratified_images(src, a.data.resolve(), a.n, a.seed, work)
    tasks = [{"name": "float", "file": str(float_file), "precision": 0}]
    precisions = [int(p) for p in a.precisions.split(",") if p in ("0", "1")]
    tasks += [{"name": f"{r}-p{p}", "file": str(f), "precision": p} for r, f in files.items() for p in precisions]
    qemu = [a.qemu, "-cpu", a.cpu]
    preds, cpus = {}, {}
    for mode in ("native", "emulated"):
        out = work / "preds" / f"{mode}-{a.cpu}" if mode == "emulated" else work / "preds" / mode
        if not a.report_only:
            run_worker(mode, {"mode": mode, "x": str(work / "x.npy"), "out": str(out), "tasks": tasks}, work, qemu)
        done = [t["name"] for t in tasks if (out / f"{t['name']}.npy").is_file()]
        preds[mode] = {name: np.load(out / f"{name}.npy") for name in done}
        cpus[mode] = json.loads((out / "cpu.json").read_text())
    missing = [t["name"] for t in tasks if t["name"] not in preds["emulated"] or t["name"] not in preds["native"]]
    if "float" not in preds["native"]:
        raise SystemExit(f"Error: {work}: no native float predictions yet (run without --report-only)")
    ref = preds["native"]["float"].argmax(1)
    preds["emulated"] = {k: v for k, v in preds["emulated"].items() if k in preds["native"]}
    validation = {}
    for r, f in files.items():
        entry = next(x for x in json.loads((f.parent / "manifest.json").read_text())["artifacts"]
                     if x["file"] == "model_int8.onnx")
        validation[r] = entry.get("validation") or {}
    import onnxruntime
    result = {"command": " ".join(["nice -n 19 python benchmarks/avx2_emulation.py", str(a.model_dir),
                                   f"--recipes {','.join(recipes)}", f"--n {a.n}", f"--cpu {a.cpu}",
                                   f"--precisions {a.precisions}"]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model_dir": str(src),
              "host": host_facts(), "onnxruntime": onnxruntime.__version__,
              "qemu": subprocess.run([a.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
              "note": a.note, "cpu": a.cpu, "data": str(a.data), "n_images": len(y), "seed": a.seed, "recipes": recipes,
              "float_top1_acc": round(float((ref == y).mean()), 4),
              "native_cpu": cpus["native"], "emulated_cpu": cpus["emulated"], "not_run": missing,
              "export_validation": validation, "rows": metrics(preds, y, ref)}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.json"
    allres = json.loads(path.read_text()) if path.is_file() else {}
    allres[src.name] = result
    for name, text in (("results.json", json.dumps(allres, indent=2) + "\n"), ("README.md", readme(allres))):
        tmp = a.out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, a.out / name)
    print((a.out / "README.md").read_text())


if __name__ == "__main__":
    main()
