"""``ablate`` and ``ablate_annotations``: one streaming engine behind both."""

import inspect
import warnings
from typing import Any, Callable, Literal, NamedTuple, Optional

import jax
import numpy

from jablate._core.behaviour import PREDICT, PartialFallbackWarning, PredictFunc
from jablate._core.errors import InputError, outside_stacklevel
from jablate._core.results import (
    PerturbationAnnotationsResult,
    PerturbationAnnotationsSummaryResult,
    PerturbationResult,
    PerturbationSummaryResult,
)
from jablate.api.ersatz import method_of, plan_shuffles, shuffle, warn_unchangeable
from jablate.api.predict import predict, prepare
from jablate.engine import per_sequence
from jablate.engine import stream as engine
from jablate.incremental import run as incremental_engine
from jablate.models.frontdoor import annotations as check_annotations
from jablate.models.frontdoor import (
    check_int,
    inputs,
    is_torch_module,
    region,
    repeat_rows,
    stack,
    tree_to_family,
)

#: ``reduce``'s values: keep every shuffle's output, or a per-group mean and std.
Reduce = Optional[Literal["mean_std"]]
REDUCTIONS = (None, "mean_std")
#: predict's keywords, which ablate's fast path honours.
_PREDICT_KEYWORDS = PREDICT.keywords


def _func_kwargs(func, random_state, additional_func_kwargs):
    extra = dict(additional_func_kwargs or {})
    try:
        takes_random_state = "random_state" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes_random_state = False
    if takes_random_state and "random_state" not in extra:
        extra["random_state"] = random_state
    return extra


def _engine_keywords(merged):
    return {k: v for k, v in merged.items() if k in _PREDICT_KEYWORDS and k != "func"}


class _FuncPlan(NamedTuple):
    """How ``ablate`` runs its ``func``.

    ``fast``: on the fast path; ``spec``: the :class:`~jablate.engine.per_sequence.SequenceFunc`
    (None for predict); ``options``: its checked keywords; ``keywords``: the func's
    keywords (those a ``functools.partial`` binds, under ``**kwargs`` and
    ``additional_func_kwargs``); ``random_state``: the func's own.
    """

    fast: bool
    keywords: dict
    spec: Optional[per_sequence.SequenceFunc] = None
    options: Optional[tuple] = None
    random_state: Any = None


def _plan_func(func, method, kwargs, extra, incremental):
    """How ``func`` runs, from the value it carries (:func:`jablate.engine.per_sequence.spec_of`).

    On the fast path when the shuffle is jablate's (``method``) and ``func`` is
    ``predict``, or a func of one sequence (``deep_lift_shap``,
    ``saturation_mutagenesis``) whose keywords (all but the engine's ``batch_size``,
    ``dtype``, ``device``, ``verbose``, ``backend``) the fast path can honour; they are
    checked here, before any model runs. A ``functools.partial``'s bound keywords count
    as the func's, the call's own winning as in a call. ablate's ``incremental`` reaches
    a func that has an incremental path unless its own keywords set one;
    ``backend='torch'`` asks for the func's torch path, so it is called on the
    materialised shuffles."""
    call = {**kwargs, **extra}
    own = per_sequence.spec_of(func) if method is not None else None
    if own is None:
        return _FuncPlan(False, call)
    merged = {**own.keywords, **call}
    if isinstance(own.spec, PredictFunc):
        return _FuncPlan(True, merged)
    spec = own.spec
    if merged.get("backend") == "torch":
        return _FuncPlan(False, merged)

    def options_of(keywords):
        keywords = dict(keywords)
        if spec.takes_incremental:
            keywords.setdefault("incremental", incremental)
        engine_kw = _engine_keywords(keywords)
        return spec.options({k: v for k, v in keywords.items() if k not in engine_kw})

    options = options_of(merged)
    if options is None:
        if own.keywords and options_of(call) is not None:
            warnings.warn(f"func={own.shown}: the fast path cannot give what these bound "
                          f"keywords ask for ({', '.join(own.keywords)}), so the partial is "
                          "called as it is, on the materialised path (tangermeme's).",
                          PartialFallbackWarning, stacklevel=outside_stacklevel())
        return _FuncPlan(False, merged)
    return _FuncPlan(True, merged, spec, options, merged.get("random_state"))


