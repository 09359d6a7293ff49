"""transformers' ``Trainer`` and ``TrainingArguments``, so a Hugging Face fine-tuning script runs as written:

    from minilora.trainer import Trainer, TrainingArguments
    args = TrainingArguments(output_dir="out", learning_rate=1e-3, per_device_train_batch_size=4,
                             num_train_epochs=2, weight_decay=0.01, logging_steps=1, save_strategy="epoch",
                             seed=42, report_to="none")
    trainer = Trainer(model=peft_model, args=args, train_dataset=ds, data_collator=collator)
    trainer.train(); trainer.evaluate(); trainer.save_model()

It is transformers 5's loop on one process, number for number (``tests/test_trainer_r12.py`` runs both):

* the data: a ``RandomSampler`` whose generator is seeded ``data_seed`` (else the global generator's seed,
  which ``Trainer()`` sets to ``seed``) + epoch at each epoch (accelerate's ``SeedableRandomSampler``, what the
  Trainer's DataLoader gets; the batch size, ``data_seed`` and NEFTune's alpha are read when the Trainer is
  made, as there, the other arguments when ``train()`` runs), the keys the model's
  ``forward`` does not take removed first (``remove_unused_columns``), then the collator
  (``DataCollatorWithPadding`` with a ``processing_class``, else ``default_data_collator``);
* one optimizer step: ``gradient_accumulation_steps`` micro-batches fetched together, the number of
  target tokens in all of them counted (``labels[..., 1:] != -100`` for a causal LM) and passed to the
  model as ``num_items_in_batch``, so each micro-batch's loss is its token sum over the step's count and
  the gradients add up to the mean over the whole step (no division by the accumulation count);
  ``clip_grad_norm_`` over all parameters (the norm before clipping is logged), the optimizer, the
  schedule; the logged ``learning_rate`` is the one the step used;
* AdamW's weight decay on every parameter except biases and norm weights (``get_decay_parameter_names``);
* ``log_history`` entries ``{"loss", "grad_norm", "learning_rate", "epoch", "step"}``, eval entries,
  and the closing ``train_runtime ... train_loss`` one; ``checkpoint-N`` folders with the model's files
  (the adapter's for a PEFT model), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
  ``trainer_state.json`` and ``training_args.bin`` (``args.to_dict()`` in torch.save's format, not a pickle);
  ``train(resume_from_checkpoint=True)`` continues the last one, the data and generators as they were.

The random generators' states, the weight-decay rule and the JSON-safe metrics come from ``minilora.train``
(the ``train()`` function, minilora's own loop, uses them too), the schedules from ``minilora.optim``. Not
here (refused by name, ``NOT_IMPLEMENTED``): distributed training, DeepSpeed/FSDP, hyperparameter search,
optimizers other than torch's AdamW/SGD/Adagrad/RMSprop and transformers' Adafactor (``optim/hf_adafactor.py``).
"""
import dataclasses
import datetime
import fnmatch
import functools
import inspect
import json
import logging
import math
import os
import re
import shutil
import time
import warnings
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np

from . import random as ml_random
from .checkpoint import writing_alone
from .data import IGNORE_INDEX, DataCollatorWithPadding, default_data_collator
from .optim.lr_scheduler import SCHEDULER_TYPES
from .tensor import Tensor, no_grad
from .train import _plain, check_generator_states, generator_states, get_decay_parameter_names, set_generator_states
from .trainer_memory import TrainerMemoryTracker

__all__ = ["TrainingArguments", "Trainer", "TrainerCallback", "TrainerState", "TrainerControl", "CallbackHandler",
           "DefaultFlowCallback", "EarlyStoppingCallback", "ExportableState", "PrinterCallback", "ProgressCallback",
           "EvalPrediction", "TrainOutput", "PredictionOutput", "EvalLoopOutput", "get_last_checkpoint",
           "PREFIX_CHECKPOINT_DIR"]

logger = logging.getLogger(__name__)
PREFIX_CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_NAME, TRAINING_ARGS_NAME = "trainer_state.json", "training_args.bin"
# A model's weight files: an older save's that save_model's new model files do not replace are removed (transformers
# removes a previous save's shards; a model.safetensors or index left beside new shards would be loaded instead)
_MODEL_WEIGHTS = ("model*.safetensors", "model.safetensors.index.json")
OPTIMIZER_NAME, SCHEDULER_NAME, RNG_STATE_NAME = "optimizer.pt", "scheduler.pt", "rng_state.pth"

INTERVAL_STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
DEBUG_OPTIONS = ("underflow_overflow", "tpu_metrics_debug")
# transformers' log_level / log_level_replica names (an unknown one is a KeyError when the Trainer starts)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "passive")
# transformers' OptimizerNames, in its order (an unknown name is refused with this list, as there); minilora
# builds the torch.optim ones, and refuses the others by name
OPTIMIZER_NAMES = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise",
    "stable_adamw")
BUILT_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")
# the optim_args keys transformers reads for each torch optimizer (as floats, or booleans)
_OPTIM_ARGS = {"sgd": (("momentum", "dampening", "weight_decay"), ("nesterov",)),
               "adagrad": (("lr_decay", "weight_decay", "eps"), ()),
               "rmsprop": (("momentum", "alpha", "eps", "weight_decay"), ("centered",))}


def _parse_optim_args(text):
    """transformers' _parse_optim_args: "key=value,key=value" (spaces dropped) as a dict of strings; a pair without
    one "=" is its unpacking ValueError (a value with a comma, "betas=(0.8,0.99)", is such a pair)."""
    if not text:
        return {}
    parsed = {}
    for mapping in text.replace(" ", "").split(","):
        key, value = mapping.split("=")
        parsed[key] = value
    return parsed


def _typed_strings(values):
    """transformers' _convert_str_dict: a JSON dict's "true"/"false", "3" and "0.5" strings as bool, int, float."""
    for key, value in values.items():
        if isinstance(value, dict):
            values[key] = _typed_strings(value)
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            values[key] = value.lower() == "true"
        elif isinstance(value, str) and value.isdigit():
            values[key] = int(value)
        elif isinstance(value, str) and value.replace(".", "", 1).isdigit():
            values[key] = float(value)
    return values


def _one_of(value, allowed, kind):
    """transformers' enum check: ``"maybe is not a valid SaveStrategy, please select one of [...]"``."""
    value = getattr(value, "value", value)
    if value not in allowed:
        raise ValueError(f"{value} is not a valid {kind}, please select one of {list(allowed)}")
    return value


# transformers' fields that ask for something minilora's Trainer does not do (several processes or devices,
# compilation, other kernels, the Hub, trackers...): each must keep transformers' default, else it is refused
# by name. (Fields that change nothing on one CPU process are taken: log levels, pinned memory, ddp_*,
# eval_accumulation_steps (when predictions move to the host), auto_find_batch_size (the batch size an
# out-of-memory error would halve).)
NOT_IMPLEMENTED = {
    "bf16_full_eval": False, "fp16_full_eval": False, "use_liger_kernel": False, "liger_kernel_config": None,
    "eval_use_gather_object": False, "batch_eval_metrics": False,
    "enable_jit_checkpoint": False, "push_to_hub": False, "ddp_backend": None,
    "accelerator_config": None, "parallelism_config": None,
    "fsdp": None, "fsdp_config": None, "deepspeed": None, "debug": []}
# accelerate's AcceleratorConfig() as transformers fills it in for accelerator_config=None (to_dict writes it; passed
# back, TrainingArguments(**args.to_dict()), it is the default it stands for)
ACCELERATOR_DEFAULTS = {"split_batches": False, "dispatch_batches": None, "even_batches": True,
                        "use_seedable_sampler": True, "non_blocking": False, "gradient_accumulation_kwargs": None}
# (torch_compile is taken: transformers compiles the model with inductor, which computes what the eager model
# does; minilora runs it eagerly. optim_target_modules only tells GaLore/APOLLO which layers are theirs, and those
# optimizers are refused by name.)


