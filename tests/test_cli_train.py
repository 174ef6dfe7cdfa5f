"""`forgetctl train` / `forgetctl methods` and the train_request workflow on a tiny base."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from forgetctl.cli import cli
from forgetctl.cli import train_cmds
from forgetctl.errors import ForgetctlError, InputError
from forgetctl.ops.train import train_request
from forgetctl.ops.workspace import init_workspace
from forgetctl.records import load_records
from forgetctl.registry import REASONS, Registry

SECRET_WORDS = ("Lisbon", "birthplace of Alba", "marine biologist")  # forget-set text that must never be stored


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def home(tmp_path, tiny_base_dir) -> Path:
    init_workspace(tmp_path / "ws", str(tiny_base_dir)).close()
    return tmp_path / "ws"


def run(home, *args):
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def train_args(forget, retain, request="r1", *extra):
    return ["train", "--request", request, "--forget", str(forget), "--retain", str(retain), "--steps", "3",
            "--lr", "1e-2", "--reason", "gdpr", *extra]


def all_workspace_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_train_registers_composes_moves_head_and_stores_no_text(home, qa_files, tmp_path):
    forget, retain = qa_files
    result = run(home, *train_args(forget, retain, "r1", "--subject", "subject-17", "--holdout", str(retain), "--json"))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["version"], out["composition"], out["parent"], out["method"]) == ("v1", "c1", "c0", "npo")
    # the holdout (here the retain file) sets a never-seen target: training may stop as soon as it is met
    assert (out["steps"], out["stop_reason"]) == (3, "budget") or (out["steps"] <= 3 and out["stop_reason"] == "target_met")
    assert out["training"]["targets"]["forget_nll"] > 0
    assert out["metrics_after"]["forget_nll"] > out["metrics_before"]["forget_nll"]
    assert "mia_loss_auc" in out["metrics_after"]  # holdout given: membership inference measured
    with Registry.open(home) as reg:
        head = reg.head()
        version = reg.adapter("r1")
        assert head.label == "c1" and head.adapters == (version.id,)
        assert (version.reason, version.subject, version.method) == ("gdpr", "subject-17", "npo")
        sidecar = json.loads((reg.adapter_dir(version) / "forgetctl.json").read_text())
        assert sidecar["parent_composition"] == reg.composition("c0").id
        assert sidecar["hyperparameters"]["steps"] == 3 and sidecar["hyperparameters"]["lr"] == 0.01
        assert sidecar["commitment"]["count"] == 2 and len(sidecar["data_sha256"]["forget"]) == 64
        assert set(sidecar["data_sha256"]) == {"forget", "retain", "holdout"}
        assert sidecar["versions"]["torch"] == torch.__version__
        assert (reg.adapter_dir(version) / "trajectory.json").is_file()
        assert reg.prove("r1", load_records(forget))["covered"] == 2  # the commitment covers the forget set
        assert reg.prove("r1", load_records(retain))["covered"] == 0
        assert "train" in [e.action for e in reg.audit_log()]
        assert reg.verify() == []
    stored = all_workspace_bytes(home)
    for secret in SECRET_WORDS:
        assert secret.encode() not in stored and secret not in result.output
    assert str(tmp_path).encode() not in stored.replace(str(home).encode(), b"")  # no data paths either


def test_second_request_trains_on_top_of_head(home, qa_files, tmp_path):
    forget, retain = qa_files
    first = train_request(home, "r1", forget, retain, config=_config(steps=2))
    second = train_request(home, "r2", forget, retain, config=_config(steps=2), reason="copyright")
    assert (second["parent"], second["composition"]) == ("c1", "c2")
    with Registry.open(home) as reg:
        v1, v2 = reg.adapter("r1"), reg.adapter("r2")
        assert reg.head().adapters == (v1.id, v2.id)
        assert v2.parent_composition == reg.composition("c1").id
        assert first["adapter_id"] == v1.id
    # the second adapter's "before" is the first one's "after": the stack was folded in
    assert second["metrics_before"]["forget_nll"] == pytest.approx(first["metrics_after"]["forget_nll"], abs=1e-4)


def _config(**changes):
    from forgetctl.adapters.config import ForgetConfig

    return ForgetConfig(**{"lr": 1e-2, "batch_size": 2, **changes})


def _state(home):
    with Registry.open(home) as reg:
        return [v.id for v in reg.adapters()], reg.head().id, len(reg.audit_log())


@pytest.mark.parametrize(
    "content, message, code",
    [
        ('{"question": "Q?", "answer": "A."}\n{"question": "Q2?", "answer": \n', "forget.jsonl:2: malformed JSON", 2),
        ("", "forget.jsonl: the data set is empty", 2),
        ('{"question": "Q?"}\n', "forget.jsonl:1: a QA record needs", 2),
        ('{"title": "Q?"}\n', "forget.jsonl:1: missing field", 2),
    ],
)
def test_bad_forget_files_fail_in_one_line_and_register_nothing(home, qa_files, tmp_path, content, message, code):
    _, retain = qa_files
    bad = tmp_path / "forget.jsonl"
    bad.write_text(content)
    before = _state(home)
    result = run(home, *train_args(bad, retain))
    assert result.exit_code == code
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert _state(home) == before


def test_training_failure_registers_nothing(home, tmp_path):
    forget = tmp_path / "forget.txt"
    forget.write_text("Alba Quirke was born in Lisbon.\n\nShe is a marine biologist.\n")
    before = _state(home)
    result = run(home, "train", "--request", "r1", "--forget", str(forget), "--method", "npo")  # npo needs --retain
    assert result.exit_code == 2 and "needs a retain set" in result.stderr
    result = run(home, "train", "--request", "r1", "--forget", str(forget), "--method", "nope")
    assert result.exit_code == 2 and "unknown method 'nope'" in result.stderr
    assert _state(home) == before


def test_over_long_records_are_reported(home, tmp_path):
    forget = tmp_path / "doc.txt"
    forget.write_text("The quick brown fox jumps over the lazy dog. " * 30)
    result = run(home, "train", "--request", "r1", "--forget", str(forget), "--method", "grad_ascent",
                 "--steps", "1", "--max-length", "32", "--no-eval")
    assert result.exit_code == 0, result.output
    assert "1 forget record(s) longer than max_length=32 tokens were truncated" in result.output


def test_duplicate_request_and_bad_names_are_refused(home, qa_files):
    forget, retain = qa_files
    train_request(home, "r1", forget, retain, config=_config(steps=1), evaluate=False)
    before = _state(home)
    with pytest.raises(InputError, match="already has adapter v1"):
        train_request(home, "r1", forget, retain, config=_config(steps=1))
    with pytest.raises(InputError, match="path separators"):
        train_request(home, "../r2", forget, retain, config=_config(steps=1))
    with pytest.raises(InputError, match="reason must be one of"):
        train_request(home, "r2", forget, retain, config=_config(steps=1), reason="because")
    assert _state(home) == before


def test_head_moving_during_training_registers_nothing(home, qa_files):
    forget, retain = qa_files
    train_request(home, "r1", forget, retain, config=_config(steps=1), evaluate=False)

    def roll_back(step, total, entry):
        if step == 1:
            with Registry.open(home) as reg:
                reg.move_pointer("HEAD", "c0", action="rollback")

    with pytest.raises(ForgetctlError, match="HEAD moved from c1 to c0 while training"):
        train_request(home, "r2", forget, retain, config=_config(steps=2), progress=roll_back, evaluate=False)
    with Registry.open(home) as reg:
        assert [v.request_id for v in reg.adapters()] == ["r1"]


def test_human_output_has_a_summary_table(home, qa_files):
    forget, retain = qa_files
    result = run(home, *train_args(forget, retain))
    assert result.exit_code == 0, result.output
    assert "r1 -> v1" in result.stdout and "evaluation before -> after" in result.stdout
    assert "forget_nll" in result.stdout and "stop_reason" in result.stdout


def test_methods_lists_the_objective_table():
    from forgetctl.adapters.objectives import OBJECTIVES

    result = CliRunner().invoke(cli, ["methods", "--json"])
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(OBJECTIVES)
    assert [r["name"] for r in rows if r["default"]] == ["npo"]
    assert "retain" in next(r for r in rows if r["name"] == "grad_diff")["needs"]
    human = CliRunner().invoke(cli, ["methods"])
    assert human.exit_code == 0 and "rmu" in human.stdout and "(default)" in human.stdout


def test_cli_options_and_config_file_build_the_config(tmp_path):
    cfg = train_cmds.build_config(None, {"epochs": 2.0, "rank": 4, "method": None})
    assert (cfg.steps, cfg.epochs, cfg.rank, cfg.method) == (None, 2.0, 4, "npo")
    file = tmp_path / "cfg.json"
    file.write_text(json.dumps({"method": "rmu", "rmu_layer": 1, "lr": 5e-4}))
    cfg = train_cmds.build_config(file, {"lr": 1e-3})
    assert (cfg.method, cfg.rmu_layer, cfg.lr) == ("rmu", 1, 1e-3)
    file.write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a JSON object"):
        train_cmds.build_config(file, {})
    assert train_cmds.REASONS == REASONS
