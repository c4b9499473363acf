"""The known degradations: what each does to an image, at which strength, and the random family."""

from __future__ import annotations

import pytest
import torch

from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.degradations import KINDS, LADDER, degrade, random_degradations


@pytest.fixture
def images():
    """Smooth, skewed images in [0, 1], unlike U(0, 1)."""
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1) ** 2


def _distance(a, b):
    return (a - b).abs().mean().item()


@pytest.mark.parametrize("kind", list(LADDER))
def test_each_kind_damages_more_at_each_step_of_its_ladder(images, kind):
    distances = [_distance(images, degrade(images, kind, p, torch.Generator().manual_seed(1))) for p in LADDER[kind]]
    assert all(d > 0 for d in distances)
    assert distances == sorted(distances) and distances[0] < distances[-1]


def test_kinds_do_what_they_say(images):
    x = images
    assert degrade(x, "blur", 2.0).std() < 0.8 * x.std()  # a blur removes pixel variance ...
    torch.testing.assert_close(degrade(x, "blur", 2.0).mean(), x.mean(), atol=0.01, rtol=0)  # ... not the level
    assert degrade(x, "gamma-bright", 0.8).mean() > x.mean() > degrade(x, "gamma-dark", 1.25).mean()
    shuffled = degrade(x, "shuffle", 0.5, torch.Generator().manual_seed(0))
    assert not torch.equal(shuffled, x)  # patches moved, every pixel kept
    torch.testing.assert_close(shuffled.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    nearest = degrade(x, "nearest", 1.0)
    assert torch.equal(nearest[..., 0::2, 0::2], nearest[..., 1::2, 1::2])  # 2 × 2 blocks
    tconv = degrade(torch.full((1, 1, 32, 32), 0.3), "tconv", 1.0)
    assert tconv[0, 0, 8:24, 8:24].std() > 0.05  # a flat image gains a checkerboard
    assert degrade(x[:, 0], "noise", 0.05).shape == x[:, 0].shape  # (n, S, S) in, (n, S, S) out


def test_unknown_kind_is_a_one_line_error(images):
    with pytest.raises(HcmbenchError, match="unknown degradation 'jpeg'"):
        degrade(images, "jpeg", 1.0)


def test_random_family_covers_every_kind_and_severity_range():
    x = torch.rand(140, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out, kinds, severity = random_degradations(x, torch.Generator().manual_seed(1), low=0.2)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert set(kinds.tolist()) == set(range(len(KINDS)))
    assert 0.2 <= severity.min() and severity.max() <= 1
    again, _, _ = random_degradations(x, torch.Generator().manual_seed(1), low=0.2)
    assert torch.equal(out, again)  # seeded
