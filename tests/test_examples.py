"""The example training script runs (a few epochs) and learns."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("activation", ["relu", "gelu"])  # saves its output / its input
def test_train_mlp_learns(activation, capsys):
    require("sklearn")
    train_mlp = load("train_mlp")
    history = train_mlp.main(["--epochs", "3", "--seed", "1", "--activation", activation])
    losses, accuracy = history["loss"], history["test_accuracy"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy[-1] > 0.85  # digits: 10 classes, chance is 0.1
    printed = capsys.readouterr().out
    assert sum(line.startswith("epoch") for line in printed.splitlines()) == 3
    assert "final test accuracy" in printed


def test_train_mlp_rejects_unknown_activation():
    require("sklearn")
    train_mlp = load("train_mlp")
    with pytest.raises(SystemExit):
        train_mlp.main(["--activation", "nope"])


def test_train_lm_head_learns(capsys):
    """The language-model head example, small: the loss falls well below the uniform guess."""
    train = load("train_lm_head")
    args = ["--vocab", "500", "--hidden", "32", "--batch", "512", "--steps", "40", "--lr", "0.03"]
    history = train.main([*args, "--chunk-size", "64"])
    losses = history["loss"]
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[0] == pytest.approx(np.log(500), rel=0.05)  # starts near uniform
    assert np.mean(losses[-5:]) < 0.6 * losses[0]
    assert "final loss" in capsys.readouterr().out
