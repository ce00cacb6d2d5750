"""Regenerate the Python stubs (with .pyi) from protos/: `python tools/genproto.py`.

With `--check` it regenerates into a temporary folder and fails when the committed
stubs differ, which is what CI runs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = PROTOS / "spillway" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    sources = sorted(p.relative_to(PROTOS) for p in PACKAGE.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *map(str, sources),
        ],
        check=True,
    )
    return sorted(p for p in (out / "spillway" / "v1").iterdir() if p.name.endswith(GENERATED))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p for p in PACKAGE.iterdir() if p.name.endswith(GENERATED))
        if args.check:
            names = [p.name for p in fresh]
            stale = names != [p.name for p in committed] or any(
                not filecmp.cmp(f, PACKAGE / f.name, shallow=False) for f in fresh
            )
            if stale:
                print("generated stubs are stale: run `python tools/genproto.py`", file=sys.stderr)
                return 1
            return 0
        for old in committed:
            old.unlink()
        for f in fresh:
            shutil.copy(f, PACKAGE / f.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
