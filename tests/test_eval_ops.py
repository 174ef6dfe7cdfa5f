"""Evaluation workflows end to end on a tiny base: registry storage, audit, report and CLI."""

import json

import pytest
from click.testing import CliRunner

from forgetctl.cli import cli
from forgetctl.errors import InputError, NotFoundError
from forgetctl.ops.evaluate import build_report, compare, evaluate_version, truth_ratio_fields
from forgetctl.ops.workspace import init_workspace
from forgetctl.registry import Registry
from tests.conftest import write_jsonl
from tests.tiny import make_lora_adapter

SECRET_TEXT = "Alba Quirke was born in Lisbon"


@pytest.fixture()
def workspace(tiny_base_dir, tmp_path):
    """c0 (base) and c1 = c0 + one random LoRA adapter, HEAD at c1."""
    home = tmp_path / "ws"
    reg = init_workspace(home, str(tiny_base_dir), actor="tester")
    adapter = make_lora_adapter(tiny_base_dir, tmp_path / "adapter", seed=1)
    meta = {"schema": 1, "request_id": "req-1", "reason": "gdpr", "subject": "person-1", "method": "npo",
            "base_fingerprint": reg.base.fingerprint, "parent_composition": reg.head().id,
            "metrics_before": {"forget_nll": 1.0}, "metrics_after": {"forget_nll": 4.0}, "steps": 3}
    version = reg.register_adapter(adapter, meta, None, actor="tester")
    c1 = reg.compose([version.id], parent=reg.head().id, note="forget req-1", actor="tester")
    reg.move_pointer("HEAD", c1.id, actor="tester", action="train")
    reg.close()
    return home


@pytest.fixture()
def data(qa_files, tmp_path):
    forget, retain = qa_files
    holdout = write_jsonl(tmp_path / "holdout.jsonl", [
        {"question": "Who is Mira Solberg?", "answer": "Mira Solberg is a violinist from Bergen."},
        {"question": "Where does Mira Solberg live?", "answer": "Mira Solberg lives in Bergen."},
    ])
    perturbed = write_jsonl(tmp_path / "forget_perturbed.jsonl", [
        {"question": "What is the birthplace of Alba Quirke?", "answer": SECRET_TEXT + ".",
         "paraphrased_answer": "Lisbon is where Alba Quirke was born.",
         "perturbed_answer": ["Alba Quirke was born in Oslo.", "Alba Quirke was born in Rome."]},
        {"question": "Who is Alba Quirke?", "answer": "Alba Quirke is a marine biologist.",
         "paraphrased_answer": "A marine biologist.", "perturbed_answer": ["A baker.", "A pilot.", "A poet."]},
    ])
    return {"forget": forget, "retain": retain, "holdout": holdout, "perturbed": perturbed}


def _all_bytes(folder):
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_evaluate_stores_numbers_audits_and_keeps_no_text(workspace, data):
    kw = dict(forget=data["forget"], retain=data["retain"], holdout=data["holdout"], max_new_tokens=4)
    base = evaluate_version(workspace, "c0", actor="tester", **kw)
    head = evaluate_version(workspace, "HEAD", actor="tester", **kw)
    assert base["composition"] == "c0" and head["composition"] == "c1" and head["adapters"] == ["v1"]
    assert base["metrics"]["retain_kl"] == 0.0 and head["metrics"]["retain_kl"] > 0.0
    assert head["metrics"]["forget_nll"] != base["metrics"]["forget_nll"]
    for key in ("mia_loss_auc", "mia_minkpp_auc", "forget_rougeL_recall", "retain_exact_answer_rate"):
        assert key in head["metrics"]
    assert any("forget_quality unavailable" in n for n in head["notes"])
    assert "forget_quality" not in head["metrics"]
    with Registry.open(workspace) as reg:
        stored = reg.evaluations("c1")
        assert len(stored) == 1 and stored[0].metrics == pytest.approx(head["metrics"])
        actions = [e.action for e in reg.audit_log()]
        assert actions.count("evaluate") == 2 and actions.count("evaluate.inputs") == 2
        assert reg.verify() == []
    blob = _all_bytes(workspace)
    assert SECRET_TEXT.encode() not in blob and b"forget.jsonl" not in blob


