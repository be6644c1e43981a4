"""The one executor (issue 18, item 1): batches of one shape, one step in flight, sinks,
and the checked(fast, exact) combinator."""

import jax.numpy as jnp
import numpy
import pytest

from jablate.engine.executor import Collect, Job, MeanStd, Scatter, checked, execute
from jablate.engine.stream import Plan


def _plan(m):
    return Plan.build(numpy.arange(m), numpy.zeros(m), numpy.ones(m))


def _step(calls):
    def step(items, lo):
        calls.append((lo, len(items[0])))
        seq = jnp.asarray(items[0], jnp.float32)
        return (seq * 2, jnp.stack([seq, -seq], axis=1))
    return step


def test_batches_have_one_shape_and_collect_keeps_the_valid_rows():
    calls = []
    out = execute(Job(_plan(10), _step(calls), size=4), Collect())
    assert calls == [(0, 4), (4, 4), (8, 4)]  # the last batch padded to 4
    numpy.testing.assert_array_equal(out[0], numpy.arange(10) * 2.0)
    numpy.testing.assert_array_equal(out[1][:, 1], -numpy.arange(10.0))


def test_one_step_is_in_flight_while_the_previous_is_copied():
    events, states = [], []

    class Recording(Collect):
        def add(self, ys, lo, valid):
            events.append(("add", lo))
            super().add(ys, lo, valid)
            states.append((len(self._chunks), len(self._pending)))

    def step(items, lo):
        events.append(("step", lo))
        return (jnp.asarray(items[0]),)

    sink = Recording()
    execute(Job(_plan(6), step, size=2), sink)
    assert events == [("step", 0), ("add", 0), ("step", 2), ("add", 2), ("step", 4),
                      ("add", 4)]
    # batch k is copied in add(k + 1), after step k + 1 was dispatched
    assert states == [(0, 1), (1, 1), (2, 1)]


def test_mean_std_per_group_equals_numpy():
    rs = numpy.random.RandomState(0)
    values = rs.normal(size=(12, 3)).astype(numpy.float32)  # 4 groups of n=3 items
    shifts = [values[::3, 0] + 0.5]

    def step(items, lo):
        return (jnp.asarray(values[items[0], 0]),)

    mean, std = execute(Job(_plan(12), step, size=5), MeanStd(shifts, n=3, total=12))[0]
    numpy.testing.assert_allclose(mean, values[:, 0].reshape(4, 3).mean(1), rtol=1e-6)
    numpy.testing.assert_allclose(std, values[:, 0].reshape(4, 3).std(1), rtol=1e-5)


def test_scatter_puts_rows_where_they_belong():
    positions = numpy.array([3, 0, 4, 1, 2])
    out = execute(Job(_plan(5), _step([]), size=2), Scatter(positions, 5))
    numpy.testing.assert_array_equal(out[0][positions], numpy.arange(5) * 2.0)


@pytest.mark.parametrize("agree", [True, False])
def test_checked_keeps_the_fast_step_only_when_it_agrees(agree):
    fast_calls, exact_calls, warned = [], [], []
    fast, exact = _step(fast_calls), _step(exact_calls)
    step = checked(fast, exact, lambda a, b: agree, lambda: warned.append(True))
    assert step.kept() is None
    out = execute(Job(_plan(7), step, size=3), Collect())
    numpy.testing.assert_array_equal(out[0], numpy.arange(7) * 2.0)
    assert step.kept() == ("fast" if agree else "exact")
    assert len(exact_calls) == (1 if agree else 3) and len(fast_calls) == (3 if agree else 1)
    assert warned == ([] if agree else [True])
