"""Property tests (hypothesis) for vitkd.losses: invariances, zeros, signs, bounds, extreme logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.testing import assert_close

from vitkd.losses import CRLDLoss, DISTLoss, DKDLoss, KDLoss, LogitStandardKDLoss, LumiNetLoss, build_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add overhead

bounded = settings(max_examples=30, deadline=None, derandomize=True)
shapes = st.tuples(st.integers(2, 12), st.integers(2, 12))


@st.composite
def extreme_logits(draw: st.DrawFn, count: int) -> list[torch.Tensor]:
    """``count`` float32 (B, C) matrices with entries anywhere in [-1e4, 1e4], ties and constant
    columns included (hypothesis favours repeated and boundary values)."""
    shape = draw(shapes)
    elements = st.floats(-1e4, 1e4, width=32)
    return [torch.from_numpy(draw(arrays(np.float32, shape, elements=elements))) for _ in range(count)]


@st.composite
def random_logits(draw: st.DrawFn, count: int) -> list[torch.Tensor]:
    """``count`` well-conditioned float64 (B, C) Gaussian matrices (distinct values a.s.)."""
    batch, classes = draw(shapes)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.floats(0.1, 10.0))
    return [scale * torch.randn(batch, classes, generator=g, dtype=torch.float64) for _ in range(count)]


def call(loss, students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    labels = [torch.arange(len(students[0])) % students[0].shape[1]] if loss.requires_target else []
    return loss(*students, *teachers, *labels)


# ---- LumiNet -------------------------------------------------------------------------------------


@bounded
@given(
    random_logits(2),
    st.data(),
    st.sampled_from(["student", "teacher"]),
)
def test_luminet_invariant_to_per_class_shift_and_positive_scale(logits, data, side):
    student, teacher = logits
    assume(min(x.std(0, unbiased=False).min() for x in logits) > 0.05)  # eps-free up to ~1e-8
    classes = student.shape[1]
    shift = torch.tensor(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=classes, max_size=classes)))
    log10_scale = torch.tensor(data.draw(st.lists(st.floats(-2, 2), min_size=classes, max_size=classes)))
    loss = LumiNetLoss(temperature=2.0, alpha=3.0, eps=1e-18)  # eps ≪ every column variance
    moved = {"student": student, "teacher": teacher}
    moved[side] = moved[side] * 10**log10_scale + shift
    assert_close(loss(moved["student"], moved["teacher"]), loss(student, teacher), rtol=1e-6, atol=1e-9)


# ---- all losses ----------------------------------------------------------------------------------


@bounded
@given(extreme_logits(2), st.sampled_from(["kd", "luminet", "dkd", "crld", "ls_kd"]))
def test_zero_when_student_equals_teacher(logits, name):
    student, _ = logits
    loss = build_loss(name)
    views = [student] * loss.num_views
    assert abs(call(loss, views, views).item()) <= 1e-6


@bounded
@given(extreme_logits(4), st.sampled_from(["kd", "luminet", "dkd", "crld", "ls_kd", "dist"]))
def test_finite_non_negative_and_finite_gradients_for_extreme_logits(logits, name):
    loss = build_loss(name)
    students = [x.requires_grad_() for x in logits[: loss.num_views]]
    value = call(loss, students, logits[2 : 2 + loss.num_views])
    value.backward()
    assert torch.isfinite(value)
    assert value >= -1e-6
    assert all(torch.isfinite(s.grad).all() for s in students)


@bounded
@given(random_logits(2))
def test_non_negative_on_random_logits(logits):
    for name in ["kd", "luminet", "dkd", "ls_kd", "dist"]:
        assert call(build_loss(name), logits[:1], logits[1:]) >= -1e-12, name


# ---- method-specific identities ------------------------------------------------------------------


@bounded
@given(extreme_logits(2), st.floats(0.5, 8.0), st.floats(0.0, 2.0), st.floats(0.0, 2.0))
def test_dist_is_bounded_and_symmetric(logits, temperature, beta, gamma):
    """Pearson correlations lie in [-1, 1], so 0 ≤ loss ≤ 2·T²·(beta + gamma); they are symmetric."""
    student, teacher = (x.double() for x in logits)
    loss = DISTLoss(beta=beta, gamma=gamma, temperature=temperature)
    value = loss(student, teacher)
    assert -1e-12 <= value <= 2 * temperature**2 * (beta + gamma) + 1e-12
    assert_close(value, loss(teacher, student), rtol=1e-9, atol=1e-12)


@bounded
@given(random_logits(2))
def test_dist_invariant_to_per_sample_shift(logits):
    student, teacher = logits
    loss = DISTLoss(beta=2.0, gamma=2.0, temperature=4.0)
    shift = 100 * teacher[:, :1]  # any per-row constant: softmax ignores it
    assert_close(loss(student + shift, teacher), loss(student, teacher), rtol=1e-9, atol=1e-12)


@bounded
@given(random_logits(2), st.floats(0.5, 8.0))
def test_dkd_decomposes_kd(logits, temperature):
    """Zhao et al.'s identity, per sample: KL(p_t‖p_s) = TCKD + (1 − p_t[y]) · NCKD."""
    student, teacher = (x[:1] for x in logits)  # one sample: beta may depend on its p_t[y]
    label = torch.tensor([int(torch.argmin(teacher))])
    p_t_label = (teacher / temperature).softmax(1)[0, label].item()
    dkd = DKDLoss(alpha=1.0, beta=1.0 - p_t_label, temperature=temperature)
    assert_close(dkd(student, teacher, label), KDLoss(temperature)(student, teacher), rtol=1e-9, atol=1e-12)


