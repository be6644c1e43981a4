"""torch.export programs saved at a fixed batch size, run on any batch.

Shared by :mod:`jablate.bridges.torch` (which re-exports :func:`any_batch`,
:func:`exported_batch` and :class:`StaticBatchModule`) and
:mod:`jablate.bridges.torch_export`; it imports neither, so the two import it one way.
"""

import torch

from jablate._core.errors import InputError

__all__ = ["any_batch", "exported_batch", "StaticBatchModule"]


def _traced_shape(node):
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def exported_batch(module: torch.nn.Module) -> int | None:
    """The batch size a ``torch.export`` program was exported at, when it is fixed.

    Parameters
    ----------
    module: torch.nn.Module
        Typically ``torch.export.load(path).module()``.

    Returns
    -------
    batch: int or None
        The first dimension of the program's first input as traced, when it is a plain
        integer (``torch.export.export(model, (torch.zeros(8, 4, L),))`` gives 8); None
        when it is symbolic (exported with ``dynamic_shapes``) or `module` is not an
        exported graph. A :class:`StaticBatchModule` answers for the program it wraps.
    """
    if isinstance(module, StaticBatchModule):
        return module.batch
    if not isinstance(module, torch.fx.GraphModule):
        return None
    first = next((n for n in module.graph.nodes if n.op == "placeholder"), None)
    shape = None if first is None else _traced_shape(first)
    if not shape or not isinstance(shape[0], int):
        return None
    return shape[0]


class StaticBatchModule(torch.nn.Module):
    """A ``torch.export`` program exported at a fixed batch size, run on any batch.

    The input batch is cut into chunks of ``batch`` rows; the last chunk is padded by
    repeating its last row, and the padding is dropped from the outputs, which are
    concatenated along their first dimension. This is exact for models that treat the
    sequences of a batch independently (as batched prediction assumes anyway).

    Parameters
    ----------
    module: torch.nn.Module
        The loaded program, ``torch.export.load(path).module()``.
    batch: int
        The batch size it was exported at (see :func:`exported_batch`).

    Raises
    ------
    ValueError
        At call time, for a batch other than ``batch`` when an output of the program
        does not have the batch as its first dimension (the chunks could not be put back
        together), or when a batched extra input has another number of rows than `x`.
    """

    def __init__(self, module: torch.nn.Module, batch: int):
        super().__init__()
        self.module = module
        self.batch = int(batch)
        nodes = list(module.graph.nodes) if isinstance(module, torch.fx.GraphModule) else []
        self._traced_inputs = [_traced_shape(n) for n in nodes if n.op == "placeholder"]
        out = next((n for n in nodes if n.op == "output"), None)
        shapes = [_traced_shape(a) if isinstance(a, torch.fx.Node) else None
                  for a in torch.utils._pytree.tree_leaves(out.args[0] if out else ())]
        self._unbatched_outputs = [str(s) for s in shapes if not s or s[0] != self.batch]

    def forward(self, x: torch.Tensor, *args: object) -> object:
        """The program's outputs for the batch `x` (and batched `args`), any batch size."""
        n = x.shape[0]
        if n == self.batch:
            return self.module(x, *args)
        if self._unbatched_outputs:
            raise InputError(
                f"this torch.export program was exported at a batch size of {self.batch}, "
                f"and its output(s) of traced shape {', '.join(self._unbatched_outputs)} do "
                f"not have the batch first, so it cannot run on {n} sequences in chunks of "
                f"{self.batch}. Pass exactly {self.batch} at a time (batch_size="
                f"{self.batch}), or export it with a dynamic batch (dynamic_shapes).")
        inputs = (x,) + args
        traced = self._traced_inputs
        if len(traced) != len(inputs):
            traced = [None] * len(inputs)
        batched = [True]
        for i, (t, shape) in enumerate(zip(inputs[1:], traced[1:]), 1):
            is_tensor = isinstance(t, torch.Tensor) and t.ndim > 0
            traced_batched = shape is None or shape[:1] == (self.batch,)
            if is_tensor and traced_batched and shape is not None and t.shape[0] != n:
                raise InputError(f"input {i} has {t.shape[0]} rows; the first input has {n}.")
            batched.append(is_tensor and traced_batched and t.shape[0] == n)
        outputs = []
        for start in range(0, n, self.batch):
            chunk = [_rows(t, start, self.batch) if b else t for t, b in zip(inputs, batched)]
            outputs.append(torch.utils._pytree.tree_flatten(self.module(*chunk)))
        leaves = [torch.cat(parts)[:n] for parts in zip(*(leaves for leaves, _ in outputs))]
        return torch.utils._pytree.tree_unflatten(leaves, outputs[0][1])


def _rows(t, start, size):
    """Rows ``start:start + size`` of `t`, padded with copies of its last row."""
    rows = t[start:start + size]
    if rows.shape[0] < size:
        rows = torch.cat([rows, t[-1:].expand((size - rows.shape[0],) + t.shape[1:])])
    return rows


def any_batch(module: torch.nn.Module) -> torch.nn.Module:
    """`module` made to accept any batch size, when it is a fixed-batch export program.

    Parameters
    ----------
    module: torch.nn.Module

    Returns
    -------
    module: torch.nn.Module
        A :class:`StaticBatchModule` around `module` when :func:`exported_batch` finds a
        fixed batch size (and `module` is not already one), else `module` itself.
    """
    if isinstance(module, StaticBatchModule):
        return module
    batch = exported_batch(module)
    return module if batch is None else StaticBatchModule(module, batch)
