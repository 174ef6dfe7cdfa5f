"""Creating a workspace: resolve the base model, fingerprint its weights, bind the registry to it."""

from __future__ import annotations

from pathlib import Path

from forgetctl.errors import ForgetctlError
from forgetctl.registry import Registry, Workspace, resolve_home
from forgetctl.registry.fingerprint import fingerprint

# Same value as forgetctl.adapters.base_model.DEFAULT_BASE, which cannot be imported without torch.
DEFAULT_BASE_SPEC = "smollm2"


def _names_recorded_base(spec: str, base) -> bool:
    local = Path(spec).expanduser()
    if local.exists():
        return local.is_dir() and str(local.resolve()) == base.path
    return spec == base.spec  # "smollm2" or a Hub id


def _already_bound(ws: Workspace, spec: str) -> Registry | None:
    """Re-running init for the recorded base: check the recorded folder's (cached) fingerprint
    instead of resolving the spec again, which would import torch and maybe convert."""
    if not ws.exists():
        return None
    try:
        reg = Registry.open(ws.root)
    except ForgetctlError:
        return None  # a half-made workspace: Registry.init finishes it
    base = reg.base
    try:
        same = _names_recorded_base(spec, base) and fingerprint(base.path, ws.fingerprint_cache) == base.fingerprint
    except ForgetctlError:
        same = False
    if same:
        return reg
    reg.close()
    return None


def init_workspace(home, base_spec: str | None, actor: str | None = None) -> Registry:
    """Idempotent for the same base; refused (IncompatibleError) for another one."""
    spec = base_spec or DEFAULT_BASE_SPEC
    ws = Workspace(resolve_home(home))
    reg = _already_bound(ws, spec)
    if reg is not None:
        return reg
    from forgetctl.adapters.base_model import resolve_base  # imports torch: only here, only when needed

    base_dir = resolve_base(spec)
    fp = fingerprint(base_dir, cache_file=ws.fingerprint_cache)
    return Registry.init(ws.root, spec, base_dir, fp, actor=actor)
