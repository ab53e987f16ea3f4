"""Tests of mdvq.models.discrete_diffusion: schedules, corruption, posterior, loss, samplers."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_vq_diffusion import alpha_schedules, gamma_schedules

from mdvq.models.discrete_diffusion import (
    MaskReplaceDiffusion,
    guided_log_x0,
    log_onehot,
    truncate_log_x0,
)


def dense_step_matrices(k: int, n: int, **sched) -> list[np.ndarray]:
    """Hand-built one-step transition matrices Q_t[i, j] = q(x_t = j | x_{t-1} = i), float64,
    (K+1)x(K+1), from diffusers' own schedule functions (paper eq. 7)."""
    at, _ = alpha_schedules(n, sched.get("alpha_cum_start", 0.99999), sched.get("alpha_cum_end", 0.000009))
    ct, _ = gamma_schedules(n, sched.get("gamma_cum_start", 0.000009), sched.get("gamma_cum_end", 0.99999))
    mats = []
    for a, c in zip(at, ct):
        b = (1 - a - c) / k
        q = np.zeros((k + 1, k + 1))
        q[:k, :k] = b + a * np.eye(k)
        q[:k, k] = c
        q[k, k] = 1.0
        mats.append(q)
    return mats


def reference_posterior(mats, p_x0: np.ndarray, x_t: int, t: int, s: int) -> np.ndarray:
    """sum_x0 p(x0) q(x_s | x_t, x0) by Bayes on dense matrices (x_s over K+1 states)."""
    k = len(p_x0)
    eye = np.eye(mats[0].shape[0])
    q_s = eye.copy()  # q(x_s | x_0): product of steps 0..s
    for m in mats[: s + 1]:
        q_s = q_s @ m
    q_st = eye.copy()  # q(x_t | x_s): steps s+1..t
    for m in mats[s + 1: t + 1]:
        q_st = q_st @ m
    out = np.zeros(k + 1)
    for x0 in range(k):
        joint = q_s[x0, :] * q_st[:, x_t]
        out += p_x0[x0] * joint / joint.sum()
    return out


@pytest.fixture(scope="module")
def diff() -> MaskReplaceDiffusion:
    return MaskReplaceDiffusion(num_codes=6, num_timesteps=12)


def test_schedules_are_the_schedulers(diff):
    sch = diff.scheduler
    n = diff.num_timesteps
    for name in ("log_cumprod_at", "log_cumprod_bt", "log_cumprod_ct"):
        torch.testing.assert_close(getattr(diff, name)[:n], getattr(sch, name)[:n], rtol=0, atol=1e-6)
    torch.testing.assert_close(diff.log_a_st[torch.arange(-1, n - 1) % (n + 1), torch.arange(n)],
                               sch.log_at, rtol=0, atol=1e-5)
    keep, b, c = diff.cumulative(torch.tensor([0, n - 1, -1]))
    assert keep[0] == pytest.approx(0.99999) and c[0] == pytest.approx(9e-6, rel=1e-3)
    assert keep[1] == pytest.approx(9e-6, rel=1e-3) and c[1] == pytest.approx(0.99999)
    assert keep[2] == 1 and b[2] < 1e-20 and c[2] < 1e-20  # t = -1 is x_0 itself


