"""Train the demo model shipped in jablate/data/demo_model.npz.

    python scripts/train_demo_model.py [--out jablate/data/demo_model.npz]

Training data: uniform random sequences of length 100 (numpy seed 0); half of them get
GATAAG planted at a random position. The target is 1 for a sequence that contains GATAAG
(planted or by chance) and 0 otherwise, so the motif raises the prediction and nothing
lowers it. The model (jablate.demo.DemoModel: conv 16x11 -> ReLU -> max -> dense 1) is
fitted by mean squared error with Adam (optax), parameters initialised from
jax.random.key(0). Everything is seeded, so rerunning reproduces the weights (up to
floating-point differences between machines). Takes well under a minute on 2 CPU cores.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jablate.demo import (  # noqa: E402
    LENGTH,
    MOTIF,
    WEIGHTS_PATH,
    DemoModel,
    contains_motif,
    load_model,
    plant_motif,
    random_sequences,
)

N_TRAIN = 8192
N_VALID = 1024
STEPS = 3000
BATCH = 128
LEARNING_RATE = 1e-2


def make_data(n, seed):
    """Random sequences, half with the motif planted at a random position.

    Parameters
    ----------
    n : int
        Number of sequences.
    seed : int
        Seed of the numpy RandomState that draws sequences, which get the motif, and where.

    Returns
    -------
    X : numpy.ndarray, shape (n, 4, 100), float32
        One-hot sequences.
    y : numpy.ndarray, shape (n, 1), float32
        1 where the sequence contains GATAAG (planted or by chance), else 0.
    """

    rng = numpy.random.RandomState(seed)
    X = random_sequences(n, LENGTH, seed=rng.randint(2**31))
    planted = rng.rand(n) < 0.5
    positions = rng.randint(0, LENGTH - len(MOTIF) + 1, size=n)
    X[planted] = plant_motif(X[planted], positions[planted])
    y = contains_motif(X).astype(numpy.float32)[:, None]
    return X, y


def train(seed=0):
    """Fit DemoModel by mean squared error with Adam.

    Parameters
    ----------
    seed : int, optional
        Seeds the training data (``seed``), the validation data (``seed + 1``), the batch
        order (``seed + 2``) and the initial parameters (``jax.random.key(seed)``).

    Returns
    -------
    params : dict
        The flax parameters, ``{"Conv_0": {...}, "Dense_0": {...}}``.
    valid_loss : float
        Mean squared error on the validation sequences.
    """

    X, y = make_data(N_TRAIN, seed)
    X_valid, y_valid = make_data(N_VALID, seed + 1)
    model = DemoModel()
    params = model.init(jax.random.key(seed), X[:1])["params"]
    optimizer = optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, STEPS))
    state = optimizer.init(params)

    def loss_fn(params, X, y):
        return jnp.mean((model.apply({"params": params}, X) - y) ** 2)

    @jax.jit
    def step(params, state, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    order = numpy.random.RandomState(seed + 2)
    for i in range(STEPS):
        batch = order.randint(0, N_TRAIN, size=BATCH)
        params, state, loss = step(params, state, X[batch], y[batch])
        if i % 250 == 0 or i == STEPS - 1:
            print(f"step {i:5d}  training loss {float(loss):.4f}")
    return params, float(jax.jit(loss_fn)(params, X_valid, y_valid))


def main():
    """Train with the command line's seed and write the weights."""

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=WEIGHTS_PATH, help="where to write the weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    params, valid_loss = train(args.seed)
    weights = {f"{layer}/{name}": numpy.asarray(value, dtype=numpy.float32)
        for layer, values in params.items() for name, value in values.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    numpy.savez_compressed(args.out, **weights)

    model = load_model(args.out)
    X, y = make_data(N_VALID, args.seed + 1)
    accuracy = float(((numpy.asarray(model(X)) > 0.5) == (y > 0.5)).mean())
    print(f"validation loss {valid_loss:.4f}, accuracy {accuracy:.3f}; wrote {args.out} "
        f"({os.path.getsize(args.out)} bytes) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
