"""The README stays true: its activation table and its commands match the code and CI."""

from __future__ import annotations

import re
from pathlib import Path

import fastact as fa
from fastact._docs import activation_table, gated_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_activation_table_is_current():
    assert activation_table() in README, "README table is stale: paste `python -m fastact table`"


def test_readme_gated_table_is_current():
    assert gated_table() in README, "README gated-unit table is stale: paste `python -m fastact table`"


def test_every_fused_function_is_exported_and_documented():
    for unit in fa.GATED_UNITS.values():
        suffixes = ("", "_backward") if unit.halves else ("", "_", "_backward", "_backward_")
        for suffix in suffixes:
            function = getattr(fa, unit.name + suffix)
            assert unit.formula in function.__doc__
            assert unit.name + suffix in fa.__all__
            assert f"`{unit.name}{suffix}`" in README
    for name in ("bias_act", "bias_act_", "bias_act_backward", "bias_act_backward_"):
        assert name in fa.__all__ and getattr(fa, name).__doc__
        assert name in README


def test_readme_commands_are_what_ci_runs():
    quick_start = re.search(r"## Quick start\n\n```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    install, test = commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.split(" && ")[0] in ci
    assert install.split(" && ")[1] in ci
    assert test in ci.splitlines()


def test_every_public_activation_is_exported_and_documented():
    for entry in fa.ACTIVATIONS.values():
        if not entry.public:
            continue
        for suffix in ("", "_", "_backward", "_backward_"):
            function = getattr(fa, entry.name + suffix)
            assert entry.formula in function.__doc__
            assert entry.name + suffix in fa.__all__
