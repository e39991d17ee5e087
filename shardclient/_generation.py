"""The two generations of OpenFL's director protocol, as every layer names them."""

from __future__ import annotations

import enum

__all__ = ["Generation"]


class Generation(enum.Enum):
    """A director protocol generation; its value is how messages name it."""

    INTERACTIVE = "OpenFL 1.5-1.7"
    """``openfl.director``: the interactive API's director (removed in OpenFL 1.8)."""
    WORKFLOW = "OpenFL 1.9"
    """``openfl.experimental.workflow.director``: the Workflow API's (FederatedRuntime)."""
