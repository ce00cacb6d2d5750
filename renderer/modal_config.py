"""The Modal deployment's settings: the SPILLWAY_MODAL_* variables that `modal deploy`
(or `tools/modal_deploy.py`) reads when it imports `renderer.modal_app` and
`renderer.modal_weights`, written into the image so that containers read the same.

A malformed value stops the import with an error naming the variable and the value.
Standard library only: image build steps import it before the renderer's own
dependencies are installed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

ENV_APP = "SPILLWAY_MODAL_APP"
"""Name of the deployed Modal app, which the scheduler looks the class up in."""
BILLING_TAG = "spillway"
"""The tag the app carries, its value the app's name: Modal's billing report attributes
cost to the app with its tags, and the scheduler's spend meter picks its rows by it."""
ENV_GPU = "SPILLWAY_MODAL_GPU"
"""The one GPU type containers (and the kernel precompile) run on: FP8-capable, and
pinned, so that every container restores the same snapshot and kernels."""
ENV_CPU = "SPILLWAY_MODAL_CPU"
"""CPU cores reserved per container: SGLang's tokenizer, scheduler and detokenizer
processes and the H.264 encoder share them."""
ENV_MEMORY_MIB = "SPILLWAY_MODAL_MEMORY_MIB"
"""Memory reserved per container, in MiB: the CPU copy of the weights that
`--enable-weights-cpu-backup` keeps, the CPU memory snapshot and the encoder."""
ENV_MAX_CONTAINERS = "SPILLWAY_MODAL_MAX_CONTAINERS"
"""Most containers at once: the GPU budget's cap on the spill."""
ENV_SCALEDOWN_S = "SPILLWAY_MODAL_SCALEDOWN_S"
"""Seconds an idle container stays up, waiting for more work (Modal allows 2-3600)."""
ENV_TIMEOUT_S = "SPILLWAY_MODAL_TIMEOUT_S"
"""Seconds one render may take before Modal stops it."""
ENV_STARTUP_TIMEOUT_S = "SPILLWAY_MODAL_STARTUP_TIMEOUT_S"
"""Seconds a container's start may take before Modal stops it: a boot from scratch
(weights, CUDA graphs, kernels the precompile missed) or a snapshot restore."""
ENV_CONCURRENCY = "SPILLWAY_MODAL_CONCURRENCY"
"""Renders one container runs at once (SGLang batches their generates). The scheduler's
SPILLWAY_SPILL_CONCURRENCY must match it, as SPILLWAY_SPILL_MAX_CONTAINERS must match
SPILLWAY_MODAL_MAX_CONTAINERS."""
ENV_MODELS_VOLUME = "SPILLWAY_MODAL_MODELS_VOLUME"
"""Modal Volume holding the weights, one folder per version, mounted read-only at
/models in the renderer; the weights function writes it."""
ENV_CACHE_VOLUME = "SPILLWAY_MODAL_CACHE_VOLUME"
"""Modal Volume for compiled kernels (DeepGEMM, FlashInfer, Triton, Inductor), mounted
at /cache; created on the first deploy."""
ENV_WEIGHTS_VERSION = "SPILLWAY_MODAL_WEIGHTS_VERSION"
"""The pinned weights version: the folder under the store's prefix that is copied to
/models/<version>, which SGLang serves."""
ENV_WEIGHTS_URL = "SPILLWAY_MODAL_WEIGHTS_URL"
"""Where the weights versions are kept: `s3://bucket/prefix` on a private
S3-compatible store."""
ENV_WEIGHTS_ENDPOINT_URL = "SPILLWAY_MODAL_WEIGHTS_ENDPOINT_URL"
"""The store's endpoint, empty for AWS S3."""
ENV_WEIGHTS_SECRET = "SPILLWAY_MODAL_WEIGHTS_SECRET"
"""Modal Secret with the store's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
optionally AWS_REGION), attached to the weights function only."""
ENV_QUANTIZATION = "SPILLWAY_MODAL_QUANTIZATION"
"""Empty: serve the checkpoint's own quantization (its config.json). Otherwise an
SGLang `--quantization` method for unquantized weights; one that contradicts the
checkpoint is refused at deploy."""
ENV_CONTEXT_LENGTH = "SPILLWAY_MODAL_CONTEXT_LENGTH"
"""0: the model's context length (its config.json). Otherwise a shorter one."""
ENV_SGLANG_ARGS = "SPILLWAY_MODAL_SGLANG_ARGS"
"""More `sglang.launch_server` flags, as one shell-quoted string."""
ENV_OTEL_SECRET = "SPILLWAY_MODAL_OTEL_SECRET"
"""Modal Secret holding OTEL_EXPORTER_OTLP_ENDPOINT (and _HEADERS, OTEL_SERVICE_NAME),
attached to the renderer so that its spans are exported; empty for none."""

MODELS_DIR = "/models"
# FP8 needs Hopper or newer. "H100!" refuses Modal's upgrade of an H100 request to an
# H200: that would make a second family of snapshots and kernels for another SM count.
PINNED_GPUS = ("H100!", "H200", "B200")
_MODAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_QUANTIZATION = re.compile(r"[a-z0-9_-]{1,64}")
_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?")
T = TypeVar("T", int, float)


