"""Where the memory of fine-tuning goes -- counted exactly, and measured.

Training a weight costs four arrays of its size, not one: the weight, its gradient, and AdamW's two
moments (``exp_avg``, ``exp_avg_sq``). In float32 that is 4 + 4 + 8 = 16 bytes per trained parameter.
A frozen weight costs only its 4 bytes. LoRA's saving is exactly this: the base weights W0 are still
loaded (the forward needs them), but only the small A and B have gradients and optimizer state.

Two tools, one for each question a learner asks:

* ``estimate(model_config, lora_config)`` -- *what would it cost?* Exact parameter counts and bytes
  for any ``LlamaConfig`` (or a GPT-style ``TransformerConfig``) without allocating anything: the
  parameter list is written down from the config (``parameter_layout``) and LoRA's rules are applied
  to the names (``peft_layout``), with the same name matching as ``get_peft_model``. Llama-2-7B with
  LoRA on q,v at r=8 gives PEFT's line ``trainable params: 4,194,304 || all params: 6,742,609,920``.
* ``report(model, optimizer, batch)`` -- *what does it cost here?* Bytes of the real model's frozen
  and trainable weights, its gradients and optimizer state, and the activation memory of one
  training step, measured by ``measure_activations`` (see there for how).

Bytes are printed in decimal units (1 GB = 10^9 bytes), as the "a 7B model in float32 is 28 GB"
arithmetic uses. Mixed precision (bf16 weights with float32 master copies) is not modelled: every
array is in ``dtype`` -- except an adapter's own weights on a 16-bit model, which are float32 (and so
are their gradients and optimizer state), as PEFT's ``autocast_adapter_dtype=True`` and minilora's
``get_peft_model`` make them.

``minilora memory`` and ``minilora info`` are the command-line faces of this file.
"""
import argparse
import copy
import dataclasses
import math
import re
import sys
import time
import tracemalloc

import numpy as np

from .dtypes import to_dtype

__all__ = ["TransformerConfig", "PRESETS", "get_preset", "ModuleSpec", "ParamSpec", "parameter_layout",
           "peft_layout", "MemoryEstimate", "estimate", "lora_params_per_rank", "matrix_lora_params",
           "ActivationStats", "measure_activations", "MemoryReport", "report", "comparison_table",
           "format_bytes", "summarize_parameters", "add_cli_arguments", "cli_main"]

# Bytes per number, by name: estimating a bfloat16 model (what large models are stored in) needs no ml_dtypes.
DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
# Arrays of optimizer state per trained parameter: Adam/AdamW keep two moments, SGD with momentum one.
OPTIMIZER_SLOTS = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0}


# ==================================================================================================
# Model shapes: Llama (minilora.models.LlamaConfig) and a generic GPT-style transformer
# ==================================================================================================
@dataclasses.dataclass
class TransformerConfig:
    """A GPT-style decoder (GPT-2/GPT-3 layout) described by its sizes, for estimates only.

    Learned position embeddings, LayerNorm (weight and bias), biases on every Linear, an MLP of
    ``up_proj`` (d -> intermediate) and ``down_proj`` (intermediate -> d), the output head tied to the
    token embedding. Module names follow the Llama ones (``q_proj``, ``v_proj``) so the same
    ``target_modules`` work: the LoRA paper's W_q and W_v are ``["q_proj", "v_proj"]``.
    """
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int = 50257
    intermediate_size: int = None  # default 4 * hidden_size
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    bias: bool = True
    model_type = "gpt"

    def __post_init__(self):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size


def _llama(**sizes):
    from .models import LlamaConfig
    return LlamaConfig(**sizes)


# name -> (description, function building the config). Sizes from the models' published config.json
# files (Llama 2) and the GPT-3 paper's Table 2.1 (175B: 96 layers, d_model 12288, 96 heads).
PRESETS = {
    "llama-2-7b": ("Llama-2-7B", lambda: _llama(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, max_position_embeddings=4096)),
    "llama-2-13b": ("Llama-2-13B", lambda: _llama(
        vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
        num_attention_heads=40, max_position_embeddings=4096)),
    "llama-2-70b": ("Llama-2-70B (grouped-query attention: 8 key/value heads)", lambda: _llama(
        vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=4096)),
    "gpt-3-175b": ("a GPT-3-175B-like transformer (96 layers, d=12288)", lambda: TransformerConfig(
        num_hidden_layers=96, hidden_size=12288, num_attention_heads=96)),
}


def get_preset(name):
    """The config of a preset (``"llama-2-7b"``, ...) or ``"base"`` (minilora's shipped base model)."""
    if name == "base":
        from .models import BASE_DIR, LlamaConfig
        return LlamaConfig.from_pretrained(BASE_DIR)
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {sorted(PRESETS) + ['base']}")
    return PRESETS[name][1]()


