"""vitkd.losses: parity with independent float64 re-derivations, gradcheck, precision, registry, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from vitkd.losses import (
    CRLDLoss,
    DistillationLoss,
    DISTLoss,
    DKDLoss,
    KDLoss,
    LogitStandardKDLoss,
    LumiNetLoss,
    available_losses,
    build_loss,
    perception,
    register_loss,
)
from vitkd.losses import registry as registry_module

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add overhead

NAMES = ["crld", "dist", "dkd", "kd", "ls_kd", "luminet"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Non-default hyperparameters, so that a swapped or ignored argument shows up in the parity tests.
PARITY_KWARGS = {
    "kd": {"temperature": 3.0},
    "luminet": {"temperature": 2.0, "alpha": 3.0, "eps": 1e-3},
    "dkd": {"alpha": 1.5, "beta": 6.0, "temperature": 3.0},
    "crld": {
        "temperature": 2.0,
        "tau_weak": 0.8,
        "tau_strong": 0.3,
        "within_weight": 1.5,
        "cross_weight": 0.7,
    },
    "ls_kd": {"temperature": 3.0},
    "dist": {"beta": 2.0, "gamma": 0.7, "temperature": 2.5},
}


def make_inputs(
    loss: DistillationLoss, batch: int, classes: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(student views, teacher views, [labels] or []) for ``loss``; about half the teacher rows are
    confident (a +12 boost on one class), so CRLD's masks select some samples and reject others."""
    g = torch.Generator().manual_seed(seed)
    students = [torch.randn(batch, classes, generator=g, dtype=dtype) for _ in range(loss.num_views)]
    teachers = []
    for _ in range(loss.num_views):
        teacher = 2 * torch.randn(batch, classes, generator=g, dtype=dtype)
        rows = torch.nonzero(torch.rand(batch, generator=g) < 0.5).flatten()
        teacher[rows, torch.randint(classes, (len(rows),), generator=g)] += 12
        teachers.append(teacher)
    labels = [torch.randint(classes, (batch,), generator=g)] if loss.requires_target else []
    return students, teachers, labels


# ---- independent re-derivations: per-sample / per-class Python loops, explicit probabilities ----------


def _softmax(v: torch.Tensor) -> torch.Tensor:
    e = torch.exp(v - v.max())
    return e / e.sum()


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum()


def _mean_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    kls = [
        _kl(_softmax(t / temperature), _softmax(s / temperature))
        for s, t in zip(student, teacher, strict=True)
    ]
    return sum(kls) / len(kls)


def ref_kd(s, t, *, temperature):
    return temperature**2 * _mean_kl(s, t, temperature)


def ref_perception(z, eps):
    columns = []
    for j in range(z.shape[1]):
        col = z[:, j]
        mean = col.sum() / len(col)
        var = ((col - mean) ** 2).sum() / len(col)
        columns.append((col - mean) / torch.sqrt(var + eps))
    return torch.stack(columns, dim=1)


def ref_luminet(s, t, *, temperature, alpha, eps):
    return alpha**2 * _mean_kl(ref_perception(s, eps), ref_perception(t, eps), temperature)


def ref_dkd(s, t, y, *, alpha, beta, temperature):
    total = 0
    for s_i, t_i, y_i in zip(s, t, y.tolist(), strict=True):
        p_s, p_t = _softmax(s_i / temperature), _softmax(t_i / temperature)
        others = torch.arange(len(s_i)) != y_i
        b_s = torch.stack([p_s[y_i], p_s[others].sum()])
        b_t = torch.stack([p_t[y_i], p_t[others].sum()])
        q_s, q_t = p_s[others] / p_s[others].sum(), p_t[others] / p_t[others].sum()
        total = total + alpha * _kl(b_t, b_s) + beta * _kl(q_t, q_s)
    return temperature**2 * total / len(s)


def ref_crld(s_w, s_s, t_w, t_s, *, temperature, tau_weak, tau_strong, within_weight, cross_weight):
    def k(a, b):
        return temperature**2 * _kl(_softmax(b / temperature), _softmax(a / temperature))

    total = 0
    for i in range(len(s_w)):
        if _softmax(t_w[i]).max() >= tau_weak:
            total = total + within_weight * (k(s_w[i], t_w[i]) + k(s_s[i], t_s[i]))
        if _softmax(t_s[i]).max() >= tau_strong:
            total = total + cross_weight * (k(s_s[i], t_w[i]) + k(s_w[i], t_s[i]))
    return total / len(s_w)


def ref_ls_kd(s, t, *, temperature):
    def zscore(v):
        mean = v.sum() / len(v)
        std = torch.sqrt(((v - mean) ** 2).sum() / (len(v) - 1))
        return (v - mean) / (std + 1e-7)

    s_hat = torch.stack([zscore(v) for v in s])
    t_hat = torch.stack([zscore(v) for v in t])
    return temperature**2 * _mean_kl(s_hat, t_hat, temperature)