@bounded
@given(random_logits(4), st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_crld_with_open_masks_is_a_sum_of_kd_terms(logits, within_weight, cross_weight):
    s_w, s_s, t_w, t_s = logits
    crld = CRLDLoss(tau_weak=0.0, tau_strong=0.0, within_weight=within_weight, cross_weight=cross_weight)
    kd = KDLoss(temperature=4.0)
    expected = within_weight * (kd(s_w, t_w) + kd(s_s, t_s)) + cross_weight * (kd(s_s, t_w) + kd(s_w, t_s))
    assert_close(crld(s_w, s_s, t_w, t_s), expected, rtol=1e-9, atol=1e-12)


@bounded
@given(random_logits(2), st.data(), st.sampled_from(["student", "teacher"]))
def test_ls_kd_invariant_to_per_sample_shift_and_positive_scale(logits, data, side):
    student, teacher = logits
    assume(min(x.std(1).min() for x in logits) > 0.05)
    rows = len(student)
    shift = torch.tensor(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=rows, max_size=rows)))[:, None]
    log10_scale = torch.tensor(data.draw(st.lists(st.floats(-1, 2), min_size=rows, max_size=rows)))[:, None]
    moved = {"student": student, "teacher": teacher}
    moved[side] = moved[side] * 10**log10_scale + shift
    loss = LogitStandardKDLoss()
    # Only the 1e-7 on the std breaks exact invariance: relative effect ≤ 1e-7 / (0.1 · 0.05) = 2e-5.
    assert_close(loss(moved["student"], moved["teacher"]), loss(student, teacher), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name", ["luminet", "ls_kd"])
def test_standardising_losses_ignore_logit_scale_unlike_kd(name):
    """A sanity anchor for the invariance tests: plain KD does change under the same rescaling."""
    g = torch.Generator().manual_seed(0)
    student, teacher = (torch.randn(16, 10, generator=g, dtype=torch.float64) for _ in range(2))
    loss, kd = build_loss(name), KDLoss()
    assert_close(loss(3 * student, teacher), loss(student, teacher), rtol=1e-5, atol=0)
    assert not torch.allclose(kd(3 * student, teacher), kd(student, teacher), rtol=1e-2)
