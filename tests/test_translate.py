"""jablate.bridges.torch_export.translate: torch modules lowered to jax.numpy, checked against
torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require

torch = pytest.importorskip("torch")
bpnetlite = require("bpnetlite")  # skips locally, fails when CI is set

from bpnetlite import BPNet  # noqa: E402
from bpnetlite.chrombpnet import ChromBPNet  # noqa: E402

from jablate.bridges.torch_export import SUPPORTED_OPS, TranslatedModel, translate  # noqa: E402

F = torch.nn.functional


def one_hot(n, length, seed=0):
    idx = np.random.RandomState(seed).randint(0, 4, size=(n, length))
    return torch.from_numpy(np.eye(4, dtype=np.float32)[idx].transpose(0, 2, 1).copy())


def to_jax(t):
    return None if t is None else jnp.asarray(t.detach().numpy())


def assert_matches(got, want, tol=1e-4):
    """Outputs within `tol` of torch, relative to each output's scale."""
    got = got if isinstance(got, (tuple, list)) else [got]
    want = want if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = w.detach().numpy()
        g = np.asarray(g)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(np.abs(w).max(), 1e-6))


def check(module, *inputs, batch=3, tol=1e-4):
    """Translate at the example batch, compare with torch at batch `batch`."""
    tm = translate(module, *inputs)
    more = [torch.cat([t] * (batch // t.shape[0] + 1))[:batch].clone() if t is not None else None
            for t in inputs]
    more[0] = more[0] + 0.1 * torch.randn_like(more[0])
    with torch.no_grad():
        want = module.eval()(*more)
    assert_matches(tm(*map(to_jax, more)), want, tol)
    return tm


# --- real architectures ------------------------------------------------------------------

def test_bpnet_with_control_tracks():
    torch.manual_seed(0)
    model = BPNet(n_filters=16, n_layers=4, n_control_tracks=2, verbose=False).eval()
    x, ctl = one_hot(2, 600), torch.rand(2, 2, 600)
    tm = check(model, x, ctl, batch=5)
    assert isinstance(tm, TranslatedModel) and tm.dynamic_batch
    assert set(tm.params) == set(model.state_dict())
    assert tm.translation_seconds > 0


def test_bpnet_without_control_and_batch_of_one():
    torch.manual_seed(1)
    model = BPNet(n_filters=8, n_layers=3, n_control_tracks=0, verbose=False).eval()
    tm = check(model, one_hot(1, 600), None, batch=4)  # example batch 1, then 4
    x = one_hot(1, 600, seed=3)
    with torch.no_grad():
        want = model(x)
    assert_matches(tm(to_jax(x), None), want)


def test_chrombpnet():
    torch.manual_seed(2)
    bias = BPNet(n_filters=8, n_layers=2, n_outputs=1, n_control_tracks=0, verbose=False)
    acc = BPNet(n_filters=16, n_layers=4, n_outputs=1, n_control_tracks=0, verbose=False)
    model = ChromBPNet(bias, acc).eval()
    check(model, one_hot(2, 700), batch=3)


class DeepSEA(torch.nn.Module):
    """DeepSEA/Beluga-style: conv, ReLU, max-pool, dropout, linear, sigmoid."""

    def __init__(self, length=500, n_targets=12):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(4, 32, 8), torch.nn.ReLU(inplace=True),
            torch.nn.Conv1d(32, 32, 8), torch.nn.ReLU(inplace=True),
            torch.nn.Dropout(0.2), torch.nn.MaxPool1d(4, 4),
            torch.nn.Conv1d(32, 48, 8), torch.nn.ReLU(),
            torch.nn.Conv1d(48, 48, 8), torch.nn.ReLU(),
            torch.nn.Dropout(0.2), torch.nn.MaxPool1d(4, 4),
            torch.nn.Conv1d(48, 64, 8), torch.nn.ReLU(),
            torch.nn.Dropout(0.5))
        n = ((((length - 14) // 4) - 14) // 4) - 7
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64 * n, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, n_targets), torch.nn.Sigmoid())

    def forward(self, x):
        return self.head(self.conv(x))


class Beluga2d(torch.nn.Module):
    """Beluga's own layout: Conv2d/MaxPool2d with (1, k) kernels on (N, 4, 1, L)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 16, (1, 8)), torch.nn.ReLU(), torch.nn.MaxPool2d((1, 4), (1, 4)),
            torch.nn.Conv2d(16, 16, (1, 8)), torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.fc = torch.nn.Linear(16 * 66, 5)

    def forward(self, x):
        h = self.net(x.unsqueeze(2))
        return torch.sigmoid(self.fc(h.view(h.size(0), -1)))


def test_deepsea_cnn():
    torch.manual_seed(3)
    check(DeepSEA().eval(), one_hot(2, 500), batch=4)


def test_beluga_conv2d():
    torch.manual_seed(4)
    check(Beluga2d().eval(), one_hot(2, 300), batch=3)


class AttentionBlock(torch.nn.Module):
    """Pre-norm transformer block: layer_norm, scaled_dot_product_attention, GELU MLP."""

    def __init__(self, dim=32, heads=4, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.embed = torch.nn.Conv1d(4, dim, 9, padding=4)
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Dropout(0.1), torch.nn.Linear(2 * dim, dim),
                                       torch.nn.GELU(approximate="tanh"))
        self.out = torch.nn.Linear(dim, 2)

    def forward(self, x):
        h = self.embed(x).transpose(1, 2)                      # (N, L, D)
        n, length, dim = h.shape
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        h = h + self.proj(a.transpose(1, 2).reshape(n, length, dim))
        h = h + self.mlp(self.norm2(h))
        return self.out(h).mean(1), torch.softmax(h.sum(-1), -1)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_block(causal):
    torch.manual_seed(5)
    check(AttentionBlock(causal=causal).eval(), one_hot(2, 64), batch=3)


class Coverage(torch.nn.Module):
    """Many table entries at once, each against torch."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(4, 8, 5, padding="same", dilation=2)
        self.c2 = torch.nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=4)
        self.bn = torch.nn.BatchNorm1d(8)
        self.gn = torch.nn.GroupNorm(2, 8)
        self.up = torch.nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1)
        self.emb = torch.nn.Embedding(10, 6)
        self.w = torch.nn.Parameter(torch.randn(6, 6))
        for name in ("running_mean", "running_var"):  # non-trivial running statistics
            getattr(self.bn, name).uniform_(0.5, 1.5)

    def forward(self, x, tokens):
        h = F.elu(self.bn(self.c1(x)))
        h = F.softplus(self.gn(self.c2(h)), beta=2)
        h = F.avg_pool1d(h, 3, stride=2, padding=1) + F.max_pool1d(h, 3, 2, 1)
        u = self.up(torch.tanh(h))
        a, b = torch.split(u, [1, 3], dim=1)
        p = F.pad(torch.cat([a, b.abs().sqrt()], 1), (2, 3), value=0.5)
        p = torch.clamp(p, -0.8, 2.0).pow(2) - p.neg().exp() / (1 + torch.rsqrt(p.abs() + 1))
        e = self.emb(tokens)                                     # (N, T, 6)
        e = torch.einsum("ntd,de->nte", e, self.w) + torch.bmm(e, e.transpose(1, 2)) @ e
        s = torch.stack([e.amax(1), e.amin(1), e.logsumexp(1)], 1).flatten(1)
        m = torch.where(p > 0, p, p * 0.1).mean(-1)
        r = p.permute(0, 2, 1).unsqueeze(1).squeeze(1).expand(-1, -1, -1)[:, 1:-1:2, :]
        c = r.repeat(1, 1, 2)[..., 0] * torch.sigmoid(r[:, :, 1])
        return [torch.cat([s, m, torch.log_softmax(c, -1)], 1),
                (F.layer_norm(r, (4,)) * torch.arange(4.0)).sum((1, 2)), F.gelu(r).max(1).values,
                torch.chunk(r, 2, dim=1)[0].min(-1)[0], r[:, [0, 2], :] / 2,
                F.max_pool1d(u, 3, 2, ceil_mode=True),
                F.avg_pool1d(u, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)]