def _fast_kwargs(merged, spec=None):
    """predict's keywords for the fast path; anything else is a TypeError, as Python's.
    With a func of one sequence (``spec``), the engine's own keywords."""
    if spec is not None:
        return _engine_keywords(merged)
    for key in merged:
        if key not in _PREDICT_KEYWORDS:
            raise TypeError(f"predict() got an unexpected keyword argument {key!r} (ablate "
                            "and ablate_annotations pass the keywords they do not take "
                            "to func, here predict)")
    return merged


def _check_reduce(reduce):
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}.")
    return reduce


def _check_incremental(incremental, fast):
    """``incremental`` checked (:func:`jablate.incremental.run.check_mode`), and True
    only on the fast path."""
    incremental = incremental_engine.check_mode(incremental)
    if incremental is True and not fast:
        raise InputError("incremental=True needs jablate's own predict (or "
                         "saturation_mutagenesis) as func and jablate's "
                         "shuffle or dinucleotide_shuffle as shuffle_fn.")
    return incremental


class _Ablation(NamedTuple):
    """One ablation on the fast path, as :func:`_stream` runs it.

    ``method``: the shuffle's :class:`~jablate.api.ersatz.ShuffleMethod`; ``random_state``;
    ``seq_idx``, ``starts``, ``ends``: the groups (a sequence and its region each);
    ``n`` shuffles per group; ``options``: the engine's keywords (``batch_size``,
    ``device``, ``dtype``, ``verbose``, ``func``, ``backend``); ``per_annotation``:
    tangermeme's loop over annotations (re-seeded per annotation); ``reduce``;
    ``incremental``; ``func``: how the func runs (:class:`_FuncPlan`); ``unchangeable``:
    called as ``unchangeable(method, X, seq_idx, starts, ends)`` on the caller's ``X``
    before it is placed; by default :func:`~jablate.api.ersatz.warn_unchangeable` (a caller
    that counted the regions itself passes one that does nothing).
    """

    method: Any
    random_state: Any
    seq_idx: Any
    starts: Any
    ends: Any
    n: int
    options: dict
    per_annotation: bool
    reduce: Optional[str]
    incremental: Any
    func: _FuncPlan
    unchangeable: Callable = warn_unchangeable


def _stream(model, inp, job: _Ablation):
    """Predict before (on ``job.seq_idx``) and after ``job.n`` shuffles of each group; host
    outputs.

    With a func of one sequence (``job.func.spec``, a
    :class:`~jablate.engine.per_sequence.SequenceFunc`) that func takes the place of the
    model's predictions, before and after.
    """
    method, random_state, seq_idx, starts, ends, n, options, per_annotation, reduce, \
        incremental = job[:10]
    spec, spec_options, func_random_state = job.func.spec, job.func.options, \
        job.func.random_state
    batch_size = check_int(options.get("batch_size", 32), "batch_size", minimum=1)
    backend = options.get("backend")
    if spec is not None and backend is None and is_torch_module(model):
        backend = "jax"  # jablate's attribution funcs run torch modules translated
    # counted on the host backend before X is placed, never behind an accelerator's queue
    # (ersatz.counted_on_host: a JAX array on the host as it is, one on a GPU copied)
    job.unchangeable(method, inp.X, seq_idx, starts, ends)
    inp, bound, session = prepare(model, inp, options.get("func"), options.get("device"),
                                  options.get("dtype"), backend, what="ablate")
    draw, table, plan = plan_shuffles(method, random_state, seq_idx, starts, ends, n,
                                      per_annotation)
    stream = engine.Stream(bound, inp.X, inp.args, plan, draw, table, batch_size,
                           options.get("verbose", False))
    uniq, inverse = numpy.unique(seq_idx, return_inverse=True)
    if spec is not None:
        with session:
            return _stream_func(stream, spec, spec_options, func_random_state, uniq, inverse,
                                n, per_annotation, reduce)
    with session:
        ran = None
        choice = incremental_engine.choose(
            bound, inp.X, inp.args, plan.ends - plan.starts, incremental,
            sequences=len(uniq), devices=engine.Devices(bound, inp.X).devices)
        if choice.use:
            ran = incremental_engine.run(stream, uniq, n, reduce, desc="ablate (incremental)")
        if ran is not None:
            before, after, multi = ran
            before = list(engine.take_rows(tuple(before), inverse)) if isinstance(
                before[0], jax.Array) else [b[inverse] for b in before]
        else:
            # with reduce='mean_std' nothing waits for the device: a caller holding JAX
            # arrays can dispatch more work before it reads them
            summary = reduce == "mean_std" and bound.jittable
            before, multi = engine.run(stream.unshuffled(uniq), "before", on_device=summary)
            before = list(engine.take_rows(tuple(before), inverse)) if summary else [
                b[inverse] for b in before]
            if reduce == "mean_std":
                after = engine.run_mean_std(stream, n, before, "after")
            else:
                after, _ = engine.run(stream, "after")
        if reduce != "mean_std":
            after = [a.reshape(len(seq_idx), n, *a.shape[1:]) for a in after]
    return before, after, multi