def ref_dist(s, t, *, beta, gamma, temperature):
    def pearson(a, b):  # from raw moments; n·σ_a·σ_b equals the product of the centred norms
        n = len(a)
        cov = (a * b).mean() - a.mean() * b.mean()
        sd_a = torch.sqrt((a * a).mean() - a.mean() ** 2)
        sd_b = torch.sqrt((b * b).mean() - b.mean() ** 2)
        return n * cov / (n * sd_a * sd_b + 1e-8)

    y_s = torch.stack([_softmax(v / temperature) for v in s])
    y_t = torch.stack([_softmax(v / temperature) for v in t])
    inter = 1 - sum(pearson(y_s[i], y_t[i]) for i in range(len(s))) / len(s)
    intra = 1 - sum(pearson(y_s[:, j], y_t[:, j]) for j in range(s.shape[1])) / s.shape[1]
    return temperature**2 * (beta * inter + gamma * intra)


REFERENCES = {
    "kd": ref_kd,
    "luminet": ref_luminet,
    "dkd": ref_dkd,
    "crld": ref_crld,
    "ls_kd": ref_ls_kd,
    "dist": ref_dist,
}


def value_and_student_grads(fn, students, rest):
    students = [s.clone().requires_grad_() for s in students]
    value = fn(*students, *rest)
    grads = torch.autograd.grad(value, students)
    return value.detach(), grads


