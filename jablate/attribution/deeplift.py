"""DeepLIFT/SHAP attributions as a transformation of a model's jaxpr.

:func:`deep_lift_shap` is tangermeme's function for JAX models (and for torch
modules, which it translates). It traces the model's pure ``apply(params, x,
*args)`` with :func:`jax.make_jaxpr` and evaluates the jaxpr twice per
(sequence, reference) pair, once on the sequence and once on the reference.
Where the two paths meet a nonlinear operation, a :func:`jax.custom_vjp` site
replaces the operation's derivative with its DeepLIFT multiplier, so that
``jax.grad`` of the target output gives the DeepLIFT multipliers; the model is
not modified, and everything runs under ``jit`` and ``vmap``.

The rules (tangermeme's where it has one):

* linear and structural primitives (``add``, ``dot_general`` with a weight,
  ``conv_general_dilated``, ``reshape``, ``slice``, ``reduce_sum``, ...) keep
  their gradient;
* a chain of elementwise primitives applied to one value ``z`` (``max(z, 0)``,
  ``logistic``, ``tanh``, ``exp``, gelu's ``z * erfc(-z / sqrt 2) / 2``, elu's
  ``select``, ...) is one elementwise function ``f`` and gets the rescale
  multiplier ``(f(z) - f(z_ref)) / (z - z_ref)``, or ``f'(z)`` where
  ``|z - z_ref| < 1e-6`` (tangermeme's ``_nonlinear``);
* ``reduce_window_max`` (max pooling) and ``reduce_max`` route the change of each
  window's maximum to the winning positions (tangermeme's ``_maxpool``);
* ``jax.nn.softmax`` (the ``exp(z - max z) / sum`` pattern) gets tangermeme's
  ``_softmax`` rule;
* a product of two input-dependent values (``mul``, ``dot_general``,
  ``conv_general_dilated``) gets the midpoint rule of tangermeme's ``BilinearOp``,
  and a quotient ``a / b`` the same rule on ``a * (1 / b)``;
* a ``lax.scan`` (a translated LSTM, GRU or RNN) stays one scan: its body gets these
  rules inside it, evaluated on pairs of the input's and the reference's carries and
  slices, so attributions equal those of the loop written out while the compiled program
  does not grow with the number of steps;
* ``stop_gradient`` of an input-dependent value (the shift of a stable softmax,
  log-softmax or logsumexp) is shared by the sequence and its reference: both
  use ``max(c, c_ref)``, which leaves those functions' values unchanged.

Any other primitive on input-dependent values raises ``NotImplementedError``
naming all of them; ``additional_nonlinear_rules`` adds rules (see
:func:`deep_lift_shap`).

:func:`attribution_fn` is the pure per-sequence core, for ``ablate``'s engine.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy
from jax.extend import core as jcore

from jablate._core import random as jrandom
from jablate._core.behaviour import carries
from jablate._core.caches import for_runner
from jablate._core.dtypes import dtype_kind, resolution
from jablate._core.errors import InputError, outside_stacklevel, warn_not_finite
from jablate._core.lowering import plain_convolutions
from jablate.api.ersatz import dinucleotide_shuffle, key_shuffle_of
from jablate.api.predict import prepare, torch_dtype
from jablate.engine import stream as engine
from jablate.engine.executor import Collect, Job, execute
from jablate.engine.per_sequence import SequenceFunc
from jablate.incremental.graph import call_body
from jablate.models.frontdoor import (
    check_flag,
    check_int,
    family,
    inputs,
    is_torch_module,
    not_one_hot,
    to_family,
    to_jax,
    torch_bridge,
)
from jablate.models.runner import (
    Backend,
    cast_input,
    check_backend,
    input_dtype,
)

#: ``|z - z_ref|`` below which a rule uses the gradient (tangermeme's threshold).
EPSILON = 1e-6


class AttributionReferencesResult(NamedTuple):
    """Attributions with the references they were computed against.

    Returned by :func:`deep_lift_shap` with ``return_references=True``, as
    tangermeme's namesake: unpacks as ``(attributions, references)``.
    """

    attributions: Any
    references: Any


# --- rules -----------------------------------------------------------------------------
#
# A rule is called in the backward pass of one equation as
#     rule(fn, primals, references, output, reference_output, cotangent) -> cotangents
# with ``fn(*operands)`` the equation itself, the operands on the input path (``primals``)
# and on the reference path (``references``; None for an operand that does not depend on
# the input, which is the same on both paths), the two outputs, and the multiplier flowing
# into the output. It returns one cotangent per operand (None where it has none).


def rescale(fn: Callable, primals: tuple, references: tuple, output: jax.Array,
            reference_output: jax.Array, cotangent: jax.Array) -> tuple:
    """The rescale rule for an elementwise function of one input-dependent operand.

    The multiplier is ``(f(z) - f(z_ref)) / (z - z_ref)``, and the gradient
    ``f'(z)`` where ``|z - z_ref| < 1e-6``, as tangermeme's ``_nonlinear``.
    Passed as a value of ``additional_nonlinear_rules`` (``{"sin": rescale}``),
    it declares a primitive an elementwise nonlinearity: chains of such
    primitives on one value are rescaled as one function.
    """
    (i,) = [k for k, r in enumerate(references) if r is not None]
    z, z_ref = primals[i], references[i]
    delta = z - z_ref
    grad = jax.vjp(lambda v: fn(*primals[:i], v, *primals[i + 1:]), z)[1](cotangent)[0]
    secant = cotangent * (output - reference_output) / jnp.where(delta == 0, 1, delta)
    cotangents = [None] * len(primals)
    cotangents[i] = jnp.where(jnp.abs(delta) < EPSILON, grad, secant)
    return tuple(cotangents)


def midpoint(fn: Callable, primals: tuple, references: tuple, output: jax.Array,
             reference_output: jax.Array, cotangent: jax.Array) -> tuple:
    """The midpoint rule for a bilinear operation (tangermeme's ``_bilinear``).

    Each operand's multiplier is the derivative at the midpoint of the
    operands' paths from the reference, ``((a + a_ref) / 2, (b + b_ref) / 2)``;
    for a bilinear ``fn`` the changes then sum to the output's change exactly.
    """
    mids = tuple(p if r is None else (p + r) / 2 for p, r in zip(primals, references))
    cotangents = jax.vjp(fn, *mids)[1](cotangent)
    return tuple(None if r is None else c for c, r in zip(cotangents, references))


def rescale_first(fn: Callable, primals: tuple, references: tuple, output: jax.Array,
                  reference_output: jax.Array, cotangent: jax.Array) -> tuple:
    """A product ``a * b`` attributed to ``a`` alone by the rescale rule.

    As if ``a * b`` were one elementwise nonlinearity of ``a``: ``a`` gets
    ``(y - y_ref) / (a - a_ref)`` and ``b`` nothing (both take their gradients
    where ``|a - a_ref| < 1e-6``). bpnet-lite's ``deep_lift_shap`` treats
    ``ProfileWrapper``'s ``logits * softmax(logits)`` this way (it registers
    ``_ProfileLogitScaling`` with tangermeme's ``_nonlinear``);
    ``additional_nonlinear_rules={"mul": rescale_first}`` gives its numbers.
    Every product of two input-dependent values in the model is then treated
    so.
    """
    a, b = primals
    a_ref = references[0] if references[0] is not None else a
    delta = a - a_ref
    small = jnp.abs(delta) < EPSILON
    secant = cotangent * (output - reference_output) / jnp.where(delta == 0, 1, delta)
    grad_a, grad_b = jax.vjp(fn, a, b)[1](cotangent)
    cot_a = jnp.where(small, grad_a, secant) if references[0] is not None else None
    cot_b = jnp.where(small, grad_b, 0) if references[1] is not None else None
    return cot_a, cot_b


def _quotient(fn, primals, references, output, reference_output, cotangent):
    """``a / b`` as ``a * u`` with ``u = 1 / b``: the midpoint rule for the product and
    the exact secant ``du / db = -1 / (b * b_ref)`` for the reciprocal."""
    (a, b), (a_ref, b_ref) = primals, references
    u, u_ref = 1 / b, 1 / b_ref
    a_mid = a if a_ref is None else (a + a_ref) / 2
    cot_a, cot_u = jax.vjp(lambda p, q: p * q, a_mid, (u + u_ref) / 2)[1](cotangent)
    return (None if a_ref is None else cot_a, cot_u * (-u * u_ref))


def _max_pool(route, fn, primals, references, output, reference_output, cotangent):
    """tangermeme's ``_maxpool``: each window's change is split into the part above the
    reference's maximum, routed to the input's winner, and the rest, routed to the
    reference's winner; divided by each position's change (the gradient where it is 0)."""
    (z,), (z_ref,) = primals, references
    top = jnp.maximum(output, reference_output)
    routed = (route(fn, z, cotangent * (top - reference_output))
              + route(fn, z_ref, cotangent * (output - top)))
    delta = z - z_ref
    same = delta == 0
    return (jnp.where(same, route(fn, z, cotangent), routed / jnp.where(same, 1, delta)),)


def _route_by_vjp(fn, at, values):
    """Values of a pooled output sent back to the positions that won each window
    (``reduce_window_max``'s derivative: the first maximum of a window, as torch)."""
    return jax.vjp(fn, at)[1](values)[0]


def _route_first_max(axes, fn, at, values):
    """As :func:`_route_by_vjp` for ``reduce_max`` over ``axes``, to the first maximum."""
    keep = [d for d in range(at.ndim) if d not in axes]
    moved = jnp.transpose(at, keep + list(axes))
    flat = moved.reshape(moved.shape[:len(keep)] + (-1,))
    hot = jax.nn.one_hot(jnp.argmax(flat, axis=-1), flat.shape[-1], dtype=values.dtype)
    sent = (hot * values[..., None]).reshape(moved.shape)
    return jnp.transpose(sent, numpy.argsort(keep + list(axes)))


def _softmax(axes, fn, primals, references, output, reference_output, cotangent):
    """tangermeme's ``_softmax`` along ``axes``, for the input path's cotangent."""
    (x,), (x_ref,) = primals, references
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x, x_ref, g = x.astype(dtype), x_ref.astype(dtype), cotangent.astype(dtype)
    c = jnp.maximum(x.max(axes, keepdims=True), x_ref.max(axes, keepdims=True))
    a, a_ref = jnp.exp(x - c), jnp.exp(x_ref - c)
    tiny = jnp.finfo(dtype).tiny
    v = 1 / jnp.maximum(a.sum(axes, keepdims=True), tiny)
    v_ref = 1 / jnp.maximum(a_ref.sum(axes, keepdims=True), tiny)
    y, y_ref = a * v, a_ref * v_ref
    delta_x = x - x_ref
    x_to_a = jnp.where(jnp.abs(delta_x) > EPSILON, (a - a_ref) / _nonzero(delta_x), a_ref)
    delta_v, delta_log_v = v - v_ref, jnp.log(v) - jnp.log(v_ref)
    delta_log_y = delta_x + delta_log_v
    y_per_log_y = jnp.where(jnp.abs(delta_log_y) > EPSILON,
                            (y - y_ref) / _nonzero(delta_log_y), y_ref)
    log_v_per_v = jnp.where(jnp.abs(delta_v) > EPSILON, delta_log_v / _nonzero(delta_v),
                            1 / v_ref)
    v_to_y = y_per_log_y * log_v_per_v
    grad = g * y_per_log_y + x_to_a * (g * v_to_y * (-v * v_ref)).sum(axes, keepdims=True)
    return (grad.astype(cotangent.dtype),)


def _nonzero(d):
    return jnp.where(d == 0, 1, d)


def _softmax_fn(axes, z):
    return jax.nn.softmax(z, axis=axes)


# --- the model as a flat graph ---------------------------------------------------------

_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                    "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "remat2",
                    "checkpoint", "custom_lin"})