def _stream_func(stream, spec, spec_options, random_state, uniq, inverse, n, per_annotation,
                 reduce):
    """``_stream`` for a func of one sequence: the func on the unshuffled sequences, then
    on every shuffle, as rows ``m`` of the materialised calls (keys ``fold_in(base, m)``:
    a sequence's own index, ``g * n + i`` for the shuffles; per annotation, as
    tangermeme's loop calls ``ablate(X[idx:idx+1])``, 0 and ``i``). As in the
    materialised calls, the func turns ``random_state`` into a key once for the
    predictions before and once for those after (a RandomState gives two seeds; per
    annotation tangermeme's loop would draw two per annotation, here two per call)."""
    base = spec.key(random_state)
    before_rows = numpy.zeros(len(uniq)) if per_annotation else uniq
    before, multi = per_sequence.run(stream.unshuffled(uniq), spec, spec_options, before_rows,
                                     base, desc="before")
    before = [b[inverse] for b in before]
    M = len(stream.plan)
    rows = numpy.arange(M) % n if per_annotation else numpy.arange(M)
    after, _ = per_sequence.run(stream, spec, spec_options, rows, spec.key(random_state), n=n,
                                shifts=before if reduce == "mean_std" else None, desc="after")
    if reduce != "mean_std":
        after = [a.reshape(len(inverse), n, *a.shape[1:]) for a in after]
    return before, after, multi


