"""Codebook health for the VQ-VAE: a nearest-neighbour quantiser with the usual remedies.

``CodebookQuantizer`` replaces diffusers' ``VectorQuantizer`` during training when any of these
switches is on (each one a key of ``conf/model/codebook/*.yaml``):

- ``kmeans_init``: the codebook starts as k-means centroids of the encoder outputs of the first
  ``kmeans_batches`` training batches (instead of diffusers' uniform(-1/K, 1/K) init).
- ``restart_after_steps`` N: a code not selected (on any rank) in the last N training steps is
  re-seeded from encoder outputs of the current batch (the same "dead code" definition as the
  codebook monitor, docs/metrics.md).
- ``ema_decay``: the codebook follows exponential moving averages of the vectors assigned to
  each code (VQ-VAE paper, appendix) instead of the codebook loss; the encoder still gets the
  commitment term ``commitment_cost * ||z - sg(e)||^2``. EMA codebooks start at data scale
  (kaiming-uniform, as lucidrains' and Sonnet's EMA quantisers); the codebook-loss variants
  keep diffusers' uniform(-1/K, 1/K) start.
- ``cosine``: l2-normalised lookup: codes and inputs live on the unit sphere.
- ``lookup_dim`` d: the nearest-neighbour search runs in a d-dimensional space reached by a
  learned linear projection (and projected back), as in ViT-VQGAN / Improved VQGAN.

Loss convention (the VQ-VAE paper's; docs/library-facts.md): ``codebook_loss = ||sg(z) - e||^2``
(weight 1; zero with EMA updates) and ``commit_loss = commitment_cost * ||z - sg(e)||^2``, means
over all elements, in the lookup space. Gradients pass to the encoder straight-through.

Why not ``vector_quantize_pytorch.VectorQuantize`` as a whole: in learnable mode it puts one
weight on the codebook and commitment terms together, it forbids cosine lookup with a learned
codebook, it decides DDP synchronisation when constructed (before Lightning starts the process
group) and it expires codes by an EMA-count threshold rather than "unused for N steps". mdvq
uses its k-means and its DDP-consistent vector sampling, and writes the rest here.

Under DDP every rank holds the identical codebook after every step: code counts and EMA sums
are all-reduced, k-means and restarts draw the same vectors on every rank, and a learned
codebook gets DDP-averaged gradients. The whole quantiser folds into a plain diffusers
``VQModel`` (:func:`fold_into_vqmodel`): projections merge into ``quant_conv`` /
``post_quant_conv`` and the (normalised) codebook becomes the diffusers codebook, whose
Euclidean lookup selects the same codes (for unit-norm codes it is the cosine lookup).

``levels`` (``conf/model/codebook/fsq*.yaml``) switches to finite scalar quantisation instead
(:class:`FSQQuantizer`, Mentzer et al. 2023, https://arxiv.org/abs/2309.15505): no codebook is
learned, each of ``len(levels)`` dimensions is rounded to one of ``levels[i]`` values, and the
``prod(levels)`` codes all exist by construction (how many the encoder uses is measured, as
for any codebook: docs/fsq.md). It runs vector-quantize-pytorch's ``FSQ``
with ``bound_hard_clamp=True``: there the rounding is the Euclidean nearest point of a grid
(odd and even levels alike; docs/fsq.md), so it folds exactly into a ``VQModel`` whose codebook
is the materialised grid.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import distributed as dist
from vector_quantize_pytorch import FSQ
from vector_quantize_pytorch.vector_quantize_pytorch import (
    kmeans,
    sample_vectors_distributed,
    uniform_init,
)


@dataclass(frozen=True)
class CodebookOptions:
    """The codebook-health switches of a VQ-VAE (``model.codebook`` in the configs).

    ``name`` is a label for tables and sweeps only. All switches off is the plain diffusers
    quantiser (``is_plain``).
    """

    name: str = "plain"
    kmeans_init: bool = False  # k-means init from the first `kmeans_batches` batches
    kmeans_batches: int = 1  # batches of encoder outputs collected for k-means
    kmeans_iters: int = 10  # Lloyd iterations
    restart_after_steps: int = 0  # re-seed codes unused for this many steps (0 = off)
    ema_decay: float | None = None  # EMA codebook updates with this decay (None = codebook loss)
    ema_eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    cosine: bool = False  # l2-normalised lookup
    lookup_dim: int | None = None  # project to this dimension for the lookup (None = code dim)
    levels: tuple[int, ...] | None = None  # FSQ levels per dimension (None = a learned codebook)
    num_codes: int | None = None  # FSQ only: prod(levels), stated for model.num_vq_embeddings
    clamp_gradient: bool = False  # FSQ only: straight-through gradient through the hard clamp
    decorrelation_weight: float | None = None  # FSQ only: penalty on correlated FSQ dimensions (None = off)

    @property
    def is_fsq(self) -> bool:
        """True when ``levels`` selects finite scalar quantisation (:class:`FSQQuantizer`)."""
        return self.levels is not None

    @property
    def is_plain(self) -> bool:
        """True when no switch is on (diffusers' quantiser is used unchanged)."""
        return not (
            self.is_fsq
            or self.kmeans_init
            or self.restart_after_steps
            or self.ema_decay is not None
            or self.cosine
            or self.lookup_dim is not None
        )

    @classmethod
    def from_mapping(cls, options: Mapping | CodebookOptions | None) -> CodebookOptions:
        """Build from a dict / DictConfig (unknown keys and bad values raise ValueError naming
        ``model.codebook.<key>``); None gives the plain options."""
        if options is None:
            return cls()
        if isinstance(options, CodebookOptions):
            return options
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"model.codebook has unknown key(s) {unknown}; valid keys: {sorted(known)}"
            )
        values = {k: options[k] for k in options}
        if values.get("levels") is not None:
            values["levels"] = check_levels(values["levels"])
        opts = cls(**values)
        opts.check()
        return opts

    def check(self) -> None:
        """Raise ValueError naming the ``model.codebook`` key of an impossible value."""
        if self.kmeans_batches < 1:
            raise ValueError(f"model.codebook.kmeans_batches must be >= 1, got {self.kmeans_batches}")
        if self.kmeans_iters < 0:
            raise ValueError(f"model.codebook.kmeans_iters must be >= 0, got {self.kmeans_iters}")
        if self.restart_after_steps < 0:
            raise ValueError(
                "model.codebook.restart_after_steps must be >= 0 (0 = off), "
                f"got {self.restart_after_steps}"
            )
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise ValueError(f"model.codebook.ema_decay must lie in (0, 1) or be null, got {self.ema_decay}")
        if self.lookup_dim is not None and int(self.lookup_dim) < 1:
            raise ValueError(f"model.codebook.lookup_dim must be >= 1 or null, got {self.lookup_dim}")
        if self.levels is None:
            if self.clamp_gradient:
                raise ValueError("model.codebook.clamp_gradient is for FSQ only (set "
                                 "model.codebook.levels)")
            if self.num_codes is not None:
                raise ValueError("model.codebook.num_codes is for FSQ only (set "
                                 "model.codebook.levels, or model.num_vq_embeddings for K)")
            if self.decorrelation_weight:
                raise ValueError("model.codebook.decorrelation_weight is for FSQ only (set "
                                 "model.codebook.levels)")
            return
        weight = float(self.decorrelation_weight or 0.0)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError("model.codebook.decorrelation_weight must be a finite number >= 0 "
                             f"(0 = off), got {self.decorrelation_weight}")
        levels = check_levels(self.levels)
        others = [k for k, on in (
            ("kmeans_init", self.kmeans_init), ("restart_after_steps", self.restart_after_steps),
            ("ema_decay", self.ema_decay is not None), ("cosine", self.cosine),
            ("lookup_dim", self.lookup_dim is not None)) if on]
        if others:
            raise ValueError(
                f"model.codebook.levels (FSQ) has no learned codebook: model.codebook.{others[0]} "
                "cannot be combined with it (switch it off or set model.codebook.levels: null)")
        k = math.prod(levels)
        if self.num_codes is not None and int(self.num_codes) != k:
            raise ValueError(f"model.codebook.num_codes is {self.num_codes} but "
                             f"model.codebook.levels {list(levels)} make {k} codes")

    def as_dict(self) -> dict:
        """Plain dict (for hyperparameters and summaries)."""
        return asdict(self)