@pytest.mark.parametrize("sched", [{}, {"alpha_cum_end": 0.1, "gamma_cum_end": 0.5}])
def test_forward_corruption_fractions_match_cumulative_schedule(sched):
    k, n, tokens = 8, 100, 40_000
    d = MaskReplaceDiffusion(k, n, **sched)
    g = torch.Generator().manual_seed(0)
    ts = torch.tensor([0, 10, 50, 80, 99])
    x0 = torch.randint(0, k, (len(ts), tokens), generator=g)
    xt = d.q_sample(x0, ts, generator=g)
    keep, b, c = (v.double() for v in d.cumulative(ts))
    masked = (xt == k).double().mean(1)
    same = (xt == x0).double().mean(1)  # kept, or replaced by its own code
    replaced = ((xt != x0) & (xt != k)).double().mean(1)
    for i in range(len(ts)):
        tol = lambda p: 5 * math.sqrt(max(p * (1 - p), 1e-6) / tokens) + 1e-5
        exp_mask, exp_same, exp_repl = c[i], keep[i] + b[i], (k - 1) * b[i]
        assert abs(masked[i] - exp_mask) < tol(exp_mask), (ts[i], masked[i], exp_mask)
        assert abs(same[i] - exp_same) < tol(exp_same), (ts[i], same[i], exp_same)
        assert abs(replaced[i] - exp_repl) < tol(exp_repl), (ts[i], replaced[i], exp_repl)
    if not sched:  # VQ-Diffusion's defaults: t=0 leaves tokens intact, the last step masks ~all
        assert same[0] > 0.9999 and masked[-1] > 0.9999
    else:
        assert replaced[-1] > 0.3  # the replace path is exercised


