"""tangermeme's own ablation and shuffle tests, run against jablate.

The approach of tangermeme's ``tests/test_ablate.py`` and the shuffle part of
``tests/test_ersatz.py`` (https://github.com/jmschrei/tangermeme, v1.4.0 tree),
rewritten here: the same toy models with the same seeds, the same inputs and the
same assertions with tangermeme's expected values, calling ``jablate.ablate``,
``jablate.ablate_annotations``, ``jablate.shuffle`` and
``jablate.dinucleotide_shuffle`` where tangermeme's tests call tangermeme's.
Everything else (``substitute``, ``deep_lift_shap``, ``saturation_mutagenesis``,
and the ``shuffle``/``dinucleotide_shuffle`` that its ablate tests pass around)
stays tangermeme's, from PyPI, exactly as in those tests.

Only the CPU runs: the CUDA-only tests (fp16/bf16 and device preservation) are
left out. Where jablate differs from tangermeme by design, the test says which
tangermeme assertion it replaces and why, and asserts jablate's documented
behaviour instead:

* ``dinucleotide_shuffle`` samples uniformly (tangermeme's sampler is biased, its
  issue #27), so tangermeme's literal shuffles and its "only one arrangement"
  error for ``AATA`` do not apply;
* an unknown base (an all-zero column) is a symbol of its own rather than an
  error, and a region no shuffle can change comes back unchanged, with a warning;
* bad input is a ``ValueError`` (tangermeme's ``n=0`` gives torch's RuntimeError);
* results are jablate's own NamedTuples, with tangermeme's field names.
"""

import collections

import numpy
import pytest
from conftest import require
from numpy.testing import assert_array_almost_equal, assert_raises

import jablate

require("torch")
require("tangermeme")
import tangermeme.deep_lift_shap  # noqa: E402
import tangermeme.ersatz  # noqa: E402
import tangermeme.results  # noqa: E402
import tangermeme.saturation_mutagenesis  # noqa: E402
import torch  # noqa: E402
from tangermeme.utils import characters, one_hot_encode, random_one_hot  # noqa: E402

deep_lift_shap = tangermeme.deep_lift_shap.deep_lift_shap
saturation_mutagenesis = tangermeme.saturation_mutagenesis.saturation_mutagenesis
tm_shuffle = tangermeme.ersatz.shuffle
tm_dinucleotide_shuffle = tangermeme.ersatz.dinucleotide_shuffle

# tangermeme's shuffle calls numpy.arange on the 0-d tensors of an annotations row
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

DEVICE = "cpu"


# ----------------------------------------------------------------------------- models
# tangermeme's tests/toy_models.py, the ones its ablate tests use. Each test seeds
# torch with 0 right before building its model, so the weights are tangermeme's.


class SumModel(torch.nn.Module):
    def forward(self, X):
        return X.sum(axis=-1)


class FlattenDense(torch.nn.Module):
    def __init__(self, seq_len=100, n_outputs=3):
        super().__init__()
        self.dense = torch.nn.Linear(seq_len * 4, n_outputs)
        self.seq_len = seq_len

    def forward(self, X, alpha=0, beta=1):
        X = X.reshape(X.shape[0], self.seq_len * 4)
        return self.dense(X) * beta + alpha


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 12, (3,))

    def forward(self, X):
        return self.conv(X)


class Scatter(torch.nn.Module):
    def forward(self, X):
        return X.permute(0, 2, 1)


class ConvDense(torch.nn.Module):
    def __init__(self, n_outputs=3):
        super().__init__()
        self.dense = torch.nn.Linear(400, n_outputs)
        self.conv = torch.nn.Conv1d(4, 12, (3,))

    def forward(self, X, alpha=0):
        return self.conv(X) + alpha, self.dense(X.reshape(X.shape[0], -1))


class SmallDeepSEA(torch.nn.Module):
    def __init__(self, n_outputs=1):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(4, 32, (3,), padding="same")
        self.pool1 = torch.nn.MaxPool1d(3)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(32, 16, (3,), padding="same")
        self.pool2 = torch.nn.MaxPool1d(3)
        self.relu2 = torch.nn.ReLU()
        self.linear1 = torch.nn.Linear(176, 20)
        self.relu3 = torch.nn.ReLU()
        self.linear2 = torch.nn.Linear(20, n_outputs)

    def forward(self, X):
        X = self.relu1(self.pool1(self.conv1(X)))
        X = self.relu2(self.pool2(self.conv2(X)))
        X = X.reshape(X.shape[0], -1)
        X = self.relu3(self.linear1(X))
        return self.linear2(X)


def seeded(model_class, **kwargs):
    torch.manual_seed(0)
    return model_class(**kwargs)


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def X():
    X_ = random_one_hot((64, 4, 100), random_state=0).type(torch.float32)
    return tangermeme.ersatz.substitute(X_, "ACGTACGT")


@pytest.fixture(scope="module")
def alpha():
    return torch.from_numpy(numpy.random.RandomState(0).randn(64, 1)).type(torch.float32)


@pytest.fixture(scope="module")
def beta():
    return torch.from_numpy(numpy.random.RandomState(1).randn(64, 1)).type(torch.float32)


def assert_differs(a, b, decimal=6):
    assert_raises(AssertionError, assert_array_almost_equal, a, b, decimal)


# ----------------------------------------------------------------------------- expected values
# tangermeme's literal expectations, copied number for number.

SUMMODEL_BEFORE_8 = [
    [26., 23., 20., 31.], [27., 18., 29., 26.], [27., 25., 22., 26.], [21., 33., 18., 28.],
    [26., 22., 24., 28.], [28., 28., 22., 22.], [28., 16., 23., 33.], [20., 29., 31., 20.]]

FLATTENDENSE_BEFORE_8 = [
    [0.2161, 0.3207, 0.0147], [-0.0664, -0.0846, -0.2305], [-0.0801, 0.1022, -0.0152],
    [-0.0967, 0.0734, -0.0764], [0.0647, -0.1418, -0.1951], [-0.3011, -0.0956, -0.3683],
    [-0.2201, -0.0099, -0.2535], [-0.3861, 0.6259, -0.3530]]

FLATTENDENSE_AFTER_8x2 = [
    [[0.1324, 0.3553, 0.1465], [0.2455, 0.3811, 0.1003]],
    [[-0.1501, -0.0500, -0.0986], [-0.0370, -0.0243, -0.1448]],
    [[-0.1639, 0.1369, 0.1167], [-0.0508, 0.1626, 0.0705]],
    [[-0.1805, 0.1081, 0.0555], [-0.0674, 0.1338, 0.0092]],
    [[-0.0191, -0.1072, -0.0632], [0.0940, -0.0814, -0.1094]],
    [[-0.3848, -0.0610, -0.2364], [-0.2718, -0.0352, -0.2826]],
    [[-0.3039, 0.0247, -0.1216], [-0.1908, 0.0504, -0.1678]],
    [[-0.4698, 0.6605, -0.2211], [-0.3568, 0.6863, -0.2673]]]

