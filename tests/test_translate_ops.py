"""Every ATen op of the translator's table, compared with torch on sample inputs.

For each op the table lowers, the samples are the first few float32 sample inputs of
torch's own OpInfo database (``torch.testing._internal.common_methods_invocations.op_db``)
for that op, where the ATen op accepts them, and the hand-made samples of ``HAND`` below.
Each sample is run by torch (the first non-mutating overload that accepts it) and by the
lowering, exactly as the interpreter calls it: schema arguments bound by name
(``_interpreter.lower``), tensors as ``jax.jit`` arguments. Outputs must agree in
structure, shape, dtype (as JAX canonicalises it) and value. An output the lowering does
not compute (None, e.g. max pooling's indices) is skipped; a graph that used it would
fail loudly. ``test_every_table_op_is_compared`` fails on any table entry without at
least one such comparison.
"""

import functools
import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require

torch = require("torch")
require("expecttest")  # torch.testing._internal imports it; skips locally, fails in CI

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

# Importing torch's test utilities freezes torch.backends flags for the whole process;
# give them back to the other tests.
setattr(torch.backends, "__allow_nonbracketed_mutation_flag", True)  # noqa: B010

from jablate.bridges import _interpreter  # noqa: E402
from jablate.bridges._aten_table import OPS, to_jax  # noqa: E402
from jablate.bridges.torch_export import SUPPORTED_OPS  # noqa: E402

OPINFO_SAMPLES = 4  # per OpInfo entry: enough to vary the arguments, small enough to be fast
EMPTY = {"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
         "new_empty_strided"}  # values undefined: shapes and dtypes only


def _rand(*shape, low=-2.0, high=2.0, seed=0):
    g = torch.Generator().manual_seed(seed + 7 * len(shape) + sum(shape))
    return low + (high - low) * torch.rand(shape, generator=g)


def _pos(*shape):
    return _rand(*shape, low=0.5, high=2.0)


def _ints(*shape, high=10):
    return torch.randint(-high, high, shape, generator=torch.Generator().manual_seed(1),
                         dtype=torch.int32)


def _bools(*shape):
    return _ints(*shape) > 0


