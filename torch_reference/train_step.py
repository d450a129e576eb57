"""pytorch-vdsr's training step (`main_vdsr.py`): summed MSE, global-norm clipping, SGD with momentum and
weight decay, lr = base · 0.1^(epoch // step)."""
import torch
from torch import nn


def learning_rate(epoch: int, base_lr: float = 0.1, step: int = 10) -> float:
    """pytorch-vdsr's `adjust_learning_rate` for a 0-based epoch."""
    return base_lr * (0.1 ** (epoch // step))


def make_optimizer(model: nn.Module, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-4):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_step(model: nn.Module, optimizer, inputs: torch.Tensor, targets: torch.Tensor, lr: float,
               clip: float = 0.4) -> float:
    """One step as pytorch-vdsr runs it; returns the summed loss before the update."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    criterion = nn.MSELoss(reduction="sum")
    loss = criterion(model(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.detach())
