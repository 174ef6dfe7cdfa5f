"""The demo's story end to end on a tiny random base (the real run is `scripts/demo.sh`): every
step happens through the public API and leaves the registry, exports and audit log it describes."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from forgetctl.cli import cli
from forgetctl.ops.demo import run_demo
from forgetctl.registry import Registry


@pytest.fixture(scope="module")
def demo_run(tiny_base_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    summary = run_demo(Console(file=out, width=160), home=tmp / "ws", steps=2, base=str(tiny_base_dir),
                       cache=tmp / "cache")
    return summary, out.getvalue(), tmp / "ws"


def test_demo_walks_through_train_export_second_request_rollback_and_audit(demo_run):
    summary, text, home = demo_run
    for step in ("1. The deployed assistant", "2. Deletion request 1", "3. Export for serving", "4. Deletion request 2",
                 "5. Request 1 is withdrawn", "6. History and audit", "Before and after request 1", "audit verify: OK"):
        assert step in text, step
    assert summary["audit_ok"] is True
    with Registry.open(home) as reg:
        comps = reg.compositions()
        assert [c.label for c in comps] == ["c0", "c1", "c2", "c3"]
        v1, v2 = reg.adapter("req-001"), reg.adapter("req-002")
        assert comps[2].adapters == (v1.id, v2.id)
        assert reg.head().adapters == (v2.id,)  # request 1 withdrawn: v1 dropped, nothing deleted
        assert reg.verify() == []
        actions = [e.action for e in reg.audit_log()]
        trained = [e for e in reg.audit_log() if e.action == "train" and "request_id" in e.inputs]
    assert [e.inputs["request_id"] for e in trained] == ["req-001", "req-002"]
    assert actions.count("register") == 2 and "rollback" in actions and "merge" in " ".join(actions)
    assert "c1: [v1] train req-001" in text  # version labels printed literally, not eaten as markup


def test_demo_export_is_a_plain_checkpoint(demo_run):
    summary, _, _ = demo_run
    from pathlib import Path

    export = Path(summary["export"])
    assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    assert json.loads((export / "forgetctl_export.json").read_text())


def test_second_request_does_not_retain_the_first_person(demo_run, tiny_base_dir):
    from forgetctl.ops import scenario

    first, second = scenario.deployed_people()[:2]
    rows = scenario.scenario_rows([second], already_forgotten=[first])
    retained = {r["question"] for r in rows["retain"]}
    assert not any(first in q for q in retained)
    assert any(scenario.deployed_people()[2] in q for q in retained)


def test_demo_refuses_a_non_empty_workspace(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code != 0
    assert "not empty" in result.output
    assert (tmp_path / "ws" / "keep.txt").read_text() == "x"
