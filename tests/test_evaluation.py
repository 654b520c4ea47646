import numpy as np
import pytest
import torch

from edgevit.evaluation import CHECK_THRESHOLDS, Top1Counter, check_outputs, sqnr_db
from edgevit.flops import count_flops, count_params


def test_fp32_check_passes_within_and_fails_outside_tolerance():
    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    ok = check_outputs(ref, ref + 5e-5, "fp32")
    assert ok["passed"] and ok["metric"] == "allclose" and ok["threshold"] == {"rtol": 1e-3, "atol": 1e-4}
    bad = ref.copy()
    bad[3, 4] += 0.01
    result = check_outputs(ref, bad, "fp32")
    assert not result["passed"] and "exceeds atol" in result["reason"]
    assert result["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)


def test_shape_mismatch_fails():
    assert not check_outputs(np.zeros((2, 10)), np.zeros((2, 9)), "fp32")["passed"]


def test_quantized_check_uses_sqnr_and_agreement():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((64, 10))
    assert check_outputs(ref, ref + 0.01 * rng.standard_normal(ref.shape), "int8")["passed"]
    noisy = check_outputs(ref, ref + 0.5 * rng.standard_normal(ref.shape), "int8")
    assert not noisy["passed"] and "SQNR" in noisy["reason"]
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)


def test_every_threshold_row_is_complete():
    for precision, t in CHECK_THRESHOLDS.items():
        assert t.atol is not None or t.min_sqnr_db is not None, precision


def test_top1_counter():
    counter = Top1Counter(["ref", "b"], reference="ref")
    labels = np.array([0, 1, 1])
    counter.update(labels, {"ref": np.eye(2)[[0, 1, 0]], "b": np.eye(2)[[0, 1, 1]]})
    result = counter.result()
    assert result["ref"]["top1"] == pytest.approx(2 / 3) and result["b"]["top1"] == 1.0
    assert result["b"]["agreement_with_ref"] == pytest.approx(2 / 3)
    # paired: the one image where only b is right carries the change (+1/3) and its error
    assert result["ref"]["change_se_vs_ref"] == 0.0
    assert result["b"]["change_se_vs_ref"] == pytest.approx(np.sqrt(1 - 1 / 3) / 3)
    assert counter.change_se("ref", against="b") == pytest.approx(result["b"]["change_se_vs_ref"])  # symmetric


def test_top1_change_se_matches_the_spread_of_resampled_test_sets():
    """The paired standard error is what a different draw of test images would move the
    change by: compared with the spread of the change over bootstrap resamples."""
    rng = np.random.default_rng(0)
    n = 4000
    labels = rng.integers(0, 2, n)
    ref_right = rng.random(n) < 0.78
    flip = rng.random(n) < 0.06  # b differs from the reference on 6 % of the images
    b_right = np.where(flip, ~ref_right, ref_right)
    logits = {"ref": np.eye(2)[np.where(ref_right, labels, 1 - labels)], "b": np.eye(2)[np.where(b_right, labels, 1 - labels)]}
    counter = Top1Counter(["ref", "b"], reference="ref")
    counter.update(labels, logits)
    boot = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        boot.append(b_right[i].mean() - ref_right[i].mean())
    assert counter.result()["b"]["change_se_vs_ref"] == pytest.approx(np.std(boot), rel=0.15)


def test_flops_count_linear_and_attention():
    lin = torch.nn.Linear(16, 8)
    assert count_flops(lin, (4, 16)) == 2 * 4 * 16 * 8
    assert count_params(lin) == 16 * 8 + 8

    class Attn(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    # q@k^T and attn@v: 2 * (2 * B*H*N*N*D)
    assert count_flops(Attn(), (2, 5, 4)) == 2 * 2 * 1 * 2 * 5 * 5 * 4


def test_random_weights_report_but_do_not_enforce_agreement():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 1000)) * 1e-3  # 1000 near-tied classes, as random weights give
    noisy = ref + 5e-5 * rng.standard_normal(ref.shape)  # 26 dB SQNR, yet 3 of 8 top-1 flip
    assert not check_outputs(ref, noisy, "int8")["passed"]
    relaxed = check_outputs(ref, noisy, "int8", random_weights=True)
    assert relaxed["passed"] and relaxed["agreement_enforced"] is False and relaxed["agreement"] < 0.9
