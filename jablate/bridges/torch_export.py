"""Translate a torch module into a JAX function, for XLA speed.

``translate(module, x)`` captures ``module.forward`` with :func:`torch.export.export`
(in eval mode, with a free batch dimension) and evaluates the captured ATen graph with
``jax.numpy`` and ``lax``. The module's parameters and buffers travel as a pytree argument,
so the result composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` like any JAX function,
and XLA compiles the whole network instead of calling into torch op by op.

Ops are looked up in a dispatch table keyed by ATen op name (``SUPPORTED_OPS``; the
families of ops live in ``_aten_*.py``, the graph interpreter in ``_interpreter.py``).
Graphs are first taken as exported (high-level ops such as ``conv1d``, ``linear``,
``layer_norm`` and ``scaled_dot_product_attention`` map straight onto ``lax``); when a
graph holds an op outside the table, an in-place op or a higher-order op, it is decomposed
towards core ATen (keeping every op the table knows) and looked at again. Whatever is still
unknown is reported at once in a ``NotImplementedError``; ``jablate.bridges.torch.wrap`` is
the fallback that runs any module in torch through DLPack.

Every op of the table is compared with torch on sample inputs (torch's OpInfo samples and
hand-made ones) by ``tests/test_translate_ops.py``. Ops whose outputs are random (dropout
in training mode, attention with ``dropout_p > 0``) are refused when they would draw, and
assertions are checked where their operands are static (sizes). Not in the table:
``_assert_async`` (a check on tensor values cannot raise under ``jax.jit``; torch's own
decomposition drops it), ``_functional_assert_async`` and ``_functional_assert_scalar``
(they thread dependency tokens the table does not make), ``_adaptive_avg_pool1d`` (not an
ATen op).

Fixed batch sizes. When torch.export cannot keep the batch symbolic (the module calls
``int()`` on a size, say), or the module is a ``torch.export`` program saved at a fixed
batch size, the graph is evaluated at that batch size ``B`` only, and other batches run in
chunks of ``B`` (the last one padded with copies of its last row, the padding dropped) under
``jax.vmap``. Chunks are put back together only when every output has the batch as its
first dimension, checked by exporting at two batch sizes (a saved program is taken at its
word); otherwise a batch other than ``B`` is refused with a ``ValueError``. Sizes inside the
graph are never rewritten. A module traced so is first run in torch on ``2B + 1`` rows at
once and ``B`` at a time: where the two differ (its forward depends on the batch size, a
branch on ``x.shape[0]``) the translation is refused, naming ``backend='torch'``.
"""

from __future__ import annotations

import logging
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.utils._pytree as torch_pytree

from jablate._core.errors import InputError
from jablate.bridges._aten_recurrent import recurrent_as_ops
from jablate.bridges._aten_table import OPS, to_jax
from jablate.bridges._dlpack import from_torch
from jablate.bridges._interpreter import (
    bind,
    compile_graph,
    evaluate,
    meta_shape,
    op_key,
    unsupported,
)
from jablate.bridges._static_batch import StaticBatchModule, exported_batch

__all__ = ["translate", "TranslatedModel", "SUPPORTED_OPS"]

SUPPORTED_OPS = tuple(sorted(f"aten.{name}" for name in OPS))
"""ATen ops (by overload packet name) that ``translate`` lowers to JAX."""


# ---------------------------------------------------------------------------------------
# export

_NOISY_LOGGERS = ("torch._subclasses.fake_tensor", "torch._export", "torch.export",
                  "torch.fx.experimental.symbolic_shapes", "torch._dynamo")


def _as_torch(value, name, device):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    try:
        return torch.as_tensor(np.array(value), device=device)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"translate(): {name} must be an array or None, got "
                        f"{type(value).__name__}.") from e


def _tile(t, n):
    return t[torch.arange(n, device=t.device) % t.shape[0]]


def _export_at(module, inputs, batched, batch):
    examples = [_tile(t, batch) if b else t for t, b in zip(inputs, batched)]
    return torch.export.export(module, tuple(examples))


