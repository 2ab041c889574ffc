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
        # the single worst image moves with every retraining of a stand-in; a low percentile does not
        COSINE_LOW: float(np.percentile(cosine, COSINE_PERCENTILE)),
        # Errors mean little without the scale of the logits they are made on.
        "max_abs_err_rel": float(error.max() / max(np.abs(reference).max(), 1e-12)),
        **input_dependence(reference, candidate),
    }
    if labels is not None and len(labels) and (labels >= 0).all():
        metrics["accuracy_top1"] = float(np.mean(candidate.argmax(1) == labels))
        metrics["accuracy_top5"] = float(np.mean([label in row for label, row in zip(labels, top5_cand)]))
        reference_accuracy = float(np.mean(reference.argmax(1) == labels))
        metrics["accuracy_drop"] = reference_accuracy - metrics["accuracy_top1"]
        # MLPerf's accuracy rule: a quantized model keeps at least 99 % of its FP32 reference's accuracy
        metrics["accuracy_ratio"] = metrics["accuracy_top1"] / reference_accuracy if reference_accuracy else 0.0
    return {k: round(v, 6) if k in ROUNDED else v for k, v in metrics.items()}


#: how far a uniform rescaling of the logits may go before it counts as noise (25 %: 0.8 to 1.25)
GAIN_FORGIVEN = 0.25
#: the per-image cosine percentile a verdict rests on, and its key in a parity row
COSINE_PERCENTILE = 1
COSINE_LOW = "cosine_p1"
ROUNDED = (
    "top1_agreement",
    "top5_overlap",
    "cosine_min",
    COSINE_LOW,
    "input_spread",
    "output_scale",
    "gain",
    "noise_rel",
    "accuracy_ratio",
)


def input_dependence(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How much the candidate's logits move from image to image, and how far they are off, against the reference's.

    input_spread: the RMS of the candidate's logits about their mean over the images, over the reference's.
    Whatever the weights, a faithful variant moves about as much as its reference (INT8 noise on random
    weights adds spread, it does not remove it); one that ignores its input, answers a constant or zeros
    has none. output_scale: the candidate's RMS logit over the reference's (0 for all-zero logits).

    noise_rel: the error against the signal it could damage, after the one gain that fits the candidate best
    (`gain`, forgiven up to GAIN_FORGIVEN either way): the RMS of candidate - gain x reference, both about the
    reference's mean logits, over the RMS of the reference's. 0.2 is noise of 20 % of the image-to-image
    spread. Measured on what moves with the input, so the constant vector that dominates random weights'
    logits neither hides an error nor flatters a good variant; an offset per class is counted, a uniform
    rescaling (symmetric INT8 shrinks logits a few per cent, which changes no ranking) is not."""
    mean = reference.mean(0)
    signal, answer = reference - mean, candidate - mean
    moving = np.sqrt(np.mean(signal**2))
    if not moving > 0:
        raise CrossdeployError(
            f"the PyTorch FP32 reference gives the same logits for all {len(reference)} evaluation images, so no variant can be "
            "judged against it: use at least 2 different images (data.evaluation_size) and check model.checkpoint."
        )
    gain = float(np.sum(answer * signal) / np.sum(signal**2))
    # a rescaling within GAIN_FORGIVEN is no noise; beyond it (an input-blind answer has gain 0) the rest counts
    forgiven = min(max(gain, 1 / (1 + GAIN_FORGIVEN)), 1 + GAIN_FORGIVEN)
    return {
        "input_spread": float(np.sqrt(np.mean((candidate - candidate.mean(0)) ** 2)) / moving),
        "output_scale": float(np.sqrt(np.mean(candidate**2)) / np.sqrt(np.mean(reference**2))),
        "gain": gain,
        "noise_rel": float(np.sqrt(np.mean((answer - forgiven * signal) ** 2)) / moving),
    }


@dataclass(frozen=True)
class Floor:
    """What every variant must show whatever its weights, random ones included, before any threshold: finite
    logits that depend on the input. A variant that misses it is failed, never unjudged."""

    input_spread_min: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.input_spread_min < 1:
            raise CrossdeployError(f"validate.floor.input_spread_min must be between 0 and 1, got {self.input_spread_min!r}.")

    def misses(self, metrics: dict[str, float]) -> list[str]:
        if metrics.get("nonfinite_values"):
            return [f"{metrics['nonfinite_values']} logits are NaN or inf"]
        if metrics["output_scale"] == 0:
            return ["every logit is zero"]
        if metrics["input_spread"] == 0:
            return ["every image gets the same logits: the outputs do not depend on the input"]
        if metrics["input_spread"] < self.input_spread_min:
            return [
                f"the outputs barely depend on the input: they move {metrics['input_spread']:.3g} as much from image to "
                f"image as the reference's (validate.floor.input_spread_min {self.input_spread_min})"
            ]
        return []


@dataclass(frozen=True)
class Thresholds:
    """Minimums (agreement, overlap, cosine, the share of the reference's accuracy kept) and maxima (relative
    error, accuracy lost against the labels, where the evaluation set has them) one precision must meet.
    A None bound is not judged."""

    top1_agreement: float
    top5_overlap: float = 0.0
    cosine_min: float | None = 0.0  # the single worst image
    cosine_p1: float | None = None  # the 1st percentile of the per-image cosines: steady where retraining moves the worst image
    max_abs_err_rel: float | None = None
    noise_rel_max: float | None = None  # the RMS error over the reference's image-to-image spread (parity.input_dependence)
    accuracy_drop_max: float | None = None
    accuracy_ratio_min: float | None = None  # MLPerf's rule: at least this fraction of the reference's accuracy

    def misses(self, metrics: dict[str, float], judge_agreement: bool = True) -> list[str]:
        """What the metrics miss; judge_agreement=False leaves top-1/top-5 out of the verdict."""
        if metrics.get("nonfinite_values"):
            return [f"{metrics['nonfinite_values']} logits are NaN or inf"]
        missed = []
        keys = ("top1_agreement", "top5_overlap", "cosine_min", COSINE_LOW) if judge_agreement else ("cosine_min", COSINE_LOW)
        for key in keys:
            bound = getattr(self, key)
            if bound is not None and metrics[key] < bound:
                missed.append(f"{key} {metrics[key]:.4f} < {bound}")
        if self.max_abs_err_rel is not None and metrics["max_abs_err_rel"] > self.max_abs_err_rel:
            missed.append(f"max_abs_err_rel {metrics['max_abs_err_rel']:.2e} > {self.max_abs_err_rel:.0e}")
        if self.noise_rel_max is not None and metrics["noise_rel"] > self.noise_rel_max:
            missed.append(f"noise_rel {metrics['noise_rel']:.4f} > {self.noise_rel_max}")
        drop = metrics.get("accuracy_drop")
        if self.accuracy_drop_max is not None and drop is not None and drop > self.accuracy_drop_max:
            missed.append(f"accuracy_drop {drop:.4f} > {self.accuracy_drop_max}")
        ratio = metrics.get("accuracy_ratio")
        if self.accuracy_ratio_min is not None and ratio is not None and ratio < self.accuracy_ratio_min:
            missed.append(f"accuracy_ratio {ratio:.4f} < {self.accuracy_ratio_min} of the reference's accuracy")
        return missed
