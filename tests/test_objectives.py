"""Each unlearning loss on hand-made tensors, against values worked out by hand."""

import math

import pytest
import torch

from forgetctl.adapters.config import ForgetConfig
from forgetctl.adapters.objectives import OBJECTIVES, Forward, Inputs, losses, required_inputs, total_loss
from forgetctl.adapters.objectives.table import HIDDEN, IDK_TARGETS, QA_ONLY, REF_FORGET, REF_RETAIN, RETAIN

LN3 = math.log(3.0)
# vocab of 2; position t predicts label t+1. Row logits: [0,0] -> p=(1/2,1/2); [ln3,0] -> p=(3/4,1/4)
LOGITS = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]], [[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]]])
LABELS = torch.tensor([[-100, 1, 0], [-100, -100, 1]])
# seq 0: p(1)=1/2 then p(0)=3/4 -> NLL sum ln2 + ln(4/3) = ln(8/3); seq 1: p(1)=1/4 -> ln 4
NLL_SUM = torch.tensor([math.log(8 / 3), math.log(4.0)])
NLL_MEAN = torch.tensor([math.log(8 / 3) / 2, math.log(4.0)])


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


def test_sequence_nll_sum_and_mean():
    assert close(losses.sequence_nll(LOGITS, LABELS, reduction="sum"), NLL_SUM)
    assert close(losses.sequence_nll(LOGITS, LABELS), NLL_MEAN)
    with pytest.raises(ValueError):
        losses.sequence_nll(LOGITS, LABELS, reduction="median")


def test_sequence_nll_of_a_sequence_without_labels_is_zero_not_nan():
    labels = torch.full((1, 3), -100)
    assert losses.sequence_nll(LOGITS[:1], labels).item() == 0.0


def test_verbatim_match_is_greedy_reproduction():
    # seq 0: argmax at pos 0 is a tie (argmax -> 0) != label 1 -> no match
    assert losses.verbatim_match(LOGITS, LABELS).tolist() == [0.0, 0.0]
    logits = torch.tensor([[[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]]])
    assert losses.verbatim_match(logits, torch.tensor([[-100, 1, 0]])).tolist() == [1.0]
    assert losses.verbatim_match(logits, torch.tensor([[-100, 1, 1]])).tolist() == [0.0]


def test_grad_ascent_and_grad_diff():
    f, r = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5])
    assert losses.grad_ascent(f).item() == -2.0
    assert losses.grad_diff(f, r, retain_weight=2.0).item() == pytest.approx(-2.0 + 2.0 * 1.0)


def test_npo_values_and_gradient_direction():
    # equal likelihoods: -2/beta * log sigmoid(0) = 2 ln 2 (for beta = 1)
    same = torch.tensor([2.0, 5.0])
    assert losses.npo(same, same, beta=1.0).item() == pytest.approx(2 * math.log(2))
    # beta=2, nll - ref = ln3 / 2: sigmoid(ln 3) = 3/4 -> -(2/2) ln(3/4) = ln(4/3)
    nll = torch.tensor([1.0 + LN3 / 2], requires_grad=True)
    loss = losses.npo(nll, torch.tensor([1.0]), beta=2.0)
    assert loss.item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    loss.backward()
    # d/dnll = -2 (1 - sigmoid) = -2 * 1/4: minimising raises the forget NLL, and saturates
    assert nll.grad.item() == pytest.approx(-0.5, abs=1e-6)


def test_simnpo_values():
    # beta=2, gamma=0, mean nll = ln3/2 -> ln(4/3); with gamma=1 the same value needs nll = (ln3 + 1)/2
    assert losses.simnpo(torch.tensor([LN3 / 2]), beta=2.0, gamma=0.0).item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    assert losses.simnpo(torch.tensor([(LN3 + 1) / 2]), beta=2.0, gamma=1.0).item() == pytest.approx(math.log(4 / 3), abs=1e-6)


