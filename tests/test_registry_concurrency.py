"""Several processes writing at once, and processes killed halfway through a write."""

import multiprocessing
import subprocess
import sys

import pytest

from forgetctl.registry import Registry
from tests.registry_util import CRASH_CHILD, lora_dir, reg, register, register_many_synced  # noqa: F401

WORKERS, EACH = 4, 5


def test_concurrent_registrations_get_distinct_numbers_and_one_chain(reg, lora_dir):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=register_many_synced, args=(str(reg.home), str(lora_dir), w, EACH, barrier, results))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    numbers = sorted(n for nums in got.values() for n in nums)
    assert numbers == list(range(1, WORKERS * EACH + 1))
    for nums in got.values():
        assert nums == sorted(nums)  # each process sees its own versions go up
    assert {v.request_id for v in reg.adapters()} == {f"w{w}-r{i}" for w in range(WORKERS) for i in range(EACH)}
    log = reg.audit_log()
    assert [e.seq for e in log] == list(range(1, WORKERS * EACH + 2))
    assert len(reg.ws.audit_mirror.read_text().splitlines()) == len(log)
    assert reg.verify() == []


@pytest.mark.parametrize("point, committed", [("copy", False), ("publish", False), ("transaction", False), ("mirror", True)])
def test_killed_write_leaves_old_or_new_state(reg, lora_dir, point, committed):
    register(reg, lora_dir, "req-before")
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(reg.home), str(lora_dir), point],
        capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 9, child.stderr[-2000:]
    assert "survived" not in child.stdout

    after = Registry.open(reg.home)
    if point == "copy":
        assert list(after.ws.tmp_dir.iterdir()), "expected the dead writer's staging folder"
    if point == "publish":
        assert len(list(after.ws.adapters_dir.iterdir())) == 2, "expected an unregistered object folder"
    assert after.verify() == []
    labels = [(v.label, v.request_id) for v in after.adapters()]
    expected = [("v1", "req-before")] + ([("v2", "req-crash")] if committed else [])
    assert labels == expected
    assert len(after.ws.audit_mirror.read_text().splitlines()) == len(after.audit_log())

    # the same request can be registered again (reusing any orphan) and numbering carries on
    again = register(after, lora_dir, "req-crash")
    assert again.label == "v2"
    nxt = register(after, lora_dir, "req-after")
    assert nxt.label == "v3"
    assert after.verify() == []
    registered = {v.id for v in after.adapters()}
    assert {p.name for p in after.ws.adapters_dir.iterdir()} == registered
