"""One training run of a benchmarked model, through Lightning or as a raw loop.

- :func:`framework_run`: `lightning.Trainer.fit` of the LightningModule for `n` batches (no
  validation, logger, checkpoints or callbacks other than the performance switches), with the
  configured `trainer.precision` and `trainer.gradient_clip_val`.
- :func:`raw_run`: the loop a diffusers user writes by hand around the *same* diffusers network
  (taken out of a freshly built module): forward, loss, `zero_grad`, `backward`, gradient-norm
  clipping, optimiser step (the configured optimiser partial), LR schedule step, EMA step
  (latent prior). Losses follow the modules: `VQModel` encode -> quantiser -> decode with L1 +
  VQ loss; `AutoencoderKL` with L1 + weighted KL; the discrete `Transformer2DModel` with the
  mask-and-replace corruption and bound of :mod:`mdvq.models.discrete_diffusion` (diffusers
  has no forward process, docs/library-facts.md); `UNet2DModel` with `DDPMScheduler.add_noise`,
  v/epsilon target and min-SNR weights.

Both build a fresh module from the same seed and consume the same batches, so their wall time
for `n` batches differs by the framework's per-batch cost (fitted by
:mod:`mdvq.benchmarks.timing`) and a fixed start-up part.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from mdvq.benchmarks.builders import BenchModel, build_module
from mdvq.callbacks.performance import PerformanceSwitches

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
"""`trainer.precision` values a benchmark arm may use."""


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def with_fused(cfg: DictConfig, fused: bool | None) -> DictConfig:
    """A copy of `cfg` whose `model.optimizer.fused` is `fused` (None: unchanged)."""
    if fused is None:
        return cfg
    if not isinstance(fused, bool):
        raise TypeError(f"model.optimizer.fused must be true, false or null, got {fused!r}")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model.optimizer.fused = fused
    return cfg


def framework_run(bm: BenchModel, n: int, device: str = "cpu", precision: str | None = None,
                  channels_last: bool = False, compile: bool = False,
                  fused: bool | None = None, seed: int = 0):
    """Fit a fresh module on the first `n` of `bm.batches` with Lightning; returns the module.

    precision: `trainer.precision` (None: the config's). channels_last / compile: the
    :class:`~mdvq.callbacks.performance.PerformanceSwitches`. fused: `model.optimizer.fused`.
    """
    import lightning as L

    precision = precision or str(bm.cfg.trainer.precision)
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    module = build_module(with_fused(bm.cfg, fused), seed)
    loader = DataLoader(bm.batches[:n], batch_size=None, shuffle=False)
    trainer = L.Trainer(
        accelerator=device, devices=1, max_epochs=1, limit_train_batches=n, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, precision=precision,
        gradient_clip_val=bm.cfg.trainer.get("gradient_clip_val"),
        callbacks=[PerformanceSwitches(channels_last=channels_last, compile=compile)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no val loader", "few workers": intended here
        trainer.fit(module, train_dataloaders=loader)
    _sync(device)
    return module


def _vqvae_loss(module, cfg):
    vq = module.model

    def loss(x, y):
        z = vq.encode(x).latents
        z_q, vq_loss, _ = vq.quantize(z)
        recon = vq.decode(z_q, force_not_quantize=True).sample
        return F.l1_loss(recon, x) + vq_loss

    return vq, loss, None


def _klvae_loss(module, cfg):
    ae = module.model
    kl_weight = float(cfg.model.kl_weight)

    def loss(x, y):
        posterior = ae.encode(x).latent_dist
        recon = ae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / float(x[0].numel())
        return F.l1_loss(recon, x) + kl_weight * kl

    return ae, loss, None


def _vqdiffusion_loss(module, cfg):
    net, diffusion = module.transformer, module.diffusion
    hp = cfg.model
    T = diffusion.num_timesteps

    def loss(codes, labels):
        t, p_t = diffusion.sample_timesteps(codes.shape[0], hp.t_sampling)
        t, p_t = t.to(codes.device), p_t.to(codes.device)
        drop = torch.rand(labels.shape, device=labels.device) < hp.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, module.null_class), labels)
        x0 = codes.flatten(1)
        x_t = diffusion.q_sample(x0, t)
        log_x0 = net(x_t, timestep=t, class_labels=labels, return_dict=False)[0]
        terms = diffusion.loss_terms(log_x0, x0, x_t, t)
        aux_w = hp.aux_weight * ((2.0 - t.float() / T) if hp.adaptive_aux else 1.0)
        value = ((terms["vb"] + aux_w * terms["aux"]) / (T * p_t)).mean()
        if hp.t_sampling == "importance":
            diffusion.update_importance(t, terms["vb"])
        return value

    return net, loss, None


def _latentdiffusion_loss(module, cfg):
    from diffusers.training_utils import EMAModel, compute_snr

    unet, sched = module.unet, module.noise_scheduler
    hp = cfg.model
    ema = (EMAModel(unet.parameters(), decay=hp.ema_decay, use_ema_warmup=True,
                    power=hp.ema_power) if hp.ema_decay > 0 else None)

    def loss(z0, labels):
        t = torch.randint(0, sched.config.num_train_timesteps, (z0.shape[0],), device=z0.device)
        drop = torch.rand(labels.shape, device=labels.device) < hp.label_drop_prob
        labels = torch.where(drop, torch.full_like(labels, module.null_class), labels)
        noise = torch.randn_like(z0)
        z_t = sched.add_noise(z0, noise, t)
        v = hp.prediction_type != "epsilon"
        target = sched.get_velocity(z0, noise, t) if v else noise
        mse = (unet(z_t, t, class_labels=labels, return_dict=False)[0] - target).square()
        weight = torch.ones_like(t, dtype=torch.float32)
        if hp.min_snr_gamma:
            snr = compute_snr(sched, t).float()
            weight = snr.clamp(max=float(hp.min_snr_gamma)) / ((snr + 1) if v else snr)
        return (weight * mse.mean(dim=(1, 2, 3))).mean()

    if ema is not None:
        ema.to(device=next(unet.parameters()).device)
    after = (lambda: ema.step(unet.parameters())) if ema is not None else None
    return unet, loss, after


RAW_LOSSES: dict[str, Callable] = {
    "vqvae": _vqvae_loss,
    "klvae": _klvae_loss,
    "vqdiffusion": _vqdiffusion_loss,
    "latentdiffusion": _latentdiffusion_loss,
}
"""Per model: `(module, cfg) -> (network, loss(inputs, labels), after_step or None)`."""


def raw_run(bm: BenchModel, n: int, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """Train the diffusers network of a fresh module for the first `n` of `bm.batches` in a
    plain PyTorch loop (see the module docstring); returns the network."""
    cfg = bm.cfg
    module = build_module(cfg, seed).to(device)
    net, loss_fn, after_step = RAW_LOSSES[bm.name](module, cfg)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = instantiate(cfg.model.optimizer)(params) if cfg.model.get("optimizer") else \
        torch.optim.AdamW(params, lr=1e-3)
    sched = None
    if cfg.model.get("scheduler"):
        sched = instantiate(cfg.model.scheduler)(optimizer=opt, num_training_steps=n)
    clip = cfg.trainer.get("gradient_clip_val")
    for x, y in bm.batches[:n]:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        opt.step()
        if sched is not None:
            sched.step()
        if after_step is not None:
            after_step()
    _sync(device)
    return net


def quiet_logs() -> None:
    """Silence Lightning's per-fit info lines (accelerator, TPU, ...) and diffusers' loading
    advice (accelerate) repeated by every benchmark run."""
    from diffusers.utils import logging as diffusers_logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    diffusers_logging.set_verbosity_error()