# the first three shuffles of FlattenDense's dense head (ConvDense's second output)
DENSE_AFTER_2x3 = [
    [[0.1324, 0.3553, 0.1465], [0.2455, 0.3811, 0.1003], [0.1798, 0.2700, 0.1818]],
    [[-0.1501, -0.0500, -0.0986], [-0.0370, -0.0243, -0.1448], [-0.1027, -0.1353, -0.0634]]]

CONV_BEFORE_2x4x6 = [
    [[-0.2713, -0.5317, -0.3737, -0.4055, -0.3269, -0.3269],
     [-0.2988, 0.0980, -0.1013, -0.2560, 0.2595, 0.2595],
     [-0.1247, 0.1433, -0.3111, -0.3220, -0.4084, -0.4084],
     [-0.1362, -0.0067, 0.5554, 0.1810, 0.2007, 0.2007]],
    [[-0.4805, -0.1669, -0.5863, -0.0537, -0.2702, -0.1669],
     [-0.3709, -0.3077, -0.5910, 0.0165, -0.6573, -0.3077],
     [0.4396, -0.1558, 0.2097, -0.0929, 0.6608, -0.1558],
     [-0.0027, 0.4644, 0.1406, -0.1111, -0.3111, 0.4644]]]

SCATTER_BEFORE_4x5 = [
    [[1., 0., 0., 0.], [0., 0., 0., 1.], [0., 1., 0., 0.], [1., 0., 0., 0.], [0., 0., 0., 1.]],
    [[0., 1., 0., 0.], [0., 0., 1., 0.], [1., 0., 0., 0.], [0., 0., 0., 1.], [1., 0., 0., 0.]],
    [[0., 1., 0., 0.], [0., 0., 1., 0.], [0., 0., 0., 1.], [0., 0., 1., 0.], [0., 0., 1., 0.]],
    [[0., 1., 0., 0.], [1., 0., 0., 0.], [0., 0., 0., 1.], [1., 0., 0., 0.], [0., 0., 1., 0.]]]

CONVDENSE_BEFORE_2x4_42_46 = [
    [[-0.4906, -0.6971, 0.0397, -0.6363],
     [-0.3881, 0.2000, 0.2042, 0.1789],
     [0.8900, 0.4674, 0.5009, 0.5628],
     [-0.4831, -0.2439, -0.0296, -0.4263]],
    [[-0.5812, -0.2696, -0.7301, -0.7149],
     [0.2148, 0.2771, 0.1086, 0.0737],
     [0.2273, 0.3059, 0.5017, 0.4734],
     [-0.7614, -0.5326, -0.1356, -0.7810]]]

CONVDENSE_AFTER_2x2x4_42_46 = [
    [[[-4.9062e-01, -6.9711e-01, -4.2652e-04, -7.0773e-01],
      [-3.8814e-01, 2.0001e-01, 8.2816e-02, -1.9818e-01],
      [8.9002e-01, 4.6741e-01, 4.4968e-01, 4.3157e-01],
      [-4.8307e-01, -2.4389e-01, -2.8948e-01, -3.6251e-01]],
     [[-4.9062e-01, -6.9711e-01, 1.3353e-01, -3.0229e-01],
      [-3.8814e-01, 2.0001e-01, 2.7458e-01, -6.5521e-02],
      [8.9002e-01, 4.6741e-01, 5.6203e-01, 5.7124e-01],
      [-4.8307e-01, -2.4389e-01, -3.2021e-01, -4.2439e-01]]],
    [[[-5.8118e-01, -2.6960e-01, -7.7023e-01, -7.8636e-01],
      [2.1482e-01, 2.7712e-01, -1.2824e-02, -3.0346e-01],
      [2.2734e-01, 3.0591e-01, 4.5041e-01, 3.4224e-01],
      [-7.6136e-01, -5.3260e-01, -3.9553e-01, -7.1724e-01]],
     [[-5.8118e-01, -2.6960e-01, -6.3627e-01, -3.8092e-01],
      [2.1482e-01, 2.7712e-01, 1.7894e-01, -1.7080e-01],
      [2.2734e-01, 3.0591e-01, 5.6276e-01, 4.8191e-01],
      [-7.6136e-01, -5.3260e-01, -4.2626e-01, -7.7912e-01]]]]

CONVDENSE_ALPHA_BEFORE_2x4_42_46 = [
    [[1.2734, 1.0669, 1.8037, 1.1278],
     [1.3759, 1.9641, 1.9683, 1.9430],
     [2.6541, 2.2315, 2.2650, 2.3268],
     [1.2810, 1.5202, 1.7345, 1.3378]],
    [[-0.1810, 0.1306, -0.3300, -0.3147],
     [0.6150, 0.6773, 0.5087, 0.4738],
     [0.6275, 0.7061, 0.9018, 0.8736],
     [-0.3612, -0.1324, 0.2645, -0.3808]]]

CONVDENSE_ALPHA_AFTER_2x2x4_42_46 = [
    [[[1.2734, 1.0669, 1.7636, 1.0563],
      [1.3759, 1.9641, 1.8469, 1.5659],
      [2.6541, 2.2315, 2.2137, 2.1956],
      [1.2810, 1.5202, 1.4746, 1.4015]],
     [[1.2734, 1.0669, 1.8976, 1.4618],
      [1.3759, 1.9641, 2.0386, 1.6985],
      [2.6541, 2.2315, 2.3261, 2.3353],
      [1.2810, 1.5202, 1.4438, 1.3397]]],
    [[[-0.1810, 0.1306, -0.3701, -0.3862],
      [0.6150, 0.6773, 0.3873, 0.0967],
      [0.6275, 0.7061, 0.8506, 0.7424],
      [-0.3612, -0.1324, 0.0046, -0.3171]],
     [[-0.1810, 0.1306, -0.2361, 0.0192],
      [0.6150, 0.6773, 0.5791, 0.2294],
      [0.6275, 0.7061, 0.9629, 0.8821],
      [-0.3612, -0.1324, -0.0261, -0.3790]]]]


# ----------------------------------------------------------------------------- ablate: predictions


def test_ablate_summodel(X):
    model = seeded(SumModel)
    y_before, y_after = jablate.ablate(model, X, 46, 54, batch_size=5, device=DEVICE)

    assert y_before.shape == (64, 4) and y_before.dtype == torch.float32
    assert y_before.sum() == X.sum()
    assert_array_almost_equal(y_before[:8], SUMMODEL_BEFORE_8)

    assert y_after.shape == (64, 20, 4) and y_after.dtype == torch.float32
    assert y_after[:, 0].sum() == X.sum()
    assert_array_almost_equal(y_after[:8, 0], SUMMODEL_BEFORE_8)
    for i in range(8):
        assert_array_almost_equal(y_after[:, 0], y_after[:, i])
    assert_array_almost_equal(y_before, y_after[:, 0])

    y_before2, y_after2 = jablate.ablate(model, X, 0, -1, batch_size=1, device=DEVICE)
    assert_array_almost_equal(y_before, y_before2)
    assert_array_almost_equal(y_after, y_after2)