def ablate(model: Any, X: Any, start: int = 0, end: int = -1, n: int = 20,
           shuffle_fn: Callable = shuffle, args: Optional[Any] = None, random_state: Any = None,
           func: Callable = predict, additional_func_kwargs: Optional[dict] = None,
           reduce: Reduce = None, incremental: incremental_engine.Mode = "auto",
           **kwargs: Any) -> Any:
    """Make predictions before and after shuffling a region of sequences.

    A drop in the prediction after the region is shuffled says how much the
    model relies on what was there (a motif, an enhancer, a variant's
    context). With jablate's own ``predict`` and shuffles, each compiled step
    draws the shuffles of one batch and feeds them to the model: the
    ``(N, n, A, L)`` shuffled inputs are never held in memory. A foreign
    ``func`` or ``shuffle_fn`` (say tangermeme's ``deep_lift_shap`` or
    ``dinucleotide_shuffle``) runs tangermeme's materialising path and receives
    the model and arrays in the caller's own family.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable or torch.nn.Module
        Maps ``(B, A, L)`` (plus ``*args``) to an array or a tuple/list of arrays.
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences (all-zero columns are unknown bases).
    start: int, optional
        Start of the region, inclusive. Default is 0.
    end: int, optional
        End of the region, exclusive when ``>= 0``; negative counts from the end
        inclusively (``-1`` is the whole sequence). Default is -1.
    n: int, optional
        Shuffles per sequence. Default is 20.
    shuffle_fn: callable, optional
        ``jablate.shuffle`` (default), ``jablate.dinucleotide_shuffle`` or any
        ``f(X, start=, end=, n=, random_state=) -> (N, n, A, L)``. A
        ``functools.partial`` of jablate's shuffles runs on the fast path when it
        binds nothing but keywords that change nothing there (``verbose``); one that
        binds anything else (``start``, ``end``, ``n`` and ``random_state`` are
        ablate's own) is called as it is, with a ``PartialFallbackWarning``. jablate's
        dinucleotide shuffle moves unknown bases (all-zero columns) as a symbol of their
        own here (``allow_N=True``), where tangermeme's refuses them.
    args: tuple or list of arrays or None, optional
        Extra model inputs with ``N`` rows; repeated ``n`` times per sequence
        for the shuffled batch. Default is None.
    random_state: JAX key, int, numpy.random.RandomState or None, optional
        See :func:`jablate.shuffle`: an int or RandomState reproduces
        tangermeme's permutations (so ``y_after`` equals tangermeme's for the
        same model); a JAX key draws shuffle ``i`` of sequence ``j`` from
        ``(key, j, i)`` alone. Also passed to ``func`` when it takes a
        ``random_state`` not already in ``additional_func_kwargs``.
    func: callable, optional
        Called as ``func(model, X, args=..., **kwargs, **additional_func_kwargs)``
        before and after shuffling. Default is ``jablate.predict``. A
        ``functools.partial`` of ``predict``, ``deep_lift_shap`` or
        ``saturation_mutagenesis`` runs as the function itself with its bound
        keywords (as if passed through ``additional_func_kwargs``; the call's own
        win, as in a call of the partial); one binding positional arguments,
        ``model``, ``X`` or ``args`` is called as it is, with a
        ``PartialFallbackWarning``.
    additional_func_kwargs: dict or None, optional
        More keywords for ``func``, kept apart from this function's own.
    reduce: None or 'mean_std', optional
        None (default) keeps every shuffle's output. 'mean_std' keeps only the
        per-sequence mean and (population) standard deviation over the ``n``
        shuffles, accumulated on the device, so memory is of order ``N``; it
        needs jablate's own ``func`` and ``shuffle_fn``.
    incremental: 'auto', True or False, optional
        Compute only what a shuffle can change (JAX models, and torch models
        with ``backend='jax'``): each layer on the window of positions the
        region can reach, from reference activations of the unshuffled
        sequence; see :func:`jablate.incremental_report`. The predictions
        before shuffling come from the same reference passes. The first 16
        items are checked against the full path, on the model's outputs
        before ``predict``'s ``func`` (a mismatch warns and finishes on the
        full path); results agree with it to float32
        rounding. ``'auto'`` (default) uses it where the backend's cost model
        (:func:`jablate.incremental.run.choose`) predicts it is faster, cold
        only for runs of at least 2,048 shuffled items; ``True`` always
        (``ValueError`` where it cannot run: a torch model, a foreign
        ``func``/``shuffle_fn``); ``False`` never. It works with
        ``reduce='mean_std'`` and ``predict``'s ``func``, shards its batches
        over local devices and splits the groups between ``jax.distributed``
        processes as the full path does. It sizes its own batches
        (``batch_size`` applies to the full path).
    **kwargs:
        Passed to ``func``: for ``predict`` these are ``batch_size`` (32),
        ``dtype``, ``device``, ``verbose``, ``func`` and ``backend``.

    Returns
    -------
    PerturbationResult(y_before, y_after)
        ``y_before`` (N, ...) and ``y_after`` (N, n, ...), lists of such for a
        multi-output model, in ``X``'s family. With ``reduce='mean_std'``, a
        PerturbationSummaryResult(y_before, y_after_mean, y_after_std).

    Raises
    ------
    ValueError
        Bad ``X``, region, ``n``, ``args``, ``batch_size``, ``reduce`` or
        ``random_state``, before any model call.
    TypeError
        Unknown keyword arguments reaching ``func``.
    """
    n = check_int(n, "n", minimum=1)
    _check_reduce(reduce)
    method = method_of(shuffle_fn)
    extra = _func_kwargs(func, random_state, additional_func_kwargs)
    plan = _plan_func(func, method, kwargs, extra, incremental)
    fast = method is not None and plan.fast
    incremental = _check_incremental(incremental, fast and (
        plan.spec is None or plan.spec.takes_incremental))
    if not fast and args is not None:
        # A foreign func receives args as given (tangermeme passes them through, and its
        # deep_lift_shap takes per-reference args with more rows than X).
        inp = inputs(X)
    else:
        inp = inputs(X, args)
    N, _, L = inp.X.shape
    given = (start, end)  # what tangermeme hands a foreign shuffle_fn
    start, end = region(start, end, L, min_width=method.min_width if method else 1)
    if fast:
        options = _fast_kwargs(plan.keywords, plan.spec)
        before, after, multi = _stream(model, inp, _Ablation(
            method, random_state, numpy.arange(N), [start] * N, [end] * N, n, options, False,
            reduce, incremental, plan))
        fam = inp.family
        pick = (lambda ys: ys) if multi else (lambda ys: ys[0])
        if reduce == "mean_std":
            mean, std = zip(*after)
            return PerturbationSummaryResult(*(tree_to_family(pick(list(v)), fam)
                                               for v in (before, mean, std)))
        return PerturbationResult(tree_to_family(pick(before), fam),
                                  tree_to_family(pick(after), fam))
    if reduce is not None:
        raise InputError("reduce='mean_std' needs jablate's own predict as func and jablate's "
                         "shuffle or dinucleotide_shuffle as shuffle_fn.")
    return _materialised(model, X, *given, n, shuffle_fn, args, random_state, func, extra,
                         kwargs)