def test_op_coverage_module():
    torch.manual_seed(6)
    module = Coverage().eval()
    x, tokens = torch.randn(2, 4, 40), torch.randint(0, 10, (2, 7))
    check(module, x, tokens, batch=3)


# --- errors, transformations, batch, modes, cache ---------------------------------------

class Exotic(torch.nn.Module):
    def forward(self, x):
        f = torch.fft.rfft(x, dim=-1).abs()
        return torch.cummax(x, -1).values.sum(-1) + torch.sort(x, -1).values[..., 0] + f[..., 0]


def test_unsupported_ops_are_listed_together():
    with pytest.raises(NotImplementedError) as info:
        translate(Exotic(), torch.randn(2, 4, 16))
    message = str(info.value)
    for op in ("cummax", "sort", "fft"):
        assert op in message
    assert "wrap" in message and "SUPPORTED_OPS" in message
    assert "backend='torch' to jablate.deep_lift_shap, saturation_mutagenesis" in message
    assert "aten.conv1d" in SUPPORTED_OPS and "aten.cummax" not in SUPPORTED_OPS


def test_jit_vmap_grad():
    torch.manual_seed(7)
    model = BPNet(n_filters=8, n_layers=3, n_control_tracks=0, verbose=False).eval()
    x = one_hot(4, 500)
    tm = translate(model, x[:2], None)
    xj = to_jax(x)

    def counts(params, xs):
        return tm.apply(params, xs, None)[1].sum()

    # grad with respect to the input, against torch autograd
    xt = x.clone().requires_grad_(True)
    model(xt)[1].sum().backward()
    g = jax.jit(jax.grad(counts, argnums=1))(tm.params, xj)
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), rtol=1e-3,
                               atol=1e-4 * np.abs(xt.grad.numpy()).max())

    # grad with respect to parameters
    model.zero_grad()
    model(x)[1].sum().backward()
    gp = jax.jit(jax.grad(counts))(tm.params, xj)
    w = model.iconv.weight.grad.numpy()
    np.testing.assert_allclose(np.asarray(gp["iconv.weight"]), w, rtol=1e-3,
                               atol=1e-4 * np.abs(w).max())

    # vmap over a stack of batches
    stacked = xj.reshape(2, 2, 4, 500)
    prof, cnt = jax.jit(jax.vmap(tm.apply, in_axes=(None, 0, None)))(tm.params, stacked, None)
    direct = tm(xj, None)
    assert prof.shape == (2, 2) + direct[0].shape[1:]
    np.testing.assert_allclose(np.asarray(prof).reshape(direct[0].shape), direct[0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(cnt).reshape(-1), np.asarray(direct[1]).reshape(-1),
                               rtol=1e-5, atol=1e-5)


def test_params_are_arguments_not_constants():
    torch.manual_seed(8)
    model = BPNet(n_filters=8, n_layers=2, n_control_tracks=0, verbose=False).eval()
    x = one_hot(2, 400)
    tm = translate(model, x, None)
    zeroed = {k: jnp.zeros_like(v) for k, v in tm.params.items()}
    prof, cnt = jax.jit(tm.apply)(zeroed, to_jax(x), None)
    assert float(jnp.abs(prof).max()) == 0.0 and float(jnp.abs(cnt).max()) == 0.0


def test_training_mode_restored_and_eval_semantics():
    torch.manual_seed(9)
    model = DeepSEA().train()
    model.head.eval()  # mixed modes come back as they were
    x = one_hot(2, 500)
    tm = translate(model, x)
    assert model.training and model.conv.training and not model.head.training
    with torch.no_grad():
        want = model.eval()(x)  # dropout off
    assert_matches(tm(to_jax(x)), want)


def test_cache_hit_same_object_and_refreshed_params():
    torch.manual_seed(10)
    model = BPNet(n_filters=8, n_layers=2, n_control_tracks=0, verbose=False).eval()
    tm = translate(model, one_hot(2, 400), None)
    assert translate(model, one_hot(5, 400), None) is tm          # batch size is free
    assert translate(model, one_hot(2, 500), None) is not tm      # new length, new graph
    with torch.no_grad():
        model.linear.bias.add_(1.0)
    again = translate(model, one_hot(2, 400), None)
    assert again is tm
    np.testing.assert_allclose(np.asarray(tm.params["linear.bias"]),
                               model.linear.bias.detach().numpy())


class IssueFixedBatch(torch.nn.Module):
    """The example of issue #10: int() on the batch size makes torch.export refuse a
    symbolic batch, and the conv's output has 7 positions, a number the batch may take."""

    def __init__(self, positions_first=False):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 3, 14)
        self.positions_first = positions_first

    def forward(self, x):
        h = self.conv(x)                                    # (b, 3, 7) on length 20
        b = int(h.shape[0])
        per_position = h.permute(2, 0, 1).reshape(7, b * 3)
        if self.positions_first:                            # (7, b * 3): batch not first
            return per_position
        return per_position.mean(0).reshape(b, 3)


