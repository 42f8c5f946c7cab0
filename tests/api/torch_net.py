"""A small PyTorch classifier whose class travels with the bundle (state dict + source)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    shipyard_task = "classification"

    def __init__(self, inputs: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.shipyard_init_kwargs = {"inputs": inputs, "classes": classes}
        self.shipyard_classes = list(range(classes))
        self.layers = nn.Sequential(nn.Linear(inputs, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