@pytest.mark.parametrize("shape", [(64, 100), (8, 1000)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_matches_independent_derivation(name, shape):
    kwargs = PARITY_KWARGS[name]
    loss = build_loss(name, **kwargs)
    students, teachers, labels = make_inputs(loss, *shape)
    value, grads = value_and_student_grads(loss, students, teachers + labels)
    ref_value, ref_grads = value_and_student_grads(
        lambda *args: REFERENCES[name](*args, **kwargs), students, teachers + labels
    )
    assert value.dtype == torch.float64
    assert value > 1e-3  # a meaningful, non-degenerate comparison
    assert_close(value, ref_value, rtol=1e-6, atol=1e-10)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad, rtol=1e-6, atol=1e-10)


def test_crld_parity_inputs_exercise_both_mask_outcomes():
    loss = build_loss("crld", **PARITY_KWARGS["crld"])
    for shape in [(64, 100), (8, 1000)]:
        _, (t_w, t_s), _ = make_inputs(loss, *shape)
        for teacher, tau in [(t_w, 0.8), (t_s, 0.3)]:
            confident = teacher.softmax(1).amax(1) >= tau
            assert 0 < confident.sum() < len(teacher)


def test_kd_gradient_matches_closed_form():
    """d/dz_s of T²·mean KL = (T / B)·(softmax(z_s/T) − softmax(z_t/T))."""
    s, t, temperature = (
        torch.randn(16, 10, dtype=torch.float64),
        torch.randn(16, 10, dtype=torch.float64),
        3.0,
    )
    (grad,) = value_and_student_grads(KDLoss(temperature), [s], [t])[1]
    expected = temperature / len(s) * ((s / temperature).softmax(1) - (t / temperature).softmax(1))
    assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_perception_matches_derivation_and_is_standardised():
    z = 5 * torch.randn(32, 7, dtype=torch.float64) + 3
    h = perception(z, eps=1e-5)
    assert_close(h, ref_perception(z, 1e-5), rtol=1e-10, atol=1e-12)
    assert_close(h.mean(0), torch.zeros(7, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_close(h.var(0, unbiased=False), torch.ones(7, dtype=torch.float64), rtol=1e-5, atol=0)
    assert_close(perception(z, eps=1e-5, temperature=4.0), h / 4, rtol=1e-12, atol=0)


def test_luminet_student_statistics_carry_gradient():
    """Detaching the student's batch mean/variance would change the gradient; the loss must not."""
    s, t = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 5, dtype=torch.float64)
    (grad,) = value_and_student_grads(LumiNetLoss(), [s], [t])[1]

    def detached_stats_loss(z, teacher):
        h = (z - z.mean(0).detach()) / torch.sqrt(z.var(0, unbiased=False).detach() + 1e-5)
        return _mean_kl(h, ref_perception(teacher, 1e-5), 4.0)

    (detached_grad,) = value_and_student_grads(detached_stats_loss, [s], [t])[1]
    assert_close(grad.sum(0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)  # shift invariance
    assert not torch.allclose(grad, detached_grad, rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    loss = build_loss(name, **PARITY_KWARGS[name])
    students, teachers, labels = make_inputs(loss, 5, 4, seed=1)
    students = [s.requires_grad_() for s in students]
    assert torch.autograd.gradcheck(lambda *s: loss(*s, *teachers, *labels), students)


def test_perception_gradcheck():
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: perception(x, eps=1e-3), (z,))


def test_teacher_receives_no_gradient():
    for name in NAMES:
        loss = build_loss(name)
        students, teachers, labels = make_inputs(loss, 8, 6)
        teachers = [t.requires_grad_() for t in teachers]
        loss(*[s.requires_grad_() for s in students], *teachers, *labels).backward()
        assert all(t.grad is None for t in teachers), name


# ---- precision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs_are_computed_in_float32(name, low):
    loss = build_loss(name)
    students, teachers, labels = make_inputs(loss, 64, 100, dtype=torch.float32)
    full = students + teachers
    rounded = [x.to(low) for x in full]
    value = loss(*rounded, *labels)
    assert value.dtype == torch.float32
    # Same float32 maths on the same (rounded) numbers: equal up to float32 rounding.
    assert_close(value, loss(*[x.float() for x in rounded], *labels), rtol=1e-6, atol=1e-7)
    # Against the unrounded inputs: only the inputs' rounding (bf16 ≈ 3 significant digits) differs.
    assert_close(value, loss(*full, *labels), rtol=3e-2, atol=1e-3)


def test_float64_inputs_stay_float64():
    for name in NAMES:
        loss = build_loss(name)
        students, teachers, labels = make_inputs(loss, 8, 6)
        assert loss(*students, *teachers, *labels).dtype == torch.float64, name


# ---- registry and hyperparameters -------------------------------------------------------------------


def test_registry_names_and_class_attributes():
    assert available_losses() == sorted([*NAMES, "deit_hard", "deit_soft"])  # DeiT: tests/test_losses_deit.py
    expected = {  # name: (class, requires_target, num_views, uses_batch_statistics)
        "luminet": (LumiNetLoss, False, 1, True),
        "kd": (KDLoss, False, 1, False),
        "dkd": (DKDLoss, True, 1, False),
        "crld": (CRLDLoss, False, 2, False),
        "ls_kd": (LogitStandardKDLoss, False, 1, False),
        "dist": (DISTLoss, False, 1, True),
    }
    for name, (cls, requires_target, num_views, batch_stats) in expected.items():
        loss = build_loss(name)
        assert type(loss) is cls
        assert (cls.requires_target, cls.num_views, cls.uses_batch_statistics) == (
            requires_target,
            num_views,
            batch_stats,
        ), name


def test_defaults_follow_methods_md():
    assert (
        repr(build_loss("luminet"))
        == "LumiNetLoss(temperature=4.0, alpha=1.0, eps=1e-05, global_stats=False)"
    )
    assert repr(build_loss("kd")) == "KDLoss(temperature=4.0)"
    assert repr(build_loss("dkd")) == "DKDLoss(alpha=1.0, beta=8.0, temperature=4.0)"
    assert repr(build_loss("crld")) == (
        "CRLDLoss(temperature=4.0, tau_weak=0.9, tau_strong=0.2, within_weight=2.0, cross_weight=0.5)"
    )
    assert repr(build_loss("ls_kd")) == "LogitStandardKDLoss(temperature=2.0)"
    assert repr(build_loss("dist")) == "DISTLoss(beta=1.0, gamma=1.0, temperature=1.0)"


def test_build_loss_passes_keywords():
    loss = build_loss("luminet", alpha=33.0, temperature=8.0)
    assert (loss.alpha, loss.temperature, loss.eps) == (33.0, 8.0, 1e-5)


def test_unknown_loss_name_lists_names_and_closest_match():
    with pytest.raises(
        ValueError, match=r"unknown loss 'lumi_net'.*'crld'.*'luminet'.*Did you mean 'luminet'\?"
    ):
        build_loss("lumi_net")


def test_unknown_keyword_lists_valid_keywords():
    with pytest.raises(
        TypeError, match=r"loss 'kd' got unknown keyword\(s\) \['T'\]; valid keywords: \['temperature'\]"
    ):
        build_loss("kd", T=4.0)


def test_register_loss_adds_a_custom_loss_and_guards_names(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_loss("l2")
    class L2Loss(DistillationLoss):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        def forward(self, student_logits, teacher_logits):
            return self.scale * (student_logits - teacher_logits).square().mean()

    assert "l2" in available_losses()
    assert build_loss("l2", scale=2.0)(torch.ones(2, 3), torch.zeros(2, 3)).item() == 2.0
    with pytest.raises(ValueError, match="'kd' is already registered to KDLoss"):
        register_loss("kd")(L2Loss)
    with pytest.raises(TypeError, match="expects a DistillationLoss subclass"):
        register_loss("module")(torch.nn.MSELoss)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: KDLoss(temperature=0.0), "temperature must be > 0, got 0.0"),
        (lambda: LumiNetLoss(eps=-1.0), "eps must be > 0, got -1.0"),
        (lambda: DKDLoss(temperature=-4.0), "temperature must be > 0"),
        (lambda: CRLDLoss(tau_weak=1.5), r"tau_weak must lie in \[0.0, 1.0\], got 1.5"),
        (lambda: CRLDLoss(tau_strong=-0.1), r"tau_strong must lie in \[0.0, 1.0\]"),
        (lambda: LogitStandardKDLoss(temperature=0), "temperature must be > 0"),
        (lambda: DISTLoss(temperature=0), "temperature must be > 0"),
    ],
)
def test_bad_hyperparameters_are_rejected(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_global_stats_without_distributed_equals_local():
    s, t = torch.randn(12, 7, dtype=torch.float64), torch.randn(12, 7, dtype=torch.float64)
    local = value_and_student_grads(LumiNetLoss(global_stats=False), [s], [t])
    global_ = value_and_student_grads(LumiNetLoss(global_stats=True), [s], [t])
    assert_close(global_, local, rtol=0, atol=0)


def test_dkd_accepts_any_integer_label_dtype():
    loss = DKDLoss()
    (s, t), y = [torch.randn(6, 5) for _ in range(2)], torch.randint(5, (6,))
    assert_close(loss(s, t, y.int()), loss(s, t, y))


def test_losses_import_neither_timm_nor_accelerate():
    code = "import vitkd.losses, sys; assert 'timm' not in sys.modules and 'accelerate' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- input errors -----------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits .* got \(4, 10\) and \(4, 12\)"):
        KDLoss()(torch.randn(4, 10), torch.randn(4, 12))
    with pytest.raises(ValueError, match=r"student_weak and teacher_strong .* got \(4, 10\) and \(3, 10\)"):
        CRLDLoss()(torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10), torch.randn(3, 10))


