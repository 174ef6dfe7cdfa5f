"""The registry commands end to end through click, plus the torch-free start-up guarantee."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from forgetctl.cli import cli
from forgetctl.registry import Registry
from tests.registry_util import flip_byte, lora_dir, records_for, register  # noqa: F401


def run(home, *args):
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    return result


def ok_json(home, *args):
    result = run(home, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture()
def home(tmp_path, tiny_base_dir, lora_dir):
    home = tmp_path / "ws"
    data = ok_json(home, "init", "--base", str(tiny_base_dir))
    assert data["head"] == "c0" and data["base"]["fingerprint"].startswith("sha256:")
    reg = Registry.open(home)
    v1 = register(reg, lora_dir, "req-1", records=records_for("req-1"))
    comp = reg.compose([v1.id], parent="HEAD", note="train req-1")
    reg.move_pointer("HEAD", comp.id, action="train")
    reg.add_evaluation("HEAD", {"forget_nll": 3.5, "retain_nll": 1.0}, "after")
    reg.add_evaluation("c0", {"forget_nll": 0.5, "retain_nll": 0.9}, "before")
    reg.close()
    return home


def test_init_is_idempotent_and_refuses_another_base(home, tiny_base_dir, other_tiny_base_dir):
    again = ok_json(home, "init", "--base", str(tiny_base_dir))
    assert again["head"] == "c1"  # untouched
    result = run(home, "init", "--base", str(other_tiny_base_dir))
    assert result.exit_code == 5
    assert "already unlearns against" in error_line(result)


def test_list_shows_the_newest_versions_and_all_on_request(home, lora_dir):
    with Registry.open(home) as reg:
        for i in range(2, 53):
            register(reg, lora_dir, f"req-{i}")
    table = run(home, "list")
    assert table.exit_code == 0
    assert "req-52" in table.output and "req-3 " in table.output and "req-2 " not in table.output
    assert "2 older versions not shown: --all lists every one" in table.output
    everything = run(home, "list", "--all")
    assert "req-1 " in everything.output and "not shown" not in everything.output
    rows = ok_json(home, "list")
    assert [r["label"] for r in rows] == [f"v{i}" for i in range(1, 53)]
    assert "meta" not in rows[0] and rows[0]["in_head"] is True and rows[1]["in_head"] is False


def test_list_and_show(home):
    rows = ok_json(home, "list")
    assert [(r["label"], r["request_id"], r["in_head"]) for r in rows] == [("v1", "req-1", True)]
    people = run(home, "list")
    assert people.exit_code == 0 and "req-1" in people.output and "v1" in people.output

    adapter = ok_json(home, "show", "v1")
    assert adapter["kind"] == "adapter" and adapter["metrics_after"] == {"forget_nll": 2.5}
    assert adapter["lineage"]["parent_label"] == "c0"
    assert adapter["lineage"]["used_in"][0]["label"] == "c1" and adapter["lineage"]["used_in"][0]["pointers"] == ["HEAD"]
    assert adapter["commitment"]["count"] == 3 and "leaves" not in adapter["commitment"]

    comp = ok_json(home, "show", "HEAD")
    assert comp["kind"] == "composition" and comp["label"] == "c1" and comp["adapter_labels"] == ["v1"]
    assert comp["lineage"] == [{"composition": comp["parent"], "label": "c0"}]
    assert comp["metrics"] == {"forget_nll": 3.5, "retain_nll": 1.0}
    assert run(home, "show", "v1").exit_code == 0 and run(home, "show", "HEAD").exit_code == 0


def test_show_two_refs_compares_metrics(home):
    data = ok_json(home, "show", "c0", "HEAD")
    rows = {r["metric"]: r for r in data["metrics"]}
    assert (data["left"]["label"], data["right"]["label"]) == ("c0", "c1")
    assert rows["forget_nll"]["left"] == 0.5 and rows["forget_nll"]["right"] == 3.5
    assert rows["forget_nll"]["delta"] == pytest.approx(3.0)
    people = run(home, "show", "c0", "HEAD")
    assert people.exit_code == 0 and "forget_nll" in people.output


def test_unknown_refs_are_one_line_errors(home):
    for args in (("show", "v9"), ("show", "production"), ("alias", "production", "c9"), ("prove", "req-9", "--data", "x")):
        result = run(home, *args)
        assert result.exit_code in (2, 3), (args, result.output)
        error_line(result)
    assert "'v9'" in error_line(run(home, "show", "v9"))


def test_log_and_history(home):
    log = ok_json(home, "log")
    assert [e["action"] for e in log] == ["init", "register", "compose", "train", "evaluate", "evaluate"]
    assert [e["action"] for e in ok_json(home, "log", "--limit", "2")] == ["evaluate", "evaluate"]
    assert [e["seq"] for e in ok_json(home, "log", "--action", "register")] == [2]
    assert run(home, "log").exit_code == 0

    assert ok_json(home, "alias", "production", "HEAD") == {
        "alias": "production", "composition": log[2]["outputs"]["composition"], "label": "c1"}
    history = ok_json(home, "history")
    assert history["pointers"]["production"]["label"] == "c1"
    assert [(m["name"], m["to_label"], m["action"]) for m in history["moves"]] == [
        ("HEAD", "c0", "init"), ("HEAD", "c1", "train"), ("production", "c1", "alias")]
    assert [c["label"] for c in history["compositions"]] == ["c0", "c1"]
    assert run(home, "history").exit_code == 0


def test_alias_cannot_move_head_or_use_bad_names(home):
    result = run(home, "alias", "HEAD", "c0")
    assert result.exit_code == 2 and "rollback" in error_line(result)
    result = run(home, "alias", "../prod", "c0")
    assert result.exit_code == 2 and "path separators" in error_line(result)
    assert ok_json(home, "history")["pointers"]["HEAD"]["label"] == "c1"


def test_audit_verify_ok_tampered_and_recorded(home):
    assert ok_json(home, "audit", "verify") == {"ok": True, "problems": [], "entries": 6, "adapter_versions": 1}
    recorded = ok_json(home, "audit", "verify", "--record")
    assert recorded["ok"] and ok_json(home, "log")[-1]["action"] == "verify"

    reg = Registry.open(home)
    flip_byte(reg.adapter_dir(reg.adapter("v1")) / "adapter_model.safetensors", offset=-2)
    result = run(home, "audit", "verify", "--json")
    assert result.exit_code == 4
    assert json.loads(result.stdout)["problems"] == ["v1: adapter_model.safetensors does not match its sha256 (tampered)"]
    people = run(home, "audit", "verify")
    assert people.exit_code == 4 and "v1: adapter_model.safetensors" in people.stderr


def test_prove_from_a_file(home, tmp_path):
    records = records_for("req-1")
    rows = [{"question": r.question, "answer": r.answer} for r in records[:2]]
    rows.append({"question": "Something else?", "answer": "Never forgotten."})
    data = tmp_path / "check.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ok_json(home, "prove", "req-1", "--data", str(data))
    assert [r["covered"] for r in result["records"]] == [True, True, False]
    assert result["covered"] == 2 and result["version"] == "v1"
    people = run(home, "prove", "req-1", "--data", str(data))
    assert people.exit_code == 0 and "2 of 3 records covered" in people.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert "malformed JSON" in error_line(run(home, "prove", "req-1", "--data", str(bad)))


def test_missing_and_corrupted_workspace(home, tmp_path):
    result = run(tmp_path / "nowhere", "list")
    assert result.exit_code == 3 and "no forgetctl workspace" in error_line(result)
    db = home / "registry.sqlite"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"garbage" * 1000)
    for args in (("list",), ("log",), ("audit", "verify"), ("show", "v1")):
        result = run(home, *args)
        assert result.exit_code == 4, (args, result.output)
        assert "corrupted" in error_line(result)


def _torch_free(code: str):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_registry_and_cli_import_without_torch():
    _torch_free("import forgetctl.registry, forgetctl.cli; import sys; assert 'torch' not in sys.modules")


@pytest.mark.parametrize("args", [["list", "--json"], ["show", "v1", "--json"], ["log", "--json"],
                                  ["audit", "verify", "--json"], ["history", "--json"]])
def test_registry_commands_do_not_import_torch(home, args):
    code = (
        "import sys\nfrom forgetctl.cli import cli\n"
        f"try:\n    cli.main({['--home', str(home), *args]!r}, standalone_mode=False)\n"
        "finally:\n    print('HEAVY', [m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\n"
    )
    stdout = _torch_free(code)
    assert "HEAVY []" in stdout
