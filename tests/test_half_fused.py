"""The fused ops (gated units, glu, bias_act) on bfloat16 and float16 arrays: every 16-bit
value of a (and x), forward and backward, is the float32 call's result rounded once; dbias
(float64 sums of the float32 terms) is rounded once, where the float32 call rounds twice."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL16, assert_rounded, assert_same, f32, rounded_f32

import fastact as fa

GATED = ("swiglu", "geglu", "reglu")


def _perm(fmt, seed):
    """Every 16-bit value, in an order of their own (the other operand of an exhaustive test)."""
    return np.random.default_rng(seed).permutation(ALL16).view(fmt)


@pytest.mark.parametrize("name", GATED)
def test_gated_every_value(name, fmt):
    a, b, g = ALL16.view(fmt), _perm(fmt, 1), _perm(fmt, 2)
    f, f_, bw, bw_ = (getattr(fa, name + s) for s in ("", "_", "_backward", "_backward_"))
    want = rounded_f32(f, a, b)
    assert_same(f(a, b), want, name)
    ai = a.copy()
    assert f_(ai, b) is ai
    assert_same(ai, want, name + "_")
    da, db = bw(g, a, b)
    da32, db32 = bw(f32(g), f32(a), f32(b))
    with np.errstate(all="ignore"):
        assert_same(da, da32.astype(fmt), "da")
        assert_same(db, db32.astype(fmt), "db")
    ai, bi = a.copy(), b.copy()
    assert bw_(g, ai, bi) == (ai, bi)
    assert_same(ai, da, "da in place")
    assert_same(bi, db, "db in place")


def test_glu_every_value(fmt):
    x = np.stack([ALL16.view(fmt), _perm(fmt, 3)], axis=1)  # (65536, 2): halves along axis 1
    g = _perm(fmt, 4).reshape(-1, 1)
    assert_same(fa.glu(x, axis=1), rounded_f32(lambda v: fa.glu(v, axis=1), x), "glu")
    want = rounded_f32(lambda gg, v: fa.glu_backward(gg, v, axis=1), g, x)
    assert_same(fa.glu_backward(g, x, axis=1), want, "glu_backward")


@pytest.mark.parametrize("activation", ["gelu", "relu"])  # heavy (buffered strided loop), light
def test_bias_act(activation, fmt):
    """x: every 16-bit value as (256, 256) with a bias row; strided views; in place."""
    x = ALL16.view(fmt).reshape(256, 256)
    rng = np.random.default_rng(5)
    bias = rng.standard_normal(256).astype(np.float32).astype(fmt)
    g = (rng.standard_normal((256, 256))).astype(np.float32).astype(fmt)
    assert_same(
        fa.bias_act(x, bias, activation), rounded_f32(lambda v, c: fa.bias_act(v, c, activation), x, bias)
    )
    xs, gs = x[::2, ::3], g[::2, ::3]  # strided: the scalar loops
    for xv, gv, bv in ((x, g, bias), (xs, gs, bias[::3])):
        with np.errstate(all="ignore"):
            saved = xv if fa.ACTIVATIONS[activation].saves == "input" else fa.bias_act(xv, bv, activation)
            dx, dbias = fa.bias_act_backward(gv, saved, bv, activation)
            dx32, dbias32 = fa.bias_act_backward(f32(gv), f32(saved), f32(bv), activation)
        assert_same(dx, dx32.astype(fmt), "dx")
        assert dbias.dtype == fmt
        assert_rounded(dbias[np.isfinite(dbias32)], dbias32[np.isfinite(dbias32)], "dbias", ulps=2)
        gi = gv.copy()
        dx_i, dbias_i = fa.bias_act_backward_(gi, saved, bv, activation)
        assert dx_i is gi
        assert_same(gi, dx, "dx in place")
        assert_same(dbias_i, dbias, "dbias in place")


def test_mixed_dtypes_are_type_errors(fmt):
    a = np.ones((4, 6), fmt)
    before = a.copy()
    with pytest.raises(TypeError, match="b has dtype"):
        fa.swiglu_(a, np.ones((4, 6), np.float32))
    with pytest.raises(TypeError, match="bias has dtype"):
        fa.bias_act_(a, np.ones(6, np.float32), "relu")
    with pytest.raises(TypeError, match="b has dtype"):
        fa.geglu_backward_(a, a.copy(), np.ones((4, 6), np.float32))
    np.testing.assert_array_equal(a.view(np.uint16), before.view(np.uint16))
