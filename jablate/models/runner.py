"""Models as pure functions: ``apply(params, x, *args)``, parameters as arguments.

:func:`runner_for` turns what a caller passes (a bound ``flax.linen`` module, a
``flax.nnx`` module, a pure model with ``params`` and ``apply``, any callable on
JAX arrays, or a ``torch.nn.Module``) into a runner and the current parameters.

Compiled programs belong to the runner (its :meth:`JaxRunner.step`), and no
cache holds the model itself, so a model the caller drops is freed with its
weights (the leak of jablate 0.1.0):

* flax modules are cached by *structure*, as equinox's ``filter_jit`` does: the
  unbound linen module or the nnx ``GraphDef`` is the static key and the
  parameters are arguments, so every fold of one architecture shares one
  compiled program;
* other models (callables, pure models) are cached in a weak dictionary keyed
  on the model, and their runner reaches the model only through a weak
  reference: when the caller drops the model, the runner and its compiled
  programs (with any constants the model closed over) go too;
* torch modules get a fresh, uncached :class:`jablate.bridges.torch.TorchRunner`
  (they run eagerly; there is nothing to compile).
"""

from __future__ import annotations

import collections
import inspect
import sys
import weakref
from functools import partial
from typing import Any, Callable, Literal, Optional

import jax
import jax.numpy as jnp
import numpy

from jablate._core.caches import for_runner, register
from jablate._core.errors import InputError, a_or_an
from jablate.models.frontdoor import X64_HINT, is_torch_module, jax_dtype, torch_bridge

#: How many flax model structures keep their compiled programs.
STRUCTURE_CACHE_SIZE = 32

#: The ``backend`` option: None (torch modules run in torch for ``predict``/``ablate``,
#: translated for the attribution functions), ``'torch'`` or ``'jax'`` (translate).
Backend = Optional[Literal["torch", "jax"]]


def check_backend(backend: Any) -> Backend:
    """``backend`` checked: None, 'torch' or 'jax' (``InputError`` otherwise). The one
    check of the option."""
    if backend not in (None, "torch", "jax"):
        raise InputError(f"backend must be None, 'torch' or 'jax'; got {backend!r}.")
    return backend


def outputs_of(y: Any, where: str = "the model") -> tuple[tuple, bool]:
    """A model output as ``(tuple of arrays, multi)``; ``multi`` is True for a tuple/list.

    Raises
    ------
    InputError
        If the output is not an array or a non-empty tuple/list of arrays, or an array
        has no batch axis (0-dimensional).
    """
    multi = isinstance(y, (tuple, list))
    ys = tuple(y) if multi else (y,)
    if not ys:
        raise InputError(f"{where} must return an array or a tuple/list of arrays; it "
                         f"returned an empty {type(y).__name__}.")
    for i, leaf in enumerate(ys):
        what = f"output {i}" if multi else "its output"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise InputError(f"{where} must return an array or a tuple/list of arrays; "
                             f"{what} is {a_or_an(type(leaf).__name__)}.")
        if len(leaf.shape) == 0:
            raise InputError(f"{where} must return arrays with a batch axis; {what} is "
                             "0-dimensional.")
    return ys, multi


class JaxRunner:
    """A JAX model in pure form, owning its compiled programs.

    Parameters
    ----------
    apply: callable
        ``apply(params, x, *args)`` -> array or tuple/list of arrays. It must not
        hold the caller's model strongly (see the module docstring).

    Attributes
    ----------
    caches: dict
        The runner's caches by name (compiled programs, analyses), reached through
        :func:`jablate._core.caches.for_runner` only; they die with the runner.

    Notes
    -----
    :meth:`step_for` gives the compiled step for a post-processing ``func``
    (``None`` for none). Steps for a ``func`` are held weakly: a ``func`` that
    the caller drops takes its compiled programs (and what it closed over) along.
    """

    jittable = True
    #: Where the model normalises with its batch's statistics (see
    #: :func:`refuse_batch_statistics`); None when it does not, or jablate cannot tell.
    batch_statistics: Optional[str] = None

    def __init__(self, apply: Callable):
        self.apply = apply
        self.caches: dict = {}

    def _compile(self, post_ref):
        return jax.jit(partial(_step, self.apply, post_ref),
                       static_argnames=("draw", "dtype"))

    def step_for(self, post: Optional[Callable]) -> Callable:
        """The compiled ``step(params, x, args, table, items, draw=, dtype=)`` with ``post``
        (``x`` and ``args`` the batch's rows: :func:`jablate.engine.stream.batch_rows`)."""
        if post is None:
            plain = for_runner(self, "runner.step")
            if "step" not in plain:
                plain["step"] = self._compile(None)
            return plain["step"]
        posts = for_runner(self, "runner.posts", weakref.WeakKeyDictionary)
        try:
            step = posts.get(post)
            if step is None:
                step = posts[post] = self._compile(weakref.ref(post))
            return step
        except TypeError:  # not weak-referenceable: compiled for this call only
            return self._compile(_Strong(post))


