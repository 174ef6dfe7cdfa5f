"""Forget-set commitments: prove later which records a request covered, without keeping them.

leaf = HMAC-SHA256(key=workspace secret, msg=request_id || 0x00 || record.canonical_bytes()).
The keyed hash stops anyone without the secret from confirming a guessed record against stored
leaves. The root is a Merkle root over the sorted leaves (domain-separated leaf and node hashes),
so a single leaf's membership can be shown with a short path.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from forgetctl.errors import InputError, IntegrityError

_LEAF, _NODE = b"\x00", b"\x01"


@dataclass(frozen=True)
class Commitment:
    root: str
    leaves: tuple[str, ...]  # sorted hex HMACs
    count: int

    def to_dict(self, with_leaves: bool = False) -> dict:
        data = {"root": self.root, "count": self.count}
        if with_leaves:
            data["leaves"] = list(self.leaves)
        return data


def leaf(request_id: str, record_bytes: bytes, secret: bytes) -> str:
    if not secret:
        raise InputError("a commitment needs the workspace secret")
    return hmac.new(secret, request_id.encode("utf-8") + b"\x00" + record_bytes, hashlib.sha256).hexdigest()


def _hash(prefix: bytes, *parts: bytes) -> bytes:
    return hashlib.sha256(prefix + b"".join(parts)).digest()


def _levels(leaves: list[str]) -> list[list[bytes]]:
    """All tree levels, bottom first; an odd node out is carried up unchanged."""
    level = [_hash(_LEAF, bytes.fromhex(x)) for x in leaves]
    levels = [level]
    while len(level) > 1:
        nxt = [_hash(_NODE, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(leaves) -> str:
    ordered = sorted(leaves)
    if not ordered:
        raise InputError("a commitment needs at least one record")
    return _levels(ordered)[-1][0].hex()


def commit(request_id: str, records_bytes: list[bytes], secret: bytes) -> Commitment:
    leaves = tuple(sorted(leaf(request_id, b, secret) for b in records_bytes))
    return Commitment(root=merkle_root(leaves), leaves=leaves, count=len(leaves))


def inclusion_path(leaves, target: str) -> list[tuple[str, str]] | None:
    """[(side, sibling hex)] from the leaf up to the root, or None if `target` is not a leaf."""
    ordered = sorted(leaves)
    if target not in ordered:
        return None
    index, path = ordered.index(target), []
    for level in _levels(ordered)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("left" if sibling < index else "right", level[sibling].hex()))
        index //= 2
    return path


def verify_path(target: str, path: list[tuple[str, str]], root: str) -> bool:
    node = _hash(_LEAF, bytes.fromhex(target))
    for side, sibling in path:
        other = bytes.fromhex(sibling)
        node = _hash(_NODE, other, node) if side == "left" else _hash(_NODE, node, other)
    return hmac.compare_digest(node.hex(), root)


@dataclass(frozen=True)
class RecordProof:
    index: int  # 1-based position in the file handed in
    leaf: str
    covered: bool
    path: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {"index": self.index, "leaf": self.leaf, "covered": self.covered, "path": [list(p) for p in self.path]}


def prove(request_id: str, records_bytes: list[bytes], secret: bytes, commitment: Commitment) -> list[RecordProof]:
    """For each record handed in again: was it covered by `commitment`? Checks the root too."""
    if merkle_root(commitment.leaves) != commitment.root or len(commitment.leaves) != commitment.count:
        raise IntegrityError(f"stored commitment for request {request_id!r} does not match its Merkle root")
    results = []
    for i, data in enumerate(records_bytes, start=1):
        x = leaf(request_id, data, secret)
        path = inclusion_path(commitment.leaves, x)
        covered = path is not None and verify_path(x, path, commitment.root)
        results.append(RecordProof(i, x, covered, tuple(path or ())))
    return results