#: Elementwise primitives linear in their input-dependent operand (when only one is).
_LINEAR_ELEMENTWISE = frozenset({"add", "add_any", "sub", "neg", "mul", "div",
                                 "convert_element_type", "reduce_precision", "copy", "copy_p",
                                 "select_n"})
#: Elementwise nonlinearities the rescale rule covers (activation functions' pieces).
_NONLINEAR_ELEMENTWISE = frozenset("""
    max min clamp abs sign exp exp2 expm1 log log1p logistic tanh erf erfc integer_pow pow
    sqrt rsqrt cbrt square gt ge lt le eq ne and or not is_finite
""".split())
#: Structural primitives: linear in their input-dependent operand(s).
_STRUCTURAL = frozenset("""
    reshape squeeze expand_dims broadcast_in_dim transpose rev slice dynamic_slice
    dynamic_update_slice gather scatter scatter-add scatter_add pad concatenate stack reduce_sum
    reduce_window_sum cumsum conv_general_dilated dot_general split sharding_constraint
    copy copy_p reduce_precision
""".split())
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})
#: Operands that are indices (must not depend on the input) per primitive: from index k on.
_INDEX_OPERANDS = {"dynamic_slice": 1, "dynamic_update_slice": 2, "gather": 1}
_SCATTERS = frozenset({"scatter", "scatter-add", "scatter_add"})


