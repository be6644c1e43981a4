"""The graph interpreter of the torch -> JAX translator.

A ``torch.export`` graph becomes a list of :class:`Step`\\ s, one per ``call_function``
node: the JAX implementation from the op table, its schema arguments bound by name, and
references (:class:`Ref`) to the values of earlier nodes. :func:`evaluate` runs the steps
on JAX values. Decisions that depend only on the traced shapes and dtypes (a factory's
dtype, which dims a ``squeeze`` removes) are taken once, here, by :func:`prepare`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping

import torch

# The families of ops register themselves in OPS when imported.
from jablate.bridges import (  # noqa: F401
    _aten_attention,
    _aten_conv_pool,
    _aten_elementwise,
    _aten_factory,
    _aten_linalg,
    _aten_norm,
    _aten_recurrent,
    _aten_reduce,
    _aten_shape,
)
from jablate.bridges._aten_table import OPS, jax_dtype

# Arguments that only concern torch's memory and devices.
_IGNORED_ARGS = frozenset({"layout", "device", "pin_memory", "memory_format", "non_blocking",
                           "copy", "cudnn_enable", "cudnn_enabled", "implicit"})

_FACTORIES = frozenset({"full", "zeros", "ones", "empty", "empty_strided", "empty_permuted",
                        "arange", "linspace", "eye", "scalar_tensor"})

_PY_OPS = {
    operator.getitem: operator.getitem, operator.add: operator.add, operator.sub: operator.sub,
    operator.mul: operator.mul, operator.floordiv: operator.floordiv,
    operator.truediv: operator.truediv, operator.mod: operator.mod, operator.pow: operator.pow,
    operator.neg: operator.neg, operator.pos: operator.pos, operator.abs: operator.abs,
    operator.eq: operator.eq, operator.ne: operator.ne, operator.lt: operator.lt,
    operator.le: operator.le, operator.gt: operator.gt, operator.ge: operator.ge,
    operator.and_: operator.and_, operator.or_: operator.or_, operator.not_: operator.not_,
    math.ceil: math.ceil, math.floor: math.floor, math.sqrt: math.sqrt, math.trunc: math.trunc,
    torch.sym_float: float, torch.sym_int: int, torch.sym_max: max, torch.sym_min: min,
    torch.sym_not: operator.not_,
}


class Ref:
    """A reference to the value of an earlier graph node."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _template(arg):
    return torch.fx.node.map_aggregate(
        arg, lambda a: Ref(a.name) if isinstance(a, torch.fx.Node) else
        jax_dtype(a) if isinstance(a, torch.dtype) else a)


def _resolve(t, env):
    if isinstance(t, Ref):
        return env[t.name]
    if isinstance(t, list):
        return [_resolve(a, env) for a in t]
    if isinstance(t, tuple):
        return tuple(_resolve(a, env) for a in t)
    if isinstance(t, dict):
        return {k: _resolve(v, env) for k, v in t.items()}
    return t


def op_key(target: object) -> str | None:
    """The op-table name of a node target (``"py"`` for Python arithmetic on sizes), or
    None when the table has no entry for it."""
    if isinstance(target, torch._ops.OpOverload):
        # jablate's own ops (jablate::lstm, ...) share the names of the ATen ops they stand for
        if target.namespace in ("aten", "jablate") and target.overloadpacket.__name__ in OPS:
            return target.overloadpacket.__name__
        return None
    return "py" if target in _PY_OPS else None


