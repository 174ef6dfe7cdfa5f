"""Read-only views for `show`, `history` and comparisons: plain dicts, ready for --json."""

from __future__ import annotations

import re

from forgetctl.errors import InputError, NotFoundError
from forgetctl.registry.entities import AdapterVersion, Composition

_HEX = re.compile(r"[0-9a-f]{6,64}")


def resolve_any(reg, ref: str) -> AdapterVersion | Composition:
    """HEAD, aliases and cN are compositions; N, vN and request ids are adapters; a hash prefix
    is whichever it matches (both: ambiguous)."""
    ref = str(ref).strip()
    if ref in reg.pointers() or re.fullmatch(r"[cC]\d+", ref):
        return reg.composition(ref)
    if _HEX.fullmatch(ref.lower()) and not ref.isdigit():
        found = []
        for lookup in (reg.adapter, reg.composition):
            try:
                found.append(lookup(ref))
            except NotFoundError:
                pass
        if len(found) > 1:
            raise InputError(f"ref {ref!r} matches both {found[0].label} and {found[1].label}: give more characters")
        if found:
            return found[0]
        raise NotFoundError(f"unknown version, composition or alias {ref[:80]!r}")
    try:
        return reg.adapter(ref)
    except NotFoundError:
        raise NotFoundError(f"unknown version, composition or alias {ref[:80]!r} (see `forgetctl list`)") from None


def _labels(reg) -> dict[str, str]:
    labels = {a.id: a.label for a in reg.adapters()}
    labels.update({c.id: c.label for c in reg.compositions()})
    return labels


def _pointers_at(reg, composition_id: str) -> list[str]:
    return sorted(name for name, target in reg.pointers().items() if target == composition_id)


def describe_adapter(reg, version: AdapterVersion) -> dict:
    labels = _labels(reg)
    used_in = [c for c in reg.compositions() if version.id in c.adapters]
    commitment = reg.commitment(version)
    return {
        "kind": "adapter",
        **version.to_dict(),
        "folder": str(reg.adapter_dir(version)),
        "metrics_before": version.meta.get("metrics_before", {}),
        "metrics_after": version.meta.get("metrics_after", {}),
        "commitment": commitment.to_dict() if commitment else None,
        "lineage": {
            "parent_composition": version.parent_composition,
            "parent_label": labels.get(version.parent_composition),
            "used_in": [{"composition": c.id, "label": c.label, "pointers": _pointers_at(reg, c.id)} for c in used_in],
        },
    }


def describe_composition(reg, comp: Composition) -> dict:
    labels = _labels(reg)
    chain, parent = [], comp.parent
    while parent and len(chain) < 1000:
        chain.append({"composition": parent, "label": labels.get(parent)})
        parent = reg.composition(parent).parent
    evaluations = reg.evaluations(comp.id)
    return {
        "kind": "composition",
        **comp.to_dict(),
        "adapter_labels": [labels.get(a, a[:12]) for a in comp.adapters],
        "pointers": _pointers_at(reg, comp.id),
        "lineage": chain,
        "evaluations": [e.to_dict() for e in evaluations],
        "metrics": latest_metrics(evaluations),
    }


def latest_metrics(evaluations) -> dict[str, float]:
    merged: dict[str, float] = {}
    for e in evaluations:  # oldest first: the newest value of each metric wins
        merged.update(e.metrics)
    return merged


def describe(reg, ref: str) -> dict:
    target = resolve_any(reg, ref)
    if isinstance(target, AdapterVersion):
        return describe_adapter(reg, target)
    return describe_composition(reg, target)


def _metrics_of(reg, target) -> dict[str, float]:
    if isinstance(target, AdapterVersion):
        after = target.meta.get("metrics_after") or {}
        return {k: v for k, v in after.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return latest_metrics(reg.evaluations(target.id))


def compare(reg, left_ref: str, right_ref: str) -> dict:
    """Side by side: stored metrics (adapters: metrics_after; compositions: latest evaluations)."""
    left, right = resolve_any(reg, left_ref), resolve_any(reg, right_ref)
    lm, rm = _metrics_of(reg, left), _metrics_of(reg, right)
    rows = []
    for name in sorted(set(lm) | set(rm)):
        a, b = lm.get(name), rm.get(name)
        rows.append({"metric": name, "left": a, "right": b, "delta": (b - a) if a is not None and b is not None else None})
    return {
        "left": {"label": left.label, "id": left.id, "kind": "adapter" if isinstance(left, AdapterVersion) else "composition"},
        "right": {"label": right.label, "id": right.id, "kind": "adapter" if isinstance(right, AdapterVersion) else "composition"},
        "metrics": rows,
    }


def history(reg) -> dict:
    labels = _labels(reg)
    return {
        "pointers": {name: {"composition": cid, "label": labels.get(cid)} for name, cid in sorted(reg.pointers().items())},
        "compositions": [
            {**c.to_dict(), "adapter_labels": [labels.get(a, a[:12]) for a in c.adapters],
             "parent_label": labels.get(c.parent)}
            for c in reg.compositions()
        ],
        "moves": [
            {**m.to_dict(), "from_label": labels.get(m.from_id), "to_label": labels.get(m.to_id)}
            for m in reg.pointer_history()
        ],
    }
