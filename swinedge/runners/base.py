"""The one runner interface every backend implements.

A runner is loaded once, then ``infer(batch) -> logits`` on NCHW float32 numpy
batches, then closed. Comparison and timing logic lives elsewhere (``verify``,
``bench``) and only sees this interface.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Runner(abc.ABC):
    """load() -> infer(batch) -> close(); also a context manager."""

    name: str = "runner"
    device: str = "cpu"

    @abc.abstractmethod
    def load(self) -> "Runner": ...

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a backbone's ``stage{i}`` maps); a classifier's logits."""
        return {"logits": self.infer(batch)}

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to free
        pass

    def synchronize(self) -> None:  # noqa: B027 - CPU backends are synchronous
        pass

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) batch the artifact accepts, or None for any: a graph exported with a
        fixed batch, or an engine's profile."""
        return None

    @property
    def input_spec(self) -> dict[str, Any]:
        """``{"img_size", "in_chans", "num_classes", "preprocess"}`` where known; a
        backbone's also ``task`` ("backbone"), ``input_size`` (height, width) and
        ``outputs`` (names)."""
        return {}

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()