def op_name(target: object) -> str:
    """A readable name of a node target, e.g. ``aten.conv1d.default``."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"


def unsupported(graph: torch.fx.Graph) -> tuple[list[str], bool]:
    """The ops of `graph` outside the table, and whether the graph mutates anything.

    Parameters
    ----------
    graph: torch.fx.Graph
        An exported ATen graph.

    Returns
    -------
    missing: list of str
        Sorted names of the ops (and module or method calls) that cannot be lowered.
    mutates: bool
        True when some node is an in-place or otherwise mutating op.
    """
    missing, mutates = set(), False
    for node in graph.nodes:
        if node.op in ("call_module", "call_method"):
            missing.add(f"{node.op}:{node.target}")
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable:
            mutates = True
        if op_key(node.target) is None:
            missing.add(op_name(node.target))
    return sorted(missing), mutates


def bind(target: torch._ops.OpOverload, args: Iterable, kwargs: Mapping) -> dict:
    """Every schema argument of an ATen overload by name, defaults filled in.

    Arguments that only concern torch's memory layout and devices are dropped.
    """
    bound = {}
    positional = [a for a in target._schema.arguments if not a.kwarg_only]
    for a, v in zip(positional, args):
        bound[a.name] = v
    for a in target._schema.arguments:
        if a.name in kwargs:
            bound[a.name] = kwargs[a.name]
        elif a.name not in bound and a.has_default_value():
            bound[a.name] = a.default_value
        elif a.name not in bound:
            bound[a.name] = None
    return {k: v for k, v in bound.items() if k not in _IGNORED_ARGS}


def _shape(value):
    return tuple(value.shape) if value is not None and hasattr(value, "shape") else None


def meta_shape(node: object) -> tuple | None:
    """The traced shape of an fx node (ints, and SymInts for symbolic dims), or None."""
    return _shape(node.meta.get("val")) if isinstance(node, torch.fx.Node) else None


def prepare(name: str, kwargs: dict, out_val: object = None,
            first_shape: tuple | None = None) -> dict:
    """Decisions made once from the traced shapes and dtypes.

    Parameters
    ----------
    name: str
        The op-table name.
    kwargs: dict
        The bound schema arguments (from :func:`bind`); updated and returned.
    out_val: torch.Tensor, optional
        The traced output (a fake tensor from the graph's meta, or a real one): its dtype
        becomes the dtype of a factory that was given none.
    first_shape: tuple, optional
        The traced shape of the op's first argument: ``squeeze`` removes only the dims
        that are statically 1 there (never a symbolic batch dimension).

    Returns
    -------
    kwargs: dict
    """
    if name in _FACTORIES and kwargs.get("dtype") is None and hasattr(out_val, "dtype"):
        kwargs["dtype"] = out_val.dtype
    if name == "squeeze" and first_shape is not None:
        dim = kwargs.get("dim") if first_shape else []  # a 0-d tensor stays as it is
        dims = range(len(first_shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        kwargs["dim"] = [d for d in dims if isinstance(first_shape[d], int)
                         and first_shape[d] == 1]
    return kwargs


class Step:
    """One node of the graph: ``env[out] = fn(*args, **kwargs)`` with references resolved."""

    __slots__ = ("out", "fn", "args", "kwargs", "label")

    def __init__(self, out: str, fn: Callable, args: tuple, kwargs: dict, label: str):
        self.out, self.fn, self.args, self.kwargs, self.label = out, fn, args, kwargs, label


def lower(target: object, args: tuple, kwargs: Mapping, out_val: object = None,
          first_shape: tuple | None = None) -> tuple[Callable, tuple, dict]:
    """The JAX implementation of one call and its arguments (torch dtypes as JAX dtypes).

    Parameters
    ----------
    target: torch._ops.OpOverload or a Python operator
        The node's target; :func:`op_key` must know it.
    args, kwargs:
        The node's arguments (fx nodes, tensors or constants).
    out_val, first_shape:
        As for :func:`prepare`.

    Returns
    -------
    fn: callable
    args: tuple
        Positional arguments (Python operators only; ATen ops take everything by name).
    kwargs: dict
    """
    key = op_key(target)
    if key is None:
        raise NotImplementedError(f"no JAX translation of {op_name(target)}")
    if key == "py":
        return _PY_OPS[target], _template(tuple(args)), _template(dict(kwargs))
    bound = prepare(key, bind(target, args, kwargs), out_val, first_shape)
    return OPS[key], (), _template(bound)


def compile_graph(graph: torch.fx.Graph) -> list[Step]:
    """The steps that evaluate the ``call_function`` nodes of `graph`, in order."""
    steps = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        first = node.args[0] if node.args else None
        fn, args, kwargs = lower(node.target, node.args, node.kwargs, node.meta.get("val"),
                                 meta_shape(first))
        steps.append(Step(node.name, fn, args, kwargs, op_name(node.target)))
    return steps


def evaluate(steps: Iterable[Step], env: dict, graph_name: str) -> dict:
    """Run `steps` on `env` (node name -> value, holding the placeholders); returns `env`.

    An exception raised by an op gets a note naming the node and `graph_name`.
    """
    for step in steps:
        try:
            env[step.out] = step.fn(*_resolve(step.args, env), **_resolve(step.kwargs, env))
        except Exception as e:
            if hasattr(e, "add_note"):  # Python >= 3.11
                e.add_note(f"(while evaluating node '{step.out}', {step.label}, of the "
                           f"graph translated from {graph_name})")
            raise
    return env