def input_dtype(dtype_of_x: Any, dtype: Any) -> Any:
    """The dtype a JAX model gets its inputs in: ``dtype`` when given, else the inputs'
    own when they are floats, else float32."""
    if dtype is not None:
        return dtype
    return dtype_of_x if jnp.issubdtype(dtype_of_x, jnp.floating) else jnp.float32


def cast_input(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in :func:`input_dtype`."""
    return x.astype(input_dtype(x.dtype, dtype))


def _step(apply, post_ref, params, x, args, table, items, draw, dtype):
    """One batch: build inputs from the items' sequences ``x`` (B, A, L) and plan ``items``
    with ``draw``, run the model on them and the items' ``args`` (each (B, ...))."""
    x = cast_input(draw(x, table, items), dtype)
    y = apply(params, x, *args)
    if post_ref is not None:
        outputs_of(y)
        y = _alive(post_ref)(y)
    ys, multi = outputs_of(y, "func" if post_ref is not None else "the model")
    return list(ys) if multi else ys[0]


# --- model kinds --------------------------------------------------------------------------

_by_structure: "collections.OrderedDict[Any, JaxRunner]" = register(
    "runner.by_structure", collections.OrderedDict())
# Identity-keyed (a weak dictionary matches by ==, and models that compare equal can differ):
# id(obj) or (id(owner), method function) -> (weak reference, runner); an entry leaves when
# its object is collected.
_by_id: dict = register("runner.by_id", {})


class _Strong:
    """Stands in for a weak reference to an object that cannot be weakly referenced."""

    def __init__(self, obj):
        self.obj = obj

    def __call__(self):
        return self.obj


def _alive(ref):
    obj = ref()
    if obj is None:  # only reachable if a caller keeps a runner after dropping the model
        raise InputError("the model this program was compiled for no longer exists.")
    return obj


def _linen_apply(structure, params, x, *args):
    from flax import errors
    try:
        return structure.apply(params, x, *args)
    except (errors.ScopeCollectionNotFound, errors.ScopeParamNotFoundError) as error:
        raise InputError("model is a flax.linen Module bound without the variables it needs "
                         f"({error}); bind the variables from module.init(...): "
                         "module.bind(variables).") from None


def _nnx_apply(graphdef, state, x, *args):
    from flax import nnx
    return nnx.merge(graphdef, state)(x, *args)


def _weak_pure_apply(ref, params, x, *args):
    return _alive(ref).apply(params, x, *args)


def _weak_call(ref, params, x, *args):
    return _alive(ref)(x, *args)


def _weak_method_call(ref, func, params, x, *args):
    return func(_alive(ref), x, *args)


def _linen_apply_weak(ref, params, x, *args):
    return _linen_apply(_alive(ref).unbind()[0], params, x, *args)


def _fingerprint(value):
    """Types (and exact reprs of numbers) of a value, recursively: ``0.5`` and
    ``numpy.float32(0.5)`` compare equal but compile to different programs."""
    import dataclasses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value),) + tuple((f.name, _fingerprint(getattr(value, f.name, None)))
                                      for f in dataclasses.fields(value) if f.name != "parent")
    if isinstance(value, (tuple, list)):
        return (type(value),) + tuple(_fingerprint(v) for v in value)
    if isinstance(value, dict):
        return (type(value),) + tuple((k, _fingerprint(v)) for k, v in value.items())
    if isinstance(value, (bool, int, float, complex, numpy.generic)):
        return (type(value), repr(value))
    return (type(value),)