@pytest.mark.parametrize(
    "bad", [torch.randn(4), torch.randn(2, 4, 10), torch.randn(0, 10)], ids=["1d", "3d", "empty"]
)
def test_logits_must_be_nonempty_matrices(bad):
    with pytest.raises(ValueError, match=r"student_logits must be a non-empty \(batch, classes\) matrix"):
        LumiNetLoss()(bad, bad)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (
            torch.tensor([0, 1, 2, 5]),
            ValueError,
            r"target must lie in \[0, 4\] for 5 classes, got values in \[0, 5\]",
        ),
        (torch.tensor([0, -1, 2, 3]), ValueError, r"got values in \[-1, 3\]"),
        (torch.tensor([0, 1, 2]), ValueError, r"target must have shape \(4,\) .* got \(3,\)"),
        (torch.eye(5)[:4].long(), ValueError, r"not one-hot"),
        (
            torch.tensor([0.0, 1.0, 2.0, 3.0]),
            TypeError,
            "target must hold integer class indices.*torch.float32",
        ),
    ],
)
def test_bad_target(target, error, message):
    with pytest.raises(error, match=message):
        DKDLoss()(torch.randn(4, 5), torch.randn(4, 5), target)


@pytest.mark.parametrize("name", ["luminet", "dist"])
def test_batch_of_one_is_rejected_for_batch_statistics(name):
    with pytest.raises(ValueError, match="per-class batch statistics need ≥ 2 samples; use drop_last=True"):
        build_loss(name)(torch.randn(1, 10), torch.randn(1, 10))


def test_perception_rejects_a_batch_of_one_and_non_matrices():
    with pytest.raises(ValueError, match="logits has a batch of 1: per-class batch statistics need ≥ 2"):
        perception(torch.randn(1, 10))
    with pytest.raises(ValueError, match=r"logits must be a non-empty \(batch, classes\) matrix"):
        perception(torch.randn(4, 10, 3))


def test_single_class_is_rejected_where_meaningless():
    with pytest.raises(ValueError, match="1 classes; DKD's non-target term needs at least 2"):
        DKDLoss()(torch.randn(4, 1), torch.randn(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="standard deviation needs at least 2"):
        LogitStandardKDLoss()(torch.randn(4, 1), torch.randn(4, 1))


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_are_named(bad_value):
    good, bad = torch.randn(4, 10), torch.randn(4, 10)
    bad[2, 3] = bad_value
    with pytest.raises(ValueError, match="^student_logits contains NaN/inf$"):
        KDLoss()(bad, good)
    with pytest.raises(ValueError, match="^teacher_logits contains NaN/inf$"):
        LumiNetLoss()(good, bad)
    with pytest.raises(ValueError, match="^student_strong and teacher_strong contain NaN/inf$"):
        CRLDLoss()(good, bad, good, bad)


def test_huge_finite_logits_are_not_reported_as_non_finite():
    """Their float32 sum overflows; the exact element-wise check must then clear them."""
    huge = torch.full((4, 10), 3e38)
    assert KDLoss()(huge, huge).item() == 0.0
