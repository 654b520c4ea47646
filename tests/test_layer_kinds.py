"""Per-op runtime counters summed by kind of layer (edgevit.layer_kinds)."""
import pytest

from edgevit.layer_kinds import by_kind, kind_cells


def test_ops_sum_into_kinds_with_their_integer_share():
    summary = by_kind({"FullyConnected@int8": 6.0, "MatMul@fp32": 2.0, "Softmax@fp32": 1.0, "GatherElements@fp32": 0.5,
                       "Transpose@fp32": 0.25, "Erf@fp32": 0.25})
    kinds = summary["kinds"]
    assert summary["total_ms"] == pytest.approx(10.0)
    assert kinds["linear"] == {"ms": 6.0, "share": pytest.approx(0.6), "integer_share": 1.0}
    assert kinds["token glue"]["ms"] == 0.5 and kinds["layout"]["ms"] == 0.25 and kinds["elementwise / other"]["ms"] == 0.25
    assert summary["compute_integer_share"] == pytest.approx(6 / 8)  # the float attention matmul is not integer
    assert list(kinds)[0] == "linear"  # largest first
    assert kind_cells(summary, ("softmax", "attention")) == ["10%", "-"]


def test_empty_and_unlabelled_counters():
    assert by_kind({})["compute_integer_share"] == 0.0
    assert by_kind({"SomethingNew": 1.0})["kinds"]["elementwise / other"]["share"] == 1.0


def test_gemm_peaks_are_measured_on_this_cpu():
    """The roofline's denominator: int8 and fp32 GEMM throughput, measured, not typed."""
    from edgevit.bench.peak import int8_gemm_peak

    peak = int8_gemm_peak()
    assert peak["int8_gmacs"] > 1 and peak["fp32_gmacs"] > 1
