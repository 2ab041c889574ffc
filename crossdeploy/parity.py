"""Compare a variant's logits with the PyTorch FP32 reference, and judge them against thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossdeploy.errors import CrossdeployError


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def compare_logits(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    if reference.shape != candidate.shape:
        raise ValueError(f"logits shape {candidate.shape} differs from the reference {reference.shape}")
    if not np.isfinite(reference).all():
        raise CrossdeployError("the PyTorch FP32 reference's logits contain NaN or inf; check model.checkpoint and the model stage.")
    nonfinite = int(np.size(candidate) - np.isfinite(candidate).sum())
    if nonfinite:
        # every figure below would be NaN, and NaN compares false against any threshold
        return {"nonfinite_values": nonfinite}
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    error = np.abs(candidate - reference)
    top5_ref, top5_cand = _top_k(reference, 5), _top_k(candidate, 5)
    overlap = [len(set(a) & set(b)) / top5_ref.shape[1] for a, b in zip(top5_ref, top5_cand)]
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.where(norms == 0, 1.0, norms)
    metrics = {
        "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "top5_overlap": float(np.mean(overlap)),
        "max_abs_err": float(error.max()),
        "mean_abs_err": float(error.mean()),
        "cosine_min": float(cosine.min()),
        # Errors mean little without the scale of the logits they are made on.
        "max_abs_err_rel": float(error.max() / max(np.abs(reference).max(), 1e-12)),
    }
    if labels is not None and len(labels) and (labels >= 0).all():
        metrics["accuracy_top1"] = float(np.mean(candidate.argmax(1) == labels))
        metrics["accuracy_top5"] = float(np.mean([label in row for label, row in zip(labels, top5_cand)]))
        metrics["accuracy_drop"] = float(np.mean(reference.argmax(1) == labels)) - metrics["accuracy_top1"]
    return {k: round(v, 6) if k in ("top1_agreement", "top5_overlap", "cosine_min") else v for k, v in metrics.items()}


@dataclass(frozen=True)
class Thresholds:
    """Minimums (agreement, overlap, cosine) and maxima (relative error, accuracy lost against the
    labels, where the evaluation set has them) one precision must meet."""

    top1_agreement: float
    top5_overlap: float = 0.0
    cosine_min: float = 0.0
    max_abs_err_rel: float | None = None
    accuracy_drop_max: float | None = None

    def misses(self, metrics: dict[str, float], judge_agreement: bool = True) -> list[str]:
        """What the metrics miss; judge_agreement=False leaves top-1/top-5 out of the verdict."""
        if metrics.get("nonfinite_values"):
            return [f"{metrics['nonfinite_values']} logits are NaN or inf"]
        missed = []
        keys = ("top1_agreement", "top5_overlap", "cosine_min") if judge_agreement else ("cosine_min",)
        for key in keys:
            if metrics[key] < getattr(self, key):
                missed.append(f"{key} {metrics[key]:.4f} < {getattr(self, key)}")
        if self.max_abs_err_rel is not None and metrics["max_abs_err_rel"] > self.max_abs_err_rel:
            missed.append(f"max_abs_err_rel {metrics['max_abs_err_rel']:.2e} > {self.max_abs_err_rel:.0e}")
        drop = metrics.get("accuracy_drop")
        if self.accuracy_drop_max is not None and drop is not None and drop > self.accuracy_drop_max:
            missed.append(f"accuracy_drop {drop:.4f} > {self.accuracy_drop_max}")
        return missed
