"""Cold start, each sample in a fresh interpreter: ``import fastact`` and first calls.

``import fastact`` compiles nothing; a first call loads its kernel from numba's
on-disk cache (filled by ``setup``), so these time the cache, not the compiler.
"""

from . import _common as c


class Import:
    """``import fastact`` next to ``import numba``, the floor it cannot go below."""

    repeat = 5
    rounds = 1

    def timeraw_import_fastact(self):
        return "import fastact"

    def timeraw_import_numba(self):
        return "import numba"


class FirstCall:
    """The first call after ``import fastact``: small (serial kernel) and 1M (parallel)."""

    params = (["relu", "gelu"], ["name_", "name_backward_"], [1000, 1 << 20])
    param_names = ("activation", "entry_point", "size")
    repeat = 3
    rounds = 1

    def setup(self, activation, entry_point, size):
        direction = "backward" if "backward" in entry_point else "forward"
        c.call(activation, "float32", size, direction, entry_point.endswith("_"), "fastact")()

    def timeraw_first_call(self, activation, entry_point, size):
        return c.first_call_code(activation, entry_point, size)
