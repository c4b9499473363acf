"""Detectability: can a classifier tell a set of images from real ones? (a classifier two-sample test)

Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017. A CNN is trained to tell the
candidate images (a generator's samples, or a calibration set) from real training slices, and scored on
images it has not seen: real images of *other patients* (the evaluation's reference, held out from the
generator and from the classifier) against candidate images it was not trained on. The figure is the
balanced accuracy of that test, mean ± std over seeds:

    0.5   the classifier cannot tell the two apart: as real as real patients can be told from each other
    1.0   every image is told apart

Why it is in the table: distances in a feature space (FID, KID, precision / recall) see only what the
space was trained to see. A generator can match every statistic of the space and still leave textures,
checkerboards or intensity curves that no real scanner makes; a classifier trained on the very images
in question finds them. Its strength is the point, so it is not weakened to flatter generators: its
row on real validation patients (real against real, patient-disjoint) is the check that it does not
simply over-fit, and should read near 0.5 (somewhat above on small sets: different patients do differ).

The protocol, per seed:
- the candidates are split in two halves, by patient when patient ids are given (real sets), at random
  otherwise (generated images are independent draws): one half to fit, the other to test;
- fit: real training slices against the candidates of the fit half for a fixed number of `steps`,
  each batch half real, half candidates, drawn at random (so a small set is seen as often as a large
  one is trained on); random flips and shifts of ±2 px for both classes alike;
- test: every reference image (label real) against the candidates of the test half (label candidate);
  balanced accuracy = ½ (share of reference images called real + share of test candidates called
  candidates), so it does not depend on the two test sets' sizes.
The network: four conv blocks of 16-32-64-64 channels with LeakyReLU 0.2: a 4 × 4 stride-2 convolution
(every pixel seen, a 2-pixel checkerboard included), then three 3 × 3 convolutions each followed by 2 × 2
max-pooling; global average pooling and one logit; Adam, 600 steps of 32 images (about 37 epochs of 256
real and 256 generated images: at 300 steps the seeds of one DCGAN scored 0.70, 0.91 and 1.00, at 600
all three 1.00). Against four 3 × 3 blocks with pooling from full resolution, the first
block's stride made training five to ten times faster on a CPU. No normalisation layer: with BatchNorm the network
leaned on the statistics of its half-real, half-candidate training batches, and its running statistics
moved the decision threshold at test time (blurred slices it had separated perfectly in training scored
0.5); GroupNorm normalised away the intensity-curve cue (a gamma of 0.8 went from 0.79 to 0.54). Training stops early, after
`min_steps` at least, once its loss on the fit set is below `stop_loss` over 25 steps: the set is then separated and further steps change
nothing that matters (noise and blur take a few dozen steps). Deterministic for a seed (on one machine
and thread count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.errors import HcmbenchError

Progress = Callable[[int, int], None]
SHIFT_PX = 2


@dataclass(frozen=True)
class DetectabilityConfig:
    """How the classifier two-sample test is run. Defaults: 3 seeds, under a minute a set at 64 px on 2 cores."""

    seeds: int = 3
    steps: int = 600
    min_steps: int = 100  # before the early stop may end training
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16
    stop_loss: float = 0.01

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.steps < 1 or self.min_steps < 0 or self.batch_size < 2 or self.width < 1:
            raise HcmbenchError("detectability needs seeds ≥ 1, steps ≥ 1, min_steps ≥ 0, batch_size ≥ 2 and "
                                "width ≥ 1")
        if self.lr <= 0 or self.stop_loss < 0:
            raise HcmbenchError("detectability needs lr > 0 and stop_loss ≥ 0")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2))


class Detector(nn.Module):
    """Image (B, 1, S, S) in [0, 1] → one logit (candidate > 0). Four conv blocks, `width`·(1, 2, 4, 4)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        channels = (width, 2 * width, 4 * width, 4 * width)
        self.body = nn.Sequential(nn.Conv2d(1, channels[0], 4, 2, 1), nn.LeakyReLU(0.2),
                                  *(_block(a, b) for a, b in zip(channels, channels[1:])))
        self.head = nn.Linear(channels[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x * 2.0 - 1.0).mean(dim=(2, 3))).squeeze(1)


def _augment(x: Tensor, rng: torch.Generator) -> Tensor:
    """Random horizontal and vertical flips and integer shifts of up to ±SHIFT_PX (reflected borders)."""
    n = len(x)
    flip_h = torch.rand(n, generator=rng) < 0.5
    flip_v = torch.rand(n, generator=rng) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    dy, dx = (int(v) for v in torch.randint(-SHIFT_PX, SHIFT_PX + 1, (2,), generator=rng))
    size = x.shape[-1]
    padded = F.pad(x, (SHIFT_PX,) * 4, mode="reflect")
    return padded[:, :, SHIFT_PX + dy:SHIFT_PX + dy + size, SHIFT_PX + dx:SHIFT_PX + dx + size]