# ==================================================================================================
# The parameter list of a model, written down from its config (nothing is allocated)
# ==================================================================================================
@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """One module that owns parameters: its dotted name, kind, and ``(parameter name, shape)`` pairs."""
    name: str
    kind: str  # "linear" | "embedding" | "norm"
    params: tuple

    @property
    def shape(self):
        return dict(self.params)["weight"]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: its full dotted name (as ``named_parameters()`` gives it), shape, trainability,
    and whether it is an adapter's own weight (``lora_A``, ``lora_B``, DoRA's magnitude, VeRA's
    lambdas, ...): those are float32 on a 16-bit model (``autocast_adapter_dtype``)."""
    name: str
    shape: tuple
    trainable: bool = True
    adapter: bool = False

    @property
    def numel(self):
        return math.prod(self.shape)


def _linear(name, d_in, d_out, bias):
    return ModuleSpec(name, "linear", (("weight", (d_out, d_in)),) + ((("bias", (d_out,)),) if bias else ()))


def _norm(name, d, bias=False):
    return ModuleSpec(name, "norm", (("weight", (d,)),) + ((("bias", (d,)),) if bias else ()))


def _llama_modules(c):
    """LlamaForCausalLM's parameter-owning modules, in ``named_modules()`` order (Mistral's, Qwen2's and
    Qwen3's too: their biases and per-head norms as their config says, ``nn/llama_family.py``)."""
    q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    d, inner, bias = c.hidden_size, c.intermediate_size, c._biases()
    mods = [ModuleSpec("model.embed_tokens", "embedding", (("weight", (c.vocab_size, d)),))]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}"
        mods += [_linear(f"{p}.self_attn.q_proj", d, q_out, bias["q_proj"]),
                 _linear(f"{p}.self_attn.k_proj", d, kv_out, bias["k_proj"]),
                 _linear(f"{p}.self_attn.v_proj", d, kv_out, bias["v_proj"]),
                 _linear(f"{p}.self_attn.o_proj", q_out, d, bias["o_proj"])]
        mods += [_norm(f"{p}.self_attn.{norm}", c.head_dim) for norm in c._per_head_norms]
        mods += [_linear(f"{p}.mlp.gate_proj", d, inner, bias["gate_proj"]),
                 _linear(f"{p}.mlp.up_proj", d, inner, bias["up_proj"]),
                 _linear(f"{p}.mlp.down_proj", inner, d, bias["down_proj"]),
                 _norm(f"{p}.input_layernorm", d), _norm(f"{p}.post_attention_layernorm", d)]
    mods.append(_norm("model.norm", d))
    if not c.tie_word_embeddings:  # a tied head is the embedding matrix: counted once, as PyTorch does
        mods.append(_linear("lm_head", d, c.vocab_size, False))
    return mods


