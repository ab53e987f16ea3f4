"""Mask-and-replace discrete diffusion on code maps (VQ-Diffusion, Gu et al. 2022), in log space.

Tokens are code indices in ``[0, K)``; ``K`` is the mask token. Time steps follow diffusers'
:class:`~diffusers.VQDiffusionScheduler`: ``t = 0 .. T-1`` where ``x_t`` has been corrupted
``t + 1`` times, and ``t = -1`` stands for the clean ``x_0``. One step keeps a token with
probability ``a_t + b_t``, replaces it by each of the K codes with ``b_t`` and masks it with
``c_t``; a mask stays a mask (paper eq. 7). The cumulative values ``a~_t, b~_t, c~_t`` (eq. 8)
are diffusers' ``log_cumprod_at/bt/ct`` (the scheduler's own schedules are used, so training
and sampling agree); index ``T`` of the cumulative tables is the identity (``t = -1``).

:class:`MaskReplaceDiffusion` holds the schedules and provides

- :meth:`~MaskReplaceDiffusion.q_sample`: forward corruption ``x_t ~ q(x_t | x_0)`` with a time
  step per sample,
- :meth:`~MaskReplaceDiffusion.log_posterior`: ``log p(x_s | x_t)`` for ``s < t`` from a
  distribution over ``x_0`` (eq. 11 for ``s = t - 1``; any ``s`` for the strided sampler),
- :meth:`~MaskReplaceDiffusion.loss_terms`: the variational-bound term ``L_t`` (KL, or the
  ``x_0`` NLL at ``t = 0``) and the auxiliary ``x_0`` cross-entropy, in nats per token,
- :meth:`~MaskReplaceDiffusion.sample_timesteps`: uniform or importance-sampled ``t`` (the
  official repository's ``sqrt(E[L_t^2])`` rule),
- :meth:`~MaskReplaceDiffusion.sample`: ancestral sampling from the all-mask state, with
  ``VQDiffusionScheduler.step`` for the full ``T`` steps or the strided sampler for fewer.

Shapes: token maps are flattened to ``(B, N)`` with ``N = h * w``; log-probabilities over
codes are ``(B, K, N)`` (as ``Transformer2DModel`` returns them) and over codes plus mask
``(B, K + 1, N)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import torch
from diffusers import VQDiffusionScheduler
from diffusers.schedulers.scheduling_vq_diffusion import gumbel_noised

LOG_EPS = 1e-30
"""Probability floor inside logarithms (``log(1e-30) ~ -69``), as in VQ-Diffusion."""

T_SAMPLING = ("uniform", "importance")
"""Accepted values of ``t_sampling``."""

SAMPLERS = ("ancestral", "purity")
"""Accepted sampling strategies: ``ancestral`` draws ``x_s ~ p(x_s | x_t)`` (VQ-Diffusion; every
step with ``VQDiffusionScheduler.step`` when ``steps = T``); ``purity`` unmasks the masked
tokens whose ``x_0`` prediction is most confident first (Improved VQ-Diffusion, Tang et al. 2022)."""


def _log(x: np.ndarray) -> torch.Tensor:
    """float64 array -> float32 tensor of ``log(max(x, 1e-30))``."""
    return torch.from_numpy(np.log(np.maximum(np.asarray(x, dtype=np.float64), LOG_EPS))).float()


def log_onehot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, N)`` int64 -> ``(B, num_classes, N)`` float32 log one-hot (zeros as ``log 1e-30``)."""
    out = torch.full((x.shape[0], num_classes, x.shape[1]), math.log(LOG_EPS), device=x.device)
    return out.scatter_(1, x[:, None, :], 0.0)


