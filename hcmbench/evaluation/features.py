"""The feature space of the distribution-level metrics (FID, KID, precision / recall / density / coverage).

Why not Inception: FID and its relatives compare two sets of images through the statistics of a
network's features. The usual network, Inception-v3 trained on ImageNet photographs, cannot be
downloaded here, and would be a poor fit anyway: its features describe colour photographs of
objects, not grayscale short-axis cine MRI, and distances in them say little about whether a
synthetic slice looks like a plausible heart. hcmbench therefore trains its own small CNN on the
data itself, once per dataset and settings, and caches it.

What it learns, and from what: the *training split* of every ACDC diagnostic group present in the
dataset root (not only the group being generated), preprocessed with the caller's protocol
(DataConfig: size, field of view, frames, clipping, split shares and seed). Splits are by patient,
per group and seeded, so the validation and test patients that a generator is scored against —
HCM's held-out patients included — are never seen by the feature network. It is supervised on
four tasks at once, each a head on one shared `dim`-d embedding:
  - the diagnostic group (NOR, MINF, DCM, HCM, RV; cross-entropy, when at least two are present),
  - the cardiac phase, end-diastole vs end-systole (cross-entropy, when both are among the frames),
  - the slice level from base (0) to apex (1) (`SliceSet.slice_position`; mean squared error),
  - realism: real slices against copies of them damaged by a family of generator artefacts
    (`degradations.py`: noise, blur, intensity curves, transposed-convolution checkerboards, blocky
    upsampling, shuffled patches, uniform noise mixed in), each at a random severity: whether a slice is
    real (binary cross-entropy), how severe its damage is (0 for real slices; mean squared error) and
    which kind it is (cross-entropy). The severity target is what makes distances grow with the strength
    of a damage instead of jumping once it is seen. Without a realism task the space had no reason to
    separate non-images from hearts (uniform noise scored a better FID than a poorly trained GAN); with
    one that knew only noise, blur and shuffled patches, a DCGAN whose samples a classifier tells from
    real patients 99.9 % of the time scored a better FID than real patients. The price: these artefacts
    are in-sample for the space, so `bench/metric_validity.py` checks it on generators it never saw.
Features that separate diagnoses, phases and anatomical levels are what a reader of cardiac MRI
looks at — wall thickness, cavity size, contraction, position along the long axis — so distances in
this space reflect differences a cardiologist would notice; this is the role Inception plays for
photographs. `FeatureExtractor.summary` holds the heads' accuracy on the held-out *validation*
patients (group, phase) and the slice-level error, next to the chance rates, so the space can be
judged before its FID is trusted.

Augmentation is light: random translations of up to ±2 pixels and intensity scaling by 0.9–1.1;
no flips or rotations, since the anatomy has a handedness (the RV lies to one side of the LV).
Inputs are images in [0, 1], the metrics protocol's range; the network maps them to [-1, 1].
Training is seeded and runs on the CPU: the same settings and data give the same weights (on the
same machine and thread count).

Figures from different feature networks (another dataset, size or FeatureConfig) are not comparable;
the cache key names the network, and reports should carry it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.atomic import atomic_path
from hcmbench.config import DataConfig, cache_dir, check_size
from hcmbench.data.acdc import Dataset, open_dataset
from hcmbench.data.slices import SliceSet, load_slices
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.degradations import KINDS, random_degradations

# Bump when the network, its training or the cache file's layout changes, so that old caches are not reused.
FORMAT = 4
PHASES = ("ED", "ES")
SHIFT_PX = 2
INTENSITY_SCALE = (0.9, 1.1)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FeatureConfig:
    """How the feature network is built and trained. Every field enters the cache key."""

    dim: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    # Channels of the first conv block; they double at each downsampling, up to 8 × width.
    width: int = 32
    weight_decay: float = 1e-4
    # Weight of the slice-position MSE (values in [0, 1]) against the two cross-entropies.
    position_weight: float = 4.0
    # Weight of the realism task (real slices against degraded copies, `degradations.KINDS`); 0 turns it off.
    realism_weight: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.dim >= 2, f"dim must be at least 2, got {self.dim}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.width >= 1, f"width must be at least 1, got {self.width}"),
            (self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}"),
            (self.position_weight >= 0, f"position_weight must be non-negative, got {self.position_weight}"),
            (self.realism_weight >= 0, f"realism_weight must be non-negative, got {self.realism_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(math.gcd(8, c_out), c_out), nn.SiLU())


class FeatureNet(nn.Module):
    """A small CNN: image (B, 1, S, S) in [0, 1] → embedding (B, dim), with task heads on the embedding.

    Stride-2 conv blocks (3 × 3 conv, GroupNorm, SiLU) from S down to 4 × 4, channels doubling from
    `width` up to 8 × width, then global average pooling and a linear layer to `dim` (a block at full
    resolution first made CPU training about four times slower). The heads are linear on the embedding:
    group logits (`num_groups` ≥ 2, else none), ED/ES logits (when `phase_head`), slice position.
    GroupNorm keeps no running statistics, so the embedding of an image does not depend on its batch.
    """

    def __init__(self, image_size: int = 64, dim: int = 128, width: int = 32, num_groups: int = 0,
                 phase_head: bool = True, realism_head: bool = True) -> None:
        super().__init__()
        check_size(image_size, "image size")
        layers: list[nn.Module] = [_block(1, width, 2)]
        channels = width
        for _ in range(int(math.log2(image_size // 4)) - 1):
            out = min(channels * 2, width * 8)
            layers.append(_block(channels, out, 2))
            channels = out
        self.body = nn.Sequential(*layers)
        self.project = nn.Linear(channels, dim)
        self.group_head = nn.Linear(dim, num_groups) if num_groups >= 2 else None
        self.phase_head = nn.Linear(dim, len(PHASES)) if phase_head else None
        self.position_head = nn.Linear(dim, 1)
        # realism: real (logit > 0) or degraded; which degradation; how severe (0 for real slices)
        self.realism_head = nn.Linear(dim, 2 + len(KINDS)) if realism_head else None
        self.image_size = image_size
        self.dim = dim

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, 1, S, S) in [0, 1] → embeddings (B, dim)."""
        h = self.body(x * 2.0 - 1.0)
        return self.project(h.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """The embedding and every head's output: `embedding`, `group`, `phase` (logits), `position` (B,)."""
        z = self.embed(x)
        out = {"embedding": z, "position": self.position_head(z).squeeze(1)}
        if self.group_head is not None:
            out["group"] = self.group_head(z)
        if self.phase_head is not None:
            out["phase"] = self.phase_head(z)
        if self.realism_head is not None:
            realism = self.realism_head(z)
            out["realism"], out["severity"], out["kind"] = realism[:, 0], realism[:, 1], realism[:, 2:]
        return out


@dataclass
class FeatureExtractor:
    """A trained FeatureNet and what identifies it: `key` (its cache key), the settings, the image size.

    `summary`: held-out figures measured after training (validation patients of every group):
    `group_accuracy`, `phase_accuracy`, `position_mae` (None where a head or the split is absent),
    the chance rates `group_chance` / `phase_chance` (share of the commonest class), the class names,
    the slice counts and the training time.
    """

    net: FeatureNet
    config: FeatureConfig
    key: str
    image_size: int
    summary: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def dim(self) -> int:
        return self.net.dim

    def embed(self, images: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
        """Embeddings (n, dim), float64, of images (n, S, S) or (n, 1, S, S) in [0, 1].

        Computed in eval mode without gradients, in chunks of `batch_size`. Images of another size, or
        outside [0, 1] (such as a generator's raw [-1, 1] output), raise HcmbenchError.
        """
        x = images.detach().cpu() if isinstance(images, Tensor) else torch.from_numpy(np.asarray(images))
        size = self.image_size
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (size, size):
            raise HcmbenchError(
                f"the feature extractor takes {size}×{size} images, shaped (n, {size}, {size}) or "
                f"(n, 1, {size}, {size}); got shape {tuple(images.shape)}")
        x = x.float()
        if len(x) and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise HcmbenchError(f"images must be finite and in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
        batch_size = max(1, int(batch_size))
        self.net.eval()
        with torch.no_grad():
            chunks = [self.net.embed(x[i:i + batch_size]).double() for i in range(0, len(x), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros((0, self.dim), dtype=torch.float64)


def feature_key(slices_key: str, image_size: int, config: FeatureConfig) -> str:
    """The cache key: a hash of the training data's key, the image size, the settings and FORMAT."""
    content = dict(slices=slices_key, image_size=image_size, config=dataclasses.asdict(config), format=FORMAT)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _labels(slices: SliceSet, groups: list[str], phases: list[str]) -> tuple[Tensor, Tensor, Tensor]:
    """Group and phase indices (-1 where the class is not a head's) and slice positions of a SliceSet."""
    group_index = {g: i for i, g in enumerate(groups)}
    phase_index = {p: i for i, p in enumerate(phases)}
    group = torch.tensor([group_index.get(g, -1) for g in slices.group.tolist()], dtype=torch.long)
    phase = torch.tensor([phase_index.get(p, -1) for p in slices.phase.tolist()], dtype=torch.long)
    return group, phase, torch.from_numpy(slices.slice_position.astype(np.float32))


def _augment(x: Tensor, rng: torch.Generator) -> Tensor:
    """Random integer shifts of ±SHIFT_PX (zero fill) and intensity scaling, per image; x in [0, 1]."""
    n, _, size, _ = x.shape
    shifts = torch.randint(0, 2 * SHIFT_PX + 1, (2, n), generator=rng)
    padded = F.pad(x[:, 0], (SHIFT_PX,) * 4)
    rows = (torch.arange(size)[None, :] + shifts[0][:, None])[:, :, None]
    cols = (torch.arange(size)[None, :] + shifts[1][:, None])[:, None, :]
    shifted = padded[torch.arange(n)[:, None, None], rows, cols]
    low, high = INTENSITY_SCALE
    scale = low + (high - low) * torch.rand(n, 1, 1, generator=rng)
    return (shifted * scale).clamp(0.0, 1.0).unsqueeze(1)


def _losses(out: dict[str, Tensor], group: Tensor, phase: Tensor, position: Tensor,
            config: FeatureConfig) -> Tensor:
    loss = config.position_weight * F.mse_loss(out["position"], position)
    for name, target in (("group", group), ("phase", phase)):
        if name in out and (target >= 0).any():
            loss = loss + F.cross_entropy(out[name], target, ignore_index=-1)
    return loss


def _realism_loss(net: FeatureNet, real: Tensor, out: dict[str, Tensor], rng: torch.Generator) -> Tensor:
    """Real slices against degraded copies of half of them (a random kind and severity each): is it real,
    how severe is the damage (0 for real), and which kind. The severity target is what makes distances
    in the space grow with the strength of a degradation rather than jump once it is detected."""
    fake_images, kinds, severity = random_degradations(real[: max(1, len(real) // 2)], rng)
    fake = net(fake_images)
    logits = torch.cat([out["realism"], fake["realism"]])
    targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake_images))])
    predicted = torch.cat([out["severity"], fake["severity"]])
    return (F.binary_cross_entropy_with_logits(logits, targets)
            + 4.0 * F.mse_loss(predicted, torch.cat([torch.zeros(len(real)), severity]))
            + F.cross_entropy(fake["kind"], kinds))


def _train(train: SliceSet, groups: list[str], phases: list[str], config: FeatureConfig,
           progress: Progress | None = None) -> FeatureNet:
    """Fit a FeatureNet on a training split (seeded; the caller's global RNG state is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = FeatureNet(train.config.size, config.dim, config.width, len(groups), bool(phases),
                         config.realism_weight > 0)
    rng = torch.Generator().manual_seed(config.seed + 1)
    images = torch.from_numpy(np.ascontiguousarray(train.images)).unsqueeze(1)
    group, phase, position = _labels(train, groups, phases)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1)
    net.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=rng)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            real = _augment(images[idx], rng)
            out = net(real)
            loss = _losses(out, group[idx], phase[idx], position[idx], config)
            if net.realism_head is not None:
                loss = loss + config.realism_weight * _realism_loss(net, real, out, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if progress is not None:
            progress(epoch + 1, config.epochs)
    net.eval()
    return net


def _accuracy(logits: Tensor | None, target: Tensor) -> tuple[float | None, float | None]:
    """(accuracy, chance = share of the commonest class) over the labelled items, None when none are."""
    known = target >= 0
    if logits is None or not known.any():
        return None, None
    target = target[known]
    accuracy = (logits[known].argmax(1) == target).double().mean().item()
    return accuracy, torch.bincount(target).max().item() / len(target)


def _summarise(net: FeatureNet, slices: SliceSet, groups: list[str], phases: list[str]) -> dict[str, Any]:
    """Held-out figures of the heads on the validation split (None where there is none)."""
    val = slices.of_split("val")
    summary: dict[str, Any] = dict(
        groups=list(groups), phases=list(phases),
        train_slices=int((slices.split == "train").sum()), val_slices=len(val),
        group_accuracy=None, group_chance=None, phase_accuracy=None, phase_chance=None, position_mae=None,
        realism_accuracy=None)
    if len(val) == 0:
        return summary
    group, phase, position = _labels(val, groups, phases)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(val.images)).unsqueeze(1)
        outs = [net(x[i:i + 256]) for i in range(0, len(x), 256)]
    out = {name: torch.cat([o[name] for o in outs]) for name in outs[0]}
    summary["group_accuracy"], summary["group_chance"] = _accuracy(out.get("group"), group)
    summary["phase_accuracy"], summary["phase_chance"] = _accuracy(out.get("phase"), phase)
    summary["position_mae"] = (out["position"] - position).abs().mean().item()
    if net.realism_head is not None:  # real validation slices against degraded copies of them
        with torch.no_grad():
            fake = torch.cat([net(random_degradations(x[i:i + 256], torch.Generator().manual_seed(i))[0])["realism"]
                              for i in range(0, len(x), 256)])
        summary["realism_accuracy"] = 0.5 * ((out["realism"] > 0).double().mean() + (fake < 0).double().mean()).item()
    return summary


def _read_cache(path: Path, key: str, config: FeatureConfig, image_size: int) -> FeatureExtractor | None:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["format"] != FORMAT or stored["key"] != key:
            return None
        summary = stored["summary"]
        net = FeatureNet(image_size, config.dim, config.width, len(summary["groups"]), bool(summary["phases"]),
                         config.realism_weight > 0)
        net.load_state_dict(stored["state_dict"])
    except Exception:  # noqa: BLE001 - any unreadable or mismatched cache entry is retrained, not an error
        return None
    net.eval()
    return FeatureExtractor(net, config, key, image_size, summary, from_cache=True)


def _write_cache(path: Path, extractor: FeatureExtractor) -> None:
    payload = dict(format=FORMAT, key=extractor.key, image_size=extractor.image_size,
                   config=dataclasses.asdict(extractor.config), summary=extractor.summary,
                   state_dict=extractor.net.state_dict())
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_feature_extractor(
    data_root: str | Path | Dataset,
    data_config: DataConfig,
    config: FeatureConfig = FeatureConfig(),
    progress: Progress | None = None,
    *,
    skip_bad: bool = False,
) -> FeatureExtractor:
    """The feature extractor for a dataset: read from the cache, else trained on it and cached.

    It is trained on the training split of every group present in `data_root`, preprocessed with
    `data_config` (its `groups` are replaced by all present; its size is the extractor's image size).
    The cache file is `cache_dir()/features/<key>.pt`; an unreadable one is retrained over.
    `progress(done, total)` is called once per training epoch. `skip_bad` is passed to load_slices.
    """
    dataset = data_root if isinstance(data_root, Dataset) else open_dataset(data_root, skip_bad=skip_bad)
    all_groups = dataclasses.replace(data_config, groups=dataset.groups_present)
    slices = load_slices(dataset, all_groups, skip_bad=skip_bad)
    size = slices.config.size
    key = feature_key(slices.key, size, config)
    path = cache_dir() / "features" / f"{key}.pt"
    if path.exists():
        cached = _read_cache(path, key, config, size)
        if cached is not None:
            return cached
    train = slices.of_split("train")
    present = set(train.group.tolist())
    groups = [g for g in slices.config.groups if g in present]
    groups = groups if len(groups) >= 2 else []
    phases = list(PHASES) if set(PHASES) <= set(train.phase.tolist()) else []
    started = time.perf_counter()
    net = _train(train, groups, phases, config, progress)
    summary = _summarise(net, slices, groups, phases)
    summary["train_seconds"] = round(time.perf_counter() - started, 2)
    extractor = FeatureExtractor(net, config, key, size, summary)
    _write_cache(path, extractor)
    return extractor
