"""tools/gpu_smoke.py on this CPU-only machine: without torch, and with a torch that sees
no GPU, it stops with one clear line; with a numpy-backed stand-in for a CUDA torch (the
GPU faked, as nothing here has one), its measurement path renders and prints its JSON
line. No GPU number here means anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "tools" / "gpu_smoke.py"

NO_GPU_TORCH = """
__version__ = "2.9.0+cpu"


class cuda:
    @staticmethod
    def is_available():
        return False
"""

# Enough of torch's surface for gpu_smoke's bare-torch path, computed with numpy.
NUMPY_TORCH = """
import types
import numpy as np

__version__ = "2.9.0+fake"
bfloat16 = np.float32
version = types.SimpleNamespace(cuda="12.9")


class Tensor:
    def __init__(self, array):
        self.array = np.asarray(array)
        self.shape = self.array.shape
        self.dtype = self.array.dtype

    def pin_memory(self):
        return self

    def to(self, device, non_blocking=False):
        return Tensor(self.array.copy())

    def __matmul__(self, other):
        return Tensor(self.array @ other.array)

    def numel(self):
        return self.array.size

    def element_size(self):
        return self.array.itemsize

    def item(self):
        return self.array.item()


def ones(shape, dtype=np.float32, device=None):
    return Tensor(np.ones(shape, dtype=dtype))


def tanh(tensor):
    return Tensor(np.tanh(tensor.array))


def argmax(tensor):
    return Tensor(np.argmax(tensor.array))


class cuda:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def get_device_properties(index):
        return types.SimpleNamespace(name="Fake H100", total_memory=80 * 2**30)

    @staticmethod
    def init():
        return None

    @staticmethod
    def synchronize():
        return None

    @staticmethod
    def empty_cache():
        return None

    @staticmethod
    def mem_get_info():
        return (70 * 2**30, 80 * 2**30)

    @staticmethod
    def max_memory_allocated():
        return 2**20
"""


def run_smoke(
    tmp_path: Path, torch_source: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    """Runs the smoke script from the repository root, with `torch_source` as the only
    torch importable (none at all when None) and no cuda-checkpoint on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPILLWAY_")}
    env["PATH"] = str(Path(sys.executable).parent)
    if torch_source is not None:
        (tmp_path / "torch").mkdir()
        (tmp_path / "torch" / "__init__.py").write_text(torch_source)
        env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, str(SMOKE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("torch_source", "message"),
    [
        (None, "gpu_smoke: torch is not installed: this needs a CUDA machine with torch"),
        (NO_GPU_TORCH, "gpu_smoke: no CUDA GPU visible to torch 2.9.0+cpu"),
    ],
    ids=["no-torch", "no-gpu"],
)
def test_without_a_gpu_it_says_so_in_one_line(
    tmp_path: Path, torch_source: str | None, message: str
) -> None:
    """With no torch, or a torch that sees no CUDA GPU, the script exits 2 with one line
    on stderr saying what is missing, and prints nothing on stdout."""
    done = run_smoke(tmp_path, torch_source)

    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_on_bare_torch_it_renders_and_prints_one_json_line(tmp_path: Path) -> None:
    """On torch without SGLang (here a numpy stand-in for a CUDA torch), the script
    boots the stand-in engine, restores its weights, renders the requested video through
    the renderer's pipeline and prints the measurements as one JSON line."""
    done = run_smoke(
        tmp_path,
        NUMPY_TORCH,
        *("--seconds", "1", "--width", "64", "--height", "48", "--fps", "8"),
        *("--weights-gib", "0.0001"),
    )

    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    result = json.loads(line)
    assert (result["gpu"], result["engine"], result["sglang"]) == (
        "Fake H100",
        "torch-standin",
        None,
    )
    assert (result["frames"], result["cuda_checkpoint"]) == (8, None)
    assert result["mp4_bytes"] > 0 and result["weights_bytes"] > 0
    for key in ("cold_boot_s", "restore_s", "render_s"):
        assert result[key] >= 0
    assert result["gpu_memory_used_bytes"] == 10 * 2**30
