"""Forget-set commitments and the privacy guarantee: the registry never keeps the forget data."""

import os
import uuid

import pytest

from forgetctl.errors import IntegrityError, NotFoundError
from forgetctl.records import Record
from forgetctl.registry import Registry
from forgetctl.registry import commitments as cm
from tests.registry_util import lora_dir, reg, records_for, register  # noqa: F401

SECRET = bytes(range(32))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_every_leaf_has_a_valid_inclusion_path(n):
    records = [f"record {i}".encode() for i in range(n)]
    c = cm.commit("req", records, SECRET)
    assert c.count == n and list(c.leaves) == sorted(c.leaves)
    for data in records:
        leaf = cm.leaf("req", data, SECRET)
        path = cm.inclusion_path(c.leaves, leaf)
        assert cm.verify_path(leaf, path, c.root)
        assert not cm.verify_path(leaf, path, "00" * 32)
    outsider = cm.leaf("req", b"never committed", SECRET)
    assert cm.inclusion_path(c.leaves, outsider) is None


def test_root_depends_on_secret_request_and_every_record():
    base = cm.commit("req", [b"a", b"b"], SECRET).root
    assert cm.commit("req", [b"b", b"a"], SECRET).root == base  # sorted leaves: order-free
    assert cm.commit("req", [b"a", b"c"], SECRET).root != base
    assert cm.commit("req2", [b"a", b"b"], SECRET).root != base
    assert cm.commit("req", [b"a", b"b"], b"\x01" * 32).root != base


def test_prove_recognises_covered_records_only(reg, lora_dir):
    records = records_for("req-1", 4)
    register(reg, lora_dir, "req-1", records=records)
    stranger = Record(question="Q0 about req-1?", answer="A different answer.")
    result = reg.prove("req-1", [records[2], stranger, records[0]])
    assert [r["covered"] for r in result["records"]] == [True, False, True]
    assert (result["covered"], result["checked"], result["committed"]) == (2, 3, 4)
    assert result["version"] == "v1" and reg.prove("v1", records)["covered"] == 4


def test_prove_fails_with_the_wrong_secret(reg, lora_dir):
    records = records_for("req-1")
    register(reg, lora_dir, "req-1", records=records)
    commitment = reg.commitment(reg.adapter("req-1"))
    proofs = cm.prove("req-1", [r.canonical_bytes() for r in records], b"\x07" * 32, commitment)
    assert not any(p.covered for p in proofs)
    proofs = cm.prove("req-1", [r.canonical_bytes() for r in records], reg.secret(), commitment)
    assert all(p.covered for p in proofs)


def test_tampered_leaves_are_refused(reg, lora_dir):
    register(reg, lora_dir, "req-1")
    c = reg.commitment(reg.adapter("v1"))
    forged = cm.Commitment(c.root, tuple(sorted(c.leaves[1:] + ("ff" * 32,))), c.count)
    with pytest.raises(IntegrityError, match="Merkle root"):
        cm.prove("req-1", [b"x"], reg.secret(), forged)


def test_prove_without_commitment_or_request(reg, lora_dir):
    from tests.registry_util import meta_for

    reg.register_adapter(lora_dir, meta_for(reg, "req-none"), None)
    with pytest.raises(NotFoundError, match="no stored commitment"):
        reg.prove("req-none", records_for("req-none"))
    with pytest.raises(NotFoundError, match="'req-unknown'"):
        reg.prove("req-unknown", records_for("x"))


def _all_bytes(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                yield os.path.join(dirpath, name), f.read()


def test_no_forget_text_anywhere_in_the_workspace(reg, lora_dir):
    marker = f"MARKER-{uuid.uuid4().hex}"
    records = [
        Record(question=f"Where does {marker} live?", answer=f"{marker} lives at 12 Quiet Lane, Lisbon."),
        Record(question="What is the phone number of Alba Quirke?", answer="Alba Quirke's number is +351 555 0199."),
        Record(text=f"Private diary entry of {marker}: nothing to see."),
    ]
    version = register(reg, lora_dir, "req-private", records=records)
    comp = reg.compose([version.id], parent="HEAD", note="forget req-private")
    reg.move_pointer("HEAD", comp.id, action="train")
    reg.add_evaluation("HEAD", {"forget_nll": 3.0}, "after")
    assert reg.prove("req-private", records)["covered"] == 3
    Registry.open(reg.home).verify()  # reading paths too: open, sync, verify
    # keep the WAL: nothing was checkpointed away, so its bytes are searched as well
    files = dict(_all_bytes(reg.home))
    assert any(path.endswith("-wal") for path in files), "expected SQLite WAL files to search"
    needles = [marker] + [v for r in records for v in (r.question, r.answer, r.text) if v]
    needles += ["Quiet Lane", "+351 555 0199"]
    # positive control: the search does find what the registry is meant to keep
    assert any(b"subject req-private" in data for data in files.values())
    for path, data in files.items():
        for needle in needles:
            for encoding in ("utf-8", "utf-16-le"):
                assert needle.encode(encoding) not in data, f"{needle!r} found in {path}"
