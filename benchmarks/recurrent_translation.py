"""Translating a torch module with a recurrent layer: time to translate, first predict
(compile) and a warm predict, by input length (RESULTS.md, "Recurrent layers as one scan").
With ``--deep-lift-shap``: the first and a warm ``deep_lift_shap`` call on a Conv1d + LSTM
module, 2 sequences, ``n_shuffles=2``, by length.

    taskset -c 0 python -m benchmarks.recurrent_translation 100 200 1000
    taskset -c 0 python -m benchmarks.recurrent_translation --deep-lift-shap 48 200 1000
"""
import sys
import time
import warnings

import jax
import numpy as np
import torch

import jablate
from jablate.bridges.torch_export import translate


class ConvBiLSTM(torch.nn.Module):
    """Conv1d(4, 8, 9), a bidirectional LSTM(8, 8), mean over positions, Linear(16, 2)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, 9)
        self.rnn = torch.nn.LSTM(8, 8, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.rnn(self.conv(x).transpose(1, 2))[0].mean(1))


def main(lengths: list[int]) -> None:
    """Print one table row per length."""
    print("| length | translate | first predict (compile) | warm predict | max abs diff vs torch |")
    print("|---:|---:|---:|---:|---:|")
    for length in lengths:
        torch.manual_seed(0)
        module = ConvBiLSTM().eval()
        X = torch.nn.functional.one_hot(torch.randint(0, 4, (4, length)), 4).permute(
            0, 2, 1).float()
        start = time.perf_counter()
        translated = translate(module, X[:1])
        translating = time.perf_counter() - start
        Xj = jax.numpy.asarray(X.numpy())
        start = time.perf_counter()
        jablate.predict(translated, Xj)
        first = time.perf_counter() - start
        start = time.perf_counter()
        y = jablate.predict(translated, Xj)
        warm = time.perf_counter() - start
        with torch.no_grad():
            diff = float(np.abs(np.asarray(y) - module(X).numpy()).max())
        print(f"| {length:,} bp | {translating:.2f} s | {first:.2f} s | {warm * 1000:.1f} ms "
              f"| {diff:.1e} |", flush=True)


class ConvLSTM(torch.nn.Module):
    """Conv1d(4, 8, 9), an LSTM(8, 8), mean over positions, Linear(8, 2)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, 9)
        self.rnn = torch.nn.LSTM(8, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(self.conv(x).transpose(1, 2))[0].mean(1))


def attributions(lengths: list[int]) -> None:
    """Print the first and a warm deep_lift_shap call's seconds per length."""
    for length in lengths:
        torch.manual_seed(0)
        module = ConvLSTM().eval()
        X = torch.nn.functional.one_hot(torch.randint(0, 4, (2, length)), 4).permute(
            0, 2, 1).float()
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            jablate.deep_lift_shap(module, X, n_shuffles=2, random_state=0)
            seconds.append(time.perf_counter() - start)
        print(f"deep_lift_shap, {length:,} bp: first {seconds[0]:.1f} s, warm "
              f"{seconds[1]:.2f} s", flush=True)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    args = sys.argv[1:]
    if args[:1] == ["--deep-lift-shap"]:
        attributions([int(a) for a in args[1:]] or [48, 200, 1000])
    else:
        main([int(a) for a in args] or [100, 200, 1000])