def _structure_runner(structure, apply):
    try:
        key = (structure, _fingerprint(structure))
        hash(key)
    except TypeError:  # e.g. a module holding arrays as attributes
        return None
    runner = _by_structure.get(key)
    if runner is None:
        runner = _by_structure[key] = JaxRunner(partial(apply, structure))
        while len(_by_structure) > STRUCTURE_CACHE_SIZE:
            _by_structure.popitem(last=False)
    _by_structure.move_to_end(key)
    return runner


def _identity_runner(obj, build, method=None):
    """The runner cached for ``obj`` (or its ``method``) by identity, held only while
    ``obj`` lives; a fresh, uncached one when ``obj`` cannot be weakly referenced."""
    key = id(obj) if method is None else (id(obj), method)
    entry = _by_id.get(key)
    if entry is not None and entry[0]() is obj:
        return entry[1]
    try:
        ref = weakref.ref(obj, lambda _, key=key: _by_id.pop(key, None))
    except TypeError:  # not weak-referenceable: compiled per call
        return build(_Strong(obj))
    runner = build(weakref.ref(obj))
    _by_id[key] = (ref, runner)
    return runner


def _class_error(model) -> ValueError:
    return ValueError(
        f"model is the class {model.__module__}.{model.__qualname__}, not a model; pass an "
        "instance with its weights (for flax.linen, module.bind(variables); for torch, the "
        "trained module), or a function that returns one's predictions.")


def _flax_kind(model):
    if "flax" not in sys.modules:  # no flax module exists before flax is imported (saves
        return None                # its import, half a second, for torch and JAX models)
    try:
        import flax.linen as nn
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        return None
    if isinstance(model, nn.Module):
        return "linen"
    if isinstance(model, nnx.Module):
        return "nnx"
    owner = getattr(model, "__self__", None)
    if inspect.ismethod(model) and isinstance(owner, nn.Module) and model.__name__ in (
            "apply", "init", "init_with_output"):
        raise InputError(f"model is the unbound method {type(owner).__name__}.{model.__name__}; "
                         "pass the module bound to its variables, module.bind(variables), or "
                         "a function of X such as lambda x: module.apply(variables, x).")
    return None


#: The attributes ``nnx.Module.eval()`` sets: Dropout's and BatchNorm's inference modes.
_NNX_EVAL = dict(deterministic=True, use_running_average=True)


def eval_view(model: Any) -> Any:
    """An ``nnx.Module`` in evaluation mode, without touching ``model``.

    What ``model.eval()`` would do (``deterministic=True``,
    ``use_running_average=True`` on every submodule that has them: Dropout off,
    BatchNorm on its running statistics), on a view that shares ``model``'s
    arrays: the caller's module keeps its mode, as torch modules do around
    tangermeme's calls.
    """
    from flax import nnx
    if hasattr(nnx, "view"):  # flax >= 0.12: a new graph over the same variables
        view = nnx.view(model, raise_if_not_found=False, **_NNX_EVAL)
    else:  # older flax: a copy of the graph (the arrays are shared, not copied)
        view = nnx.merge(*nnx.split(model))
    # Modules without set_view that keep such a flag themselves (as Module.eval() sets them)
    view.set_attributes(raise_if_not_found=False, **_NNX_EVAL)
    return view


