"""The package layout's rule: only `scheduler.cli` reaches into `gateway` or starts the
stack's other services; the rest of `scheduler` is the replica itself."""

from __future__ import annotations

import ast
from pathlib import Path

SCHEDULER = Path(__file__).parents[1] / "scheduler"
# What only the command, the dev stack and the demo may use.
_CLI_ONLY = ("gateway", "uvicorn", "moto")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.partition(".")[0])
    return found


def test_only_the_cli_imports_the_gateway_or_starts_servers() -> None:
    offenders = {
        str(path.relative_to(SCHEDULER)): sorted(_imports(path) & set(_CLI_ONLY))
        for path in SCHEDULER.rglob("*.py")
        if "cli" not in path.relative_to(SCHEDULER).parts
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert _imports(SCHEDULER / "cli" / "devstack.py") & set(_CLI_ONLY), "the scan sees imports"
