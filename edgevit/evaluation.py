"""Numerical checks of artifacts against PyTorch, and accuracy.

CHECK_THRESHOLDS is the single table of tolerances; the report prints the row it used.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgevit.errors import DataError


@dataclass(frozen=True)
class Threshold:
    metric: str
    rtol: float | None = None
    atol: float | None = None
    min_sqnr_db: float | None = None
    min_agreement: float | None = None


CHECK_THRESHOLDS: dict[str, Threshold] = {
    # fp32 must be the same function: elementwise |a-b| <= atol + rtol*|ref|.
    "fp32": Threshold("allclose", rtol=1e-3, atol=1e-4),
    # fp16/bf16 change rounding, not the function: small absolute error, same decisions.
    "fp16": Threshold("allclose+agreement", rtol=0.0, atol=5e-3, min_agreement=0.99),
    "bf16": Threshold("sqnr+agreement", min_sqnr_db=30.0, min_agreement=0.99),
    # Quantized artifacts approximate: signal-to-quantization-noise on logits + top-1 agreement.
    "int8": Threshold("sqnr+agreement", min_sqnr_db=20.0, min_agreement=0.90),
    "int4": Threshold("sqnr+agreement", min_sqnr_db=15.0, min_agreement=0.85),
    "mixed": Threshold("sqnr+agreement", min_sqnr_db=15.0, min_agreement=0.85),
}


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))


def check_outputs(reference: np.ndarray, candidate: np.ndarray, precision: str, random_weights: bool = False) -> dict[str, Any]:
    """The report's ``check`` record: metric, threshold, value, passed (+ diagnostics).

    With random weights the logits of different classes nearly tie, so top-1 agreement
    measures ties, not fidelity: it is then reported but not enforced (said in the record)."""
    if reference.shape != candidate.shape:
        return {
            "metric": "shape", "threshold": {"shape": list(reference.shape)}, "value": list(candidate.shape),
            "passed": False, "reason": f"output shape {candidate.shape} != PyTorch {reference.shape}",
        }
    t = CHECK_THRESHOLDS[precision]
    threshold = {k: v for k, v in asdict(t).items() if v is not None and k != "metric"}
    non_finite = _non_finite_counts(reference, candidate)
    if non_finite:
        # NaN compares false with every tolerance, so no metric below could fail on it.
        return {"metric": t.metric, "threshold": threshold, "value": None, "passed": False, "n": int(reference.shape[0]),
                "non_finite": non_finite,
                "reason": "non-finite outputs (NaN/inf): " + ", ".join(f"{k} {v}" for k, v in non_finite.items())}
    diff = np.abs(reference.astype(np.float64) - candidate)
    agreement, sqnr = top1_agreement(reference, candidate), sqnr_db(reference, candidate)
    record: dict[str, Any] = {
        "metric": t.metric,
        "threshold": threshold,
        "max_abs_diff": float(diff.max()),
        "agreement": agreement,
        "sqnr_db": _json_db(sqnr),
        "n": int(reference.shape[0]),
    }
    failures = []
    if t.atol is not None:
        excess = diff - (t.atol + (t.rtol or 0.0) * np.abs(reference))
        worst = float(excess.max())
        record["value"] = float(diff.max())
        record["worst_excess_over_tolerance"] = worst
        if worst > 0:
            failures.append(f"max |diff| {diff.max():.3g} exceeds atol {t.atol:g} + rtol {t.rtol:g}*|ref| by {worst:.3g}")
    if t.min_sqnr_db is not None:
        record.setdefault("value", _json_db(sqnr))
        if sqnr == float("inf"):
            record["note_sqnr"] = "outputs identical to PyTorch (SQNR infinite, reported as null)"
        if not sqnr >= t.min_sqnr_db:
            failures.append(f"SQNR {sqnr:.1f} dB < {t.min_sqnr_db:g} dB")
    if t.min_agreement is not None and random_weights:
        record["agreement_enforced"] = False
        record["note"] = "random weights: top-1 agreement is reported, not enforced (near-tied logits)"
    elif t.min_agreement is not None and agreement < t.min_agreement:
        failures.append(f"top-1 agreement {agreement:.3f} < {t.min_agreement:g}")
    record["passed"] = not failures
    if failures:
        record["reason"] = "; ".join(failures)
    return record


def _non_finite_counts(reference: np.ndarray, candidate: np.ndarray) -> dict[str, int]:
    """How many NaN/inf values each side holds: a diverged or NaN-weight model must fail."""
    counts = {"PyTorch reference": int(np.size(reference) - np.count_nonzero(np.isfinite(reference))),
              "artifact": int(np.size(candidate) - np.count_nonzero(np.isfinite(candidate)))}
    return {k: v for k, v in counts.items() if v}


def _json_db(value: float) -> float | None:
    """SQNR for report.json, which holds only finite numbers: +-inf becomes null."""
    return value if np.isfinite(value) else None


def paired_change_se(right: np.ndarray, against: np.ndarray) -> float:
    """Standard error of mean(right) - mean(against) (booleans per image, the same images):
    only the images where exactly one of the two is right carry it."""
    n = len(right)
    if not n:
        return 0.0
    gained, lost = int((right & ~against).sum()), int((~right & against).sum())
    return float(np.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n)


class Top1Counter:
    """Accumulates top-1 of several predictors over one stream of batches, plus their
    agreement with a reference predictor, so images are decoded once for all of them, and
    the standard error of each one's top-1 change against the reference on these images."""

    def __init__(self, names: list[str], reference: str):
        self.names, self.reference = names, reference
        self.correct = dict.fromkeys(names, 0)
        self.agree = dict.fromkeys(names, 0)
        self.right: dict[str, list[np.ndarray]] = {name: [] for name in names}  # per image, for paired changes
        self.n = 0

    def update(self, labels: np.ndarray, logits: dict[str, np.ndarray]) -> None:
        outputs = logits[self.reference].shape[-1]
        if labels.size and int(labels.max()) >= outputs:  # that class could never be predicted: not a score
            raise DataError(f"image label index {int(labels.max())} but the model has {outputs} outputs",
                            "give an image folder with at most that many classes, or the model they were trained for")
        ref_pred = logits[self.reference].argmax(-1)
        for name in self.names:
            pred = logits[name].argmax(-1)
            right = pred == labels
            self.correct[name] += int(right.sum())
            self.agree[name] += int((pred == ref_pred).sum())
            self.right[name].append(right)
        self.n += len(labels)

    def change_se(self, name: str, against: str | None = None) -> float:
        """Standard error of top-1(name) - top-1(against; default the reference), paired on
        the same images: only the images where exactly one of the two is right carry it. On
        2000 images a change that flips 5 % of them reads +-0.5 pt, as large as a 0.5-pt budget."""
        if not self.n:
            return 0.0
        return paired_change_se(np.concatenate(self.right[name]), np.concatenate(self.right[against or self.reference]))

    def result(self) -> dict[str, dict[str, float]]:
        return {
            name: {"top1": self.correct[name] / self.n, "agreement_with_" + self.reference: self.agree[name] / self.n,
                   "change_se_vs_" + self.reference: self.change_se(name)}
            for name in self.names
        }


def check_all_outputs(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], precision: str,
                      random_weights: bool = False) -> dict[str, Any]:
    """Check every reference output (a cascade has one per exit): the record is the final
    output's, with each output's verdict listed; it passes only if all pass."""
    checks = {}
    for name, ref in reference.items():
        got = outputs.get(name)
        if got is None and len(reference) == 1 and outputs:
            got = next(iter(outputs.values()))  # a bare model file may name its output differently
        checks[name] = (check_outputs(ref, got, precision, random_weights) if got is not None
                        else {"passed": False, "reason": f"runner returned no output '{name}'"})
    final = dict(checks[list(reference)[-1]])
    if len(checks) > 1:
        final["outputs"] = {k: {"passed": c["passed"], "value": c.get("value")} for k, c in checks.items()}
        failed = [f"{k}: {c['reason']}" for k, c in checks.items() if not c["passed"]]
        final["passed"] = not failed
        if failed:
            final["reason"] = "; ".join(failed)
    return final