def test_ablate_flattendense(X):
    model = seeded(FlattenDense)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                       device=DEVICE)

    assert y_before.shape == (64, 3) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before[:8], FLATTENDENSE_BEFORE_8, 4)
    assert y_after.shape == (64, 20, 3) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:8, :2], FLATTENDENSE_AFTER_8x2, 4)

    y_before2, y_after2 = jablate.ablate(model, X, 0, -1, batch_size=1, device=DEVICE)
    assert_array_almost_equal(y_before, y_before2, 4)
    assert_differs(y_after, y_after2)


def test_ablate_flattendense_alpha_beta(X, alpha, beta):
    model = seeded(FlattenDense)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                       args=(alpha, beta), device=DEVICE)
    y_before0, y_after0 = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                         device=DEVICE)

    assert y_before.shape == (64, 3) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before, y_before0 * beta + alpha)
    assert_array_almost_equal(y_after, y_after0 * beta[:, None] + alpha[:, None])
    assert_array_almost_equal(y_before[:2], [[2.1151, 2.2849, 1.7879],
                                             [0.4407, 0.4519, 0.5412]], 4)

    assert y_after.shape == (64, 20, 3) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:2, :2], [
        [[1.9791, 2.3412, 2.0021], [2.1628, 2.3830, 1.9270]],
        [[0.4920, 0.4307, 0.4605], [0.4228, 0.4150, 0.4888]]], 4)


def test_ablate_conv(X):
    model = seeded(Conv)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                       device=DEVICE)

    assert y_before.shape == (64, 12, 98) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before[:2, :4, :6], CONV_BEFORE_2x4x6, 4)

    assert y_after.shape == (64, 20, 12, 98) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:2, :2, :4, :6],
                              [[CONV_BEFORE_2x4x6[0]] * 2, [CONV_BEFORE_2x4x6[1]] * 2], 4)

    for i in range(20):
        assert_array_almost_equal(y_before[:, :, :35], y_after[:, i, :, :35])
        assert_array_almost_equal(y_before[:, :, 60:], y_after[:, i, :, 60:])
        assert_differs(y_before[:, :, 35:60], y_after[:, i, :, 35:60])


def test_ablate_scatter(X):
    model = seeded(Scatter)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                       device=DEVICE)

    assert y_before.shape == (64, 100, 4) and y_before.dtype == torch.float32
    assert y_before.sum() == X.sum()
    assert (y_before.sum(axis=-1) == X.sum(axis=1)).all()
    assert (y_before.sum(axis=1) == X.sum(axis=-1)).all()
    assert_array_almost_equal(y_before[:4, :5], SCATTER_BEFORE_4x5, 4)

    assert y_after.shape == (64, 20, 100, 4) and y_after.dtype == torch.float32
    assert y_after[:, 0].sum() == X.sum()
    assert_array_almost_equal(y_after[:4, :2, :5], [[s, s] for s in SCATTER_BEFORE_4x5], 4)


def test_ablate_convdense(X):
    model = seeded(ConvDense)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=2,
                                       device=DEVICE, n=3)

    assert len(y_before) == 2
    assert y_before[0].shape == (64, 12, 98) and y_before[1].shape == (64, 3)
    assert y_before[0].dtype == y_before[1].dtype == torch.float32
    assert_array_almost_equal(y_before[0][:2, :4, 42:46], CONVDENSE_BEFORE_2x4_42_46, 4)
    assert_array_almost_equal(y_before[1][:4], FLATTENDENSE_BEFORE_8[:4], 4)

    assert len(y_after) == 2
    assert y_after[0].shape == (64, 3, 12, 98) and y_after[1].shape == (64, 3, 3)
    assert y_after[0].dtype == y_after[1].dtype == torch.float32
    assert_array_almost_equal(y_after[0][:2, :2, :4, 42:46], CONVDENSE_AFTER_2x2x4_42_46, 4)
    assert_array_almost_equal(y_after[1][:2, :3], DENSE_AFTER_2x3, 4)


def test_ablate_convdense_alpha(X, alpha):
    model = seeded(ConvDense)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0,
                                       args=(alpha[:, :, None],), n=3, batch_size=2,
                                       device=DEVICE)

    assert len(y_before) == 2
    assert y_before[0].shape == (64, 12, 98) and y_before[1].shape == (64, 3)
    assert y_before[0].dtype == y_before[1].dtype == torch.float32
    assert_array_almost_equal(y_before[0][:2, :4, 42:46], CONVDENSE_ALPHA_BEFORE_2x4_42_46, 4)
    assert_array_almost_equal(y_before[1][:4], FLATTENDENSE_BEFORE_8[:4], 4)

    assert len(y_after) == 2
    assert y_after[0].shape == (64, 3, 12, 98) and y_after[1].shape == (64, 3, 3)
    assert y_after[0].dtype == y_after[1].dtype == torch.float32
    assert_array_almost_equal(y_after[0][:2, :2, :4, 42:46],
                              CONVDENSE_ALPHA_AFTER_2x2x4_42_46, 4)
    assert_array_almost_equal(y_after[1][:2, :3], DENSE_AFTER_2x3, 4)


def test_ablate_convdense_batch_size(X, alpha):
    model = seeded(ConvDense)
    results = [jablate.ablate(model, X, 46, 54, random_state=0, args=(alpha[:, :, None],),
                              batch_size=batch_size, n=4, device=DEVICE)
               for batch_size in (1, 5, 68)]

    for y_before, y_after in results:
        assert len(y_before) == len(y_after) == 2
        assert y_before[0].shape == (64, 12, 98) and y_before[1].shape == (64, 3)
        assert y_after[0].shape == (64, 4, 12, 98) and y_after[1].shape == (64, 4, 3)

    (y_before0, y_after0) = results[0]
    for y_before, y_after in results[1:]:
        for head in (0, 1):
            assert_array_almost_equal(y_before0[head], y_before[head])
            assert_array_almost_equal(y_after0[head], y_after[head])


def test_ablate_raises_shape(X, alpha):
    model = seeded(ConvDense)
    for bad_X in (X[0], X[:, 0], X.unsqueeze(0)):
        assert_raises(ValueError, jablate.ablate, model, bad_X, 46, 54, device=DEVICE)
    for bad_args in ((alpha[:2],), alpha, (alpha[:2, None],)):
        assert_raises(ValueError, jablate.ablate, model, X, 46, 54, args=bad_args,
                      device=DEVICE)


def test_ablate_raises_args(X, alpha, beta):
    model = seeded(FlattenDense)
    for start, end in ((-6, 5), (7, 5), (7, 5000)):
        assert_raises(ValueError, jablate.ablate, model, X, start, end, device=DEVICE)
    for bad_args in (alpha, (alpha[:5],), (alpha, beta[:5])):
        assert_raises(ValueError, jablate.ablate, model, X, 5, 10, args=bad_args,
                      device=DEVICE)


# -------------------------------------------------------------------------- ablate: deep_lift_shap