def _transformer_modules(c):
    d, inner, bias = c.hidden_size, c.intermediate_size, c.bias
    mods = [ModuleSpec("model.embed_tokens", "embedding", (("weight", (c.vocab_size, d)),)),
            ModuleSpec("model.embed_positions", "embedding", (("weight", (c.max_position_embeddings, d)),))]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}"
        mods += [_norm(f"{p}.input_layernorm", d, bias=True)]
        mods += [_linear(f"{p}.self_attn.{n}", d, d, bias) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        mods += [_norm(f"{p}.post_attention_layernorm", d, bias=True),
                 _linear(f"{p}.mlp.up_proj", d, inner, bias), _linear(f"{p}.mlp.down_proj", inner, d, bias)]
    mods.append(_norm("model.norm", d, bias=True))
    if not c.tie_word_embeddings:
        mods.append(_linear("lm_head", d, c.vocab_size, False))
    return mods


def _modules_of(config):
    if isinstance(config, TransformerConfig):
        return _transformer_modules(config)
    if hasattr(config, "num_key_value_heads"):
        return _llama_modules(config)
    raise TypeError(f"expected a LlamaConfig or a memory.TransformerConfig, got {type(config).__name__}")


def parameter_layout(model_config):
    """Every parameter of the model ``model_config`` describes, as ``ParamSpec`` (all trainable).

    For a ``LlamaConfig`` the names and shapes are exactly ``LlamaForCausalLM(config).named_parameters()``.
    """
    return [ParamSpec(f"{m.name}.{p}", shape) for m in _modules_of(model_config) for p, shape in m.params]


# ==================================================================================================
# What get_peft_model would do to that list, applied to names only
# ==================================================================================================
def _resolve_targets(config, modules, model_type):
    """PEFT's meaning of ``target_modules=None`` (the model type's default) and ``"all-linear"``."""
    from .lora.model import DEFAULT_TARGET_MODULES
    config = copy.deepcopy(config)
    if config.target_modules is None:
        config.target_modules = list(DEFAULT_TARGET_MODULES.get(model_type, ["q_proj", "v_proj"]))
    elif isinstance(config.target_modules, str) and config.target_modules.lower() == "all-linear":
        config.target_modules = sorted(m.name for m in modules if m.kind == "linear" and m.name != "lm_head")
    return config


def _adapter_params(module, config, adapter):
    """The adapter's own parameters for one adapted Linear or Embedding (PEFT names, relative to the module)."""
    from .lora.model import _pattern_value
    d_out, d_in = module.shape
    if module.kind == "embedding":
        if config.peft_type in ("VERA", "ADALORA") or config.use_dora:
            raise NotImplementedError(f"{module.name}: an Embedding takes plain LoRA only (no VeRA, AdaLoRA, DoRA)")
        r = _pattern_value(config.rank_pattern, module.name, config.r)
        rows, dim = d_out, d_in  # an embedding table is [num_embeddings, dim]
        return [(f"lora_embedding_A.{adapter}", (r, rows)), (f"lora_embedding_B.{adapter}", (dim, r))]
    if config.peft_type == "ADALORA":  # SVD form at init_r: A [r, in], E [r, 1] (singular values), B [out, r]
        r = config.init_r
        return [(f"lora_A.{adapter}", (r, d_in)), (f"lora_E.{adapter}", (r, 1)), (f"lora_B.{adapter}", (d_out, r))]
    if config.peft_type == "VERA":  # A and B are shared frozen buffers: only two vectors train
        return [(f"vera_lambda_b.{adapter}", (d_out,)), (f"vera_lambda_d.{adapter}", (config.r,))]
    r = _pattern_value(config.rank_pattern, module.name, config.r)
    out = [(f"lora_A.{adapter}.weight", (r, d_in)), (f"lora_B.{adapter}.weight", (d_out, r))]
    if config.use_dora:
        out.append((f"lora_magnitude_vector.{adapter}.weight", (d_out,)))
    return out


def peft_layout(model_config, peft_config, adapter_name="default", dtype="float32"):
    """The parameters of ``get_peft_model(LlamaForCausalLM(model_config), peft_config)``: PEFT's names
    (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``), shapes and which
    ones train -- computed from names alone, with the matching rules of ``minilora.lora``.

    Handles ``target_modules`` (list, regex, ``"all-linear"``, ``None``), ``exclude_modules``,
    ``layers_to_transform``, ``rank_pattern``, ``use_dora``, ``bias``, ``modules_to_save``,
    ``inference_mode``, ``VeraConfig`` and ``AdaLoraConfig`` (at ``init_r``, before any rank is masked).
    """
    from .lora.model import names_module, target_module_matches
    modules = _modules_of(model_config)
    config = _resolve_targets(peft_config, modules, getattr(model_config, "model_type", "llama"))
    to_save = config.modules_to_save or ()
    train = not config.inference_mode
    out, adapted = [], 0
    for m in modules:
        prefix = f"base_model.model.{m.name}"
        if any(names_module(m.name, name) for name in to_save):  # a frozen original plus a trained copy
            out += [ParamSpec(f"{prefix}.original_module.{p}", s, False) for p, s in m.params]
            out += [ParamSpec(f"{prefix}.modules_to_save.{adapter_name}.{p}", s, train) for p, s in m.params]
        elif m.kind in ("linear", "embedding") and target_module_matches(config, m.name):
            adapted += 1
            bias_trains = train and config.bias in ("all", "lora_only", "vera_only")
            out += [ParamSpec(f"{prefix}.base_layer.{p}", s, p == "bias" and bias_trains) for p, s in m.params]
            out += [ParamSpec(f"{prefix}.{p}", s, train, adapter=True)
                    for p, s in _adapter_params(m, config, adapter_name)]
            if config.peft_type == "ADALORA":  # the initial rank, a [1] (never saved), frozen (PEFT 0.22)
                out.append(ParamSpec(f"{prefix}.ranknum.{adapter_name}", (1,), False))
        else:
            out += [ParamSpec(f"{prefix}.{p}", s, train and config.bias == "all" and p == "bias")
                    for p, s in m.params]
    if not adapted:
        raise ValueError(f"target_modules={peft_config.target_modules!r} matches no Linear of this model "
                         f"(its Linear layers are named {_short_names(modules)})")
    return out


def _short_names(modules):
    return ", ".join(sorted({m.name.rsplit(".", 1)[-1] for m in modules if m.kind == "linear"}))


# ==================================================================================================
# estimate(): counts and bytes for a config, with or without LoRA
# ==================================================================================================
@dataclasses.dataclass
class MemoryEstimate:
    """Parameter counts and bytes of training one model one way (full fine-tuning or an adapter).

    Activations are not included: they depend on batch size and sequence length, not on the
    config alone (``report`` measures them on a real model). Every value is in ``dtype`` but the
    adapter's own weights (and their gradients and optimizer state), which are in ``adapter_dtype``
    (float32 on a float16/bfloat16 model, as PEFT's ``autocast_adapter_dtype=True`` makes them).
    """
    total_params: int
    trainable_params: int
    dtype: str
    optimizer: str
    bytes_per_value: int
    layout: list = dataclasses.field(repr=False, default_factory=list)
    adapter_dtype: str = None  # None: the same as dtype

    @property
    def frozen_params(self):
        return self.total_params - self.trainable_params

    @property
    def trainable_percent(self):
        return 100 * self.trainable_params / self.total_params

    def _weight_bytes(self, trainable):
        """Bytes of the weights that train (or not): each in its own dtype."""
        if not self.layout:  # made by hand, without a layout: every value in dtype
            return (self.trainable_params if trainable else self.frozen_params) * self.bytes_per_value
        adapter_bytes = DTYPE_BYTES[self.adapter_dtype or self.dtype]
        return sum(p.numel * (adapter_bytes if p.adapter else self.bytes_per_value)
                   for p in self.layout if p.trainable == trainable)

    @property
    def weight_bytes(self):
        return self.frozen_weight_bytes + self.trainable_weight_bytes

    @property
    def frozen_weight_bytes(self):
        return self._weight_bytes(trainable=False)

    @property
    def trainable_weight_bytes(self):
        return self._weight_bytes(trainable=True)

    @property
    def gradient_bytes(self):  # one gradient per trained number, in that weight's dtype
        return self.trainable_weight_bytes

    @property
    def optimizer_state_bytes(self):
        return OPTIMIZER_SLOTS[self.optimizer] * self.trainable_weight_bytes

    @property
    def total_bytes(self):
        return self.weight_bytes + self.gradient_bytes + self.optimizer_state_bytes

    @property
    def bytes_per_param(self):
        return self.total_bytes / self.total_params

    def peft_line(self):
        """PEFT's ``print_trainable_parameters()`` line, with these numbers."""
        return (f"trainable params: {self.trainable_params:,d} || all params: {self.total_params:,d} || "
                f"trainable%: {self.trainable_percent:.4f}")

    def rows(self):
        return [("parameters", self.total_params, "count"),
                ("trainable parameters", self.trainable_params, "count"),
                ("frozen weights", self.frozen_weight_bytes, "bytes"),
                ("trainable weights", self.trainable_weight_bytes, "bytes"),
                ("gradients", self.gradient_bytes, "bytes"),
                (f"optimizer state ({self.optimizer})", self.optimizer_state_bytes, "bytes"),
                ("total (without activations)", self.total_bytes, "bytes"),
                ("bytes per parameter", self.bytes_per_param, "ratio")]


def _dtype_name(dtype):
    name = dtype if isinstance(dtype, str) else to_dtype(dtype).name  # minilora/NumPy/torch dtypes
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
            "float": "float32", "double": "float64"}.get(name, name)
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {sorted(DTYPE_BYTES)}")
    return name