@dataclasses.dataclass
class TrainingArguments:
    """transformers' ``TrainingArguments``: every field of transformers 5's, with its defaults. An unknown
    keyword is a ``TypeError``, as a dataclass's (``warmup_ratio``, ``evaluation_strategy``: gone in 5);
    a field in ``NOT_IMPLEMENTED`` set to another value than its default is refused by name."""
    output_dir: str = None
    per_device_train_batch_size: int = 8
    num_train_epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict = None
    warmup_steps: float = 0
    optim: str = "adamw_torch_fused"
    optim_args: str = None
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim_target_modules: object = None
    gradient_accumulation_steps: int = 1
    average_tokens_across_devices: bool = True
    max_grad_norm: float = 1.0
    label_smoothing_factor: float = 0.0
    bf16: bool = False
    fp16: bool = False
    bf16_full_eval: bool = False
    fp16_full_eval: bool = False
    tf32: bool = None
    activation_checkpointing: bool = None
    activation_checkpointing_kwargs: dict = None
    gradient_checkpointing: bool = None  # (transformers 5's deprecated names of the two above)
    gradient_checkpointing_kwargs: dict = None
    torch_compile: bool = False
    torch_compile_backend: str = None
    torch_compile_mode: str = None
    use_liger_kernel: bool = False
    liger_kernel_config: dict = None
    use_cache: bool = False
    neftune_noise_alpha: float = None
    torch_empty_cache_steps: int = None
    auto_find_batch_size: bool = False
    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    log_on_each_node: bool = True
    logging_nan_inf_filter: bool = True
    include_num_input_tokens_seen: object = "no"
    log_level: str = "passive"
    log_level_replica: str = "warning"
    disable_tqdm: bool = None
    report_to: object = "none"
    run_name: str = None
    project: str = "huggingface"
    trackio_space_id: str = None
    trackio_bucket_id: str = None
    trackio_static_space_id: object = None
    eval_strategy: str = "no"
    eval_steps: float = None
    eval_delay: float = 0
    per_device_eval_batch_size: int = 8
    prediction_loss_only: bool = False
    eval_on_start: bool = False
    eval_do_concat_batches: bool = True
    eval_use_gather_object: bool = False
    eval_accumulation_steps: int = None
    include_for_metrics: list = dataclasses.field(default_factory=list)
    batch_eval_metrics: bool = False
    save_only_model: bool = False
    save_strategy: str = "steps"
    save_steps: float = 500
    save_on_each_node: bool = False
    save_total_limit: int = None
    enable_jit_checkpoint: bool = False
    push_to_hub: bool = False
    hub_token: str = None
    hub_private_repo: bool = None
    hub_model_id: str = None
    hub_strategy: str = "every_save"
    hub_always_push: bool = False
    hub_revision: str = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str = None
    greater_is_better: bool = None
    ignore_data_skip: bool = False
    restore_callback_states_from_checkpoint: bool = False
    full_determinism: bool = False
    seed: int = 42
    data_seed: int = None
    use_cpu: bool = False
    accelerator_config: object = None
    parallelism_config: object = None
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int = None
    dataloader_multiprocessing_context: str = None
    dataloader_in_order: bool = True
    remove_unused_columns: bool = True
    label_names: list = None
    train_sampling_strategy: str = "random"
    length_column_name: str = "length"
    ddp_find_unused_parameters: bool = None
    ddp_bucket_cap_mb: int = None
    ddp_broadcast_buffers: bool = None
    ddp_static_graph: bool = None
    ddp_backend: str = None
    ddp_timeout: int = 1800
    fsdp: object = None
    fsdp_config: object = None
    deepspeed: object = None
    debug: object = ""
    skip_memory_metrics: bool = True
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    resume_from_checkpoint: str = None
    local_rank: int = -1

    def __post_init__(self):
        self.output_dir = "trainer_output" if self.output_dir is None else os.fspath(self.output_dir)
        for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs", "lr_scheduler_kwargs"):
            value = getattr(self, name)  # (a command line's '{"patience": "2"}', as transformers parses it)
            if isinstance(value, str) and value.startswith("{"):
                setattr(self, name, _typed_strings(json.loads(value)))
        self.logging_strategy = _one_of(self.logging_strategy, INTERVAL_STRATEGIES, "IntervalStrategy")
        self.eval_strategy = _one_of(self.eval_strategy, INTERVAL_STRATEGIES, "IntervalStrategy")
        self.save_strategy = _one_of(self.save_strategy, SAVE_STRATEGIES, "SaveStrategy")
        self.hub_strategy = _one_of(self.hub_strategy, HUB_STRATEGIES, "HubStrategy")
        self.optim = _one_of(self.optim, OPTIMIZER_NAMES, "OptimizerNames")
        self.lr_scheduler_type = _one_of(self.lr_scheduler_type, SCHEDULER_TYPES, "SchedulerType")
        if isinstance(self.debug, str):
            self.debug = [_one_of(option, DEBUG_OPTIONS, "DebugOption") for option in self.debug.split()]
        if self.eval_strategy == "steps" and not self.eval_steps:
            if not self.logging_steps > 0:
                raise ValueError("evaluation strategy IntervalStrategy.STEPS requires either non-zero --eval_steps or"
                                 " --logging_steps")
            self.eval_steps = self.logging_steps  # (transformers: eval_steps defaults to logging_steps)
        if self.report_to in (None, "none", ["none"]):
            self.report_to = []
        elif self.report_to not in ([], "all"):
            raise ValueError(f"report_to={self.report_to!r}: minilora reports to no logging service (wandb, "
                             "tensorboard, ...); pass report_to='none' (log_history holds every logged value)")
        if self.disable_tqdm is None:
            self.disable_tqdm = False
        # transformers 5: gradient_checkpointing* are the deprecated names of activation_checkpointing*
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if getattr(self, new) is None and getattr(self, old) is not None:
                warnings.warn(f"`{old}` is deprecated and will be removed in v6. Use `{new}` instead.",
                              FutureWarning, stacklevel=3)
                setattr(self, new, getattr(self, old))
            setattr(self, old, getattr(self, new))
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing = False
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"
        self.debug = [] if self.debug is None else self.debug
        if (self.load_best_model_at_end or self.lr_scheduler_type in ("reduce_lr_on_plateau", "greedy")) and \
                self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        self._check_steps()
        self._check_best_model_strategies()
        self._check_values()
        if self.torch_compile_mode is not None or self.torch_compile_backend is not None:
            self.torch_compile = True
        if self.torch_compile and self.torch_compile_backend is None:
            self.torch_compile_backend = "inductor"
        self._refuse_unsupported()

    def _check_steps(self):
        """transformers' rules for the *_steps intervals: logging needs a step count, and above 1 a count of
        steps is a whole number (below 1 it is a fraction of the run)."""
        if self.logging_strategy == "steps" and self.logging_steps == 0:
            raise ValueError("logging strategy IntervalStrategy.STEPS requires non-zero --logging_steps")
        for kind, strategy in (("logging", self.logging_strategy), ("eval", self.eval_strategy),
                               ("save", self.save_strategy)):
            steps = getattr(self, f"{kind}_steps")
            if strategy == "steps" and steps > 1:
                if steps != int(steps):
                    raise ValueError(f"--{kind}_steps must be an integer if bigger than 1: {steps}")
                setattr(self, f"{kind}_steps", int(steps))

    def _check_values(self):
        """transformers' other value checks, in its words."""
        steps = self.torch_empty_cache_steps
        if steps is not None and not (isinstance(steps, int) and steps > 0):
            raise ValueError(f"`torch_empty_cache_steps` must be an integer bigger than 0, got {steps}.")
        if self.bf16 and not self.use_cpu:  # (transformers' words on a machine without a bf16 GPU)
            raise ValueError("Your setup doesn't support bf16/gpu. You need to assign use_cpu if you want to train "
                             "the model on CPU.")
        if self.fp16 and self.bf16:
            raise ValueError("At most one of fp16 and bf16 can be True, but not both")
        for schedule in ("reduce_lr_on_plateau", "greedy"):
            if self.lr_scheduler_type == schedule and self.eval_strategy == "no":
                raise ValueError(f"lr_scheduler_type {schedule} requires an eval strategy")
        if self.warmup_steps < 0:
            raise ValueError(f"Got warmup_steps = {self.warmup_steps}, Expected value warmup_steps >= 0")
        if self.dataloader_num_workers == 0 and self.dataloader_prefetch_factor is not None:
            raise ValueError("--dataloader_prefetch_factor can only be set when data is loaded in a different "
                             "process, i.e. when --dataloader_num_workers > 0.")
        if self.tf32:  # (no CUDA device: transformers' words on a machine without one)
            raise ValueError("--tf32 requires Ampere or a newer GPU arch, cuda>=11 and torch>=1.7")

    def _check_best_model_strategies(self):
        """load_best_model_at_end loads a saved checkpoint: the saves must fall on evaluations (transformers' words)."""
        if not self.load_best_model_at_end or self.save_strategy == "best":
            return
        if self.eval_strategy != self.save_strategy:
            raise ValueError('--load_best_model_at_end requires the save and eval strategy to match, except when '
                             f'--save_strategy="best", but found\n- Evaluation strategy: {self.eval_strategy}\n- '
                             f'Save strategy: {self.save_strategy}')
        if self.eval_strategy == "steps" and self.save_steps % self.eval_steps != 0:
            if (self.eval_steps < 1) != (self.save_steps < 1):
                raise ValueError("--load_best_model_at_end requires the saving steps to be a multiple of the "
                                 "evaluation steps, which cannot get guaranteed when mixing ratio and absolute steps "
                                 f"for save_steps {self.save_steps} and eval_steps {self.eval_steps}.")
            if self.eval_steps >= 1:
                raise ValueError("--load_best_model_at_end requires the saving steps to be a round multiple of the "
                                 f"evaluation steps, but found {self.save_steps}, which is not a round multiple of "
                                 f"{self.eval_steps}.")
            if round(self.save_steps * 1_000_000) % round(self.eval_steps * 1_000_000):  # (two fractions)
                raise ValueError("--load_best_model_at_end requires the saving steps to be a multiple of the "
                                 f"evaluation steps, but found {self.save_steps}, which is not a multiple of "
                                 f"{self.eval_steps}.")

    def _refuse_unsupported(self):
        from .dtypes import HAS_BFLOAT16
        if self.accelerator_config == ACCELERATOR_DEFAULTS:  # (to_dict's own value, read back)
            self.accelerator_config = None
        for name, default in NOT_IMPLEMENTED.items():
            value = getattr(self, name)
            if value != default:
                raise ValueError(f"TrainingArguments({name}={value!r}): minilora's Trainer does not implement "
                                 f"{name} (one process on the CPU); leave it at {default!r}")
        if self.bf16 and not HAS_BFLOAT16:
            raise ValueError("bf16=True needs ml_dtypes (minilora's bfloat16); install it or train in float32")
        if self.fp16:  # accelerate on the CPU: no autocast and no scaler, so the run is float32 in transformers too
            warnings.warn("fp16=True: on the CPU transformers' Trainer (accelerate) runs without autocast or a "
                          "gradient scaler, in float32; minilora does the same", stacklevel=3)
        if self.train_sampling_strategy not in ("random", "sequential", "group_by_length"):
            raise ValueError(f"train_sampling_strategy={self.train_sampling_strategy!r}: minilora's Trainer "
                             "samples 'random', 'sequential' or 'group_by_length'")

    @property
    def train_batch_size(self):
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self):
        return self.per_device_eval_batch_size

    @property
    def world_size(self):
        return 1

    @property
    def should_save(self):
        return True

    def get_warmup_steps(self, num_training_steps):
        """``warmup_steps`` >= 1 is a count, below 1 a fraction of the training steps (rounded up)."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def to_dict(self):
        """transformers' ``to_dict`` (what ``to_json_string`` and training_args.bin hold): a ``*_token`` field is
        written as its placeholder (``"<HUB_TOKEN>"``), never the secret, and ``accelerator_config`` as the
        accelerate settings transformers fills in when none is given (the only ones minilora's Trainer runs)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in d:
            if name.endswith("_token"):
                d[name] = f"<{name.upper()}>"
        if d["accelerator_config"] is None:
            d["accelerator_config"] = dict(ACCELERATOR_DEFAULTS)
        return d

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2)


# ----------------------------------------------------------------------------------------------
# State, control and callbacks (transformers' trainer_callback.py)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainerState:
    epoch: float = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list = None
    best_metric: float = None
    best_global_step: int = None
    best_model_checkpoint: str = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str = None
    trial_params: dict = None
    stateful_callbacks: dict = None

    def __post_init__(self):
        self.log_history = [] if self.log_history is None else self.log_history
        self.stateful_callbacks = {} if self.stateful_callbacks is None else self.stateful_callbacks

    def save_to_json(self, json_path):
        """transformers' text, written atomically: a kill or a full disk mid-write leaves the previous file."""
        from .checkpoint import atomic_write
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        with atomic_write(json_path, "w") as f:
            f.write(text)

    @classmethod
    def load_from_json(cls, json_path):
        """A file that is not JSON, or not a TrainerState's fields, is named (transformers' bare json or
        ``__init__()`` error says neither which file nor that it is a checkpoint's)."""
        from .checkpoint import load_json
        fields = load_json(json_path)
        if not isinstance(fields, dict):
            raise TypeError(f"{json_path}: a trainer state is a JSON object of TrainerState's fields, not a "
                            f"{type(fields).__name__}")
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"{json_path}: TrainerState.__init__() got an unexpected keyword argument "
                            f"'{unknown[0]}'")
        return cls(**fields)

    def compute_steps(self, args, max_steps):
        """A ``logging_steps`` / ``eval_steps`` / ``save_steps`` below 1 is a fraction of ``max_steps``."""
        for kind in ("logging", "eval", "save"):
            steps = getattr(args, f"{kind}_steps")
            if steps is not None:
                setattr(self, f"{kind}_steps", math.ceil(max_steps * steps) if steps < 1 else steps)


class ExportableState:
    """An object whose ``state()`` goes into each checkpoint's trainer_state.json (``stateful_callbacks``)."""

    def state(self):
        raise NotImplementedError("You must implement a `state` function to utilize this class.")

    @classmethod
    def from_state(cls, state):
        instance = cls(**state["args"])
        for key, value in state["attributes"].items():
            setattr(instance, key, value)
        return instance


@dataclasses.dataclass
class TrainerControl(ExportableState):
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def state(self):
        return {"args": dataclasses.asdict(self), "attributes": {}}