def _output_shapes(ep):
    """The traced shape of each user output of `ep` (None for a non-tensor output)."""
    nodes = {n.name: n for n in ep.graph.nodes}
    shapes = []
    for spec in ep.graph_signature.output_specs:
        if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT:
            shapes.append(meta_shape(nodes.get(getattr(spec.arg, "name", None))))
    return shapes


def _unchunkable(shapes, batch, other_shapes=None, other_batch=None):
    """Why outputs of these traced shapes cannot be cut into batch chunks (None if they can).

    Each output must have `batch` first; with a second export at `other_batch`, the same
    output must have `other_batch` first and the same other dimensions.
    """
    bad = []
    for i, shape in enumerate(shapes):
        other = None if other_shapes is None else other_shapes[i]
        ok = bool(shape) and shape[0] == batch and (
            other_shapes is None or bool(other) and other[0] == other_batch
            and tuple(other[1:]) == tuple(shape[1:]))
        if not ok:
            bad.append(f"output {i} has shape {shape} at batch {batch}" + (
                "" if other_shapes is None else f" and {other} at batch {other_batch}"))
    return "; ".join(bad) or None


def _export(module, inputs, batched, fixed_batch):
    """Export `module`: with a symbolic batch, else at a fixed one.

    Returns the program, the fixed batch size it was traced at (None when symbolic) and,
    for a fixed batch, why its outputs cannot be put together from chunks (None if they can).
    """
    if fixed_batch is not None:  # a torch.export program saved at a fixed batch size
        ep = _export_at(module, inputs, batched, fixed_batch)
        return ep, fixed_batch, _unchunkable(_output_shapes(ep), fixed_batch)
    n = inputs[0].shape[0]
    examples = [_tile(t, 2) if b and n < 2 else t for t, b in zip(inputs, batched)]
    dynamic = tuple({0: torch.export.Dim("batch")} if b else None for b in batched)
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:  # a refusal is expected here; torch logs it at length
            logger.setLevel(logging.CRITICAL)
        try:
            return torch.export.export(module, tuple(examples), dynamic_shapes=dynamic), None, None
        except Exception:  # noqa: BLE001 - any refusal falls back to a fixed batch
            pass
        batch = max(n, 2)
        ep = _export_at(module, inputs, batched, batch)
        try:
            other = _output_shapes(_export_at(module, inputs, batched, batch + 1))
        except Exception as e:  # noqa: BLE001
            reason = f"torch.export captures it at batch {batch} only ({type(e).__name__})"
        else:
            reason = _unchunkable(_output_shapes(ep), batch, other, batch + 1)
        return ep, batch, reason
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _refuse_batch_dependence(module, inputs, batched, batch, name):
    """Refuse a module traced at a fixed ``batch`` (torch.export could not keep the batch
    symbolic) whose outputs are not those of chunks of ``batch`` rows.

    The translation runs every batch in chunks of ``batch`` rows: right for a module that
    treats each row alone, silently wrong for one whose forward depends on the batch size
    (a branch on ``x.shape[0]``: a fuzz trial found predictions 16% off). Checked in torch
    on ``2 * batch + 1`` distinct rows (the example's rows, shifted along their last axis),
    against the same rows run ``batch`` at a time (the last chunk padded with copies, as
    the translation pads it). A dependence that only shows at larger batches is not seen.
    """

    rows = 2 * batch + 1
    probe = []
    for t, b in zip(inputs, batched):
        if not b:
            probe.append(t)
            continue
        tiled = _tile(t, rows)
        if tiled.ndim >= 2:  # distinct rows: row i shifted by i along its last axis
            tiled = torch.stack([torch.roll(r, i, dims=-1) for i, r in enumerate(tiled)])
        probe.append(tiled)
    chunks = []
    with torch.no_grad():
        whole = module(*probe)
        for lo in range(0, rows, batch):
            picked = torch.arange(lo, lo + batch).clamp(max=rows - 1)
            chunks.append(module(*(t[picked.to(t.device)] if b else t
                                   for t, b in zip(probe, batched))))
    flat_whole = torch_pytree.tree_leaves(whole)
    flat_chunks = [torch_pytree.tree_leaves(c) for c in chunks]
    for i, leaf in enumerate(flat_whole):
        if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point():
            continue
        joined = torch.cat([c[i][:batch] for c in flat_chunks])[:rows].double()
        want = leaf.double()
        if _same_values(joined, want):
            continue
        if joined.shape != want.shape:
            how = f" (shapes {tuple(want.shape)} and {tuple(joined.shape)})"
        else:
            finite = torch.isfinite(want) & torch.isfinite(joined)
            if finite.any():
                how = (f" (max difference {float((joined - want)[finite].abs().max()):.3g} "
                       f"on values up to {float(want[finite].abs().max()):.3g})")
            else:
                how = " (NaN or infinite values in other places)"
        raise InputError(
            f"translate(): torch.export could not keep {name}'s batch axis symbolic, so "
            f"it would run traced at batch {batch}, every batch in chunks of {batch} "
            f"rows; but {name}'s output {i} for {rows} rows at once is not its output "
            f"for them {batch} at a time{how}: its forward depends on the batch size. Pass "
            "backend='torch' to run it in torch as written (as tangermeme does), or make "
            "its forward treat each row alone (no branch on x.shape[0], no int() of it).")