def estimate(model_config, lora_config=None, dtype="float32", optimizer="adamw", adapter_name="default",
             autocast_adapter_dtype=True):
    """Exact counts and bytes for training ``model_config`` -- fully (``lora_config=None``) or with an
    adapter (a ``LoraConfig`` / ``VeraConfig``) -- without building the model.

    ``model_config``: a ``LlamaConfig``, a ``TransformerConfig`` or a preset name (``"llama-2-7b"``).
    ``dtype``: the model's. ``optimizer``: ``"adamw"`` / ``"adam"`` (2 state arrays per trained
    parameter), ``"sgd-momentum"`` (1) or ``"sgd"`` (0). The counts equal PEFT's
    ``get_nb_trainable_parameters()``. ``autocast_adapter_dtype`` as in ``get_peft_model``: True (the
    default) counts a float16/bfloat16 model's adapter weights in float32, as they are made.
    """
    if isinstance(model_config, str):
        model_config = get_preset(model_config)
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose one of {sorted(OPTIMIZER_SLOTS)}")
    dtype = _dtype_name(dtype)
    layout = (parameter_layout(model_config) if lora_config is None
              else peft_layout(model_config, lora_config, adapter_name, dtype))
    total = sum(p.numel for p in layout)
    trainable = sum(p.numel for p in layout if p.trainable)
    upcast = lora_config is not None and autocast_adapter_dtype and dtype in ("float16", "bfloat16")
    return MemoryEstimate(total, trainable, dtype, optimizer, DTYPE_BYTES[dtype], layout,
                          adapter_dtype="float32" if upcast else dtype)


def lora_params_per_rank(model_config, target_modules=("q_proj", "v_proj")):
    """Trainable LoRA parameters per unit of rank (the count at r=1; plain LoRA is linear in r).

    For GPT-3 (96 layers, d=12288) with LoRA on W_q and W_v: 2 matrices x 96 layers x (12288 + 12288)
    = 4,718,592. So 4.7M is r=1 and r=8 gives 37.7M (LoRA paper, Table 4). The lesson this project
    teaches says 4.7M at r=4 and "about 526M" at r=8: both are wrong.
    """
    from .lora import LoraConfig
    return estimate(model_config, LoraConfig(r=1, target_modules=list(target_modules))).trainable_params


def matrix_lora_params(d_out, d_in, r):
    """``(full, lora, times_fewer)`` for one ``d_out x d_in`` matrix: A is r x d_in, B is d_out x r.

    4096 x 4096 at r=8: 16,777,216 vs 65,536 -- 256x fewer."""
    # EXERCISE 3.1: parameters of the full matrix, of its LoRA pair A [r, d_in] + B [d_out, r], and their ratio
    # BEGIN SOLUTION
    full, lora = d_out * d_in, r * (d_out + d_in)
    return full, lora, full / lora
    # END SOLUTION


