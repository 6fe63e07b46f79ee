"""The batched renderer: many features × ``n`` diverse images optimised together in one batch.

lucent's ``render_vis`` optimises one objective (one feature's ``n`` images) at a time through the
whole network. Here a batch holds several *jobs* — a job is one feature (or its negative) with its
``n`` images — and each step runs one forward pass that stops at the studied layer (``head``) with
frozen weights. Jobs are independent: each has its own parameters, its own loss term and its own
seeded initialisation and transform draws, so a feature's images do not depend on its batch-mates
(up to floating-point rounding in batched kernels) and the same settings and seed give the same images.

A job whose loss or image becomes NaN/Inf is retried alone with a smaller learning rate and flagged
(``retried_lr``); if every retry fails it is flagged ``nonfinite`` and returns no images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from autointerp.vis.kernels import render_mode
from autointerp.vis.objectives import channel_objective, job_losses
from autointerp.vis.param import ImageParam
from autointerp.vis.transforms import TransformSettings, affine_thetas, apply_transforms


@dataclass(frozen=True)
class RenderSettings:
    """How to render. Defaults are Lucid/lucent's (and the study's): FFT + decorrelated colour,
    standard transforms, Adam lr 0.05, 512 steps, 128 px, 4 images with diversity weight 100."""

    n_images: int = 4
    steps: int = 512
    size: int = 128
    lr: float = 0.05
    diversity: float = 1e2
    fft: bool = True
    decorrelate: bool = True
    init_sd: float = 0.01
    transforms: TransformSettings = field(default_factory=TransformSettings)
    max_retries: int = 2
    retry_lr_factor: float = 0.1
    channels_last: bool | None = None  # None: on CUDA only (on CPU it is not faster for InceptionV1)
    fast_kernels: bool = True  # faster equivalent kernels: lucent's redirected ReLU, conv+BN folding
    redirect_relu: bool = True  # Lucid's relu_gradient_override for plain nn.ReLU modules

    def to_json(self) -> dict:
        """Plain-JSON form (for index files)."""
        out = asdict(self)
        out["transforms"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["transforms"].items()}
        return out


@dataclass(frozen=True)
class Job:
    """One feature to visualise: ``sign`` +1 maximises the channel, -1 minimises it (negative vis)."""

    feature: int
    sign: int = 1


@dataclass
class RenderResult:
    """The outcome of one job."""

    job: Job
    seed: int
    images: np.ndarray | None  # (n, S, S, 3) uint8, None when every attempt went non-finite
    objective: list[float]  # mean channel activation of each final image at the render size
    lr: float  # learning rate of the attempt that was kept
    flags: list[str]


def job_seed(seed: int, job: Job) -> int:
    """The seed of one job, derived from the run seed, the feature and the sign."""
    return int(np.random.SeedSequence([seed, job.feature, 0 if job.sign > 0 else 1]).generate_state(1)[0])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) floats in [0, 1] → (B, S, S, 3) uint8."""
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def optimise(
    head: nn.Module,
    jobs: Sequence[Job],
    settings: RenderSettings,
    seed: int,
    lr: float | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise ``len(jobs) × n_images`` images in one batch (``head`` should be in render mode).

    Returns the final images ``(B, 3, S, S)`` in [0, 1] (job-major, on the CPU) and a bool ``(J,)``
    mask of jobs that stayed finite throughout.
    """
    n, size, steps = settings.n_images, settings.size, settings.steps
    tf = settings.transforms
    inits, draws = [], []
    for job in jobs:
        rng = np.random.default_rng(job_seed(seed, job))
        inits.extend(ImageParam.draw_init(rng, size, settings.fft, settings.init_sd) for _ in range(n))
        draws.append(tf.draw(rng, steps, n))
    device = torch.device(device)
    param = ImageParam(inits, size, settings.fft, settings.decorrelate).to(device)
    thetas = affine_thetas(torch.from_numpy(np.concatenate(draws, axis=1)).to(device), size, tf.pad)
    channels = torch.tensor([j.feature for j in jobs for _ in range(n)], device=device)
    signs = torch.tensor([float(j.sign) for j in jobs for _ in range(n)], device=device)
    channels_last = settings.channels_last if settings.channels_last is not None else device.type == "cuda"
    opt = torch.optim.Adam(param.parameters(), lr=settings.lr if lr is None else lr)
    finite = torch.ones(len(jobs), dtype=torch.bool, device=device)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        x = apply_transforms(param(), thetas[step], tf.pad, tf.pad_value)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        acts = head(x).float()
        loss, _ = job_losses(acts, channels, signs, n, settings.diversity)
        finite &= torch.isfinite(loss.detach())
        loss.sum().backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)
    with torch.no_grad():
        final = param()
        finite &= torch.isfinite(final).reshape(len(jobs), -1).all(dim=1)
    return final.detach().cpu(), finite.cpu()


@torch.no_grad()
def channel_activation(
    head: nn.Module,
    images: torch.Tensor,
    channels: Sequence[int],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    reduce: str = "mean",
) -> np.ndarray:
    """Activation of ``channels[i]`` on ``images[i]`` (no transforms): spatial ``mean`` or ``max``."""
    out = []
    ch = torch.as_tensor(list(channels))
    for lo in range(0, len(images), batch_size):
        acts = head(images[lo : lo + batch_size].to(device)).float()
        idx = ch[lo : lo + batch_size].to(acts.device)
        if reduce == "mean":
            out.append(channel_objective(acts, idx).cpu())
        else:
            out.append(acts[torch.arange(len(idx), device=acts.device), idx].flatten(1).amax(dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def render(
    head: nn.Module,
    jobs: Sequence[Job],
    settings: RenderSettings,
    seed: int,
    device: torch.device | str = "cpu",
    on_step: Callable[[int], None] | None = None,
) -> list[RenderResult]:
    """Render ``jobs`` in one batch; retry non-finite jobs with a smaller learning rate.

    ``head`` maps images in [0, 1] to the layer activation; it is put in render mode here
    (frozen weights, fast kernels; channels-last on CUDA) and restored afterwards.
    """
    device = torch.device(device)
    channels_last = settings.channels_last if settings.channels_last is not None else device.type == "cuda"
    results: dict[Job, RenderResult] = {}
    with render_mode(
        head, channels_last=channels_last, fast_kernels=settings.fast_kernels, redirect_relu=settings.redirect_relu
    ):
        pending = list(jobs)
        lr = settings.lr
        for attempt in range(settings.max_retries + 1):
            if attempt:
                lr *= settings.retry_lr_factor
            images, finite = optimise(
                head, pending, settings, seed, lr=lr, device=device, on_step=on_step if attempt == 0 else None
            )
            n = settings.n_images
            keep = [i for i, ok in enumerate(finite.tolist()) if ok]
            if keep:
                rows = torch.cat([images[i * n : (i + 1) * n] for i in keep])
                feats = [pending[i].feature for i in keep for _ in range(n)]
                obj = channel_activation(head, rows, feats, device=device)
                u8 = to_uint8(rows)
                for k, i in enumerate(keep):
                    job = pending[i]
                    results[job] = RenderResult(
                        job,
                        job_seed(seed, job),
                        u8[k * n : (k + 1) * n],
                        [float(v) for v in obj[k * n : (k + 1) * n]],
                        lr,
                        ["retried_lr"] if attempt else [],
                    )
            pending = [job for i, job in enumerate(pending) if i not in set(keep)]
            if not pending:
                break
        for job in pending:
            flags = ["retried_lr", "nonfinite"] if settings.max_retries else ["nonfinite"]
            results[job] = RenderResult(job, job_seed(seed, job), None, [], lr, flags)
    return [results[job] for job in jobs]