def _materialised(model, X, start, end, n, shuffle_fn, args, random_state, func, extra, kwargs):
    """tangermeme's algorithm, for foreign ``func`` or ``shuffle_fn``: arrays stay in X's
    family, and ``start``/``end`` reach ``shuffle_fn`` as the caller gave them (checked)."""
    X_perturb = shuffle_fn(X, start=start, end=end, n=n, random_state=random_state)
    args_n = None if args is None else tuple(repeat_rows(a, n) for a in args)
    X_flat = X_perturb.reshape(-1, *X_perturb.shape[2:])
    y_before = func(model, X, args=args, **kwargs, **extra)
    y_after = func(model, X_flat, args=args_n, **kwargs, **extra)
    lead = tuple(X_perturb.shape[:2])
    if isinstance(y_after, (list, tuple)):
        y_after = [y.reshape(*lead, *y.shape[1:]) for y in y_after]
    else:
        y_after = y_after.reshape(*lead, *y_after.shape[1:])
    return PerturbationResult(y_before, y_after)


def ablate_annotations(model: Any, X: Any, annotations: Any,
                       incremental: incremental_engine.Mode = "auto", reduce: Reduce = None,
                       **kwargs: Any) -> Any:
    """Ablate each annotation on its own sequence; predictions before and after.

    Returns exactly what the loop ``ablate(model, X[i:i+1], start, end,
    **kwargs)`` over the annotations returns, but batched: the regions are
    traced, so all annotations share compiled programs and the model sees full
    batches of (annotation, shuffle) pairs — a few calls for hundreds of
    annotations rather than one per annotation. A foreign ``func`` or
    ``shuffle_fn`` runs that loop literally.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable or torch.nn.Module
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences.
    annotations: array of int, shape=(k, 3)
        Rows ``(example_idx, start, end)``, ``end`` exclusive; a negative ``end``
        counts back from the sequence's end, as ``ablate``'s does (``-1``: the end
        itself), as tangermeme reads it.
    incremental: 'auto', True or False, optional
        Compute only what a shuffle can change (JAX models, and torch models
        with ``backend='jax'``): each layer on the window of positions the
        region can reach, from reference activations of the unshuffled
        sequence; see :func:`jablate.incremental_report`. The predictions
        before shuffling come from the same reference passes. The first 16
        items are checked against the full path, on the model's outputs
        before ``predict``'s ``func`` (a mismatch warns and finishes on the
        full path); results agree with it to float32
        rounding. ``'auto'`` (default) uses it where the backend's cost model
        (:func:`jablate.incremental.run.choose`) predicts it is faster, cold
        only for runs of at least 2,048 shuffled items; ``True`` always
        (``ValueError`` where it cannot run: a torch model, a foreign
        ``func``/``shuffle_fn``); ``False`` never. It works with
        ``reduce='mean_std'`` and ``predict``'s ``func``, shards its batches
        over local devices and splits the groups between ``jax.distributed``
        processes as the full path does. It sizes its own batches
        (``batch_size`` applies to the full path).
    reduce: None or 'mean_std', optional
        None (default) keeps every shuffle's output. 'mean_std' keeps only each
        annotation's mean and population standard deviation (``ddof=0``) over
        the ``n`` shuffles, accumulated on the device, so memory is of order
        ``k`` rather than ``k * n``: what genome-scale runs need. It needs
        jablate's own ``func`` and ``shuffle_fn`` (``ValueError`` otherwise).
        :func:`jablate.api.effects.from_mean_std` turns it into the tables' drop,
        spread (``ddof=1``) and z.
    **kwargs:
        Passed to :func:`ablate` (``n``, ``shuffle_fn``, ``random_state``,
        ``func``, ``batch_size``, ...). An int ``random_state`` re-seeds for
        every annotation, a RandomState is shared across them, as in
        tangermeme's loop. On the batched path (jablate's ``predict`` and
        shuffles) ``args`` have ``N`` rows and annotation ``i`` uses row
        ``example_idx`` of each. A foreign ``func`` or ``shuffle_fn`` runs
        tangermeme's loop literally, ``args`` passed unchanged to every call.

    Returns
    -------
    PerturbationAnnotationsResult(y_befores, y_afters)
        Shapes ``(k, 1, ...)`` and ``(k, 1, n, ...)``; lists of such for a
        multi-output model, in ``X``'s family. With ``reduce='mean_std'``, a
        PerturbationAnnotationsSummaryResult(y_befores, y_after_means,
        y_after_stds), each ``(k, 1, ...)``.

    Raises
    ------
    ValueError
        Bad ``X`` or ``annotations`` (not (k, 3) integers, empty, an example
        index outside ``X``, a region outside its sequence), or ``reduce``
        (unknown, or 'mean_std' with a foreign ``func``/``shuffle_fn``),
        before any model call.
    TypeError
        Unknown keyword arguments reaching ``func``.
    """
    return annotations_ablation(model, X, annotations, incremental, reduce, kwargs)


