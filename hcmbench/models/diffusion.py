"""Denoising diffusion (DDPM) with DDIM and DPM-Solver++ sampling and classifier-free guidance.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020: a UNet learns to predict
the noise ε in x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε for uniform t (MSE), and images are drawn by ancestral
sampling from x_T ~ N(0, I). Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021:
a non-Markovian sampler over a few of the T steps, deterministic for η = 0. Ho & Salimans,
"Classifier-Free Diffusion Guidance", 2022: one network learns the conditional and (with the label
dropped to a null class) the unconditional noise, and sampling extrapolates between them,
ε = ε_∅ + w·(ε_c − ε_∅). Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models",
ICML 2021: the cosine schedule, and sampling a subsequence of the T steps (respacing).

Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022: the
network may predict v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 instead of ε (`prediction="v"`). Hang et al., "Efficient
Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023: each sample's loss weighted by
min(SNR_t, γ)/SNR_t (ε) or min(SNR_t, γ)/(SNR_t + 1) (v), SNR_t = ᾱ_t/(1−ᾱ_t), which is min(SNR_t, γ)
times the x_0 error in both parameterisations. Lu et al., "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models", 2022: the second-order multistep solver DPM-Solver++(2M).

As in diffusers, the pieces are separate: `NoiseSchedule` (β, ᾱ, forward noising, v and SNR), `UNet`
(the network), `split_prediction` (the network's output → x̂_0 and ε̂, for either parameterisation)
and three plain sampling loops, `ddpm_loop`, `ddim_loop` and `dpmpp_2m_loop`; `DDPM` ties them together.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError
from hcmbench.models.base import Batch, GenerativeModel, Preset
from hcmbench.models.registry import register

# -- the noise schedule ------------------------------------------------------------------------------


def make_betas(schedule: str, timesteps: int) -> Tensor:
    """β_1..β_T (float64): "linear" from 1e-4 to 0.02 (Ho et al.), or "cosine" (Nichol & Dhariwal).

    For T ≠ 1000 the linear ends are scaled by 1000/T, as in Nichol & Dhariwal's code, so that ᾱ
    follows the same curve and x_T is still nearly pure noise (unscaled, T = 100 would end at ᾱ ≈ 0.37).
    """
    if schedule == "linear":
        scale = 1000 / timesteps
        return torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64).clamp(max=0.999)
    if schedule == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise HcmbenchError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")


class NoiseSchedule(nn.Module):
    """β_t and ᾱ_t = Π(1 − β_s) for t = 0..T−1, and the forward process q(x_t | x_0).

    The tensors are non-persistent buffers: they follow the model across devices but stay out of
    checkpoints, which rebuild them exactly from (schedule, timesteps).
    """

    def __init__(self, schedule: str = "linear", timesteps: int = 1000) -> None:
        super().__init__()
        betas = make_betas(schedule, timesteps)
        self.timesteps = timesteps
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·noise, with one timestep per image in `t` (B,)."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The v-prediction target v = √ᾱ_t·noise − √(1−ᾱ_t)·x_0 (Salimans & Ho), one t per image."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0

    def snr(self, t: Tensor) -> Tensor:
        """The signal-to-noise ratio SNR_t = ᾱ_t/(1−ᾱ_t) at each timestep of `t`."""
        alpha_bar = self.alphas_cumprod[t]
        return alpha_bar / (1 - alpha_bar)


def split_prediction(output: Tensor, x: Tensor, alpha_bar: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network's `output` at (x_t = `x`, ᾱ_t = `alpha_bar`), neither clipped.

    "eps": ε̂ = output, x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ. "v": x̂_0 = √ᾱ·x_t − √(1−ᾱ)·v̂ and
    ε̂ = √(1−ᾱ)·x_t + √ᾱ·v̂, the inverse of x_t = √ᾱ·x_0 + √(1−ᾱ)·ε, v = √ᾱ·ε − √(1−ᾱ)·x_0.
    Both are affine in the output with the same x_t term, so a combination of outputs whose weights
    sum to one (classifier-free guidance) is the same combination of the x̂_0 and of the ε̂.
    """
    if prediction == "eps":
        return (x - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt(), output
    if prediction == "v":
        signal, noise = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        return signal * x - noise * output, noise * x + signal * output
    raise HcmbenchError(f"prediction must be 'eps' or 'v', got {prediction!r}")


def min_snr_weights(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """Hang et al.'s per-sample loss weights: min(SNR, γ)/SNR for ε-prediction (written min(1, γ/SNR),
    finite at SNR = 0), min(SNR, γ)/(SNR + 1) for v-prediction."""
    if prediction == "eps":
        return (gamma / snr).clamp(max=1.0)
    return snr.clamp(max=gamma) / (snr + 1)


# -- the network ---------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of (B,) timesteps → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    """At most 32 groups of at least 4 channels: with one channel per group (instance norm), each
    image's mean brightness would be erased, and the network could not reproduce it."""
    return nn.GroupNorm(math.gcd(32, max(channels // 4, 1)), channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so that a residual branch starts as the identity (as Ho et al.)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C) each
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj(out)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → GroupNorm, scaled and shifted by the embedding, → SiLU → dropout →
    conv, added to the (1×1-projected) input; optionally followed by self-attention.

    The embedding enters after the second normalisation (Nichol & Dhariwal's scale-shift norm), not
    as a bias before it as in Ho et al.: a GroupNorm with one channel per group would erase a bias.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = group_norm(out_ch)
        self.conv2 = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attention = Attention(out_ch) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(self.conv1(x)) * (1 + scale) + shift
        return self.attention(self.skip(x) + self.conv2(h))


class Resample(nn.Module):
    """Halve the resolution (strided conv) or double it (nearest neighbour, then conv)."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class UNet(nn.Module):
    """Ho et al.'s network: (x_t (B,1,S,S), t (B,), labels (B,) or None) → ε̂ or v̂ (B,1,S,S).

    One resolution level per entry of `channel_mults` (width base·mult), each with `num_res_blocks`
    residual blocks and, between levels, a strided-conv down / nearest+conv up step. Every block and
    downsampling output of the encoder is kept and concatenated into the decoder, whose levels have one
    block more to take them all. Self-attention follows the blocks at `attention_resolutions` and in
    the middle. With `num_classes`, a class embedding (row `num_classes` = the null class) is added to
    the time embedding. Timesteps are embedded on a 0..1000 scale whatever T is (as Nichol & Dhariwal's
    `rescale_timesteps`), so that the sinusoid frequencies cover the range of t for small T too.
    On CPU the feature maps are kept channels-last, which changes only the rounding (and the time).
    """

    def __init__(self, image_size: int = 64, base_channels: int = 64, channel_mults: tuple[int, ...] = (1, 2, 2, 2),
                 attention_resolutions: tuple[int, ...] = (16, 8), num_res_blocks: int = 2, dropout: float = 0.1,
                 num_classes: int = 0, timesteps: int = 1000) -> None:
        super().__init__()
        emb_dim = 4 * base_channels
        self.base_channels, self.timesteps = base_channels, timesteps
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(1, base_channels, 3, padding=1)

        ch, res, skips = base_channels, image_size, [base_channels]
        self.downs = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.downs.append(ResBlock(ch, base_channels * mult, emb_dim, dropout, res in attention_resolutions))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.downs.append(Resample(ch, up=False))
                res //= 2
                skips.append(ch)

        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, attention=True),
                                     ResBlock(ch, ch, emb_dim, dropout)])

        self.ups = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.ups.append(ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, dropout,
                                         res in attention_resolutions))
                ch = base_channels * mult
            if level > 0:
                self.ups.append(Resample(ch, up=True))
                res *= 2

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_(nn.Conv2d(ch, 1, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t * (1000 / self.timesteps), self.base_channels))
        if self.class_emb is not None:
            emb = emb + self.class_emb(labels)
        h = self.conv_in(x)
        if h.device.type == "cpu":  # oneDNN's convolutions run faster on channels-last feature maps
            h = h.contiguous(memory_format=torch.channels_last)
        skips = [h]
        for layer in self.downs:
            h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.ups:
            if isinstance(layer, ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb)
        return self.out(h)


# -- the samplers --------------------------------------------------------------------------------

ModelOutput = Callable[[Tensor, Tensor], Tensor]  # (x_t (B,...), t (B,)) → the network's ε̂ or v̂


def spaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` timesteps evenly spaced from T−1 down to 0 (all of them when steps == T)."""
    return torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def ddpm_loop(model_output: ModelOutput, schedule: NoiseSchedule, x: Tensor, timesteps: list[int],
              rng: torch.Generator | None, prediction: str = "eps") -> Tensor:
    """Ancestral sampling (Ho et al. Alg. 2): x_{t'} ~ q(x_{t'} | x_t, x̂_0) for each step t → t'.

    Over all T steps this is the DDPM posterior with variance β̃_t; over a subsequence it is the same
    posterior with β_t replaced by 1 − ᾱ_t/ᾱ_{t'} (Nichol & Dhariwal's respacing). x̂_0 is clipped to
    the data range [−1, 1]; the last step returns it.
    """
    alphas_cumprod = schedule.alphas_cumprod
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        alpha_bar = alphas_cumprod[t]
        alpha_bar_prev = alphas_cumprod.new_tensor(1.0) if last else alphas_cumprod[timesteps[i + 1]]
        beta = 1 - alpha_bar / alpha_bar_prev
        output = model_output(x, torch.full((len(x),), t, device=x.device))
        x0 = split_prediction(output, x, alpha_bar, prediction)[0].clamp(-1, 1)
        mean = (alpha_bar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)
        if last:
            x = mean
        else:
            variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
            x = mean + variance.sqrt() * torch.randn(x.shape, generator=rng, device=x.device)
    return x


def ddim_loop(model_output: ModelOutput, schedule: NoiseSchedule, x: Tensor, timesteps: list[int],
              eta: float, rng: torch.Generator | None, prediction: str = "eps") -> Tensor:
    """DDIM (Song et al. eq. 12): x_{t'} = √ᾱ_{t'}·x̂_0 + √(1−ᾱ_{t'}−σ²)·ε̂ + σ·z, with
    σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_{t'})); η = 0 draws no noise after x_T.

    x̂_0 is clipped to [−1, 1], and ε̂ recomputed from it so that the two stay consistent.
    """
    alphas_cumprod = schedule.alphas_cumprod
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        alpha_bar = alphas_cumprod[t]
        alpha_bar_prev = alphas_cumprod.new_tensor(1.0) if last else alphas_cumprod[timesteps[i + 1]]
        output = model_output(x, torch.full((len(x),), t, device=x.device))
        x0 = split_prediction(output, x, alpha_bar, prediction)[0].clamp(-1, 1)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        x = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and not last:
            x = x + sigma * torch.randn(x.shape, generator=rng, device=x.device)
    return x


def dpmpp_2m_loop(model_output: ModelOutput, schedule: NoiseSchedule, x: Tensor, timesteps: list[int],
                  prediction: str = "eps") -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): a deterministic multistep solver of the diffusion ODE
    in its data-prediction form, over the half log-SNR λ_t = log(α_t/σ_t), α_t = √ᾱ_t, σ_t = √(1−ᾱ_t).

    From t to t' (h = λ_{t'} − λ_t): x_{t'} = (σ_{t'}/σ_t)·x_t − α_{t'}·(e^{−h} − 1)·D, where D is x̂_0
    at t for the first step (first order) and otherwise (1 + 1/(2r))·x̂_0(t) − 1/(2r)·x̂_0(t_prev), with
    r = h_prev/h, the step's linear extrapolation of x̂_0 from the previous one (second order). The last
    step goes to ᾱ = 1 (σ = 0, λ = ∞) at first order, where the update is x̂_0 itself. x̂_0 is clipped to
    [−1, 1] as in the other loops; the coefficients are computed in double precision.
    """
    alpha_bars = schedule.alphas_cumprod.tolist()
    x0_prev, h_prev = None, 0.0
    for i, t in enumerate(timesteps):
        output = model_output(x, torch.full((len(x),), t, device=x.device))
        x0 = split_prediction(output, x, schedule.alphas_cumprod[t], prediction)[0].clamp(-1, 1)
        if i == len(timesteps) - 1:
            return x0
        alpha_bar, alpha_bar_next = alpha_bars[t], alpha_bars[timesteps[i + 1]]
        h = 0.5 * (math.log(alpha_bar_next / (1 - alpha_bar_next)) - math.log(alpha_bar / (1 - alpha_bar)))
        if x0_prev is None:
            d = x0
        else:
            half_inverse_r = h / (2 * h_prev)  # 1/(2r)
            d = (1 + half_inverse_r) * x0 - half_inverse_r * x0_prev
        x = math.sqrt((1 - alpha_bar_next) / (1 - alpha_bar)) * x - math.sqrt(alpha_bar_next) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


# -- the model -----------------------------------------------------------------------------------

PREDICTIONS = ("eps", "v")
LOSS_WEIGHTINGS = ("none", "min_snr")
SAMPLERS = ("ddpm", "ddim", "dpm++")
DEFAULT_STEPS = {"ddim": 50, "dpm++": 20}  # "ddpm": all T
PRECISIONS = ("fp32", "bf16")  # the network's arithmetic while sampling; the samplers' stays float32

# On CPU, `sample` and `validation_score` run the network on micro-batches of at most this many
# full-resolution activation values (images × base channels × pixels: 8 images of 64 px at 32
# channels). A batch of 64 such images makes feature maps of 32-100 MB, above glibc's largest mmap
# threshold (32 MiB), which malloc maps and unmaps anew for every tensor: the page faults then took
# as much system time as the arithmetic took user time. Micro-batches of 8 cut the system time to
# about a tenth of the user time, and the user time a little too.
CPU_CHUNK_ELEMENTS = 2**20


@register("ddpm")
class DDPM(GenerativeModel):
    """Diffusion model predicting v (default) or ε; class-conditional with classifier-free guidance.

    `prediction` "v" or "eps" chooses what the network predicts; `loss_weighting` "min_snr" (default:
    per-sample weights min(SNR_t, γ)/SNR_t for ε, min(SNR_t, γ)/(SNR_t + 1) for v, γ = `snr_gamma`) or
    "none" (plain MSE of that prediction). `class_conditional=True` (needs num_classes ≥ 2) adds a class
    embedding, drops labels to the null class with probability `p_uncond` in training, and guides
    sampling with `guidance_scale` (1.0: plain conditional; > 1: stronger class adherence). `sample`
    options: sampler "ddpm" (ancestral, `steps` of the T, default all), "ddim" (`steps`, default 50,
    and `eta`, default 0) or "dpm++" (DPM-Solver++(2M), `steps`, default 20); when none is named,
    `default_sampler`. v-prediction with min-SNR weighting is the default because, on real ACDC HCM
    with the same network and 10 kimg, it reached FID 16.0 where ε-prediction reached 118.7
    (docs/results.md).
    """

    default_epochs = 115
    presets = {"cpu": Preset(
        "sized for 2 CPU cores: a 32-channel UNet with one residual block per level and attention at 8 px, "
        "v-prediction with min-SNR weighting, 18 kimg at batch 8 (about 20 minutes), validated every kimg",
        model={"base_channels": 32, "num_res_blocks": 1, "attention_resolutions": (8,), "prediction": "v",
               "loss_weighting": "min_snr"},
        train={"batch_size": 8, "kimg": 18, "tick_kimg": 1, "patience": 20})}
    sample_options = ("sampler", "steps", "guidance_scale", "eta", "precision")

    @property
    def default_sampler(self) -> str:
        """The sampler `sample` uses when none is named: ancestral sampling over all T steps. The faster
        samplers stay options until one scores within 10 % of it: on real ACDC HCM (docs/results.md, "The
        DDPM ... and the samplers", the `cpu` preset at 18 kimg, 120 images, 3 seeds) ancestral sampling
        was 0.71 ± 0.07 detectable with FID 17.4, DPM-Solver++(2M) over 20 steps 0.88 ± 0.01 with FID 20.3
        at about a fiftieth of the time, DDIM over 50 steps 0.90 ± 0.02 with FID 23.6."""
        return "ddpm"

    @property
    def preview_options(self) -> dict[str, Any]:  # type: ignore[override]
        """The engine's epoch grids: ancestral sampling respaced to 100 steps (all of them when T < 100)
        looks like the full 1000-step chain at a tenth of the cost, while DDIM shows saturated noise
        until the model is well trained."""
        return {"sampler": "ddpm", "steps": min(100, self.schedule.timesteps)}

    def __init__(self, image_size: int = 64, num_classes: int = 0, schedule: str = "linear", timesteps: int = 1000,
                 base_channels: int = 64, channel_mults: tuple[int, ...] = (1, 2, 2, 2),
                 attention_resolutions: tuple[int, ...] = (16, 8), num_res_blocks: int = 2, dropout: float = 0.1,
                 class_conditional: bool = False, p_uncond: float = 0.1, guidance_scale: float = 2.0,
                 prediction: str = "v", loss_weighting: str = "min_snr", snr_gamma: float = 5.0) -> None:
        super().__init__()
        channel_mults, attention_resolutions = tuple(channel_mults), tuple(attention_resolutions)
        bottom = image_size / 2 ** (len(channel_mults) - 1)
        checks = [
            (timesteps >= 2, f"timesteps must be at least 2, got {timesteps}"),
            (base_channels >= 1 and num_res_blocks >= 1, "base_channels and num_res_blocks must be positive"),
            (len(channel_mults) >= 1 and min(channel_mults) >= 1, f"channel_mults must be positive, got {channel_mults}"),
            (bottom == int(bottom) and bottom >= 4,
             f"{len(channel_mults)} levels halve {image_size} px below 4 px: use fewer channel_mults"),
            (0 <= dropout < 1 and 0 <= p_uncond < 1, "dropout and p_uncond must lie in [0, 1)"),
            (guidance_scale >= 0, f"guidance_scale must be non-negative, got {guidance_scale}"),
            (not class_conditional or num_classes >= 2,
             f"class_conditional needs at least 2 classes, got num_classes={num_classes}"),
            (prediction in PREDICTIONS, f"prediction must be 'eps' or 'v', got {prediction!r}"),
            (loss_weighting in LOSS_WEIGHTINGS, f"loss_weighting must be 'none' or 'min_snr', got {loss_weighting!r}"),
            (isinstance(snr_gamma, Real) and not isinstance(snr_gamma, bool) and 0 < snr_gamma < math.inf,
             f"snr_gamma must be a positive number, got {snr_gamma!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)
        self.image_size, self.num_classes = image_size, num_classes
        self.conditional = class_conditional
        self.p_uncond, self.guidance_scale = p_uncond, guidance_scale
        self.prediction, self.loss_weighting, self.snr_gamma = prediction, loss_weighting, float(snr_gamma)
        self.cpu_chunk = max(1, CPU_CHUNK_ELEMENTS // (base_channels * channel_mults[0] * image_size**2))
        self.schedule = NoiseSchedule(schedule, timesteps)
        self.unet = UNet(image_size, base_channels, channel_mults, attention_resolutions, num_res_blocks, dropout,
                         num_classes if class_conditional else 0, timesteps)

    def training_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One step on the MSE of the prediction (ε or v), per-sample weighted under min-SNR.

        Logs `noise_mse`, the ε MSE (from v̂ for v-prediction), which compares across settings and with
        `validation_score`; and `loss`, the objective minimised, where that is not the same number.
        """
        images, labels = (v.to(self.device) for v in batch)
        t = torch.randint(0, self.schedule.timesteps, (len(images),), device=self.device)
        noise = torch.randn_like(images)
        x_t = self.schedule.add_noise(images, noise, t)
        if self.conditional:  # classifier-free guidance training: drop labels to the null class
            labels = torch.where(torch.rand(len(labels), device=self.device) < self.p_uncond, self.num_classes, labels)
        output = self.unet(x_t, t, labels if self.conditional else None).float()
        target = noise if self.prediction == "eps" else self.schedule.velocity(images, noise, t)
        if self.loss_weighting == "none":
            loss = F.mse_loss(output, target)
        else:
            weights = min_snr_weights(self.schedule.snr(t), self.snr_gamma, self.prediction)
            loss = (weights * (output - target).pow(2).flatten(1).mean(1)).mean()
        self.optimize(loss, optimizers[0])
        if self.prediction == "eps" and self.loss_weighting == "none":
            return {"noise_mse": loss.item()}
        alpha_bar = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = split_prediction(output.detach(), x_t, alpha_bar, self.prediction)[1]
        return {"noise_mse": F.mse_loss(eps, noise).item(), "loss": loss.item()}

    @torch.no_grad()
    def validation_score(self, val_batches: Iterable[Batch], num_timesteps: int = 10, seed: int = 0) -> float:
        """Noise-prediction (ε) MSE on the validation images, in eval mode, at `num_timesteps` fixed
        timesteps (the midpoints of equal slices of 0..T−1, a stratified version of the training loss)
        with noise from a generator seeded with `seed`; with class conditioning, the true labels are
        used. Fixed noise and timesteps make it change only when the model does. Lower is better.

        A v-predicting model's v̂ is converted to ε̂ first, and no loss weighting is applied, so that
        scores compare across parameterisations and weightings."""
        rng = torch.Generator(device=self.device).manual_seed(seed)
        timesteps = ((torch.arange(num_timesteps) + 0.5) * self.schedule.timesteps / num_timesteps).long()
        total, count = 0.0, 0
        with self.evaluating():
            for images, labels in val_batches:
                images, labels = images.to(self.device).float(), labels.to(self.device)
                for t in timesteps.tolist():
                    noise = torch.randn(images.shape, generator=rng, device=self.device)
                    t_batch = torch.full((len(images),), t, device=self.device)
                    x_t = self.schedule.add_noise(images, noise, t_batch)
                    output = self.network(x_t, t_batch, labels if self.conditional else None)
                    eps = split_prediction(output, x_t, self.schedule.alphas_cumprod[t], self.prediction)[1]
                    total += F.mse_loss(eps, noise, reduction="sum").item()
                    count += noise.numel()
        if count == 0:
            raise HcmbenchError("the validation split is empty: the noise-prediction score needs at least one image")
        return total / count

    def network(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The UNet's output in float32; on CPU in micro-batches of `cpu_chunk` images (see
        CPU_CHUNK_ELEMENTS), which change nothing but the rounding and the time it takes."""
        if x.device.type != "cpu" or len(x) <= self.cpu_chunk:
            return self.unet(x, t, labels).float()
        chunks = zip(x.split(self.cpu_chunk), t.split(self.cpu_chunk),
                     labels.split(self.cpu_chunk) if labels is not None else [None] * len(x))
        return torch.cat([self.unet(*chunk).float() for chunk in chunks])

    def model_output(self, x: Tensor, t: Tensor, labels: Tensor | None = None, guidance_scale: float = 1.0) -> Tensor:
        """The network's ε̂ or v̂ at (x_t, t); with labels and guidance scale w ≠ 1, out_∅ + w·(out_c − out_∅)
        from one doubled batch. The outputs are combined: x̂_0 and ε̂ are affine in them with weights
        that sum to one, so this is the same guidance of ε̂ (and of x̂_0) for either parameterisation."""
        if labels is None or guidance_scale == 1.0:
            return self.network(x, t, labels)
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = self.network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, rng: torch.Generator | None = None,
               sampler: str | None = None, steps: int | None = None, guidance_scale: float | None = None,
               eta: float | None = None, precision: str = "fp32", **unknown: Any) -> Tensor:
        """`n` images (n, 1, S, S) in [−1, 1]: x_T from `rng`, then the chosen sampler's loop.

        sampler "ddpm": ancestral over `steps` timesteps (default T); "ddim": `steps` (default
        min(50, T)) with `eta` (default 0.0); "dpm++": DPM-Solver++(2M), deterministic, over `steps`
        (default min(20, T)); default `default_sampler` (ancestral). `guidance_scale` (conditional models only) defaults to the model setting.
        `precision` "bf16" evaluates the network under bfloat16 autocast (CPU or CUDA; about twice as
        fast on a CPU with AVX-512 BF16), the samplers' own arithmetic staying float32; "fp32" (default)
        does not. Bad options raise HcmbenchError.
        """
        labels = self.check_labels(n, labels)
        sampler = self.default_sampler if sampler is None else sampler
        timesteps, eta, guidance_scale = self._check_sample_options(sampler, steps, guidance_scale, eta, unknown)
        if precision not in PRECISIONS:
            raise HcmbenchError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if precision == "bf16" and self.device.type not in ("cpu", "cuda"):
            raise HcmbenchError(f"precision bf16 needs a CPU or a CUDA device, not {self.device.type}")
        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with self.evaluating(), bf16:
            x = torch.randn((n, 1, self.image_size, self.image_size), generator=rng, device=self.device)
            output = lambda x_t, t: self.model_output(x_t, t, labels, guidance_scale)  # noqa: E731
            if sampler == "ddpm":
                x = ddpm_loop(output, self.schedule, x, timesteps, rng, self.prediction)
            elif sampler == "ddim":
                x = ddim_loop(output, self.schedule, x, timesteps, eta, rng, self.prediction)
            else:
                x = dpmpp_2m_loop(output, self.schedule, x, timesteps, self.prediction)
        return x.float().clamp(-1, 1)

    def _check_sample_options(self, sampler: str, steps: int | None, guidance_scale: float | None,
                              eta: float | None, unknown: dict[str, Any]) -> tuple[list[int], float, float]:
        """Validate `sample`'s options; return the timesteps to visit, η and the guidance scale."""
        T = self.schedule.timesteps
        if unknown:
            raise HcmbenchError(f"unknown sample option(s) {', '.join(sorted(unknown))}: "
                                f"known are {', '.join(self.sample_options)}")
        if sampler not in SAMPLERS:
            raise HcmbenchError(f"sampler must be 'ddpm', 'ddim' or 'dpm++', got {sampler!r}")
        if steps is None:
            steps = min(DEFAULT_STEPS.get(sampler, T), T)
        if isinstance(steps, bool) or not isinstance(steps, Integral) or not 1 <= steps <= T:
            raise HcmbenchError(f"steps must be an integer from 1 to timesteps={T}, got {steps!r}")
        if eta is not None and sampler != "ddim":
            raise HcmbenchError(f"eta is an option of the ddim sampler, not of {sampler!r}")
        eta = 0.0 if eta is None else eta
        if not isinstance(eta, Real) or not 0 <= eta <= 1:
            raise HcmbenchError(f"eta must be a number in [0, 1], got {eta!r}")
        if guidance_scale is not None and not self.conditional:
            raise HcmbenchError("guidance_scale needs a class-conditional model (class_conditional=True)")
        guidance_scale = self.guidance_scale if guidance_scale is None else guidance_scale
        if not isinstance(guidance_scale, Real) or guidance_scale < 0:
            raise HcmbenchError(f"guidance_scale must be a non-negative number, got {guidance_scale!r}")
        return spaced_timesteps(T, int(steps)), float(eta), float(guidance_scale)
