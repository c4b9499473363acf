"""Spies on the adversarial step, shared by the GAN-family tests."""

from __future__ import annotations

from typing import Any


def recorded_losses(monkeypatch: Any, model: Any) -> list[float]:
    """Make `model.optimize` record the value of each loss it minimises (D's total, then G's, per step)."""
    losses: list[float] = []
    original = model.optimize

    def optimize(loss, optimizer, parameters=None):
        losses.append(loss.item())
        original(loss, optimizer, parameters)

    monkeypatch.setattr(model, "optimize", optimize)
    return losses