def annotations_ablation(model: Any, X: Any, annotations: Any,
                         incremental: incremental_engine.Mode, reduce: Reduce, kwargs: dict,
                         unchangeable: Callable = warn_unchangeable) -> Any:
    """:func:`ablate_annotations`, with how regions the shuffle cannot change are reported
    passed as a value: ``unchangeable(method, X, seq_idx, starts, ends)`` (by default
    :func:`~jablate.api.ersatz.warn_unchangeable`, which counts them and warns at the
    user's line: the first outside jablate).
    ``jablate hits`` counts every hit's arrangements for its table and passes one that
    does nothing, so each chunk is counted once. Parameters, returns and errors as
    :func:`ablate_annotations`."""
    shuffle_fn = kwargs.get("shuffle_fn", shuffle)
    func = kwargs.get("func", predict)
    method = method_of(shuffle_fn)
    _check_reduce(reduce)
    own = ("n", "shuffle_fn", "args", "random_state", "func", "additional_func_kwargs")
    extra = _func_kwargs(func, kwargs.get("random_state"), kwargs.get("additional_func_kwargs"))
    options = {k: v for k, v in kwargs.items() if k not in own}
    plan = _plan_func(func, method, options, extra, incremental)
    fast = method is not None and plan.fast
    incremental = _check_incremental(incremental, fast and (
        plan.spec is None or plan.spec.takes_incremental))
    inp = inputs(X, kwargs.get("args") if fast else None)
    N, _, L = inp.X.shape
    # tangermeme's loop (not fast) hands each row to ablate, and its shuffle_fn, as given
    ann = check_annotations(annotations, N, L, min_width=method.min_width if method else 1,
                            as_given=not fast)
    if not fast:
        if reduce is not None:
            raise InputError("reduce='mean_std' needs jablate's own predict as func and "
                             "jablate's shuffle or dinucleotide_shuffle as shuffle_fn.")
        return _annotation_loop(model, X, ann, kwargs)
    n = check_int(kwargs.get("n", 20), "n", minimum=1)
    options = _fast_kwargs(plan.keywords, plan.spec)
    before, after, multi = _stream(model, inp, _Ablation(
        method, kwargs.get("random_state"), ann[:, 0], ann[:, 1], ann[:, 2], n, options, True,
        reduce, incremental, plan, unchangeable))
    fam = inp.family
    pick = (lambda ys: ys) if multi else (lambda ys: ys[0])
    one = lambda ys: pick([tree_to_family(y[:, None], fam) for y in ys])
    if reduce == "mean_std":
        mean, std = zip(*after)
        return PerturbationAnnotationsSummaryResult(one(before), one(mean), one(std))
    return PerturbationAnnotationsResult(one(before), one(after))


def _annotation_loop(model, X, ann, kwargs):
    """tangermeme's loop, literally: ``ablate(model, X[idx:idx+1], start, end, **kwargs)``
    for each annotation, ``args`` passed through unchanged as tangermeme passes them."""
    befores, afters = [], []
    for idx, start, end in ann:
        rows = slice(int(idx), int(idx) + 1)
        b, a = ablate(model, X[rows], start=int(start), end=int(end), **kwargs)
        befores.append(b)
        afters.append(a)
    if isinstance(afters[0], (list, tuple)):
        return PerturbationAnnotationsResult(
            [stack([b[h] for b in befores]) for h in range(len(befores[0]))],
            [stack([a[h] for a in afters]) for h in range(len(afters[0]))])
    return PerturbationAnnotationsResult(stack(befores), stack(afters))