def translated_dtype(module: Any, dtype: Any = None) -> Any:
    """The JAX dtype a torch module translated to JAX runs in: ``dtype`` when given, else
    the module's own (its first floating parameter's, as tangermeme's default).

    Parameters
    ----------
    module: torch.nn.Module
    dtype: str, dtype or None
        tangermeme's ``dtype``, in any spelling :func:`~jablate.models.frontdoor.jax_dtype`
        accepts.

    Returns
    -------
    dtype: numpy.dtype

    Raises
    ------
    ValueError
        For a dtype JAX does not know, or a 64-bit one (asked for, or the module's own)
        while JAX runs without 64-bit types, where it would compute in 32 bits instead.
    """
    if dtype is not None:
        return jax_dtype(dtype)
    own = _own_dtype(module)
    try:
        return jax_dtype(own)
    except InputError:
        raise InputError(f"model's parameters are {own}, which JAX computes in only in its "
                         f"64-bit mode: {X64_HINT}; or pass backend='torch' to run the module "
                         "in torch.") from None


def _check_runs_in(runner: Any, translated: Any, params: Any, example: Any,
                   example_args: tuple, dtype: Any) -> None:
    """Refuse, before any model runs, a translation that cannot run in ``dtype`` (other
    than the module's own): a graph that fixes a dtype (``x.float()``, a dtype assertion)
    mixes the two, where torch's autocast would handle it. The verdict is kept on the
    runner per dtype and input shapes (tracing the graph costs about 15 ms for BPNet)."""
    def spec(a):
        floating = jnp.issubdtype(a.dtype, jnp.floating)
        return jax.ShapeDtypeStruct((1,) + tuple(a.shape[1:]), dtype if floating else a.dtype)
    specs = (spec(example),) + tuple(map(spec, example_args))
    cache = for_runner(runner, "runner.dtype_checks")
    key = (str(dtype), tuple((s.shape, str(s.dtype)) for s in specs),
           tuple(sorted({str(p.dtype) for p in jax.tree.leaves(params)})))
    if key not in cache:
        try:
            jax.eval_shape(translated.apply, params, *specs)
            cache[key] = None
        except Exception as error:  # noqa: BLE001 - any failure means: not in this dtype
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            cache[key] = (f"dtype {dtype}: the translated module cannot run in it ("
                          f"{type(error).__name__}: {first[:200]}); it fixes a dtype inside, "
                          "which torch's autocast handles: pass backend='torch' to run it "
                          "in torch, or leave dtype=None.")
    if cache[key] is not None:
        raise InputError(cache[key])