class TrainerCallback:
    """Override the events you need; each gets ``(args, state, control, **kwargs)`` (``model``,
    ``optimizer``, ``lr_scheduler``, ``train_dataloader``, ``eval_dataloader``, ``processing_class``, and
    ``logs`` / ``metrics`` where there are some) and may return a changed ``control``."""
    EVENTS = ("on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
              "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate",
              "on_predict", "on_save", "on_log", "on_prediction_step")


for _event in TrainerCallback.EVENTS:  # every event does nothing until a subclass overrides it
    setattr(TrainerCallback, _event, lambda self, args, state, control, **kwargs: None)

# what the handler resets before an event, as transformers' CallbackHandler
_RESETS = {"on_train_begin": ("should_training_stop",), "on_epoch_begin": ("should_epoch_stop",),
           "on_step_begin": ("should_log", "should_evaluate", "should_save"), "on_evaluate": ("should_evaluate",),
           "on_save": ("should_save",), "on_log": ("should_log",)}


class CallbackHandler:
    def __init__(self, callbacks, model, processing_class, optimizer, lr_scheduler):
        self.callbacks = []
        for cb in callbacks:
            self.add_callback(cb)
        self.model, self.processing_class = model, processing_class
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.train_dataloader = self.eval_dataloader = None

    def add_callback(self, callback):
        cb = callback() if isinstance(callback, type) else callback
        if type(cb) in [type(c) for c in self.callbacks]:
            warnings.warn(f"You are adding a {type(cb)} to the callbacks of this Trainer, but there is already one.",
                          stacklevel=3)
        self.callbacks.append(cb)

    def pop_callback(self, callback):
        for cb in self.callbacks:
            if (isinstance(cb, callback) if isinstance(callback, type) else cb == callback):
                self.callbacks.remove(cb)
                return cb
        return None

    def remove_callback(self, callback):
        self.pop_callback(callback)

    def call_event(self, event, args, state, control, **kwargs):
        for flag in _RESETS.get(event, ()):
            setattr(control, flag, False)
        for cb in self.callbacks:
            result = getattr(cb, event)(args, state, control, model=self.model,
                                        processing_class=self.processing_class, optimizer=self.optimizer,
                                        lr_scheduler=self.lr_scheduler, train_dataloader=self.train_dataloader,
                                        eval_dataloader=self.eval_dataloader, **kwargs)
            if result is not None:  # (a callback may leave control as it is)
                control = result
        return control


class DefaultFlowCallback(TrainerCallback):
    """When to log, evaluate, save and stop (transformers' rules)."""

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and step % state.logging_steps == 0:
            control.should_log = True
        eval_due = args.eval_strategy == "steps" and args.eval_delay <= step
        if eval_due and step % state.eval_steps == 0:
            control.should_evaluate = True
        if args.save_strategy == "steps" and state.save_steps > 0 and step % state.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if eval_due and step % state.eval_steps != 0:
                control.should_evaluate = True
            if args.save_strategy == "steps":
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


def _shown(logs):
    """A log entry as transformers' progress callback prints it: numbers to 4 significant digits."""
    return {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in logs.items()}


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stops training when ``metric_for_best_model`` has not improved (by more than ``early_stopping_threshold``)
    for ``early_stopping_patience`` evaluations in a row."""

    def __init__(self, early_stopping_patience=1, early_stopping_threshold=0.0):
        self.early_stopping_patience, self.early_stopping_threshold = early_stopping_patience, early_stopping_threshold
        self.early_stopping_patience_counter = 0

    def check_metric_value(self, args, state, control, metric_value):
        better = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or (better(metric_value, state.best_metric)
                                         and abs(metric_value - state.best_metric) > self.early_stopping_threshold):
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.load_best_model_at_end:
            logger.warning("Using EarlyStoppingCallback without load_best_model_at_end=True. Once training is "
                           "finished, the best model will not be loaded automatically.")
        assert args.metric_for_best_model is not None, \
            "EarlyStoppingCallback requires metric_for_best_model to be defined"
        assert args.eval_strategy != "no", "EarlyStoppingCallback requires IntervalStrategy of steps or epoch"

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        name = args.metric_for_best_model
        value = metrics.get(name if name.startswith("eval_") else f"eval_{name}")
        if value is None:
            logger.warning(f"early stopping required metric_for_best_model, but did not find {name} so early "
                           "stopping is disabled")
            return
        self.check_metric_value(args, state, control, value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self):
        return {"args": {"early_stopping_patience": self.early_stopping_patience,
                         "early_stopping_threshold": self.early_stopping_threshold},
                "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter}}


class PrinterCallback(TrainerCallback):
    """Prints each log entry (``disable_tqdm=True``)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(_shown({k: v for k, v in logs.items() if k != "total_flos"}), flush=True)


class ProgressCallback(PrinterCallback):
    """transformers' tqdm bars; minilora prints each log entry as the bar's ``write`` would."""


class EvalPrediction:
    """What ``compute_metrics`` gets: ``predictions`` (the logits, padded with -100 to one length) and
    ``label_ids``, NumPy arrays, and ``inputs`` / ``losses`` where ``include_for_metrics`` asks; unpacks as
    ``predictions, labels = eval_pred`` (then inputs, losses)."""

    def __init__(self, predictions, label_ids, inputs=None, losses=None):
        self.predictions, self.label_ids, self.inputs, self.losses = predictions, label_ids, inputs, losses
        self.elements = (predictions, label_ids) + tuple(x for x in (inputs, losses) if x is not None)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, index):
        if index < 0 or index >= len(self.elements):
            raise IndexError("tuple index out of range")
        return self.elements[index]


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


class PredictionOutput(NamedTuple):
    predictions: object
    label_ids: object
    metrics: dict


class EvalLoopOutput(NamedTuple):
    predictions: object
    label_ids: object
    metrics: dict
    num_samples: int


def _exported(objects):
    """TrainerState's ``stateful_callbacks``: each object's state by its class name (a list for several)."""
    states = {}
    for obj in objects:
        name = type(obj).__name__
        if name in states:
            states[name] = (states[name] if isinstance(states[name], list) else [states[name]]) + [obj.state()]
        else:
            states[name] = obj.state()
    return states


_CHECKPOINT_RE = re.compile(r"^" + PREFIX_CHECKPOINT_DIR + r"\-(\d+)$")


def get_last_checkpoint(folder):
    """The ``checkpoint-N`` folder in ``folder`` with the largest N, or None."""
    found = _checkpoints(folder)
    return os.path.join(folder, found[-1][1]) if found else None


def _checkpoints(folder):
    """``[(step, name)]`` of the ``checkpoint-N`` folders in ``folder``, oldest first."""
    return sorted((int(m.group(1)), name) for name in os.listdir(folder)
                  if (m := _CHECKPOINT_RE.search(name)) and os.path.isdir(os.path.join(folder, name)))


def _write_json_text(path, obj):
    """transformers' ``json.dump(obj, f, indent=4, sort_keys=True)`` text (no final newline), written whole."""
    from .checkpoint import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=4, sort_keys=True)


def _torch_loadable(states):
    """The generators' states with NumPy's key as a list of ints (``np.random.set_state`` takes either), so
    ``save`` writes rng_state.pth in torch's format, which transformers' resume reads (a NumPy array made it a
    safetensors file with the structure in its metadata, which torch.load refuses)."""
    name, key, *rest = states["numpy"]
    return {**states, "numpy": (name, np.asarray(key).tolist(), *rest)}


def _read_training_files(folder):
    """``{path: what it holds}`` of a checkpoint's optimizer.pt, scheduler.pt and rng_state.pth (those there),
    the generators' states checked: read before the checkpoint's weights replace the model's, so a damaged file
    is refused with the model as it was (transformers loads the weights first: a refused resume leaves the
    checkpoint's adapter in the model, which a ``train()`` without resume would then go on from)."""
    found = {path: _read_training_file(path) for path in (os.path.join(folder, name) for name in (
        OPTIMIZER_NAME, SCHEDULER_NAME, RNG_STATE_NAME)) if os.path.isfile(path)}
    rng = found.get(os.path.join(folder, RNG_STATE_NAME))
    if rng is not None:
        check_generator_states(rng)
    return found


def _read_training_file(path):
    """One of a checkpoint's training files. transformers' rng_state.pth (torch.save of its NumPy generator's
    state) is read as transformers reads it: weights-only, NumPy's arrays and dtypes allowed."""
    from .serialization import load, safe_globals
    if os.path.basename(path) != RNG_STATE_NAME:
        return load(path)
    numpy_core = getattr(np, "_core", None) or np.core  # (NumPy 1's name)
    with safe_globals([numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]):
        return load(path)


def _compare_trainer_and_checkpoint_args(args, state):
    """transformers' warning when a resumed run's step intervals or batch size differ from the checkpoint's. The
    checkpoint's logging/eval/save steps are used (they are the resumed state's), the new batch size too."""
    differences = [f"\n\t{name}: {getattr(args, name)} (from args) != {getattr(state, name)} (from trainer_state.json)"
                   for name in ("logging_steps", "eval_steps", "save_steps")
                   if getattr(args, name, None) is not None and getattr(state, name, None) is not None
                   and getattr(args, name) != getattr(state, name)]
    if state.train_batch_size is not None and args.per_device_train_batch_size != state.train_batch_size:
        differences.append(f"\n\tper_device_train_batch_size: {args.per_device_train_batch_size} (from args) != "
                           f"{state.train_batch_size} (from trainer_state.json)")
    if differences:
        logger.warning("Warning: The following arguments do not match the ones in the `trainer_state.json` within "
                       "the checkpoint directory: " + "".join(differences))


def _delete_checkpoint(path):
    """Remove a rotated-out checkpoint folder: first renamed to a save's temporary name (one atomic step), then
    deleted, so a kill mid-deletion never leaves a half-deleted ``checkpoint-N`` to resume from (a missing
    optimizer.pt resumes with a fresh optimizer, silently, as transformers'), only a leftover that the next
    checkpoint save removes (``_remove_checkpoint_leftovers``)."""
    from .checkpoint import _TEMP_MARK
    doomed = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{_TEMP_MARK}{os.getpid()}-rotated.tmp")
    try:
        os.rename(path, doomed)
    except OSError:  # (a folder that cannot be renamed: deleted in place, as transformers does)
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_checkpoint_leftovers(folder):
    """What killed checkpoint saves and deletions left in the output folder (``.checkpoint-N.minilora-*``), each
    removed as the next save of its own ``checkpoint-N`` would (a swap cut between its renames is finished)."""
    from .checkpoint import _TEMP_MARK, remove_leftovers
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        # ".checkpoint-N.minilora-<pid>-x.tmp" is checkpoint-N's; "..checkpoint-N.minilora-<pid>-x.tmp.minilora-
        # <pid>-y.tmp" that of the adapter's save into the staging folder ".checkpoint-N.minilora-<pid>-x.tmp"
        target = entry[1:].rsplit(_TEMP_MARK, 1)[0]
        ours = re.match(r"\.*" + PREFIX_CHECKPOINT_DIR + r"-\d+(\.|$)", target)
        if entry.startswith(".") and _TEMP_MARK in entry and ours:
            remove_leftovers(os.path.join(folder, target))


