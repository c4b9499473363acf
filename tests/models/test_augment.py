"""Tests of the differentiable augmentation (hcmbench.models.augment)."""

from __future__ import annotations

import itertools

import pytest
import torch

from hcmbench.errors import HcmbenchError
from hcmbench.models.augment import OPS, augment, color, cutout, parse_policy, translation

SIZE = 32
POLICIES = [*OPS, "color,translation,cutout"]


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Random images in (-1, 1) with no pixel exactly -1 or 0, so that every fill value shows."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.9 + 0.05) * torch.where(
        torch.rand(n, 1, SIZE, SIZE, generator=g) < 0.5, -1.0, 1.0)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", POLICIES)
def test_gradient_reaches_the_input(policy):
    x = images().requires_grad_()
    y = augment(x, policy, seeded(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn(y.shape, generator=seeded(1))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # most pixels still reach the output


@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_and_each_call_draws_its_own_parameters(policy):
    x = images(1).expand(8, 1, SIZE, SIZE)  # one image, eight times
    first, second = augment(x, policy), augment(x, policy)
    assert not torch.equal(first, second)  # a new draw per call: real and fake batches never share one
    distinct = {tuple(image.flatten().tolist()) for image in first}
    assert len(distinct) >= 4  # and per image (8 copies of one image come out different)
    # A seeded generator reproduces a call.
    assert torch.equal(augment(x, policy, seeded(3)), augment(x, policy, seeded(3)))


@pytest.mark.parametrize("policy", ["", "none", " NONE ", " , ", None])
def test_an_empty_policy_is_the_identity(policy):
    x = images()
    assert parse_policy(policy) == ()
    assert augment(x, policy) is x


def test_a_policy_is_parsed_in_order():
    assert parse_policy("Cutout, translation ,color") == ("cutout", "translation", "color")


@pytest.mark.parametrize("policy", ["flip", "translation,rotate", "none,color", "colour"])
def test_unknown_ops_are_refused_in_one_line(policy):
    with pytest.raises(HcmbenchError, match="unknown augmentation") as error:
        augment(images(), policy)
    assert "\n" not in str(error.value) and "translation" in str(error.value)


def test_a_policy_must_be_a_string():
    with pytest.raises(HcmbenchError, match="comma-separated"):
        parse_policy(["translation", "cutout"])


def test_color_is_a_brightness_shift_and_a_contrast_scale_per_image():
    x = images()
    y = color(x, seeded(0))
    mean_x, mean_y = x.mean((1, 2, 3)), y.mean((1, 2, 3))
    shift = mean_y - mean_x
    centred_x, centred_y = x - mean_x.view(-1, 1, 1, 1), y - mean_y.view(-1, 1, 1, 1)
    scale = centred_y.flatten(1).norm(dim=1) / centred_x.flatten(1).norm(dim=1)
    assert torch.allclose(centred_y, scale.view(-1, 1, 1, 1) * centred_x, atol=1e-5)  # affine, per image
    assert (shift.abs() <= 0.5).all() and ((scale >= 0.5) & (scale <= 1.5)).all()
    assert shift.std() > 0.05 and scale.std() > 0.05  # drawn per image


def test_translation_shifts_by_whole_pixels_up_to_an_eighth_and_fills_black():
    x = images(16)
    y = translation(x, seeded(0))
    reach = SIZE // 8
    shifts = []
    for image, moved in zip(x, y):
        for dy, dx in itertools.product(range(-reach, reach + 1), repeat=2):
            expected = torch.full_like(image, -1.0)
            expected[:, max(dy, 0):SIZE + min(dy, 0), max(dx, 0):SIZE + min(dx, 0)] = \
                image[:, max(-dy, 0):SIZE + min(-dy, 0), max(-dx, 0):SIZE + min(-dx, 0)]
            if torch.equal(moved, expected):
                shifts.append((dy, dx))
                break
        else:
            pytest.fail("an image is not a shift of its input by at most S/8 with a black fill")
    assert len(set(shifts)) >= 8  # random per image
    assert max(abs(d) for shift in shifts for d in shift) > 1


def test_cutout_greys_a_square_of_half_the_side():
    x = images(16)
    y = cutout(x, seeded(0))
    side = SIZE // 2
    clipped = 0
    for image, cut in zip(x, y):
        changed = (cut != image)[0]
        assert (cut[0][changed] == 0).all()  # mid-grey
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert changed.sum() == height * width  # a filled rectangle ...
        assert rows.max() - rows.min() + 1 == height and cols.max() - cols.min() + 1 == width
        # ... of side S/2, shorter only where it reaches past the border.
        assert height == side or rows.min() == 0 or rows.max() == SIZE - 1
        assert width == side or cols.min() == 0 or cols.max() == SIZE - 1
        clipped += (height, width) != (side, side)
    assert 0 < clipped < len(x)  # the centre is anywhere in the image
