"""Registry entities: frozen records read from the store; `to_dict()` gives the --json form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class _Entity:
    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("adapters", "leaves"):
            if isinstance(data.get(key), tuple):
                data[key] = list(data[key])
        label = getattr(self, "label", None)
        if label is not None:
            data["label"] = label
        return data


@dataclass(frozen=True)
class BaseModelInfo(_Entity):
    spec: str
    path: str
    fingerprint: str
    created_at: str


@dataclass(frozen=True)
class AdapterVersion(_Entity):
    id: str  # sha256 hex of the content manifest
    number: int
    request_id: str
    reason: str
    subject: str
    method: str
    base_fingerprint: str
    parent_composition: str | None
    created_at: str
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Composition(_Entity):
    id: str  # sha256 hex of the ordered adapter ids
    number: int
    adapters: tuple[str, ...]
    parent: str | None
    note: str
    created_at: str

    @property
    def label(self) -> str:
        return f"c{self.number}"

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class PointerMove(_Entity):
    seq: int
    name: str
    from_id: str | None
    to_id: str
    action: str
    actor: str
    time: str


@dataclass(frozen=True)
class Evaluation(_Entity):
    seq: int
    composition_id: str
    label: str
    metrics: dict
    actor: str
    created_at: str


@dataclass(frozen=True)
class AuditEntry(_Entity):
    seq: int
    time: str
    actor: str
    action: str
    inputs: dict
    outputs: dict
    prev_hash: str
    hash: str