MAX_FSQ_CODES = 65536
"""Largest FSQ codebook ``prod(levels)`` accepted: the exported ``VQModel`` materialises the grid
and its lookup computes an ``(N, K)`` distance matrix (FSQ paper's largest: 2**16)."""


def check_levels(levels, key: str = "model.codebook.levels") -> tuple[int, ...]:
    """FSQ ``levels`` as a tuple of ints, or ValueError naming ``key``: a non-empty list of
    integers >= 3 (a level of 2 needs FSQ's symmetric mode, not supported) whose product (the
    number of codes K) is at most :data:`MAX_FSQ_CODES`."""
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise ValueError(f"{key} must be a list of integers >= 3, e.g. [8, 5, 5, 5]; got {levels!r}")
    levels = list(levels)
    if not levels:
        raise ValueError(f"{key} must not be empty: give one level count per dimension, "
                         "e.g. [8, 5, 5, 5] (1000 codes)")
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            if isinstance(v, float) and v.is_integer():
                continue
            raise ValueError(f"{key} must hold integers, got {v!r} in {levels}")
    levels = [int(v) for v in levels]
    if min(levels) < 3:
        raise ValueError(f"{key} must all be >= 3 (got {levels}): a level of 1 holds one "
                         "value, and 2 needs FSQ's symmetric mode, which mdvq does not export")
    k = math.prod(levels)
    if k > MAX_FSQ_CODES:
        raise ValueError(f"{key} {levels} make {k} codes, more than the {MAX_FSQ_CODES} an "
                         "exported VQModel codebook holds here: use fewer or smaller levels")
    return tuple(levels)


