"""Report rendering from history data (torch-free) and from a real registry workspace."""

import base64
import json
import re
import subprocess
import sys

import pytest

from forgetctl.errors import InputError
from forgetctl.report import build_timeline, render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(forget_p, retain_p, auc, ppl=20.0, kl=0.0):
    return {
        "forget_answer_prob": forget_p, "forget_exact_mem": forget_p, "forget_rougeL_recall": forget_p,
        "forget_exact_answer_rate": forget_p, "holdout_answer_prob": 0.1, "holdout_rougeL_recall": 0.15,
        "retain_answer_prob": retain_p, "retain_rougeL_recall": retain_p, "general_ppl": ppl, "retain_kl": kl,
        "mia_loss_auc": auc, "mia_zlib_auc": auc, "mia_mink_auc": auc, "mia_minkpp_auc": auc,
    }


def _comp(n, adapters, metrics=None, seq=None):
    evaluations = [] if metrics is None else [{"seq": seq or n + 1, "label": "eval", "created_at": "t", "metrics": metrics}]
    return {"label": f"c{n}", "id": f"{n}" * 64, "number": n, "note": "", "created_at": f"t{n}", "parent": None,
            "adapters": adapters, "evaluations": evaluations}


@pytest.fixture()
def history():
    """c0 base, c1 = v1, c2 = v1+v2 (damaging), rollback to c1, c3 = v1+v3."""
    comps = [
        _comp(0, [], _metrics(0.9, 0.9, 0.95)),
        _comp(1, ["v1"], _metrics(0.2, 0.85, 0.6, 22.0, 0.05)),
        _comp(2, ["v1", "v2"], _metrics(0.05, 0.4, 0.3, 60.0, 0.9)),
        _comp(3, ["v1", "v3"], None),
    ]
    moves = [
        {"seq": 1, "name": "HEAD", "from": None, "to": "c0", "action": "init", "time": "t0", "actor": "a"},
        {"seq": 2, "name": "HEAD", "from": "c0", "to": "c1", "action": "train", "time": "t1", "actor": "a"},
        {"seq": 3, "name": "HEAD", "from": "c1", "to": "c2", "action": "train", "time": "t2", "actor": "a"},
        {"seq": 4, "name": "HEAD", "from": "c2", "to": "c1", "action": "rollback", "time": "t3", "actor": "a"},
        {"seq": 5, "name": "production", "from": None, "to": "c1", "action": "move", "time": "t3", "actor": "a"},
        {"seq": 6, "name": "HEAD", "from": "c1", "to": "c3", "action": "train", "time": "t4", "actor": "a"},
    ]
    adapters = [{"label": "v1", "id": "a" * 64, "request_id": "req-1", "reason": "gdpr", "subject": "s", "method": "npo",
                 "parent_composition": None, "created_at": "t", "stop_reason": "target_met", "steps": 12,
                 "metrics_before": {"forget_nll": 0.4}, "metrics_after": {"forget_nll": 3.1}}]
    return {"generated_at": "now", "base": {"spec": "tiny", "fingerprint": "sha256:abc"},
            "pointers": {"HEAD": "c3", "production": "c1"}, "compositions": comps, "adapters": adapters,
            "pointer_moves": moves}


def test_timeline_follows_head_and_marks_rollbacks(history):
    points = build_timeline(history)
    assert [p["x"] for p in points] == ["c0", "c1", "c2", "c1 (rollback)", "c3"]
    assert [p["rollback"] for p in points] == [False, False, False, True, False]
    assert points[3]["metrics"]["forget_answer_prob"] == 0.2  # the rolled-back-to state shows c1's numbers
    assert points[4]["metrics"] == {} and points[4]["evaluations"] == []


def test_timeline_without_moves_uses_creation_order(history):
    history["pointer_moves"] = []
    assert [p["x"] for p in build_timeline(history)] == ["c0", "c1", "c2", "c3"]


def test_timeline_newest_value_of_each_metric_wins(history):
    history["compositions"][1]["evaluations"].append(
        {"seq": 99, "label": "eval", "created_at": "t", "metrics": {"forget_answer_prob": 0.01}})
    point = build_timeline(history)[1]
    assert point["metrics"]["forget_answer_prob"] == 0.01  # the newer evaluation
    assert point["metrics"]["retain_answer_prob"] == 0.85  # kept from the older one
    assert point["evaluations"] == [2, 99]


def test_the_next_requests_before_score_does_not_overwrite_this_state(history):
    # train-after (request 1's forget set) then train-before of request 2 (another forget set), both on c1
    own = build_timeline(history)[1]["metrics"]["forget_answer_prob"]
    before_next = {"seq": 100, "label": "train-before", "created_at": "t",
                   "metrics": {"forget_answer_prob": 0.97, "holdout_nll": 1.5}}
    history["compositions"][1]["evaluations"].append(before_next)
    point = build_timeline(history)[1]
    assert own != 0.97 and point["metrics"]["forget_answer_prob"] == own  # still request 1's score
    assert point["metrics"]["holdout_nll"] == 1.5  # what nothing else gave is filled in
    assert point["evaluations"] == [2, 100]


def test_html_report_is_self_contained(history, tmp_path):
    files = render_report(history, tmp_path / "out", "html")
    assert sorted(f.name for f in files) == ["report.html", "report.json"]
    page = (tmp_path / "out" / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "src='http" not in page and "<script" not in page
    assert "c1 (rollback)" in page and "req-1" in page and "0.4 → 3.1" in page
    assert "Forget quality is not available" in page  # said, not invented
    assert "States with no stored evaluation" in page and "c3" in page
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [p["x"] for p in data["timeline"]] == ["c0", "c1", "c2", "c1 (rollback)", "c3"]
    assert data["compositions"][2]["evaluations"][0]["metrics"]["retain_kl"] == 0.9


def test_markdown_report_with_pngs(history, tmp_path):
    render_report(history, tmp_path, "md")
    md = (tmp_path / "report.md").read_text()
    for name in ("forget.png", "utility.png", "mia.png"):
        assert f"]({name})" in md
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert "| c1 (rollback) |" in md.replace("| 3 | c1 (rollback) |", "| c1 (rollback) |")
    assert "forget_answer_prob" in md


def test_report_survives_empty_history_and_nan(tmp_path):
    data = {"generated_at": "now", "base": {"spec": "tiny", "fingerprint": "x"}, "pointers": {"HEAD": "c0"},
            "compositions": [_comp(0, [], {"forget_answer_prob": float("nan")})], "adapters": [], "pointer_moves": []}
    render_report(data, tmp_path, "html")
    json.loads((tmp_path / "report.json").read_text())  # strict JSON: NaN became null
    data["compositions"][0]["evaluations"] = []
    render_report(data, tmp_path, "md")
    assert "No evaluation is stored yet" in (tmp_path / "report.md").read_text()


def test_bad_format_and_file_as_out_dir(history, tmp_path):
    with pytest.raises(InputError):
        render_report(history, tmp_path, "pdf")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        render_report(history, tmp_path / "file", "html")


def test_report_package_does_not_import_torch():
    code = "import sys, forgetctl.report, forgetctl.ops.evaluate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