def _same_values(a, b):
    """Whether two outputs agree to float noise: the same shape, NaN and infinities in the
    same places (an infinite scale had let everything pass, a NaN one failed), the finite
    values within 1e-3 relative or 1e-5 of the finite values' largest magnitude."""

    if a.shape != b.shape:
        return False
    if not (torch.equal(torch.isnan(a), torch.isnan(b))
            and torch.equal(torch.isinf(a), torch.isinf(b))
            and torch.equal(a[torch.isinf(a)], b[torch.isinf(b)])):
        return False
    finite = torch.isfinite(a)
    if not finite.any():
        return True
    scale = float(b[finite].abs().max())
    return torch.allclose(a[finite], b[finite], rtol=1e-3, atol=1e-5 * max(scale, 1e-30))


def _preserving_decompositions():
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if op_key(op) is not None:
            table.pop(op)
    return table


_BATCH_NORMS = frozenset({"batch_norm", "native_batch_norm", "_native_batch_norm_legit"})


def _batch_statistics(graph) -> str | None:
    """The batch norms of ``graph`` that normalise with their batch's statistics (in
    training mode, or without running statistics), named; None when there are none."""
    found = []
    for node in graph.nodes:
        if node.op == "call_function" and op_key(node.target) in _BATCH_NORMS:
            kwargs = bind(node.target, node.args, node.kwargs)
            if kwargs.get("training") or kwargs.get("running_mean") is None:
                scope = node.meta.get("nn_module_stack") or {}
                where = next(reversed(scope.values()))[0] if scope else node.name
                found.append(f"{where} ({node.target})")
    return ", ".join(found) or None


def _state_tensors(module):
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    return state


def _simple(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.dtype))


def _structure(module, state) -> str:
    """What a translation of ``module`` depends on besides its tensors' values: every
    submodule's name, class and plain settings (``negative_slope``, ``padding``,
    ``track_running_stats``, a custom module's ``self.scale = 2.0``, ...), and the names,
    shapes and dtypes of its parameters and buffers (``state``). A layer swapped in a
    container, or a setting changed in place, makes :func:`translate` export the module
    again (its cached graph would compute the old architecture with the new weights)."""
    parts = [(name, type(m).__module__, type(m).__qualname__,
              sorted((k, v) for k, v in vars(m).items()
                     if not k.startswith("_") and k != "training" and _simple(v)))
             for name, m in module.named_modules()]
    tensors = [(k, tuple(t.shape), str(t.dtype)) for k, t in state.items()]
    return repr((parts, tensors))


def _fingerprint(state):
    return tuple((k, id(t), t._version, t.data_ptr()) for k, t in state.items())


# ---------------------------------------------------------------------------------------
# the translated model