class MaskReplaceDiffusion(torch.nn.Module):
    """Schedules, forward corruption, posterior, loss and samplers of mask-and-replace diffusion.

    Args:
        num_codes: codebook size K (the mask token is index K).
        num_timesteps: T, the number of diffusion steps.
        alpha_cum_start, alpha_cum_end: cumulative keep probability ``a~`` at ``t = 0`` and
            ``t = T - 1`` (linear in between), as in ``VQDiffusionScheduler``.
        gamma_cum_start, gamma_cum_end: cumulative mask probability ``c~`` at ``t = 0`` and
            ``t = T - 1``. The rest, ``1 - a~ - c~``, is spread uniformly over the K codes.

    ``scheduler`` is the matching diffusers ``VQDiffusionScheduler`` (``num_vec_classes = K +
    1``). The schedules are float32 buffers (not saved: they follow from the arguments), so
    ``.to(device)`` moves them. Pairwise tables ``log_a_st[s, t]`` etc. hold the transition
    ``q(x_t | x_s)`` over several steps (``s`` indexed modulo ``T + 1``, so ``-1`` is ``x_0``).
    """

    def __init__(
        self,
        num_codes: int,
        num_timesteps: int = 100,
        alpha_cum_start: float = 0.99999,
        alpha_cum_end: float = 0.000009,
        gamma_cum_start: float = 0.000009,
        gamma_cum_end: float = 0.99999,
    ) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"num_codes must be at least 2, got {num_codes}")
        if num_timesteps < 2:
            raise ValueError(f"model.num_train_timesteps must be at least 2, got {num_timesteps}")
        for name, lo, hi in (("alpha_cum", alpha_cum_end, alpha_cum_start),
                             ("gamma_cum", gamma_cum_start, gamma_cum_end)):
            if not 0 < lo < hi < 1:
                raise ValueError(f"model.{name}_start/end must lie in (0, 1) with the keep "
                                 f"probability falling and the mask probability rising; got {lo}, {hi}")
        if alpha_cum_start + gamma_cum_start > 1 or alpha_cum_end + gamma_cum_end > 1:
            raise ValueError("model: alpha_cum + gamma_cum must not exceed 1 at either end")
        self.num_codes = int(num_codes)
        self.mask_id = int(num_codes)
        self.num_timesteps = int(num_timesteps)
        self.scheduler = VQDiffusionScheduler(
            num_vec_classes=num_codes + 1,
            num_train_timesteps=num_timesteps,
            alpha_cum_start=alpha_cum_start,
            alpha_cum_end=alpha_cum_end,
            gamma_cum_start=gamma_cum_start,
            gamma_cum_end=gamma_cum_end,
        )
        k, n = float(num_codes), self.num_timesteps
        # Cumulative values as float64 (eq. 8), index n = identity (t = -1), as diffusers builds them.
        t = np.arange(n)
        att = np.concatenate([t / (n - 1) * (alpha_cum_end - alpha_cum_start) + alpha_cum_start, [1.0]])
        ctt = np.concatenate([t / (n - 1) * (gamma_cum_end - gamma_cum_start) + gamma_cum_start, [0.0]])
        btt = (1.0 - att - ctt) / k
        # q(x_t | x_s) for every pair: a = a~_t / a~_s, 1 - c = (1 - c~_t) / (1 - c~_s).
        a_st = att[None, :n] / att[:, None]
        c_st = 1.0 - (1.0 - ctt[None, :n]) / (1.0 - ctt[:, None])
        b_st = (1.0 - a_st - c_st) / k
        self.register_buffer("log_cumprod_at", _log(att), persistent=False)
        self.register_buffer("log_cumprod_bt", _log(btt), persistent=False)
        self.register_buffer("log_cumprod_ct", _log(ctt), persistent=False)
        self.register_buffer("log_a_st", _log(a_st), persistent=False)
        self.register_buffer("log_b_st", _log(b_st), persistent=False)
        self.register_buffer("log_c_st", _log(c_st), persistent=False)
        # Importance sampling of t (official VQ-Diffusion): running E[L_t^2] and counts per t.
        self.register_buffer("lt_history", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("lt_count", torch.zeros(n, dtype=torch.float64))

    # --------------------------------------------------------------------------- schedules
    def cumulative(self, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keep, replace_each, mask)`` = ``(a~_t, b~_t, c~_t)`` probabilities of ``q(x_t | x_0)``.

        ``keep`` is the probability of the original code surviving untouched; a token also
        ends as its own code by a replacement (probability ``b~_t``), so it shows its original
        code with ``a~_t + b~_t``. ``t = -1`` gives ``(1, ~1e-30, ~1e-30)``.
        """
        i = torch.as_tensor(t, device=self.log_cumprod_at.device) % (self.num_timesteps + 1)
        return self.log_cumprod_at[i].exp(), self.log_cumprod_bt[i].exp(), self.log_cumprod_ct[i].exp()

    # --------------------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0)``: mask with ``c~_t``, else a uniform code with ``K b~_t``,
        else keep.

        ``x0`` ``(B, N)`` int64 codes in ``[0, K)``; ``t`` ``(B,)`` int64 in ``[0, T)`` (one step
        per sample). Returns ``(B, N)`` int64 in ``[0, K]`` (``K`` = mask).
        """
        _check_t(t, x0.shape[0], self.num_timesteps)
        _, b, c = self.cumulative(t)
        u = torch.rand(x0.shape, device=x0.device, generator=generator)
        codes = torch.randint(0, self.num_codes, x0.shape, device=x0.device, generator=generator)
        c, kb = c[:, None], (b * self.num_codes)[:, None]
        xt = torch.where(u < c + kb, codes, x0)
        return torch.where(u < c, torch.full_like(x0, self.mask_id), xt)

    # --------------------------------------------------------------------------- posterior
    def log_posterior(
        self,
        log_x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(x_s | x_t) = log sum_x0 q(x_s | x_t, x_0) p(x_0)`` for ``-1 <= s < t``.

        With ``s = t - 1`` (default) this is ``VQDiffusionScheduler.q_posterior`` (eq. 11) with
        one time step per sample; a smaller ``s`` jumps several steps with the transition
        ``q(x_t | x_s)`` (``a = a~_t / a~_s``, ``1 - c = (1 - c~_t) / (1 - c~_s)``), which is the
        strided sampler's step. Computed as
        ``q(x_t | x_s) * sum_x0 q(x_s | x_0) p(x_0) / q(x_t | x_0)``.

        Args:
            log_x0: ``(B, K, N)`` log-probabilities of ``x_0`` (normalised over K).
            x_t: ``(B, N)`` int64 tokens in ``[0, K]``.
            t: ``(B,)`` int64 in ``[0, T)``. s: ``(B,)`` int64 with ``-1 <= s < t`` or None.

        Returns ``(B, K + 1, N)`` log-probabilities of ``x_s`` (row K = mask); for ``s = -1``
        the mask row is ``log 1e-30`` and the code rows equal ``log_x0``.
        """
        bsz, k = x_t.shape[0], self.num_codes
        _check_t(t, bsz, self.num_timesteps)
        s = t - 1 if s is None else s
        if bool(((s < -1) | (s >= t)).any()):
            raise ValueError("log_posterior needs -1 <= s < t for every sample")
        t_i, s_i = t, s % (self.num_timesteps + 1)
        col = (slice(None), None, None)  # (B,) -> (B, 1, 1)
        is_mask = (x_t == self.mask_id)[:, None, :]  # (B, 1, N)
        row = x_t.clamp(max=k - 1)[:, None, :]  # the code row of x_t (any row when masked)
        # Transition rows are constant except at j = x_t, so they stay (B, 1, N) and the x_t
        # entry is patched by gather/scatter instead of building (B, K, N) one-hot tensors.
        # q(x_t | x_0 = j), j < K, cumulative to t: a~ [j = x_t] + b~, or c~ when x_t is masked.
        a, b, c = (v[t_i][col] for v in (self.log_cumprod_at, self.log_cumprod_bt, self.log_cumprod_ct))
        t0_other = torch.where(is_mask, c, b)
        t0_hit = torch.where(is_mask, c, torch.logaddexp(a, b))
        # q(x_t | x_s = j): a [j = x_t] + b for codes, c when x_t is masked; mask -> mask only.
        a, b, c = (v[s_i, t_i][col] for v in (self.log_a_st, self.log_b_st, self.log_c_st))
        ts_other = torch.where(is_mask, c, b)
        ts_hit = torch.where(is_mask, c, torch.logaddexp(a, b))
        ts_mask = torch.where(is_mask, 0.0, math.log(LOG_EPS))
        # p(x_0 = j) / q(x_t | x_0 = j), normalised over j
        q = log_x0 - t0_other
        q = q.scatter(1, row, log_x0.gather(1, row) - t0_hit)
        q_lse = torch.logsumexp(q, dim=1, keepdim=True)
        q = q - q_lse
        # sum_x0 q(x_s | x_0) * (normalised ratio): a~_s q + b~_s for codes, c~_s for the mask,
        # times q(x_t | x_s) and the normaliser.
        a, b, c = (v[s_i][col] for v in (self.log_cumprod_at, self.log_cumprod_bt, self.log_cumprod_ct))
        codes = torch.logaddexp(q + a, b) + (ts_other + q_lse)
        codes = codes.scatter(1, row, codes.gather(1, row) + (ts_hit - ts_other))
        return torch.cat([codes, c + ts_mask + q_lse], dim=1)

    # --------------------------------------------------------------------------- loss
    def loss_terms(self, log_x0_pred: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                   t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample loss terms in nats per token, each ``(B,)``.

        - ``"vb"``: ``L_t``: ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t > 0``, and
          the decoder NLL ``-log p(x_0 | x_t)`` at ``t = 0`` (``sum_t L_t`` bounds ``-log p(x_0)``;
          the prior term ``KL(q(x_T|x_0) || all-mask)`` is ~1e-5 nats and left out).
        - ``"aux"``: auxiliary cross-entropy ``-log p_theta(x_0 | x_t)`` of the clean codes
          (equal to ``vb`` at ``t = 0``, as in the official repository).
        - ``"masked_ce"``: that cross-entropy over masked tokens only (0 where none is masked).
        - ``"masked_acc"``: fraction of masked tokens whose most likely code is right.

        ``log_x0_pred`` ``(B, K, N)``; ``x0`` ``(B, N)`` in ``[0, K)``; ``x_t`` ``(B, N)``;
        ``t`` ``(B,)``. Posteriors are clamped to ``[-70, 0]`` as in the official code.
        """
        log_model = self.log_posterior(log_x0_pred, x_t, t).clamp(-70, 0)
        log_true = self.log_posterior(log_onehot(x0, self.num_codes), x_t, t).clamp(-70, 0)
        kl = (log_true.exp() * (log_true - log_model)).sum(1)  # (B, N)
        nll = -log_model.gather(1, x0[:, None]).squeeze(1)
        ce = -log_x0_pred.gather(1, x0[:, None]).squeeze(1)
        first = (t == 0)[:, None]
        vb = torch.where(first, nll, kl).mean(1)
        aux = torch.where(first, nll, ce).mean(1)
        masked = (x_t == self.mask_id).float()
        count = masked.sum(1).clamp(min=1)
        right = (log_x0_pred.argmax(1) == x0).float()
        return {"vb": vb, "aux": aux, "masked_ce": (ce * masked).sum(1) / count,
                "masked_acc": (right * masked).sum(1) / count}

    # --------------------------------------------------------------------------- time steps
    def sample_timesteps(self, batch_size: int, method: str = "uniform",
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` ``(B,)`` int64 and its probability ``p_t`` ``(B,)`` float32.

        ``"uniform"``: ``p_t = 1 / T``. ``"importance"``: ``p_t ~ sqrt(E[L_t^2])`` (running
        average from :meth:`update_importance`, ``L_0`` replaced by ``L_1``) once every ``t``
        has been seen more than 10 times; uniform before that (official VQ-Diffusion).
        """
        device = self.lt_history.device
        if method not in T_SAMPLING:
            raise ValueError(f"model.t_sampling must be one of {list(T_SAMPLING)}, got {method!r}")
        n = self.num_timesteps
        if method == "importance" and bool((self.lt_count > 10).all()):
            weights = torch.sqrt(self.lt_history + 1e-10) + 1e-4
            weights[0] = weights[1]
            p_all = (weights / weights.sum()).float()
            t = torch.multinomial(p_all, batch_size, replacement=True, generator=generator)
            return t, p_all[t]
        t = torch.randint(0, n, (batch_size,), device=device, generator=generator)
        return t, torch.full((batch_size,), 1.0 / n, device=device)

    @torch.no_grad()
    def update_importance(self, t: torch.Tensor, vb: torch.Tensor) -> None:
        """Fold per-sample ``L_t`` values ``vb`` ``(B,)`` into the running ``E[L_t^2]`` (0.9 decay)."""
        t = t.to(self.lt_history.device)
        lt2 = vb.detach().double().pow(2).to(self.lt_history.device)
        new = 0.1 * lt2 + 0.9 * self.lt_history.gather(0, t)
        self.lt_history.scatter_(0, t, new)
        self.lt_count.scatter_add_(0, t, torch.ones_like(lt2))

    # --------------------------------------------------------------------------- sampling
    def sampling_timesteps(self, steps: int) -> list[int]:
        """The visited time steps, from ``T - 1`` (all-mask start) down to ``-1`` (``x_0``).

        ``steps`` model evaluations, ``steps + 1`` points spaced evenly (rounded):
        ``steps = T`` gives ``T-1, ..., 0, -1`` (every step); fewer steps jump.
        """
        if not 1 <= int(steps) <= self.num_timesteps:
            raise ValueError(f"steps must lie in [1, {self.num_timesteps}] (the training steps), "
                             f"got {steps}")
        pts = np.round(np.linspace(self.num_timesteps - 1, -1, int(steps) + 1)).astype(int)
        return [int(p) for p in pts]

    @torch.no_grad()
    def sample(
        self,
        predict_log_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch_size: int,
        num_tokens: int,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        sampler: str = "ancestral",
        truncation: float = 1.0,
    ) -> torch.Tensor:
        """Sample from the all-mask state; returns ``x_0`` ``(B, N)`` int64 codes.

        ``predict_log_x0(x_t (B, N), t (B,)) -> (B, K, N)`` log ``p(x_0 | x_t)`` (guidance, if
        any, is applied inside it). ``truncation`` < 1 keeps, per token, only the most likely
        codes whose cumulative probability stays below it (:func:`truncate_log_x0`; 1 = off).

        ``sampler="ancestral"``: ``steps`` = ``T`` (or None) runs every step with diffusers'
        ``VQDiffusionScheduler.step``; fewer steps use the strided sampler: from ``t`` to ``s``
        (:meth:`sampling_timesteps`) with :meth:`log_posterior` and the same Gumbel-max draw;
        the last jump (to ``s = -1``) draws ``x_0`` from the prediction, as ``step`` does at
        ``t = 0``. ``sampler="purity"``: :meth:`sample_purity`.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        check_truncation(truncation)
        if truncation < 1.0:
            inner = predict_log_x0

            def predict_log_x0(x, t):  # the truncated prediction
                return truncate_log_x0(inner(x, t), truncation)
        if sampler == "purity":
            return self.sample_purity(predict_log_x0, batch_size, num_tokens, steps, generator,
                                      device)
        device = torch.device(device) if device is not None else self.log_cumprod_at.device
        steps = self.num_timesteps if steps is None else int(steps)
        pts = self.sampling_timesteps(steps)
        x = torch.full((batch_size, num_tokens), self.mask_id, dtype=torch.long, device=device)
        full = steps == self.num_timesteps
        if full:
            self.scheduler.set_timesteps(self.num_timesteps, device=device)
        for t, s in pairwise(pts):
            tt = torch.full((batch_size,), t, dtype=torch.long, device=device)
            log_x0 = predict_log_x0(x, tt)
            if full:
                x = self.scheduler.step(log_x0, t, x, generator=generator).prev_sample
                continue
            if s == -1:
                logits = log_x0
            else:
                logits = self.log_posterior(log_x0, x, tt, torch.full_like(tt, s))
            x = gumbel_noised(logits, generator).argmax(dim=1)
        return x

    @torch.no_grad()
    def sample_purity(
        self,
        predict_log_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch_size: int,
        num_tokens: int,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Purity sampling (Improved VQ-Diffusion): confident tokens are unmasked first.

        Starts from the all-mask state and visits the time steps of :meth:`sampling_timesteps`.
        From ``t`` to ``s`` the share of tokens still masked follows the schedule, ``c~_s``
        (all revealed at ``s = -1``): of the masked tokens, the ``round(N (1 - c~_s))``-th
        revealed count is reached by unmasking those with the highest purity ``max_k p(x_0 = k
        | x_t)``, ranked with Gumbel noise on ``log purity`` (purity-proportional sampling
        without replacement). A revealed token takes a draw from ``p(x_0 | x_t)`` and keeps it;
        the network sees ``x_t`` with the remaining masks at the step ``t`` whose mask share
        they match. Returns ``(B, N)`` int64 codes.
        """
        device = torch.device(device) if device is not None else self.log_cumprod_at.device
        steps = self.num_timesteps if steps is None else int(steps)
        pts = self.sampling_timesteps(steps)
        x = torch.full((batch_size, num_tokens), self.mask_id, dtype=torch.long, device=device)
        for t, s in pairwise(pts):
            tt = torch.full((batch_size,), t, dtype=torch.long, device=device)
            log_x0 = predict_log_x0(x, tt)
            masked = x == self.mask_id
            target = num_tokens if s == -1 else round(
                num_tokens * (1.0 - float(self.log_cumprod_ct[s].exp())))
            reveal = (target - (~masked).sum(1)).clamp(min=0)  # (B,) tokens to unmask now
            draw = gumbel_noised(log_x0, generator).argmax(dim=1)  # (B, N)
            purity = log_x0.max(dim=1).values  # (B, N) log max_k p(x_0 = k)
            u = torch.rand(purity.shape, device=device, generator=generator).clamp(1e-20, 1.0)
            score = torch.where(masked, purity - torch.log(-torch.log(u)), -torch.inf)
            order = score.argsort(dim=1, descending=True).argsort(dim=1)  # rank of each token
            chosen = masked & (order < reveal[:, None])
            x = torch.where(chosen, draw, x)
        return x


def truncate_log_x0(log_x0: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep, per token, the most likely codes whose cumulative probability stays below ``rate``
    (at least the top one) and renormalise; the rest get ``log 1e-30``. As
    ``VQDiffusionPipeline.truncate`` (truncation rate 1 keeps everything). ``log_x0`` ``(B, K,
    N)`` log-probabilities normalised over K."""
    if rate >= 1.0:
        return log_x0
    sorted_log, order = torch.sort(log_x0, dim=1, descending=True)
    keep_sorted = sorted_log.exp().cumsum(dim=1) < rate
    keep_sorted = torch.cat([torch.ones_like(keep_sorted[:, :1]), keep_sorted[:, :-1]], dim=1)
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    out = torch.where(keep, log_x0, torch.full_like(log_x0, math.log(LOG_EPS)))
    return torch.log_softmax(out, dim=1)


def check_truncation(rate: float) -> None:
    """ValueError unless the truncation rate lies in (0, 1] (1 = off)."""
    if not (0.0 < float(rate) <= 1.0):
        raise ValueError(f"truncation must lie in (0, 1] (1 = off), got {rate}")


def guided_log_x0(log_cond: torch.Tensor, log_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on ``x_0`` log-probabilities ``(B, K, N)``:
    ``log p_u + s (log p_c - log p_u)``, renormalised over K (``s = 1``: conditional only,
    ``s = 0``: unconditional)."""
    return torch.log_softmax(log_uncond + scale * (log_cond - log_uncond), dim=1)


def _check_t(t: torch.Tensor, batch: int, num_timesteps: int) -> None:
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_timesteps):
        raise ValueError(f"t must lie in [0, {num_timesteps}), got values outside")