def _as_batch(images: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(images).float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise HcmbenchError(f"{name}: expected square images (n, S, S) or (n, 1, S, S), got {tuple(x.shape)}")
    if len(x) < 1:
        raise HcmbenchError(f"{name}: no images")
    return x.contiguous()


def split_halves(count: int, groups: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fit half and a test half of `count` items: whole groups (patients) to one side when
    `groups` is given (at least one group each side, so at least two groups are needed), else items."""
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(count)
        return np.sort(order[: count // 2]), np.sort(order[count // 2:])
    names = np.array(sorted(set(np.asarray(groups).tolist())))
    if len(names) < 2:
        raise HcmbenchError("a patient-disjoint detectability test needs images of at least two patients")
    chosen = rng.permutation(names)[: len(names) // 2]
    fit = np.isin(groups, chosen)
    return np.flatnonzero(fit), np.flatnonzero(~fit)


def fit_detector(real: Tensor, candidates: Tensor, config: DetectabilityConfig, seed: int) -> Detector:
    """Train a Detector on real (label 0) against candidate (label 1) images, half of each batch each, seeded."""
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Detector(config.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    half = max(1, config.batch_size // 2)
    y = torch.cat([torch.zeros(half), torch.ones(half)])
    check = 25  # steps between looks at the running loss
    net.train()
    running = 0.0
    for step in range(1, config.steps + 1):
        x = torch.cat([real[torch.randint(len(real), (half,), generator=rng)],
                       candidates[torch.randint(len(candidates), (half,), generator=rng)]])
        loss = F.binary_cross_entropy_with_logits(net(_augment(x, rng)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        if step % check == 0:
            if step >= config.min_steps and running / check < config.stop_loss:
                break
            running = 0.0
    net.eval()
    return net


def _predict(net: Detector, x: Tensor, batch_size: int = 256) -> Tensor:
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch_size]) > 0 for i in range(0, len(x), batch_size)])


def balanced_accuracy(net: Detector, real: Tensor, candidates: Tensor) -> float:
    """½ (share of `real` called real + share of `candidates` called candidates)."""
    return 0.5 * ((~_predict(net, real)).double().mean().item() + _predict(net, candidates).double().mean().item())


@dataclass(frozen=True)
class Detectability:
    """Balanced accuracy of the test, mean and std over seeds, and each seed's figure."""

    mean: float
    std: float
    per_seed: tuple[float, ...]


def detectability(real_fit: Tensor | np.ndarray, reference: Tensor | np.ndarray, candidates: Tensor | np.ndarray,
                  groups: np.ndarray | None = None, config: DetectabilityConfig = DetectabilityConfig(),
                  seed: int = 0, progress: Progress | None = None) -> Detectability:
    """How well a classifier tells `candidates` from real images, tested on images it has not seen.

    `real_fit`: real training slices (the classifier's real class); `reference`: real images of patients
    it never sees in training (the real side of the test); `candidates`: the set under test, halved per
    seed into fit and test parts — by `groups` (patient ids, for real sets) when given. Images in [0, 1],
    (n, S, S) or (n, 1, S, S), all of one size. Seed i of `config.seeds` uses `seed + i` for the split,
    the initialisation and the batches. `progress(done, total)` after each seed.
    """
    real_fit, reference = _as_batch(real_fit, "real training images"), _as_batch(reference, "reference images")
    candidates = _as_batch(candidates, "candidate images")
    if len({real_fit.shape[-1], reference.shape[-1], candidates.shape[-1]}) != 1:
        raise HcmbenchError("detectability needs real, reference and candidate images of one size")
    if groups is None and len(candidates) < 2:
        raise HcmbenchError("detectability needs at least two candidate images (one to fit, one to test)")
    if groups is not None and len(groups) != len(candidates):
        raise HcmbenchError(f"{len(groups)} patient ids for {len(candidates)} candidate images")
    scores = []
    for i in range(config.seeds):
        fit, test = split_halves(len(candidates), groups, seed + i)
        net = fit_detector(real_fit, candidates[torch.from_numpy(fit)], config, seed + i)
        scores.append(balanced_accuracy(net, reference, candidates[torch.from_numpy(test)]))
        if progress is not None:
            progress(i + 1, config.seeds)
    return Detectability(float(np.mean(scores)), float(np.std(scores)), tuple(scores))
