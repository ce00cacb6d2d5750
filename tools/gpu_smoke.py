"""GPU smoke test of the Modal renderer's container path, for a person with an H100 (or
any CUDA GPU) before go-live, without Modal. From the repository root, with the project
installed (`pip install -e .`) and torch:

    python tools/gpu_smoke.py [--model-path DIR] [--seconds 4] [--width 720]
                              [--height 1280] [--fps 24] [--weights-gib 8]

It prints one JSON line on stdout (logs go to stderr) with what the go-live gate needs:

- `cold_boot_s`: a container's boot. With SGLang installed and `--model-path` (a weights
  folder with its config.json): SGLang launched as `Renderer.boot` launches it, with the
  deploy's SPILLWAY_MODAL_QUANTIZATION, _CONTEXT_LENGTH and _SGLANG_ARGS, until healthy
  and warmed up. Otherwise, on bare torch: CUDA's start and the load of a
  stand-in weights tensor of `--weights-gib` from host memory, with a warm-up step.
- `restore_s`: what a restore from a GPU snapshot costs in-process, as far as it can be
  measured without Modal: SGLang's memory release and resume (what `boot` and
  `restore` do around the snapshot), or, on bare torch, the stand-in weights moved to a
  host copy and back (the CPU backup that `--enable-weights-cpu-backup` keeps). Where
  NVIDIA's `cuda-checkpoint` is on PATH, `cuda_checkpoint` also times a checkpoint and
  a restore of a process holding the weights: Modal's runtime snapshots GPU memory with
  it. The snapshot of the CPU side is Modal's alone and is not measured.
- `render_s`, `frames`, `mp4_bytes`: one render through the renderer's pipeline: the
  engine (SGLang, or a torch stand-in doing one matrix-vector product over the weights
  per frame, like a decode step), the stand-in frame decoder and the H.264 encoder.
- `gpu_memory_peak_bytes` (torch, this process) and `gpu_memory_used_bytes` (the
  device, every process: SGLang's included), after the render.

Exit status: 0 measured; 1 a step failed; 2 no torch, or no CUDA GPU visible to it. A
failure prints one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import util
from pathlib import Path
from typing import Any

# What the child process that cuda-checkpoint toggles runs: it holds the weights on the
# GPU until its stdin closes.
_HOLDER = """
import sys, torch
weights = torch.ones(int(sys.argv[1]), dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.read()
"""


class SmokeError(Exception):
    """A step failed; the message says which."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", help="weights folder, for SGLang (when installed)")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=1280)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument(
        "--weights-gib", type=float, default=8.0, help="size of the torch stand-in's weights"
    )
    args = parser.parse_args(argv)
    try:
        torch = _cuda_torch()
    except SmokeError as error:
        print(f"gpu_smoke: {error}", file=sys.stderr)
        return 2
    try:
        result = measure(torch, args)
    except Exception as error:
        print(f"gpu_smoke: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


def _cuda_torch() -> Any:
    """torch, once it is known to see a CUDA GPU; SmokeError saying what is missing."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        raise SmokeError(
            "torch is not installed: this needs a CUDA machine with torch "
            "(pip install torch), and SGLang for the production engine"
        ) from None
    if not torch.cuda.is_available():
        raise SmokeError(
            f"no CUDA GPU visible to torch {torch.__version__}: run this on a machine "
            "with an NVIDIA GPU and its driver"
        )
    return torch


def measure(torch: Any, args: argparse.Namespace) -> dict[str, Any]:
    from renderer.pipeline import RenderSpec

    spec = RenderSpec(
        job_id="gpu-smoke",
        prompt="a lighthouse at dusk, waves breaking",
        model="smoke",
        seconds=args.seconds,
        width=args.width,
        height=args.height,
        fps=args.fps,
    )
    device = torch.cuda.get_device_properties(0)
    result: dict[str, Any] = {
        "gpu": device.name,
        "gpu_memory_total_bytes": device.total_memory,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sglang": _sglang_version(),
    }
    if result["sglang"] and args.model_path:
        result.update(_with_sglang(torch, spec, args))
    else:
        result.update(_with_torch(torch, spec, args.weights_gib))
    result["cuda_checkpoint"] = _cuda_checkpoint(args.weights_gib)
    return result


def _sglang_version() -> str | None:
    if util.find_spec("sglang") is None:
        return None
    from importlib.metadata import version

    return version("sglang")


def _with_sglang(torch: Any, spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    from renderer.cpu import CpuFrameDecoder
    from renderer.modal_config import ModalConfig
    from renderer.sglang_engine import SglangServer, SglangTokenEngine
    from renderer.sglang_launch import Checkpoint, SglangLaunch, settle

    config = ModalConfig.from_environ(os.environ)
    launch, context_length = settle(
        SglangLaunch(model_path=args.model_path, port=30000, extra_args=config.sglang_args),
        Checkpoint.read(args.model_path),
        quantization=config.quantization,
        context_length=config.context_length,
    )
    with SglangServer(launch) as server:
        started = time.monotonic()
        server.start(ready_timeout_s=3600)
        server.warm_up()
        cold_boot_s = time.monotonic() - started
        server.release_memory()
        started = time.monotonic()
        server.resume_memory()
        restore_s = time.monotonic() - started
        engine = SglangTokenEngine(server, context_length=context_length)
        rendered = _render(spec, engine, CpuFrameDecoder())
        used = _device_used(torch)
    return {
        "engine": "sglang",
        "cold_boot_s": cold_boot_s,
        "restore_s": restore_s,
        "restore_kind": "sglang release and resume of memory occupation",
        **rendered,
        "gpu_memory_used_bytes": used,
        "gpu_memory_peak_bytes": torch.cuda.max_memory_allocated(),
    }


class TorchTokenEngine:
    """A stand-in for the token engine on the GPU: per frame, one matrix-vector product
    over the stand-in weights (bandwidth-bound, like a decode step), whose argmax
    becomes the frame's phase for the stand-in decoder."""

    def __init__(self, torch: Any, weights: Any) -> None:
        self._torch = torch
        self._weights = weights

    @property
    def name(self) -> str:
        return "torch-standin"

    def tokens(self, spec: Any) -> Iterator[Any]:
        import numpy as np

        from renderer.pipeline import FrameTokens

        torch = self._torch
        state = torch.ones(self._weights.shape[1], dtype=self._weights.dtype, device="cuda")
        for index in range(spec.frames):
            state = torch.tanh(self._weights @ state)
            token = int(torch.argmax(state).item())
            phase = (token % 997) / 997
            yield FrameTokens(index=index, data=np.array([phase], dtype=np.float64))


def _with_torch(torch: Any, spec: Any, weights_gib: float) -> dict[str, Any]:
    from renderer.cpu import CpuFrameDecoder

    side = max(1, int(math.sqrt(weights_gib * 2**30 / 2)))
    started = time.monotonic()
    torch.cuda.init()
    host = torch.ones((side, side), dtype=torch.bfloat16).pin_memory()
    weights = host.to("cuda", non_blocking=True)
    engine = TorchTokenEngine(torch, weights)
    next(engine.tokens(spec))
    torch.cuda.synchronize()
    cold_boot_s = time.monotonic() - started
    started = time.monotonic()
    backup = weights.to("cpu")
    del weights
    torch.cuda.empty_cache()
    weights = backup.to("cuda")
    torch.cuda.synchronize()
    restore_s = time.monotonic() - started
    rendered = _render(spec, TorchTokenEngine(torch, weights), CpuFrameDecoder())
    return {
        "engine": "torch-standin",
        "weights_bytes": weights.numel() * weights.element_size(),
        "cold_boot_s": cold_boot_s,
        "restore_s": restore_s,
        "restore_kind": "weights to a host copy and back",
        **rendered,
        "gpu_memory_used_bytes": _device_used(torch),
        "gpu_memory_peak_bytes": torch.cuda.max_memory_allocated(),
    }


def _render(spec: Any, engine: Any, decoder: Any) -> dict[str, Any]:
    from renderer.pipeline import render_to_file
    from renderer.probe import probe_mp4

    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        result = render_to_file(spec, Path(tmp) / "smoke.mp4", engine=engine, decoder=decoder)
        frames = probe_mp4(result.path).frames
    if frames != spec.frames:
        raise SmokeError(f"the MP4 has {frames} frames, expected {spec.frames}")
    return {"render_s": result.render_seconds, "frames": frames, "mp4_bytes": result.bytes}


def _device_used(torch: Any) -> int:
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def _cuda_checkpoint(weights_gib: float) -> dict[str, Any] | None:
    """Checkpoint and restore times of a process holding the weights, with NVIDIA's
    cuda-checkpoint, or None without it; a failure is reported, not raised."""
    tool = shutil.which("cuda-checkpoint")
    if tool is None:
        return None
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(int(weights_gib * 2**30))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if holder.stdout.readline().strip() != "ready":
            return {"error": f"the holder process exited with {holder.wait()}"}
        toggle = [tool, "--toggle", "--pid", str(holder.pid)]
        started = time.monotonic()
        subprocess.run(toggle, check=True, capture_output=True)
        checkpointed = time.monotonic()
        subprocess.run(toggle, check=True, capture_output=True)
        restored = time.monotonic()
    except subprocess.CalledProcessError as error:
        return {"error": f"cuda-checkpoint failed: {error.stderr!r}"}
    finally:
        holder.stdin.close()
        holder.wait()
    return {"checkpoint_s": checkpointed - started, "restore_s": restored - checkpointed}


if __name__ == "__main__":
    sys.exit(main())