class _Lit:
    """A constant operand: a literal or a closed-over array."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


@dataclass
class _Node:
    name: str
    fn: Callable  # fn(*operands) -> list of outputs
    inputs: tuple  # variable ids (int) or _Lit
    outputs: tuple
    params: dict = field(default_factory=dict)


def _bind(primitive, params, *values):
    out = primitive.bind(*values, **params)
    return list(out) if primitive.multiple_results else [out]


def _flatten(closed) -> tuple[list, list, tuple, tuple]:
    """Nodes, avals ((shape, dtype) per variable id), input ids and output refs of a
    ClosedJaxpr with calls inlined, and every variable operand of an elementwise
    primitive broadcast explicitly to the output's shape."""
    avals, nodes = [], []

    def fresh(shape, dtype):
        avals.append((tuple(shape), dtype))
        return len(avals) - 1

    def walk(jaxpr, consts, ins):
        env = {v: _Lit(c) for v, c in zip(jaxpr.constvars, consts)}
        env.update(zip(jaxpr.invars, ins))

        def read(atom):
            return _Lit(atom.val) if isinstance(atom, jcore.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            args = tuple(read(a) for a in eqn.invars)
            inner = call_body(eqn) if eqn.primitive.name in _CALLS else None
            if inner is not None and len(inner[0].invars) == len(args):
                env.update(zip(eqn.outvars, walk(inner[0], inner[1], args)))
                continue
            name = eqn.primitive.name
            if name in _LINEAR_ELEMENTWISE or name in _NONLINEAR_ELEMENTWISE:
                shape = tuple(eqn.outvars[0].aval.shape)
                args = tuple(broadcast(a, shape) for a in args)
            outs = tuple(fresh(v.aval.shape, v.aval.dtype) for v in eqn.outvars)
            nodes.append(_Node(name, partial(_bind, eqn.primitive, dict(eqn.params)), args,
                               outs, dict(eqn.params)))
            env.update(zip(eqn.outvars, outs))
        return tuple(read(a) for a in jaxpr.outvars)

    def broadcast(ref, shape):
        if isinstance(ref, _Lit) or avals[ref][0] == shape:
            return ref
        out = fresh(shape, avals[ref][1])
        nodes.append(_Node("broadcast_in_dim", partial(_broadcast_to, shape), (ref,), (out,)))
        return out

    inputs = tuple(fresh(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars)
    outputs = walk(closed.jaxpr, closed.consts, inputs)
    return nodes, avals, inputs, outputs


def _broadcast_to(shape, value):
    return [jnp.broadcast_to(value, shape)]


def _prune(nodes, outputs):
    """The nodes some output needs, in order."""
    live = {r for r in outputs if isinstance(r, int)}
    kept = []
    for node in reversed(nodes):
        if any(o in live for o in node.outputs):
            kept.append(node)
            live.update(r for r in node.inputs if isinstance(r, int))
    return kept[::-1]


# --- analysis: which rule each equation gets --------------------------------------------


@dataclass
class _Graph:
    """A model's flat jaxpr and what DeepLIFT does at each equation.

    ``kind[k]`` is 'const' (no input-dependent operand), 'chain' (a step of an
    elementwise function of ``root[v]``), 'linear', 'rule' (``rule[k]``), 'shift'
    (a shared ``stop_gradient``) or 'internal' (inside a softmax, whose last
    equation carries the rule).
    """

    nodes: list
    avals: list
    inputs: tuple
    outputs: tuple
    n_params: int  # leaves of params before x among the inputs
    kind: dict = field(default_factory=dict)
    rule: dict = field(default_factory=dict)
    rule_fn: dict = field(default_factory=dict)  # k -> fn replacing node.fn at a site
    site_inputs: dict = field(default_factory=dict)  # k -> operands of a site's fn
    dep: set = field(default_factory=set)
    root: dict = field(default_factory=dict)
    nonlinear: set = field(default_factory=set)
    producer: dict = field(default_factory=dict)
    unknown: list = field(default_factory=list)
    n_outputs: int = 0
    body: dict = field(default_factory=dict)  # k -> (graph, dep positions) of a scan's body


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _softmax_units(nodes, producer, uses, index):
    """``{k: (z, axes, internal node indices)}`` for each ``div`` at ``k`` that ends an
    ``exp(z - max(z)) / sum(exp(...))`` whose intermediate values have no other use."""
    units = {}
    passthrough = ("broadcast_in_dim", "reshape", "stop_gradient", "convert_element_type",
                   "squeeze", "expand_dims")

    def peel(ref, internal):
        while isinstance(ref, int) and ref in producer:
            p = producer[ref]
            if p.name in passthrough:
                ref = p.inputs[0]
            elif p.name == "max" and any(isinstance(i, _Lit) and numpy.all(
                    numpy.isneginf(numpy.asarray(i.value))) for i in p.inputs):
                ref = next(i for i in p.inputs if not isinstance(i, _Lit))
            else:
                return p
            internal.append(index[id(p)])
        return None

    for k, node in enumerate(nodes):
        if node.name != "div" or not all(isinstance(i, int) for i in node.inputs):
            continue
        num, den = node.inputs
        e = producer.get(num)
        s = producer.get(e.inputs[0]) if e is not None and e.name == "exp" else None
        if s is None or s.name != "sub" or not all(isinstance(i, int) for i in s.inputs):
            continue
        z, shift = s.inputs
        internal = [index[id(e)], index[id(s)]]
        top = peel(shift, internal)
        total = peel(den, internal)
        if top is None or top.name != "reduce_max" or top.inputs[0] != z \
                or total is None or total.name != "reduce_sum" or total.inputs[0] != num:
            continue
        axes = tuple(top.params["axes"])
        if tuple(total.params["axes"]) != axes:
            continue
        internal += [index[id(top)], index[id(total)]]
        inner = {o for i in internal for o in nodes[i].outputs}
        if all(uses.get(v, set()) <= set(internal) | {k} for v in inner):
            units[k] = (z, axes, internal)
    return units


def _analyse(nodes, avals, inputs, outputs, n_params, rules, dep_inputs=None) -> _Graph:
    """What DeepLIFT does at each node; the input-dependent inputs are ``dep_inputs``
    (default: the one after the ``n_params`` parameters, the model's ``x``)."""
    graph = _Graph(nodes, avals, inputs, outputs, n_params)
    index = {id(n): k for k, n in enumerate(nodes)}
    uses: dict = {}
    for k, node in enumerate(nodes):
        for o in node.outputs:
            graph.producer[o] = node
        for i in node.inputs:
            if isinstance(i, int):
                uses.setdefault(i, set()).add(k)
    for x in ([inputs[n_params]] if dep_inputs is None else dep_inputs):
        graph.dep.add(x)
        graph.root[x] = x
    units = _softmax_units(nodes, graph.producer, uses, index)
    internal = {i for _, _, members in units.values() for i in members}
    rescaled = {name for name, rule in rules.items() if rule is rescale}
    unknown = []

    for k, node in enumerate(nodes):
        deps = [i for i in node.inputs if isinstance(i, int) and i in graph.dep]
        if not deps:
            graph.kind[k] = "const"
            continue
        graph.dep.update(node.outputs)
        for o in node.outputs:
            graph.root[o] = o
        if k in internal:
            graph.kind[k] = "internal"
            continue
        if k in units:
            z, axes, _ = units[k]
            graph.kind[k], graph.rule[k] = "rule", partial(_softmax, axes)
            graph.rule_fn[k], graph.site_inputs[k] = partial(_softmax_fn, axes), (z,)
            continue
        name = node.name
        rule = rules.get(name)
        dep_ops = [i for i in node.inputs if isinstance(i, int) and i in graph.dep]
        if name == "scan" and rule is None:
            body, positions = _scan_body(node, graph.dep, rules)
            graph.kind[k], graph.body[k] = "scan", (body, positions)
            unknown += [f"{u} (in a scan)" for u in body.unknown]
            continue
        elementwise = (name in _LINEAR_ELEMENTWISE or name in _NONLINEAR_ELEMENTWISE
                       or name in rescaled)
        roots = {graph.root[i] for i in dep_ops}
        out_shape = avals[node.outputs[0]][0]
        if rule is not None and rule is not rescale and _nonlinear_use(node, graph.dep):
            graph.kind[k], graph.rule[k] = "rule", rule
        elif elementwise and len(node.outputs) == 1 and len(roots) == 1 \
                and all(avals[i][0] == out_shape for i in dep_ops):
            graph.kind[k] = "chain"
            (graph.root[node.outputs[0]],) = roots
            if any(i in graph.nonlinear for i in dep_ops) or _nonlinear_step(node, graph.dep):
                graph.nonlinear.add(node.outputs[0])
        elif elementwise and name in ("add", "add_any", "sub") or (
                name == "select_n" and node.inputs[0] not in graph.dep):
            graph.kind[k] = "linear"
        elif name == "mul" or (name in _BILINEAR and len(dep_ops) == 2):
            graph.kind[k], graph.rule[k] = "rule", midpoint
        elif name == "div" and node.inputs[1] in graph.dep:
            graph.kind[k], graph.rule[k] = "rule", _quotient
        elif elementwise:
            unknown.append(f"{name} (of several input-dependent values)")
        elif name in _STRUCTURAL:
            first_index = _INDEX_OPERANDS.get(name)
            indices = (node.inputs[first_index:] if first_index is not None
                       else node.inputs[1:2] if name in _SCATTERS else ())
            if any(isinstance(i, int) and i in graph.dep for i in indices):
                unknown.append(f"{name} (with input-dependent indices)")
            graph.kind[k] = "linear"
        elif name == "reduce_window_max":
            if any(d != 1 for key in ("window_dilation", "base_dilation")
                   for d in node.params.get(key, ())):
                # JAX has no derivative of a dilated max pool to route its windows by
                unknown.append("reduce_window_max with dilation (a dilated max pool)")
            graph.kind[k], graph.rule[k] = "rule", partial(_max_pool, _route_by_vjp)
        elif name == "reduce_max":
            axes = tuple(node.params["axes"])
            graph.kind[k] = "rule"
            graph.rule[k] = partial(_max_pool, partial(_route_first_max, axes))
        elif name == "stop_gradient":
            graph.kind[k] = "shift"
        else:
            unknown.append(name)
        if graph.kind.get(k) not in ("chain", None) and any(
                not _is_float(avals[i][1]) for i in dep_ops):
            unknown.append(f"{name} (on an input-dependent boolean or integer value)")
    graph.unknown = sorted(set(unknown))
    return graph


def _scan_body(node, dep, rules) -> tuple[_Graph, frozenset]:
    """The analysed body of a ``lax.scan`` node and the positions of its operands (consts,
    carries, xs) that depend on the input: those the scan is given, and every carry that
    the body makes input-dependent (until none changes)."""
    p = node.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    body_nodes, avals, ins, outs = _flatten(p["jaxpr"])
    body_nodes = _prune(body_nodes, outs)
    positions = {j for j, i in enumerate(node.inputs) if isinstance(i, int) and i in dep}
    while True:
        graph = _analyse(body_nodes, avals, ins, outs, 0, rules,
                         [ins[j] for j in sorted(positions)])
        more = {n_consts + c for c in range(n_carry)
                if isinstance(outs[c], int) and outs[c] in graph.dep} - positions
        if not more:
            return graph, frozenset(positions)
        positions |= more


def _nonlinear_use(node, dep) -> bool:
    """Whether ``node`` is nonlinear in the input (a user rule applies there)."""
    n_dep = sum(isinstance(i, int) and i in dep for i in node.inputs)
    if node.name in _BILINEAR:
        return n_dep >= 2
    if node.name == "div":
        return node.inputs[1] in dep
    if node.name in _LINEAR_ELEMENTWISE or node.name in _STRUCTURAL:
        return node.name == "select_n" and node.inputs[0] in dep
    return True


def _nonlinear_step(node, dep) -> bool:
    """Whether an elementwise step of a chain is nonlinear."""
    if node.name in ("mul",):
        return sum(isinstance(i, int) and i in dep for i in node.inputs) >= 2
    if node.name == "div":
        return isinstance(node.inputs[1], int) and node.inputs[1] in dep
    if node.name == "select_n":
        return isinstance(node.inputs[0], int) and node.inputs[0] in dep
    if node.name == "convert_element_type":
        return not _is_float(node.params.get("new_dtype", jnp.float32))
    return node.name not in _LINEAR_ELEMENTWISE


class NoRuleError(NotImplementedError):
    """The model has an operation on input-dependent values that ``deep_lift_shap`` has
    no DeepLIFT rule for (raised before the model runs)."""


def _unknown_error(unknown) -> NotImplementedError:
    if "pure_callback" in unknown:  # a torch module run in torch (bridges.torch.wrap)
        return NoRuleError(
            "deep_lift_shap cannot see inside a model that runs outside JAX (a "
            "pure_callback, as jablate.bridges.torch.wrap(module) runs a torch module): "
            "pass the torch module itself, which jablate translates to JAX, or "
            "backend='torch' to attribute it in torch with tangermeme.")
    return NoRuleError(
        "deep_lift_shap has no DeepLIFT rule for these operations of the model on "
        f"input-dependent values: {', '.join(unknown)}. Add one with "
        "additional_nonlinear_rules={name: rule}: jablate.attribution.deeplift.rescale for an "
        "elementwise function, or a function rule(fn, primals, references, output, "
        "reference_output, cotangent) returning one cotangent per operand (see "
        "help(jablate.deep_lift_shap)); for a torch module, backend='torch' attributes it "
        "with tangermeme's deep_lift_shap.")


# --- evaluation --------------------------------------------------------------------------


def _chain(graph: _Graph, v: int):
    """The elementwise function behind chain variable ``v``: ``(z, nodes, consts)`` with
    ``z`` the variable it is a function of, the chain's nodes from ``z`` to ``v`` in order,
    and the non-input-dependent variables they read."""
    root = graph.root[v]
    members, stack = set(), [v]
    while stack:
        u = stack.pop()
        if u == root or u not in graph.producer:
            continue
        node = graph.producer[u]
        if id(node) in members:
            continue
        members.add(id(node))
        stack.extend(i for i in node.inputs if isinstance(i, int) and i in graph.dep)
    order = [n for n in graph.nodes if id(n) in members]
    # Start at the input of the first nonlinear step when only linear steps with
    # constants lead there (a bias before a ReLU), as the input of tangermeme's module.
    z = root
    while True:
        readers = [n for n in order if z in n.inputs]
        if len(readers) != 1 or _nonlinear_step(readers[0], graph.dep) \
                or readers[0].outputs[0] == v \
                or sum(isinstance(i, int) and i in graph.dep for i in readers[0].inputs) != 1:
            break
        order.remove(readers[0])
        z = readers[0].outputs[0]
    consts = sorted({i for n in order for i in n.inputs
                     if isinstance(i, int) and i not in graph.dep})
    return z, order, consts


def _chain_step(node, values, is_dep):
    """One step of an elementwise chain; ``max``/``min`` against a constant take the
    derivative 0 at ties (torch's ReLU and clamps), not ``lax.max``'s 1/2."""
    if node.name in ("max", "min") and sum(is_dep) == 1:
        a, b = values if is_dep[0] else values[::-1]
        keep = a > b if node.name == "max" else a < b
        return [jnp.where(keep, a, jnp.asarray(b, a.dtype))]
    return node.fn(*values)


def _chain_fn(order, z, consts, v, dep, z_value, *const_values):
    env = dict(zip(consts, const_values))
    env[z] = z_value
    for node in order:
        values = [i.value if isinstance(i, _Lit) else env[i] for i in node.inputs]
        is_dep = [isinstance(i, int) and i in dep for i in node.inputs]
        env.update(zip(node.outputs, _chain_step(node, values, is_dep)))
    return env[v]


def _site(rule, fn, primals, references, reference_output):
    """``fn(*primals)``, whose derivative is ``rule``'s (a custom_vjp)."""
    is_dep = tuple(r is not None for r in references)

    @jax.custom_vjp
    def site(p, r, ro):
        return fn(*p)

    def forward(p, r, ro):
        out = fn(*p)
        return out, (p, r, ro, out)

    def backward(res, g):
        p, r, ro, out = res
        refs = tuple(ri if d else None for ri, d in zip(r, is_dep))
        cotangents = rule(fn, p, refs, out, ro, g)
        return (tuple(c if d else None for c, d in zip(cotangents, is_dep)), None, None)

    site.defvjp(forward, backward)
    refs = tuple(r if r is not None else jnp.zeros(()) for r in references)
    return site(tuple(primals), refs, reference_output)


def _evaluate(graph: _Graph, leaves: list, x: jax.Array, r: jax.Array):
    """The model's output on the input path (with DeepLIFT's derivatives) and on the
    reference path: ``leaves`` are the other inputs (params and args, as traced)."""
    xid = graph.inputs[graph.n_params]
    const = dict(zip([i for i in graph.inputs if i != xid], leaves))
    (y,), (y_ref,) = _run(graph, const, {xid: x}, {xid: r})
    return y, y_ref


def _scan_pair(node: _Node, body: _Graph, positions: frozenset, x_ops: list, r_ops: list):
    """A ``lax.scan`` on both paths at once: the body's DeepLIFT evaluation inside one
    ``lax.scan`` whose carries and slices are pairs (the input's, the reference's), so the
    compiled program does not grow with the number of steps. ``x_ops``/``r_ops`` are the
    scan's operands on each path (the same value where it does not depend on the input)."""
    p = node.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    carries = slice(n_consts, n_consts + n_carry)
    xs = slice(n_consts + n_carry, len(node.inputs))

    def step(carry, sliced):
        x_in = [*x_ops[:n_consts], *carry[0], *sliced[0]]
        r_in = [*r_ops[:n_consts], *carry[1], *sliced[1]]
        const = {v: x_in[j] for j, v in enumerate(body.inputs) if j not in positions}
        x_out, r_out = _run(body, const, {body.inputs[j]: x_in[j] for j in positions},
                            {body.inputs[j]: r_in[j] for j in positions})
        return ((tuple(x_out[:n_carry]), tuple(r_out[:n_carry])),
                (tuple(x_out[n_carry:]), tuple(r_out[n_carry:])))

    (cx, cr), (yx, yr) = jax.lax.scan(
        step, (tuple(x_ops[carries]), tuple(r_ops[carries])),
        (tuple(x_ops[xs]), tuple(r_ops[xs])), length=p["length"], reverse=p["reverse"],
        unroll=p["unroll"])
    return [*cx, *yx], [*cr, *yr]


def _run(graph: _Graph, const: dict, xv: dict, rv: dict) -> tuple[list, list]:
    """Evaluate ``graph`` on both paths: ``xv``/``rv`` hold its input-dependent inputs on
    the input and reference paths, ``const`` the others. Returns its outputs on each."""
    const, xv, rv, mat = dict(const), dict(xv), dict(rv), {}

    def c_of(i):
        return i.value if isinstance(i, _Lit) else const[i]

    def r_of(i):
        return rv[i] if isinstance(i, int) and i in graph.dep else c_of(i)

    def plain(i):
        return xv[i] if isinstance(i, int) and i in graph.dep else c_of(i)

    def x_of(i):
        if not (isinstance(i, int) and i in graph.dep):
            return c_of(i)
        if i in graph.nonlinear:
            if i not in mat:
                node = graph.producer[i]
                on = [j for j in node.inputs if isinstance(j, int) and j in graph.dep]
                if len(on) == 1 and on[0] in graph.nonlinear \
                        and not _nonlinear_step(node, graph.dep):
                    # A linear step with constants after the chain's last nonlinear one (a
                    # batch norm after a ReLU) is applied to the rescaled value, as
                    # tangermeme's modules are: inside the quotient, its shift would cost
                    # float32 digits (1e-3 of the multipliers for a shift of 10).
                    mat[i] = node.fn(*(x_of(j) if j == on[0] else c_of(j)
                                       for j in node.inputs))[0]
                else:
                    z, order, consts = _chain(graph, i)
                    fn = partial(_chain_fn, order, z, consts, i, graph.dep)
                    mat[i] = _site(rescale, fn, (xv[z], *(const[c] for c in consts)),
                                   (rv[z],) + (None,) * len(consts), rv[i])
            return mat[i]
        return xv[i]

    for k, node in enumerate(graph.nodes):
        kind = graph.kind[k]
        if kind == "const":
            const.update(zip(node.outputs, node.fn(*map(c_of, node.inputs))))
            continue
        if kind == "scan":
            body, positions = graph.body[k]
            x_out, r_out = _scan_pair(node, body, positions, list(map(x_of, node.inputs)),
                                      list(map(r_of, node.inputs)))
            xv.update(zip(node.outputs, x_out))
            rv.update(zip(node.outputs, r_out))
            continue
        r_out = node.fn(*map(r_of, node.inputs))
        if kind == "internal":
            rv.update(zip(node.outputs, r_out))
            continue
        if kind == "shift":
            shared = jax.lax.stop_gradient(jnp.maximum(x_of(node.inputs[0]), r_out[0]))
            xv[node.outputs[0]] = rv[node.outputs[0]] = shared
            continue
        rv.update(zip(node.outputs, r_out))
        if kind == "chain":
            xv.update(zip(node.outputs, node.fn(*map(plain, node.inputs))))
        elif kind == "linear":
            xv.update(zip(node.outputs, node.fn(*map(x_of, node.inputs))))
        else:
            operands = graph.site_inputs.get(k, node.inputs)
            fn = graph.rule_fn.get(k) or (
                node.fn if len(node.outputs) > 1 else lambda *v, f=node.fn: f(*v)[0])
            refs = tuple(rv[i] if isinstance(i, int) and i in graph.dep else None
                         for i in operands)
            out = _site(graph.rule[k], fn, tuple(map(x_of, operands)), refs,
                        r_out if len(node.outputs) > 1 else r_out[0])
            xv.update(zip(node.outputs, out if len(node.outputs) > 1 else [out]))
    return [x_of(y) for y in graph.outputs], [r_of(y) for y in graph.outputs]


# --- the pure core -----------------------------------------------------------------------


def _spec(a, lead=()):
    shape, dtype = (a.shape, a.dtype) if hasattr(a, "dtype") else (
        numpy.shape(a), jnp.result_type(a))
    return jax.ShapeDtypeStruct(tuple(lead) + tuple(shape), dtype)


def _trace(apply, rules, params, x, args) -> _Graph:
    """Trace ``apply`` for one sequence (batch 1) and analyse its jaxpr; ``x`` and
    ``args`` are one sequence's (arrays or shapes)."""
    # Translated convolutions as the conv_general_dilated primitive, not as a matmul and
    # shifted sums: XLA's CPU fusion (jaxlib 0.10.2) miscompiles the latter's transpose for
    # some widths (75, BPNet's profile head), which gives wrong gradients under jit.
    with plain_convolutions():
        closed, out = jax.make_jaxpr(apply, return_shape=True)(
            jax.tree.map(_spec, params), _spec(x, (1,)), *(_spec(a, (1,)) for a in args))
    if not hasattr(out, "shape"):
        raise InputError("deep_lift_shap needs a model that returns one array of shape "
                         "(batch, n_outputs); this one returns a "
                         f"{type(out).__name__}. Wrap it to return one output (as "
                         "bpnet-lite's CountWrapper and ProfileWrapper do).")
    shape = tuple(out.shape)
    if len(shape) == 1:
        raise InputError("deep_lift_shap needs a model that returns shape (batch, n_outputs), "
                         "as tangermeme's does; this one returns one value per example, shape "
                         "(batch,): attribute lambda x: model(x)[:, None] (one output, "
                         "target=0).")
    if len(shape) < 2 or math.prod(shape[2:]) != 1:
        raise InputError("deep_lift_shap needs a model that returns shape (batch, "
                         "n_outputs), optionally followed by axes of length 1; it returns "
                         f"{shape[1:]} per example. Wrap it so that it returns one value per "
                         "output, e.g. by summing or slicing the extra axes.")
    n_params = len(jax.tree.leaves(params))
    nodes, avals, ins, outs = _flatten(closed)
    nodes = _prune(nodes, outs)
    graph = _analyse(nodes, avals, ins, outs, n_params, rules)
    graph.n_outputs = shape[1]
    return graph


def _rule_table(rules: Any) -> dict:
    """``additional_nonlinear_rules`` checked, keyed by primitive name."""
    if rules is None:
        return {}
    if not isinstance(rules, dict):
        raise InputError("additional_nonlinear_rules must be a dict mapping primitive names "
                         f"to rules, or None; got {type(rules).__name__}.")
    table = {}
    for key, rule in rules.items():
        name = key if isinstance(key, str) else getattr(key, "name", None)
        if not isinstance(name, str) or not callable(rule):
            raise InputError("additional_nonlinear_rules must map primitive names (such as "
                             "'sin') to callables such as "
                             f"jablate.attribution.deeplift.rescale; got {key!r}: {rule!r}.")
        table[name] = rule
    return table


def _pairs(apply, rules, target, params, x, refs, args, chunk):
    """Multipliers (R, A, L) and the outputs of ``x`` and of each reference (R,)."""
    graph = _trace(apply, rules, params, x, args)
    if graph.unknown:
        raise _unknown_error(graph.unknown)
    leaves = jax.tree.leaves(params) + [a[None] for a in args]

    def pair(r):
        def target_of(xx):
            y, y_ref = _evaluate(graph, leaves, xx[None], r[None])
            return y.reshape(-1)[target], y_ref.reshape(-1)[target]

        (y, y_ref), m = jax.value_and_grad(target_of, has_aux=True)(x)
        return m, y, y_ref

    if chunk is None or chunk >= refs.shape[0]:
        return jax.vmap(pair)(refs)
    return jax.lax.map(pair, refs, batch_size=chunk)


def _draw(references_fn, key, x, n):
    """The ``n`` references (n, A, L) of one sequence ``x``: reference ``i`` from
    ``fold_in(key, i)`` (:func:`_draw_flat` of one sequence)."""
    return _draw_flat(references_fn, key[None], x[None], n)[0]


def _draw_all(key, X, references_fn, n):
    """References (N, n, A, L) of every sequence, as the compiled steps draw them."""
    return _draw_block(key, X, jnp.arange(X.shape[0]), references_fn, n)


def _draw_flat(references_fn, keys, xs, n):
    """References (B, n, A, L) of the sequences ``xs`` (B, A, L): reference ``i`` of
    sequence ``b`` from ``fold_in(keys[b], i)``, as :func:`_draw` draws them, as one batch
    of ``B * n`` shuffles (a vmap of a vmap of the dinucleotide shuffle compiled about
    twice as long as one vmap of the same items on a CPU)."""
    B, length = xs.shape[0], xs.shape[-1]
    per = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(n)))(
        keys).reshape(B * n)
    flat = jnp.repeat(xs, n, axis=0, total_repeat_length=B * n)
    drawn = jax.vmap(lambda k, x: references_fn(k, x, 0, length))(per, flat)
    return drawn.reshape((B, n) + xs.shape[1:])


