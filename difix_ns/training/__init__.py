"""Fixer training: `difix-ns train-fixer` (NAFNet from scratch, Difix fine-tuning; data-parallel through Accelerate)
and the per-scene self-trained fixer. Pair curation lives in `difix_ns.data.curate`.

Light package: the heavy modules (torch, accelerate, nerfstudio) are imported inside the functions.
"""

from difix_ns.training.self_fixer import SelfFixerConfig, train_self_fixer
from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

__all__ = ["SelfFixerConfig", "TrainFixerConfig", "train_fixer", "train_self_fixer"]