# ==================================================================================================
# Measuring a real training step
# ==================================================================================================
@dataclasses.dataclass
class ActivationStats:
    """What one forward + backward held in memory, beyond the weights.

    ``graph_bytes``: arrays the autograd graph keeps alive at the end of the forward (everything
    saved for backward, and the intermediate tensors the graph references), each buffer once.
    ``by_op``: the same bytes split by the op that first holds each buffer. ``peak_bytes``: the
    highest extra NumPy allocation seen during forward + backward (tracemalloc; ``None`` on cuda),
    which also counts temporaries and the gradients. ``gradient_bytes``: the gradients backward made.
    """
    graph_bytes: int
    by_op: dict
    peak_bytes: int
    gradient_bytes: int
    nodes: int
    loss: float


def _is_array(value):
    return hasattr(value, "nbytes") and hasattr(value, "shape") and hasattr(value, "dtype") \
        and not hasattr(value, "requires_grad")


def _root(array):
    """The array that owns the memory (a view's ``.base`` chain ends there)."""
    while _is_array(getattr(array, "base", None)):
        array = array.base
    return array


def _arrays_in(value):
    """Arrays inside a saved value: an array, or tuples/lists/dicts of them."""
    if _is_array(value):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays_in(v)


_CONTEXT_BOOKKEEPING = ("fn", "device", "needs_input_grad", "inputs", "seq", "freed")


def _graph_memory(loss, exclude):
    """Walk every Context reachable from ``loss`` and sum the distinct buffers they keep alive.

    A Context keeps two kinds of arrays alive: what its op saved for backward (any attribute), and
    its input Tensors (``ctx.inputs``), which hold their ``data``. Buffers in ``exclude`` (the
    parameters) are weights, not activations. Returns ``(bytes, bytes by op, number of nodes)``.
    """
    from .tensor import Tensor
    seen, nodes, stack = {id(loss)}, [], [loss]
    while stack:
        t = stack.pop()
        nodes.append(t._ctx)
        for x in t._ctx.inputs:
            if isinstance(x, Tensor) and x._ctx is not None and id(x) not in seen:
                seen.add(id(x))
                stack.append(x)
    counted, by_op = set(exclude), {}
    for ctx in sorted(nodes, key=lambda c: c.seq):  # creation order: an op owns what it first holds
        held = [v for k, v in vars(ctx).items() if k not in _CONTEXT_BOOKKEEPING]
        held += [x._array for x in ctx.inputs if isinstance(x, Tensor)]
        for array in _arrays_in(held):
            root = _root(array)
            if id(root) not in counted:
                counted.add(id(root))
                by_op[ctx.fn.__name__] = by_op.get(ctx.fn.__name__, 0) + int(root.nbytes)
    return sum(by_op.values()), dict(sorted(by_op.items(), key=lambda kv: -kv[1])), len(nodes)


def _split_batch(batch):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch
    return batch, batch  # plain token ids: the language-model loss on the ids themselves


def measure_activations(model, batch, trace_peak=True):
    """Run one forward + backward of ``model`` on ``batch`` and measure the activation memory.

    ``batch``: ``(input_ids, labels)`` or just ``input_ids`` (then ``labels = input_ids``). The
    model is called as ``model(input_ids, labels=labels).loss``.

    How it is measured (two numbers, because they answer two questions):

    * ``graph_bytes`` -- *what must be kept for backward?* After the forward, and before backward
      frees anything, every node of the autograd graph reachable from the loss is visited and the
      distinct buffers it holds are summed (views count as the buffer they look into; parameters
      are excluded). This is exact and device-independent.
    * ``peak_bytes`` -- *what did the step allocate at its worst moment?* Python's ``tracemalloc``
      sees every NumPy allocation; its peak over forward + backward, above what was allocated
      before, includes temporaries and the gradients. Only on NumPy devices (``None`` on cuda).

    The step is a training step (``model.train()``: dropout, gradient checkpointing) whatever mode the model is in
    (``from_pretrained`` returns it in eval mode, as transformers). It leaves no trace: each module's mode and the
    gradients that existed before are put back, new ones are dropped.
    """
    from .tensor import Tensor, tensor
    params = list(model.parameters())
    old_grads = [p.grad for p in params]
    old_modes = [(module, module.training) for module in model.modules()]
    model.train()
    for p in params:
        p.grad = None
    ids, labels = (x if isinstance(x, Tensor) else tensor(np.asarray(x)) for x in _split_batch(batch))
    on_numpy = isinstance(params[0]._array, np.ndarray) if params else True
    tracing = trace_peak and on_numpy
    started_here = tracing and not tracemalloc.is_tracing()
    try:
        if started_here:
            tracemalloc.start()
        if tracing:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        loss = model(ids, labels=labels).loss
        graph, by_op, nodes = _graph_memory(loss, {id(_root(p._array)) for p in params})
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1] - base if tracing else None
        grads = sum(int(p.grad.nbytes) for p in params if p.grad is not None)
        value = loss.item()
    finally:
        if started_here:
            tracemalloc.stop()
        for p, g in zip(params, old_grads):
            p.grad = g
        for module, training in old_modes:
            module.training = training
    return ActivationStats(graph, by_op, peak, grads, nodes, value)


