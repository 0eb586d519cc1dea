"""segpp-gpu-check (tools/gpu-check): prove the CUDA path in one command, about 10 minutes on a GPU.

    tools/gpu-check                  # on a machine with CUDA: everything, results in out/gpu/
    tools/gpu-check --dry-run        # the same steps on the CPU at small sizes (what CI runs)

Steps: the environment (GPU, CUDA, capability, bfloat16, which attention kernel each stage's
shapes get); test/test_cuda.py against the CPU; the CUDA graph checks (segpp_ros.training.
cudacheck: segmentation and pose capturing and replaying on two threads for 300 frames while
presets, cameras and persons change, against single-threaded eager runs; a graph replayed after
its index tables were evicted; the captures of a scripted minute; TF32 on/off label agreement);
segpp-bench (B0 at 512x1024, 1024x1024 and 1024x2048, B5 at 1024x1024 batch 8 as in the paper;
fp32/fp16/bf16; every preset; eager, CUDA graphs and torch.compile's inductor; forward and
image-to-labels times); the Segmenter's time split into pre-processing, network and
post-processing at 1080p; segpp-posebench; segpp-rosbench where ROS is installed.
Writes out/gpu/report.md (the tables) and out/gpu/gpu-check.json, and prints the report. Needs
only PyTorch, NumPy, OpenCV and safetensors (the project's runtime), not ROS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:                 # imported inside the steps: --help needs no torch
    import torch

PROG = "segpp-gpu-check"
ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU at small sizes")
    p.add_argument("--out", default="out/gpu", help="folder for report.md and gpu-check.json (default: out/gpu)")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: tests,graphs,bench,split,pose,ros")
    return p


def environment(device: torch.device) -> dict:
    """What the machine is, and which SDPA kernel each stage's attention shapes can use."""
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gb=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
        env["sdpa"] = sdpa_backends(device)
    return env


def sdpa_backends(device: torch.device) -> dict[str, list[str]]:
    """Per stage of a 1024x1024 B0 forward (heads, tokens, keys; head size 32), the SDPA kernels
    that run the shape in float16 (each one forced in turn)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shapes = {"stage1": (1, 65536, 1024), "stage2": (2, 16384, 1024), "stage3": (5, 4096, 1024),
              "stage4": (8, 1024, 1024)}
    found = {}
    for stage, (heads, n, m) in shapes.items():
        q = torch.randn(1, heads, n, 32, device=device, dtype=torch.float16)
        kv = torch.randn(1, heads, m, 32, device=device, dtype=torch.float16)
        ok = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, kv, kv)
                ok.append(backend.name.lower())
            except RuntimeError:
                pass
        found[stage] = ok
    return found


def run_tests(device: str, small: bool) -> dict:
    env = {**os.environ, "SEGPP_CHECK_DEVICE": device, "SEGPP_CHECK_SMALL": "1" if small else "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(ROOT / "test" / "test_cuda.py")], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"exit_code": done.returncode, "summary": lines[-1] if lines else "", "seconds": round(time.perf_counter() - start),
            "output_tail": "\n".join(lines[-40:])}


def graph_checks(device: torch.device, dry: bool) -> dict:
    from ..training import cudacheck

    out = {}
    for name in ("concurrency", "ownership", "capture_count", "tf32"):
        start = time.perf_counter()
        out[name] = getattr(cudacheck, name)(str(device), dry)
        print(f"  {name}: {json.dumps(out[name])[:300]} ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def bench(device: torch.device, dry: bool) -> list[dict]:
    import torch

    from ..inference.loader import tune_backend
    from ..model import PRESETS, build_model
    from ..training.bench import DTYPES, run_case

    tune_backend(device)
    precisions = ["fp32"] if dry else ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    graph_modes = [False] if device.type != "cuda" else [False, True]
    cases = ([("b0", (64, 128), 1), ("b0", (64, 64), 2)] if dry else
             [("b0", (512, 1024), 1), ("b0", (1024, 1024), 1), ("b0", (1024, 2048), 1), ("b5", (1024, 1024), 8)])
    rows = []
    for variant, size, batch in cases:
        for precision in precisions:
            torch.manual_seed(0)
            model = build_model(variant, num_classes=19).eval().fold_for_inference().to(device, DTYPES[precision])
            for graphs in graph_modes:
                # eager beside inductor, then CUDA graphs (inductor's own graphs: mode reduce-overhead)
                backends = ("torch",) if graphs or (dry and batch > 1) else ("torch", "inductor")
                found = run_case(model, None, variant, size, precision, device, presets=list(PRESETS), batch=batch,
                                 warmup=1 if dry else 3, iters=2 if dry else 10, memory=not graphs,
                                 e2e=batch == 1, graphs=graphs, backends=backends)
                rows += [asdict(r) for r in found]
                print(f"  bench {variant} {size[0]}x{size[1]} x{batch} {precision} graphs={graphs}: "
                      + ", ".join(f"{r.backend} {r.strategy} {r.median_ms:.1f} ms" for r in found), flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def split(device: torch.device, dry: bool) -> list[dict]:
    """The Segmenter's time per frame in its parts (CUDA events or the wall clock), embedded B0,
    from the Segmentation's own split; labels checked against the exactness rule of the classic
    path (test/label_exactness.py) on the same logits are test_cuda's."""
    import numpy as np

    from ..inference import Segmenter
    from ..inference.segmenter import network_size

    height, width = (240, 320) if dry else (1080, 1920)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows = []
    for max_side in ((128,) if dry else (256, 512, 1024)):
        seg = Segmenter(None, device=str(device), max_side=max_side)
        results = [seg(image, color=True, overlay_alpha=0.5) for _ in range(3 if dry else 30)]
        results = results[1 if dry else 5:]
        rows.append({"input": f"{height}x{width}", "network": "x".join(map(str, network_size(height, width, max_side))),
                     "precision": str(seg.dtype), "frame_path": seg.frame_path,
                     **{k: round(float(np.median([getattr(r, k) for r in results])), 2)
                        for k in ("pre_ms", "network_ms", "post_ms", "colour_ms", "total_ms")}})
    return rows