def test_ablate_deep_lift_shap(X):
    model = seeded(SmallDeepSEA)
    y_before, y_after = jablate.ablate(model, X[:2], 45, 55, func=deep_lift_shap, batch_size=1,
                                       n=2, n_shuffles=3, device=DEVICE, random_state=0)

    assert y_before.shape == (2, 4, 100) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before[:, :, 48:52], [
        [[0.0000e+00, 0.0000e+00, -4.5916e-05, -0.0000e+00],
         [0.0000e+00, -0.0000e+00, 0.0000e+00, 1.7308e-03],
         [3.9663e-04, 0.0000e+00, 0.0000e+00, 0.0000e+00],
         [0.0000e+00, 3.3410e-04, 0.0000e+00, 0.0000e+00]],
        [[0.0000e+00, 0.0000e+00, -1.6943e-03, -0.0000e+00],
         [-0.0000e+00, -0.0000e+00, -0.0000e+00, -1.0988e-03],
         [7.5694e-04, -0.0000e+00, 0.0000e+00, 0.0000e+00],
         [-0.0000e+00, -1.0072e-04, -0.0000e+00, 0.0000e+00]]], 4)

    assert y_after.shape == (2, 2, 4, 100) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:, :, :, 48:52], [
        [[[0.0000e+00, 1.3726e-05, -0.0000e+00, -0.0000e+00],
          [0.0000e+00, -0.0000e+00, -5.2354e-04, 0.0000e+00],
          [0.0000e+00, -0.0000e+00, -0.0000e+00, -7.4029e-04],
          [1.4501e-04, -0.0000e+00, 0.0000e+00, 0.0000e+00]],
         [[0.0000e+00, -0.0000e+00, 0.0000e+00, 0.0000e+00],
          [3.3442e-05, -0.0000e+00, -0.0000e+00, -3.9522e-03],
          [0.0000e+00, 0.0000e+00, -0.0000e+00, -0.0000e+00],
          [-0.0000e+00, 4.3980e-05, 8.9129e-04, -0.0000e+00]]],
        [[[-0.0000e+00, 1.9562e-04, -0.0000e+00, 0.0000e+00],
          [0.0000e+00, -0.0000e+00, 1.9479e-03, 0.0000e+00],
          [-7.3144e-04, 0.0000e+00, -0.0000e+00, -6.6028e-04],
          [-0.0000e+00, -0.0000e+00, 0.0000e+00, 0.0000e+00]],
         [[-0.0000e+00, 0.0000e+00, 0.0000e+00, -1.1882e-04],
          [-2.0654e-03, -0.0000e+00, 0.0000e+00, -0.0000e+00],
          [-0.0000e+00, -3.3294e-04, 0.0000e+00, 0.0000e+00],
          [-0.0000e+00, -0.0000e+00, 4.6053e-04, 0.0000e+00]]]], 4)

    y_before2, y_after2 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap,
                                         batch_size=64, n=2, n_shuffles=3, device=DEVICE,
                                         random_state=0)
    assert_array_almost_equal(y_before, y_before2[:2], 4)
    assert_array_almost_equal(y_after, y_after2[:2], 4)


def test_ablate_deep_lift_shap_flattendense(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before, y_after = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                       n_shuffles=5, device=DEVICE, random_state=0)

    assert y_before.shape == (8, 4, 100) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before[:2, :, 48:52], [
        [[-0.0000, -0.0000, 0.0472, 0.0000],
         [-0.0000, -0.0000, -0.0000, -0.0628],
         [0.0212, -0.0000, -0.0000, -0.0000],
         [-0.0000, 0.0091, -0.0000, 0.0000]],
        [[-0.0000, 0.0000, 0.0490, 0.0000],
         [-0.0000, -0.0000, -0.0000, -0.0293],
         [0.0207, 0.0000, -0.0000, 0.0000],
         [-0.0000, 0.0229, -0.0000, 0.0000]]], 4)

    assert y_after.shape == (8, 3, 4, 100) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:2, :2, :, 48:52], [
        [[[0.0000, 0.0081, 0.0000, 0.0000],
          [-0.0000, -0.0000, -0.0432, -0.0000],
          [0.0000, 0.0000, -0.0000, 0.0065],
          [-0.0068, 0.0000, -0.0000, 0.0000]],
         [[-0.0000, 0.0000, 0.0000, 0.0000],
          [-0.0049, -0.0000, -0.0000, -0.0693],
          [0.0000, -0.0000, -0.0000, -0.0000],
          [-0.0000, 0.0183, -0.0005, 0.0000]]],
        [[[0.0000, 0.0054, 0.0000, 0.0000],
          [0.0000, -0.0000, -0.0339, -0.0000],
          [0.0271, -0.0000, -0.0000, -0.0302],
          [-0.0000, 0.0000, -0.0000, 0.0000]],
         [[-0.0000, -0.0000, 0.0000, 0.0410],
          [-0.0210, -0.0000, -0.0000, -0.0000],
          [0.0000, -0.0118, -0.0000, -0.0000],
          [-0.0000, 0.0000, -0.0046, 0.0000]]]], 4)

    y_before2, y_after2 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5, batch_size=64, device=DEVICE,
                                         random_state=0)
    assert_array_almost_equal(y_before, y_before2)
    assert_array_almost_equal(y_after, y_after2)


def test_ablate_deep_lift_shap_vs_attribute(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before, y_after = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                       n_shuffles=5, device=DEVICE, random_state=0)
    y_after = y_after.reshape(-1, *y_after.shape[2:])

    X1 = tm_shuffle(X[:8], start=45, end=55, n=3, random_state=0).reshape(-1, *X.shape[1:])
    y_before0 = deep_lift_shap(model, X[:8], n_shuffles=5, device=DEVICE, random_state=0)
    y_after0 = deep_lift_shap(model, X1, n_shuffles=5, device=DEVICE, random_state=0)

    assert y_before.shape == (8, 4, 100) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before, y_before0, 4)
    assert y_after.shape == (24, 4, 100) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after, y_after0, 4)


def test_ablate_deep_lift_shap_alpha(X, alpha):
    # tangermeme hands a foreign func its args as given, here with 64 rows for 8 sequences
    model = seeded(FlattenDense, n_outputs=1)
    y_before0, y_after0 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5, device=DEVICE, random_state=0)
    y_before1, y_after1 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5, args=(alpha,), device=DEVICE,
                                         random_state=0)

    assert y_before0.shape == (8, 4, 100) and y_before0.dtype == torch.float32
    assert_array_almost_equal(y_before0, y_before1, 4)
    assert y_after0.shape == (8, 3, 4, 100) and y_after0.dtype == torch.float32
    assert_array_almost_equal(y_after0, y_after1, 4)


def test_ablate_deep_lift_shap_alpha_beta(X, alpha, beta):
    model = seeded(FlattenDense, n_outputs=1)
    y_before0, y_after0 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5, device=DEVICE, random_state=0)
    y_before1, y_after1 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5, args=(alpha, beta), device=DEVICE,
                                         random_state=0)

    assert y_before0.shape == (8, 4, 100) and y_before0.dtype == torch.float32
    assert_differs(y_before0, y_before1, 4)
    assert y_after0.shape == (8, 3, 4, 100) and y_after0.dtype == torch.float32
    assert_differs(y_after0, y_after1, 4)