class TranslatedModel:
    """A torch module translated to a JAX function.

    Made by :func:`translate`; evaluates the module's exported ATen graph with
    ``jax.numpy``/``lax``.

    Attributes
    ----------
    params: dict of str to jax.Array
        The module's parameters and buffers, keyed by their torch state names
        (``"iconv.weight"``, ``"bn.running_mean"``, ...). Integer buffers such as
        ``num_batches_tracked`` are included; pass ``allow_int=True`` to ``jax.grad`` when
        differentiating with respect to the whole dictionary.

    apply: callable
        ``apply(params, x, *args)``, the pure function: usable under ``jax.jit``,
        ``jax.vmap`` and ``jax.grad``.

    dynamic_batch: bool
        True when torch.export traced the batch dimension symbolically.

    static_batch: int or None
        When the batch could not be kept symbolic, the batch size the graph was traced
        at. Other batch sizes then run in chunks of this size (the last one padded) under
        ``jax.vmap``, or are refused with a ``ValueError`` when the outputs do not have
        the batch as their first dimension.

    translation_seconds: float
        Wall time spent exporting and translating.

    batch_statistics: str or None
        Where the module normalises with the statistics of its batch (a ``BatchNorm``
        with ``track_running_stats=False``, which does so in eval mode too), e.g.
        ``"bn (aten.batch_norm.default)"``; None when no op does. Each sequence's output
        then depends on the other sequences of its batch.
    """

    def __init__(self, *, name, placeholders, user_inputs, steps, outputs, out_spec, params,
                 consts, traced_batch, unchunkable, seconds, fingerprint,
                 batch_statistics=None):
        self.name = name
        self._placeholders = placeholders  # [(placeholder, kind, target)]
        self._user_inputs = user_inputs      # [(placeholder, batched, shape or None)]
        self._steps = steps
        self._outputs = outputs
        self._out_spec = out_spec
        self._consts = consts
        self._unchunkable = unchunkable
        self._fingerprint = fingerprint
        self.params = params
        self.static_batch = traced_batch
        self.dynamic_batch = traced_batch is None
        self.translation_seconds = seconds
        self.batch_statistics = batch_statistics
        self._jit_apply = jax.jit(self.apply)

    def __call__(self, x: jax.Array, *args: object) -> object:
        """Run the translated model with its own parameters (jit-compiled).

        Parameters
        ----------
        x: jax.Array, numpy.ndarray or torch.Tensor, shape=(batch_size, ...)
            The first input, any batch size; the other dimensions as at translation. A
            torch tensor is handed to JAX through DLPack (on its own device).

        *args: arrays or None
            The module's other forward arguments, as given to :func:`translate`.

        Returns
        -------
        y: jax.Array or tuple/list of jax.Array
            The module's outputs, in the structure the module returns them (JAX arrays,
            whatever the inputs' family).
        """
        x, *args = (from_torch(a) if isinstance(a, torch.Tensor) else a for a in (x, *args))
        return self._jit_apply(self.params, x, *args)

    def apply(self, params: dict, x: jax.Array, *args: object) -> object:
        """Evaluate the graph with explicit parameters: ``apply(params, x, *args)``.

        Parameters
        ----------
        params: dict of str to jax.Array
            Parameters and buffers keyed by torch state name, as in ``self.params``.

        x: jax.Array, shape=(batch_size, ...)
            The first input.

        *args: arrays or None
            The other forward arguments.

        Returns
        -------
        y: jax.Array or tuple/list of jax.Array
            The module's outputs.

        Raises
        ------
        ValueError
            When the number of inputs or a non-batch dimension differs from translation,
            or, for a graph traced at a fixed batch size, when the batch differs from it
            and the outputs cannot be put together from chunks.
        """
        leaves = torch_pytree.tree_flatten(((x,) + tuple(args), {}))[0]
        if len(leaves) != len(self._user_inputs):
            raise InputError(f"{self.name} was translated with {len(self._user_inputs)} "
                             f"input(s); got {len(leaves)}. Pass the same arguments as to "
                             "translate() (None where the example had None).")
        for (placeholder, batched, shape), value in zip(self._user_inputs, leaves):
            if shape is not None:
                got = tuple(jnp.shape(value))
                want = shape[1:] if batched else shape
                if (got[1:] if batched else got) != want or len(got) != len(shape):
                    raise InputError(
                        f"input '{placeholder}' of {self.name} has shape {got}; it was "
                        f"translated for shape {('batch',) + want if batched else want}. "
                        "Translate again for other non-batch dimensions.")
        n = jnp.shape(leaves[0])[0] if leaves and jnp.ndim(leaves[0]) else None
        if self.static_batch is None or n == self.static_batch:
            outputs = self._evaluate(params, leaves)
        else:
            outputs = self._evaluate_in_chunks(params, leaves, n)
        return torch_pytree.tree_unflatten(outputs, self._out_spec)

    def _evaluate(self, params, leaves):
        env = {placeholder: value for (placeholder, _, _), value in zip(self._user_inputs, leaves)}
        for placeholder, kind, target in self._placeholders:
            env[placeholder] = params[target] if kind == "param" else self._consts[target]
        evaluate(self._steps, env, self.name)
        return [env[name] if name is not None else const for name, const in self._outputs]

    def _evaluate_in_chunks(self, params, leaves, n):
        """Batch `n` in chunks of the traced batch size, under ``jax.vmap``."""
        size = self.static_batch
        if self._unchunkable is not None:
            raise InputError(
                f"{self.name} was translated at a fixed batch size of {size} (torch.export "
                f"could not keep the batch symbolic), and it cannot run on a batch of {n} in "
                f"chunks of {size}: {self._unchunkable}. Pass exactly {size} at a time, or "
                "use jablate.bridges.torch.wrap(module) to run it in torch.")
        batched = [i for i, (_, b, _) in enumerate(self._user_inputs) if b]
        for i in batched:
            if jnp.shape(leaves[i])[0] != n:
                raise InputError(f"input '{self._user_inputs[i][0]}' of {self.name} has "
                                 f"{jnp.shape(leaves[i])[0]} rows; the first input has {n}.")
        pad = -n % size

        def chunks(x):
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
            return x.reshape((-1, size) + x.shape[1:])

        def one(*chunk):
            full = list(leaves)
            for i, c in zip(batched, chunk):
                full[i] = c
            return self._evaluate(params, full)

        outputs = jax.vmap(one)(*(chunks(leaves[i]) for i in batched))
        return [y.reshape((-1,) + y.shape[2:])[:n] for y in outputs]

    def _refresh(self, state):
        """Take the module's parameters and buffers ``state`` if they changed."""
        fingerprint = _fingerprint(state)
        if fingerprint != self._fingerprint:
            params = dict(self.params)
            params.update({k: to_jax(t) for k, t in state.items()})
            self.params, self._fingerprint = params, fingerprint

    def __repr__(self):
        batch = ("dynamic batch" if self.dynamic_batch else
                 f"traced at batch {self.static_batch}, " +
                 ("other batches refused" if self._unchunkable else "other batches in chunks"))
        return (f"TranslatedModel({self.name}: {len(self._steps)} ops, {len(self.params)} "
                f"parameters and buffers, {batch}, translated in "
                f"{self.translation_seconds:.2f} s)")