def _conv_args(n, c_in=4, c_out=6, k=3, groups=1, transposed=False):
    x = _rand(*(2, c_in) + (7,) * n)
    w = _rand(*((c_in, c_out // groups) if transposed else (c_out, c_in // groups)) + (k,) * n)
    return x, w, _rand(c_out)


def _recurrent_samples():
    """aten.lstm/gru/rnn_tanh/rnn_relu as torch.nn's layers call them: time first and batch
    first, one and two layers and directions, without biases, with proj_size."""
    torch.manual_seed(0)
    found = {}
    layers = {"lstm": [torch.nn.LSTM(3, 4, batch_first=True),
                       torch.nn.LSTM(3, 4, 2, bidirectional=True),
                       torch.nn.LSTM(3, 4, 2, bias=False, proj_size=2, bidirectional=True)],
              "gru": [torch.nn.GRU(3, 4, 2, bidirectional=True, batch_first=True),
                      torch.nn.GRU(3, 4, bias=False)],
              "rnn_tanh": [torch.nn.RNN(3, 4, 2, bidirectional=True)],
              "rnn_relu": [torch.nn.RNN(3, 4, nonlinearity="relu", batch_first=True)]}
    for name, modules in layers.items():
        found[name] = []
        for m in modules:
            rows = m.num_layers * (2 if m.bidirectional else 1)
            x = _rand(2, 5, 3) if m.batch_first else _rand(5, 2, 3)
            h = _rand(rows, 2, m.proj_size or m.hidden_size, seed=1)
            hx = [h, _rand(rows, 2, m.hidden_size, seed=2)] if name == "lstm" else h
            weights = [w.detach() for w in m._flat_weights]
            found[name].append(((x, hx, weights, m.bias, m.num_layers, 0.0, False,
                                 m.bidirectional, m.batch_first), {}))
    return found


def _hand_samples():
    """Hand-made samples, as (args, kwargs) of the ATen op."""
    x, w, b = _conv_args(1)
    x2, w2, b2 = _conv_args(2, c_out=4, groups=2)
    xt, wt, bt = _conv_args(1, c_out=6, k=4, transposed=True)
    wide = _rand(2, 4, 15)  # few outputs, many taps: lowered as a matmul and shifted sums
    q, k, v = _rand(2, 3, 5, 4), _rand(2, 3, 6, 4), _rand(2, 3, 6, 4)
    mask = _bools(5, 6)
    bn = (_rand(2, 3, 5), _pos(3), _rand(3), _rand(3), _pos(3))
    conv_extra = (False, True, True, True)  # benchmark, deterministic, cudnn, tf32
    h = {
        "_adaptive_avg_pool2d": [((_rand(2, 3, 7, 9), [3, 4]), {}),
                                 ((_rand(2, 3, 8, 8), [4, 1]), {})],
        "_adaptive_avg_pool3d": [((_rand(1, 2, 5, 6, 7), [2, 3, 3]), {})],
        "_assert_scalar": [((True, "holds"), {})],
        "_assert_tensor_metadata": [((x,), {"size": list(x.shape), "dtype": torch.float32})],
        "_convolution": [((x, w, b, [1], [1], [1], False, [0], 1) + conv_extra, {}),
                         ((x2, w2, b2, [2, 1], [1, 0], [1, 2], False, [0, 0], 2) + conv_extra,
                          {}),
                         ((xt, wt, bt, [2], [1], [1], True, [1], 1) + conv_extra, {})],
        "convolution": [((x, w, None, [2], [0], [1], False, [0], 1), {}),
                        ((x, wide, None, [1], [7], [1], False, [0], 1), {}),
                        ((xt, wt, bt, [3], [0], [2], True, [2], 1), {}),
                        ((x2, w2, b2, [1, 1], [0, 1], [1, 1], False, [0, 0], 2), {})],
        "conv1d": [((x, w, b), {}), ((x, w, b, [2], [1], [2]), {}),
                   ((x, wide, None, [1], "same", [1]), {}),
                   ((x, wide[:, :, :14], _rand(2), [1], "same", [2]), {}),
                   ((x, wide, None, [1], [3], [1]), {}),
                   ((_rand(4, 7), w, b, [1], "valid"), {}),
                   ((x, _rand(6, 2, 3), b, [1], [1], [1], 2), {})],
        "_log_softmax": [((_rand(3, 5), 1, False), {}), ((_rand(2, 3, 4), 0, False), {})],
        "_softmax": [((_rand(3, 5), 1, False), {}), ((_rand(2, 3, 4), -1, False), {})],
        "_safe_softmax": [((_rand(3, 5), 1), {}),
                          ((torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), 1), {})],
        "_native_batch_norm_legit": [((bn[0], bn[1], bn[2], True, 0.1, 1e-5), {}),
                                     ((bn[0], None, None, True, 0.1, 1e-3), {})],
        "_native_batch_norm_legit_no_training": [(bn + (0.1, 1e-5), {}),
                                                 ((bn[0], None, None, bn[3], bn[4], 0.1, 1e-3),
                                                  {})],
        "native_batch_norm": [(bn + (False, 0.1, 1e-5), {}),
                              ((bn[0], bn[1], bn[2], None, None, True, 0.1, 1e-5), {})],
        "batch_norm": [(bn + (False, 0.1, 1e-5, False), {}),
                       ((bn[0], None, None, None, None, True, 0.1, 1e-5, False), {})],
        "instance_norm": [(bn + (True, 0.1, 1e-5, False), {}),
                          ((bn[0], None, None, None, None, True, 0.1, 1e-5, False), {})],
        "_print": [(("printed by a test",), {})],
        "_scaled_dot_product_attention_math": [
            ((q, k, v), {}), ((q, k, v, mask), {}),
            ((q, k, v, _rand(5, 6), 0.0, False, None), {"scale": 0.3}),
            ((q, k[..., :5, :], v[..., :5, :], None, 0.0, True), {})],
        "_scaled_dot_product_flash_attention_for_cpu": [
            ((q, k, v), {}), ((q, k[..., :5, :], v[..., :5, :], 0.0, True), {}),
            ((q, k, v), {"attn_mask": _rand(5, 6), "scale": 0.5})],
        "scaled_dot_product_attention": [
            ((q, k, v), {}), ((q, k, v, mask), {}), ((q, k, v, _rand(2, 1, 5, 6)), {}),
            ((q, k[..., :5, :], v[..., :5, :], None, 0.0, True), {}),
            ((_rand(2, 4, 5, 4), k[:, :2], v[:, :2]), {"enable_gqa": True})],
        "_to_copy": [((x,), {"dtype": torch.float16}), ((x,), {"dtype": torch.int32}),
                     ((x,), {"dtype": torch.bool}), ((_ints(3, 4),), {"dtype": torch.float32})],
        "to": [((x, torch.float16), {}), ((_ints(3, 4), torch.float32), {})],
        "_unsafe_view": [((_rand(2, 3, 4), [6, -1]), {})],
        "adaptive_max_pool1d": [((_rand(2, 3, 10), [4]), {}), ((_rand(2, 3, 9), [3]), {})],
        "adaptive_max_pool2d": [((_rand(2, 3, 7, 9), [3, 4]), {})],
        "adaptive_max_pool3d": [((_rand(1, 2, 5, 6, 7), [2, 3, 3]), {})],
        "alias": [((x,), {})], "detach": [((x,), {})], "lift_fresh": [((x,), {})],
        "lift_fresh_copy": [((x,), {})],
        "dropout": [((x, 0.5, False), {})], "alpha_dropout": [((x, 0.5, False), {})],
        "feature_dropout": [((x, 0.5, False), {})],
        "feature_alpha_dropout": [((x, 0.5, False), {})],
        "native_dropout": [((x, 0.5, False), {})],
        "bitwise_and": [((_ints(3, 4), _ints(3, 4) + 3), {}), ((_bools(3, 4), _bools(4)), {}),
                        ((_ints(3, 4), 6), {})],
        "bitwise_or": [((_ints(3, 4), _ints(3, 4) + 3), {}), ((_bools(3, 4), _bools(4)), {})],
        "bitwise_xor": [((_ints(3, 4), _ints(3, 4) + 3), {}), ((_bools(3, 4), _bools(4)), {})],
        "bitwise_not": [((_ints(3, 4),), {}), ((_bools(3, 4),), {})],
        "clip": [((x, -0.5, 0.5), {}), ((x, None, 0.2), {}), ((x, _rand(6, 1), _pos(7)), {})],
        "concat": [(([x, x * 2], 1), {})], "concatenate": [(([x, x * 2], -1), {})],
        "copy": [((x, _rand(7)), {}), ((_ints(2, 3), _rand(2, 3)), {})],
        "einsum": [(("ij,jk->ik", [_rand(3, 4), _rand(4, 5)]), {}),
                   (("bij,bjk->bik", [_rand(2, 3, 4), _rand(2, 4, 5)]), {}),
                   (("ii->i", [_rand(4, 4)]), {}), (("i,j->ij", [_rand(3), _rand(4)]), {})],
        "empty": [(([2, 3],), {"dtype": torch.float32}), (([4],), {"dtype": torch.int32})],
        "empty_permuted": [(([2, 3, 4], [2, 0, 1]), {"dtype": torch.float32})],
        "empty_strided": [(([2, 3], [3, 1]), {"dtype": torch.float32})],
        "eye": [((3,), {"dtype": torch.float32}), ((3, 5), {"dtype": torch.float32}),
                ((4,), {"dtype": torch.bool})],
        "index": [((_rand(5, 4), [torch.tensor([0, 3, 3])]), {}),
                  ((_rand(5, 4), [None, torch.tensor([[1, 0], [2, 3]])]), {}),
                  ((_rand(3, 4, 5), [torch.tensor([0, 2]), None, torch.tensor([1, 4])]), {}),
                  ((_rand(3, 4, 5), [torch.tensor([0, 2]), torch.tensor([1, 3])]), {}),
                  ((_rand(5, 4), [torch.tensor([-1, 0])]), {})],
        "max_pool1d": [((_rand(2, 3, 11), [3]), {}), ((_rand(2, 3, 11), [3], [2], [1]), {}),
                       ((_rand(2, 3, 11), [2], [2], [0], [1], True), {}),
                       ((_rand(2, 3, 11), [3], [1], [0], [2]), {})],
        "max_pool2d": [((_rand(2, 3, 7, 9), [3, 2]), {}),
                       ((_rand(2, 3, 7, 9), [3, 3], [2, 2], [1, 1], [1, 1], True), {})],
        "max_pool3d": [((_rand(1, 2, 5, 6, 7), [2, 2, 2]), {}),
                       ((_rand(1, 2, 5, 6, 7), [3, 2, 2], [2, 2, 1], [1, 0, 1]), {})],
        "max_pool1d_with_indices": [((_rand(2, 3, 11), [3], [2], [1]), {})],
        "max_pool2d_with_indices": [((_rand(2, 3, 7, 9), [3, 3], [2, 2], [1, 1], [1, 1], True),
                                     {})],
        "max_pool3d_with_indices": [((_rand(1, 2, 5, 6, 7), [2, 2, 2]), {})],
        "reflection_pad1d": [((_rand(2, 3, 6), [2, 1]), {})],
        "reflection_pad2d": [((_rand(2, 3, 5, 6), [1, 2, 2, 1]), {})],
        "reflection_pad3d": [((_rand(1, 2, 4, 5, 6), [1, 2, 0, 1, 2, 1]), {})],
        "replication_pad1d": [((_rand(2, 3, 6), [2, 1]), {})],
        "replication_pad2d": [((_rand(2, 3, 5, 6), [1, 2, 2, 1]), {})],
        "replication_pad3d": [((_rand(1, 2, 4, 5, 6), [1, 2, 0, 1, 2, 1]), {})],
        "pad": [((x, [2, 1], "reflect"), {}), ((x, [2, 1], "replicate"), {}),
                ((x, [2, 3], "circular"), {}), ((x, [1, -2]), {"value": 0.5}),
                ((x, [-1, 2, 1, 0]), {}), ((x2, [1, 1, 2, 0], "reflect"), {})],
        "constant_pad_nd": [((x, [1, -2], 0.5), {}), ((x, [-1, 2, 1, 0]), {})],
        "roll": [((x, [1], [0]), {}), ((x, [2, -1], [1, 2]), {}), ((x, [3]), {})],
        "scalar_tensor": [((2.5,), {"dtype": torch.float32}), ((3,), {"dtype": torch.int32})],
        "sym_constrain_range": [((3,), {"min": 0, "max": 5})],
        "sym_constrain_range_for_size": [((3,), {"min": 2})],
        "sym_numel": [((_rand(2, 3, 4),), {})],
        "sym_size": [((_rand(2, 3, 4), 1), {}), ((_rand(2, 3, 4), -1), {})],
        "type_as": [((x, _ints(2)), {}), ((_ints(3), x), {})],
        "unsafe_split_with_sizes": [((x, [2, 5], 2), {}), ((x, [1, 3], 1), {})],
        "upsample_nearest1d": [((_rand(2, 3, 5), [7]), {}), ((_rand(2, 3, 5), [10], 2.0), {}),
                               ((_rand(2, 3, 5), None, [1.5]), {}),
                               ((_rand(2, 3, 6), [4]), {})],
        "upsample_nearest2d": [((_rand(2, 3, 5, 4), [7, 8]), {}),
                               ((_rand(2, 3, 5, 4), None, [2.0, 1.5]), {})],
        "upsample_nearest3d": [((_rand(1, 2, 3, 4, 5), [6, 4, 7]), {}),
                               ((_rand(1, 2, 3, 4, 5), None, [2.0, 1.0, 1.5]), {})],
        "where": [((x > 0, x, -x), {}), ((x > 0, x, 0.5), {}), ((x > 0, 1.0, x), {}),
                  ((_bools(6, 1), _rand(7), _rand(6, 7)), {})],
        "linalg_vector_norm": [((x, o), {"dim": d, "keepdim": kd})
                               for o, d, kd in itertools.product(
                                   (2, 1, 3, 0.5, 0, -1, -2, math.inf, -math.inf),
                                   (None, [1], [0, 2]), (False, True))
                               if not (o < 0 and d is None) and kd == (d == [1])],
        "argmax": [((x,), {}), ((x, 1), {}), ((x, -1, True), {})],
        "argmin": [((x,), {}), ((x, 1), {}), ((x, -1, True), {})],
        "repeat_interleave": [((x, 2, 1), {}), ((torch.tensor([1, 0, 2]),), {"output_size": 3}),
                              ((_rand(3, 2), torch.tensor([1, 0, 2]), 0), {"output_size": 3})],
        "var": [((x, [1]), {"correction": 0}), ((x, None), {"correction": 2, "keepdim": True}),
                ((x, [0, 2], True), {})],
        "std": [((x, [1]), {"correction": 0}), ((x, None), {"correction": 2, "keepdim": True}),
                ((x, [0, 2], False), {})],
        "var_mean": [((x, [1]), {"correction": 0}), ((x, None), {"correction": 2})],
        "softplus": [((x * 10, 2, 5), {}), ((x, 0.5, 20), {})],
        "elu": [((x, 0.5, 2.0, 1.5), {})],
        "gelu": [((x,), {"approximate": "tanh"})],
        "hardtanh": [((x, -0.5, 1.5), {})],
        "leaky_relu": [((x, 0.2), {})],
        "squeeze": [((_rand(2, 1, 3, 1),), {}), ((_rand(2, 1, 3, 1), [1, 2]), {}),
                    ((_rand(2, 1, 3), -2), {})],
        "expand": [((_rand(3, 1), [2, 3, 4]), {}), ((_rand(3, 1), [-1, 5]), {})],
        "slice": [((x, 2, 1, 6, 2), {}), ((x, 1, -4, None), {}), ((x, 0, 0, 100), {})],
        "index_put": [((_rand(5, 4), [torch.tensor([0, 3])], _rand(2, 4)), {}),
                      ((_rand(5, 4), [torch.tensor([0, 0])], _rand(2, 4), True), {})],
        "full": [(([2, 3], 1.5), {"dtype": torch.float32}), (([2], 7), {"dtype": torch.int32})],
        "arange": [((5,), {"dtype": torch.float32}), ((1, 7, 2), {"dtype": torch.int32}),
                   ((0.0, 1.0, 0.25), {"dtype": torch.float32})],
        "linspace": [((0.0, 1.0, 5), {"dtype": torch.float32})],
        # edge cases that later OpInfo samples found: 0-d and empty tensors, negative pads
        "softmax": [((torch.tensor(0.7), 0), {})],
        "log_softmax": [((torch.tensor(0.7), 0), {})],
        "transpose": [((torch.tensor(2.0), 0, 0), {})],
        "max": [((torch.tensor(1.5), 0), {}), ((x, 2, True), {})],
        "min": [((torch.tensor(1.5), 0), {}), ((x, 2, True), {})],
        "index_select": [((torch.tensor(1.5), 0, torch.tensor([0])), {})],
        "gather": [((torch.tensor(2.0), 0, torch.tensor([0])), {}),
                   ((_rand(5), 0, torch.zeros(2, 0, dtype=torch.long)), {})],
        "group_norm": [((_rand(0, 4, 3), 2), {})],
        "native_group_norm": [((_rand(0, 4, 3), None, None, 0, 4, 3, 2, 1e-5), {})],
    }
    h.update(_recurrent_samples())
    h["argmax"] += [((torch.tensor(1.5), 0, True), {})]
    h["squeeze"] += [((torch.tensor(1.5), 0), {})]
    h["pad"] += [((_rand(1, 3, 4, 4), [-1, 1, -2, 1], "circular"), {}),
                 ((_rand(1, 3, 4, 4), [-3, 2, 0, 0], "replicate"), {})]
    return h


HAND = _hand_samples()


@functools.cache
def _opinfos():
    by_name = {}
    for info in op_db:
        for key in {info.name, info.aten_name, info.name.split(".")[-1]}:
            by_name.setdefault(key, []).append(info)
    return by_name


def _random(kwargs):
    """Samples whose output is random (dropout); the lowerings refuse these instead."""
    return kwargs.get("dropout_p", 0) > 0 or kwargs.get("train") or kwargs.get("training")


def _opinfo_samples(name):
    samples = []
    for info in _opinfos().get(name, []):
        for s in itertools.islice(info.sample_inputs("cpu", torch.float32), OPINFO_SAMPLES):
            if not _random(s.kwargs):
                samples.append(((s.input,) + tuple(s.args), dict(s.kwargs)))
    return samples


def _run_torch(name, args, kwargs):
    """The first non-mutating overload of ``aten.<name>`` that accepts the sample, and its
    output; (None, None) when none does. Mutating overloads never reach the interpreter:
    translate() functionalises graphs that hold them first."""
    packet = getattr(torch.ops.aten, name)
    for overload in packet.overloads():
        op = getattr(packet, overload)
        if op._schema.is_mutable:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return op, op(*args, **kwargs)
        except Exception:  # noqa: BLE001 - another overload, or a sample for another API
            continue
    return None, None


@functools.cache
def samples(name):
    """The samples of ``aten.<name>`` that torch runs: (overload, args, kwargs, output,
    source), source "hand" or "opinfo"."""
    if not hasattr(torch.ops.aten, name):
        return ()
    found = []
    for source, group in (("hand", HAND.get(name, [])), ("opinfo", _opinfo_samples(name))):
        for args, kwargs in group:
            op, out = _run_torch(name, args, kwargs)
            if op is not None:
                found.append((op, args, kwargs, out, source))
    return tuple(found)


def _tree_to_jax(x):
    if isinstance(x, torch.Tensor):
        return to_jax(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_tree_to_jax(a) for a in x)
    if isinstance(x, dict):
        return {k: _tree_to_jax(v) for k, v in x.items()}
    return x


def _describe(op, args, kwargs):
    shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args]
    return f"{op} on {shapes} {kwargs}"


def lowered(found):
    """The lowering's outputs on every sample, called as the interpreter calls it, in one
    ``jax.jit`` program with every array an argument (one compilation per op)."""
    calls, arrays = [], []
    for op, args, kwargs, out, _ in found:
        first = args[0] if args else None
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else None
        fn, pos, named = _interpreter.lower(op, _tree_to_jax(args), _tree_to_jax(kwargs), out,
                                            shape)
        leaves, tree = jax.tree_util.tree_flatten((pos, named), is_leaf=lambda a: a is None)
        where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]
        calls.append((fn, leaves, tree, where, _describe(op, args, kwargs)))
        arrays.append([leaves[i] for i in where])

    def run(arrays):
        outputs = []
        for (fn, leaves, tree, where, what), values in zip(calls, arrays):
            full = list(leaves)
            for i, value in zip(where, values):
                full[i] = value
            pos, named = jax.tree_util.tree_unflatten(tree, full)
            try:
                outputs.append(fn(*pos, **named))
            except Exception as e:
                raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
        return outputs

    return jax.jit(run)(arrays)