def _checkpoints_by_age(folder):
    """The ``checkpoint-N`` paths oldest first, as transformers' rotation sorts them (``use_mtime=True``): by
    modification time, so a run resumed from an earlier checkpoint keeps the one it just wrote rather than
    the abandoned later ones; by step where the times span under a second (a filesystem whose times are not
    to be trusted, transformers says; and a run that fast)."""
    found = [os.path.join(folder, name) for _, name in _checkpoints(folder)]
    times = sorted((os.path.getmtime(path), path) for path in found)
    if len(times) > 1 and times[-1][0] - times[0][0] >= 1.0:
        return [path for _, path in times]
    return found


def _speed_metrics(split, start_time, num_samples=None, num_steps=None, num_tokens=None):
    runtime = time.time() - start_time
    result = {f"{split}_runtime": round(runtime, 4)}
    if runtime == 0:
        return result
    for name, count in (("samples", num_samples), ("steps", num_steps), ("tokens", num_tokens)):
        if count is not None:
            result[f"{split}_{name}_per_second"] = round(count / runtime, 3)
    return result


# ----------------------------------------------------------------------------------------------
# Data: samplers, unused columns
# ----------------------------------------------------------------------------------------------
class SeedableRandomSampler:
    """accelerate's ``SeedableRandomSampler`` (what the Trainer's ``RandomSampler`` becomes): epoch ``e`` is
    ``randperm(n)`` from a generator seeded ``seed + e``, so it depends on nothing else drawn before."""

    def __init__(self, data_source, seed):
        from .utils.data import RandomSampler
        self.generator = ml_random.Generator()
        self.sampler = RandomSampler(data_source, generator=self.generator)
        self.initial_seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.initial_seed + self.epoch)
        yield from self.sampler
        self.epoch += 1

    def __len__(self):
        return len(self.sampler)


def get_length_grouped_indices(lengths, batch_size, mega_batch_mult=None, generator=None):
    """transformers' order for ``train_sampling_strategy="group_by_length"``: a random permutation (``randperm``
    from ``generator``, else the global generator), cut into mega-batches of ``mega_batch_mult`` batches, each
    sorted longest first, the longest row of all moved to the very first place (an out-of-memory error comes
    at once)."""
    from .factories import randperm
    if mega_batch_mult is None:  # (50, or the count that makes 4 mega-batches; 1 for a tiny dataset)
        mega_batch_mult = min(len(lengths) // (batch_size * 4), 50) or 1
    indices = randperm(len(lengths), generator=generator)
    size = mega_batch_mult * batch_size
    megabatches = [sorted(indices[i:i + size].tolist(), key=lambda i: lengths[i], reverse=True)
                   for i in range(0, len(lengths), size)]
    longest = int(np.argmax([lengths[megabatch[0]] for megabatch in megabatches]))
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [i for megabatch in megabatches for i in megabatch]


class LengthGroupedSampler:
    """transformers' sampler for ``group_by_length``: rows of similar lengths in the same batch, a new draw at each
    epoch from the global generator (accelerate leaves it unseeded); the lengths are the ``length`` column's, or
    the model input's."""

    def __init__(self, batch_size, dataset=None, lengths=None, model_input_name=None, generator=None):
        if dataset is None and lengths is None:
            raise ValueError("One of dataset and lengths must be provided.")
        self.batch_size = batch_size
        if lengths is None:
            model_input_name = model_input_name if model_input_name is not None else "input_ids"
            if not _is_mapping(dataset[0]) or model_input_name not in dataset[0]:
                raise ValueError("Can only automatically infer lengths for datasets whose items are dictionaries with "
                                 f"an '{model_input_name}' key.")
            lengths = [len(feature[model_input_name]) for feature in dataset]
        self.lengths = lengths.tolist() if isinstance(lengths, Tensor) else lengths
        self.generator = generator

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=self.generator))


def _is_hf_dataset(dataset):
    """A ``datasets.Dataset`` (checked by its type's module: minilora does not need the library). Not a
    ``datasets.IterableDataset``: transformers drops its unused columns in the collator, as a list's."""
    from .utils.data import _is_stream
    return type(dataset).__module__.startswith("datasets") and hasattr(dataset, "remove_columns") and \
        not _is_stream(dataset)


def _set_epoch(loader, epoch):
    """accelerate's ``set_epoch`` on a loader: the sampler's (the seeded sampler draws each epoch's order from it)
    and the dataset's own, where it has one (DataLoaderShard's last branch, DataLoaderDispatcher's for a stream): a
    ``datasets.IterableDataset``'s shuffle buffer is seeded with seed + epoch, and a user's dataset may draw by it.
    transformers' Trainer calls it as each epoch starts, and accelerate's loader again as each pass over it starts
    (with its count of passes: the epoch in training, 0 in an evaluation's new loader)."""
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(getattr(loader, "dataset", None), "set_epoch"):
        loader.dataset.set_epoch(epoch)


class _RemoveColumnsCollator:
    """transformers' ``RemoveColumnsCollator``: each example's keys that the model's forward does not take
    are dropped before the collator sees them (a text column would break the padding)."""

    def __init__(self, collator, columns):
        self.collator, self.columns = collator, columns

    def __call__(self, features):
        return self.collator([{k: v for k, v in f.items() if k in self.columns} if isinstance(f, dict) else f
                              for f in features])


def _seed_worker(worker_id, num_workers, rank=0):
    """transformers' seed_worker: a data worker's Python, NumPy and torch generators seeded from its own seed."""
    from .models import set_seed
    set_seed(num_workers * rank + ml_random.initial_seed() % 2 ** 32)


def _one_ahead(batches):
    """The batches as accelerate's DataLoaderShard hands them out: each one only once the next was fetched (to
    know the last), so a dataset that draws random numbers draws them one batch earlier than the step."""
    current = next(batches, _END)
    while current is not _END:
        following = next(batches, _END)
        yield current
        current = following


_END = object()


def _is_mapping(outputs):
    """A dict or a ModelOutput (transformers' is an OrderedDict; minilora's has its mapping methods)."""
    return isinstance(outputs, dict) or callable(getattr(outputs, "items", None))


@dataclasses.dataclass
class LabelSmoother:
    """transformers' label smoothing (``label_smoothing_factor``): ``(1 - epsilon)`` x the mean negative
    log-likelihood of the labels + ``epsilon`` x the mean over all classes, both over the labelled positions
    (or ``num_items_in_batch``); ``shift_labels`` for a causal LM (position i predicts label i+1)."""
    epsilon: float = 0.1
    ignore_index: int = -100

    def __call__(self, model_output, labels, shift_labels=False, num_items_in_batch=None):
        from .nn.functional import log_softmax
        logits = model_output["logits"] if _is_mapping(model_output) else model_output[0]
        if shift_labels:
            logits, labels = logits[..., :-1, :], labels[..., 1:]
        log_probs = -log_softmax(logits, dim=-1)
        if labels.dim() == log_probs.dim() - 1:
            labels = labels.unsqueeze(-1)
        padding = labels.eq(self.ignore_index)
        nll = log_probs.gather(dim=-1, index=labels.clamp(min=0)).masked_fill(padding, 0.0)
        smoothed = log_probs.sum(dim=-1, keepdim=True, dtype=np.dtype("float32")).masked_fill(padding, 0.0)
        denominator = padding.numel() - padding.long().sum() if num_items_in_batch is None else num_items_in_batch
        return (1 - self.epsilon) * (nll.sum() / denominator) + \
            self.epsilon * (smoothed.sum() / (denominator * log_probs.shape[-1]))


def _unwrap_peft(model):
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


def _forward_parameters(model):
    """The names ``model``'s forward takes (a PEFT model's: its base model's, as transformers reads them)."""
    return inspect.signature(_unwrap_peft(model).forward).parameters


def _is_peft_model(model):
    from .lora import PeftModel
    return isinstance(model, PeftModel)


def _host(value):
    """A batch value as a NumPy array (Tensors and lists too)."""
    return value.numpy(force=True) if isinstance(value, Tensor) else np.asarray(value)


def _loss_sum(value=0.0):
    """The sum of the micro-batch losses between two logs: transformers' ``torch.tensor(0.0)``, a 0-d tensor of
    the default dtype (float32; float64 after ``set_default_dtype(float64)``), whatever the model's dtype."""
    from .dtypes import get_default_dtype
    return np.asarray(value, dtype=get_default_dtype())[()]


def _loss_values(loss):
    """An evaluation batch's loss in its own dtype (a float64 model's eval_loss is a float64 mean), bfloat16 as
    float32: what transformers' ``nested_numpify`` hands NumPy."""
    from .dtypes import is_bfloat16
    value = np.asarray(_host(loss))
    return value.astype(np.float32) if is_bfloat16(value.dtype) else value


