"""Train a small language model's head on synthetic text with fastact.linear_cross_entropy.

    python examples/train_lm_head.py [--vocab 32000] [--hidden 256] [--batch 2048] [--steps 40]

The text is drawn from a random bigram model over ``--vocab`` tokens (each token is followed
by one of ``--branch`` successors, with random probabilities), so the best achievable loss is
known: the chain's conditional entropy, printed at the start. The model embeds the current
token (E, V x H), applies a hidden layer with a fastact activation in place (gelu), and
predicts the next token with a vocabulary head (W, V x H, and a bias) whose loss and
gradients come from ``fastact.linear_cross_entropy``: the batch's rows go through the head in
chunks, so the batch x vocab logits (1 GiB float32 at 8192 x 32000) are never held. Everything
else is numpy, Adam included. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

import fastact


class BigramText:
    """Token t is followed by one of ``branch`` successors with fixed random probabilities."""

    def __init__(self, vocab: int, branch: int, rng: np.random.Generator):
        self.next = rng.integers(0, vocab, (vocab, branch))
        p = rng.dirichlet(np.full(branch, 0.5), vocab)
        self.cdf = np.cumsum(p, axis=1)
        self.cdf[:, -1] = 1.0
        # The conditional entropy of the chain (successors drawn twice merge: a bound).
        stationary = np.full(vocab, 1.0 / vocab)  # approximately: successors are uniform
        self.entropy = float(-(stationary[:, None] * p * np.log(p)).sum())
        self.rng = rng

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n (token, next token) pairs."""
        tokens = self.rng.integers(0, self.next.shape[0], n)
        u = self.rng.random(n)
        choice = (u[:, None] > self.cdf[tokens]).sum(axis=1)
        return tokens, self.next[tokens, choice]


class Adam:
    def __init__(self, params: list[np.ndarray], lr: float):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray], b1: float = 0.9, b2: float = 0.999) -> None:
        self.t += 1
        a = self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= a * m / (np.sqrt(v) + 1e-8)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--branch", type=int, default=4, help="successors per token")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="rows per chunk (default: fastact's rule)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    text = BigramText(args.vocab, args.branch, rng)
    v, h = args.vocab, args.hidden
    embed = (rng.standard_normal((v, h)) * 0.5).astype(np.float32)
    w1 = (rng.standard_normal((h, h)) / np.sqrt(h)).astype(np.float32)
    head = (rng.standard_normal((v, h)) * 0.02).astype(np.float32)
    bias = np.zeros(v, np.float32)
    adam = Adam([embed, w1, head, bias], args.lr)
    print(
        f"vocab {v:,}, hidden {h}, batch {args.batch:,}: "
        f"logits would be {args.batch * v * 4 / 2**20:,.0f} MiB; "
        f"best loss (chain entropy) about {text.entropy:.3f}, uniform guess {np.log(v):.3f}"
    )
    history: dict = {"loss": [], "entropy": text.entropy, "seconds": 0.0}
    start = time.perf_counter()
    for step in range(args.steps):
        tokens, targets = text.batch(args.batch)
        e = embed[tokens]
        z = e @ w1
        hidden = fastact.gelu(z)
        loss, d_hidden, d_head, d_bias = fastact.linear_cross_entropy(
            hidden, head, targets, linear_bias=bias, chunk_size=args.chunk_size
        )
        fastact.gelu_backward_(d_hidden, z)  # d_hidden <- dL/dz, in place (gelu saves its input)
        d_w1 = e.T @ d_hidden
        d_embed = np.zeros_like(embed)
        np.add.at(d_embed, tokens, d_hidden @ w1.T)
        adam.step([d_embed, d_w1, d_head, d_bias])
        history["loss"].append(loss)
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}")
    history["seconds"] = time.perf_counter() - start
    print(f"final loss {history['loss'][-1]:.4f} after {args.steps} steps, {history['seconds']:.1f} s")
    return history


if __name__ == "__main__":
    main()
