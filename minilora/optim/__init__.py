"""Optimizers (``minilora.optim``), mirroring ``torch.optim``: SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam, Rprop, ASGD,
Adafactor, LBFGS, Muon (``SparseAdam`` is refused: no sparse gradients), learning-rate
schedules (torch's schedulers in ``optim.lr_scheduler`` and the ``transformers`` schedule names)
and gradient clipping."""
from . import lr_scheduler, swa_utils
from .adam import Adam, AdamW
from .adam_variants import Adamax, NAdam, RAdam
from .clip_grad import clip_grad_norm_, clip_grad_value_
from .lr_scheduler import (LambdaLR, get_constant_schedule, get_constant_schedule_with_warmup,
                           get_cosine_schedule_with_warmup, get_cosine_with_hard_restarts_schedule_with_warmup,
                           get_cosine_with_min_lr_schedule_with_warmup,
                           get_cosine_with_min_lr_schedule_with_warmup_lr_rate, get_inverse_sqrt_schedule,
                           get_linear_schedule_with_warmup, get_polynomial_decay_schedule_with_warmup,
                           get_reduce_on_plateau_schedule, get_scheduler, get_wsd_schedule, GreedyLR,
                           get_greedy_schedule)
from .optimizer import Optimizer
from .adagrad_rmsprop import Adadelta, Adagrad, RMSprop
from .adafactor import Adafactor
from .lbfgs import LBFGS
from .muon import Muon
from .sparse_adam import SparseAdam
from .rprop_asgd import ASGD, Rprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "Rprop", "ASGD", "Adafactor", "LBFGS", "Muon", "SparseAdam", "clip_grad_norm_", "clip_grad_value_", "lr_scheduler", "swa_utils",
           "LambdaLR", "get_constant_schedule", "get_constant_schedule_with_warmup",
           "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup",
           "get_cosine_with_hard_restarts_schedule_with_warmup", "get_polynomial_decay_schedule_with_warmup",
           "get_inverse_sqrt_schedule", "get_reduce_on_plateau_schedule", "get_cosine_with_min_lr_schedule_with_warmup",
           "get_cosine_with_min_lr_schedule_with_warmup_lr_rate", "get_wsd_schedule", "GreedyLR", "get_greedy_schedule", "get_scheduler"]
