"""Tamper evidence: the audit chain, its JSONL mirror, logged rows and stored files."""

import json

import pytest

from forgetctl.registry import Registry, default_actor
from forgetctl.registry.audit import entry_hash
from tests.registry_util import flip_byte, lora_dir, raw_db, reg, register  # noqa: F401


@pytest.fixture()
def filled(reg, lora_dir):
    v1 = register(reg, lora_dir, "req-1")
    v2 = register(reg, lora_dir, "req-2")
    comp = reg.compose([v1.id, v2.id], parent="HEAD", note="two requests")
    reg.move_pointer("HEAD", comp.id, action="train")
    reg.set_alias("production", "HEAD")
    assert len(reg.audit_log()) == 6 and reg.verify() == []
    return reg


def _lines(reg):
    return reg.ws.audit_mirror.read_text().splitlines(keepends=True)


def _write_lines(reg, lines):
    reg.ws.audit_mirror.write_text("".join(lines))


def _has(problems, *fragments):
    return any(all(f in p for f in fragments) for p in problems)


def test_chain_links_every_entry(filled):
    log = filled.audit_log()
    assert [e.seq for e in log] == list(range(1, 7))
    assert log[0].prev_hash == "0" * 64
    for before, after in zip(log, log[1:]):
        assert after.prev_hash == before.hash
    assert [json.loads(line)["hash"] for line in _lines(filled)] == [e.hash for e in log]
    assert log[0].actor == "tester"
    assert {e.actor for e in log[1:]} == {default_actor()}


def test_flipped_adapter_byte_names_version_and_file(filled):
    v2 = filled.adapter("v2")
    flip_byte(filled.adapter_dir(v2) / "adapter_model.safetensors", offset=-3)
    problems = filled.verify()
    assert problems == ["v2: adapter_model.safetensors does not match its sha256 (tampered)"]


def test_edited_sidecar_manifest_and_extra_file(filled):
    folder = filled.adapter_dir(filled.adapter("v1"))
    flip_byte(folder / "forgetctl.json", offset=5)
    (folder / "notes.txt").write_text("x")
    problems = filled.verify()
    assert _has(problems, "v1: forgetctl.json does not match")
    assert _has(problems, "v1: unexpected file notes.txt")
    flip_byte(folder / "manifest.json", offset=3)
    assert _has(filled.verify(), "v1: manifest.json does not match the adapter id")


def test_edited_db_entry(filled):
    conn = raw_db(filled)
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    problems = filled.verify()
    assert _has(problems, "database audit log", "seq 3", "does not match its hash")
    assert _has(problems, "seq 3 differs between the database and audit.jsonl")


def test_removed_db_entry(filled):
    raw_db(filled).execute("DELETE FROM audit WHERE seq = 4")
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "database audit log: seq 4 missing")
    assert _has(problems, "database lacks seq 4 that audit.jsonl has")
    assert _has(problems, "compositions row c1 has no audit entry")


def test_removed_last_db_entry_is_caught_by_the_mirror(filled):
    raw_db(filled).execute("DELETE FROM audit WHERE seq = 6")
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "database lacks seq 6 that audit.jsonl has")


def test_reordered_db_entries(filled):
    conn = raw_db(filled)
    rows = {r[0]: r for r in conn.execute("SELECT * FROM audit WHERE seq IN (2, 3)")}
    conn.execute("DELETE FROM audit WHERE seq IN (2, 3)")
    for new_seq, old in ((2, rows[3]), (3, rows[2])):  # swap contents, keep the seq numbers
        conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)", (new_seq, *old[1:]))
    problems = filled.verify()
    assert _has(problems, "database audit log: seq 2 does not link")
    assert _has(problems, "database audit log: seq 3 does not link")


