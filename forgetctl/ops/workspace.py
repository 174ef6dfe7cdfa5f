"""Creating a workspace: resolve the base model, fingerprint its weights, bind the registry to it."""

from __future__ import annotations

from forgetctl.registry import Registry, Workspace, resolve_home
from forgetctl.registry.fingerprint import fingerprint


def init_workspace(home, base_spec: str | None, actor: str | None = None) -> Registry:
    """Idempotent for the same base; refused (IncompatibleError) for another one."""
    from forgetctl.adapters.base_model import DEFAULT_BASE, resolve_base  # torch: only here, only when needed

    spec = base_spec or DEFAULT_BASE
    base_dir = resolve_base(spec)
    ws = Workspace(resolve_home(home))
    fp = fingerprint(base_dir, cache_file=ws.fingerprint_cache)
    return Registry.init(ws.root, spec, base_dir, fp, actor=actor)
