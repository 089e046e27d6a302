"""``python -m fastact [command]``: the main job and the project's tools.

Commands:
  (none)     versions, threading layer, SIMD level, CUDA availability, and a short
             table of kernel timings against naive numpy
  bench      the benchmark table (``python -m fastact bench --help``)
  warmup     compile every kernel into numba's on-disk cache
  table      the README's activation table and gated-unit table (markdown)
  accuracy   the measured max-ulp table (markdown)
"""

from __future__ import annotations

import sys


def _info() -> int:
    from . import _warmup, cuda_is_available

    info = _warmup.runtime_info()
    width = max(map(len, info))
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(value)
        print(f"{key:<{width}}  {value}")
    print(f"{'cuda':<{width}}  {'available' if cuda_is_available() else 'not available'}")
    print()
    from . import _bench

    return _bench.main(["--quick"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "":
        return _info()
    if command == "bench":
        from . import _bench

        return _bench.main(rest)
    if command == "warmup":
        from . import _warmup

        _warmup.warmup(progress=True)
        return 0
    if command == "table":
        from ._docs import activation_table, gated_table

        print(activation_table())
        print()
        print(gated_table())
        return 0
    if command == "accuracy":
        from ._docs import accuracy_table

        print(accuracy_table())
        return 0
    if command in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