def test_ablate_deep_lift_shap_n_shuffles(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before0, y_after0 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap,
                                         n_shuffles=2, device=DEVICE, random_state=0)
    y_before1, y_after1 = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap,
                                         n_shuffles=10, device=DEVICE, random_state=0)

    before_2 = [
        [[0.0000, -0.0000, -0.0000], [0.0000, 0.0000, 0.0160],
         [0.0000, -0.0000, 0.0000], [-0.0000, -0.0247, 0.0000]],
        [[-0.0000, 0.0000, -0.0076], [0.0000, 0.0000, 0.0000],
         [-0.0000, 0.0116, -0.0000], [-0.0000, -0.0000, 0.0000]]]
    before_10 = [
        [[0.0000, -0.0000, -0.0000], [0.0000, 0.0000, 0.0115],
         [0.0000, 0.0000, -0.0000], [-0.0000, -0.0209, 0.0000]],
        [[-0.0000, 0.0000, -0.0052], [0.0000, 0.0000, 0.0000],
         [-0.0000, 0.0079, -0.0000], [-0.0000, -0.0000, 0.0000]]]

    for y_before, y_after in ((y_before0, y_after0), (y_before1, y_after1)):
        assert y_before.shape == (8, 4, 100) and y_before.dtype == torch.float32
        assert y_after.shape == (8, 20, 4, 100) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_before0[:2, :, :3], before_2, 4)
    assert_array_almost_equal(y_before1[:2, :, :3], before_10, 4)

    assert_array_almost_equal(y_after0[:2, :2, :, :3], [
        [[[0.0000, -0.0000, -0.0000], [0.0000, 0.0000, 0.0177],
          [0.0000, 0.0000, 0.0000], [-0.0000, -0.0213, 0.0000]],
         before_2[0]],
        [before_2[1], before_2[1]]], 4)
    assert_array_almost_equal(y_after1[:2, :2, :, :3], [
        [[[0.0000, -0.0000, -0.0000], [0.0000, 0.0000, 0.0119],
          [0.0000, 0.0000, -0.0000], [-0.0000, -0.0202, 0.0000]],
         [[0.0000, -0.0000, -0.0000], [0.0000, 0.0000, 0.0099],
          [0.0000, 0.0000, -0.0000], [-0.0000, -0.0209, 0.0000]]],
        [before_10[1], before_10[1]]], 4)


