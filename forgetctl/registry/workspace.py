"""Where a workspace lives, what is inside it, and which names are safe to use in it."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from forgetctl.errors import InputError

DEFAULT_HOME = Path("~/.local/share/forgetctl")
MAX_NAME = 128
# Pointer names must not look like refs ("3", "v3", "c3") or they would shadow them.
_POINTER_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_REFLIKE_RE = re.compile(r"[cCvV]?\d+|[0-9a-fA-F]{6,}")


def resolve_home(option: str | os.PathLike | None = None) -> Path:
    """--home, else $FORGETCTL_HOME, else ~/.local/share/forgetctl."""
    chosen = option or os.environ.get("FORGETCTL_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    """The fixed layout of a workspace folder."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def audit_mirror(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def secret_file(self) -> Path:
        return self.root / "secret.key"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "objects" / "adapters"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def fingerprint_cache(self) -> Path:
        return self.root / "cache" / "fingerprints.json"

    def exists(self) -> bool:
        return self.db.is_file()


def validate_name(value, what: str, max_len: int = MAX_NAME) -> str:
    """A label that may end up in a path, a branch name or a log line: no separators, no `..`,
    no control or invisible format characters, not empty, not too long."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string")
    shown = ascii(value)[:60]
    if len(value) > max_len:
        raise InputError(f"{what} {shown} is longer than {max_len} characters")
    if value != value.strip():
        raise InputError(f"{what} {shown} has leading or trailing spaces")
    if "/" in value or "\\" in value or ".." in value or value in (".",):
        raise InputError(f"{what} {shown} must not contain path separators or '..'")
    if value.startswith("-"):
        raise InputError(f"{what} {shown} must not start with '-'")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise InputError(f"{what} {shown} contains control characters")
    return value


def validate_pointer_name(name) -> str:
    """Pointer (alias) names: a letter, then letters, digits, '.', '_' or '-'; never ref-like."""
    validate_name(name, "pointer name", max_len=64)
    if not _POINTER_RE.fullmatch(name) or _REFLIKE_RE.fullmatch(name):
        raise InputError(
            f"pointer name {ascii(name)} must start with a letter, use only letters, digits, '.', '_', '-', "
            "and not look like a version (v3, c3) or a hash prefix"
        )
    return name