def test_posterior_matches_diffusers_q_posterior_for_scalar_and_per_sample_t(diff):
    k, n = diff.num_codes, diff.num_timesteps
    g = torch.Generator().manual_seed(1)
    x_t = torch.randint(0, k + 1, (n - 1, 20), generator=g)
    x_t[:, :5] = k  # some masks for sure
    log_x0 = torch.log_softmax(torch.randn(n - 1, k, 20, generator=g) * 3, dim=1)
    ts = torch.arange(1, n)
    ours = diff.log_posterior(log_x0, x_t, ts)
    for i, t in enumerate(ts.tolist()):
        ref = diff.scheduler.q_posterior(log_x0[i:i + 1], x_t[i:i + 1], t)
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=0, atol=1e-4)
        scalar = diff.log_posterior(log_x0[i:i + 1], x_t[i:i + 1], torch.tensor([t]))
        torch.testing.assert_close(scalar, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.exp().sum(1), torch.ones(n - 1, 20), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sched", [{}, {"alpha_cum_end": 0.1, "gamma_cum_end": 0.5}])
def test_multi_step_posterior_matches_bayes_on_dense_matrices(sched):
    k, n = 4, 10
    d = MaskReplaceDiffusion(k, n, **sched)
    mats = dense_step_matrices(k, n, **sched)
    rng = np.random.default_rng(0)
    for t, s in [(9, 4), (9, -1), (5, 4), (3, 0), (7, 2)]:
        for x_t in range(k + 1):
            p = rng.dirichlet(np.ones(k))
            ours = d.log_posterior(torch.log(torch.tensor(p, dtype=torch.float32))[None, :, None],
                                   torch.tensor([[x_t]]), torch.tensor([t]), torch.tensor([s]))
            ref = reference_posterior(mats, p, x_t, t, s)
            np.testing.assert_allclose(ours[0, :, 0].exp().numpy(), ref, atol=2e-4,
                                       err_msg=f"t={t} s={s} x_t={x_t}")


def test_stride_one_step_is_the_schedulers_step(diff):
    k, n = diff.num_codes, diff.num_timesteps
    g = torch.Generator().manual_seed(2)
    x_t = torch.randint(0, k + 1, (3, 30), generator=g)
    log_x0 = torch.log_softmax(torch.randn(3, k, 30, generator=g), dim=1)
    t = 6
    ref = diff.scheduler.step(log_x0, t, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
    from diffusers.schedulers.scheduling_vq_diffusion import gumbel_noised

    logits = diff.log_posterior(log_x0, x_t, torch.full((3,), t), torch.full((3,), t - 1))
    ours = gumbel_noised(logits, torch.Generator().manual_seed(5)).argmax(1)
    assert torch.equal(ours, ref)
    # the posterior is a distribution over the K codes and the mask, and a masked token can
    # only stay masked or be revealed: p(mask at t-1 | x_t unmasked) = 0
    assert n > t and logits.shape == (3, k + 1, 30)
    torch.testing.assert_close(logits.logsumexp(1), torch.zeros(3, 30), atol=1e-4, rtol=0)
    assert (logits[:, k].exp()[x_t < k] < 1e-6).all()
    assert (ours[x_t < k] < k).all() and (ours == k).sum() <= (x_t == k).sum()


@pytest.mark.parametrize("sampler", ["ancestral", "purity"])
@pytest.mark.parametrize("steps", [12, 5, 1])
def test_sampler_with_oracle_returns_x0_from_all_mask_start(diff, steps, sampler):
    k, n = diff.num_codes, diff.num_timesteps
    x0 = torch.randint(0, k, (4, 25), generator=torch.Generator().manual_seed(3))
    seen = []

    def oracle(x_t, t):
        seen.append((t[0].item(), (x_t == k).float().mean().item()))
        return log_onehot(x0, k)

    out = diff.sample(oracle, 4, 25, steps=steps, generator=torch.Generator().manual_seed(0),
                      sampler=sampler)
    assert torch.equal(out, x0)
    assert len(seen) == steps
    assert seen[0] == (n - 1, 1.0)  # starts at t = T-1 from the all-mask state
    assert [s[0] for s in seen] == diff.sampling_timesteps(steps)[:-1]
    assert all(a[0] > b[0] for a, b in pairwise(seen))
    fractions = [s[1] for s in seen]
    assert all(a >= b for a, b in pairwise(fractions))  # masks only ever get revealed
    if steps > 2:  # progressively, not all at once
        assert any(0 < f < 1 for f in fractions[1:])


def test_purity_sampler_reveals_the_scheduled_share_most_confident_first(diff):
    """Tokens 0-4 have a sure prediction, the other 20 a uniform one: the first reveals (one
    step from t = 11 down: round(25 (1 - c~_s)) tokens) fall mostly on the sure tokens."""
    k, n_tok, bsz = diff.num_codes, 25, 400
    sure = torch.zeros(n_tok, dtype=torch.bool)
    sure[:5] = True
    log_p = torch.where(sure, log_onehot(torch.zeros(1, n_tok, dtype=torch.long), k)[0],
                        torch.full((k, n_tok), -math.log(k)))
    seen = []

    def predict(x_t, t):
        seen.append(x_t.clone())
        return log_p.expand(x_t.shape[0], k, n_tok)

    diff.sample(predict, bsz, n_tok, steps=4, generator=torch.Generator().manual_seed(0),
                sampler="purity")
    pts = diff.sampling_timesteps(4)
    revealed = seen[1] != k  # after the first step
    expected = round(n_tok * (1 - float(diff.log_cumprod_ct[pts[1]].exp())))
    assert (revealed.sum(1) == expected).all() and 0 < expected < n_tok
    rate_sure = float(revealed[:, :5].float().mean())  # at random both rates are expected / 25
    rate_unsure = float(revealed[:, 5:].float().mean())
    assert rate_sure > 0.6 and rate_sure > 3 * rate_unsure, (rate_sure, rate_unsure)
    # later steps only add reveals
    assert all(((a != k) <= (b != k)).all() for a, b in pairwise(seen))


def test_truncation_keeps_the_top_mass_hand_checked():
    p = torch.tensor([0.05, 0.5, 0.15, 0.3]).log()[None, :, None]  # (1, K=4, N=1)
    out = truncate_log_x0(p, 0.9).exp()[0, :, 0]
    # sorted 0.5, 0.3, 0.15, 0.05: mass before each 0, 0.5, 0.8, 0.95 -> first three kept
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 0.15, 0.3]) / 0.95)
    top = truncate_log_x0(p, 0.5).exp()[0, :, 0]  # 0.5 is not < 0.5: only the top code
    torch.testing.assert_close(top, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert truncate_log_x0(p, 1.0) is p


def test_truncated_sampling_draws_only_kept_codes(diff):
    k = diff.num_codes
    probs = torch.full((k,), 0.02)
    probs[1], probs[2] = 0.6, 0.3
    probs = probs / probs.sum()
    log_p = probs.log()[None, :, None].expand(64, k, 9)
    out = diff.sample(lambda x, t: log_p, 64, 9, steps=3, truncation=0.8,
                      generator=torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {1, 2}
    free = diff.sample(lambda x, t: log_p, 64, 9, steps=3,
                       generator=torch.Generator().manual_seed(0))
    assert not set(free.unique().tolist()) <= {1, 2}
    with pytest.raises(ValueError, match="truncation must lie in"):
        diff.sample(lambda x, t: log_p, 2, 9, steps=3, truncation=0.0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        diff.sample(lambda x, t: log_p, 2, 9, steps=3, sampler="greedy")


def test_sampling_timesteps_and_errors(diff):
    assert diff.sampling_timesteps(12) == list(range(11, -2, -1))
    assert diff.sampling_timesteps(1) == [11, -1]
    pts = diff.sampling_timesteps(4)
    assert pts[0] == 11 and pts[-1] == -1 and len(pts) == 5
    with pytest.raises(ValueError, match="steps"):
        diff.sampling_timesteps(13)
    with pytest.raises(ValueError, match="t must lie"):
        diff.q_sample(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="s < t"):
        diff.log_posterior(torch.zeros(1, 6, 3), torch.zeros(1, 3, dtype=torch.long),
                           torch.tensor([3]), torch.tensor([3]))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        MaskReplaceDiffusion(4, 1)


def test_loss_terms_hand_checked_values():
    k, n = 8, 20
    d = MaskReplaceDiffusion(k, n)
    x0 = torch.randint(0, k, (1, 50), generator=torch.Generator().manual_seed(0))
    x_t = torch.full_like(x0, k)  # every token masked
    uniform = torch.full((1, k, 50), -math.log(k))
    t = 10
    terms = d.loss_terms(uniform, x0, x_t, torch.tensor([t]))
    # q(x_{t-1} = x0 | x_t = mask, x0) = c_t (a~_{t-1} + b~_{t-1}) / c~_t; the uniform model puts
    # c_t (a~_{t-1}/K + b~_{t-1}) / c~_t there; the mask row and other codes agree almost exactly.
    _, att = alpha_schedules(n)
    ct, ctt = gamma_schedules(n)
    btt = (1 - att - ctt) / k
    c_t = ct[t]
    p_true = c_t * (att[t - 1] + btt[t - 1]) / ctt[t]
    p_model = c_t * (att[t - 1] / k + btt[t - 1]) / ctt[t]
    p_other_true, p_other_model = c_t * btt[t - 1] / ctt[t], c_t * (att[t - 1] / k + btt[t - 1]) / ctt[t]
    expected = p_true * math.log(p_true / p_model) + (k - 1) * p_other_true * math.log(
        p_other_true / p_other_model)
    assert terms["vb"].item() == pytest.approx(expected, rel=1e-3)
    assert terms["aux"].item() == pytest.approx(math.log(k), rel=1e-5)
    assert terms["masked_ce"].item() == pytest.approx(math.log(k), rel=1e-5)
    # a perfect x0 prediction: zero KL, zero CE, all masked tokens right
    perfect = d.loss_terms(log_onehot(x0, k), x0, x_t, torch.tensor([t]))
    assert perfect["vb"].item() < 1e-4 and perfect["aux"].item() < 1e-4
    assert perfect["masked_acc"].item() == 1.0
    # t = 0: the decoder NLL -log p(x0 | x_t) of the prediction
    first = d.loss_terms(uniform, x0, x0.clone(), torch.tensor([0]))
    assert first["vb"].item() == pytest.approx(math.log(k), rel=1e-4)


def test_importance_sampling_follows_sqrt_of_mean_square_loss():
    d = MaskReplaceDiffusion(4, 5)
    t, p = d.sample_timesteps(1000, "importance", torch.Generator().manual_seed(0))
    assert torch.allclose(p, torch.full_like(p, 0.2))  # uniform until every t was seen > 10 times
    for _ in range(12):
        d.update_importance(torch.arange(5), torch.tensor([1.0, 1.0, 4.0, 1.0, 1.0]))
    t, p = d.sample_timesteps(20_000, "importance", torch.Generator().manual_seed(0))
    freq = torch.bincount(t, minlength=5).float() / len(t)
    root = torch.sqrt(d.lt_history).float()  # E[L^2] -> 1 - 0.9^12 of the value
    expected = root / root.sum()
    assert torch.allclose(freq, expected, atol=0.02)
    assert freq[2] > 2.5 * freq[1]
    with pytest.raises(ValueError, match="t_sampling"):
        d.sample_timesteps(3, "nope")


def test_guidance_formula():
    log_c = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).T[None]  # (1, 3, 1)
    log_u = torch.log(torch.tensor([[0.2, 0.4, 0.4]])).T[None]
    assert torch.allclose(guided_log_x0(log_c, log_u, 1.0), log_c, atol=1e-6)
    assert torch.allclose(guided_log_x0(log_c, log_u, 0.0), log_u, atol=1e-6)
    g = guided_log_x0(log_c, log_u, 2.0).exp()[0, :, 0]
    raw = torch.tensor([0.7**2 / 0.2, 0.2**2 / 0.4, 0.1**2 / 0.4])
    assert torch.allclose(g, raw / raw.sum(), atol=1e-6)


def test_prior_loss_is_importance_weighted_with_adaptive_aux(tmp_path, monkeypatch):
    """Once importance sampling is active, the prior's loss is mean(w (L_t + aux_w CE)) with
    w = 1 / (T p_t) and aux_w = aux_weight (2 - t / T), and the logged vb is T mean(w L_t):
    both unbiased estimates whatever p_t is. Hand-computed from fixed per-sample terms."""
    from test_vqdiffusion import save_tiny_vq, tiny_prior

    prior = tiny_prior(save_tiny_vq(tmp_path / "vq"), t_sampling="importance", aux_weight=0.5,
                       adaptive_aux=True, label_drop_prob=0.0)
    d, n = prior.diffusion, prior.diffusion.num_timesteps
    lt2 = torch.arange(1.0, n + 1).double() ** 2  # E[L_t^2] = (t+1)^2: p_t ~ t+1 (t>0), p_0=p_1
    d.lt_history.copy_(lt2)
    d.lt_count.fill_(11)
    weights = torch.sqrt(lt2) + 1e-4
    weights[0] = weights[1]
    p_all = weights / weights.sum()
    bsz = 6
    vb = torch.linspace(0.1, 0.6, bsz)
    aux = torch.linspace(2.0, 1.0, bsz)
    seen = {}

    def fixed_terms(log_x0, x0, x_t, t):
        seen["t"] = t.clone()
        return {"vb": vb, "aux": aux, "masked_ce": aux, "masked_acc": torch.zeros(bsz)}

    monkeypatch.setattr(d, "loss_terms", fixed_terms)
    torch.manual_seed(3)
    codes = torch.randint(0, 8, (bsz, 4, 4))
    loss = prior.training_step((codes, torch.zeros(bsz, dtype=torch.long)), 0)
    t = seen["t"]
    w = 1.0 / (n * p_all[t].float())
    aux_w = 0.5 * (2.0 - t.float() / n)
    torch.testing.assert_close(loss, (w * (vb + aux_w * aux)).mean(), rtol=1e-5, atol=0)
    assert not torch.allclose(w, torch.ones_like(w)), "the weights differ from uniform's 1"
    values, _ = prior._terms(codes, torch.zeros(bsz, dtype=torch.long), t, w)
    torch.testing.assert_close(values["vb"], n * (w * vb).mean(), rtol=1e-5, atol=0)
    # the sampled L_t folded into the running E[L_t^2] (0.9 decay) of their time steps
    once = [i for i in range(bsz) if (t == t[i]).sum() == 1]  # a repeated t is folded twice
    assert once
    for i in once:
        assert d.lt_history[t[i]].item() == pytest.approx(
            0.1 * vb[i].item() ** 2 + 0.9 * lt2[t[i]].item(), rel=1e-6)
