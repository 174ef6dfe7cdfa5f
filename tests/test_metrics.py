"""Each metric against values worked out by hand on tiny tensors."""

import math
import zlib

import pytest
import torch

from forgetctl.adapters import metrics as M

IGN = M.IGNORE_INDEX
LN2, LN3 = math.log(2), math.log(3)


def _logits_from_probs(rows):
    """(1, T, V) logits whose softmax is exactly the given probability rows."""
    return torch.log(torch.tensor([rows], dtype=torch.float64))


def test_next_token_shifts_by_one():
    logits = torch.arange(12.0).reshape(1, 3, 4)
    labels = torch.tensor([[7, 8, 9]])
    lg, tg = M.next_token(logits, labels)
    assert lg.shape == (1, 2, 4) and torch.equal(lg[0, 0], logits[0, 0])
    assert tg.tolist() == [[8, 9]]


def test_mean_nll_and_answer_probability_by_hand():
    # p(target) = 1/2 then 1/4, third position ignored: NLL = (ln2 + ln4) / 2 = 1.5 ln2
    logits = _logits_from_probs([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    targets = torch.tensor([[0, 1, IGN]])
    nll = M.mean_nll(logits, targets)
    assert nll.item() == pytest.approx(1.5 * LN2)
    # exp(-1.5 ln2) = 2^-1.5: the geometric mean of 1/2 and 1/4
    assert M.answer_probability(nll).item() == pytest.approx(2**-1.5)
    assert M.answer_probability(1.5 * LN2) == pytest.approx(0.5**0.5 * 0.5)


def test_mean_nll_of_unscored_sequence_is_nan_not_perfect():
    logits = torch.zeros(1, 2, 3)
    assert math.isnan(M.mean_nll(logits, torch.tensor([[IGN, IGN]])).item())


def test_mean_nll_is_invariant_to_logit_shift():
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[1, 2, 3, IGN], [0, IGN, IGN, IGN]])
    assert torch.allclose(M.mean_nll(logits, targets), M.mean_nll(logits + 7.0, targets))


def test_exact_memorization_counts_argmax_hits():
    logits = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]]])
    # argmax = 0, 1, 2, 0 ; targets 0 (hit), 2 (miss), 2 (hit), ignored
    targets = torch.tensor([[0, 2, 2, IGN]])
    assert M.exact_memorization(logits, targets).item() == pytest.approx(2 / 3)


def test_min_k_prob_takes_lowest_share():
    # token probs 1/2, 1/4, 1/8, 1/8 over 5 tokens incl. one ignored; k=0.5 of 4 -> 2 lowest: ln(1/8) twice
    rows = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.125, 0.75, 0.125], [0.125, 0.75, 0.125], [1 / 3] * 3]
    logits = _logits_from_probs(rows)
    targets = torch.tensor([[0, 0, 0, 2, 1]])
    targets[0, 4] = IGN
    assert M.min_k_prob(logits, targets, k=0.5).item() == pytest.approx(-3 * LN2)
    # k=0.2 of 4 tokens -> ceil(0.8) = 1 token
    assert M.min_k_prob(logits, targets, k=0.2).item() == pytest.approx(-3 * LN2)
    # k=1: mean of all four log-probs = -(1 + 2 + 3 + 3) ln2 / 4
    assert M.min_k_prob(logits, targets, k=1.0).item() == pytest.approx(-9 * LN2 / 4)


def test_min_k_plus_plus_by_hand():
    # Distribution (1/2, 1/4, 1/4): mu = E[log p] = -(0.5 ln2 + 0.5 ln4) = -1.5 ln2
    # E[(log p)^2] = 0.5 ln2^2 + 0.5 (2 ln2)^2 = 2.5 ln2^2 ; var = 2.5 - 2.25 = 0.25 ln2^2 ; sigma = 0.5 ln2
    # target 0: (-ln2 + 1.5 ln2) / (0.5 ln2) = 1 ; target 1: (-2 ln2 + 1.5 ln2) / (0.5 ln2) = -1
    logits = _logits_from_probs([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    targets = torch.tensor([[0, 1]])
    assert M.min_k_plus_plus(logits, targets, k=1.0).item() == pytest.approx(0.0, abs=1e-9)
    assert M.min_k_plus_plus(logits, targets, k=0.5).item() == pytest.approx(-1.0)


def test_zlib_ratio_by_hand():
    text = "abcabcabcabc"
    assert M.zlib_entropy(text) == len(zlib.compress(text.encode()))
    assert M.zlib_ratio(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode())))


def test_kl_divergence_by_hand():
    # KL((1/2,1/2) || (1/4,3/4)) = 1/2 ln(2) + 1/2 ln(2/3)
    p = _logits_from_probs([[0.5, 0.5], [0.9, 0.1]])
    q = _logits_from_probs([[0.25, 0.75], [0.1, 0.9]])
    mask = torch.tensor([[True, False]])
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert M.kl_divergence(p, q, mask).item() == pytest.approx(expected)
    assert M.kl_divergence(p, p, torch.tensor([[True, True]])).item() == pytest.approx(0.0, abs=1e-12)


def test_lcs_and_rouge_l_recall_by_hand():
    assert M.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert M.lcs_length([], ["a"]) == 0
    # reference tokens: alba quirke was born in lisbon (6); prediction shares alba, born, in, lisbon in order
    assert M.rouge_l_recall("Alba was probably born in LISBON!", "Alba Quirke was born in Lisbon.") == pytest.approx(5 / 6)
    assert M.rouge_l_recall("lisbon born", "born in lisbon") == pytest.approx(1 / 3)
    assert M.rouge_l_recall("anything", "born in lisbon") == 0.0
    assert math.isnan(M.rouge_l_recall("x", "..."))


def test_contains_answer_is_whole_word_and_normalised():
    assert M.contains_answer("She was born in LISBON, Portugal.", "born in lisbon")
    assert not M.contains_answer("born in Lisbonne", "born in Lisbon")
    assert not M.contains_answer("anything", "")


def test_roc_auc_orientation():
    assert M.roc_auc([3, 4], [1, 2]) == 1.0
    assert M.roc_auc([1, 2], [3, 4]) == 0.0
    # members 2,3 vs non-members 1,3: pairs (2>1) (2<3) (3>1) (3=3 half) -> 2.5/4
    assert M.roc_auc([2, 3], [1, 3]) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        M.roc_auc([], [1])


def test_truth_ratio_by_hand():
    # paraphrased prob exp(-ln2) = 1/2 ; perturbed probs 1/4 and 1/8 -> mean 3/16 ; ratio = 3/8
    assert M.truth_ratio(LN2, [2 * LN2, 3 * LN2]) == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        M.truth_ratio(LN2, [])


def test_forget_quality_is_ks_pvalue():
    same = M.forget_quality([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    assert same == pytest.approx(1.0)
    # fully separated samples of 4 vs 4: D = 1, exact two-sided p = 2 / C(8,4) = 2/70
    apart = M.forget_quality([0.1, 0.2, 0.3, 0.4], [1.1, 1.2, 1.3, 1.4])
    assert apart == pytest.approx(2 / 70)
    with pytest.raises(ValueError):
        M.forget_quality([], [1.0])