def _as_tensors(batch):
    """A collated batch with its arrays as Tensors (``default_data_collator(return_tensors='np')`` and users'
    collators may hand back NumPy), as the model's forward is called with them."""
    return {k: Tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


def _concat_padded(arrays):
    """transformers' ``nested_concat`` with ``padding_index=-100``: rows of different lengths padded on the right."""
    arrays = [np.atleast_1d(a) for a in arrays]
    if arrays[0].ndim < 2 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    width = max(a.shape[1] for a in arrays)
    out = []
    for a in arrays:
        padded = np.full((a.shape[0], width) + a.shape[2:], -100, dtype=a.dtype)
        padded[:, :a.shape[1]] = a
        out.append(padded)
    return np.concatenate(out, axis=0)


def _align_special_token(name, tokenizer, config, generation_config, updated, several=False):
    """One id the tokenizer defines written into the model's config and generation config where it is missing;
    ``several`` (eos): the ids there are kept after it."""
    token_id = getattr(tokenizer, name, None)
    if token_id is None:
        return
    held = getattr(config, name, None)
    keep_list = isinstance(held, list)
    held = held if keep_list else [held]
    generating = getattr(generation_config, name, None) if generation_config is not None else None
    generating = generating if isinstance(generating, list) else [generating]
    if token_id in held and (generation_config is None or token_id in generating):
        return
    updated[name] = token_id
    setattr(config, name, [token_id, *(t for t in held if t != token_id)] if several and keep_list else token_id)
    if generation_config is not None:
        setattr(generation_config, name, [token_id, *(t for t in generating if t is not None and t != token_id)]
                if several else token_id)


def align_special_tokens(model, tokenizer):
    """transformers' Trainer, as training starts: the tokenizer's eos, bos and pad ids become the model's (a
    classification head finds each row's last token by ``config.pad_token_id``), with a warning naming them."""
    updated = {}
    generation_config = getattr(model, "generation_config", None)
    for name, several in (("eos_token_id", True), ("bos_token_id", False), ("pad_token_id", False)):
        _align_special_token(name, tokenizer, model.config, generation_config, updated, several)
    if updated:
        logger.warning("The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation "
                       "config. The model config and generation config were aligned accordingly, being updated "
                       f"with the tokenizer's values. Updated tokens: {updated}.")


def _neftune_post_forward_hook(module, inputs, output):
    """NEFTune: while training, the embeddings get uniform noise of magnitude alpha / sqrt(length x width),
    computed as transformers' hook does: ``alpha / torch.sqrt(torch.tensor(n))``, the root of an integer tensor in
    the default dtype (float32, float64 after ``set_default_dtype``; MKL's root, ``float32_math.mkl_sqrt``), and a
    number over a tensor is torch's ``__rtruediv__``, ``root.reciprocal() * alpha``: not one division."""
    if not module.training:
        return output
    from .dtypes import get_default_dtype
    from .factories import zeros_like
    from .float32_math import mkl_sqrt
    dtype = np.dtype(get_default_dtype()).type
    root = mkl_sqrt(np.array([output.shape[1] * output.shape[2]], dtype))[0]
    magnitude = float(dtype(1) / root * dtype(module.neftune_noise_alpha))
    return output + zeros_like(output).uniform_(-magnitude, magnitude)


def _activate_neftune(model, alpha):
    """transformers' activate_neftune: the hook on the input embeddings (a PEFT model's base model's)."""
    inner = model.base_model.model if _is_peft_model(model) else model
    embeddings = inner.get_input_embeddings()
    embeddings.neftune_noise_alpha = alpha
    return embeddings.register_forward_hook(_neftune_post_forward_hook)


# ----------------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------------
class Trainer:
    # transformers' switch for a compute_loss override: True, its loss is already a share of the whole accumulated
    # step (used as is); False, a per-batch mean (divided by the accumulation count); None, decided as transformers
    loss_is_scaled_for_ga = None

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, model_init=None, compute_loss_func=None, compute_metrics=None,
                 callbacks=None, optimizers=(None, None), optimizer_cls_and_kwargs=None,
                 preprocess_logits_for_metrics=None):
        from .models import set_seed
        self.args = TrainingArguments(output_dir="tmp_trainer") if args is None else args
        # skip_memory_metrics=False: each stage's host memory, from here on (transformers' TrainerMemoryTracker)
        self._memory_tracker = TrainerMemoryTracker(self.args.skip_memory_metrics)
        self._memory_tracker.start("init")
        for level in (self.args.log_level, self.args.log_level_replica):  # (transformers' get_process_log_level)
            if level not in LOG_LEVELS:
                raise KeyError(level)
        # (before model_init builds a model); full_determinism: transformers' enable_full_determinism
        set_seed(self.args.seed, deterministic=self.args.full_determinism)
        # Settings transformers copies here, so changing them on args later changes nothing (as there): the
        # batch size, NEFTune's alpha, and data_seed (accelerate's DataLoaderConfiguration holds it).
        self._train_batch_size = self.args.train_batch_size
        self.neftune_noise_alpha = self.args.neftune_noise_alpha
        self._data_seed = self.args.data_seed
        if model is None:
            if model_init is None:
                raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument")
            model = model_init()
        elif model_init is not None:
            raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
        self.model = self.model_wrapped = model
        self.model_init = model_init
        self._inspect_model(model)
        self.processing_class = processing_class
        default = DataCollatorWithPadding(processing_class) if processing_class is not None and \
            callable(getattr(processing_class, "pad", None)) else default_data_collator
        self.data_collator = data_collator if data_collator is not None else default
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_loss_func, self.compute_metrics = compute_loss_func, compute_metrics
        self.label_smoother = LabelSmoother(self.args.label_smoothing_factor) if self.args.label_smoothing_factor \
            else None
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self._validate_args()
        self._created_lr_scheduler = False
        flow = [DefaultFlowCallback, PrinterCallback if self.args.disable_tqdm else ProgressCallback]
        self.callback_handler = CallbackHandler(flow + list(callbacks or []), model, processing_class,
                                                self.optimizer, self.lr_scheduler)
        os.makedirs(self.args.output_dir, exist_ok=True)
        self.control, self.state = TrainerControl(), TrainerState()
        self.is_in_train, self.current_flos = False, 0
        if getattr(model, "config", None) is not None:
            model.config.use_cache = self.args.use_cache
        self.control = self.callback_handler.call_event("on_init_end", self.args, self.state, self.control)
        self._memory_tracker.stop_and_update_metrics("init")

    def _inspect_model(self, model):
        """What the loop needs to know of the model: whether its forward takes ``num_items_in_batch`` (its
        loss is then a sum over the step's count), its label arguments, whether its loss shifts the labels."""
        inner, params = _unwrap_peft(model), _forward_parameters(model)
        self.model_accepts_loss_kwargs = getattr(inner, "accepts_loss_kwargs", None)
        if self.model_accepts_loss_kwargs is None:  # as transformers: a forward with **kwargs (a named
            # num_items_in_batch alone is not read; minilora's models show transformers' **kwargs signature)
            self.model_accepts_loss_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.label_names = self.args.label_names if self.args.label_names is not None else \
            [name for name in params if "label" in name]
        # a causal LM predicts token i+1 at position i: the count of targets skips each row's first label
        self._loss_shifts_labels = type(inner).__name__.endswith("ForCausalLM")

    def _validate_args(self):
        args = self.args
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ValueError(f"You have set `args.eval_strategy` to {args.eval_strategy} but you didn't pass an "
                             "`eval_dataset` to `Trainer`. Either set `args.eval_strategy` to `no` or pass an "
                             "`eval_dataset`. ")
        if (args.save_strategy == "best" or args.load_best_model_at_end) and args.metric_for_best_model is None:
            raise ValueError("`args.metric_for_best_model` must be provided when using 'best' save_strategy or if "
                             "`args.load_best_model_at_end` is set to `True`.")
        if self.optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise RuntimeError("Passing both `optimizers` and `optimizer_cls_and_kwargs` arguments is incompatible.")

    # -- callbacks -------------------------------------------------------------------------------
    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def _event(self, event, **kwargs):
        self.control = self.callback_handler.call_event(event, self.args, self.state, self.control, **kwargs)

    # -- data ------------------------------------------------------------------------------------
    def _signature_columns(self):
        return list(_forward_parameters(self.model)) + list({"label", "label_ids", *self.label_names})

    def _get_dataloader(self, dataset, batch_size, make_sampler, training=False):
        """``make_sampler(dataset)`` orders a dataset with a length; an iterable one is read in its own order.
        With ``dataloader_num_workers``, a training batch's worker is seeded as transformers' seed_worker."""
        from .utils.data import DataLoader
        collator = self.data_collator
        if self.args.remove_unused_columns:
            columns = self._signature_columns()
            if _is_hf_dataset(dataset):
                unused = [c for c in dataset.column_names if c not in columns]
                if len(unused) == len(dataset.column_names):
                    raise ValueError(f"No columns in the dataset match the model's forward method signature: "
                                     f"({', '.join(columns)}). The following columns have been ignored: "
                                     f"[{', '.join(unused)}]. Please check the dataset and model. You may need to "
                                     "set `remove_unused_columns=False` in `TrainingArguments`.")
                dataset = dataset.remove_columns(unused)
            else:
                collator = _RemoveColumnsCollator(collator, set(columns))
        # the sampler sees the dataset the loader reads, as transformers 5's: a datasets.Dataset's `length` column
        # (length_column_name) is one of the unused columns, so group_by_length measures the model's input
        sampler = make_sampler(dataset) if hasattr(dataset, "__len__") else None
        args = self.args
        workers = {"num_workers": args.dataloader_num_workers,  # (torch refuses these two without workers)
                   "persistent_workers": args.dataloader_persistent_workers,
                   "multiprocessing_context": args.dataloader_multiprocessing_context}
        if args.dataloader_num_workers:
            workers["prefetch_factor"] = args.dataloader_prefetch_factor
            if training and sampler is not None:
                workers["worker_init_fn"] = functools.partial(_seed_worker, num_workers=args.dataloader_num_workers)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                          drop_last=args.dataloader_drop_last, **workers)

    def _get_train_sampler(self, dataset):
        from .utils.data import SequentialSampler
        if self.args.train_sampling_strategy == "sequential":
            return SequentialSampler(dataset)
        if self.args.train_sampling_strategy == "group_by_length":
            column = self.args.length_column_name
            lengths = dataset[column] if _is_hf_dataset(dataset) and column in dataset.column_names else None
            input_name = self.processing_class.model_input_names[0] if self.processing_class is not None else None
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        dataset=dataset, lengths=lengths, model_input_name=input_name)
        # accelerate's seed: the data_seed the Trainer was made with, else the global generator's seed now (the
        # one Trainer() set from args.seed, unless the user seeded it since)
        return SeedableRandomSampler(dataset, self._data_seed if self._data_seed is not None else
                                     ml_random.initial_seed())

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._get_dataloader(self.train_dataset, self._train_batch_size, self._get_train_sampler,
                                    training=True)

    def get_eval_dataloader(self, eval_dataset=None):
        from .utils.data import SequentialSampler
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else \
            eval_dataset if eval_dataset is not None else self.eval_dataset
        return self._get_dataloader(dataset, self.args.eval_batch_size, SequentialSampler)

    def get_test_dataloader(self, test_dataset):
        from .utils.data import SequentialSampler
        return self._get_dataloader(test_dataset, self.args.eval_batch_size, SequentialSampler)

    # -- optimizer and schedule ------------------------------------------------------------------
    def get_decay_parameter_names(self, model):
        return get_decay_parameter_names(model)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        """transformers' table for torch's optimizers; the others (bitsandbytes, GaLore, ...) refused by name."""
        from . import optim
        given = _parse_optim_args(args.optim_args)  # (first, for every optimizer: a malformed string fails as there)
        if args.optim not in BUILT_OPTIMIZERS:
            raise ValueError(f"Trainer: optim={args.optim!r} is not available in minilora (it builds "
                             f"{', '.join(BUILT_OPTIMIZERS)})")
        kwargs = {"lr": args.learning_rate}
        if args.optim.startswith("adamw"):
            kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
            if args.optim == "adamw_torch_fused":
                kwargs["fused"] = True
            return optim.AdamW, kwargs
        if args.optim == "adafactor":  # (transformers' own Adafactor, at the given lr; optim_args are not read)
            from .optim.hf_adafactor import Adafactor
            return Adafactor, {**kwargs, "scale_parameter": False, "relative_step": False}
        floats, flags = _OPTIM_ARGS[args.optim]
        kwargs.update({k: float(given[k]) for k in floats if k in given})
        kwargs.update({k: given[k].lower() in ("true", "1", "yes") for k in flags if k in given})
        return {"sgd": optim.SGD, "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop}[args.optim], kwargs

    def create_optimizer(self, model=None):
        model = self.model if model is None else model
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(model))
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
                      {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
            cls, kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = cls(groups, **kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        from .optim import get_scheduler
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(self.args.lr_scheduler_type, optimizer or self.optimizer,
                                              num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                                              num_training_steps=num_training_steps,
                                              scheduler_specific_kwargs=self.args.lr_scheduler_kwargs)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps):
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps)

    def _get_learning_rate(self):
        """The schedule's last lr; the optimizer's first group's for the two stepped on metrics (transformers')."""
        lr = self.optimizer.param_groups[0]["lr"] if self._steps_on_metrics() else self.lr_scheduler.get_last_lr()[0]
        return lr.item() if isinstance(lr, Tensor) else lr

    # -- the loss --------------------------------------------------------------------------------
    def _autocast(self):
        import contextlib
        if self.args.bf16:
            from .amp import autocast
            from .dtypes import bfloat16
            return autocast("cpu", dtype=bfloat16)
        return contextlib.nullcontext()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        own_loss = self.label_smoother is not None or self.compute_loss_func is not None
        labels = inputs.pop("labels") if own_loss and "labels" in inputs else None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None:
            loss = self.label_smoother(outputs, labels, shift_labels=self._loss_shifts_labels,
                                       num_items_in_batch=num_items_in_batch)
        else:
            if _is_mapping(outputs) and "loss" not in outputs:
                raise ValueError(f"The model did not return a loss from the inputs, only the following keys: "
                                 f"{','.join(outputs.keys())}. For reference, the inputs it received are "
                                 f"{','.join(inputs.keys())}.")
            loss = outputs["loss"] if _is_mapping(outputs) else outputs[0]
        return (loss, outputs) if return_outputs else loss

    def _num_items_in_batch(self, batches):
        """The step's number of target tokens, over all its micro-batches (an int64 Tensor), or None."""
        if not batches or "labels" not in batches[0] or not (self.model_accepts_loss_kwargs or self.compute_loss_func):
            return None
        total = 0
        for batch in batches:
            labels = batch["shift_labels"] if "shift_labels" in batch else batch["labels"]
            labels = _host(labels)
            if "shift_labels" not in batch and self._loss_shifts_labels:
                labels = labels[..., 1:]
            total += int((labels != IGNORE_INDEX).sum())
        return Tensor(np.array(total, dtype=np.int64))

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        with self._autocast():
            loss = self.compute_loss(model, _as_tensors(inputs), num_items_in_batch=num_items_in_batch)
        scaled_for_accumulation = self.loss_is_scaled_for_ga
        if scaled_for_accumulation is None:  # (normalized by num_items_in_batch, by the model or compute_loss_func)
            scaled_for_accumulation = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
                self.compute_loss_func is not None
        if not scaled_for_accumulation:
            loss = loss / self.current_gradient_accumulation_steps
        loss.backward()
        return loss.detach()

    def floating_point_ops(self, inputs):
        """transformers' estimate: 6 x tokens x the parameters outside the embeddings (forward and backward)."""
        from .nn import Embedding
        ids = inputs.get("input_ids") if isinstance(inputs, dict) else None
        if ids is None:
            return 0
        embeddings = {id(p) for m in self.model.modules() if isinstance(m, Embedding) for p in m.parameters()}
        count = sum(p.numel() for p in self.model.parameters() if id(p) not in embeddings)
        return 6 * int(_host(ids).size) * count

    # -- training --------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        if trial is not None:
            raise ValueError("Trainer.train(trial=...): minilora has no hyperparameter search")
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        self._memory_tracker.start("train")
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        self.is_in_train = True
        if self.model_init is not None:
            from .models import set_seed
            set_seed(self.args.seed, deterministic=self.args.full_determinism)
            self.model = self.model_wrapped = self.model_init()
            self.optimizer, self.lr_scheduler = None, None
        if self.args.activation_checkpointing:
            self._enable_activation_checkpointing()
        if self.neftune_noise_alpha is not None:
            self.neftune_hook_handle = _activate_neftune(self.model, self.neftune_noise_alpha)
        if self.processing_class is not None and getattr(self.model, "config", None) is not None:
            align_special_tokens(self.model, self.processing_class)
        if resume_from_checkpoint is not None:
            self._load_from_checkpoint(resume_from_checkpoint)
        try:
            # (another process's run writing checkpoints into this output_dir meanwhile is refused: its checkpoint-N
            # would replace this run's, and a resume continue the other run)
            with writing_alone(self.args.output_dir, "Trainer.train") if self.args.output_dir else nullcontext():
                return self._inner_training_loop(resume_from_checkpoint, ignore_keys_for_eval)
        finally:
            self.is_in_train = False
            if self.neftune_noise_alpha is not None:  # (the embeddings' forward as it was)
                self.neftune_hook_handle.remove()

    def _enable_activation_checkpointing(self):
        """``activation_checkpointing=True``: the model's own gradient checkpointing (each decoder layer's
        activations recomputed in backward), with ``activation_checkpointing_kwargs`` for the checkpoint call."""
        kwargs = dict(self.args.activation_checkpointing_kwargs or {})
        every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
        if every_n_layers != 1 or offload:
            raise ValueError("activation_checkpointing_kwargs: minilora checkpoints every decoder layer and keeps "
                             "its inputs in memory (every_n_layers=1, offload=False)")
        if not callable(getattr(self.model, "gradient_checkpointing_enable", None)):
            raise ValueError(f"activation_checkpointing=True: {type(self.model).__name__} has no "
                             "gradient_checkpointing_enable")
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)

    def _training_sizes(self, loader):
        """(epochs, update steps per epoch, batches per epoch, max_steps, samples), as transformers counts them."""
        args, accumulation = self.args, self.args.gradient_accumulation_steps
        if not hasattr(loader.dataset, "__len__"):
            if args.max_steps <= 0:
                raise ValueError(f"args.max_steps must be set to a positive value if dataloader does not have a "
                                 f"length, was {args.max_steps}")
            return 2 ** 63 - 1, args.max_steps, args.max_steps * accumulation, args.max_steps, \
                args.max_steps * self._train_batch_size * accumulation
        batches = len(loader)
        per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
        if args.max_steps > 0:
            max_steps = args.max_steps
            epochs = max_steps // per_epoch + int(max_steps % per_epoch > 0)
            samples = max_steps * self._train_batch_size * accumulation
        else:
            max_steps = math.ceil(args.num_train_epochs * per_epoch)
            epochs = math.ceil(args.num_train_epochs)
            samples = len(loader.dataset) * args.num_train_epochs
        return epochs, per_epoch, batches, max_steps, samples

    def _inner_training_loop(self, resume_from_checkpoint, ignore_keys_for_eval):
        args = self.args
        loader = self.get_train_dataloader()
        epochs, per_epoch, steps_in_epoch, max_steps, num_samples = self._training_sizes(loader)
        self.state = TrainerState(train_batch_size=self._train_batch_size,
                                  stateful_callbacks=_exported(self._exportable_states()))
        self.state.compute_steps(args, max_steps)
        epochs_trained, skip = 0, 0
        if resume_from_checkpoint is not None:
            self.state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
            best = self.state.best_model_checkpoint
            if best is not None and not os.path.isdir(best):
                logger.warning(f"The best checkpoint {best} recorded in the resumed state does not exist anymore. "
                               "Ignoring it for this run.")
                self.state.best_model_checkpoint = None
            _compare_trainer_and_checkpoint_args(args, self.state)
            self._load_callback_state()
            epochs_trained = self.state.global_step // per_epoch
            if not args.ignore_data_skip:
                skip = self.state.global_step % per_epoch * args.gradient_accumulation_steps
        self.state.max_steps, self.state.num_train_epochs = max_steps, epochs
        if self._created_lr_scheduler:  # (a second train() builds its schedule for its own step count)
            self.lr_scheduler, self._created_lr_scheduler = None, False
        self.create_optimizer_and_scheduler(max_steps)
        if resume_from_checkpoint is not None:
            self._load_optimizer_and_scheduler(resume_from_checkpoint)
        handler = self.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = self.model, self.optimizer, self.lr_scheduler
        handler.train_dataloader = loader

        start_time = time.time()
        self._initial_global_step = self.state.global_step
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._tr_loss = _loss_sum()
        self._total_loss_scalar, self._globalstep_last_logged = 0.0, self.state.global_step
        self.model.zero_grad()
        self._event("on_train_begin")
        # (a resumed run's start evaluation is in its log: transformers evaluates again, logged at the resumed step)
        if args.eval_on_start and resume_from_checkpoint is None:
            self.evaluate(ignore_keys=ignore_keys_for_eval)
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            epochs_trained = self._resumed_with_nothing_left(resume_from_checkpoint, epochs)
        elif resume_from_checkpoint is not None:
            self._restore_unlogged_loss()
        for epoch in range(epochs_trained, epochs):
            self._event("on_epoch_begin")
            resumed = resume_from_checkpoint if epoch == epochs_trained else None
            self._run_epoch(loader, epoch, steps_in_epoch, per_epoch, resumed, skip, ignore_keys_for_eval, start_time)
            if self.control.should_training_stop:
                break
        return self._finalize_training(num_samples, start_time)

    def _resumed_with_nothing_left(self, checkpoint, epochs):
        """A resume from the run's last checkpoint (killed after it, before its closing files): no step is left to
        train, so no epoch runs, and the generators are put back as saved, where the uninterrupted run left them.
        transformers runs the rest of an epoch that ``max_steps`` ended part-way through, one update past
        ``max_steps`` (its stop rule looks at ``global_step`` only after a step), and leaves the generators as
        they were before the resume, in both cases; returns the epoch to start at: ``epochs``."""
        self._load_rng_state(checkpoint)
        return epochs

    def _run_epoch(self, loader, epoch, steps_in_epoch, per_epoch, resumed, skip, ignore_keys_for_eval, start_time):
        args, accumulation = self.args, self.args.gradient_accumulation_steps
        step, grad_norm, learning_rate, first_update, sync_rng = -1, None, None, 0, False
        if resumed is not None and skip > 0 and not args.ignore_data_skip:
            step, first_update, sync_rng = skip - 1, skip // accumulation, True
        elif resumed is not None:
            self._load_rng_state(resumed)
        _set_epoch(loader, epoch)  # the Trainer's call,
        _set_epoch(loader, epoch)  # and the loader's own as its pass starts
        batches = _one_ahead(iter(loader))
        for _ in range(skip if sync_rng else 0):  # (accelerate's skip_first_batches)
            next(batches, None)
        remainder = steps_in_epoch % accumulation or accumulation
        for update in range(first_update, per_epoch):
            wanted = accumulation if update != per_epoch - 1 else remainder
            samples = [b for b in (next(batches, None) for _ in range(wanted)) if b is not None]
            num_items = self._num_items_in_batch(samples)
            self.current_gradient_accumulation_steps = len(samples)
            if sync_rng:  # the batches of the steps already done were drawn: the generators as saved
                self._load_rng_state(resumed)
                sync_rng = False
            for inputs in samples:
                step += 1
                sync_step = (step + 1) % accumulation == 0 or step + 1 == steps_in_epoch
                if step % accumulation == 0:
                    self._event("on_step_begin")
                loss = self.training_step(self.model, inputs, num_items)
                self._accumulate_loss(loss)
                self._track_num_input_tokens(inputs)
                self.current_flos += float(self.floating_point_ops(inputs))
                if sync_step:
                    grad_norm, learning_rate = self._optimizer_step()
                    self.state.global_step += 1
                    self.state.epoch = epoch + (step + 1) / steps_in_epoch
                    self._event("on_step_end")
                    self._maybe_log_save_evaluate(grad_norm, learning_rate, ignore_keys_for_eval, start_time)
                else:
                    self._event("on_substep_end")
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        if step < 0:
            warnings.warn(f"There seems not to be a single sample in your epoch_iterator, stopping training at step "
                          f"{self.state.global_step}!", stacklevel=3)
            self.control.should_training_stop = True
        self._event("on_epoch_end")
        self._maybe_log_save_evaluate(grad_norm, learning_rate, ignore_keys_for_eval, start_time)

    def _track_num_input_tokens(self, inputs):
        """``include_num_input_tokens_seen``: "all" counts every input id, "non_padding" the attention mask's
        ones (else the ids that are not the tokenizer's pad id)."""
        mode = self.args.include_num_input_tokens_seen
        name = getattr(self.model, "main_input_name", "input_ids")
        if mode == "no" or name not in inputs:
            return
        ids = _host(inputs[name])
        if mode == "non_padding" and "attention_mask" in inputs:
            count = _host(inputs["attention_mask"]).sum()
        elif mode == "non_padding" and getattr(self.processing_class, "pad_token_id", None) is not None:
            count = (ids != self.processing_class.pad_token_id).sum()
        else:
            count = ids.size
        self.state.num_input_tokens_seen += int(count)

    def _accumulate_loss(self, loss):
        """A NaN or infinite micro-batch loss adds the mean of the losses logged so far instead (transformers'
        ``logging_nan_inf_filter``)."""
        value, total = np.asarray(_host(loss)), self._tr_loss
        if self.args.logging_nan_inf_filter and not np.isfinite(value).all():
            self._tr_loss = total + total / total.dtype.type(1 + self.state.global_step - self._globalstep_last_logged)
        else:  # (torch's 0-d in-place add: computed in the wider dtype, rounded to the sum's)
            wide = np.result_type(total.dtype, value.dtype)
            self._tr_loss = (total.astype(wide) + value.astype(wide)).astype(total.dtype)[()]

    def _optimizer_step(self):
        """Clip (the norm before clipping is returned, even with clipping off), step, schedule, zero."""
        from .optim import clip_grad_norm_
        limit = self.args.max_grad_norm if self.args.max_grad_norm > 0 else float("inf")
        grad_norm = clip_grad_norm_(self.model.parameters(), limit)
        self._event("on_pre_optimizer_step")
        self.optimizer.step()
        self._event("on_optimizer_step")
        learning_rate = self._get_learning_rate()  # (the rate this step used)
        if not self._steps_on_metrics():
            self.lr_scheduler.step()
        self.model.zero_grad()
        return grad_norm, learning_rate

    def _maybe_log_save_evaluate(self, grad_norm, learning_rate, ignore_keys_for_eval, start_time):
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            loss_scalar = float(self._tr_loss)
            self._tr_loss = _loss_sum()
            logs = {"loss": loss_scalar / (self.state.global_step - self._globalstep_last_logged)}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm.item() if isinstance(grad_norm, Tensor) else grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else self._get_learning_rate()
            self._total_loss_scalar += loss_scalar
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            self.log(logs, start_time)
        if self.control.should_evaluate:
            metrics = self.evaluate(ignore_keys=ignore_keys_for_eval)
            if self._steps_on_metrics():  # (ReduceLROnPlateau, GreedyLR: one step per evaluation, on its metric)
                self.lr_scheduler.step(metrics[self._metric_name(metrics)])
            is_new_best = self._determine_best_metric(metrics)
            if self.args.save_strategy == "best":
                self.control.should_save = is_new_best
        if self.control.should_save:
            self._save_checkpoint()
            self._event("on_save")

    def store_flos(self):
        self.state.total_flos += self.current_flos
        self.current_flos = 0

    def _finalize_training(self, num_samples, start_time):
        self._total_loss_scalar += float(self._tr_loss)
        self._tr_loss = _loss_sum()
        steps_run = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(steps_run, 0.001)
        share = steps_run / max(self.state.max_steps, 1)  # (of the whole schedule's samples: this call's)
        metrics = _speed_metrics("train", start_time, num_samples=num_samples * share, num_steps=steps_run)
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self._memory_tracker.stop_and_update_metrics("train", metrics)
        self.log(metrics)
        best = self.state.best_model_checkpoint
        if self.args.load_best_model_at_end and best is not None:
            self._load_model_weights(best, trainable=False)
        if best is not None and self.args.save_total_limit == 1:  # (the last checkpoint goes: the best one stays)
            for _, name in _checkpoints(self.args.output_dir):
                if not os.path.samefile(os.path.join(self.args.output_dir, name), best):
                    _delete_checkpoint(os.path.join(self.args.output_dir, name))
        self._event("on_train_end")
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _steps_on_metrics(self):
        """ReduceLROnPlateau and GreedyLR step after each evaluation, on its metric, not after each step."""
        from .optim.lr_scheduler import GreedyLR, ReduceLROnPlateau
        return isinstance(self.lr_scheduler, (ReduceLROnPlateau, GreedyLR))

    def _metric_name(self, metrics):
        """``metric_for_best_model`` as the key of the evaluation's metrics (``eval_`` in front)."""
        name = self.args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        if name not in metrics:
            raise KeyError(f"The `metric_for_best_model` training argument is set to '{name}', which is not found in "
                           f"the evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. "
                           "Consider changing the `metric_for_best_model` via the TrainingArguments.")
        return name

    def _determine_best_metric(self, metrics):
        """Whether this evaluation's ``metric_for_best_model`` is the best so far (``greater_is_better``)."""
        if self.args.metric_for_best_model is None:
            return False
        name = self._metric_name(metrics)
        better = np.greater if self.args.greater_is_better else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
        if not better(metrics[name], self.state.best_metric):
            return False
        self.state.best_metric = metrics[name]
        if self.args.save_strategy in ("steps", "epoch", "best"):
            self.state.best_global_step = self.state.global_step
        return True

    def log(self, logs, start_time=None):
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(_speed_metrics("train", start_time, num_tokens=tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._event("on_log", logs=logs)

    # -- evaluation and prediction ---------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if isinstance(dataset, dict):
            metrics = {}
            for name, one in dataset.items():
                metrics.update(self.evaluate(one if override else name, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        self._memory_tracker.start("eval")
        loader = self.get_eval_dataloader(eval_dataset)
        start_time = time.time()
        output = self.evaluation_loop(loader, "Evaluation", True if self.compute_metrics is None else None,
                                      ignore_keys, metric_key_prefix)
        output.metrics.update(_speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                             num_steps=math.ceil(output.num_samples / self.args.eval_batch_size)))
        self.log(output.metrics)
        self._event("on_evaluate", metrics=output.metrics)
        self._memory_tracker.stop_and_update_metrics("eval", output.metrics)  # (after the log, as transformers)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        self._memory_tracker.start("test")
        loader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(loader, "Prediction", None, ignore_keys, metric_key_prefix)
        output.metrics.update(_speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                             num_steps=math.ceil(output.num_samples / self.args.eval_batch_size)))
        self._event("on_predict", metrics=output.metrics)
        self._memory_tracker.stop_and_update_metrics("test", output.metrics)
        return PredictionOutput(output.predictions, output.label_ids, output.metrics)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """Each batch's loss counts once per example it holds: accelerate's ``gather_for_metrics`` repeats it
        ``eval_batch_size`` times and cuts the last batch to its examples (from the dataset's length, or, for an
        iterable dataset, from the batch seen); eval_loss is the mean of them all."""
        args = self.args
        loss_only = prediction_loss_only if prediction_loss_only is not None else args.prediction_loss_only
        self.model.eval()
        self.callback_handler.eval_dataloader = dataloader
        losses, preds, labels, ids, seen = [], [], [], [], 0
        main_input = getattr(self.model, "main_input_name", "input_ids")
        _set_epoch(dataloader, 0)  # (a new loader's first pass)
        for inputs in dataloader:
            loss, logits, label = self.prediction_step(self.model, inputs, loss_only, ignore_keys)
            examples = len(_host(next(iter(inputs.values()))))  # (transformers' find_batch_size)
            seen += examples
            if loss is not None:
                losses.append(np.repeat(_loss_values(loss), examples))
            if "inputs" in args.include_for_metrics:
                ids.append(_host(inputs[main_input]))
            if logits is not None:
                logits = self.preprocess_logits_for_metrics(logits, label) \
                    if self.preprocess_logits_for_metrics is not None else logits
                preds.append(_host(logits))
            if label is not None:
                labels.append(_host(label))
            self._event("on_prediction_step")
        # eval_do_concat_batches=False: each a list of the batches' arrays
        gathered = _concat_padded if args.eval_do_concat_batches else list
        all_preds, all_labels, all_ids, all_losses = (gathered(x) if x else None for x in (preds, labels, ids, losses))
        metrics = {}
        if self.compute_metrics is not None and all_preds is not None and all_labels is not None:
            metrics = self.compute_metrics(EvalPrediction(
                predictions=all_preds, label_ids=all_labels, inputs=all_ids,
                losses=all_losses if "loss" in args.include_for_metrics else None))
        metrics = _plain(metrics)  # (transformers' denumpify_detensorize)
        if losses:
            all_losses = np.concatenate(losses)
            finite = np.isfinite(all_losses)
            if args.logging_nan_inf_filter and finite.any():
                all_losses = all_losses[finite]
            metrics[f"{metric_key_prefix}_loss"] = all_losses.mean().item()
        for key in list(metrics):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        if self.is_in_train:  # (an evaluation during training hands the model back in training mode)
            self.model.train()
        size = len(dataloader.dataset) if hasattr(dataloader.dataset, "__len__") else seen
        return EvalLoopOutput(all_preds, all_labels, metrics, size)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        if ignore_keys is None:
            ignore_keys = getattr(getattr(self.model, "config", None), "keys_to_ignore_at_inference", None) or \
                ["past_key_values", "cache"]
        labels = None
        if has_labels:
            labels = tuple(inputs.get(name) for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
        with no_grad(), self._autocast():
            if has_labels:
                num_items = self._num_items_in_batch([inputs])
                loss, outputs = self.compute_loss(model, _as_tensors(inputs), return_outputs=True,
                                                  num_items_in_batch=num_items)
                loss = loss.detach().mean()
                skip = set(ignore_keys) | {"loss"}
            else:
                loss, outputs, skip = None, model(**_as_tensors(inputs)), set(ignore_keys)
        if prediction_loss_only:
            return loss, None, None
        if _is_mapping(outputs):
            logits = tuple(v for k, v in outputs.items() if k not in skip and v is not None)
        else:
            logits = tuple(outputs[1:] if has_labels else outputs)
        logits = logits[0] if len(logits) == 1 else logits
        return loss, logits, labels

    # -- the helpers transformers' example scripts call after train() -----------------------------
    def get_num_trainable_parameters(self):
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def get_learning_rates(self):
        if self.optimizer is None:
            raise ValueError("Trainer optimizer is None, please make sure you have setup the optimizer before.")
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_optimizer_group(self, param=None):
        if self.optimizer is None:
            raise ValueError("Trainer optimizer is None, please make sure you have setup the optimizer before.")
        if param is not None:
            for group in self.optimizer.param_groups:
                if any(p is param for p in group["params"]):
                    return group
        return [group["params"] for group in self.optimizer.param_groups]

    def metrics_format(self, metrics):
        """transformers' human-readable metrics: memory in MB, runtimes as h:mm:ss.cc, flos in GF, floats to 4
        places. (transformers 5.25 binds its one-argument function here, so its ``trainer.metrics_format(m)`` is
        a TypeError; ``log_metrics`` calls the function, as this method.)"""
        formatted = dict(metrics)
        for key, value in formatted.items():
            if "_mem_" in key:
                formatted[key] = f"{value >> 20}MB"
            elif "_runtime" in key:
                formatted[key] = f"{datetime.timedelta(seconds=int(value))}.{int(abs(value - int(value)) * 100):02d}"
            elif key == "total_flos":
                formatted[key] = f"{int(value) >> 30}GF"
            elif isinstance(value, float):
                formatted[key] = round(value, 4)
        return formatted

    def log_metrics(self, split, metrics):
        print(f"***** {split} metrics *****")
        formatted = self.metrics_format(metrics)
        key_width = max(len(str(key)) for key in formatted)
        value_width = max(len(str(value)) for value in formatted.values())
        for key in sorted(formatted):
            print(f"  {key: <{key_width}} = {formatted[key]:>{value_width}}")

    def save_metrics(self, split, metrics, combined=True):
        """``{split}_results.json`` and, with ``combined``, these metrics merged into all_results.json: transformers'
        files and text, each written whole (transformers opens them with "w": a kill mid-write left an empty
        all_results.json, and the next run's merge a JSONDecodeError; here a damaged one is named)."""
        from .checkpoint import load_json
        _write_json_text(os.path.join(self.args.output_dir, f"{split}_results.json"), metrics)
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            merged = load_json(path) if os.path.exists(path) else {}
            if not isinstance(merged, dict):
                raise TypeError(f"{path}: all_results.json holds a JSON object of metrics, not a "
                                f"{type(merged).__name__}")
            merged.update(metrics)
            _write_json_text(path, merged)

    def save_state(self):
        """trainer_state.json in ``output_dir`` (``save_model`` writes the model and tokenizer only)."""
        self.state.save_to_json(os.path.join(self.args.output_dir, TRAINER_STATE_NAME))

    # -- saving and resuming ---------------------------------------------------------------------
    def save_model(self, output_dir=None, _internal_call=False):
        """``save_pretrained`` into ``output_dir`` (a PEFT model: its adapter files), the tokenizer beside it,
        and the arguments in ``training_args.bin``, the names transformers writes there, as one unit: the folder is
        swapped for a new one holding the new files, the old folder's others hard-linked in (the run's
        ``checkpoint-N`` folders, logs, a user's notes: the same files, never copies), so a kill or a full disk
        mid-save leaves the previous save whole, never new weights beside the old config or arguments (transformers
        writes file after file into the folder). An older save's weight files the new one does not write are left
        out. Where the folder cannot be swapped (a run holds it, a mount point) or hard links cannot be made, each
        file replaces its old version whole instead (``atomic_folder(links_only=True)``)."""
        from .checkpoint import atomic_folder
        output_dir = self.args.output_dir if output_dir is None else output_dir
        stale = []  # (filled once the new files are known: read after the block)
        with atomic_folder(output_dir, replaces=stale, links_only=True) as staging:
            self._save(staging)
            if any(fnmatch.fnmatch(name, pattern) for name in os.listdir(staging) for pattern in _MODEL_WEIGHTS):
                stale.extend(_MODEL_WEIGHTS)  # (an adapter's save leaves a full model's files alone, as there)

    def _save(self, output_dir):
        """The files ``save_model`` writes, into the new, empty folder ``output_dir``."""
        from .serialization import save
        if callable(getattr(self.model, "save_pretrained", None)):
            self.model.save_pretrained(output_dir)
        else:  # (transformers: "Trainer.model is not a `PreTrainedModel`, only saving its state dict")
            from .checkpoint import save_file
            save_file({k: v.numpy(force=True) for k, v in self.model.state_dict().items()},
                      os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
        tokenizer = self.processing_class or getattr(self.data_collator, "tokenizer", None)
        if tokenizer is not None and callable(getattr(tokenizer, "save_pretrained", None)):
            tokenizer.save_pretrained(output_dir)
        save({k: v for k, v in self.args.to_dict().items() if v is not None}, os.path.join(output_dir,
                                                                                              TRAINING_ARGS_NAME))

    def _save_checkpoint(self):
        """transformers' ``checkpoint-N`` files, but the folder appears as one unit (``atomic_folder``): written
        under a temporary name and renamed when whole. transformers writes into ``checkpoint-N`` itself, so a
        kill or a full disk between the model file and trainer_state.json leaves a newest checkpoint that
        ``resume_from_checkpoint=True`` picks and cannot resume from. A ``checkpoint-N`` already there (an
        earlier run's) is replaced whole, none of its files kept (its optimizer.pt beside a
        ``save_only_model`` checkpoint would be resumed from)."""
        from .checkpoint import atomic_folder
        folder = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.store_flos()
        _remove_checkpoint_leftovers(self.args.output_dir)
        with atomic_folder(folder, replaces=("*",)) as staging:
            self._write_checkpoint(staging, folder)
        self._rotate_checkpoints()

    def _write_checkpoint(self, staging, folder):
        """The checkpoint's files into ``staging``, the folder that becomes ``folder`` once they are all there."""
        from .serialization import save
        self.save_model(staging, _internal_call=True)  # (a subclass's save_model runs here too, as in transformers)
        if self.state.best_global_step:
            best = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if best == folder or os.path.exists(best):  # (this very checkpoint: transformers' is on disk by now)
                self.state.best_model_checkpoint = best
        if not self.args.save_only_model:
            save(self.optimizer.state_dict(), os.path.join(staging, OPTIMIZER_NAME))
            save(self.lr_scheduler.state_dict(), os.path.join(staging, SCHEDULER_NAME))
            save(_torch_loadable(generator_states()), os.path.join(staging, RNG_STATE_NAME))
        for exportable in self._exportable_states():
            name, saved = type(exportable).__name__, exportable.state()
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(saved)
            else:
                self.state.stateful_callbacks[name] = saved
        self._keep_unlogged_loss()
        self.state.save_to_json(os.path.join(staging, TRAINER_STATE_NAME))

    def _keep_unlogged_loss(self):
        """The losses summed since the last log, and that log's step, go into the checkpoint (its TrainerControl's
        ``attributes``, which transformers sets on its control and otherwise ignores), so a run resumed there logs
        the same mean over the steps between two logs as the uninterrupted run. transformers keeps neither: its
        resumed run's first logged loss is the mean of the steps since the resume only. (Only between two logs: a
        checkpoint at a logging step is transformers' file, byte for byte.)"""
        control = self.state.stateful_callbacks.get("TrainerControl")
        if isinstance(control, dict) and self._globalstep_last_logged != self.state.global_step:
            control["attributes"] = {**control.get("attributes", {}), "unlogged_loss": float(self._tr_loss),
                                     "last_logged_step": self._globalstep_last_logged}

    def _restore_unlogged_loss(self):
        """What ``_keep_unlogged_loss`` kept (a checkpoint transformers wrote has none: the sum starts at zero)."""
        control = self.state.stateful_callbacks.get("TrainerControl")
        attributes = control.get("attributes") if isinstance(control, dict) else None
        kept = (attributes or {}).get("unlogged_loss"), (attributes or {}).get("last_logged_step")
        if not (isinstance(kept[0], (int, float)) and isinstance(kept[1], int)) or isinstance(kept[1], bool):
            return
        self._tr_loss, self._globalstep_last_logged = _loss_sum(kept[0]), kept[1]
        self._total_loss_scalar = -float(self._tr_loss)  # (train_loss: this call's steps' losses, as transformers')

    def _load_callback_state(self):
        """``restore_callback_states_from_checkpoint``: the checkpoint's stateful callbacks (and control) replace
        this Trainer's of the same classes, rebuilt from their saved ``args`` and ``attributes``."""
        if not self.args.restore_callback_states_from_checkpoint:
            return
        current = self.callback_handler.callbacks + [self.control]
        not_found = []
        for name, saved in self.state.stateful_callbacks.items():
            same = [cb for cb in current if type(cb).__name__ == name]
            if not same:
                not_found.append(name)
            for old, state in zip(same, saved if isinstance(saved, list) else [saved]):
                new = type(old).from_state({"args": state.get("args", {}), "attributes": state.get("attributes", {})})
                if isinstance(old, TrainerControl):
                    self.control = new
                else:
                    self.callback_handler.remove_callback(old)
                    self.callback_handler.add_callback(new)
        if not_found:
            logger.warning(f"Checkpoint included callbacks not included in current configuration. Ignoring. "
                           f"({', '.join(not_found)})")

    def _exportable_states(self):
        return [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]

    def _rotate_checkpoints(self):
        """Keep ``save_total_limit`` checkpoint folders: the oldest go first, never the newest (to resume from)
        nor the best one."""
        limit, folder = self.args.save_total_limit, self.args.output_dir
        found = _checkpoints_by_age(folder)
        if not limit or limit <= 0 or len(found) <= limit:
            return
        best = self.state.best_model_checkpoint
        protected = {found[-1]} | ({os.path.join(folder, os.path.basename(best))} if best else set())
        remaining = len(found)
        for path in found:
            if remaining <= max(limit, len(protected)):
                break
            if path not in protected:
                _delete_checkpoint(path)
                remaining -= 1

    def _load_from_checkpoint(self, folder):
        if not os.path.isfile(os.path.join(folder, TRAINER_STATE_NAME)):
            raise ValueError(f"Can't find a valid checkpoint at {folder}")
        # (read before the weights go in, so a damaged one is refused with the model as it was)
        TrainerState.load_from_json(os.path.join(folder, TRAINER_STATE_NAME))
        self._read_ahead = _read_training_files(folder)
        self._load_model_weights(folder, trainable=True)

    def _checkpoint_file(self, path):
        """A checkpoint's optimizer.pt / scheduler.pt / rng_state.pth: as read before the weights went in."""
        ahead = getattr(self, "_read_ahead", {})
        return ahead.pop(path) if path in ahead else _read_training_file(path)

    def _load_model_weights(self, folder, trainable):
        """The model's weights from a checkpoint folder: the adapter into the PEFT model's first active adapter,
        or the whole state dict."""
        if _is_peft_model(self.model):
            self.model.load_adapter(folder, self.model.active_adapters[0], is_trainable=trainable)
            return
        from .checkpoint import WEIGHTS_NAME, load_weights
        for name in ("model.safetensors", WEIGHTS_NAME):  # (transformers' save_safetensors=False writes the .bin)
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                # (each array in its own dtype, as safetensors' load_file: Tensor(array) is torch.Tensor's constructor,
                # which would round a float64 checkpoint to the default float32 before it reached the weights)
                self.model.load_state_dict({k: Tensor(v, dtype=v.dtype) for k, v in load_weights(path).items()}, strict=False)
                return
        raise ValueError(f"Can't find a valid checkpoint at {folder} (no model.safetensors or {WEIGHTS_NAME})")

    def _load_optimizer_and_scheduler(self, folder):
        optimizer, scheduler = os.path.join(folder, OPTIMIZER_NAME), os.path.join(folder, SCHEDULER_NAME)
        if os.path.isfile(optimizer) and os.path.isfile(scheduler):
            try:
                self.optimizer.load_state_dict(self._checkpoint_file(optimizer))
            except ValueError as exc:  # (another optimizer's state, another parameter count: which file says so)
                raise ValueError(f"{optimizer}: {exc}") from None
            self.lr_scheduler.load_state_dict(self._checkpoint_file(scheduler))

    def _load_rng_state(self, folder):
        path = os.path.join(folder, RNG_STATE_NAME)
        if not os.path.isfile(path):
            warnings.warn(f"Didn't find an RNG file in {folder}: reproducibility is not guaranteed", stacklevel=3)
            return
        states = self._checkpoint_file(path)
        check_generator_states(states)
        set_generator_states(states)

    def is_world_process_zero(self):
        return True

    def is_local_process_zero(self):
        return True

