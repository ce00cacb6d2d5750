"""How the SGLang server is launched: its command line, with the quantization and the
context length settled against the checkpoint's own `config.json`.

SGLang refuses `--quantization fp8` for a checkpoint whose `quantization_config` names
another FP8 format (compressed-tensors, ModelOpt), and a `--context-length` above what
the model allows. So neither is a constant: the checkpoint decides, a setting may only
narrow it, and a setting that contradicts it is refused here with a message naming both,
before SGLang starts (at image build, when the kernels are precompiled, and at boot).

Standard library only: the Modal image build step that precompiles kernels imports it
before the renderer's own code is in the image.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

LAUNCH_COMMAND: tuple[str, ...] = (sys.executable, "-m", "sglang.launch_server")
PRECOMPILE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "sglang.compile_deep_gemm")

# SGLang's `get_context_length` (sglang/srt/utils/hf_transformers_utils.py) reads the
# first of these keys that the (text) config has, in this order.
CONTEXT_LENGTH_KEYS = (
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
    "model_max_length",
    "max_position_embeddings",
)
# And falls back to this when none is there.
DEFAULT_CONTEXT_LENGTH = 2048


@dataclass(frozen=True)
class SglangLaunch:
    """How to start the server. `command` replaces `python -m sglang.launch_server`,
    so tests can start a stand-in with the same flags. `quantization` and
    `context_length` are passed only when set: otherwise SGLang takes the checkpoint's."""

    model_path: str
    port: int
    host: str = "127.0.0.1"
    command: Sequence[str] = LAUNCH_COMMAND
    quantization: str | None = None
    context_length: int | None = None
    extra_args: Sequence[str] = ()

    def server_args(self) -> list[str]:
        """The flags `sglang.launch_server` (and `sglang.compile_deep_gemm`) take."""
        args = ["--model-path", self.model_path]
        if self.quantization:
            args += ["--quantization", self.quantization]
        if self.context_length:
            args += ["--context-length", str(self.context_length)]
        return [
            *args,
            "--host",
            self.host,
            "--port",
            str(self.port),
            # The memory-occupation endpoints need the memory saver, and without a CPU
            # copy of the weights a resume would bring them back uninitialised.
            "--enable-memory-saver",
            "--enable-weights-cpu-backup",
            *self.extra_args,
        ]

    def argv(self) -> list[str]:
        return [*self.command, *self.server_args()]


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint's `config.json` says about how it must be served."""

    quantization: str | None
    """`quantization_config.quant_method`, or None for unquantized weights."""
    context_length: int
    """The longest context the model allows, as SGLang derives it."""

    @classmethod
    def read(cls, model_path: str | Path) -> Checkpoint:
        """Reads `<model_path>/config.json`; raises FileNotFoundError naming the path
        when the weights are not there, ValueError when the file is not a config."""
        path = Path(model_path) / "config.json"
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no model config at {path}: are the weights provisioned?"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a JSON object")
        return cls.of(config)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Checkpoint:
        quantization = config.get("quantization_config")
        method = quantization.get("quant_method") if isinstance(quantization, Mapping) else None
        return cls(
            quantization=str(method) if method else None,
            context_length=_context_length(config),
        )


def _context_length(config: Mapping[str, Any]) -> int:
    """SGLang's derivation: a multimodal model's text config counts, and a rope scaling
    factor stretches the context unless the config says it is already applied."""
    text = config.get("text_config")
    merged = {**text, **config} if isinstance(text, Mapping) else dict(config)
    factor = 1.0
    rope = merged.get("rope_scaling")
    if isinstance(rope, Mapping):
        factor = float(rope.get("factor", 1.0))
        if "original_max_position_embeddings" in rope or rope.get("rope_type") == "llama3":
            factor = 1.0
    for key in CONTEXT_LENGTH_KEYS:
        value = merged.get(key)
        if value is not None:
            return int(float(value) * factor)
    return DEFAULT_CONTEXT_LENGTH


def settle(
    launch: SglangLaunch, checkpoint: Checkpoint, *, quantization: str, context_length: int
) -> tuple[SglangLaunch, int]:
    """The launch with its quantization and context length settled, and the context
    length the server will have. `quantization` ("" for the checkpoint's own) applies
    only to unquantized weights (quantized online); `context_length` (0 for the
    model's) may only shorten the model's. Raises ValueError on a contradiction."""
    flag: str | None = None
    if quantization and checkpoint.quantization is None:
        flag = quantization
    elif quantization and quantization != checkpoint.quantization:
        raise ValueError(
            f"the checkpoint is quantized as {checkpoint.quantization!r}, which SGLang "
            f"would refuse to serve as {quantization!r}: leave the quantization setting "
            "empty to use the checkpoint's"
        )
    if context_length > checkpoint.context_length:
        raise ValueError(
            f"a context length of {context_length} is longer than the model's "
            f"{checkpoint.context_length}, which SGLang refuses"
        )
    settled = replace(launch, quantization=flag, context_length=context_length or None)
    return settled, context_length or checkpoint.context_length
