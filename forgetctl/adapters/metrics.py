"""Pure metric functions on tensors and numbers: no model calls, no I/O.

Conventions: `logits` is (B, T, V) and `labels` is (B, T) with IGNORE_INDEX where no score is
taken, aligned as the model sees them (labels[t] is predicted by logits[t-1]); `next_token`
does the shift. Per-sequence functions return a (B,) tensor; a sequence with no labelled
token gets NaN so that it can never pass for a perfect score.

Membership-inference scores are oriented "higher = looks more like a member" so that
ROC-AUC(members vs non-members) is 0.5 when the attack cannot tell and > 0.5 when the
members stand out.
"""

from __future__ import annotations

import math
import re
import zlib

import torch

IGNORE_INDEX = -100


def next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict: (logits[:, :-1], labels[:, 1:])."""
    return logits[:, :-1, :], labels[:, 1:]


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target_t) per position (0 where ignored) and the boolean mask of scored positions."""
    mask = targets != IGNORE_INDEX
    safe = targets.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(~mask, 0.0), mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum(-1)
    total = (values * mask).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean negative log-likelihood over the scored tokens."""
    logp, mask = token_log_probs(logits, targets)
    return _masked_mean(-logp, mask)


def answer_probability(nll: torch.Tensor | float):
    """Length-normalised probability of the answer: exp(-mean NLL)."""
    return torch.exp(-nll) if isinstance(nll, torch.Tensor) else math.exp(-nll)


def exact_memorization(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of scored tokens whose argmax prediction is the true token (teacher forced)."""
    mask = targets != IGNORE_INDEX
    hits = (logits.argmax(-1) == targets).float()
    return _masked_mean(hits, mask)


def min_k_scores(token_scores: torch.Tensor, mask: torch.Tensor, k: float = 0.2) -> torch.Tensor:
    """Mean of the lowest ceil(k * n) scored values per sequence (n = scored tokens)."""
    if not 0 < k <= 1:
        raise ValueError("k must be in (0, 1]")
    out = []
    for row, m in zip(token_scores, mask):
        values = row[m]
        if values.numel() == 0:
            out.append(torch.tensor(float("nan")))
            continue
        n = max(1, math.ceil(k * values.numel()))
        out.append(torch.topk(values.float(), n, largest=False).values.mean())
    return torch.stack(out)


def min_k_prob(logits: torch.Tensor, targets: torch.Tensor, k: float = 0.2) -> torch.Tensor:
    """Min-K% Prob (Shi et al. 2023): mean log-prob of the k% least likely tokens. Higher = member."""
    logp, mask = token_log_probs(logits, targets)
    return min_k_scores(logp, mask, k)


def min_k_plus_plus(logits: torch.Tensor, targets: torch.Tensor, k: float = 0.2) -> torch.Tensor:
    """Min-K%++ (Zhang et al. 2024): token log-prob standardised by the next-token distribution,
    (log p(x_t) - mu_t) / sigma_t with mu_t = E_z[log p(z)], sigma_t^2 = Var_z[log p(z)] under p;
    then the mean of the k% lowest. Higher = member."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    probs = logprobs.exp()
    mu = (probs * logprobs).sum(-1)
    sigma = ((probs * logprobs.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
    logp, mask = token_log_probs(logits, targets)
    standardised = (logp - mu) / sigma.clamp(min=1e-12)
    return min_k_scores(standardised.masked_fill(~mask, 0.0), mask, k)


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(nll: float, text: str) -> float:
    """ZLib attack (Carlini et al. 2021): loss / zlib entropy of the text. Lower = member."""
    return float(nll) / zlib_entropy(text)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over masked positions of KL(p || q) between next-token distributions."""
    logp = torch.log_softmax(logits_p.float(), dim=-1)
    logq = torch.log_softmax(logits_q.float(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return _masked_mean(kl, mask.bool())


def text_tokens(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation split off, as rouge_score does)."""
    return re.findall(r"\w+", text.lower())


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall: LCS(prediction, reference) / number of reference tokens."""
    ref = text_tokens(reference)
    if not ref:
        return float("nan")
    return lcs_length(text_tokens(prediction), ref) / len(ref)


def normalise_answer(text: str) -> str:
    return " ".join(text_tokens(text))


def contains_answer(output: str, answer: str) -> bool:
    """Whether the normalised answer appears, as whole words, in the normalised output."""
    needle = normalise_answer(answer)
    return bool(needle) and f" {needle} " in f" {normalise_answer(output)} "


def roc_auc(member_scores, nonmember_scores) -> float:
    """ROC-AUC of separating members (label 1) from non-members (label 0); scores: higher = member."""
    from sklearn.metrics import roc_auc_score

    members, others = [float(s) for s in member_scores], [float(s) for s in nonmember_scores]
    if not members or not others:
        raise ValueError("ROC-AUC needs at least one member and one non-member score")
    return float(roc_auc_score([1] * len(members) + [0] * len(others), members + others))


def truth_ratio(paraphrased_nll: float, perturbed_nlls: list[float]) -> float:
    """TOFU truth ratio: mean length-normalised probability of the perturbed (wrong) answers over
    that of the paraphrased (right) answer. Near 1 or above: the model cannot tell right from wrong."""
    if not perturbed_nlls:
        raise ValueError("the truth ratio needs at least one perturbed answer")
    wrong = sum(math.exp(-x) for x in perturbed_nlls) / len(perturbed_nlls)
    return wrong / math.exp(-paraphrased_nll)


def forget_quality(unlearned_truth_ratios, retain_truth_ratios) -> float:
    """TOFU forget quality: p-value of the two-sample KS test between the truth-ratio
    distributions of the unlearned model and of a model never trained on the forget set.
    High (near 1) = indistinguishable from never having seen the data."""
    from scipy.stats import ks_2samp

    a, b = list(unlearned_truth_ratios), list(retain_truth_ratios)
    if not a or not b:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(a, b).pvalue)
