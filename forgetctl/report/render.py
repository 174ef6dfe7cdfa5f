"""Write the report files: report.json always; report.html (plots embedded) or report.md + PNGs."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from pathlib import Path

from forgetctl.errors import InputError
from forgetctl.report.plots import all_plots
from forgetctl.report.timeline import build_timeline, composition_metrics

SUMMARY_COLUMNS = [
    ("forget_answer_prob", "forget p(answer)"),
    ("forget_rougeL_recall", "forget ROUGE-L"),
    ("forget_exact_answer_rate", "forget exact answers"),
    ("holdout_answer_prob", "never-seen p(answer)"),
    ("mia_loss_auc", "MIA LOSS AUC"),
    ("mia_minkpp_auc", "MIA Min-K%++ AUC"),
    ("forget_quality", "forget quality"),
    ("retain_answer_prob", "retain p(answer)"),
    ("retain_exact_answer_rate", "retain exact answers"),
    ("general_ppl", "general ppl"),
    ("retain_kl", "retain KL"),
]

HEADLINE_KEYS = ["forget_nll", "forget_answer_prob", "forget_exact_answer_rate", "forget_rougeL_recall",
                 "mia_loss_auc", "retain_answer_prob", "retain_exact_answer_rate", "retain_kl"]

GLOSSARY = [
    ("*_answer_prob", "exp(-mean NLL) of the answer tokens: the length-normalised probability of the true answer"),
    ("*_exact_mem", "share of answer tokens the model predicts exactly (teacher forced)"),
    ("*_rougeL_recall", "ROUGE-L recall of the model's greedy continuation against the true one (verbatim extraction)"),
    ("*_exact_answer_rate", "share of questions whose normalised answer appears in the greedy output"),
    ("holdout_*", "the same scores on data the model never saw: the level a good deletion aims for"),
    ("mia_*_auc", "ROC-AUC of a membership-inference attack separating the forget set from the holdout set; "
                  "0.5 = cannot tell, above 0.5 = the forget set still looks like training data"),
    ("forget_quality", "TOFU: KS-test p-value between truth-ratio distributions of this model and of a model never "
                       "trained on the forget set (high = indistinguishable)"),
    ("*_kl", "mean KL divergence of next-token distributions from the pristine base model"),
    ("general_ppl", "perplexity on general text: overall language ability"),
]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(points) -> tuple[list[str], list[list[str]]]:
    columns = [(k, name) for k, name in SUMMARY_COLUMNS if any(k in p["metrics"] for p in points)]
    header = ["step", "state", "action", "adapters"] + [name for _, name in columns]
    rows = []
    for i, p in enumerate(points):
        adapters = ", ".join(p["adapters"]) or "(base)"
        rows.append([str(i), p["x"], p["action"], adapters] + [_fmt(p["metrics"].get(k)) for k, _ in columns])
    return header, rows


def _all_metrics(data) -> tuple[list[str], list[list[str]]]:
    evaluated = [(c["label"], *composition_metrics(c)) for c in data["compositions"]]
    evaluated = [(label, m, seqs) for label, m, seqs in evaluated if m]
    keys = sorted({k for _, m, _ in evaluated for k in m})
    header = ["metric"] + [f"{label} (eval {', '.join(f'#{s}' for s in seqs)})" for label, _, seqs in evaluated]
    return header, [[k] + [_fmt(m.get(k)) for _, m, _ in evaluated] for k in keys]


def _adapter_rows(data) -> tuple[list[str], list[list[str]]]:
    header = ["adapter", "request", "reason", "method", "steps", "stop", "before → after"]
    rows = []
    for a in data["adapters"]:
        before, after = a["metrics_before"], a["metrics_after"]
        keys = sorted(set(before) | set(after))
        headline = [k for k in HEADLINE_KEYS if k in keys] or keys  # the full sidecar is in report.json
        changes = "; ".join(f"{k}: {_fmt(before.get(k))} → {_fmt(after.get(k))}" for k in headline)
        rows.append([a["label"], a["request_id"], a["reason"], a["method"], _fmt(a["steps"]), _fmt(a["stop_reason"]),
                     changes or "–"])
    return header, rows


def _move_rows(data) -> tuple[list[str], list[list[str]]]:
    header = ["#", "time", "pointer", "action", "from", "to", "actor"]
    rows = [[_fmt(m.get("seq")), _fmt(m.get("time")), _fmt(m.get("name")), _fmt(m.get("action")),
             _fmt(m.get("from")), _fmt(m.get("to")), _fmt(m.get("actor"))] for m in data["pointer_moves"]]
    return header, rows


def _notes(data, points) -> list[str]:
    notes = []
    stored = [composition_metrics(c)[0] for c in data["compositions"]]
    has = lambda key: any(key in m for m in stored)  # noqa: E731
    if not any(stored):
        notes.append("No evaluation is stored yet: run `forgetctl eval` on the compositions to fill the plots.")
    if not has("forget_quality"):
        notes.append("Forget quality is not available: it needs a forget set with paraphrased/perturbed answers and "
                     "a retain model never trained on the forget set (`forgetctl eval --retain-model DIR`).")
    if not has("mia_loss_auc"):
        notes.append("Membership-inference AUCs are not available: they need a holdout set the model never saw.")
    missing = [p["x"] for p in points if not p["metrics"]]
    if missing:
        notes.append("States with no stored evaluation (gaps in the plots): " + ", ".join(dict.fromkeys(missing)) + ".")
    return notes


FIGURES = [
    ("forget.png", "Forgetting across the history"),
    ("utility.png", "Utility across the history"),
    ("mia.png", "Membership inference before and after"),
]


def _md_table(header, rows) -> str:
    if not rows:
        return "_none_\n"
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(header, rows) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(data, points):
    return [
        ("Timeline of HEAD", _summary(points)),
        ("Forget adapters (sidecar metrics from training)", _adapter_rows(data)),
        ("Pointer moves (deletions, rollbacks)", _move_rows(data)),
        ("All stored metrics (newest value of each metric per composition)", _all_metrics(data)),
    ]


def _intro(data) -> list[str]:
    pointers = ", ".join(f"{k} → {v}" for k, v in sorted(data["pointers"].items()))
    return [f"Base model: {data['base']['spec']} (fingerprint {data['base']['fingerprint']})",
            f"Pointers: {pointers or 'none'}", f"Generated: {data['generated_at']}"]


def _markdown(data, points) -> str:
    out = ["# forgetctl unlearning report", ""] + [f"- {line}" for line in _intro(data)] + [""]
    for name, title in FIGURES:
        out += [f"## {title}", "", f"![{title}]({name})", ""]
    for title, (header, rows) in _sections(data, points):
        out += [f"## {title}", "", _md_table(header, rows)]
    out += ["## Notes", ""] + [f"- {n}" for n in _notes(data, points) or ["All metrics available."]] + [""]
    out += ["## Glossary", ""] + [f"- `{k}`: {v}" for k, v in GLOSSARY] + [""]
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}code{background:#f5f5f5;padding:0 3px}"""


