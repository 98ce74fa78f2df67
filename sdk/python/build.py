"""Builds a Python task into a Cairn component with componentize-py:

    python build.py APP_DIR -o OUT.wasm [--module app] [--wit DIR]

Run it with the interpreter of the environment that has componentize-py (the
repository's ``.venv``). Module ``app`` of APP_DIR must define ``WitWorld``
(``WitWorld = export_task(fn)``); copies of APP_DIR and of this SDK make the
module path. The WIT contract defaults to the repository's ``wit/`` (two
levels up). The work is skipped when OUT is newer than every file of APP_DIR,
the SDK, the WIT contract and componentize-py itself.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parent
SKIPPED = ("__pycache__", ".venv", "node_modules", "*.wasm")
"""Names left out of the build and of the up-to-date check."""


def newest(path: Path) -> float:
    """The newest modification time under ``path`` (``SKIPPED`` names excluded), 0 if it does not exist."""
    if not path.exists():
        return 0.0
    if path.is_file():
        return path.stat().st_mtime
    times = [path.stat().st_mtime]
    for entry in path.iterdir():
        if not any(entry.match(pattern) for pattern in SKIPPED):
            times.append(newest(entry))
    return max(times)


def main() -> int:
    """Parses the arguments, then builds OUT unless it is up to date."""
    parser = argparse.ArgumentParser(description="Build a Python task into a Cairn component.")
    parser.add_argument("app_dir", type=Path, help="folder of the task's modules")
    parser.add_argument("-o", "--out", type=Path, required=True, help="component to write")
    parser.add_argument("--module", default="app", help="module that defines WitWorld (default: app)")
    parser.add_argument("--wit", type=Path, default=SDK_DIR.parent.parent / "wit", help="WIT contract folder")
    args = parser.parse_args()

    componentize_py = Path(sys.executable).parent / "componentize-py"
    if not componentize_py.is_file():
        print(f"componentize-py is not installed next to {sys.executable}; run ./x setup", file=sys.stderr)
        return 2
    inputs = [args.app_dir, SDK_DIR / "cairn_sdk", Path(__file__), args.wit, componentize_py]
    if args.out.is_file() and all(newest(p) < args.out.stat().st_mtime for p in inputs):
        print(f"{args.out} is up to date", file=sys.stderr)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    # Build from copies, so componentize-py's bytecode caches stay out of the source tree.
    with tempfile.TemporaryDirectory(prefix="cairn-py-build-") as stage:
        skip = shutil.ignore_patterns(*SKIPPED)
        app = shutil.copytree(args.app_dir, Path(stage) / "app", ignore=skip)
        sdk = shutil.copytree(SDK_DIR / "cairn_sdk", Path(stage) / "sdk" / "cairn_sdk", ignore=skip).parent
        command = [str(componentize_py), "-d", str(args.wit), "-w", "described-task", "componentize", args.module,
                   "-p", str(app), "-p", str(sdk), "-o", str(partial)]
        if subprocess.run(command).returncode != 0:
            return 1
    partial.replace(args.out)
    print(f"built {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
