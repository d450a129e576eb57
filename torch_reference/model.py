"""pytorch-vdsr's `vdsr.py`, kept as it was so its whole-model pickles load into these classes.

From https://github.com/twtygqyy/pytorch-vdsr — MIT License, Copyright (c) 2017- Jiu XU, Rakuten, Inc and
Rakuten Institute of Technology; the licence's permission notice applies to this file.

Layer names (`input`, `residual_layer.<i>.conv`, `output`) are the state_dict keys of the published weights.
"""
from math import sqrt

import torch
from torch import nn


class Conv_ReLU_Block(nn.Module):  # noqa: N801 - the name pickles refer to
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(in_channels=64, out_channels=64, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.residual_layer = self.make_layer(Conv_ReLU_Block, 18)
        self.input = nn.Conv2d(in_channels=1, out_channels=64, kernel_size=3, stride=1, padding=1, bias=False)
        self.output = nn.Conv2d(in_channels=64, out_channels=1, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, sqrt(2.0 / n))

    def make_layer(self, block, num_of_layer):
        return nn.Sequential(*[block() for _ in range(num_of_layer)])

    def forward(self, x):
        residual = x
        out = self.relu(self.input(x))
        out = self.residual_layer(out)
        out = self.output(out)
        return torch.add(out, residual)