@dataclasses.dataclass
class MemoryReport:
    """The memory of training a real model: weights (frozen / trainable), gradients, optimizer state
    and, when a batch was given, the measured activations. All in bytes."""
    total_params: int
    trainable_params: int
    frozen_weight_bytes: int
    trainable_weight_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    optimizer_state_measured: bool  # False: the optimizer has not stepped yet; this is what step() will allocate
    activations: ActivationStats = None

    @property
    def activation_bytes(self):
        return self.activations.graph_bytes if self.activations else 0

    @property
    def total_bytes(self):
        return (self.frozen_weight_bytes + self.trainable_weight_bytes + self.gradient_bytes
                + self.optimizer_state_bytes + self.activation_bytes)

    def rows(self):
        rows = [("parameters", self.total_params, "count"),
                ("trainable parameters", self.trainable_params, "count"),
                ("frozen weights", self.frozen_weight_bytes, "bytes"),
                ("trainable weights", self.trainable_weight_bytes, "bytes"),
                ("gradients", self.gradient_bytes, "bytes"),
                ("optimizer state" + ("" if self.optimizer_state_measured else " (at first step)"),
                 self.optimizer_state_bytes, "bytes")]
        if self.activations is not None:
            rows.append(("activations (saved for backward)", self.activations.graph_bytes, "bytes"))
            if self.activations.peak_bytes is not None:
                rows.append(("  peak allocated in the step", self.activations.peak_bytes, "bytes"))
        rows.append(("total", self.total_bytes, "bytes"))
        return rows

    def table(self, title="this model"):
        return comparison_table({title: self})


def _optimizer_slots(optimizer):
    """State arrays per trained parameter that this optimizer allocates at its first step."""
    from .optim import SGD, Adam
    if isinstance(optimizer, Adam):
        return 2
    if isinstance(optimizer, SGD):
        return int(any(g.get("momentum", 0) for g in optimizer.param_groups))
    return 0


def report(model, optimizer=None, batch=None):
    """Measure the memory of training ``model`` with ``optimizer``; with ``batch``, also run one
    forward + backward to measure activations and gradients (``measure_activations``).

    * weights: every distinct parameter, frozen (``requires_grad=False``) or trainable;
    * gradients: measured from that backward when a batch is given; otherwise the gradients that
      exist now, or -- if there are none -- what backward will make (one per trainable number);
    * optimizer state: ``optimizer.state_bytes()``; before the first ``step()`` (state is created
      lazily) what the first step will allocate, flagged ``optimizer_state_measured=False``.
    """
    params = list({id(p): p for p in model.parameters()}.values())
    frozen = sum(int(p._array.nbytes) for p in params if not p.requires_grad)
    trainable = [p for p in params if p.requires_grad]
    trainable_bytes = sum(int(p._array.nbytes) for p in trainable)
    stats = measure_activations(model, batch) if batch is not None else None
    if stats is not None:
        grads = stats.gradient_bytes
    else:
        existing = sum(int(p.grad.nbytes) for p in params if p.grad is not None)
        grads = existing or trainable_bytes
    measured, state = True, 0
    if optimizer is not None:
        state = optimizer.state_bytes()
        if not optimizer.state:
            measured = False
            in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
            state = _optimizer_slots(optimizer) * sum(int(p._array.nbytes) for p in trainable
                                                      if id(p) in in_optimizer)
    return MemoryReport(sum(p.numel() for p in params), sum(p.numel() for p in trainable), frozen,
                        trainable_bytes, grads, state, measured, stats)


