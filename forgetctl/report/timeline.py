"""The HEAD history as a sequence of states: what the deployed model was, step by step."""

from __future__ import annotations


BEFORE_NEXT_REQUEST = "train-before"  # ops/train.py's label for the score of the parent state


def composition_metrics(composition: dict) -> tuple[dict, list[int]]:
    """Stored metrics of a composition, newest value of each metric winning (as `forgetctl show`),
    and the evaluation numbers they come from. A "train-before" evaluation scores this state on the
    *next* request's forget set, so it only fills what no other evaluation of the state gives: a
    state's forget scores are those of the request that made it."""
    merged: dict[str, float] = {}
    ordered = sorted(composition.get("evaluations") or [],
                     key=lambda e: (e.get("label") != BEFORE_NEXT_REQUEST, e["seq"]))
    for evaluation in ordered:
        merged.update(evaluation["metrics"])
    return merged, [e["seq"] for e in composition.get("evaluations") or []]


def build_timeline(data: dict, pointer: str = "HEAD") -> list[dict]:
    """One point per state the pointer went through (rollbacks included, so a composition can
    appear twice), each with that composition's stored metrics. Without any recorded move, the
    compositions in creation order."""
    comps = {c["label"]: c for c in data.get("compositions", [])}
    moves = [m for m in data.get("pointer_moves", []) if m.get("name", pointer) == pointer and m.get("to") in comps]
    steps: list[tuple[str, str, str | None]] = []
    if moves:
        first = moves[0]
        if first.get("from") in comps:
            steps.append((first["from"], "start", None))
        steps.extend((m["to"], m.get("action") or "move", m.get("time")) for m in moves)
    else:
        ordered = sorted(comps.values(), key=lambda c: c["number"])
        steps = [(c["label"], "composition", c.get("created_at")) for c in ordered]
    points = []
    for label, action, time in steps:
        metrics, seqs = composition_metrics(comps[label])
        rollback = "rollback" in action
        points.append({
            "x": f"{label} (rollback)" if rollback else label,
            "composition": label,
            "action": action,
            "rollback": rollback,
            "time": time,
            "adapters": list(comps[label].get("adapters", [])),
            "evaluations": seqs,
            "metrics": metrics,
        })
    return points