def _leaves(x):
    return [leaf for a in x for leaf in _leaves(a)] if isinstance(x, (list, tuple)) else [x]


def assert_same(name, got, want):
    """`got` (the lowering) equals `want` (torch) leaf by leaf; returns how many compared."""
    got, want = _leaves(got), _leaves(want)
    assert len(got) == len(want), f"{len(got)} outputs, torch gives {len(want)}"
    compared = 0
    for g, w in zip(got, want):
        if g is None and w is None:  # assertions, print: nothing returned, nothing raised
            compared += 1
            continue
        if g is None:  # not computed by the lowering; a graph using it fails loudly
            continue
        if not isinstance(w, torch.Tensor):
            assert g == w or (isinstance(w, float) and math.isnan(w) and math.isnan(g)), (g, w)
            compared += 1
            continue
        w = w.detach().float().numpy() if w.dtype == torch.bfloat16 else w.detach().numpy()
        g = np.asarray(g)
        assert g.shape == w.shape, f"shape {g.shape}, torch gives {w.shape}"
        assert g.dtype == jax.dtypes.canonicalize_dtype(w.dtype), \
            f"dtype {g.dtype}, torch gives {w.dtype}"
        if name not in EMPTY:
            finite = np.abs(w[np.isfinite(w)]) if w.dtype.kind in "fc" else np.abs(w)
            scale = max(1.0, float(finite.max())) if finite.size else 1.0
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
        compared += 1
    return compared