# ==================================================================================================
# Printing
# ==================================================================================================
def format_bytes(n):
    """``16777216 -> '16.8 MB'`` (decimal units: 1 kB = 1000 bytes)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _cell(value, kind):
    if value is None:
        return "n/a"
    if kind == "count":
        return f"{int(value):,d}"
    if kind == "ratio":
        return f"{value:.2f}"
    return format_bytes(value)


def comparison_table(columns):
    """Side-by-side text table of ``{"column title": estimate or report}`` (rows by label)."""
    order, cells = [], {}
    for title, obj in columns.items():
        for label, value, kind in obj.rows():
            if label not in cells:
                order.append(label)
                cells[label] = {}
            cells[label][title] = _cell(value, kind)
    width = max(len(label) for label in order) + 2
    col = {title: max(len(title), *(len(cells[lab].get(title, "")) for lab in order)) + 2
           for title in columns}
    lines = ["".ljust(width) + "".join(t.rjust(col[t]) for t in columns)]
    lines += [label.ljust(width) + "".join(cells[label].get(t, "-").rjust(col[t]) for t in columns)
              for label in order]
    return "\n".join(lines)


def _role(name):
    """``model.layers.3.self_attn.q_proj.weight`` -> ``layers.*.self_attn.q_proj.weight``."""
    return re.sub(r"\.\d+\.", ".*.", name).replace("base_model.model.", "").removeprefix("model.")


def summarize_parameters(named_shapes, bytes_per_value):
    """A table of parameter counts and bytes grouped by role (all layers' ``q_proj`` together).

    ``named_shapes``: ``(name, shape)`` pairs, from ``named_parameters()`` or ``parameter_layout``."""
    groups = {}
    for name, shape in named_shapes:
        n = math.prod(shape)
        g = groups.setdefault(_role(name), [0, 0, tuple(shape)])
        g[0], g[1] = g[0] + 1, g[1] + n
    total = sum(g[1] for g in groups.values())
    lines = [f"{'parameter':<42}{'count':>6}{'shape':>16}{'numbers':>16}{'bytes':>11}{'share':>8}"]
    for role, (count, n, shape) in groups.items():
        lines.append(f"{role:<42}{count:>6}{'x'.join(map(str, shape)):>16}{n:>16,d}"
                     f"{format_bytes(n * bytes_per_value):>11}{100 * n / total:>7.1f}%")
    lines.append(f"{'total':<42}{sum(g[0] for g in groups.values()):>6}{'':>16}{total:>16,d}"
                 f"{format_bytes(total * bytes_per_value):>11}{100.0:>7.1f}%")
    return "\n".join(lines)


def _describe(config):
    if isinstance(config, TransformerConfig):
        return (f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                f"{config.num_attention_heads} heads, MLP {config.intermediate_size}, vocab {config.vocab_size}")
    kv = (f" ({config.num_key_value_heads} key/value heads)"
          if config.num_key_value_heads != config.num_attention_heads else "")
    return (f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} "
            f"heads{kv}, MLP {config.intermediate_size}, vocab {config.vocab_size}"
            f"{', tied embeddings' if config.tie_word_embeddings else ''}")


# ==================================================================================================
# The commands: `minilora memory` and `minilora info`
# ==================================================================================================
def _matrix_shape(text):
    """``--matrix OUTxIN``: two positive whole numbers, e.g. 4096x4096."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be OUTxIN with two positive integers (e.g. 4096x4096), "
                                         f"got {text!r}")
    return int(parts[0]), int(parts[1])


def _dtype_argument(text):
    try:
        return _dtype_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _preset_argument(text):
    if text != "base" and text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}: choose one of {', '.join(PRESETS)} "
                                         "or base")
    return text


def add_cli_arguments(parser, command_name):
    from .cli import positive_int
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' line breaks
    if command_name == "memory":
        parser.description = (
            "How much memory full fine-tuning and LoRA need for a model, counted exactly from its\n"
            "config (nothing is allocated, so a 70B model takes milliseconds): weights, gradients and\n"
            "optimizer state. Activations depend on batch size and sequence length and are not included\n"
            "(`minilora demo` measures them on a real model).")
        parser.epilog = ("examples:  minilora memory --preset llama-2-7b --r 16 --target all-linear\n"
                         "           minilora memory --preset gpt-3-175b --r 8 --target q_proj,v_proj\n"
                         "           minilora memory --matrix 4096x4096 --r 8")
        parser.add_argument("--preset", default="llama-2-7b", type=_preset_argument,
                            help=f"model size: {', '.join(PRESETS)} or base (default: llama-2-7b)")
        parser.add_argument("--model", help="a model folder with config.json instead of a preset")
        parser.add_argument("--r", type=positive_int, default=8, help="LoRA rank (default: 8)")
        parser.add_argument("--target", default="q_proj,v_proj",
                            help="modules that get LoRA: comma-separated names or all-linear "
                                 "(default: q_proj,v_proj, the LoRA paper's choice)")
        parser.add_argument("--dora", action="store_true", help="DoRA: add a magnitude vector per adapted layer")
        parser.add_argument("--adalora", action="store_true",
                            help="AdaLoRA: SVD-form adapters (A, E, B) starting at rank --r (its init_r)")
        parser.add_argument("--dtype", default="float32", type=_dtype_argument,
                            help=f"one of {', '.join(DTYPE_BYTES)} (default: float32)")
        parser.add_argument("--optimizer", default="adamw", choices=sorted(OPTIMIZER_SLOTS),
                            help="adamw/adam keep 2 numbers per trained parameter, sgd-momentum 1, sgd 0")
        parser.add_argument("--matrix", metavar="OUTxIN", type=_matrix_shape,
                            help="also show the count for one matrix of this shape, e.g. 4096x4096")
    else:
        parser.description = ("Summarise a model: its shape, its parameters grouped by role (all layers'\n"
                              "q_proj together) and their bytes.")
        parser.add_argument("--model", default="base",
                            help="a model folder (config.json + model.safetensors) or 'base', the model "
                                 "shipped with minilora (default)")
        parser.add_argument("--preset", type=_preset_argument,
                            help=f"summarise a preset instead, without loading: {', '.join(PRESETS)}")
        parser.add_argument("--dtype", default="float32", type=_dtype_argument,
                            help="dtype used for bytes (default: float32)")


def _target_list(text):
    return "all-linear" if text.strip().lower() == "all-linear" else [t.strip() for t in text.split(",") if t.strip()]