@dataclass(frozen=True)
class ModalConfig:
    """The deployment's settings; the defaults are those of an unset variable."""

    app: str = "spillway-renderer"
    gpu: str = "H100!"
    cpu: float = 8.0
    memory_mib: int = 65536
    max_containers: int = 10
    scaledown_s: int = 300
    timeout_s: int = 1800
    startup_timeout_s: int = 1800
    concurrency: int = 1
    models_volume: str = "spillway-models"
    cache_volume: str = "spillway-kernel-cache"
    weights_version: str = "v1"
    weights_url: str = ""
    weights_endpoint_url: str = ""
    weights_secret: str = "spillway-weights-store"
    quantization: str = ""
    context_length: int = 0
    sglang_args: tuple[str, ...] = ()
    otel_secret: str = ""

    @property
    def model_path(self) -> str:
        return f"{MODELS_DIR}/{self.weights_version}"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ModalConfig:
        """The settings in `environ`; raises ValueError naming the first bad one."""
        default = cls()
        gpu = environ.get(ENV_GPU, default.gpu)
        if gpu not in PINNED_GPUS:
            raise ValueError(f"{ENV_GPU} must be one of {', '.join(PINNED_GPUS)}, got {gpu!r}")
        quantization = environ.get(ENV_QUANTIZATION, default.quantization)
        if quantization and not _QUANTIZATION.fullmatch(quantization):
            raise ValueError(
                f"{ENV_QUANTIZATION} must be empty or an SGLang quantization method, "
                f"got {quantization!r}"
            )
        weights_url = environ.get(ENV_WEIGHTS_URL, default.weights_url)
        if weights_url and not _S3_URL.fullmatch(weights_url):
            raise ValueError(f"{ENV_WEIGHTS_URL} must be s3://bucket/prefix, got {weights_url!r}")
        weights_version = _name(environ, ENV_WEIGHTS_VERSION, default.weights_version)
        if weights_version.startswith("."):
            raise ValueError(
                f"{ENV_WEIGHTS_VERSION} must not start with '.', got {weights_version!r}"
            )
        try:
            sglang_args = tuple(shlex.split(environ.get(ENV_SGLANG_ARGS, "")))
        except ValueError as error:
            raise ValueError(
                f"{ENV_SGLANG_ARGS} is not a shell-quoted string ({error}), "
                f"got {environ[ENV_SGLANG_ARGS]!r}"
            ) from None
        return cls(
            app=_name(environ, ENV_APP, default.app),
            gpu=gpu,
            cpu=_number(environ, ENV_CPU, default.cpu, 1.0, 64.0, float),
            memory_mib=_number(environ, ENV_MEMORY_MIB, default.memory_mib, 1024, 1048576, int),
            max_containers=_number(
                environ, ENV_MAX_CONTAINERS, default.max_containers, 1, 1000, int
            ),
            scaledown_s=_number(environ, ENV_SCALEDOWN_S, default.scaledown_s, 2, 3600, int),
            timeout_s=_number(environ, ENV_TIMEOUT_S, default.timeout_s, 10, 86400, int),
            startup_timeout_s=_number(
                environ, ENV_STARTUP_TIMEOUT_S, default.startup_timeout_s, 60, 86400, int
            ),
            concurrency=_number(environ, ENV_CONCURRENCY, default.concurrency, 1, 256, int),
            models_volume=_name(environ, ENV_MODELS_VOLUME, default.models_volume),
            cache_volume=_name(environ, ENV_CACHE_VOLUME, default.cache_volume),
            weights_version=weights_version,
            weights_url=weights_url,
            weights_endpoint_url=environ.get(
                ENV_WEIGHTS_ENDPOINT_URL, default.weights_endpoint_url
            ),
            weights_secret=_name(environ, ENV_WEIGHTS_SECRET, default.weights_secret),
            quantization=quantization,
            context_length=_number(
                environ, ENV_CONTEXT_LENGTH, default.context_length, 0, 10_000_000, int
            ),
            sglang_args=sglang_args,
            otel_secret=_name(environ, ENV_OTEL_SECRET, default.otel_secret, optional=True),
        )

    def environ(self) -> dict[str, str]:
        """These settings as the variables that `from_environ` reads back."""
        return {
            ENV_APP: self.app,
            ENV_GPU: self.gpu,
            ENV_CPU: repr(self.cpu),
            ENV_MEMORY_MIB: str(self.memory_mib),
            ENV_MAX_CONTAINERS: str(self.max_containers),
            ENV_SCALEDOWN_S: str(self.scaledown_s),
            ENV_TIMEOUT_S: str(self.timeout_s),
            ENV_STARTUP_TIMEOUT_S: str(self.startup_timeout_s),
            ENV_CONCURRENCY: str(self.concurrency),
            ENV_MODELS_VOLUME: self.models_volume,
            ENV_CACHE_VOLUME: self.cache_volume,
            ENV_WEIGHTS_VERSION: self.weights_version,
            ENV_WEIGHTS_URL: self.weights_url,
            ENV_WEIGHTS_ENDPOINT_URL: self.weights_endpoint_url,
            ENV_WEIGHTS_SECRET: self.weights_secret,
            ENV_QUANTIZATION: self.quantization,
            ENV_CONTEXT_LENGTH: str(self.context_length),
            ENV_SGLANG_ARGS: shlex.join(self.sglang_args),
            ENV_OTEL_SECRET: self.otel_secret,
        }


def _number(
    environ: Mapping[str, str], key: str, default: T, low: T, high: T, kind: Callable[[str], T]
) -> T:
    text = environ.get(key)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"{key} must be {noun}, got {text!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {text!r}")
    return value


def _name(environ: Mapping[str, str], key: str, default: str, *, optional: bool = False) -> str:
    value = environ.get(key, default)
    if optional and not value:
        return value
    if not _MODAL_NAME.fullmatch(value):
        raise ValueError(f"{key} must be 1-64 letters, digits, '.', '-' or '_', got {value!r}")
    return value
