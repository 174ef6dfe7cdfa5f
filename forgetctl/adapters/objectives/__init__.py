"""Unlearning objectives: pure losses (losses.py) and the method table (table.py)."""

from forgetctl.adapters.objectives.table import (
    HIDDEN,
    IDK_TARGETS,
    OBJECTIVES,
    QA_ONLY,
    REF_FORGET,
    REF_RETAIN,
    RETAIN,
    Forward,
    Inputs,
    Objective,
    required_inputs,
    total_loss,
)

__all__ = [
    "HIDDEN",
    "IDK_TARGETS",
    "OBJECTIVES",
    "QA_ONLY",
    "REF_FORGET",
    "REF_RETAIN",
    "RETAIN",
    "Forward",
    "Inputs",
    "Objective",
    "required_inputs",
    "total_loss",
]