def _draw_rows(key, xs, rows, references_fn, n):
    """References (len(rows), n, A, L) of the sequences ``xs``, rows ``rows`` of ``X``:
    reference ``i`` of sequence ``j`` from ``fold_in(fold_in(key, j), i)``, as
    :func:`attribution_fn` draws them."""
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(rows)
    return _draw_flat(references_fn, keys, xs, n)


_draw_block = jax.jit(_draw_rows, static_argnames=("references_fn", "n"))

#: Bytes of references drawn at once (a block of sequences; see :class:`_ReferenceBlocks`).
REFERENCE_BLOCK_BYTES = 64 * 2 ** 20


class _ReferenceBlocks:
    """The references of a run, drawn a block of sequences at a time.

    A whole-sequence dinucleotide shuffle is sequential over the positions (a walk over
    ``L``), and an accelerator pays a host synchronisation per step of a loop, so a walk
    per batch (often a single sequence's ``n_shuffles`` references) would cost more than
    the attributions. One walk draws the references of every sequence of a block at once,
    about ``REFERENCE_BLOCK_BYTES`` of them (:func:`jablate.engine.stream.block_rows`: a
    power of two of batches, at least one, no more than the run's rounded up), with
    exactly the keys the compiled step would use, so results do not change. A run's blocks
    have one shape (the last one's rows padded by repeating a sequence), so one compiled
    program serves runs of many sizes.
    """

    def __init__(self, key, X, references_fn, n, per_step, place):
        N, A, L = X.shape
        self.size = engine.block_rows(per_step, N, n * A * L * jnp.dtype(X.dtype).itemsize,
                                      REFERENCE_BLOCK_BYTES)
        self.key, self.X, self.fn, self.n, self.N = key, X, references_fn, n, N
        self.place = place  # puts a block's rows where the run computes
        self.base, self.refs = None, None

    def covering(self, lo: int, hi: int):
        """``(refs, base)``: a block holding the references of the sequences ``lo`` to
        ``hi`` (a batch), and the index of its first sequence."""
        if self.base is None or lo < self.base or hi >= self.base + self.size:
            rows = engine.padded_rows(lo, self.size, self.N)
            rows = self.place(jnp.asarray(rows.astype(numpy.int32)))
            self.base = lo
            xs, = engine.take_rows((self.X,), rows)
            self.refs = _draw_block(self.key, xs, rows, self.fn, self.n)
        return self.refs, self.base