TABLE = sorted(OPS)


@pytest.mark.parametrize("name", TABLE)
def test_op_matches_torch(name):
    found = samples(name)
    assert found, f"aten.{name}: no sample that torch runs"
    compared = 0
    for (op, args, kwargs, out, _), got in zip(found, lowered(found)):
        try:
            compared += assert_same(name, got, out)
        except AssertionError as e:
            raise AssertionError(f"{_describe(op, args, kwargs)}: {e}") from e
    assert compared, f"aten.{name}: every output was skipped"


def test_every_table_op_is_compared():
    assert SUPPORTED_OPS == tuple(sorted(f"aten.{name}" for name in OPS))
    unknown = [name for name in TABLE if not hasattr(torch.ops.aten, name)]
    assert not unknown, f"not ATen ops: {unknown}"
    without = [name for name in TABLE if not samples(name)]
    assert not without, f"table ops without a comparison with torch: {without}"
    stale = sorted(set(HAND) - set(OPS))
    assert not stale, f"hand-made samples for ops not in the table: {stale}"
    from_opinfo = [name for name in TABLE if any(s[-1] == "opinfo" for s in samples(name))]
    assert len(from_opinfo) > 150, len(from_opinfo)  # the others have hand-made samples


# --- what the lowerings refuse rather than get wrong -------------------------------------

def test_dropout_in_training_mode_is_refused():
    x = jnp.ones((2, 3))
    for name in ("dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout",
                 "native_dropout"):
        with pytest.raises(NotImplementedError, match="training"):
            OPS[name](input=x, p=0.5, train=True)
        assert OPS[name](input=x, p=0.0, train=True) is not None
    q = jnp.ones((1, 2, 3, 4))
    for name in ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                 "_scaled_dot_product_flash_attention_for_cpu"):
        with pytest.raises(NotImplementedError, match="dropout_p=0.1"):
            OPS[name](query=q, key=q, value=q, dropout_p=0.1)


def test_assertions_on_static_values_still_raise():
    with pytest.raises(RuntimeError, match="broken"):
        OPS["_assert_scalar"](self=False, assert_msg="broken")
    with pytest.raises(RuntimeError, match="range"):
        OPS["sym_constrain_range"](size=7, min=0, max=5)
    with pytest.raises(RuntimeError, match="shape"):
        OPS["_assert_tensor_metadata"](a=jnp.ones((2, 3)), size=[2, 4])