_CACHE = weakref.WeakKeyDictionary()


def _cache_key(inputs, batched):
    key = []
    for t, b in zip(inputs, batched):
        if isinstance(t, torch.Tensor):
            key.append((tuple(t.shape[1:]) if b else ("static",) + tuple(t.shape), str(t.dtype)))
        else:
            key.append(repr(t))
    return tuple(key)


def _raise_if_torch_fails(module, inputs, name):
    """After torch.export failed: the module's own error when torch cannot run it on the
    example inputs as given either (a wrong length or alphabet, say), which no bridge can
    help."""
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as e:  # noqa: BLE001
        shape = tuple(inputs[0].shape[1:])
        raise RuntimeError(
            f"{name} fails in torch itself on inputs of shape (batch, {', '.join(map(str, shape))})"
            f": {e}\nIs that the alphabet and length the model expects?") from e


#: What the messages of a module that cannot be translated add: the calls that run it in torch.
_IN_TORCH = ("; or pass backend='torch' to jablate.deep_lift_shap, saturation_mutagenesis, "
             "predict or ablate, which then run it in torch (deep_lift_shap and "
             "saturation_mutagenesis as tangermeme's own)")


def translate(module: torch.nn.Module, example_input, *example_args) -> TranslatedModel:
    """Translate a torch module into a JAX function evaluated by XLA.

    The module is exported in eval mode with :func:`torch.export.export`, its batch
    dimension symbolic, and the ATen graph is evaluated with ``jax.numpy`` and ``lax``.
    Parameters and buffers are not baked into the program: they are the ``params``
    argument of ``apply``, so one compiled program serves new weights too. The module's
    training mode (of every submodule) is restored afterwards.

    When torch.export cannot keep the batch symbolic, or `module` is a ``torch.export``
    program saved at a fixed batch size (``torch.export.load(path).module()``, or
    :class:`jablate.bridges.torch.StaticBatchModule`), the graph is traced at a fixed batch
    size and other batches run in chunks of it (see :class:`TranslatedModel`).

    Translations are cached per module (weakly) and per input shape without the batch
    dimension and dtype: translating again returns the same object, with its ``params``
    refreshed if the module's tensors changed in the meantime, or a new translation when
    its structure changed (a submodule replaced, a layer's setting changed in place, a
    parameter's shape).

    Parameters
    ----------
    module: torch.nn.Module
        The model. Dropout becomes the identity and batch norm uses running statistics.

    example_input: torch.Tensor or array, shape=(batch_size, ...)
        An example first input, e.g. one-hot sequences of shape (N, 4, L). Only its shape
        and dtype matter; the translation accepts any batch size but these other
        dimensions.

    *example_args: torch.Tensor, array or None
        Examples of the module's other forward arguments. A tensor whose first dimension
        equals the batch size of `example_input` is batched with it; None stays None.

    Returns
    -------
    model: TranslatedModel
        Call it as ``model(x, *args)`` on JAX arrays, or use the pure
        ``model.apply(params, x, *args)`` with ``model.params``. Outputs have the structure
        the module returns (an array, a tuple or a list of arrays).

    Raises
    ------
    NotImplementedError
        When the graph holds ops that have no JAX translation: all of them are named, and
        ``jablate.bridges.torch.wrap(module)`` runs such a module in torch through DLPack
        instead.
    RuntimeError
        When torch.export cannot capture the module at all (e.g. data-dependent Python
        control flow).

    Examples
    --------
    >>> from bpnetlite import BPNet
    >>> model = BPNet(n_filters=64, n_layers=8, n_control_tracks=0)
    >>> tm = translate(model, torch.zeros(1, 4, 2114))     # ~1 s after torch.export warms up
    >>> X = jax.numpy.zeros((64, 4, 2114))
    >>> profile, counts = tm(X)                              # (64, 2, 1000), (64, 1)
    >>> grads = jax.grad(lambda x: tm.apply(tm.params, x)[1].sum())(X)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"translate(): module must be a torch.nn.Module, got "
                        f"{type(module).__name__}.")
    fixed_batch = exported_batch(module)
    if isinstance(module, StaticBatchModule):
        module = module.module
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    inputs = [_as_torch(example_input, "example_input", device)]
    inputs += [_as_torch(a, f"example_args[{i}]", device) for i, a in enumerate(example_args)]
    if not isinstance(inputs[0], torch.Tensor) or inputs[0].ndim == 0:
        raise InputError("translate(): example_input must be an array with a batch "
                         "dimension, e.g. shape (N, 4, L).")
    n = inputs[0].shape[0]
    batched = [isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == n for t in inputs]

    key = _cache_key(inputs, batched)
    state = _state_tensors(module)
    structure = _structure(module, state)
    structure_then, cached = _CACHE.get(module, {}).get(key, (None, None))
    if cached is not None and structure_then == structure:
        cached._refresh(state)
        return cached

    start = time.perf_counter()
    name = type(module).__name__
    modes = {m: m.training for m in module.modules()}
    for m in modes:  # as module.eval(), which torch.export.load(...).module() refuses
        m.training = False
    try:
        try:
            with recurrent_as_ops(module):  # one op per recurrent layer, not one per step
                ep, traced_batch, unchunkable = _export(module, inputs, batched, fixed_batch)
        except Exception as e:  # noqa: BLE001
            _raise_if_torch_fails(module, inputs, name)
            raise RuntimeError(
                f"torch.export could not capture {name}: {e}\nUse "
                "jablate.bridges.torch.wrap(module) to run it in torch through DLPack "
                f"instead{_IN_TORCH}.") from e
        if traced_batch is not None and fixed_batch is None and unchunkable is None:
            _refuse_batch_dependence(module, inputs, batched, traced_batch, name)
        missing, mutates = unsupported(ep.graph)
        if missing or mutates:
            # Decompose towards core ATen, keeping every op the table knows; this also
            # removes in-place ops and inlines higher-order ops.
            ep = ep.run_decompositions(_preserving_decompositions())
            missing, _ = unsupported(ep.graph)
    finally:
        for m, training in modes.items():
            m.training = training
    if missing:
        raise NotImplementedError(
            f"translate() cannot lower {len(missing)} op(s) of {name} to JAX: "
            f"{', '.join(missing)}.\nThe ops it knows are listed in "
            f"jablate.bridges.torch_export.SUPPORTED_OPS ({len(SUPPORTED_OPS)} ATen ops). Use "
            "jablate.bridges.torch.wrap(module) to run this module in torch through DLPack "
            f"instead{_IN_TORCH}.")

    params = {k: to_jax(t) for k, t in state.items()}
    consts, placeholders, user_inputs = {}, [], []
    spec_kinds = torch.export.graph_signature.InputKind
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in ep.graph_signature.input_specs:
        arg_name = getattr(spec.arg, "name", None)
        if spec.kind in (spec_kinds.PARAMETER, spec_kinds.BUFFER):
            if spec.target not in params:
                params[spec.target] = to_jax(ep.state_dict.get(spec.target,
                                                               ep.constants.get(spec.target)))
            placeholders.append((arg_name, "param", spec.target))
        elif spec.kind == spec_kinds.CONSTANT_TENSOR:
            consts[spec.target] = to_jax(ep.constants[spec.target])
            placeholders.append((arg_name, "const", spec.target))
        elif spec.kind == spec_kinds.USER_INPUT:
            shape = meta_shape(nodes.get(arg_name))
            if traced_batch is None:
                is_batched = bool(shape) and not isinstance(shape[0], int)
            else:  # the inputs batched in the example were tiled to the traced batch
                i = len(user_inputs)
                is_batched = (bool(shape) and shape[0] == traced_batch
                              and (i >= len(batched) or batched[i]))
            shape = None if shape is None else tuple(
                s if isinstance(s, int) else -1 for s in shape)
            user_inputs.append((arg_name, is_batched, shape))
        else:
            raise NotImplementedError(f"translate(): {name} has a {spec.kind.name} input "
                                      f"({spec.target}); use jablate.bridges.torch.wrap(module).")
    node_names = {n.name for n in ep.graph.nodes}
    outputs = []  # (node name, None), or (None, constant) for a constant output
    for spec in ep.graph_signature.output_specs:
        if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT:
            arg_name = getattr(spec.arg, "name", None)
            outputs.append((arg_name, None) if arg_name in node_names
                           else (None, getattr(spec.arg, "value", None)))

    tm = TranslatedModel(
        name=name, placeholders=placeholders, user_inputs=user_inputs,
        steps=compile_graph(ep.graph), outputs=outputs, out_spec=ep.call_spec.out_spec,
        params=params, consts=consts, traced_batch=traced_batch, unchunkable=unchunkable,
        seconds=time.perf_counter() - start, fingerprint=_fingerprint(state),
        batch_statistics=_batch_statistics(ep.graph))
    _CACHE.setdefault(module, {})[key] = (structure, tm)
    return tm
