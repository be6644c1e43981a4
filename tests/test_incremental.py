"""Incremental evaluation (issue 11): the windowed pass equals the full forward pass.

Every test replaces regions of sequences, runs ``analyze(...).apply`` under
``jax.vmap`` (items with different starts and their own sequence's cache) and the
model itself on the modified sequences, and compares each output within 1e-5 of
its maximum.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.bpnet_flax import BPNetFlax
from jablate.incremental.analysis import analyze
from jablate.incremental.rules import break_rule


def one_hot(n, length, seed, alphabet=4, n_columns=0):
    """Random one-hot (n, alphabet, length) float32, with ``n_columns`` all-zero columns."""
    rs = np.random.RandomState(seed)
    X = np.eye(alphabet, dtype=np.float32)[rs.randint(alphabet, size=(n, length))]
    X = np.swapaxes(X, 1, 2).copy()
    for i in range(n):
        X[i, :, rs.choice(length, n_columns, replace=False)] = 0
    return X


def scaled(variables, factor=3.0):
    """Larger weights than flax's defaults, so that every position matters."""
    return jax.tree.map(lambda a: a * factor, variables)


def incremental_vs_full(apply, params, X, width, starts, args=(), seed=1, n_columns=0,
                        **kwargs):
    """Run both passes on items ``i`` = (sequence ``i % N``, region at ``starts[i]``,
    a random window); return (incremental, full) outputs as lists of arrays and the
    :class:`~jablate.incremental.analysis.Incremental`."""
    inc = analyze(apply, params, X[0], width, args=tuple(a[0] for a in args), **kwargs)
    cache, before = jax.jit(jax.vmap(inc.reference, (None, 0) + (0,) * len(args)))(
        params, X, *args)
    starts = np.asarray(starts)
    seq = np.arange(len(starts)) % len(X)
    windows = one_hot(len(starts), width, seed, X.shape[1], n_columns=min(n_columns, width))
    items = jax.tree.map(lambda c: c[seq], cache)
    run = jax.jit(jax.vmap(inc.apply, (None, 0, 0, 0)))
    out = run(params, items, jnp.asarray(windows), jnp.asarray(starts, jnp.int32))
    changed = np.asarray(X)[seq].copy()
    for i, s in enumerate(starts):
        changed[i, :, s:s + width] = windows[i]
    apply = jax.jit(apply)
    item_args = [a[seq] for a in args]
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(apply(params, X[seq], *item_args))):
        # the reference pass may sum in another order (long kernels run as taps)
        np.testing.assert_allclose(a[seq], b, rtol=0, atol=2e-6 * np.abs(b).max())
    full = apply(params, jnp.asarray(changed), *item_args)
    return jax.tree.leaves(out), jax.tree.leaves(full), inc


def assert_close(out, full, tol=1e-5):
    assert len(out) == len(full)
    for a, b in zip(out, full):
        assert a.shape == b.shape
        scale = float(np.abs(b).max())
        assert float(np.abs(a - b).max()) <= tol * scale, (np.abs(a - b).max(), scale)


class SmallConv(nn.Module):
    """32 filters of width 11, ReLU, mean over positions, dense (channels-last)."""

    @nn.compact
    def __call__(self, X):
        h = nn.relu(nn.Conv(32, (11,), padding="SAME")(jnp.swapaxes(X, 1, 2)))
        return nn.Dense(1)(jnp.mean(h, axis=1))


class DeepSEA(nn.Module):
    """Valid convs, max-pools (with dropped trailing positions), a dense layer on the
    flattened positions, sigmoid."""

    @nn.compact
    def __call__(self, X):
        h = jnp.swapaxes(X, 1, 2)
        for filters in (8, 12):
            h = nn.relu(nn.Conv(filters, (8,), padding="VALID")(h))
            h = nn.max_pool(h, (4,), strides=(4,))
        h = nn.relu(nn.Conv(16, (5,), padding="VALID")(h))
        return nn.sigmoid(nn.Dense(3)(h.reshape(h.shape[0], -1)))


class ConvAttention(nn.Module):
    """Convs, then one self-attention block over positions, then mean and dense."""

    @nn.compact
    def __call__(self, X):
        h = nn.gelu(nn.Conv(16, (9,), padding="SAME")(jnp.swapaxes(X, 1, 2)))
        h = h + nn.SelfAttention(num_heads=2, qkv_features=16)(nn.LayerNorm()(h))
        return nn.Dense(2)(jnp.mean(h, axis=1))