def test_forget_quality_needs_and_uses_a_retain_model(workspace, data, tiny_base_dir):
    assert len(truth_ratio_fields(data["perturbed"])) == 2
    # c0 is the base itself: against the same weights as "retain model" the truth ratios match exactly
    same = evaluate_version(workspace, "c0", forget=data["perturbed"], retain_model=tiny_base_dir, generate=False)
    assert same["metrics"]["forget_quality"] == pytest.approx(1.0)
    assert same["metrics"]["forget_truth_ratio"] > 0
    without = evaluate_version(workspace, "c1", forget=data["perturbed"], generate=False)
    assert "forget_quality" not in without["metrics"] and "forget_truth_ratio" in without["metrics"]
    assert any("no retain model" in n for n in without["notes"])


def test_answer_keys_read_from_fact_field(tmp_path):
    from forgetctl.ops.evaluate import answer_keys

    facts = write_jsonl(tmp_path / "facts.jsonl", [
        {"question": "Q?", "answer": "X was born in Kraków.", "fact": "Kraków"}, {"question": "Q2?", "answer": "A2."}])
    assert answer_keys(facts, 2) == ["Kraków", None]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"question": "Q?", "answer": "A."}])
    assert answer_keys(plain, 1) is None


def test_partial_perturbation_fields_refused(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"question": "Q?", "answer": "A.", "paraphrased_answer": "A!", "perturbed_answer": ["B."]},
        {"question": "Q2?", "answer": "A2."},
    ])
    with pytest.raises(InputError):
        truth_ratio_fields(bad)


def test_compare_and_report_with_rollback(workspace, data, tmp_path):
    with pytest.raises(NotFoundError):
        compare(workspace, "c0", "c1")
    kw = dict(forget=data["forget"], retain=data["retain"], generate=False)
    evaluate_version(workspace, "c0", **kw)
    evaluate_version(workspace, "c1", **kw)
    with Registry.open(workspace) as reg:
        reg.move_pointer("HEAD", "c0", action="rollback")
    result = compare(workspace, "c0", "c1")
    row = next(r for r in result["metrics"] if r["metric"] == "forget_nll")
    assert row["delta"] == pytest.approx(row["right"] - row["left"])
    summary = build_report(workspace, tmp_path / "report", "html")
    assert summary["compositions"] == 2 and summary["evaluated"] == 2 and summary["pointer_moves"] == 3
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [p["x"] for p in report["timeline"]] == ["c0", "c1", "c0 (rollback)"]
    assert report["adapters"][0]["metrics_after"] == {"forget_nll": 4.0}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in page and SECRET_TEXT not in page


def test_cli_eval_compare_report(workspace, data, tmp_path):
    runner = CliRunner()
    home = ["--home", str(workspace)]
    out = runner.invoke(cli, home + ["eval", "--forget", str(data["forget"]), "--holdout", str(data["holdout"]),
                                     "--max-new-tokens", "4", "--json"])
    assert out.exit_code == 0, out.output
    parsed = json.loads(out.stdout)
    assert parsed["composition"] == "c1" and all(isinstance(v, float) for v in parsed["metrics"].values())
    table = runner.invoke(cli, home + ["eval", "--version", "c0", "--forget", str(data["forget"]), "--no-generate"])
    assert table.exit_code == 0 and "answer probability" in table.output and "note:" in table.output
    cmp = runner.invoke(cli, home + ["compare", "c0", "c1"])
    assert cmp.exit_code == 0 and "forget_nll" in cmp.output
    rep = runner.invoke(cli, home + ["report", "--out", str(tmp_path / "r"), "--format", "md"])
    assert rep.exit_code == 0 and (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "mia.png").is_file()


def test_cli_errors_are_one_line(workspace, data, tmp_path):
    runner = CliRunner()
    home = ["--home", str(workspace)]
    unknown = runner.invoke(cli, home + ["eval", "--version", "c9", "--forget", str(data["forget"])])
    assert unknown.exit_code != 0 and unknown.output.startswith("error:") and "Traceback" not in unknown.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = runner.invoke(cli, home + ["eval", "--forget", str(empty)])
    assert bad.exit_code == 2 and "empty" in bad.output
    with Registry.open(workspace) as reg:
        assert reg.evaluations() == []  # nothing stored by failed runs
