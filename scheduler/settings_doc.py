"""A server's settings as its `--help` lists them (`spillway scheduler`, `spillway
gateway`): read from the constants that name each environment variable and the
docstrings under them, so the list cannot drift from what the config reads."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator, Sequence
from types import ModuleType

from scheduler import config, spill_config

_MODULES = (config, spill_config)


def settings(modules: Sequence[ModuleType] = _MODULES) -> Iterator[tuple[str, str]]:
    """Each (variable, description), in the order the modules (by default the
    scheduler's) define them."""
    for module in modules:
        yield from _documented_constants(module)


def _documented_constants(module: ModuleType) -> Iterator[tuple[str, str]]:
    body = ast.parse(inspect.getsource(module)).body
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(name := node.value.value, str)
            and (name.startswith("SPILLWAY_") or name == "REDIS_URL")
        ):
            continue
        doc = ""
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            doc = " ".join(after.value.value.split())
        yield name, doc


def epilog(modules: Sequence[ModuleType] = _MODULES, width: int = 88) -> str:
    lines = ["settings (environment variables; a malformed value stops startup):"]
    for name, doc in settings(modules):
        lines.append(f"  {name}")
        if doc:
            lines.extend(
                textwrap.wrap(doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
            )
    return "\n".join(lines)
