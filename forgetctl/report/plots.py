"""PNG plots of the history (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FORGET_SERIES = [
    ("forget_answer_prob", "answer probability"),
    ("forget_exact_mem", "exact memorisation"),
    ("forget_rougeL_recall", "ROUGE-L recall (greedy)"),
    ("forget_exact_answer_rate", "exact-answer rate (greedy)"),
]
NEVER_SEEN_SERIES = [
    ("holdout_answer_prob", "never-seen level: holdout answer probability"),
    ("holdout_rougeL_recall", "never-seen level: holdout ROUGE-L recall"),
]
RETAIN_SERIES = [
    ("retain_answer_prob", "retain answer probability"),
    ("retain_exact_mem", "retain exact memorisation"),
    ("retain_rougeL_recall", "retain ROUGE-L recall"),
    ("retain_exact_answer_rate", "retain exact-answer rate"),
]
MIA_SERIES = [
    ("mia_loss_auc", "LOSS"),
    ("mia_zlib_auc", "ZLib"),
    ("mia_mink_auc", "Min-K%"),
    ("mia_minkpp_auc", "Min-K%++"),
]


def _values(points, key):
    return [p["metrics"].get(key, math.nan) for p in points]


def _has(points, key) -> bool:
    return any(not math.isnan(v) for v in _values(points, key))


def _axis(ax, points, title, ylabel=None):
    xs = range(len(points))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([p["x"] for p in points], rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_title(title, fontsize=10)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    for i, p in enumerate(points):
        if p["rollback"]:
            ax.axvline(i, color="tab:red", linestyle=":", linewidth=1.2)
            ax.annotate("rollback", (i, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", color="tab:red", fontsize=7)


def _lines(ax, points, series, **style):
    drawn = 0
    for key, label in series:
        if _has(points, key):
            ax.plot(range(len(points)), _values(points, key), marker="o", label=label, **style)
            drawn += 1
    return drawn


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="grey")


def forget_plot(points) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = _lines(ax, points, FORGET_SERIES)
    drawn += _lines(ax, points, NEVER_SEEN_SERIES, linestyle="--", alpha=0.7)
    _axis(ax, points, "Forget set: what the model still knows (lower = more forgotten)", "score (0-1)")
    ax.set_ylim(-0.03, 1.03)
    if drawn:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        _empty(ax, "no forget-set evaluations stored")
    return _png(fig)


def utility_plot(points) -> bytes:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = _lines(left, points, RETAIN_SERIES)
    _axis(left, points, "Retain set: knowledge that must stay (higher = better)", "score (0-1)")
    left.set_ylim(-0.03, 1.03)
    if drawn:
        left.legend(fontsize=7, loc="lower left")
    else:
        _empty(left, "no retain-set evaluations stored")
    _axis(right, points, "General text perplexity and KL from the base (lower = closer)")
    handles = []
    if _has(points, "general_ppl"):
        handles += right.plot(range(len(points)), _values(points, "general_ppl"), marker="o", color="tab:blue",
                              label="general perplexity")
        right.set_ylabel("perplexity", fontsize=9)
    kl_key = "retain_kl" if _has(points, "retain_kl") else "general_kl"
    if _has(points, kl_key):
        twin = right.twinx()
        handles += twin.plot(range(len(points)), _values(points, kl_key), marker="s", color="tab:orange",
                             label=f"{kl_key.split('_')[0]} KL from base")
        twin.set_ylabel("KL (nats/token)", fontsize=9)
    if handles:
        right.legend(handles=handles, fontsize=7, loc="upper left")
    else:
        _empty(right, "no general set / KL stored")
    return _png(fig)


def mia_plot(points) -> bytes:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    evaluated = [p for p in points if any(k in p["metrics"] for k, _ in MIA_SERIES)]
    if len(evaluated) >= 1:
        first, last = evaluated[0], evaluated[-1]
        names = [label for _, label in MIA_SERIES]
        width = 0.38
        xs = range(len(names))
        left.bar([x - width / 2 for x in xs], [first["metrics"].get(k, math.nan) for k, _ in MIA_SERIES], width,
                 label=f"before ({first['x']})", color="tab:grey")
        left.bar([x + width / 2 for x in xs], [last["metrics"].get(k, math.nan) for k, _ in MIA_SERIES], width,
                 label=f"after ({last['x']})", color="tab:green")
        left.set_xticks(list(xs))
        left.set_xticklabels(names, fontsize=8)
        left.legend(fontsize=7, loc="lower right")
    else:
        _empty(left, "no membership-inference results stored\n(needs forget and holdout sets)")
    left.axhline(0.5, color="black", linestyle="--", linewidth=1)
    left.set_ylim(0, 1.02)
    left.set_ylabel("ROC-AUC (0.5 = cannot tell)", fontsize=9)
    left.set_title("Membership inference: first vs last evaluated state", fontsize=10)
    left.grid(alpha=0.3, axis="y")
    _lines(right, points, MIA_SERIES)
    _axis(right, points, "Membership-inference AUC across history")
    right.axhline(0.5, color="black", linestyle="--", linewidth=1, label="0.5: forget set looks unseen")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=7, loc="lower left")
    return _png(fig)


def all_plots(points) -> dict[str, bytes]:
    return {"forget.png": forget_plot(points), "utility.png": utility_plot(points), "mia.png": mia_plot(points)}