def _core(apply, n_shuffles, references_fn, rules, raw_outputs, chunk, target, hypothetical,
          params, x, key, refs, *args):
    """DeepLIFT/SHAP of one sequence ``x`` against ``refs`` (or references drawn from
    ``key``); ``target`` and ``hypothetical`` may be traced (one program serves them all)."""
    if refs is None:
        refs = _draw(references_fn, key, x, n_shuffles)
    refs = refs.astype(x.dtype)
    m, y, y_ref = _pairs(apply, rules, target, params, x, refs, args, chunk)
    differences = y - y_ref
    deltas = jnp.abs(differences - jnp.sum((x - refs) * m, axis=(1, 2)))
    scale = jnp.abs(y) + jnp.abs(y_ref)  # how large a rounding of the outputs can be
    # An output that is not finite (NaN, inf) explains nothing: a NaN made of a constant
    # has zero multipliers, and would read as "no base matters". Its deltas are NaN
    # (the warnings count them) and its attributions too.
    pairs = jnp.isfinite(y) & jnp.isfinite(y_ref)  # (R,): each pair's own
    finite = pairs.all()  # the sequence's attributions average over every pair
    nan = jnp.array(jnp.nan, m.dtype)
    deltas = jnp.where(pairs, deltas, nan)
    if raw_outputs:
        return jnp.where(finite, m, nan), deltas, differences, scale
    projected = m - jnp.sum(refs * m, axis=1, keepdims=True)
    attributions = projected.mean(axis=0)
    attributions = jnp.where(hypothetical, attributions, attributions * x)
    return jnp.where(finite, attributions, nan), deltas, differences, scale


def attribution_fn(apply: Callable, *, target: int, hypothetical: bool, n_shuffles: int,
                   references_fn_or_None: Optional[Callable],
                   additional_nonlinear_rules: Optional[dict] = None,
                   raw_outputs: bool = False,
                   reference_chunk: Optional[int] = None) -> Callable:
    """The pure DeepLIFT/SHAP attribution of one sequence.

    Parameters
    ----------
    apply: callable
        ``apply(params, X, *args)`` -> array (B, n_outputs, [1, ...]), pure JAX.
    target: int
        The output to explain, ``apply(...)[:, target]``.
    hypothetical: bool
        Return hypothetical contributions (every symbol at every position)
        instead of those of the observed symbols.
    n_shuffles: int
        References drawn per sequence when ``f`` is given none.
    references_fn_or_None: callable or None
        A key-first shuffle ``fn(key, x, start, end)`` of
        :mod:`jablate.functional`, drawing reference ``i`` of ``x`` from
        ``fold_in(key, i)``; None when references are always given.
    additional_nonlinear_rules: dict or None, optional
        As :func:`deep_lift_shap`'s.
    raw_outputs: bool, optional
        Return the multipliers of each pair (R, A, L) instead of attributions.
    reference_chunk: int or None, optional
        References differentiated at once (``lax.map`` over chunks); None: all.

    Returns
    -------
    f: callable
        ``f(params, x, key, refs, *args) -> (attributions, deltas)`` with ``x``
        (A, L), ``key`` a JAX key (used when ``refs`` is None), ``refs`` (R, A, L)
        or None, ``args`` one sequence's extra inputs (no batch axis);
        ``attributions`` (A, L) (or (R, A, L) multipliers with ``raw_outputs``)
        and ``deltas`` (R,) the convergence deltas
        ``|f(x) - f(ref) - sum((x - ref) * multipliers)|``. Pure: compose with
        ``jax.jit`` and ``jax.vmap``.

    Raises
    ------
    NotImplementedError
        When traced, for a model with operations that have no DeepLIFT rule.
    ValueError
        When traced, for a model that does not return one (B, n_outputs) array.
    """
    core = partial(_core, apply, int(n_shuffles), references_fn_or_None,
                   _rule_table(additional_nonlinear_rules), bool(raw_outputs), reference_chunk,
                   int(target), bool(hypothetical))

    def f(params, x, key, refs, *args):
        out, deltas, _, _ = core(params, x, key, refs, *args)
        return out, deltas

    return f


# --- the front door ----------------------------------------------------------------------

@jax.jit
def _batch(X, args, table, idx, base):
    """The step's inputs: sequences ``idx`` of ``X`` and ``args``, and their references
    ``table[idx - base]`` (all references of the run, or a block of them starting at
    sequence ``base``). A program of its own, so that the step's shapes do not depend on
    ``N``."""
    take = partial(jnp.take, indices=idx, axis=0)
    return take(X), tuple(map(take, args)), jnp.take(table, idx - base, axis=0)


def _step(core, dtype, params, x, args, refs, target, hypothetical):
    """Attributions of the sequences ``x`` (a batch), against their references ``refs``,
    of output ``target`` (hypothetical or not): both traced, so that one program serves
    every target."""
    x = cast_input(x, dtype)
    key = jax.random.key(0)
    return jax.vmap(lambda xi, ri, *a: core(target, hypothetical, params, xi, key, ri, *a))(
        x, refs, *args)


def _step_for(runner, settings, rules, dtype):
    """The compiled step of ``runner`` for ``settings`` (``_core``'s, with ``rules``
    third), cached on the runner, which holds the model only weakly."""
    cache = for_runner(runner, "deeplift.steps")
    key = (settings, _rules_key(rules), dtype)
    step = cache.get(key)
    if step is None:
        R, key_fn, raw, chunk = settings
        core = partial(_core, runner.apply, R, key_fn, rules, raw, chunk)
        step = cache[key] = jax.jit(partial(_step, core, dtype))
    return step


def _graph_for(runner, rules, params, x, args):
    """The analysed graph for these shapes (cached on the runner), for early errors."""
    sig = (jax.tree.structure(params), _rules_key(rules),
           tuple((s.shape, str(s.dtype)) for s in map(_spec, jax.tree.leaves((params, x, args)))))
    cache = for_runner(runner, "deeplift.graphs")
    if sig not in cache:
        cache[sig] = _trace(runner.apply, rules, params, x, args)
    return cache[sig]


def _check_one_hot(R, N, A, L, only_warn=False):
    if R.ndim != 4 or R.shape[0] != N or R.shape[2:] != (A, L) or R.shape[1] == 0:
        raise InputError(f"references must have shape (N, n_shuffles, A, L) = ({N}, -1, {A}, "
                         f"{L}) for X of shape ({N}, {A}, {L}); got {tuple(R.shape)}.")
    binary = bool(jnp.all((R == 0) | (R == 1)))
    if not binary or not bool(jnp.all(jnp.sum(R, axis=2) <= 1)):
        not_one_hot("references must be one-hot encoded along axis 2 (all-zero columns "
                    "allowed); pass a callable for other baselines.", only_warn)


# Elementwise activations of torch.nn outside tangermeme's table: tangermeme's _nonlinear on
# them asks for the rescale rule that jablate applies to what they lower to.
_ELEMENTWISE_EXTRA = ("Hardtanh", "Hardsigmoid", "Hardswish", "Hardshrink", "Tanhshrink",
                      "Softsign", "Threshold")