def test_ablate_deep_lift_shap_hypothetical(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before, y_after = jablate.ablate(model, X[:8], 44, 55, func=deep_lift_shap, n=3,
                                       n_shuffles=5, hypothetical=True, device=DEVICE,
                                       random_state=0)

    before = [
        [[0.0000, -0.0069, -0.0089, -0.0435],
         [0.0474, 0.0000, 0.0104, -0.0193],
         [0.0025, -0.0015, -0.0056, -0.0410],
         [-0.0237, -0.0247, 0.0063, 0.0048]],
        [[-0.0474, 0.0036, -0.0037, -0.0058],
         [0.0000, 0.0105, 0.0156, 0.0184],
         [-0.0449, 0.0090, -0.0004, -0.0034],
         [-0.0712, -0.0142, 0.0115, 0.0425]]]
    assert y_before.shape == (8, 4, 100) and y_before.dtype == torch.float32
    assert_array_almost_equal(y_before[:2, :, :4], before, 4)

    assert y_after.shape == (8, 3, 4, 100) and y_after.dtype == torch.float32
    assert_array_almost_equal(y_after[:2, :2, :, :4], [
        [before[0],
         [[0.0000, -0.0069, -0.0082, -0.0343],
          [0.0474, 0.0000, 0.0111, -0.0101],
          [0.0025, -0.0015, -0.0049, -0.0319],
          [-0.0237, -0.0247, 0.0069, 0.0140]]],
        [[[-0.0474, 0.0036, -0.0037, -0.0063],
          [0.0000, 0.0105, 0.0156, 0.0179],
          [-0.0449, 0.0090, -0.0004, -0.0039],
          [-0.0712, -0.0142, 0.0115, 0.0420]],
         before[1]]], 4)

    y_before1, y_after1 = jablate.ablate(model, X[:8], 44, 55, func=deep_lift_shap, n=3,
                                         n_shuffles=5,
                                         additional_func_kwargs={"hypothetical": True},
                                         device=DEVICE, random_state=0)
    assert_array_almost_equal(y_before, y_before1, 4)
    assert_array_almost_equal(y_after, y_after1, 4)


def test_ablate_deep_lift_shap_raises(X):
    model = seeded(FlattenDense, n_outputs=1)
    assert_raises(TypeError, jablate.ablate, model, X, 44, 55, n=3, func=deep_lift_shap,
                  device=DEVICE, additional_func_kwargs={"device": "cpu"}, n_shuffles=5)
    assert_raises(TypeError, jablate.ablate, model, X, 44, 55, n=3, func=deep_lift_shap,
                  device=DEVICE, end=10)


# ----------------------------------------------------------------------------- ablate: arguments


def test_ablate_negative_end(X):
    model = seeded(FlattenDense)
    y_before0, y_after0 = jablate.ablate(model, X, 10, -5, random_state=0, batch_size=8,
                                         device=DEVICE)
    y_before1, y_after1 = jablate.ablate(model, X, 10, 96, random_state=0, batch_size=8,
                                         device=DEVICE)
    assert_array_almost_equal(y_before0, y_before1, 4)
    assert_array_almost_equal(y_after0, y_after1, 4)


def test_ablate_n_equals_1(X):
    model = seeded(FlattenDense)
    y_before, y_after = jablate.ablate(model, X, 46, 54, random_state=0, n=1, batch_size=8,
                                       device=DEVICE)
    assert y_before.shape == (64, 3) and y_before.dtype == torch.float32
    assert y_after.shape == (64, 1, 3) and y_after.dtype == torch.float32


def test_ablate_batch_size_one_remainder(X):
    model = seeded(FlattenDense)
    y_before0, y_after0 = jablate.ablate(model, X, 46, 54, random_state=0, n=3, batch_size=63,
                                         device=DEVICE)
    y_before1, y_after1 = jablate.ablate(model, X, 46, 54, random_state=0, n=3, batch_size=64,
                                         device=DEVICE)
    assert y_before0.shape == (64, 3) and y_after0.shape == (64, 3, 3)
    assert_array_almost_equal(y_before0, y_before1, 4)
    assert_array_almost_equal(y_after0, y_after1, 4)


def test_ablate_random_state_object(X):
    model = seeded(FlattenDense)
    y_before0, y_after0 = jablate.ablate(model, X, 46, 54,
                                         random_state=numpy.random.RandomState(0),
                                         batch_size=8, device=DEVICE)
    y_before1, y_after1 = jablate.ablate(model, X, 46, 54, random_state=0, batch_size=8,
                                         device=DEVICE)
    assert_array_almost_equal(y_before0, y_before1, 4)
    assert_array_almost_equal(y_after0, y_after1, 4)


def test_ablate_random_state_none_nondeterministic(X):
    model = seeded(FlattenDense)
    y_before0, y_after0 = jablate.ablate(model, X, 46, 54, random_state=None, batch_size=8,
                                         device=DEVICE)
    y_before1, y_after1 = jablate.ablate(model, X, 46, 54, random_state=None, batch_size=8,
                                         device=DEVICE)
    assert_array_almost_equal(y_before0, y_before1, 4)
    assert_differs(y_after0, y_after1, 4)


@pytest.mark.parametrize("dinucleotide_shuffle", [tm_dinucleotide_shuffle,
                                                  jablate.dinucleotide_shuffle],
                         ids=["tangermeme", "jablate"])
def test_ablate_dinucleotide_shuffle(X, dinucleotide_shuffle):
    # tangermeme's test passes its own dinucleotide_shuffle; jablate's is run as well
    model = seeded(FlattenDense)
    y_before, y_after = jablate.ablate(model, X, 20, 80, shuffle_fn=dinucleotide_shuffle,
                                       random_state=0, n=5, batch_size=8, device=DEVICE)
    assert y_before.shape == (64, 3) and y_before.dtype == torch.float32
    assert y_after.shape == (64, 5, 3) and y_after.dtype == torch.float32

    _, y_after_default = jablate.ablate(model, X, 20, 80, random_state=0, n=5, batch_size=8,
                                        device=DEVICE)
    assert_differs(y_after, y_after_default, 4)


def test_ablate_additional_func_kwargs_random_state_collision(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before0, _ = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=2, n_shuffles=3,
                                  device=DEVICE, random_state=0)
    y_before1, _ = jablate.ablate(model, X[:8], 45, 55, func=deep_lift_shap, n=2, n_shuffles=3,
                                  device=DEVICE, random_state=0,
                                  additional_func_kwargs={"random_state": 1})
    assert_differs(y_before0, y_before1, 4)

    y_direct = deep_lift_shap(model, X[:8], n_shuffles=3, device=DEVICE, random_state=1)
    assert_array_almost_equal(y_before1, y_direct, 4)


def test_ablate_func_saturation_mutagenesis(X):
    model = seeded(FlattenDense, n_outputs=1)
    y_before, y_after = jablate.ablate(model, X[:4], 45, 55, func=saturation_mutagenesis, n=2,
                                       batch_size=8, device=DEVICE, random_state=0)

    assert y_before.shape == (4, 4, 100) and y_before.dtype == torch.float32
    assert y_after.shape == (4, 2, 4, 100) and y_after.dtype == torch.float32

    y_direct = saturation_mutagenesis(model, X[:4], batch_size=8, device=DEVICE)
    assert_array_almost_equal(y_before, y_direct, 4)

    assert_array_almost_equal(y_after[:2, :, :, 45:55], [
        [[[-0.0000, 0.0000, 0.0000, -0.0000, 0.0068, 0.0000, 0.0000, 0.0000, -0.0000, 0.0236],
          [-0.0105, 0.0000, -0.0000, -0.0000, -0.0000, -0.0321, -0.0000, -0.0000, 0.0177,
           0.0000],
          [-0.0000, 0.0000, -0.0000, 0.0000, 0.0000, -0.0000, -0.0067, 0.0308, -0.0000,
           -0.0000],
          [0.0000, -0.0073, 0.0235, -0.0119, 0.0000, -0.0000, 0.0000, -0.0000, 0.0000,
           -0.0000]],
         [[-0.0000, 0.0001, 0.0256, -0.0000, 0.0000, 0.0000, 0.0000, 0.0000, -0.0000, 0.0000],
          [-0.0000, 0.0000, -0.0000, -0.0054, -0.0000, -0.0000, -0.0555, -0.0207, 0.0000,
           0.0000],
          [-0.0351, 0.0000, -0.0000, 0.0000, 0.0000, -0.0000, -0.0000, 0.0000, -0.0244,
           -0.0000],
          [0.0000, -0.0000, 0.0000, -0.0000, 0.0229, -0.0029, 0.0000, -0.0000, 0.0000,
           -0.0011]]],
        [[[-0.0000, 0.0000, 0.0000, -0.0000, 0.0068, 0.0000, 0.0000, 0.0000, -0.0030, 0.0236],
          [-0.0105, 0.0000, -0.0000, -0.0000, -0.0000, -0.0321, -0.0000, -0.0000, 0.0000,
           0.0000],
          [-0.0000, 0.0000, -0.0000, 0.0201, 0.0000, -0.0000, -0.0067, 0.0308, -0.0000,
           -0.0000],
          [0.0000, -0.0073, 0.0235, -0.0000, 0.0000, -0.0000, 0.0000, -0.0000, 0.0000,
           -0.0000]],
         [[-0.0000, 0.0001, 0.0256, -0.0000, 0.0000, 0.0000, 0.0364, 0.0000, -0.0000, 0.0000],
          [-0.0000, 0.0000, -0.0000, -0.0054, -0.0000, -0.0000, -0.0000, -0.0207, 0.0000,
           0.0000],
          [-0.0351, 0.0000, -0.0000, 0.0000, 0.0001, -0.0000, -0.0000, 0.0000, -0.0244,
           -0.0000],
          [0.0000, -0.0000, 0.0000, -0.0000, 0.0000, -0.0029, 0.0000, -0.0000, 0.0000,
           -0.0011]]]], 4)


def test_ablate_rejects_args_device_mismatch():
    # args on another device than X: a clear ValueError up front (the meta device
    # stands in for CUDA)
    model = seeded(FlattenDense)
    X = random_one_hot((2, 4, 100), random_state=0).type(torch.float32)
    alpha_meta = torch.zeros(2, 1, device="meta")
    with pytest.raises(ValueError, match="same device"):
        jablate.ablate(model, X, start=10, end=20, n=2, args=(alpha_meta,))


def test_ablate_rejects_empty_X():
    model = FlattenDense()
    X = torch.zeros(0, 4, 100, dtype=torch.float32)
    with pytest.raises(ValueError, match="at least one example"):
        jablate.ablate(model, X, start=10, end=20, n=2, random_state=0)


def test_ablate_accepts_fp64(X):
    model = FlattenDense()
    y_before, y_after = jablate.ablate(model, X.type(torch.float64), start=10, end=20, n=2,
                                       device=DEVICE, random_state=0)
    assert y_before.dtype == torch.float32
    assert y_after.dtype == torch.float32


def test_ablate_returns_named_tuple(X):
    # tangermeme checks for its own PerturbationResult; jablate returns its own
    # NamedTuple with tangermeme's fields.
    model = seeded(FlattenDense)
    result = jablate.ablate(model, X, start=10, end=20, n=2, device=DEVICE, random_state=0)

    y_before, y_after = result
    assert torch.equal(y_before, result[0]) and torch.equal(y_after, result[1])
    assert torch.equal(result.y_before, y_before) and torch.equal(result.y_after, y_after)
    assert isinstance(result, tuple)
    assert isinstance(result, jablate.PerturbationResult)
    assert result._fields == tangermeme.results.PerturbationResult._fields


# ----------------------------------------------------------------------------- ablate_annotations


def test_ablate_annotations_basic(X):
    model = seeded(FlattenDense)
    annotations = torch.tensor([[0, 10, 20], [3, 40, 50], [3, 60, 80]])
    y_befores, y_afters = jablate.ablate_annotations(model, X, annotations, random_state=0,
                                                     n=3, batch_size=8, device=DEVICE)

    assert y_befores.shape == (3, 1, 3) and y_afters.shape == (3, 1, 3, 3)
    assert y_befores.dtype == y_afters.dtype == torch.float32
    for i, (idx, start, end) in enumerate(annotations):
        yb, ya = jablate.ablate(model, X[idx:idx + 1], start=int(start), end=int(end),
                                random_state=0, n=3, batch_size=8, device=DEVICE)
        assert_array_almost_equal(y_befores[i], yb, 4)
        assert_array_almost_equal(y_afters[i], ya, 4)


def test_ablate_annotations_multihead(X):
    model = seeded(ConvDense)
    annotations = torch.tensor([[0, 10, 20], [3, 40, 50]])
    y_befores, y_afters = jablate.ablate_annotations(model, X, annotations, random_state=0,
                                                     n=3, batch_size=2, device=DEVICE)

    assert isinstance(y_befores, list) and isinstance(y_afters, list)
    assert len(y_befores) == len(y_afters) == 2
    assert y_befores[0].shape == (2, 1, 12, 98) and y_befores[1].shape == (2, 1, 3)
    assert y_afters[0].shape == (2, 1, 3, 12, 98) and y_afters[1].shape == (2, 1, 3, 3)
    assert all(y.dtype == torch.float32 for y in y_befores + y_afters)

    for i, (idx, start, end) in enumerate(annotations):
        yb, ya = jablate.ablate(model, X[idx:idx + 1], start=int(start), end=int(end),
                                random_state=0, n=3, batch_size=2, device=DEVICE)
        for head in (0, 1):
            assert_array_almost_equal(y_befores[head][i], yb[head], 4)
            assert_array_almost_equal(y_afters[head][i], ya[head], 4)


def test_ablate_annotations_kwargs(X):
    model = seeded(FlattenDense)
    annotations = torch.tensor([[0, 10, 20], [3, 40, 50]])
    y_befores0, y_afters0 = jablate.ablate_annotations(model, X, annotations, random_state=0,
                                                       n=4, batch_size=3, device=DEVICE)
    y_befores1, y_afters1 = jablate.ablate_annotations(model, X, annotations, random_state=0,
                                                       n=4, batch_size=8, device=DEVICE)
    y_befores2, y_afters2 = jablate.ablate_annotations(model, X, annotations, random_state=1,
                                                       n=4, batch_size=3, device=DEVICE)

    assert y_afters0.shape == (2, 1, 4, 3)
    assert_array_almost_equal(y_befores0, y_befores1, 4)
    assert_array_almost_equal(y_afters0, y_afters1, 4)
    assert_array_almost_equal(y_befores0, y_befores2, 4)
    assert_differs(y_afters0, y_afters2, 4)


def test_ablate_annotations_func(X):
    model = seeded(FlattenDense, n_outputs=1)
    annotations = torch.tensor([[0, 45, 55], [3, 45, 55]])
    y_befores, y_afters = jablate.ablate_annotations(model, X, annotations, func=deep_lift_shap,
                                                     n=2, n_shuffles=3, device=DEVICE,
                                                     random_state=0)

    assert y_befores.shape == (2, 1, 4, 100) and y_afters.shape == (2, 1, 2, 4, 100)
    assert y_befores.dtype == y_afters.dtype == torch.float32
    for i, (idx, start, end) in enumerate(annotations):
        yb, ya = jablate.ablate(model, X[idx:idx + 1], start=int(start), end=int(end),
                                func=deep_lift_shap, n=2, n_shuffles=3, device=DEVICE,
                                random_state=0)
        assert_array_almost_equal(y_befores[i], yb, 4)
        assert_array_almost_equal(y_afters[i], ya, 4)


def test_ablate_annotations_empty(X):
    model = seeded(FlattenDense)
    annotations = torch.zeros(0, 3, dtype=torch.int64)
    assert_raises(ValueError, jablate.ablate_annotations, model, X, annotations, device=DEVICE)


def test_ablate_annotations_returns_named_tuple(X):
    model = seeded(FlattenDense)
    annotations = torch.tensor([[0, 5, 10], [1, 5, 10]], dtype=torch.int64)
    result = jablate.ablate_annotations(model, X, annotations, n=2, device=DEVICE,
                                        random_state=0)

    y_befores, y_afters = result
    assert torch.equal(result.y_befores, y_befores) and torch.equal(result.y_afters, y_afters)
    assert isinstance(result, jablate.PerturbationAnnotationsResult)
    assert result._fields == tangermeme.results.PerturbationAnnotationsResult._fields


# ----------------------------------------------------------------------------- ersatz: shuffle


SEQ = "CACATCATCTCATCATCTGCTGACTACTGACGTAGTCTGACTGACTGACTGACTACTGACTGACTGAC"


@pytest.fixture(scope="module")
def X_seq():
    return one_hot_encode(SEQ).unsqueeze(0)


def test_shuffle(X_seq):
    X = X_seq
    X_shuf = jablate.shuffle(X, start=10, end=30, random_state=0)

    assert X_shuf.shape == (1, 1, 4, X.shape[-1])
    assert X_shuf.sum() == X.sum()
    assert (X_shuf != X).any()
    assert (X_shuf[:, 0, :, :10] == X[:, :, :10]).all()
    assert (X_shuf[:, 0, :, 30:] == X[:, :, 30:]).all()
    assert_array_almost_equal(X_shuf[:, 0].sum(dim=-1), X.sum(dim=-1))
    assert_differs(X_shuf[:, 0], X)
    # and, for an int seed, tangermeme's own permutation
    assert torch.equal(X_shuf, tm_shuffle(X, start=10, end=30, random_state=0))


def test_shuffle_default(X_seq):
    X = X_seq
    X_shuf = jablate.shuffle(X, random_state=0)

    assert X_shuf.shape == (1, 1, 4, X.shape[-1])
    assert X_shuf.sum() == X.sum()
    assert ((X_shuf[:, 0] != X).sum(dim=(-1, -2)) > 0).all()
    assert_array_almost_equal(X_shuf[:, 0].sum(dim=-1), X.sum(dim=-1))
    assert_differs(X_shuf[:, 0], X)
    assert torch.equal(X_shuf, tm_shuffle(X, random_state=0))


def test_shuffle_raises_ends(X_seq):
    for start, end in ((-3, 10), (500, 10), (5, 3), (5, 1000)):
        assert_raises(ValueError, jablate.shuffle, X_seq, start=start, end=end)


def test_shuffle_n_zero(X_seq):
    # tangermeme: RuntimeError (from torch, deep inside); jablate: a ValueError naming n
    with pytest.raises(ValueError, match="n"):
        jablate.shuffle(X_seq, 5, 10, n=0)


def test_shuffle_negative_end_one_off_check(X_seq):
    s_neg = jablate.shuffle(X_seq, 0, -1, random_state=0)
    s_pos = jablate.shuffle(X_seq, 0, X_seq.shape[-1], random_state=0)
    assert_array_almost_equal(s_neg, s_pos)


# -------------------------------------------------------------------- ersatz: dinucleotide_shuffle


def dinucleotide_counts(seq):
    return collections.Counter(seq[i:i + 2] for i in range(len(seq) - 1))


def all_dinucleotide_shuffles(seq):
    """Every sequence with the first symbol and the dinucleotide counts of ``seq``
    (Eulerian paths of its dinucleotide multigraph, by depth-first search)."""
    remaining, found = dinucleotide_counts(seq), set()

    def extend(path):
        if len(path) == len(seq):
            found.add(path)
            return
        for pair, k in list(remaining.items()):
            if k and pair[0] == path[-1]:
                remaining[pair] -= 1
                extend(path + pair[1])
                remaining[pair] += 1

    extend(seq[0])
    return found


def assert_same_dinucleotides(original, shuffled):
    assert dinucleotide_counts(original) == dinucleotide_counts(shuffled)


def test_dinucleotide_shuffle():
    seq = "CATCACGCATACG"
    motif = one_hot_encode(seq).unsqueeze(0)
    dimotif = jablate.dinucleotide_shuffle(motif, random_state=0)
    assert dimotif.shape == (1, 20, 4, 13)
    assert dimotif.dtype == torch.int8

    # tangermeme asserts its sampler's first two draws, 'CGCATCACATACG' and
    # 'CATCGCATACACG'. jablate samples uniformly from its own stream instead, so
    # every draw must be one of the valid shuffles, and the draws must vary.
    valid = all_dinucleotide_shuffles(seq)
    assert {"CGCATCACATACG", "CATCGCATACACG"} <= valid
    drawn = [characters(dimotif[0, i]) for i in range(20)]
    assert set(drawn) <= valid
    assert len(set(drawn)) > 1

    assert jablate.dinucleotide_shuffle(motif, n=5, random_state=0).shape == (1, 5, 4, 13)
    dimotif = jablate.dinucleotide_shuffle(torch.cat([motif] * 8), n=7, random_state=0)
    assert dimotif.shape == (8, 7, 4, 13)


def test_dinucleotide_shuffle_composition():
    X = random_one_hot((8, 4, 30), random_state=0)
    X_shuf = jablate.dinucleotide_shuffle(X, random_state=0)
    for i in range(X.shape[0]):
        for j in range(20):
            assert_same_dinucleotides(characters(X[i]), characters(X_shuf[i, j]))


def test_dinucleotide_shuffle_start_end():
    X = random_one_hot((8, 4, 50), random_state=0)
    X_shuf = jablate.dinucleotide_shuffle(X, start=10, end=30, random_state=0)

    assert (X[:, :, :10].unsqueeze(1) == X_shuf[:, :, :, :10]).all()
    assert (X[:, :, 30:].unsqueeze(1) == X_shuf[:, :, :, 30:]).all()
    assert (X[:, :, 10:30].unsqueeze(1) != X_shuf[:, :, :, 10:30]).any()
    for i in range(X.shape[0]):
        for j in range(20):
            assert_same_dinucleotides(characters(X[i, :, 10:30]),
                                      characters(X_shuf[i, j, :, 10:30]))


def test_dinucleotide_shuffle_large_alphabet():
    alphabet = ["A", "C", "G", "T", "N"]
    seq = "CGATCAGCANNCACATCAGCATANNAAT"
    motif = one_hot_encode(seq, alphabet=alphabet, ignore=[]).unsqueeze(0)
    dimotif = jablate.dinucleotide_shuffle(motif, random_state=0)
    for j in range(20):
        assert_same_dinucleotides(seq, characters(dimotif[0, j], alphabet=alphabet))


def test_dinucleotide_shuffle_missing_alphabet():
    seq = "ATATATTAAAATTATTATATATTTATATATTTAAAAATTTTTAATA"
    dimotif = jablate.dinucleotide_shuffle(one_hot_encode(seq).unsqueeze(0), random_state=0)
    for j in range(20):
        assert_same_dinucleotides(seq, characters(dimotif[0, j]))


def test_dinucleotide_shuffle_reaches_both_arrangements_of_AATA():
    # Replaces tangermeme's test_dinucleotide_shuffle_raises_short: tangermeme's biased
    # sampler reaches only one arrangement of AATA and raises; a uniform sampler
    # reaches both valid ones.
    motif = one_hot_encode("AATA").unsqueeze(0)
    drawn = {characters(y) for y in jablate.dinucleotide_shuffle(motif, n=20, random_state=0)[0]}
    assert drawn == all_dinucleotide_shuffles("AATA") == {"AATA", "ATAA"}


def test_dinucleotide_shuffle_raises_ohe():
    seq = "ATATATTAAAATTATTATATATTTATATATTTAAAAATTTTTAATA"
    motif = one_hot_encode(seq).unsqueeze(0)
    for bad in (motif + 1, motif.unsqueeze(0), motif[0], "ACGTCACGATC"):
        assert_raises(ValueError, jablate.dinucleotide_shuffle, bad)


def test_dinucleotide_shuffle_raises_N_and_with_allow_N_keeps_it_as_a_symbol():
    # tangermeme's test_dinucleotide_shuffle_raises_N, and its allow_N=True: an all-zero
    # column is then an unknown base, shuffled as a symbol of its own.
    seq = "ATATATTAAAATNNNATTTAAANNNTTTTTAATA"
    with pytest.raises(ValueError, match="allow_N=True"):
        jablate.dinucleotide_shuffle(one_hot_encode(seq).unsqueeze(0), random_state=0)
    dimotif = jablate.dinucleotide_shuffle(one_hot_encode(seq).unsqueeze(0), random_state=0,
                                           allow_N=True)
    assert dimotif.shape == (1, 20, 4, len(seq))
    as_text = [characters(y, allow_N=True) for y in dimotif[0]]
    for shuffled in as_text:
        assert_same_dinucleotides(seq, shuffled)
    assert len(set(as_text)) > 1


def test_dinucleotide_shuffle_homopolymer_is_unchanged():
    # Replaces tangermeme's test_dinucleotide_shuffle_homopolymer (a ValueError):
    # jablate warns and returns the only arrangement there is.
    seq_ohe = one_hot_encode("A" * 30).unsqueeze(0)
    with pytest.warns(UserWarning, match="1 of 1 regions cannot be changed"):
        dimotif = jablate.dinucleotide_shuffle(seq_ohe, random_state=0)
    assert dimotif.shape == (1, 20, 4, 30)
    assert (dimotif == seq_ohe.unsqueeze(1)).all()
