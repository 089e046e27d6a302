"""Train a small MLP on scikit-learn's bundled digits data set with numpy and fastact.

    python examples/train_mlp.py [--activation relu] [--epochs 30] [--seed 0]

The hidden activation (any public entry of ``fastact.ACTIVATIONS``) runs forward and
backward in place through fastact (``name_`` / ``name_backward_``), and the loss is
the fused ``softmax_cross_entropy``, which writes dL/dlogits over the logits buffer
(``inplace=True``). Matrix products and the Adam optimiser are plain numpy, into
preallocated buffers. Needs scikit-learn (``pip install scikit-learn``); nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence

import numpy as np

import fastact
from fastact.testing import default_params

try:
    from fastact import softmax_cross_entropy
except ImportError:  # not exported at the top level yet
    from fastact import softmax_cross_entropy

PUBLIC = sorted(name for name, entry in fastact.ACTIVATIONS.items() if entry.public)


def load_data(seed: int, test_fraction: float = 0.2):
    """Digits (8x8 images, 10 classes) scaled to [0, 1], split at random into train/test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class Activation:
    """In-place forward/backward of one fastact activation, keeping what its backward needs."""

    def __init__(self, name: str):
        entry = fastact.ACTIVATIONS[name]
        self.params = default_params(entry)
        self.saves_output = entry.saves == "output"
        self.forward_ = getattr(fastact, name + "_")
        self.forward = getattr(fastact, name)
        self.backward_ = getattr(fastact, name + "_backward_")

    def __call__(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """a = f(z); returns what backward needs (a itself, or z)."""
        if self.saves_output:
            np.copyto(a, z)
            self.forward_(a, *self.params)
            return a
        self.forward(z, *self.params, out=a)
        return z

    def backward_in_place(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        return self.backward_(grad, saved, *self.params)


class MLP:
    """Dense layers with one activation between them; He-initialised; Adam updates."""

    def __init__(self, sizes: Sequence[int], activation: str, seed: int, lr: float = 2e-3):
        rng = np.random.default_rng(seed)
        self.weights = [
            (rng.standard_normal((m, n)) * np.sqrt(2.0 / m)).astype(np.float32)
            for m, n in itertools.pairwise(sizes)
        ]
        self.biases = [np.zeros(n, np.float32) for n in sizes[1:]]
        self.act = Activation(activation)
        self.lr = lr
        self.params = [*self.weights, *self.biases]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.steps = 0

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list, list]:
        """Logits, the input of every layer, and what each activation's backward needs."""
        inputs, saved = [x], []
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            z = inputs[-1] @ w
            z += b
            a = np.empty_like(z)
            saved.append(self.act(z, a))
            inputs.append(a)
        logits = inputs[-1] @ self.weights[-1]
        logits += self.biases[-1]
        return logits, inputs, saved

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        logits, inputs, saved = self.forward(x)
        loss, grad = softmax_cross_entropy(logits, y, inplace=True)  # grad is logits, overwritten
        n_layers = len(self.weights)
        for i in reversed(range(n_layers)):
            np.matmul(inputs[i].T, grad, out=self.grads[i])
            np.sum(grad, axis=0, out=self.grads[n_layers + i])
            if i:
                grad = grad @ self.weights[i].T
                self.act.backward_in_place(grad, saved[i - 1])  # dL/dz of layer i - 1
        self._adam()
        return loss

    def _adam(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.steps += 1
        c1 = 1.0 - beta1**self.steps
        c2 = 1.0 - beta2**self.steps
        step = self.lr * np.sqrt(c2) / c1
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v):
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * g * g
            p -= step * m / (np.sqrt(v) + eps)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        logits, _, _ = self.forward(x)
        return float((logits.argmax(axis=1) == y).mean())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activation", default="relu", choices=PUBLIC, help="hidden activation (default relu)")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batches")
    p.add_argument("--hidden", type=int, default=128, help="units per hidden layer (default 128)")
    p.add_argument("--layers", type=int, default=2, help="hidden layers (default 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    """Train and return the history: per epoch the mean training loss and the test accuracy."""
    args = _parser().parse_args(argv)
    x_train, y_train, x_test, y_test = load_data(args.seed)
    sizes = [x_train.shape[1], *([args.hidden] * args.layers), 10]
    model = MLP(sizes, args.activation, args.seed, args.lr)
    rng = np.random.default_rng(args.seed + 1)
    history = {"loss": [], "test_accuracy": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            total += model.train_step(x_train[batch], y_train[batch]) * len(batch)
        history["loss"].append(total / len(order))
        history["test_accuracy"].append(model.accuracy(x_test, y_test))
        if not args.quiet:
            print(
                f"epoch {epoch:3d}  loss {history['loss'][-1]:.4f}  "
                f"test accuracy {history['test_accuracy'][-1]:.2%}  ({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    if not args.quiet and args.epochs:
        print(
            f"{args.activation}: final test accuracy {history['test_accuracy'][-1]:.2%} after "
            f"{args.epochs} epochs in {time.perf_counter() - start:.1f} s"
        )
    return history


if __name__ == "__main__":
    main()