def pose(device: torch.device, dry: bool) -> list[dict]:
    from ..training.posebench import run

    rows = run(None, presets=["none", "hq", "2x2"], persons=[1, 4] if dry else [1, 4, 8],
               frame=(96, 160) if dry else (720, 1280), input_size=(64, 48) if dry else (384, 288),
               device=str(device), warmup=0 if dry else 2, iters=1 if dry else 7)
    return [asdict(r) for r in rows]


def rosbench(device: torch.device, dry: bool) -> dict:
    try:
        import rclpy  # noqa: F401

        from ..ros.env import is_isolated_network
    except ImportError as err:
        return {"skipped": f"ROS is not installed here ({err}); run segpp-rosbench --device cuda in a ROS venv"}
    if not is_isolated_network():
        return {"skipped": "not in an isolated network namespace: run under tools/netns-run"}
    sizes = "240x320" if dry else "480x640,1080x1920"
    done = subprocess.run([sys.executable, "-m", "segpp_ros.cli.rosbench", "--sizes", sizes, "--device", str(device),
                           "--rounds", "2" if dry else "5", "--frames-per-round", "2" if dry else "6",
                           "--max-side", "128" if dry else "1024", "--threads", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    return {"exit_code": done.returncode, "output": done.stdout[-6000:] + done.stderr[-2000:]}


def report(result: dict) -> str:
    from ..inference.timing import markdown_table
    from ..training.bench import Row, format_table

    env = result["environment"]
    lines = [f"# {PROG}{' (dry run, CPU)' if result['dry_run'] else ''}", "",
             "## Environment", "", markdown_table(("what", "value"), ([k, v] for k, v in env.items() if k != "sdpa"))]
    if env.get("sdpa"):
        lines += ["", markdown_table(("stage (B0, 1024x1024)", "SDPA kernels that run it (fp16)"),
                                     ([k, ", ".join(v) or "none"] for k, v in env["sdpa"].items()))]
    if "tests" in result:
        t = result["tests"]
        lines += ["", "## test/test_cuda.py", "", f"exit code {t['exit_code']}: {t['summary']} ({t['seconds']} s)"]
    if result.get("graphs"):
        g = result["graphs"]
        lines += ["", "## CUDA graph checks", ""]
        for name, found in g.items():
            lines += [f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in found.items())]
    if result.get("bench"):
        lines += ["", "## segpp-bench (every preset; eager, CUDA graphs, inductor)", "",
                  format_table([Row(**r) for r in result["bench"]])]
    if result.get("split"):
        lines += ["", "## Segmenter time per frame, split", "",
                  markdown_table(list(result["split"][0]), (list(r.values()) for r in result["split"]))]
    if result.get("pose"):
        lines += ["", "## segpp-posebench", "",
                  markdown_table(list(result["pose"][0]), (list(r.values()) for r in result["pose"]))]
    if "ros" in result:
        ros = result["ros"]
        lines += ["", "## segpp-rosbench", "", ros.get("skipped") or "```\n" + ros["output"] + "\n```"]
    lines += ["", f"{result['seconds']} s in all"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    skip = {s for s in args.skip.split(",") if s}
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print(f"{PROG}: no CUDA device here; `{PROG} --dry-run` runs the same steps on the CPU", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result: dict = {"dry_run": args.dry_run, "environment": environment(device)}
    print(json.dumps(result["environment"], indent=1), flush=True)
    steps = [("tests", lambda: run_tests(str(device), args.dry_run)),
             ("graphs", lambda: graph_checks(device, args.dry_run)), ("bench", lambda: bench(device, args.dry_run)),
             ("split", lambda: split(device, args.dry_run)), ("pose", lambda: pose(device, args.dry_run)),
             ("ros", lambda: rosbench(device, args.dry_run))]
    failed = False
    for name, step in steps:
        if name in skip:
            continue
        print(f"== {name}", flush=True)
        try:
            result[name] = step()
        except Exception as err:  # noqa: BLE001 -- one failing step must not cost the others' figures
            result[name + "_error"] = f"{type(err).__name__}: {err}"
            print(f"{PROG}: step {name} failed: {result[name + '_error']}", file=sys.stderr, flush=True)
            failed = True
    result["seconds"] = round(time.perf_counter() - start)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (out / "report.md").write_text(text)
    print(text)
    tests_failed = result.get("tests", {}).get("exit_code", 0) != 0
    checks_failed = [name for name, found in result.get("graphs", {}).items() if found.get("ok") is False]
    if checks_failed:
        print(f"{PROG}: CUDA graph checks failed: {', '.join(checks_failed)}", file=sys.stderr)
    return 1 if failed or tests_failed or checks_failed else 0


if __name__ == "__main__":
    sys.exit(main())