def test_inserted_db_entry(filled):
    conn = raw_db(filled)
    for seq in range(6, 3, -1):  # make room at seq 4
        conn.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?", (seq,))
    prev = conn.execute("SELECT hash FROM audit WHERE seq = 3").fetchone()[0]
    forged = (4, "2026-01-01T00:00:00.000000Z", "mallory", "rollback", "{}", "{}", prev)
    conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)", (*forged, entry_hash(4, *forged[1:4], {}, {}, prev)))
    problems = filled.verify()
    assert _has(problems, "database audit log: seq 5 does not link")
    assert _has(problems, "database audit log: seq 5 content does not match its hash")
    assert _has(problems, "seq 4 differs between the database and audit.jsonl")


def test_edited_db_row_outside_the_log(filled):
    conn = raw_db(filled)
    conn.execute("UPDATE adapters SET reason = 'other' WHERE number = 1")
    conn.execute("UPDATE pointer_moves SET to_id = (SELECT id FROM compositions WHERE number = 0) WHERE name = 'production'")
    problems = filled.verify()
    assert _has(problems, "adapters row v1 was edited after it was logged")
    assert _has(problems, "pointer_moves row pointer move 3 was edited")
    assert _has(problems, "v1: registry row disagrees with its forgetctl.json")


def test_edited_jsonl_entry(filled):
    lines = _lines(filled)
    entry = json.loads(lines[1])
    entry["actor"] = "mallory"
    lines[1] = json.dumps(entry) + "\n"
    _write_lines(filled, lines)
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "audit.jsonl: seq 2 content does not match its hash")
    assert _has(problems, "seq 2 differs between the database and audit.jsonl")


def test_removed_jsonl_entry(filled):
    lines = _lines(filled)
    del lines[2]
    _write_lines(filled, lines)
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "audit.jsonl: seq 3 missing")
    assert _has(problems, "audit.jsonl lacks seq 3")


def test_reordered_jsonl_entries(filled):
    lines = _lines(filled)
    lines[2], lines[3] = lines[3], lines[2]
    _write_lines(filled, lines)
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "audit.jsonl: seq 4 does not link")
    assert _has(problems, "audit.jsonl: seq 3 out of order")


def test_inserted_jsonl_entry(filled):
    lines = _lines(filled)
    prev = json.loads(lines[1])["hash"]
    forged = {"seq": 3, "time": "2026-01-01T00:00:00.000000Z", "actor": "mallory", "action": "rollback",
              "inputs": {}, "outputs": {}, "prev_hash": prev}
    forged["hash"] = entry_hash(**forged)
    lines.insert(2, json.dumps(forged) + "\n")
    _write_lines(filled, lines)
    problems = Registry.open(filled.home).verify()
    assert _has(problems, "audit.jsonl: seq 3 out of order or duplicated")
    assert _has(problems, "audit.jsonl: seq 3 does not link")


def test_garbage_jsonl_line_is_named(filled):
    lines = _lines(filled)
    lines[0] = "this is not json\n"
    _write_lines(filled, lines)
    assert _has(Registry.open(filled.home).verify(), "audit.jsonl line 1: not a valid audit entry")


def test_mirror_behind_at_tail_is_caught_up_on_open(filled):
    lines = _lines(filled)
    _write_lines(filled, lines[:-2] + [lines[-2][:17]])  # as if killed mid-append: tail missing, last line torn
    reopened = Registry.open(filled.home)
    assert reopened.verify() == []
    assert _lines(reopened) == lines


def test_replaced_secret_is_detected(filled):
    filled.ws.secret_file.chmod(0o600)
    filled.ws.secret_file.write_bytes(b"\x00" * 32)
    assert _has(filled.verify(), "secret.key was replaced")


def test_verify_is_read_only_unless_recorded(filled):
    before = len(filled.audit_log())
    filled.verify()
    assert len(filled.audit_log()) == before
    entry = filled.record_verification([])
    assert entry.action == "verify" and entry.outputs == {"problems": 0}
    assert entry.inputs["head"] == filled.audit_log()[-2].hash
    assert filled.verify() == []