PLAIN = CodebookOptions()
"""diffusers' quantiser unchanged (``conf/model/codebook/plain.yaml``)."""

RECOMMENDED = CodebookOptions(
    name="healthy", kmeans_init=True, kmeans_batches=4, restart_after_steps=50, ema_decay=0.99
)
"""The VQ-VAE default (``conf/model/codebook/healthy.yaml``), chosen from the sweep in
``experiments/codebook/``."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor) -> Tensor:
    """Sum over DDP ranks in place (no-op in a single process); returns ``t``."""
    if _distributed():
        dist.all_reduce(t)
    return t


def sample_rows(samples: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` rows drawn from ``samples`` ``(N, d)`` (without replacement when N >= num),
    identical on every DDP rank (drawn from all ranks' samples); ``(num, d)``. In a single
    process the draw comes from ``generator`` (a CPU generator; None = torch's global one)."""
    if _distributed():
        return sample_vectors_distributed(samples[None], num)[0]
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, generator=generator)[:num]
    else:
        idx = torch.randint(0, n, (num,), generator=generator)
    return samples[idx.to(samples.device)]


class CodebookQuantizer(nn.Module):
    """Vector quantiser of ``(B, dim, h, w)`` latents onto ``num_codes`` codes, with the
    codebook-health options of :class:`CodebookOptions` (see the module docstring).

    ``forward`` returns ``(z_q, indices, loss, terms)``: ``z_q`` ``(B, dim, h, w)`` float32 with
    straight-through gradients, ``indices`` ``(B, h, w)`` int64, ``loss`` the scalar
    ``codebook_loss + commit_loss`` and ``terms`` those two parts, detached. The codebook,
    EMA statistics and restart counters change only in training mode.
    """

    def __init__(
        self, dim: int, num_codes: int, commitment_cost: float = 0.25,
        options: CodebookOptions | Mapping | None = None,
    ) -> None:
        super().__init__()
        self.options = opts = CodebookOptions.from_mapping(options)
        self.dim, self.num_codes = int(dim), int(num_codes)
        self.commitment_cost = float(commitment_cost)
        self.lookup_dim = int(opts.lookup_dim) if opts.lookup_dim is not None else self.dim
        self.project_in = self.project_out = None
        if opts.lookup_dim is not None:
            self.project_in = nn.Conv2d(self.dim, self.lookup_dim, 1)
            self.project_out = nn.Conv2d(self.lookup_dim, self.dim, 1)
        k, d = self.num_codes, self.lookup_dim
        self.use_ema = opts.ema_decay is not None
        if self.use_ema:  # data-scale init, as lucidrains' and Sonnet's EMA quantisers
            embed = uniform_init(k, d)
        else:  # diffusers' initialisation: uniform(-1/K, 1/K)
            embed = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        if opts.cosine:
            embed = F.normalize(embed, dim=-1)
        if self.use_ema:
            self.register_buffer("embed", embed)
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("embed_avg", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
        self.register_buffer("initted", torch.tensor(not opts.kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(k, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        # k-means and restarts draw from a generator seeded by (this seed, training step), so a
        # resumed run draws exactly what an uninterrupted one would (the seed follows torch's)
        self.register_buffer("draw_seed", torch.randint(0, 2**31 - 1, ()))
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self._kmeans_pool: list[Tensor] = []

    def get_extra_state(self) -> dict:
        """Checkpointed with the weights: the encoder outputs pooled for a pending k-means init,
        so a run resumed before the init happens initialises exactly as an uninterrupted one."""
        return {"kmeans_pool": [t.cpu() for t in self._kmeans_pool]}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        device = self.embed.device
        self._kmeans_pool = [t.to(device) for t in (state or {}).get("kmeans_pool", [])]

    # ------------------------------------------------------------------------------ lookup
    def codebook(self) -> Tensor:
        """The codes ``(K, d)`` in the lookup space (unit-norm with cosine lookup)."""
        e = self.embed
        return F.normalize(e, dim=-1) if self.options.cosine else e

    def to_lookup(self, z: Tensor) -> Tensor:
        """Latents ``(B, dim, h, w)`` -> lookup vectors ``(B*h*w, d)`` float32."""
        if self.project_in is not None:
            z = self.project_in(z)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        return F.normalize(flat, dim=-1) if self.options.cosine else flat

    def nearest(self, flat: Tensor, codes: Tensor | None = None) -> Tensor:
        """Index ``(N,)`` of the nearest of ``codes`` ``(K, d)`` (default :meth:`codebook`) for
        each row of ``flat`` ``(N, d)``: squared Euclidean, which on the sphere is the largest
        cosine (``|flat|^2`` is the same for every code and left out)."""
        e = (self.codebook() if codes is None else codes).detach().float()
        return (e.square().sum(1)[None] - 2 * flat @ e.t()).argmin(dim=1)

    def from_lookup(self, q: Tensor, shape: tuple[int, int, int]) -> Tensor:
        """Lookup vectors ``(B*h*w, d)`` -> latents ``(B, dim, h, w)``."""
        b, h, w = shape
        z = q.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.project_out(z) if self.project_out is not None else z

    def codes_to_latents(self, indices: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` -> latents ``(B, dim, h, w)`` for the decoder."""
        b, h, w = indices.shape
        return self.from_lookup(self.codebook()[indices.reshape(-1)], (b, h, w))

    # ----------------------------------------------------------------------------- forward
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Quantise ``z`` ``(B, dim, h, w)``; see the class docstring for the outputs."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            b, _, h, w = z.shape
            flat = self.to_lookup(z.float())
            if self.training and not bool(self.initted):
                self._collect_for_kmeans(flat.detach())
            codes = self.codebook()
            idx = self.nearest(flat.detach(), codes)
            q = codes[idx]
            commit = (flat - q.detach()).square().mean()
            if self.use_ema:
                codebook_loss = torch.zeros((), device=z.device)
            else:
                codebook_loss = (q - flat.detach()).square().mean()
            loss = codebook_loss + self.commitment_cost * commit
            if self.training:
                self._update(flat.detach(), idx)
                self.train_steps.add_(1)
            # straight-through in training; the code itself at inference (bit-exact exports)
            q_st = flat + (q - flat).detach() if self.training else q
            z_q = self.from_lookup(q_st, (b, h, w))
        terms = {
            "codebook_loss": codebook_loss.detach(),
            "commit_loss": self.commitment_cost * commit.detach(),
        }
        return z_q, idx.reshape(b, h, w), loss, terms

    # --------------------------------------------------------------------------- updates
    def _generator(self) -> torch.Generator:
        """CPU generator for this training step's random draws (k-means seeds, restarts)."""
        seed = int(self.draw_seed) * 1_000_003 + int(self.train_steps)
        return torch.Generator().manual_seed(seed % (2**63 - 1))

    @torch.no_grad()
    def _collect_for_kmeans(self, flat: Tensor) -> None:
        self._kmeans_pool.append(flat)
        if len(self._kmeans_pool) >= self.options.kmeans_batches:
            self.kmeans_init_(torch.cat(self._kmeans_pool))
            self._kmeans_pool = []

    @torch.no_grad()
    def kmeans_init_(self, samples: Tensor) -> None:
        """Set the codebook to k-means centroids of ``samples`` ``(N, d)`` in the lookup space
        (DDP: centroids of all ranks' samples, identical everywhere); marks it initialised."""
        means, bins = kmeans(
            samples[None].float(), self.num_codes, self.options.kmeans_iters,
            use_cosine_sim=self.options.cosine,
            sample_fn=lambda s, n: sample_rows(s[0], n, self._generator())[None],
            all_reduce_fn=_all_reduce,
        )
        means, bins = means[0], bins[0].float()
        self.embed.data.copy_(means)
        if self.use_ema:
            self.cluster_size.copy_(bins)
            self.embed_avg.copy_(means * bins[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor) -> None:
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        if self.use_ema:
            sums = torch.zeros_like(self.embed_avg).index_add_(0, idx, flat)
            self.ema_update_(_all_reduce(counts), _all_reduce(sums))
        else:
            _all_reduce(counts)
        if self.options.restart_after_steps:
            self.restart_dead_(counts, flat)

    @torch.no_grad()
    def ema_update_(self, counts: Tensor, sums: Tensor) -> None:
        """One EMA step from this step's (all-rank) code ``counts`` ``(K,)`` and assigned-vector
        ``sums`` ``(K, d)``::

            N <- decay * N + (1 - decay) * counts;   m <- decay * m + (1 - decay) * sums
            e <- m / (n * (N + eps) / (n + K * eps)),  n = sum(N)   (Laplace smoothing)
        """
        decay, eps, k = float(self.options.ema_decay), self.options.ema_eps, self.num_codes
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (n + k * eps) * n
        embed = self.embed_avg / smoothed[:, None]
        self.embed.copy_(F.normalize(embed, dim=-1) if self.options.cosine else embed)

    @torch.no_grad()
    def restart_dead_(self, counts: Tensor, flat: Tensor) -> Tensor:
        """Count steps since each code was used (``counts`` ``(K,)`` summed over ranks) and
        re-seed the codes unused for ``restart_after_steps`` steps with vectors drawn from
        ``flat`` ``(N, d)`` (all ranks' vectors under DDP). Returns the restarted mask ``(K,)``."""
        used = counts > 0
        self.steps_unused.add_(1).masked_fill_(used, 0)
        dead = self.steps_unused >= self.options.restart_after_steps
        num_dead = int(dead.sum())
        if num_dead:
            new = sample_rows(flat, num_dead, self._generator()).to(self.embed.dtype)
            if self.options.cosine:
                new = F.normalize(new, dim=-1)
            self.embed.data[dead] = new
            if self.use_ema:
                self.cluster_size[dead] = 1.0
                self.embed_avg[dead] = new
            self.steps_unused[dead] = 0
            self.restarts.add_(num_dead)
        return dead

    # ---------------------------------------------------------------------------- export
    @torch.no_grad()
    def folded(self, quant_conv: nn.Conv2d, post_quant_conv: nn.Conv2d):
        """``(quant_conv', post_quant_conv', codebook)`` equivalent to this quantiser between the
        given 1x1 convolutions, for a diffusers ``VQModel`` with ``vq_embed_dim = d``:
        ``quant_conv' = project_in o quant_conv``, ``post_quant_conv' = post_quant_conv o
        project_out`` and ``codebook`` ``(K, d)`` (unit-norm rows for the cosine lookup)."""
        qc_w, qc_b = quant_conv.weight[:, :, 0, 0], quant_conv.bias
        pq_w, pq_b = post_quant_conv.weight[:, :, 0, 0], post_quant_conv.bias
        if self.project_in is not None:
            pin_w, pin_b = self.project_in.weight[:, :, 0, 0], self.project_in.bias
            qc_w, qc_b = pin_w @ qc_w, pin_w @ qc_b + pin_b
            pout_w, pout_b = self.project_out.weight[:, :, 0, 0], self.project_out.bias
            pq_w, pq_b = pq_w @ pout_w, pq_w @ pout_b + pq_b
        return (qc_w, qc_b), (pq_w, pq_b), self.codebook().detach().clone()


def decorrelation_penalty(u: Tensor) -> Tensor:
    """Mean squared off-diagonal Pearson correlation of the columns of ``u`` ``(N, d)``
    (dimensionless, in [0, 1]; 0 for uncorrelated dimensions, 1 when all are perfectly
    correlated). A constant column counts as uncorrelated. ``d = 1`` gives 0.

    FSQ's joint usage needs its dimensions to vary independently: with the marginal level use of
    the default 8x5x5x5 run, independent dimensions would fill the whole grid, while the measured
    correlations (|r| up to 0.84) leave 45 % of it used (docs/fsq.md)."""
    n, d = u.shape
    if d < 2 or n < 2:
        return u.new_zeros(())
    c = u.float() - u.float().mean(0, keepdim=True)
    std = c.square().mean(0).sqrt().clamp_min(1e-6)
    r = (c.T @ c) / n / (std[:, None] * std[None, :])
    off = r - torch.diag(torch.diagonal(r))
    return off.square().sum() / (d * (d - 1))


class FSQQuantizer(nn.Module):
    """Finite scalar quantisation of ``(B, dim, h, w)`` latents onto ``prod(levels)`` codes:
    vector-quantize-pytorch's ``FSQ(levels, dim, bound_hard_clamp=True)`` (its projections,
    bound, straight-through rounding and index convention; its ``forward`` is not called
    because mdvq keeps the ``(B, C, h, w)`` layout).

    Per lookup dimension i (``len(levels)`` of them, reached by FSQ's learned linear projection
    when ``dim != len(levels)``): ``c_i = round(clamp(z_i + o_i/a_i, -1, 1) * a_i - o_i) / w_i``
    with ``a_i = (L_i - 1)(1 + 1e-3)/2``, ``w_i = L_i // 2``, offset ``o_i = 0.5`` for even
    ``L_i`` (else 0). In the scaled coordinate ``u_i = z_i * a_i / w_i`` that is the nearest of
    the grid values ``k / w_i``, ``k = -(L_i // 2) .. (L_i - 1) // 2`` (the clamp is the nearest
    end value): a Euclidean nearest-neighbour lookup on the materialised grid, which is how
    :meth:`folded` exports it. Index ``sum_i k_i' * prod(L_<i)`` with ``k_i' = k_i + w_i``
    (FSQ's own convention).

    ``forward`` returns ``(z_q, indices, loss, terms)`` as :class:`CodebookQuantizer`: no
    codebook or commitment loss (zeros; ``loss`` is the decorrelation term below, else 0),
    straight-through gradients in training, the exact grid codes (projected back) at
    inference. The hard clamp passes no gradient to latents beyond it; ``clamp_gradient=True``
    passes it straight through in training (the codes, and so the export, are unchanged).
    ``decorrelation_weight`` w > 0 (None or 0 = off) makes the training loss
    ``w * decorrelation_penalty(FSQ inputs)`` (:func:`decorrelation_penalty`, per batch and
    rank, before the clamp; logged as ``decorrelation_loss``); inference and export unchanged.
    """

    def __init__(self, dim: int, levels, clamp_gradient: bool = False,
                 decorrelation_weight: float | None = None) -> None:
        super().__init__()
        self.levels = check_levels(levels)
        self.clamp_gradient = bool(clamp_gradient)
        self.decorrelation_weight = float(decorrelation_weight or 0.0)
        self.dim = int(dim)
        self.lookup_dim = len(self.levels)
        self.fsq = FSQ(list(self.levels), dim=self.dim, bound_hard_clamp=True)
        self.num_codes = int(self.fsq.codebook_size)
        lv = torch.tensor(self.levels, dtype=torch.float32)
        shift = torch.where(lv % 2 == 0, 0.5, 0.0) / ((lv - 1) * (1 + 1e-3) / 2)  # FSQ's o / a
        # the clamp's range for z (inside FSQ: clamp(z + shift, -1, 1)), pulled in by 1e-6 so that
        # FSQ's own clamp passes the gradient; rounding gives the same end values
        self.register_buffer("clamp_lo", -1 - shift + 1e-6, persistent=False)
        self.register_buffer("clamp_hi", 1 - shift - 1e-6, persistent=False)
        # scale of the lookup coordinate u = z * a / w (module docstring)
        self.register_buffer("lookup_scale", (lv - 1) * (1 + 1e-3) / 2 / (lv // 2),
                             persistent=False)

    def grid(self) -> Tensor:
        """The materialised codebook ``(K, len(levels))`` float32: row i is the FSQ code of
        index i, values in [-1, 1]."""
        return self.fsq.implicit_codebook.float()

    def _project_in(self, z: Tensor) -> Tensor:
        """Latents ``(B, dim, h, w)`` -> FSQ inputs ``(B, len(levels), h, w)``."""
        if not self.fsq.has_projections:
            return z
        return self.fsq.project_in(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def _project_out(self, c: Tensor) -> Tensor:
        """Codes ``(B, len(levels), h, w)`` -> latents ``(B, dim, h, w)``."""
        if not self.fsq.has_projections:
            return c
        return self.fsq.project_out(c.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def codes_to_latents(self, indices: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` -> latents ``(B, dim, h, w)`` for the decoder."""
        codes = self.grid()[indices]  # (B, h, w, d); contiguous as diffusers' get_codebook_entry
        return self._project_out(codes.permute(0, 3, 1, 2).contiguous())

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Quantise ``z`` ``(B, dim, h, w)``; see the class docstring for the outputs."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            u = self._project_in(z.float()).permute(0, 2, 3, 1)  # (B, h, w, d)
            loss = torch.zeros((), device=z.device)
            if self.training and self.decorrelation_weight > 0:
                loss = self.decorrelation_weight * decorrelation_penalty(
                    u.reshape(-1, self.lookup_dim))
            if self.training and self.clamp_gradient:  # clamp first, gradient straight through
                u = u + (torch.minimum(torch.maximum(u, self.clamp_lo), self.clamp_hi) - u).detach()
            codes = self.fsq.quantize(u)  # FSQ's bound + straight-through rounding
            idx = self.fsq.codes_to_indices(codes).long()  # (B, h, w)
            if not self.training:  # bit-exact grid codes (what an export decodes)
                codes = self.grid()[idx]
            z_q = self._project_out(codes.permute(0, 3, 1, 2).contiguous())
        zero = torch.zeros((), device=z.device)
        terms = {"codebook_loss": zero, "commit_loss": zero}
        if self.decorrelation_weight > 0:
            terms["decorrelation_loss"] = loss.detach()
        return z_q, idx, loss, terms

    @torch.no_grad()
    def folded(self, quant_conv: nn.Conv2d, post_quant_conv: nn.Conv2d):
        """``(quant_conv', post_quant_conv', codebook)`` for a diffusers ``VQModel`` with
        ``vq_embed_dim = len(levels)`` whose Euclidean lookup reproduces this quantiser:
        ``quant_conv' = diag(a / w) o project_in o quant_conv``, ``post_quant_conv' =
        post_quant_conv o project_out`` and ``codebook = grid()`` (class docstring). Without
        projections the decoder path is bit-identical to the module's."""
        qc_w, qc_b = quant_conv.weight[:, :, 0, 0], quant_conv.bias
        pq_w, pq_b = post_quant_conv.weight[:, :, 0, 0], post_quant_conv.bias
        if self.fsq.has_projections:
            pin, pout = self.fsq.project_in, self.fsq.project_out
            pin_b = pin.bias if pin.bias is not None else torch.zeros(pin.out_features)
            pout_b = pout.bias if pout.bias is not None else torch.zeros(pout.out_features)
            qc_w, qc_b = pin.weight @ qc_w, pin.weight @ qc_b + pin_b
            pq_w, pq_b = pq_w @ pout.weight, pq_w @ pout_b + pq_b
        s = self.lookup_scale.to(qc_w)
        qc_w, qc_b = s[:, None] * qc_w, s * qc_b
        return (qc_w, qc_b), (pq_w, pq_b), self.grid().clone()


def fold_into_vqmodel(model, quantizer: CodebookQuantizer | FSQQuantizer):
    """A new diffusers ``VQModel`` (eval mode) that encodes, quantises and decodes exactly like
    ``model`` with ``quantizer`` in place of its own quantiser (see the quantisers' ``folded``)."""
    from diffusers import VQModel

    config = dict(model.config)
    config["vq_embed_dim"] = quantizer.lookup_dim
    config["num_vq_embeddings"] = quantizer.num_codes
    out = VQModel.from_config(config)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith(("quant_conv.", "post_quant_conv.", "quantize."))}
    (qc_w, qc_b), (pq_w, pq_b), codebook = quantizer.folded(model.quant_conv, model.post_quant_conv)
    state.update({
        "quant_conv.weight": qc_w[:, :, None, None], "quant_conv.bias": qc_b,
        "post_quant_conv.weight": pq_w[:, :, None, None], "post_quant_conv.bias": pq_b,
        "quantize.embedding.weight": codebook,
    })
    out.load_state_dict(state)
    out.quantize.legacy = model.quantize.legacy
    out.quantize.beta = model.quantize.beta
    return out.eval()
