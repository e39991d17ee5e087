"""The collaborator children: ``python -m shardclient._envoy.collaborator.<generation>`` runs
OpenFL's collaborator for one experiment, in the unpacked workspace, and exits with its
outcome. ``interactive``: OpenFL 1.5-1.7; ``workflow``: OpenFL 1.9. Only these modules import
openfl; this one holds what both do alike.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

__all__ = ["PLAN", "fx_import_path", "run_to_exit_code"]

PLAN = Path("plan") / "plan.yaml"
"""The experiment's plan, relative to the workspace (the children's working directory)."""


def fx_import_path(envoy_folder: Path, workspace: Path) -> None:
    """sys.path as under ``fx envoy start``: the envoy's folder first (the modules its config
    names), the workspace last (the experiment's own modules)."""
    here = {"", str(workspace), os.getcwd()}
    rest = [entry for entry in sys.path if entry not in here and entry != str(envoy_folder)]
    sys.path[:] = [str(envoy_folder), *rest, str(workspace)]


def run_to_exit_code(run: Callable[[], None]) -> int:
    """0 when ``run()`` returns; 1, with the traceback on stderr (the failure's description
    the envoy keeps and reports), when it raises anything."""
    try:
        run()
    except BaseException:  # noqa: BLE001 - the traceback is the failure's description
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0
