"""The original PyTorch VDSR (pytorch-vdsr, MIT) and its training step: the independent expectation for
vdsr_jax's parity tests and the source/target of weight conversion."""
from torch_reference.model import Conv_ReLU_Block, Net
from torch_reference.train_step import make_optimizer, learning_rate, train_step

__all__ = ["Conv_ReLU_Block", "Net", "make_optimizer", "learning_rate", "train_step"]
