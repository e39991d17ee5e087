"""What tests share about the LocalDirector they talk to: its shapes and health period, and the
smallest descriptor it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_SHAPE = ["28", "28"]
TARGET_SHAPE = ["1"]
PERIOD = 7


@dataclass
class Descriptor:
    """The smallest OpenFL-style descriptor: int shapes, as OpenFL's dummy one returns."""

    sample_shape: list[int] = field(default_factory=lambda: [28, 28])
    target_shape: list[int] = field(default_factory=lambda: [1])
    dataset_description: str = "test shard"
