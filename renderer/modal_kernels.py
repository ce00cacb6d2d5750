"""The kernel precompile: a build step of the renderer's Modal image, run on the pinned
GPU with the weights and the kernel cache mounted, that compiles DeepGEMM's kernels for
the served model into the cache Volume.

On Hopper, SGLang serves block-FP8 weights with DeepGEMM, whose kernels are compiled
just in time, "typically 10-20 mins" by SGLang's account: left to the first boot, they
would outlast its startup timeout, and a killed boot commits nothing, so every retry
would compile again. Compiled here, once per (weights, GPU, launch flags), they are in
the Volume before any container boots.

Imported in the build container before the renderer's code is in the image, so it
needs nothing but the standard library, `modal` and `renderer.sglang_launch`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import modal

from renderer.sglang_launch import PRECOMPILE_COMMAND, Checkpoint, SglangLaunch, settle

# compile_deep_gemm starts a server of its own to find the shapes; any free port will do.
PRECOMPILE_PORT = 30001


def precompile_argv(
    *,
    model_path: str,
    quantization: str,
    context_length: int,
    sglang_args: Sequence[str],
    timeout_s: int,
) -> list[str]:
    """`python -m sglang.compile_deep_gemm` with the flags the renderer launches SGLang
    with (the kernels depend on them), settled against the checkpoint."""
    launch = SglangLaunch(
        model_path=model_path,
        port=PRECOMPILE_PORT,
        command=PRECOMPILE_COMMAND,
        extra_args=tuple(sglang_args),
    )
    settled, _ = settle(
        launch,
        Checkpoint.read(model_path),
        quantization=quantization,
        context_length=context_length,
    )
    return [*settled.argv(), "--timeout", str(timeout_s)]


def precompile_kernels(
    *,
    model_path: str,
    quantization: str,
    context_length: int,
    sglang_args: Sequence[str],
    gpu: str,
    cache_volume: str,
    timeout_s: int,
) -> None:
    """Compiles the kernels into the cache Volume and commits it. Every argument is
    part of the image's cache key (Modal hashes `run_function`'s kwargs): `gpu` among
    them because DeepGEMM specialises its kernels to the GPU's SM count."""
    print(f"precompiling DeepGEMM kernels for {model_path} on {gpu}", flush=True)
    argv = precompile_argv(
        model_path=model_path,
        quantization=quantization,
        context_length=context_length,
        sglang_args=sglang_args,
        timeout_s=timeout_s,
    )
    subprocess.run(argv, check=True)
    # Explicitly, rather than on the build container's exit: the kernels must be in the
    # Volume before the image that expects them is used.
    modal.Volume.from_name(cache_volume).commit()
