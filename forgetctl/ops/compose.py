"""Composition workflows: export a registry composition, squash versions, roll HEAD back, generate.

Torch is imported lazily (inside functions) so importing forgetctl.ops stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from forgetctl.digests import sha256_file
from forgetctl.errors import IncompatibleError, InputError, IntegrityError, NotFoundError
from forgetctl.registry import Registry
from forgetctl.registry.fingerprint import fingerprint, short


def _open(home) -> Registry:
    return Registry.open(home)


def _check_pristine(reg) -> None:
    """Merging starts from the base on disk: it must still be the one the workspace was bound to."""
    found = fingerprint(reg.base.path, cache_file=reg.ws.fingerprint_cache)
    if found != reg.base.fingerprint:
        raise IntegrityError(
            f"base weights at {reg.base.path} changed: fingerprint {short(found)}, "
            f"workspace expects {short(reg.base.fingerprint)}; refusing to merge"
        )


def _resolve(reg, ref: str):
    """A composition and its adapter versions, checked against the workspace base."""
    comp = reg.composition(ref)
    versions = [reg.adapter(aid) for aid in comp.adapters]
    for v in versions:
        if v.base_fingerprint != reg.base.fingerprint:
            raise IncompatibleError(
                f"adapter {v.label} was trained against base {v.base_fingerprint}, "
                f"but this workspace's base is {reg.base.fingerprint}"
            )
    return comp, versions


def _audit_head(reg) -> str | None:
    log = reg.audit_log()
    return log[-1].hash if log else None


def render_card(reg, comp, versions, audit_head: str | None) -> str:
    """Model card for a merged export: what was folded in and where to verify it. Never any record text
    nor subject names (a card is public; the subject of a deletion request is personal data)."""
    base = reg.base
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- forgetctl",
        "- machine-unlearning",
        "---",
        "",
        f"# forgetctl export of composition {comp.label}",
        "",
        f"This checkpoint is the base model `{base.spec}` with {len(versions)} forget adapter(s) folded into its",
        "weights (fp32 arithmetic, cast back to the base dtype), starting from the pristine base.",
        "It is a plain transformers checkpoint: `AutoModelForCausalLM.from_pretrained(<this folder>)`.",
        "",
        "| field | value |",
        "|---|---|",
        f"| composition | {comp.label} `{comp.id}` |",
        f"| base fingerprint | `{base.fingerprint}` |",
        f"| audit-log head | `{audit_head or '(empty)'}` |",
        "",
        "## Adapters, in application order",
        "",
    ]
    if versions:
        lines += ["| version | adapter id | request | reason | method | created |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {v.label} | `{v.id}` | {v.request_id} | {v.reason} | {v.method} | {v.created_at} |" for v in versions
        ]
    else:
        lines.append("None: this is the pristine base model.")
    evals = reg.evaluations(comp.id)
    if evals:
        last = evals[-1]
        lines += ["", f"## Latest evaluation ({last.label})", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(last.metrics.items()) if isinstance(v, (int, float))]
    lines += [
        "",
        "## Verifying",
        "",
        "`forgetctl verify` in the workspace checks the audit chain; the audit event for this export records",
        "the sha256 of every weight file, and re-exporting the same composition reproduces them bit for bit.",
        "",
    ]
    return "\n".join(lines)


def merge_version(home=None, ref: str = "HEAD", out_dir=None, actor: str | None = None) -> dict:
    """Export composition `ref` as a merged transformers checkpoint and record it in the audit log."""
    from forgetctl.adapters.compose import merge_export

    if out_dir is None:
        raise InputError("merge needs an output folder (--out DIR)")
    with _open(home) as reg:
        comp, versions = _resolve(reg, ref)
        _check_pristine(reg)
        head = _audit_head(reg)
        card = render_card(reg, comp, versions, head)
        result = merge_export(
            reg.base.path,
            [reg.adapter_dir(v) for v in versions],
            out_dir,
            card=card,
            base_fingerprint=reg.base.fingerprint,
        )
        # ids and hashes only: an output path chosen by a user may name the person
        entry = reg.audit(
            "merge",
            {"composition": comp.id, "adapters": [v.id for v in versions], "base_fingerprint": reg.base.fingerprint},
            {"weight_files": result["weight_files"], "dtypes": result["dtypes"]},
            actor=actor,
        )
    return {
        "composition": comp.label,
        "composition_id": comp.id,
        "adapters": [v.label for v in versions],
        "audit_head_in_card": head,
        "audit_seq": entry.seq,
        **result,
    }


def _adapters_for(reg, refs: list[str]):
    """Each ref is an adapter version ("v3", hash, request id) or, failing that, a composition (its adapters)."""
    versions = []
    for ref in refs:
        try:
            versions.append(reg.adapter(ref))
        except NotFoundError:
            try:
                comp = reg.composition(ref)
            except NotFoundError:
                raise NotFoundError(f"no adapter version or composition matches {ref!r}") from None
            versions.extend(reg.adapter(aid) for aid in comp.adapters)
    if not versions:
        raise InputError("nothing to squash: the references name no adapters")
    return versions


def squash_versions(home=None, refs: list[str] = (), out_dir=None, mode: str = "exact", rank: int | None = None,
                    actor: str | None = None) -> dict:
    """Squash registered adapters into one PEFT adapter folder (exact rank concatenation or SVD)."""
    from forgetctl.adapters.compose import squash

    if out_dir is None:
        raise InputError("squash needs an output folder (--out DIR)")
    with _open(home) as reg:
        versions = _adapters_for(reg, list(refs))
        for v in versions:
            if v.base_fingerprint != reg.base.fingerprint:
                raise IncompatibleError(
                    f"adapter {v.label} was trained against base {v.base_fingerprint}, "
                    f"but this workspace's base is {reg.base.fingerprint}"
                )
        result = squash([reg.adapter_dir(v) for v in versions], out_dir, mode=mode, rank=rank,
                        base_fingerprint=reg.base.fingerprint)
        outputs = {k: result[k] for k in ("mode", "rank", "modules")}
        outputs["adapter_sha256"] = sha256_file(Path(result["out_dir"]) / "adapter_model.safetensors")
        if mode == "svd":
            outputs["relative_error"] = result["relative_error"]
        reg.audit("squash", {"adapters": [v.id for v in versions]}, outputs, actor=actor)
    return {"adapters": [v.label for v in versions], **result}


def _stale_warnings(reg, dropped, remaining) -> list[str]:
    """Adapters trained on top of a composition that held the dropped one saw a model that no longer exists."""
    warnings = []
    for v in remaining:
        if not v.parent_composition:
            continue
        try:
            parent = reg.composition(v.parent_composition)
        except NotFoundError:
            continue
        if dropped.id in parent.adapters:
            warnings.append(
                f"{v.label} was trained on top of {dropped.label}; evaluate the new composition before serving it"
            )
    return warnings


def rollback(home=None, target: str | None = None, without: str | None = None, actor: str | None = None) -> dict:
    """Move HEAD to an earlier composition, or to a new one that is HEAD minus one adapter. Nothing is deleted."""
    if (target is None) == (without is None):
        raise InputError("rollback takes either a TARGET composition or --without ADAPTER (exactly one)")
    with _open(home) as reg:
        head = reg.head()
        warnings: list[str] = []
        dropped = None
        if target is not None:
            dest = reg.composition(target)
        else:
            dropped = reg.adapter(without)
            if dropped.id not in head.adapters:
                raise NotFoundError(f"adapter {dropped.label} is not in HEAD ({head.label}); nothing to roll back")
            keep = [aid for aid in head.adapters if aid != dropped.id]
            warnings = _stale_warnings(reg, dropped, [reg.adapter(aid) for aid in keep])
            note = f"rollback without {dropped.label} (request {dropped.request_id})"
            dest = reg.compose(keep, parent=head.id, note=note, actor=actor)
        moved = dest.id != head.id
        if moved:  # the pointer move is itself the audit event (action "rollback")
            reg.move_pointer("HEAD", dest.id, actor=actor, action="rollback")
        return {
            "from": head.label,
            "from_id": head.id,
            "to": dest.label,
            "to_id": dest.id,
            "moved": moved,
            "adapters": [reg.adapter(aid).label for aid in dest.adapters],
            "without": dropped.label if dropped else None,
            "warnings": warnings,
        }


def generate(home=None, prompt: str = "", ref: str = "HEAD", merged: bool = False, max_new_tokens: int = 48,
             device: str | None = None) -> dict:
    """Greedy answer of composition `ref` to one prompt: stacked adapters, or folded in memory with merged=True."""
    from forgetctl.adapters.base_model import load_tokenizer
    from forgetctl.adapters.compose import load_merged, load_stacked
    from forgetctl.adapters.generate import greedy_answers

    if not prompt.strip():
        raise InputError("generate needs a non-empty --prompt")
    with _open(home) as reg:
        comp, versions = _resolve(reg, ref)
        dirs = [reg.adapter_dir(v) for v in versions]
        base_path, base_fp = reg.base.path, reg.base.fingerprint
    if merged:
        model, tokenizer = load_merged(base_path, dirs, device=device, base_fingerprint=base_fp)
    else:
        model = load_stacked(base_path, dirs, device=device, base_fingerprint=base_fp)
        tokenizer = load_tokenizer(base_path)
    answer = greedy_answers(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]
    return {"composition": comp.label, "adapters": [v.label for v in versions], "merged": merged, "answer": answer}