def _torch_ops(ops: Any, backend: Optional[str]) -> Optional[dict]:
    """tangermeme's ``additional_nonlinear_ops`` checked for ``backend``.

    With ``backend='torch'`` it goes to tangermeme unchanged. On the JAX path an
    entry is accepted when it asks for what jablate does anyway to the primitives
    the module lowers to: tangermeme's ``_nonlinear`` (the rescale rule) for an
    elementwise activation class of ``torch.nn`` (those of tangermeme's table and
    Hardtanh, Hardsigmoid, Hardswish, Hardshrink, Tanhshrink, Softsign, Threshold),
    its ``_maxpool`` for ``MaxPool1d``/``MaxPool2d`` and its ``_softmax`` for
    ``Softmax``. Such entries change nothing; anything else raises ``ValueError``.
    """
    if ops is None:
        return None
    if not isinstance(ops, dict):
        raise InputError("additional_nonlinear_ops must be None or a dict {torch module class: "
                         f"tangermeme rule}}; got {type(ops).__name__}.")
    if backend == "torch" or not ops:
        return ops
    utils = sys.modules.get("tangermeme._deep_lift_utils")
    accepted = {}
    if utils is not None:  # a tangermeme rule implies tangermeme (and torch) are loaded
        import torch
        built_in = utils._build_nonlinear_ops()
        for name in ("_nonlinear", "_maxpool", "_softmax"):
            rule = getattr(utils, name, None)
            if rule is not None:
                accepted[id(rule)] = {k for k, v in built_in.items() if v is rule}
        nonlinear = getattr(utils, "_nonlinear", None)
        if nonlinear is not None:
            accepted[id(nonlinear)] |= {getattr(torch.nn, n) for n in _ELEMENTWISE_EXTRA
                                        if hasattr(torch.nn, n)}
    for key, rule in ops.items():
        try:
            known = key in accepted.get(id(rule), ())
        except TypeError:  # an unhashable key
            known = False
        if not known:
            raise InputError(
                f"additional_nonlinear_ops {{{_name_of(key)}: {_name_of(rule)}}} cannot run on "
                "the JAX backend: jablate attributes the JAX primitives a torch module is "
                "translated to, not torch modules, and takes over only tangermeme's own "
                "_nonlinear rule for torch.nn's elementwise activations, _maxpool for "
                "MaxPool1d/MaxPool2d and _softmax for Softmax (which it applies already). "
                "Pass a JAX rule through additional_nonlinear_rules={primitive name: rule} "
                "(e.g. {'mul': jablate.attribution.deeplift.rescale_first} for bpnet-lite's "
                "_ProfileLogitScaling registered with _nonlinear), or run tangermeme on the "
                "torch module with backend='torch'.")
    return ops