class MultiHead(nn.Module):
    """Four outputs: a per-position track (a dict entry), a softplus of the sum, a
    learned weighting of positions (a product contracting positions), and the max
    over positions (which must run in full)."""

    @nn.compact
    def __call__(self, X):
        h = jnp.tanh(nn.Conv(8, (5,), padding=[(3, 1)], kernel_dilation=(2,))(
            jnp.swapaxes(X, 1, 2)))
        track = nn.Conv(2, (3,), padding="SAME")(h)
        total = nn.softplus(jnp.sum(h, axis=1) @ jnp.ones((8, 1)))
        weights = self.param("weights", nn.initializers.normal(1.0), (h.shape[1],))
        return {"track": jnp.swapaxes(track, 1, 2), "total": total,
                "weighted": jnp.exp(jnp.einsum("blc,l->bc", h, weights) / 10),
                "peak": jnp.max(nn.sigmoid(h), axis=(1, 2))[:, None]}


class Assorted(nn.Module):
    """Rule coverage: reverse complement, a strided convolution, padding along positions
    (with a value), a 'SAME' average pool, split, concatenation with a positional
    parameter, a reshape of channels, cumsum and sum over channels, a dynamic_slice
    crop, a dense layer over channels, max over channels."""

    @nn.compact
    def __call__(self, X):
        conv, dense = nn.Conv(8, (5,), strides=(2,), padding="SAME"), nn.Dense(4)
        length = (X.shape[2] + 1) // 2 + 5
        pos = self.param("pos", nn.initializers.normal(1.0), (length, 2))

        def branch(x):
            h = jnp.pad(conv(jnp.swapaxes(x, 1, 2)), ((0, 0), (3, 2), (0, 0)),
                        constant_values=0.5)
            h = nn.avg_pool(h, (3,), strides=(1,), padding="SAME")
            a, b = jnp.split(h, 2, axis=-1)
            h = jnp.concatenate([a * nn.sigmoid(b),
                                 jnp.broadcast_to(pos, (x.shape[0],) + pos.shape)], axis=-1)
            h = jnp.cumsum(h.reshape(h.shape[:2] + (3, 2)).sum(-1), axis=-1)
            return dense(jax.lax.dynamic_slice_in_dim(h, 2, h.shape[1] - 4, axis=1))

        y = branch(X) + jnp.flip(branch(jnp.flip(X, (1, 2))), 1)
        return jnp.swapaxes(y, 1, 2), jnp.max(y, axis=-1)


def bound(module, X, *args, factor=3.0):
    init = jax.jit(module.init)
    variables = scaled(init(jax.random.key(0), X[:1], *[a[:1] for a in args]), factor)
    return (lambda p, x, *a: module.apply(p, x, *a)), variables


def test_small_conv_regions_everywhere():
    X = jnp.asarray(one_hot(3, 300, 0))
    apply, params = bound(SmallConv(), X)
    out, full, inc = incremental_vs_full(apply, params, X, 20, [0, 1, 7, 140, 279, 280])
    assert_close(out, full)
    s = inc.summary
    assert s.stops == () and s.flop_ratio > 5
    conv = next(ly for ly in s.layers if ly.primitive == "conv_general_dilated")
    assert (conv.mode, conv.width, conv.reach) == ("window", 30, (5, 5))
    assert next(ly for ly in s.layers if ly.primitive == "reduce_sum").mode == "delta"
    cache, _ = inc.reference(params, X[0])
    assert s.cache_bytes == sum(v.nbytes for v in cache.values())
    assert "conv_general_dilated" in s.table() and f"({s.flop_ratio:.1f}x)" in s.table()


def test_bpnet_profile_and_counts_with_control_tracks():
    L = 400
    X = jnp.asarray(one_hot(3, L, 0))
    ctl = jnp.asarray(np.random.RandomState(2).rand(3, 2, L).astype(np.float32))
    model = BPNetFlax(n_filters=16, n_layers=3, n_control_tracks=2)
    apply, params = bound(model, X, ctl)
    out, full, inc = incremental_vs_full(apply, params, X, 20, [0, 3, 190, 379, 380],
                                         args=(ctl,))
    assert_close(out, full)
    convs = [ly for ly in inc.summary.layers if ly.primitive == "conv_general_dilated"]
    assert [ly.reach for ly in convs] == [(10, 10), (12, 12), (16, 16), (24, 24), (61, 61)]
    assert all(ly.mode == "window" for ly in convs)
    assert [p for _, p, _ in inc.summary.stops] == ["output"]  # the profile is spliced


def test_deepsea_stops_at_the_flattened_dense_layer():
    X = jnp.asarray(one_hot(2, 301, 0))
    apply, params = bound(DeepSEA(), X, factor=2.0)
    out, full, inc = incremental_vs_full(apply, params, X, 6, [0, 5, 97, 294, 295])
    assert_close(out, full)
    (index, primitive, reason), = inc.summary.stops
    assert primitive == "reshape" and "merges positions" in reason
    modes = {ly.primitive: ly.mode for ly in inc.summary.layers[:index]}
    assert modes["reduce_window_max"] == modes["conv_general_dilated"] == "window"