def test_fixed_batch_translation_is_right_at_every_batch():
    torch.manual_seed(11)
    module = IssueFixedBatch().eval()
    tm = translate(module, torch.randn(2, 4, 20))
    assert not tm.dynamic_batch and tm.static_batch == 2
    for batch in (5, 1, 2, 7, 8):
        x = torch.randn(batch, 4, 20)
        with torch.no_grad():
            want = module(x)
        got = tm(to_jax(x))
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5, atol=1e-6)
    # under jit and grad too: chunks run under vmap
    x = torch.randn(5, 4, 20, requires_grad=True)
    module(x).sum().backward()
    g = jax.jit(jax.grad(lambda xs: tm.apply(tm.params, xs).sum()))(to_jax(x))
    np.testing.assert_allclose(np.asarray(g), x.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_fixed_batch_without_batch_first_outputs_is_refused():
    torch.manual_seed(12)
    module = IssueFixedBatch(positions_first=True).eval()
    tm = translate(module, torch.randn(2, 4, 20))
    x = torch.randn(2, 4, 20)
    with torch.no_grad():  # the traced batch itself is fine
        np.testing.assert_allclose(np.asarray(tm(to_jax(x))), module(x).numpy(),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"fixed batch size of 2.*batch of 5.*output 0 has "
                                         r"shape \(7, 6\) at batch 2 and \(7, 9\) at batch 3"):
        tm(jnp.zeros((5, 4, 20)))


class HardcodedBatch(torch.nn.Module):
    """A view that only works at batch 2: no other batch can be checked, so none is run."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 3, 5)

    def forward(self, x):
        return self.conv(x).reshape(2, 48).mean(-1)  # (b, 3, 16): b = 2 only


def test_fixed_batch_that_cannot_be_checked_is_refused():
    torch.manual_seed(15)
    module = HardcodedBatch().eval()
    x = torch.randn(2, 4, 20)
    tm = translate(module, x)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(tm(to_jax(x))), module(x).numpy(),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at batch 2 only"):
        tm(jnp.zeros((3, 4, 20)))


class FixedBatchView(torch.nn.Module):
    """Views with the batch size as a Python int, two outputs, an extra batched input."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 6, 3)

    def forward(self, x, scale):
        h = self.conv(x) * scale[:, None, None]
        n = int(h.shape[0])
        return h.view(n, -1).sum(-1) + h.new_zeros((n,)), h.reshape(n, 6, -1).mean(-1)


class BranchesOnBatchSize(torch.nn.Module):
    """A forward that depends on the batch size: torch.export cannot keep the batch
    symbolic, and chunks of the traced batch would take the other branch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 3, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean(-1)
        return h * 2.0 if x.shape[0] >= 4 else h


def test_a_fixed_batch_translation_that_chunks_would_change_is_refused():
    """It had run every batch in chunks of 2, silently taking the small-batch branch (a
    fuzz trial: predictions 16% off, ISM attributions 86% off)."""
    torch.manual_seed(3)
    module = BranchesOnBatchSize().eval()
    with pytest.raises(ValueError, match=r"could not keep BranchesOnBatchSize's batch axis "
                       r"symbolic.*output 0 for 5 rows at once is not its output for them 2 "
                       r"at a time.*backend='torch'"):
        translate(module, torch.randn(2, 4, 20))
    import jablate
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (6, 20)), 4).transpose(1, 2).float()
    with pytest.raises(ValueError, match="depends on the batch size"):
        jablate.saturation_mutagenesis(module, X[:2])
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(jablate.predict(module, X, backend="torch")),
                                   module(X).numpy(), rtol=1e-6)


class FixedBatchNonFinite(torch.nn.Module):
    """int() of the batch size (a fixed-batch trace), and outputs that are not finite: a
    0/0 on an all-N row, and with ``branch`` a -inf column beside a batch-size branch."""

    def __init__(self, branch):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 3, 5)
        self.branch = branch

    def forward(self, x):
        n = int(x.shape[0])
        h = torch.relu(self.conv(x)).mean(-1).reshape(n, 3)
        gc = x[:, 1:3].sum((1, 2)) / x.sum((1, 2))          # nan for an all-N row
        if self.branch:
            h = h * 2.0 if n >= 4 else h
            return torch.cat([h, torch.log(torch.zeros(n, 1))], 1)
        return h, gc


def test_the_batch_dependence_check_reads_values_that_are_not_finite():
    """A review found an infinite output let a batch-size branch through (the scale was
    inf) and a NaN one (an all-N example) refuse a model that treats rows alone."""
    torch.manual_seed(5)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 20)), 4).transpose(1, 2).float()
    x[0] = 0  # all N: its GC fraction is 0/0
    module = FixedBatchNonFinite(False).eval()
    tm = translate(module, x)
    assert tm.static_batch == 2
    five = torch.cat([x, x[1:].roll(3, -1), x[1:].roll(5, -1), x[:1]])
    with torch.no_grad():
        want = module(five)
    for got, expected in zip(tm(to_jax(five)), want):
        np.testing.assert_allclose(np.asarray(got), expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="depends on the batch size"):
        translate(FixedBatchNonFinite(True).eval(), x)


def test_fixed_batch_fallback_with_two_outputs_and_args():
    torch.manual_seed(13)
    module = FixedBatchView().eval()
    tm = check(module, torch.randn(3, 4, 20), torch.rand(3), batch=5)
    assert tm.static_batch == 3
    with pytest.raises(ValueError, match="rows"):
        tm(jnp.zeros((5, 4, 20)), jnp.ones(4))


def test_shape_errors():
    model = BPNet(n_filters=8, n_layers=2, n_control_tracks=0, verbose=False).eval()
    tm = translate(model, one_hot(2, 400), None)
    with pytest.raises(ValueError, match="translated for shape"):
        tm(jnp.zeros((2, 4, 300)), None)
    with pytest.raises(ValueError, match="input"):
        tm(jnp.zeros((2, 4, 400)))


def test_backend_jax_ablation_matches_torch():
    """The front door's backend='jax' translates the module; ablation equals torch's."""
    from tangermeme.utils import random_one_hot

    import jablate

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 7), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(8, 2))
    X = random_one_hot((3, 4, 60), random_state=0).float()
    ann = np.array([[0, 5, 20], [2, 30, 50]])
    for call in (lambda **kw: jablate.ablate(module, X, 10, 40, n=4, random_state=0, **kw),
                 lambda **kw: jablate.ablate_annotations(module, X, ann, n=4, random_state=0,
                                                         **kw)):
        ref = call(device="cpu")
        got = call(backend="jax")
        for r, g in zip(ref, got):
            assert isinstance(g, torch.Tensor)
            np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-5)


def test_translates_a_loaded_export_program(tmp_path):
    """torch.export.load(...).module() refuses eval(); translate must not need it."""
    module = torch.nn.Sequential(torch.nn.Conv1d(4, 3, 5), torch.nn.ReLU())
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 4, 20),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = torch.export.load(tmp_path / "m.pt2").module()
    x = torch.rand(3, 4, 20)
    got = translate(loaded, x[:1])(jnp.asarray(x.numpy()))
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(got), module(x).numpy(), rtol=1e-5, atol=1e-6)


# --- torch.export programs saved at a fixed batch size ------------------------------------

STATIC_BATCH = 3
FASTA = """>a
ACGTGATAAGCTTACGGCTCAGTTCAGCATGCAAGTCGAT
>b
TTGCAGATAAGGCTACNNNAAGTTCAGGATAAGCAAGTCC
>c
GGGATCGATAAGCTTACGGATAAGTTCAGCATGCAAGTCA
>d
acgtgataagcttacggatcaagttcagcaTGCAAGTCGG
>e
CCCCGATAAGTTTTGATAAGGGGGATAAGAAAATTTTCCA
"""
REGIONS = "a\t4\t10\nb\t0\t12\nc\t20\t35\nd\t30\t40\ne\t5\t25\n"


class StaticConv(torch.nn.Module):
    def __init__(self, length=40):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 6, 7, padding=3)
        self.head = torch.nn.Conv1d(6, 2, 5)
        self.linear = torch.nn.Linear(2 * (length - 4), 2)

    def forward(self, x):
        h = self.head(torch.relu(self.conv(x)))
        return self.linear(h.flatten(1)), h.mean(1)


@pytest.fixture(scope="module")
def static_program(tmp_path_factory):
    """A conv model and its torch.export program saved at a fixed batch of 3."""
    torch.manual_seed(14)
    model = StaticConv().eval()
    path = tmp_path_factory.mktemp("static") / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(STATIC_BATCH, 4, 40),)), path)
    return model, path


def test_static_batch_program_runs_in_chunks(static_program):
    from jablate.bridges.torch import StaticBatchModule, any_batch, exported_batch

    model, path = static_program
    loaded = torch.export.load(path).module()
    assert exported_batch(loaded) == STATIC_BATCH
    wrapped = any_batch(loaded)
    assert isinstance(wrapped, StaticBatchModule) and any_batch(wrapped) is wrapped
    tm = translate(loaded, torch.zeros(1, 4, 40))
    assert tm.static_batch == STATIC_BATCH and translate(wrapped, torch.zeros(1, 4, 40)) is tm
    for batch in (1, 3, 4, 8):
        x = one_hot(batch, 40, seed=batch)
        with torch.no_grad():
            want = model(x)
            assert_matches(wrapped(x), want, tol=1e-5)
        assert_matches(tm(to_jax(x)), want, tol=1e-5)


def _regions_and_sequences(directory):
    from jablate._core.io import one_hot_encode, read_fasta, read_regions

    (directory / "seqs.fa").write_text(FASTA)
    (directory / "regions.tsv").write_text(REGIONS)
    names, sequences = read_fasta(directory / "seqs.fa")
    regions = read_regions(directory / "regions.tsv", {a: len(s) for a, s in
                                                        zip(names, sequences)})
    annotations = np.array([(names.index(r.sequence), r.start, r.end) for r in regions])
    return one_hot_encode(sequences), annotations


def _assert_close_outputs(got, want):
    for g, w in zip(got, want):
        g = [g] if not isinstance(g, (list, tuple)) else g
        w = [w] if not isinstance(w, (list, tuple)) else w
        assert len(g) == len(w)
        for a, b in zip(g, w):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_static_batch_program_through_the_api(static_program, tmp_path):
    import jablate

    model, path = static_program
    X, annotations = _regions_and_sequences(tmp_path)
    assert len(X) % STATIC_BATCH and len(annotations) % STATIC_BATCH
    loaded = torch.export.load(path).module()
    kwargs = dict(n=4, random_state=0, batch_size=4)
    want = jablate.ablate_annotations(model, X, annotations, **kwargs)
    _assert_close_outputs(jablate.ablate_annotations(loaded, X, annotations, **kwargs), want)
    _assert_close_outputs(jablate.ablate_annotations(loaded, X, annotations, backend="jax",
                                                     **kwargs), want)


@pytest.mark.parametrize("translated", [False, True])
def test_static_batch_program_through_the_command_line(static_program, tmp_path, translated,
                                                       monkeypatch, capsys):
    # jablate.cli.main in this process: the command line's code path, without a fresh
    # interpreter (tests/test_cli.py runs the ones that need one).
    import jablate
    from jablate.cli import main

    model, path = static_program
    X, annotations = _regions_and_sequences(tmp_path)
    monkeypatch.chdir(tmp_path)
    status = main(["ablate", "--model", str(path), "--fasta", "seqs.fa", "--regions",
                   "regions.tsv", "--n", "4", "--seed", "3", "--quiet", "--out", "out.npz"]
                  + (["--translate"] if translated else []))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith("name\t")
    want = jablate.ablate_annotations(model, X, annotations, n=4, random_state=3)
    with np.load(tmp_path / "out.npz") as npz:
        for i, (before, after) in enumerate(zip(*want)):
            np.testing.assert_allclose(npz[f"y_befores_{i}"], before, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(npz[f"y_afters_{i}"], after, rtol=1e-5, atol=1e-5)


def test_a_module_whose_structure_changed_is_translated_again():
    """The translation cache is keyed on the module: a layer swapped in a container, or a
    setting changed in place, had served the old graph with the new weights (the old
    architecture's numbers, silently). Unchanged, the same translation is returned."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 5), torch.nn.LeakyReLU(0.1),
                                 torch.nn.Conv1d(6, 2, 3), torch.nn.Flatten(1)).eval()
    x = one_hot(2, 20)
    first = translate(module, x[:1])
    assert translate(module, x[:1]) is first
    for change in (lambda: setattr(module[1], "negative_slope", 0.5),
                   lambda: module.__setitem__(1, torch.nn.Tanh()),
                   lambda: module.__setitem__(2, torch.nn.Conv1d(6, 3, 3))):
        change()
        with torch.no_grad():
            want = module(x).numpy()
        np.testing.assert_allclose(np.asarray(translate(module, x[:1])(to_jax(x))), want,
                                   rtol=1e-5, atol=1e-6)


def test_windows_cumulative_sums_and_top_k_translate():
    """Tensor.unfold (Enformer-style attention pooling over windows), cumsum and topk, which
    translate() had refused."""

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.logit = torch.nn.Conv1d(4, 6, 3), torch.nn.Conv1d(6, 6, 1)

        def forward(self, x):
            h = self.conv(x)
            windows, weights = h.unfold(2, 4, 4), self.logit(h).unfold(2, 4, 4).softmax(-1)
            pooled = (windows * weights).sum(-1)
            return pooled.cumsum(-1)[..., -1] + pooled.topk(2, dim=-1, largest=False)[0].sum(-1)

    torch.manual_seed(0)
    module = Pooled().eval()
    x = one_hot(3, 18)
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(np.asarray(translate(module, x[:1])(to_jax(x))), want,
                               rtol=1e-5, atol=1e-6)


class Recurrent(torch.nn.Module):
    """A convolution, then a recurrent layer, time first or batch first; its output and its
    final states both reach the outputs."""

    def __init__(self, rnn):
        super().__init__()
        self.conv, self.rnn = torch.nn.Conv1d(4, 5, 3), rnn

    def forward(self, x):
        h = self.conv(x)
        h = h.transpose(1, 2) if self.rnn.batch_first else h.permute(2, 0, 1)
        out, states = self.rnn(h)
        states = states if isinstance(states, tuple) else (states,)
        return out.mean(1 if self.rnn.batch_first else 0), *(s.sum(0) for s in states)


RECURRENT = {
    "lstm": lambda: torch.nn.LSTM(5, 6, batch_first=True),
    "lstm_2_layers_bidirectional": lambda: torch.nn.LSTM(5, 6, 2, bidirectional=True,
                                                         dropout=0.5),
    "lstm_proj_no_bias": lambda: torch.nn.LSTM(5, 6, 2, bias=False, proj_size=3,
                                               bidirectional=True, batch_first=True),
    "gru_bidirectional": lambda: torch.nn.GRU(5, 6, bidirectional=True, batch_first=True),
    "gru_no_bias": lambda: torch.nn.GRU(5, 6, 2, bias=False),
    "rnn_tanh": lambda: torch.nn.RNN(5, 6, 2, bidirectional=True),
    "rnn_relu": lambda: torch.nn.RNN(5, 6, nonlinearity="relu", batch_first=True),
}


def all_equations(jaxpr):
    """The equations of a jaxpr and of every jaxpr inside it (calls, loop bodies)."""
    eqns = []
    for eqn in jaxpr.eqns:
        eqns.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    eqns += all_equations(inner)
    return eqns


@pytest.mark.parametrize("name", RECURRENT)
def test_a_recurrent_layer_is_one_scan_whatever_the_length(name):
    """torch.export traced LSTM/GRU/RNN step by step (89 s for a bidirectional LSTM at
    200 bp) and the translation unrolled them. Each layer is now one op in the graph and
    one lax.scan per layer and direction: the same program size at 12 and 48 positions,
    and torch's numbers (dropout between layers off in eval mode)."""
    torch.manual_seed(0)
    module = Recurrent(RECURRENT[name]()).train()
    sizes = []
    for length in (12, 48):
        x = torch.nn.functional.one_hot(torch.randint(0, 4, (3, length)), 4).permute(
            0, 2, 1).float()
        translated = translate(module, x[:1])
        assert module.training  # restored
        eqns = all_equations(jax.make_jaxpr(translated)(to_jax(x)).jaxpr)
        scans = [e for e in eqns if e.primitive.name == "scan"]
        layers = module.rnn.num_layers * (2 if module.rnn.bidirectional else 1)
        assert len(scans) == layers and all(e.params["length"] == length - 2 for e in scans)
        sizes.append(len(eqns))
        module.eval()
        with torch.no_grad():
            want = module(x)
        module.train()
        for got, w in zip(translated(to_jax(x)), want, strict=True):
            np.testing.assert_allclose(np.asarray(got), w.numpy(), rtol=1e-5, atol=1e-6)
    assert sizes[0] == sizes[1]
    assert "forward" not in vars(module.rnn)  # the export's stand-in is gone


def test_recurrent_layers_with_given_states_unbatched_and_from_a_saved_program():
    class GivenStates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(4, 3)
            self.lstm = torch.nn.LSTM(4, 3, batch_first=True)

        def forward(self, x):
            h0 = torch.ones(1, x.shape[0], 3)
            out, h = self.gru(x.permute(2, 0, 1), h0)
            single, _ = self.gru(x[0].T)  # unbatched: (time, features)
            both, (h2, c2) = self.lstm(x.transpose(1, 2), (h0 * 0.5, h0 * 2))
            return out.mean(0) + single.mean(0) + h[0] + both.mean(1) + h2[0] + c2[0]

    torch.manual_seed(0)
    x = one_hot(3, 10)
    for module in (GivenStates().eval(),
                   # a program torch.export saved holds ATen's own aten.lstm.input
                   torch.export.export(Recurrent(torch.nn.LSTM(5, 6, bidirectional=True)
                                                 ).eval(), (x,)).module()):
        with torch.no_grad():
            want = module(x)
        got = translate(module, x)(to_jax(x))
        for g, w in zip(jax.tree.leaves(got), torch.utils._pytree.tree_leaves(want),
                        strict=True):
            np.testing.assert_allclose(np.asarray(g), w.numpy(), rtol=1e-5, atol=1e-6)