def test_kl_to_reference_by_hand():
    model = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])  # p = (1/2, 1/2) at the scored position
    ref = torch.tensor([[[LN3, 0.0], [0.0, 0.0]]])  # q = (3/4, 1/4)
    labels = torch.tensor([[-100, 1]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.kl_to_reference(model, ref, labels).item() == pytest.approx(expected, abs=1e-6)
    assert losses.kl_to_reference(ref, ref, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_rmu_terms_by_hand():
    forget_hidden = torch.tensor([[[1.0, 3.0], [100.0, 100.0]]])  # second token is padding
    control = torch.tensor([1.0, 1.0])
    retain_hidden = torch.tensor([[[2.0, 2.0], [9.0, 9.0]]])
    ref_retain = torch.zeros(1, 2, 2)
    forget, retain = losses.rmu(
        forget_hidden, torch.tensor([[1, 0]]), control, retain_hidden, ref_retain, torch.tensor([[1, 1]]), alpha=2.0
    )
    assert forget.item() == pytest.approx((0 + 4) / 2)  # mean over features of (h - c)^2, padding ignored
    assert retain.item() == pytest.approx(2.0 * (4 + 81) / 2)


def _fwd(logits=LOGITS, labels=LABELS, hidden=None):
    return Forward(logits, labels, (labels != -100).long() | 1, hidden)


def test_table_rows_combine_terms_with_config_weights():
    cfg = ForgetConfig(retain_weight=0.5, npo_beta=1.0, simnpo_beta=2.0, simnpo_gamma=0.0)
    retain = _fwd(LOGITS, torch.tensor([[-100, 1, 0], [-100, 1, 0]]))
    retain_nll = math.log(8 / 3) / 2
    inputs = Inputs(forget=_fwd(), retain=retain, ref_forget=_fwd())
    assert OBJECTIVES["grad_ascent"].loss(inputs, cfg)["loss"].item() == pytest.approx(-NLL_MEAN.mean().item(), abs=1e-6)
    gd = OBJECTIVES["grad_diff"].loss(inputs, cfg)
    assert gd["loss"].item() == pytest.approx(-NLL_MEAN.mean().item() + 0.5 * retain_nll, abs=1e-6)
    npo = OBJECTIVES["npo"].loss(inputs, cfg)  # model == reference: NPO term is 2 ln 2
    assert npo["npo"].item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert npo["loss"].item() == pytest.approx(2 * math.log(2) + 0.5 * retain_nll, abs=1e-6)
    idk = OBJECTIVES["idk"].loss(inputs, cfg)
    assert idk["loss"].item() == pytest.approx(NLL_MEAN.mean().item() + 0.5 * retain_nll, abs=1e-6)
    sim = OBJECTIVES["simnpo"].loss(inputs, cfg)
    assert sim["simnpo"].item() == pytest.approx(losses.simnpo(NLL_MEAN, 2.0, 0.0).item(), abs=1e-6)


def test_kl_regulariser_is_added_to_any_method_and_requests_its_inputs():
    plain, with_kl = ForgetConfig(method="grad_ascent"), ForgetConfig(method="grad_ascent", kl_weight=3.0)
    ga = OBJECTIVES["grad_ascent"]
    assert required_inputs(ga, plain) == frozenset()
    assert required_inputs(ga, with_kl) == {RETAIN, REF_RETAIN}
    ref = _fwd(torch.tensor([[[LN3, 0.0], [0.0, 0.0], [0.0, 0.0]]] * 2))
    inputs = Inputs(forget=_fwd(), retain=_fwd(), ref_retain=ref)
    base = total_loss(ga, inputs, plain)["loss"].item()
    terms = total_loss(ga, inputs, with_kl)
    kl = losses.kl_to_reference(LOGITS, ref.logits, LABELS).item()
    assert kl > 0
    assert terms["retain_kl"].item() == pytest.approx(kl)
    assert terms["loss"].item() == pytest.approx(base + 3.0 * kl, abs=1e-6)


def test_rmu_row_and_control_vector():
    cfg = ForgetConfig(method="rmu", rmu_steering_coeff=4.0, rmu_alpha=1.0)
    rmu = OBJECTIVES["rmu"]
    state = rmu.prepare(8, cfg, torch.Generator().manual_seed(0))
    assert state["control"].norm().item() == pytest.approx(4.0, rel=1e-5)
    again = rmu.prepare(8, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(state["control"], again["control"])  # seeded: reproducible
    h = torch.zeros(1, 2, 8)
    fwd = Forward(LOGITS[:1], LABELS[:1], torch.ones(1, 2, dtype=torch.long), h)
    terms = rmu.loss(Inputs(forget=fwd, retain=fwd, ref_retain=fwd, state=state), cfg)
    assert terms["rmu_forget"].item() == pytest.approx(16.0 / 8, rel=1e-5)  # |c|^2 / hidden size
    assert terms["rmu_retain"].item() == 0.0


def test_every_row_declares_its_needs():
    assert REF_FORGET in OBJECTIVES["npo"].needs
    assert REF_FORGET not in OBJECTIVES["simnpo"].needs  # reference-free
    assert {IDK_TARGETS, QA_ONLY} <= OBJECTIVES["idk"].needs
    assert {HIDDEN, REF_RETAIN} <= OBJECTIVES["rmu"].needs
    assert OBJECTIVES["grad_ascent"].needs == frozenset()
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and objective.summary