def _html(data, points, pngs) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>forgetctl report</title><style>{CSS}</style>",
           "</head><body><h1>forgetctl unlearning report</h1><ul>"]
    out += [f"<li>{html.escape(line)}</li>" for line in _intro(data)] + ["</ul>"]
    for name, title in FIGURES:
        encoded = base64.b64encode(pngs[name]).decode("ascii")
        out.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{encoded}'>")
    for title, (header, rows) in _sections(data, points):
        out.append(f"<h2>{html.escape(title)}</h2>{_html_table(header, rows)}")
    out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _notes(data, points) or
                                              ["All metrics available."]) + "</ul>")
    out.append("<h2>Glossary</h2><ul>" + "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>"
                                                 for k, v in GLOSSARY) + "</ul></body></html>")
    return "\n".join(out)


def _finite(obj):
    """JSON has no NaN/inf: such values become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def render_report(data: dict, out_dir: Path, fmt: str = "html") -> list[Path]:
    """Write the report; returns the files written. `data` comes from ops.evaluate.collect_history."""
    if fmt not in ("html", "md"):
        raise InputError(f"unknown report format '{fmt}' (use html or md)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"report output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    points = build_timeline(data)
    pngs = all_plots(points)
    payload = _finite(dict(data, timeline=points, notes=_notes(data, points)))
    files = []
    json_path = out_dir / "report.json"
    _atomic_write(json_path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False).encode("utf-8"))
    files.append(json_path)
    if fmt == "md":
        for name, png in pngs.items():
            _atomic_write(out_dir / name, png)
            files.append(out_dir / name)
        _atomic_write(out_dir / "report.md", _markdown(data, points).encode("utf-8"))
        files.append(out_dir / "report.md")
    else:
        _atomic_write(out_dir / "report.html", _html(data, points, pngs).encode("utf-8"))
        files.append(out_dir / "report.html")
    return files
