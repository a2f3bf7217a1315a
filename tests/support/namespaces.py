"""Processes that cannot see each other's disks: a private mount namespace per process.

``private(command, hide=[...])`` runs ``command`` under ``unshare -m`` with an empty tmpfs mounted
over each hidden directory (another process's scratch and home), so whatever a process
writes there only it sees, as on separate hosts. Everything else (the project, the virtualenv) stays
visible, as an image's files are on every host. The services of an isolated runtime use the same
function (:func:`include.preference.services.private_mount_namespace`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from include.preference.services import private_mount_namespace


def require_namespaces() -> None:
    """Skip with the reason when this machine cannot make mount namespaces (needs root and unshare)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("private mount namespaces need util-linux's unshare and root")


def private(command: Sequence[str], hide: Sequence[Path]) -> list[str]:
    """``command`` in a mount namespace of its own, with an empty tmpfs over each of ``hide``."""
    return private_mount_namespace(list(command), [Path(d) for d in hide])
