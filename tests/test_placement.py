"""One device policy (issue 18): jablate._core.placement, as a pure function and on two devices."""

import subprocess
import sys
import textwrap

from conftest import host_devices_env, require

from jablate._core.placement import Placement, decide


class Fake:
    """A stand-in device: a platform and an id."""

    def __init__(self, platform, id):
        self.platform, self.id = platform, id

    def __repr__(self):
        return f"{self.platform}:{self.id}"


CPU = Fake("cpu", 0)
GPUS = (Fake("gpu", 0), Fake("gpu", 1))


def test_a_cpu_x_computes_on_the_default_backend():
    # a torch CPU tensor arrives on the host; the GPUs compute, the default one first
    assert decide((CPU,), None, GPUS, GPUS[0]) == Placement(GPUS)
    assert decide((CPU,), None, GPUS, GPUS[1]) == Placement((GPUS[1], GPUS[0]))
    # X already on a GPU: the same devices
    assert decide((GPUS[1],), None, GPUS, GPUS[0]) == Placement(GPUS)
    # a CPU-only machine: the host
    assert decide((CPU,), None, (CPU,), CPU) == Placement((CPU,))


def test_device_names_one_device_and_a_sharded_x_keeps_its_devices():
    assert decide((CPU,), GPUS[1], GPUS, GPUS[0]) == Placement((GPUS[1],), explicit=True)
    assert decide((GPUS[0],), CPU, GPUS, GPUS[0]) == Placement((CPU,), explicit=True)
    assert decide(GPUS, None, GPUS, GPUS[1]) == Placement(GPUS)
    # sharded over devices of another backend: moved to the default backend
    hosts = (CPU, Fake("cpu", 1))
    assert decide(hosts, None, GPUS, GPUS[0]) == Placement(GPUS)
    assert Placement(GPUS).primary is GPUS[0]


def _on_two_host_devices(code):
    """Run ``code`` in a fresh interpreter with two host devices; it must print 'ok'."""
    env = host_devices_env(2)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_torch_and_numpy_inputs_run_on_the_same_devices():
    """Two host devices, the default device set to the second: every path given a torch CPU
    tensor (which arrives on device 0) runs where a numpy X runs, with the same results."""
    require("torch")

    code = textwrap.dedent("""
        import jax
        jax.config.update("jax_default_device", jax.devices()[1])
        import jax.numpy as jnp, numpy as np, torch
        import jablate, jablate._core.placement as placement
        seen = []
        real = placement.place
        def spy(tree, where):
            out = real(tree, where)
            X = jax.tree.leaves(out)[0]
            seen.append(([d.id for d in where.devices], sorted(d.id for d in X.devices())))
            return out
        placement.place = spy
        W = jnp.asarray(np.random.RandomState(0).normal(size=(4, 24)), jnp.float32)
        f = lambda x: jnp.tanh(jnp.einsum("nal,al->n", x, W))[:, None]
        X = np.eye(4, dtype=np.float32)[np.random.RandomState(1).randint(4, size=(3, 24))]
        X = np.ascontiguousarray(X.transpose(0, 2, 1))
        calls = {
            "predict": lambda X: jablate.predict(f, X, batch_size=2),
            "ablate": lambda X: jablate.ablate(f, X, 4, 12, n=3, random_state=0),
            "ablate_annotations": lambda X: jablate.ablate_annotations(
                f, X, np.array([[0, 2, 9], [2, 5, 20]]), n=3, random_state=0),
            "deep_lift_shap": lambda X: jablate.deep_lift_shap(f, X, n_shuffles=3,
                                                               random_state=0),
            "saturation_mutagenesis": lambda X: jablate.saturation_mutagenesis(f, X),
            "ablate(func=deep_lift_shap)": lambda X: jablate.ablate(
                f, X, 4, 12, n=2, random_state=0, func=jablate.deep_lift_shap,
                additional_func_kwargs=dict(n_shuffles=2)),
        }
        for name, call in calls.items():
            seen.clear()
            a = call(X)
            from_numpy = list(seen)
            seen.clear()
            b = call(torch.from_numpy(X))
            assert from_numpy and seen == from_numpy, (name, from_numpy, seen)
            assert all(on == [1] and devices[0] == 1 for devices, on in seen), (name, seen)
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=name)
        print("ok")
    """)
    _on_two_host_devices(code)


def test_attributions_use_every_local_device():
    """Two host devices: deep_lift_shap, saturation_mutagenesis and ablate(func=...) shard
    each step's items over both (issue 19, item 3), with the results of one device."""

    code = textwrap.dedent("""
        import jax
        import jax.numpy as jnp, numpy as np
        import jablate
        from jablate.engine import stream
        used = []
        real = stream.Devices.shard
        def spy(self, tree):
            out = real(self, tree)
            leaf = jax.tree.leaves(out)[0]  # one device: the host items, unplaced
            used.append(len(leaf.devices()) if hasattr(leaf, "devices") else 1)
            return out
        stream.Devices.shard = spy
        W = jnp.asarray(np.random.RandomState(0).normal(size=(3, 4, 5)), jnp.float32)
        f = lambda x: jnp.tanh(jax.lax.conv(x, W, (1,), "SAME")).mean(-1)
        X = np.eye(4, dtype=np.float32)[np.random.RandomState(1).randint(4, size=(5, 24))]
        X = np.ascontiguousarray(X.transpose(0, 2, 1))
        calls = {
            "deep_lift_shap": lambda **kw: jablate.deep_lift_shap(
                f, X, n_shuffles=3, random_state=jax.random.key(0), batch_size=6, **kw),
            "saturation_mutagenesis": lambda **kw: jablate.saturation_mutagenesis(
                f, X, incremental=False, batch_size=16, **kw),
            "saturation_mutagenesis, incremental": lambda **kw: jablate.saturation_mutagenesis(
                f, X, incremental=True, **kw),
            "ablate(func=deep_lift_shap)": lambda **kw: jablate.ablate(
                f, X, 4, 12, n=2, random_state=jax.random.key(1), func=jablate.deep_lift_shap,
                additional_func_kwargs=dict(n_shuffles=2), **kw),
        }
        for name, call in calls.items():
            used.clear()
            both = call()
            assert used and set(used) == {2}, (name, used)
            used.clear()
            one = call(device=jax.devices()[0])
            assert not used or set(used) == {1}, (name, used)
            for u, v in zip(jax.tree.leaves(both), jax.tree.leaves(one), strict=True):
                np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6,
                                           atol=1e-6, err_msg=name)
        print("ok")
    """)
    _on_two_host_devices(code)

