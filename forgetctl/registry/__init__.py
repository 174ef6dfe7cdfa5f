"""The registry: versioned forget adapters, compositions, pointers and a tamper-evident audit log.

Torch-free on purpose (the CLI's list/show/log/verify start fast).
"""

from forgetctl.registry.commitments import Commitment, commit
from forgetctl.registry.entities import (
    AdapterVersion,
    AuditEntry,
    BaseModelInfo,
    Composition,
    Evaluation,
    PointerMove,
)
from forgetctl.registry.fingerprint import fingerprint
from forgetctl.registry.store import REASONS, Registry, default_actor
from forgetctl.registry.workspace import Workspace, resolve_home, validate_name, validate_pointer_name

__all__ = [
    "AdapterVersion", "AuditEntry", "BaseModelInfo", "Commitment", "Composition", "Evaluation", "PointerMove",
    "REASONS", "Registry", "Workspace", "commit", "default_actor", "fingerprint", "resolve_home",
    "validate_name", "validate_pointer_name",
]