def _own_dtype(module: Any) -> Any:
    """The torch dtype ``module`` computes in: its first floating parameter's (as
    tangermeme's default, which takes the first parameter's), else its first floating
    buffer's, else float32."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch_bridge().torch.float32


def _in_dtype(params: Any, dtype: Any) -> Any:
    """``params`` with every floating array in ``dtype`` (the others as they are)."""
    return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
                        and p.dtype != dtype else p, params)


def refuse_batch_statistics(runner: Any, what: str) -> None:
    """Refuse to run on the JAX path a model whose output for a sequence depends on the
    other sequences of its batch.

    A translated torch ``BatchNorm`` with ``track_running_stats=False`` normalises with
    its batch's statistics in eval mode too (``runner.batch_statistics`` names it). The
    JAX path makes batches of its own: attributions evaluate each sequence (and its
    mutations or references) on its own, and ``predict`` and ``ablate`` pad the last
    batch with copies of a sequence (one program per batch shape) and group the shuffles
    their own way, so the numbers would silently differ from tangermeme's (a fuzz trial
    found predict 2.6% off). The torch bridge runs tangermeme's batches.

    Parameters
    ----------
    runner: JaxRunner or TorchRunner
    what: str
        What evaluates sequences one at a time, for the message.

    Raises
    ------
    ValueError
        When ``runner.batch_statistics`` names such an op.
    """
    where = getattr(runner, "batch_statistics", None)
    if where:
        raise InputError(
            f"{what} on the JAX path makes batches of its own (each sequence on its own for "
            "attributions; the last batch padded with copies of a sequence, shuffles grouped "
            "its way for predict and ablate), but this model normalises with the "
            f"statistics of its batch ({where}; a BatchNorm with track_running_stats=False "
            "does so in eval mode too), so a sequence's output depends on the other "
            "sequences of its batch and tangermeme's numbers on its batch_size. Pass "
            "backend='torch' for tangermeme's batched computation, or give the norm "
            "running statistics.")


def runner_for(model: Any, backend: Backend = None, example: Optional[jax.Array] = None,
               example_args: tuple = (), dtype: Any = None) -> tuple[Any, Any]:
    """The runner of ``model`` and its current parameters.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, pure model, callable or torch.nn.Module
    backend: None, 'torch' or 'jax'
        ``'jax'`` translates a torch module to JAX
        (``jablate.bridges.torch.translate``), using ``example`` (a JAX array
        shaped like the inputs) and ``example_args`` (the model's other inputs, each
        with a batch axis) for the export.
    example: jax.Array or None
    example_args: tuple of arrays
    dtype: dtype or None
        For a translated torch module, the dtype it runs in (:func:`translated_dtype`):
        its floating parameters are cast to it when they differ. tangermeme autocasts
        instead (some ops stay in float32), so in float16 or bfloat16 the two agree to
        that dtype's rounding.

    Returns
    -------
    runner: JaxRunner or jablate.bridges.torch.TorchRunner
    params: pytree or None
        The parameters to pass to ``runner.step`` (re-read on every call, so
        updated weights are used).

    Notes
    -----
    Models run in evaluation mode, as tangermeme runs torch modules: an nnx
    module through :func:`eval_view` (Dropout off, BatchNorm on its running
    statistics; the module itself keeps its mode), a torch module in
    ``eval()`` for the call, its mode restored after. A flax.linen module's
    mode is an argument of its ``__call__`` that jablate cannot see: bind or
    wrap it for inference (e.g. ``lambda x: module(x, train=False)``).

    Raises
    ------
    ValueError
        For a class instead of an instance, an unbound or uninitialised flax
        module, an unknown ``backend``, or something that is not a model.
    """
    check_backend(backend)
    if inspect.isclass(model):
        raise _class_error(model)
    if is_torch_module(model):
        if backend == "jax":
            bridge = torch_bridge()
            own = _own_dtype(model)  # exported as the module computes
            as_own = lambda a: a.to(own) if a.is_floating_point() else a  # noqa: E731
            translated = bridge.translate(model, bridge.to_torch(example[:1]).to(own),
                                          *(as_own(bridge.to_torch(a[:1])) for a in example_args))
            runner, params = runner_for(translated)
            run = translated_dtype(model, dtype)
            params = _in_dtype(params, run)
            if run != jnp.dtype(str(own).replace("torch.", "")):  # not the module's own
                _check_runs_in(runner, translated, params, example, example_args, run)
            return runner, params
        else:
            return torch_bridge().TorchRunner(model), None
    elif backend == "torch":
        raise InputError("backend='torch' needs a torch.nn.Module as model.")
    kind = _flax_kind(model)
    if kind == "linen":
        if model.scope is None:
            raise InputError("model is an unbound flax.linen Module; pass module.bind(variables) "
                             "so that jablate has its weights.")
        structure, params = model.unbind()
        runner = _structure_runner(structure, _linen_apply) or _identity_runner(
            model, lambda ref: JaxRunner(partial(_linen_apply_weak, ref)))
        return runner, params
    if kind == "nnx":
        from flax import nnx
        graphdef, state = nnx.split(eval_view(model))
        runner = _structure_runner(graphdef, _nnx_apply) or _identity_runner(
            model, lambda ref: JaxRunner(partial(_nnx_apply, graphdef)))
        return runner, state
    if callable(getattr(model, "apply", None)) and hasattr(model, "params"):
        runner = _identity_runner(model, lambda ref: JaxRunner(partial(_weak_pure_apply, ref)))
        runner.batch_statistics = getattr(model, "batch_statistics", None)  # a translation's
        return runner, model.params
    if not callable(model):
        raise InputError(f"model must be a flax module, a callable on JAX arrays or a "
                         f"torch.nn.Module; got {type(model).__name__}.")
    if inspect.ismethod(model):  # a new bound-method object each time: key on its owner
        func = model.__func__
        return _identity_runner(model.__self__, lambda ref: JaxRunner(
            partial(_weak_method_call, ref, func)), method=func), None
    return _identity_runner(model, lambda ref: JaxRunner(partial(_weak_call, ref))), None