def test_attention_falls_back_and_stays_exact():
    X = jnp.asarray(one_hot(2, 60, 0))
    apply, params = bound(ConvAttention(), X, factor=1.5)
    out, full, inc = incremental_vs_full(apply, params, X, 10, [0, 25, 50])
    assert_close(out, full)
    reasons = [r for _, _, r in inc.summary.stops]
    assert any("attention" in r for r in reasons)
    assert inc.summary.layers[2].mode == "window"  # the conv before it is still windowed


def test_multi_output_dict():
    X = jnp.asarray(one_hot(2, 150, 0))
    apply, params = bound(MultiHead(), X)
    out, full, inc = incremental_vs_full(apply, params, X, 12, [0, 60, 138])
    assert_close(out, full)
    assert [p for _, p, _ in inc.summary.stops] == ["reduce_max", "output"]
    modes = {(ly.primitive, ly.mode) for ly in inc.summary.layers}
    assert ("dot_general", "delta") in modes and ("reduce_sum", "delta") in modes


def test_assorted_rules():
    length = 121
    X = jnp.asarray(one_hot(2, length, 0))
    apply, params = bound(Assorted(), X)
    out, full, inc = incremental_vs_full(apply, params, X, 7, [0, 1, 50, length - 8,
                                                                length - 7])
    assert_close(out, full)
    assert [p for _, p, _ in inc.summary.stops] == ["output", "output"]
    assert inc.summary.flop_ratio > 2


def test_unknown_first_op_means_the_full_model():
    def apply(params, X):
        h = jnp.sort(X, axis=2)  # a primitive without a window rule, first
        return jnp.sum(h * params["w"], axis=(1, 2))[:, None]
    params = {"w": jnp.asarray(np.random.RandomState(0).randn(4, 50).astype(np.float32))}
    X = jnp.asarray(one_hot(2, 50, 0))
    out, full, inc = incremental_vs_full(apply, params, X, 5, [0, 20, 45])
    assert_close(out, full)
    (index, primitive, _), = inc.summary.stops
    assert primitive == "sort"
    assert {ly.mode for ly in inc.summary.layers[index:]} <= {"full", "const"}
    assert inc.summary.flop_ratio <= 1


def test_widths_1_5_and_L_at_both_ends_with_n_columns():
    L = 64
    X = jnp.asarray(one_hot(2, L, 0, n_columns=6))
    apply, params = bound(SmallConv(), X)
    for width in (1, 5, L):
        starts = sorted({0, min(1, L - width), (L - width) // 2, L - width})
        out, full, _ = incremental_vs_full(apply, params, X, width, starts, n_columns=2)
        assert_close(out, full)


def test_items_index_a_shared_cache_by_row():
    L, W = 200, 9
    X = jnp.asarray(one_hot(4, L, 0, n_columns=10))
    ctl = jnp.asarray(np.random.RandomState(2).rand(4, 2, L).astype(np.float32))
    apply, params = bound(BPNetFlax(n_filters=8, n_layers=1, n_control_tracks=2), X, ctl)
    rs = np.random.RandomState(3)
    rows, starts = rs.randint(0, 4, size=12), rs.randint(0, L - W + 1, size=12)
    starts[:2] = 0, L - W
    windows = one_hot(12, W, 4)
    inc = analyze(apply, params, X[0], W, args=(ctl[0],))
    cache, _ = jax.vmap(inc.reference, (None, 0, 0))(params, X, ctl)
    run = jax.jit(jax.vmap(inc.apply, (None, None, 0, 0, 0)))
    out = run(params, cache, jnp.asarray(windows), jnp.asarray(starts), jnp.asarray(rows))
    changed = np.asarray(X)[rows].copy()
    for i, s in enumerate(starts):
        changed[i, :, s:s + W] = windows[i]
    assert_close(jax.tree.leaves(out), jax.tree.leaves(apply(params, changed, ctl[rows])))


def test_broken_rule_is_caught_by_comparing_with_the_full_pass():
    X = jnp.asarray(one_hot(2, 200, 0))
    apply, params = bound(SmallConv(), X)
    with break_rule("conv_general_dilated"):
        out, full, inc = incremental_vs_full(apply, params, X, 20, [0, 90, 180])
    assert inc.summary.broken == "conv_general_dilated"
    with pytest.raises(AssertionError):
        assert_close(out, full)
    out, full, inc = incremental_vs_full(apply, params, X, 20, [0, 90, 180])
    assert inc.summary.broken is None
    assert_close(out, full)


def test_bad_inputs_raise_value_errors():
    X = jnp.asarray(one_hot(1, 50, 0))
    apply, params = bound(SmallConv(), X)
    with pytest.raises(ValueError, match="width"):
        analyze(apply, params, X[0], 51)
    with pytest.raises(ValueError, match="batch axis"):
        analyze(lambda p, x: jnp.sum(x), params, X[0], 5)
