"""A model's jaxpr as a flat list of equations, for the incremental engine.

:func:`flatten` inlines the calls that only wrap another jaxpr (``jit``/``pjit``,
``custom_jvp_call``, ``custom_vjp_call``, ``closed_call``, ``remat``), so that the
analysis in :mod:`jablate.incremental.analysis` sees ``relu`` as the ``max`` it is. Variables
become integers; literals and closed-over constants become :class:`Lit`. Only the
forward computation is kept: custom derivative rules are dropped.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from jax.extend import core as jcore

#: Primitives that call one jaxpr on their operands and return its results.
CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                   "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "remat2",
                   "checkpoint", "custom_lin"})

#: Primitives applied position by position to operands of one shape (or scalars).
ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp
    clz conj convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp
    exp2 expm1 floor ge gt igamma igammac imag integer_pow is_finite le lgamma log log1p
    logistic lt max min mul ne neg nextafter not or polygamma population_count pow real
    reduce_precision rem round rsqrt select_n shift_left shift_right_arithmetic
    shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh xor zeta
""".split())

REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                        "reduce_or", "reduce_xor", "argmax", "argmin"})


class Lit:
    """A value known when the model is traced: a literal or a closed-over constant.
    Hashed by identity, so that it can key the analysis' tables."""

    __slots__ = ("value", "aval")

    def __init__(self, value: Any, aval: Any):
        self.value, self.aval = value, aval


class Node(NamedTuple):
    """One equation: ``outputs = primitive.bind(*inputs, **params)``.

    ``inputs`` holds variable ids (int) or :class:`Lit`; ``outputs`` variable ids.
    """

    index: int
    primitive: Any
    params: dict
    inputs: tuple
    outputs: tuple

    @property
    def name(self) -> str:
        return self.primitive.name

    def bind(self, *values, **changes):
        """Apply the primitive to ``values``, with ``changes`` to its parameters."""
        params = self.primitive.get_bind_params({**self.params, **changes})
        out = self.primitive.bind(*values, **params)
        return list(out) if self.primitive.multiple_results else [out]


class Graph(NamedTuple):
    """A flat jaxpr: ``nodes`` in order, the ``aval`` of every variable id, the ids of
    the jaxpr's inputs and its outputs (ids or :class:`Lit`)."""

    nodes: tuple
    avals: dict
    inputs: tuple
    outputs: tuple


def call_body(eqn):
    """The jaxpr a call-like equation runs on its operands, with its constants."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if isinstance(inner, jcore.ClosedJaxpr):
            return inner.jaxpr, inner.consts
        if isinstance(inner, jcore.Jaxpr):
            return inner, ()
    return None


def flatten(closed: Any) -> Graph:
    """Flatten ``closed`` (a ``jax.extend.core.ClosedJaxpr``) into a :class:`Graph`."""
    avals, nodes = {}, []

    def fresh(aval):
        avals[len(avals)] = aval
        return len(avals) - 1

    def walk(jaxpr, consts, inputs):
        env = {}
        for var, value in zip(jaxpr.constvars, consts):
            env[var] = Lit(value, var.aval)
        for var, ref in zip(jaxpr.invars, inputs):
            env[var] = ref

        def read(atom):
            return Lit(atom.val, atom.aval) if isinstance(atom, jcore.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            ins = tuple(read(a) for a in eqn.invars)
            inner = call_body(eqn) if eqn.primitive.name in CALLS else None
            if inner is not None and len(inner[0].invars) == len(ins) \
                    and len(inner[0].outvars) == len(eqn.outvars):
                outs = walk(inner[0], inner[1], ins)
                for var, ref in zip(eqn.outvars, outs):
                    env[var] = ref
                continue
            outs = tuple(fresh(v.aval) for v in eqn.outvars)
            nodes.append(Node(len(nodes), eqn.primitive, dict(eqn.params), ins, outs))
            for var, ref in zip(eqn.outvars, outs):
                env[var] = ref
        return tuple(read(a) for a in jaxpr.outvars)

    inputs = tuple(fresh(v.aval) for v in closed.jaxpr.invars)
    outputs = walk(closed.jaxpr, closed.consts, inputs)
    return Graph(tuple(nodes), avals, inputs, outputs)


def aval_of(graph: Graph, ref) -> Any:
    return ref.aval if isinstance(ref, Lit) else graph.avals[ref]


def flops(graph: Graph, node: Node) -> int:
    """Floating-point operations of ``node`` at its traced shapes (multiply-add = 2).

    Convolutions, products, reductions and elementwise ops are counted; moving
    data (slices, pads, transposes, gathers) counts zero.
    """
    out = graph.avals[node.outputs[0]] if node.outputs else None
    size = math.prod(out.shape) if out is not None else 0
    shapes = [aval_of(graph, r).shape for r in node.inputs]
    p = node.params
    if node.name == "conv_general_dilated":
        rhs_spec = p["dimension_numbers"].rhs_spec
        rhs = shapes[1]
        taps = math.prod(rhs[d] for d in rhs_spec[2:])
        return 2 * size * taps * rhs[rhs_spec[1]]
    if node.name == "dot_general":
        (lc, _), _ = p["dimension_numbers"]
        return 2 * size * math.prod(shapes[0][d] for d in lc)
    if node.name.startswith("reduce_window"):
        return size * math.prod(p["window_dimensions"])
    if node.name in REDUCTIONS or node.name.startswith("cum"):
        return math.prod(shapes[0])
    if node.name in ELEMENTWISE:
        return size
    return 0


def nbytes(aval: Any) -> int:
    return math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