def _cli_memory(args):
    from .lora import AdaLoraConfig, LoraConfig
    if not _target_list(args.target):
        print(f"minilora memory: --target {args.target!r} names no module (e.g. q_proj,v_proj or all-linear)",
              file=sys.stderr)
        return 2
    try:
        config = get_preset(args.preset) if not args.model else _config_from_path(args.model)
    except (OSError, ValueError) as exc:  # a missing folder, a bad config.json: say which and why
        print(f"minilora memory: {exc}", file=sys.stderr)
        return 2
    name = args.model or (PRESETS[args.preset][0] if args.preset in PRESETS else args.preset)
    start = time.perf_counter()
    if args.adalora and args.dora:
        print("minilora memory: --adalora and --dora do not combine (AdaLoRA has no DoRA form)", file=sys.stderr)
        return 2
    lora_config = AdaLoraConfig(init_r=args.r, lora_alpha=2 * args.r, target_modules=_target_list(args.target),
                                total_step=1) if args.adalora else \
        LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=_target_list(args.target), use_dora=args.dora)
    full = estimate(config, None, args.dtype, args.optimizer)
    lora = estimate(config, lora_config, args.dtype, args.optimizer)
    ms = (time.perf_counter() - start) * 1e3
    print(f"{name}: {_describe(config)}")
    print(f"{args.dtype}, optimizer {args.optimizer}; counted from the config in {ms:.1f} ms")
    if lora.adapter_dtype != lora.dtype:
        print(f"LoRA's adapter weights, gradients and optimizer state in {lora.adapter_dtype} "
              "(get_peft_model's autocast_adapter_dtype=True, as PEFT)")
    print()
    print("PEFT's print_trainable_parameters() would say:")
    print("  " + lora.peft_line() + "\n")
    lora_title = ("AdaLoRA init_r" if args.adalora else "LoRA r") + f"={args.r} ({args.target})" + \
        (" DoRA" if args.dora else "")
    print(comparison_table({"full fine-tuning": full, lora_title: lora}))
    saved = full.total_bytes / lora.total_bytes
    print(f"\nLoRA needs {saved:.1f}x less memory for weights + gradients + optimizer state: the frozen "
          f"weights still\nhave to be there ({format_bytes(lora.frozen_weight_bytes)}), but only "
          f"{lora.trainable_params:,d} numbers get gradients and optimizer state.")
    if isinstance(config, TransformerConfig) and _target_list(args.target) == ["q_proj", "v_proj"] \
            and not args.dora and not args.adalora:
        per_rank = lora_params_per_rank(config)
        print(f"\nLoRA on W_q and W_v: {per_rank:,d} parameters per unit of rank -> r=1: "
              f"{per_rank / 1e6:.1f}M, r=4: {4 * per_rank / 1e6:.1f}M, r=8: {8 * per_rank / 1e6:.1f}M.\n"
              "(The lesson says 4.7M at r=4 and 'about 526M' at r=8; 4.7M is r=1, and r=8 is 37.7M.)")
    if args.matrix:
        out_f, in_f = args.matrix
        f, lo, times = matrix_lora_params(out_f, in_f, args.r)
        print(f"\none {out_f}x{in_f} matrix: {f:,d} parameters; LoRA r={args.r}: A {args.r}x{in_f} + "
              f"B {out_f}x{args.r} = {lo:,d} ({times:.0f}x fewer)")
    return 0


def _config_from_path(path):
    from .models import BASE_DIR, AutoConfig
    return AutoConfig.from_pretrained(BASE_DIR if path == "base" else path)  # (Llama, Mistral, Qwen2, Qwen3)


def _cli_info(args):
    bytes_per = DTYPE_BYTES[_dtype_name(args.dtype)]
    if args.preset:
        config = get_preset(args.preset)
        shapes = [(p.name, p.shape) for p in parameter_layout(config)]
        print(f"{PRESETS.get(args.preset, (args.preset,))[0]}: {_describe(config)}  (from the config; not loaded)")
    else:
        from .models import BASE_DIR, AutoModelForCausalLM, load_base
        path = BASE_DIR if args.model == "base" else args.model
        try:
            model = load_base() if args.model == "base" else AutoModelForCausalLM.from_pretrained(path)
        except (OSError, ValueError, RuntimeError) as exc:  # missing, bad config.json, weights that do not fit
            from .cli import UsageError
            raise UsageError(f"{exc} (give a folder with config.json and model.safetensors, or 'base')") from None
        config = model.config
        shapes = [(n, p.shape) for n, p in model.named_parameters()]
        bytes_per = model.dtype.itemsize if args.dtype == "float32" else bytes_per
        print(f"{path}: {_describe(config)}")
    print(summarize_parameters(shapes, bytes_per))
    n = sum(math.prod(s) for _, s in shapes)
    full = n * bytes_per * (2 + OPTIMIZER_SLOTS["adamw"])
    print(f"\nfull fine-tuning with AdamW needs weights + gradients + 2 moments = {format_bytes(full)} "
          f"before activations; see `minilora memory` for LoRA.")
    return 0


def cli_main(args):
    return _cli_memory(args) if args.command == "memory" else _cli_info(args)
