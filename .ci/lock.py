"""Re-pin .ci/constraints.txt: the exact versions CI installs, for every supported Python.

    python3 .ci/lock.py                  # every interpreter of SUPPORTED found here
    python3 .ci/lock.py --from DIR       # merge DIR/3.X.freeze files made by hand instead

For each interpreter a fresh virtual environment gets what ``.ci/run`` installs there, unpinned
(the newest releases the index offers today): on CI's main interpreter the test extra, every
optional peer (dask with distributed, asv, tbb, ml_dtypes) and torch at TORCH, which lies on the machine's
disk; on the others the test extra. Their ``pip freeze`` lists are merged into one constraints
file, with environment markers where the interpreters got different versions. Run
``bash .ci/run`` with the new file before committing it: the file says what the suite last
passed with.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / ".ci" / "constraints.txt"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
MAIN = "3.11"  # the interpreter .ci/run runs the whole suite on
TORCH = "torch==2.13.0"  # the CPU wheel on this kind of machine's disk (Python 3.11)
BUILD = "setuptools>=68"  # pyproject.toml's build backend: pinned too, for the build environment


def interpreter(version: str) -> str | None:
    """A working python3.X, found as .ci/run finds it (.ci/find-python)."""
    found = subprocess.run([str(ROOT / ".ci" / "find-python"), version], capture_output=True, text=True)
    return found.stdout.strip() or None


def freeze(python: str, version: str, workdir: pathlib.Path) -> str:
    venv = workdir / version
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # setuptools too: the build backend pip installs to build fastact takes the same pins.
    if version == MAIN:
        subprocess.run([*pip, f"{ROOT}[test,dask,bench,tbb,bfloat16]", TORCH, BUILD], check=True)
    else:
        subprocess.run([*pip, f"{ROOT}[test]", BUILD], check=True)
    listed = [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"]
    listed += ["--exclude", "fastact", "--exclude", "pip"]
    return subprocess.run(listed, check=True, capture_output=True, text=True).stdout


def parse(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.split("+")[0].strip()
    return pins


def merge(frozen: dict[str, dict[str, str]]) -> str:
    lines = [
        "# Exact versions CI installs (bash .ci/run), per Python: the versions the suite last passed",
        "# with. Regenerate with `python3 .ci/lock.py`, then run .ci/run before committing.",
    ]
    names = sorted({name for pins in frozen.values() for name in pins})
    for name in names:
        versions = {py: pins[name] for py, pins in frozen.items() if name in pins}
        if len(set(versions.values())) == 1:
            lines.append(f"{name}=={next(iter(versions.values()))}")
            continue
        for py, version in sorted(versions.items(), key=lambda item: tuple(map(int, item[0].split(".")))):
            lines.append(f'{name}=={version}; python_version == "{py}"')
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=pathlib.Path, help="a folder of 3.X.freeze files")
    args = parser.parse_args()
    frozen = {}
    if args.source:
        for path in sorted(args.source.glob("*.freeze")):
            frozen[path.stem] = parse(path.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for version in SUPPORTED:
                python = interpreter(version)
                if python is None:
                    print(f"Python {version} not found: not pinned", file=sys.stderr)
                    continue
                frozen[version] = parse(freeze(python, version, pathlib.Path(tmp)))
    OUT.write_text(merge(frozen))
    print(f"wrote {OUT} for Python {', '.join(frozen)}")


if __name__ == "__main__":
    main()
