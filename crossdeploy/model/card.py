"""The model card: what the pipeline knows about the source model (architecture, where its weights came
from, its preprocessing and classes), written beside the exported program and read by every stage that
reports on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from crossdeploy.data.preprocessing import Preprocessing

RANDOM_WEIGHTS_NOTE = "random weights: fidelity figures only, no accuracy"
SWITCH_TO_REAL_WEIGHTS = (
    "set `model.weights: IMAGENET1K_V2` (torchvision weights, from the local torch hub cache or downloaded) "
    "or `model.checkpoint: path/to/your_state_dict.pt` in conf/config.yaml"
)


@dataclass(frozen=True)
class ModelCard:
    """What the pipeline knows about the source model; written beside the exported program."""

    name: str
    arch: str
    num_classes: int
    source: str  # "random", "torchvision-weights" or "checkpoint"
    weights: str | None
    checkpoint: str | None
    random_weights: bool
    preprocessing: Preprocessing
    categories: list[str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        data["note"] = RANDOM_WEIGHTS_NOTE if self.random_weights else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["preprocessing"] = Preprocessing.from_dict(data["preprocessing"])
        return cls(**fields)