def _name_of(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    return f"{module}.{name}" if name and module else repr(obj)


def _foreign_references(fn, X, n, random_state, N):
    """tangermeme's calls of a foreign ``references`` function: with an int seed,
    reference ``k`` of every sequence is drawn with seed ``random_state + k``."""
    inner = fn
    while isinstance(inner, partial):
        inner = inner.func
    if family(X) != "torch" and (getattr(inner, "__module__", None) or "").split(".")[0] == \
            "tangermeme":
        X = to_family(X, "torch")  # tangermeme's functions take torch tensors alone
    def repeated():  # each sequence n times, in X's family
        return X.repeat_interleave(n, dim=0) if family(X) == "torch" else \
            numpy.repeat(numpy.asarray(X), n, axis=0) if family(X) == "numpy" else \
            jnp.repeat(X, n, axis=0)

    if random_state is None:
        # one reference per row of the sequences repeated n times, as tangermeme asks
        # (a function whose n-th draw differs from its first, or that refuses n > 1 on a
        # sequence with a single arrangement, gives tangermeme's references)
        out = fn(repeated(), n=1)
        shape = tuple(getattr(out, "shape", ()))
        if len(shape) != 4 or shape[:2] != (N * n, 1):
            raise InputError(
                f"references(X, n=1), called as tangermeme calls it (X the {N} sequences, "
                f"each repeated n_shuffles={n} times), must return shape ({N * n}, 1, A, L); "
                f"got {shape}.")
        return out[:, 0].reshape((N, n) + shape[2:])
    tangermeme_ersatz = sys.modules.get("tangermeme.ersatz")
    if fn is getattr(tangermeme_ersatz, "dinucleotide_shuffle", None):
        seeds = [random_state + k for _ in range(N) for k in range(n)]
        out = fn(repeated(), n=1, random_state=seeds)
        return out.reshape(N, n, *out.shape[2:])
    rows = [[to_jax(fn(X[j:j + 1], n=1, random_state=random_state + k), "references")[0, 0]
             for k in range(n)] for j in range(N)]
    return jnp.stack([jnp.stack(r) for r in rows])


def _tangermeme_path(model, X, args, target, batch_size, references, key_fn, n_shuffles,
                     return_references, hypothetical, warning_threshold, rules,
                     print_convergence_deltas, raw_outputs, random_state, dtype, device,
                     verbose, inp, ops, only_warn):
    """``backend='torch'``: tangermeme's own deep_lift_shap on the torch module."""
    try:
        from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls
    except ImportError:
        raise InputError("backend='torch' runs tangermeme's deep_lift_shap, and tangermeme "
                         "is not installed; leave backend=None to translate the module to "
                         "JAX.") from None
    if rules:
        raise InputError("additional_nonlinear_rules are jaxpr rules and need the JAX "
                         "backend; with backend='torch' pass tangermeme's torch rules as "
                         "additional_nonlinear_ops.")
    bridge = torch_bridge()
    if key_fn is not None:
        key = jrandom.key_from(random_state)
        Xf = cast_input(inp.X, None)
        references = _draw_all(key, Xf, key_fn, n_shuffles)
        random_state = None
    if family(references) is not None:
        references = bridge.to_torch(to_jax(references, "references")).cpu()
    Xt = bridge.to_torch(inp.X).cpu() if inp.family != "torch" else X
    argst = None if args is None else tuple(
        a if family(a) == "torch" else bridge.to_torch(to_jax(a)) for a in args)
    out = tangermeme_dls(model, Xt, args=argst, target=target, batch_size=batch_size,
                         references=references, n_shuffles=n_shuffles,
                         return_references=return_references, hypothetical=hypothetical,
                         warning_threshold=warning_threshold,
                         additional_nonlinear_ops=ops,
                         print_convergence_deltas=print_convergence_deltas,
                         raw_outputs=raw_outputs, only_warn=only_warn,
                         dtype=torch_dtype(model, dtype, inp.family), device=device,
                         random_state=random_state, verbose=verbose)
    if return_references:
        return AttributionReferencesResult(*(to_family(o, inp.family) for o in out))
    return to_family(out, inp.family)


# --- on ablate's fast path ---------------------------------------------------------------

_ABLATE_KEYWORDS = ("target", "n_shuffles", "hypothetical", "references", "warning_threshold",
                    "additional_nonlinear_rules", "print_convergence_deltas", "raw_outputs",
                    "return_references", "random_state", "additional_nonlinear_ops",
                    "only_warn")


def _ablate_options(kwargs: dict) -> Optional[tuple]:
    """deep_lift_shap's keywords inside ``ablate``, checked; None for those only the
    materialised path gives (given or foreign references, raw outputs, references
    returned, deltas printed)."""
    for name in kwargs:
        if name not in _ABLATE_KEYWORDS:
            raise TypeError(f"deep_lift_shap() got an unexpected keyword argument {name!r}")
    target = check_int(kwargs.get("target", 0), "target")
    n_shuffles = check_int(kwargs.get("n_shuffles", 20), "n_shuffles", minimum=1)
    threshold = kwargs.get("warning_threshold", 0.001)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not threshold >= 0:
        raise InputError(f"warning_threshold must be a number >= 0; got {threshold!r}.")
    rules = _rule_table(kwargs.get("additional_nonlinear_rules"))
    _torch_ops(kwargs.get("additional_nonlinear_ops"), "jax")  # ablate's funcs run on JAX
    flags = {k: check_flag(kwargs.get(k, False), k) for k in (
        "only_warn", "hypothetical", "raw_outputs", "return_references",
        "print_convergence_deltas")}
    references = kwargs.get("references", dinucleotide_shuffle)
    shuffle = None if family(references) is not None else key_shuffle_of(references)
    if shuffle is None or any(flags[k] for k in ("raw_outputs", "return_references",
                                                 "print_convergence_deltas")):
        return None
    return (target, flags["hypothetical"], n_shuffles, shuffle.key_fn,
            shuffle.min_width, _rules_key(rules), float(threshold))


def _ablate_build(apply, params, x, args, options, exact):
    if not exact:
        return None  # one exact function
    target, hypothetical, R, key_fn, min_width, rules_key, threshold = options
    if x.shape[-1] < min_width:
        raise InputError(f"references: the shuffle needs sequences of at least {min_width} "
                         f"positions; X has {x.shape[-1]}.")
    rules = {name: rule.obj for name, rule in rules_key}
    graph = _checked(_trace(apply, rules, params, x, args), target)
    core = partial(_core, apply, R, key_fn, rules, False, None, target % graph.n_outputs,
                   hypothetical)

    def fn(params, x, key, *args, ahead=None):  # ahead: the references, drawn ahead
        attributions, deltas, differences, scale = core(params, x, key, ahead, *args)
        finite = jnp.isfinite(deltas)
        deltas, differences, scale = (jnp.where(finite, v, 0) for v in
                                      (deltas, differences, scale))
        return attributions, jnp.stack([jnp.sum(deltas > threshold), jnp.sum(deltas),
                                        jnp.sum(jnp.abs(differences)), jnp.max(deltas),
                                        jnp.sum(scale), jnp.sum(~finite)])
    return fn


def _ablate_check(sums, maxima, count, options):
    R, threshold = options[2], options[-1]
    pairs = count * R
    _warn_not_finite(int(sums[5]), pairs)
    finite = max(1, pairs - int(sums[5]))
    _warn_summary(int(sums[0]), pairs, float(maxima[3]), float(sums[1]) / finite,
                  float(sums[2]) / finite, threshold, numpy.asarray(maxima).dtype.name,
                  float(sums[4]) / finite)


@dataclass(frozen=True)
class _References:
    """The ``n`` references of each sequence of a block of items, drawn ahead of the steps,
    as :func:`_core` draws them from the sequence and its key: ``(xs (B, A, L), keys (B,))
    -> (B, n, A, L)``. A value (hashed by its fields), so that one compiled program serves
    every run."""

    references_fn: Callable
    n: int

    def __call__(self, xs, keys):
        return _draw_flat(self.references_fn, keys, xs, self.n)


def _ablate_ahead(options):
    return _References(options[3], options[2])


#: How ``ablate`` runs ``deep_lift_shap`` as its ``func`` (the value it carries).
DEEP_LIFT_SHAP = SequenceFunc(
    "deep_lift_shap", _ablate_options, _ablate_build, jrandom.key_from, _ablate_check,
    per_step=lambda batch_size, options: max(1, batch_size // options[2]),
    ahead=_ablate_ahead)


@carries(DEEP_LIFT_SHAP)
def deep_lift_shap(model: Any, X: Any, args: Optional[Any] = None, target: int = 0,
                   batch_size: int = 32, references: Any = dinucleotide_shuffle,
                   n_shuffles: int = 20, return_references: bool = False,
                   hypothetical: bool = False, warning_threshold: float = 0.001,
                   additional_nonlinear_ops: Optional[dict] = None,
                   print_convergence_deltas: bool = False, raw_outputs: bool = False,
                   only_warn: bool = False, dtype: Any = None, device: Any = None,
                   random_state: Any = None, verbose: bool = False, *,
                   additional_nonlinear_rules: Optional[dict] = None,
                   backend: Backend = None) -> Any:
    """DeepLIFT/SHAP attributions, as tangermeme's ``deep_lift_shap``, on JAX.

    For every sequence and each of its references, the model runs on both and
    DeepLIFT's multipliers replace the derivatives of its nonlinear operations
    (the rescale rule for elementwise functions, tangermeme's rules for max
    pooling and softmax, the midpoint rule for products; see
    :mod:`jablate.attribution.deeplift`); ``jax.grad`` of output ``target`` then gives the
    multipliers. Attributions are ``(X - reference) * multipliers`` projected
    onto the one-hot encoding (tangermeme's ``hypothetical_attributions``) and
    averaged over the references. Each batch is one ``jit``-compiled program
    (compiled once per shape, the last batch padded), with the references drawn
    inside it.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable or torch.nn.Module
        Maps a batch (B, A, L) (plus ``*args``) to one array (B, n_outputs),
        optionally followed by axes of length 1 (wrap multi-output models, e.g.
        with bpnet-lite's ``CountWrapper`` or ``ProfileWrapper``). A torch module
        is translated to JAX (``jablate.bridges.torch.translate``) unless
        ``backend='torch'``. Run in evaluation mode, as :func:`jablate.predict`
        runs it (an nnx module through an eval view; the module keeps its
        mode).
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences; all-zero columns (unknown bases) are allowed.
    args: tuple or list of arrays or None, optional
        Extra model inputs with N rows each, the same for a sequence and its
        references. Default is None.
    target: int, optional
        The output to explain, ``model(X)[:, target]``. Default is 0.
    batch_size: int, optional
        Sequence-reference pairs per step, as tangermeme counts them: each step
        runs ``batch_size // n_shuffles`` sequences with all their references
        (or one sequence in chunks of ``batch_size`` references). The references
        and the arithmetic do not depend on it; another batch shape is another
        compiled program, so results may differ by float rounding (4.8e-7 on
        attributions of about 2, float32). Default is 32.
    references: callable or array, optional
        ``jablate.dinucleotide_shuffle`` (default) or ``jablate.shuffle`` (or
        their key-first forms in :mod:`jablate.functional`): drawn inside the
        compiled step, reference ``i`` of sequence ``j`` from
        ``fold_in(fold_in(key, j), i)``, so that they equal
        ``jablate.dinucleotide_shuffle(X, n=n_shuffles, random_state=key)``. An
        array of shape (N, R, A, L), one-hot (all-zero columns allowed): used as
        given, ``n_shuffles`` ignored. A ``functools.partial`` of
        ``jablate.dinucleotide_shuffle`` or ``jablate.shuffle`` binding nothing
        (or ``verbose``) is drawn as they are; one binding more is called as any
        other callable, with a ``PartialFallbackWarning`` (a partial of a
        key-first form binding anything is refused). Any other callable (e.g. tangermeme's
        ``dinucleotide_shuffle``) is called on the host in ``X``'s family, as
        tangermeme calls it: ``references(X_repeated, n=1)[:, 0]``, each sequence
        repeated ``n_shuffles`` times, or with an int ``random_state`` reference
        ``k`` of each sequence with seed ``random_state + k``; its output (N, R, A,
        L) is not checked for one-hotness (a baseline such as 0.25 everywhere is
        allowed).
    n_shuffles: int, optional
        References per sequence for a callable ``references``. Default is 20.
    return_references: bool, optional
        Also return the references used. Default is False.
    hypothetical: bool, optional
        Return hypothetical contributions of every symbol at every position;
        otherwise they are multiplied by ``X``, leaving those of the observed
        symbols. Default is False.
    warning_threshold: float, optional
        A ``RuntimeWarning`` is issued when a pair's convergence delta
        ``|f(x) - f(ref) - sum((x - ref) * multipliers)|`` exceeds it, and
        another when the mean delta exceeds 1% of the mean ``|f(x) - f(ref)|``
        (as tangermeme, once per call rather than per batch). Default is 0.001.
    additional_nonlinear_ops: dict or None, optional
        tangermeme's rules for torch modules, ``{torch module class: hook}``.
        With ``backend='torch'`` they go to tangermeme unchanged. On the JAX
        path only entries that ask for what jablate already does to the
        primitives a translated module lowers to are accepted (and change
        nothing): tangermeme's ``_nonlinear`` (rescale) for an elementwise
        activation of ``torch.nn`` (ReLU, ELU, GELU, SiLU, Sigmoid, Tanh,
        Softplus, Hardtanh, ...), its ``_maxpool`` for ``MaxPool1d`` and
        ``MaxPool2d``, its ``_softmax`` for ``Softmax``. Any other entry (a
        custom torch hook, ``integrated_gradients_op``, ``_nonlinear`` for a
        module that is not an elementwise activation, ...) raises
        ``ValueError``: give a JAX rule through ``additional_nonlinear_rules``
        or use ``backend='torch'``. Default None.
    print_convergence_deltas: bool, optional
        Print the convergence deltas of each batch's pairs. Default is False.
    raw_outputs: bool, optional
        Return the multipliers of each pair, (N, R, A, L), instead of
        attributions. Default is False.
    only_warn: bool, optional
        tangermeme's: when ``X`` or given ``references`` are not one-hot (values
        other than 0 and 1, or a column summing above 1), warn (``UserWarning``)
        and go on instead of raising ``ValueError``. Shapes are still checked.
        It does not silence the convergence-delta warnings. Default False.
    dtype: str, dtype or None, optional
        The dtype the model runs in, spelled as JAX, NumPy or torch spell it
        (``'float16'``, ``jnp.bfloat16``, ``numpy.float32``, ``torch.float16``);
        default keeps a float ``X`` and casts others to float32. float64 needs
        JAX's 64-bit mode (``jax.config.update("jax_enable_x64", True)`` before
        any JAX work, or ``JAX_ENABLE_X64=1``); without it a ``ValueError``
        says so rather than computing in float32. With ``backend='torch'`` it is
        tangermeme's autocast dtype (float64 needs a float64 module). A torch module
        translated to JAX (the default) runs in ``dtype``, its floating weights cast to
        it, and by default in its own dtype (its first parameter's, as tangermeme): a
        float16 module in float16, a float64 one in float64 (64-bit mode needed).
    device: str, jax.Device or None, optional
        The JAX device; default JAX's default device.
    random_state: JAX key, int, numpy.random.RandomState or None, optional
        The stream of jablate's own references (see ``references``); an int
        seeds ``jax.random.key``. For a foreign ``references`` callable an int
        or None, as tangermeme. None: fresh entropy. Default is None.
    verbose: bool, optional
        A progress bar over batches. Default is False.
    additional_nonlinear_rules: dict or None, optional, keyword-only
        Rules for primitives (by name, e.g. ``"sin"``) that have none, or that
        replace a built-in one. A value is either ``jablate.attribution.deeplift.rescale``,
        which declares an elementwise nonlinearity (rescaled as part of the
        elementwise function it belongs to), or a function
        ``rule(fn, primals, references, output, reference_output, cotangent)``
        called in the backward pass of each equation of that primitive that is
        nonlinear in the input: ``fn(*operands)`` is the equation, ``primals``
        and ``references`` its operands on the input and reference paths (a
        reference None for an operand that does not depend on the input),
        ``output``/``reference_output`` its results and ``cotangent`` the
        multiplier of its output; it returns one cotangent per operand (None
        where there is none). ``jablate.attribution.deeplift.rescale_first`` for ``"mul"``
        reproduces bpnet-lite's treatment of ``ProfileWrapper``. Default None.
    backend: None, 'jax' or 'torch', optional, keyword-only
        For a torch module: None or 'jax' translates it to JAX; 'torch' runs
        tangermeme's ``deep_lift_shap`` (jablate's references are drawn and
        passed to it). Default None.

    Returns
    -------
    attributions: array, shape=(N, A, L)
        Or the multipliers (N, R, A, L) with ``raw_outputs=True``. In ``X``'s
        family (torch tensors on the CPU for torch input).
    references: array, shape=(N, R, A, L)
        With ``return_references=True``, as
        ``AttributionReferencesResult(attributions, references)``.

    Raises
    ------
    ValueError
        Before the model runs: bad ``X``, ``args``, ``target`` (not an index of
        the model's outputs), ``batch_size``, ``n_shuffles``, ``references``
        (wrong shape, not one-hot, or sequences shorter than 3 for the
        dinucleotide shuffle), ``random_state``, ``additional_nonlinear_rules``,
        ``backend``, ``device``, ``dtype`` (also float64 without JAX's 64-bit
        mode), ``additional_nonlinear_ops`` (an entry the JAX path cannot honour)
        or ``only_warn``, or a model that does not return one (B, n_outputs)
        array.
    NotImplementedError
        For a model with operations on input-dependent values that have no
        DeepLIFT rule; the message names all of them.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n_shuffles = check_int(n_shuffles, "n_shuffles", minimum=1)
    target = check_int(target, "target")
    if isinstance(warning_threshold, bool) or not isinstance(warning_threshold, numbers.Real) \
            or not warning_threshold >= 0:
        raise InputError(f"warning_threshold must be a number >= 0; got {warning_threshold!r}.")
    rules = _rule_table(additional_nonlinear_rules)
    only_warn = check_flag(only_warn, "only_warn")
    hypothetical = check_flag(hypothetical, "hypothetical")
    raw_outputs = check_flag(raw_outputs, "raw_outputs")
    return_references = check_flag(return_references, "return_references")
    print_convergence_deltas = check_flag(print_convergence_deltas, "print_convergence_deltas")
    check_backend(backend)
    ops = _torch_ops(additional_nonlinear_ops, backend)
    inp = inputs(X, args, only_warn=only_warn)
    N, A, L = inp.X.shape

    given = family(references) is not None
    shuffle = None if given else key_shuffle_of(references)
    key_fn = None if shuffle is None else shuffle.key_fn
    if shuffle is not None and L < shuffle.min_width:
        raise InputError(f"references: {shuffle.name} needs sequences of at least "
                         f"{shuffle.min_width} positions; X has {L}.")
    if key_fn is None and not given and not callable(references):
        raise InputError("references must be a callable (such as jablate.dinucleotide_shuffle)"
                         f" or an array (N, n_shuffles, A, L); got {type(references).__name__}.")
    if given:
        table = to_jax(references, "references")
        _check_one_hot(table, N, A, L, only_warn)
    if key_fn is not None:
        key = jrandom.key_from(random_state)
    elif not given and random_state is not None and (
            isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise InputError("random_state must be an int or None for a references function "
                         f"that is not jablate's; got {type(random_state).__name__}.")

    if backend is None and is_torch_module(model):
        backend = "jax"
    if backend == "torch" and is_torch_module(model):
        return _tangermeme_path(model, X, args, target, batch_size, references, key_fn,
                                n_shuffles, return_references, hypothetical, warning_threshold,
                                rules, print_convergence_deltas, raw_outputs, random_state,
                                dtype, device, verbose, inp, ops, only_warn)
    inp, bound, _ = prepare(model, inp, None, device, dtype, backend, what="deep_lift_shap")
    runner, params = bound.runner, bound.params
    x_dtype = input_dtype(inp.X.dtype, bound.dtype)
    example_x = jax.ShapeDtypeStruct((A, L), x_dtype)
    example_args = tuple(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in inp.args)
    graph = _checked(_graph_for(runner, rules, params, example_x, example_args), target)

    if key_fn is None and not given:
        table = to_jax(_foreign_references(references, X, n_shuffles, random_state, N),
                       "references")
        if table.ndim != 4 or table.shape[:1] + table.shape[2:] != (N, A, L):
            raise InputError(f"references(X, n={n_shuffles}) must return "
                             f"shape ({N}, {n_shuffles}, {A}, {L}); got {tuple(table.shape)}.")
    elif key_fn is not None and return_references:
        table = _draw_all(key, inp.X, key_fn, n_shuffles).astype(x_dtype)
    draw = not (given or key_fn is None or return_references)
    R = n_shuffles if draw else table.shape[1]
    # jablate._core.placement's policy: every device of the run, each step's sequences
    # sharded over them (the inputs, parameters and references replicated)
    where = engine.Devices(bound, inp.X)
    params, X_, args_ = where.replicate((params, inp.X, inp.args))

    # a run smaller than a batch is padded to a power of two: few programs for many N
    per_step = where.size(max(1, batch_size // R), N)
    chunk = None if batch_size >= R else batch_size
    settings = (R, key_fn, bool(raw_outputs), chunk)
    step = _step_for(runner, settings, rules, bound.dtype)
    chosen = (jnp.int32(target % graph.n_outputs), jnp.bool_(hypothetical))
    if draw:  # jablate's references, drawn for a block of sequences at a time
        blocks = _ReferenceBlocks(where.replicate(key), X_, key_fn, n_shuffles, per_step,
                                  where.replicate)
    else:
        table = where.replicate(table)

    def run(items, lo):  # items: a padded batch of sequence indices (engine.Plan's fields)
        # the plan's items are the sequences in order: this batch holds lo .. lo + per_step
        refs, base = blocks.covering(lo, min(lo + per_step, N) - 1) if draw else (table, 0)
        return step(params, *_batch(X_, args_, refs, items[0], base), *chosen)

    plan = engine.Plan.build(numpy.arange(N), 0, 0)
    job = Job(plan, run, per_step, where.shard, progress=verbose, desc="deep_lift_shap",
              unit="sequence")
    attributions, deltas, differences, scale = execute(
        job, _Deltas(bool(print_convergence_deltas)))
    _warn_deltas(deltas, differences, scale, warning_threshold)
    result = to_family(attributions, inp.family)
    if return_references:
        return AttributionReferencesResult(result, to_family(jnp.asarray(table), inp.family))
    return result


def _checked(graph: _Graph, target: int) -> _Graph:
    """``graph``, after checking ``target`` against its outputs and that every nonlinear
    primitive has a rule (errors before any model runs)."""
    if not -graph.n_outputs <= target < graph.n_outputs:
        raise InputError(f"target must index the model's {graph.n_outputs} output(s); "
                         f"got {target}.")
    if graph.unknown:
        raise _unknown_error(graph.unknown)
    return graph


def _rules_key(rules: dict) -> tuple:
    """A hashable key for a rule table (rules compared by identity)."""
    return tuple(sorted((name, _Identity(rule)) for name, rule in rules.items()))


class _Identity:
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.obj is self.obj

    def __lt__(self, other):
        return id(self.obj) < id(other.obj)

    def __hash__(self):
        return id(self.obj)


class _Deltas(Collect):
    """The sink of :func:`deep_lift_shap`'s job: every batch's attributions (or
    multipliers), convergence deltas and output differences, copied to the host one
    step behind (:class:`jablate.engine.executor.Collect`); with ``show``, each batch's deltas
    are printed as it arrives (``print_convergence_deltas``).

    Parameters
    ----------
    show: bool
        Print the convergence deltas of each batch's valid pairs, flattened.
    """

    def __init__(self, show: bool):
        super().__init__()
        self.show = show

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        if self.show:
            print(numpy.asarray(ys[1][:valid]).reshape(-1))
        super().add(ys, lo, valid)


def _warn_deltas(deltas, differences, scale, threshold):
    deltas = numpy.asarray(deltas)
    finite = numpy.isfinite(deltas)
    _warn_not_finite(int(deltas.size - finite.sum()), deltas.size,
                     int((~finite.reshape(len(deltas), -1)).any(axis=1).sum()), len(deltas))
    if not finite.any():
        return
    _warn_summary(int((deltas[finite] > threshold).sum()), deltas.size,
                  float(deltas[finite].max()), float(deltas[finite].mean()),
                  float(numpy.abs(numpy.asarray(differences)[finite]).mean()), threshold,
                  deltas.dtype.name, float(numpy.mean(numpy.asarray(scale)[finite])))


def _warn_not_finite(n_pairs, pairs, n_sequences=None, sequences=None):
    """A warning that the model's output is not finite (NaN, inf) for ``n_pairs`` of
    ``pairs`` sequence-reference pairs (of ``n_sequences`` of ``sequences`` sequences):
    their attributions are NaN."""
    if not n_pairs:
        return
    which = (" (the attributions of the items holding them are NaN)" if n_sequences is None
             else f" ({n_sequences} of {sequences} sequences, whose attributions are NaN)")
    warn_not_finite(f"{n_pairs} of {pairs} sequence-reference pairs{which}",
                    "nothing explains it")


def _warn_summary(n_high, n_pairs, largest, mean_delta, mean_difference, threshold,
                  dtype_name="float32", mean_scale=0.0):
    """tangermeme's convergence warnings, from summaries of the deltas of ``n_pairs``
    sequence-reference pairs computed in ``dtype_name``; ``mean_scale`` the mean of
    ``|f(x)| + |f(ref)|``. Deltas within the outputs' rounding (16 epsilon of that scale)
    say nothing of the rules, however small the output differences are (references that
    barely change the output): no relative warning then."""
    if n_high:
        warnings.warn(f"Convergence deltas too high: {n_high} of {n_pairs} "
                      f"sequence-reference pairs exceed warning_threshold={threshold} (largest "
                      f"{largest:.3g}).", RuntimeWarning, stacklevel=outside_stacklevel())
    eps = resolution(dtype_name) if dtype_kind(dtype_name) == "f" else 0.0
    relative = mean_delta / max(mean_difference, 1e-12)
    if relative > 0.01 and mean_delta > 16 * eps * mean_scale:
        rounding = (f", or the model's {dtype_name} arithmetic (epsilon {eps:.2g}) rounds "
                    "its outputs by that much" if eps > resolution("float32") else "")
        warnings.warn(f"Convergence deltas are {relative:.1%} of the output differences: an "
                      "operation of the model is not attributed exactly (see "
                      f"additional_nonlinear_rules){rounding}.", RuntimeWarning,
                      stacklevel=outside_stacklevel())
