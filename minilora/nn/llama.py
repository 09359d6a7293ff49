"""A Llama-architecture causal language model, with Hugging Face's names all the way down.

Read top to bottom: the config, the rotary position tables, attention, the MLP, one decoder layer,
the stack of layers (``LlamaModel``), and the language-model head (``LlamaForCausalLM``).

Every module and parameter has the name transformers gives it, so the dotted parameter names are the
checkpoint keys (``model.layers.0.self_attn.q_proj.weight``) and LoRA's ``target_modules``
(``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``) point at
plain ``nn.Linear`` layers that LoRA can wrap::

    x ─ embed_tokens ─┬─ input_layernorm ─ self_attn (q/k/v_proj, RoPE, attention, o_proj) ─(+)─┐
                      └──────────────────────── residual ───────────────────────────────────────┘
                      ┌─ post_attention_layernorm ─ mlp: down_proj(silu(gate_proj) * up_proj) ─(+)─┐
                      └──────────────────────── residual ───────────────────────────────────────────┘
                      ... num_hidden_layers times ... ─ norm ─ lm_head ─ logits

Checkpoints are safetensors (``minilora/checkpoint.py``); generation lives in ``minilora/nn/generation.py``.
"""
import contextlib
import contextvars
import copy
import dataclasses
import functools
import inspect
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import amp, blas, dtypes, float32_math, forward_ad, linalg, ops, parallel
from ..checkpoint import (SAFE_WEIGHTS_NAME, CheckpointError, atomic_folder, atomic_write, checkpoint_files,
                          load_checkpoint, load_json, make_save_folder, one_version_of, put_back_a_cut_swap,
                          read_checkpoint_shapes,
                          read_weights_header, save_file, save_json)
from ..checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from ..checkpoint import _layout as _checkpoint_layout
from ..checkpoint import naming_the_file as _naming_the_file
from ..device import META, device as _device
from ..factories import randn
from ..ops.nn import FLASH_ATTENTION_CPU, binary_cross_entropy_with_logits, mse_loss
from ..random import fork_rng
from ..size import Size as _Size
from ..tensor import Tensor, _host, _to_dtype, is_grad_enabled
from . import generation, init
from .checkpointing import checkpoint
from . import layers as _layers
from .layers import Dropout, Embedding, Linear, RMSNorm, SiLU
from .module import Module, ModuleList, StateDictError
from .outputs import ModelOutput as _ModelOutput


# The keywords transformers 5's model forwards take through ``**kwargs`` (its TransformersKwargs), which
# minilora's forwards name one by one, and ``past_key_values``, the old name of the 4th parameter, ``cache``.
_TAKEN_THROUGH_KWARGS = ("past_key_values", "num_items_in_batch", "return_dict", "output_hidden_states",
                         "output_attentions", "cache_position", "shift_labels", "ignore_index")


def _signature_as_transformers(forward):
    """``forward`` showing transformers 5's signature to ``inspect.signature`` (its ``__signature__``): ``cache``
    in ``past_key_values``' place, and the keywords transformers takes through ``**kwargs`` shown as ``**kwargs``.
    Code that reads a model's signature then reads transformers' names: the Trainer keeps a dataset's columns by
    them (remove_unused_columns drops a column named ``return_dict`` or ``past_key_values``) and hands
    ``num_items_in_batch`` to a forward with ``**kwargs``. The call itself still takes each keyword by name."""
    shown = []
    for parameter in inspect.signature(forward).parameters.values():
        if parameter.name == "past_key_values":
            shown.append(parameter.replace(name="cache"))
        elif parameter.name not in _TAKEN_THROUGH_KWARGS + ("cache",):
            shown.append(parameter)
    shown.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    forward.__signature__ = inspect.Signature(shown)
    return forward


__all__ = ["LlamaConfig", "KVCache", "DynamicCache", "CausalLMOutput", "CausalLMOutputWithPast", "BaseModelOutputWithPast", "LlamaRotaryEmbedding", "rope_inverse_frequencies",
           "LlamaAttention", "LlamaRMSNorm",
           "LlamaMLP", "LlamaDecoderLayer", "LlamaModel", "LlamaForCausalLM", "causal_lm_loss", "parameter_shapes"]


# ==================================================================================================
# Config
# ==================================================================================================
def _config_dataclass(cls):
    """A config class: a dataclass whose __init__ also takes config.json's other keys (see below)."""
    cls = dataclass(cls)
    cls.__init__ = _accepting_config_json_keys(cls.__init__)
    return cls


def _accepting_config_json_keys(dataclass_init):
    """LlamaConfig(**cfg.to_dict()), the copy idiom, works on transformers' configs: they take every key
    of their own to_dict. The dataclass __init__ knows only the fields (TypeError on 'architectures'),
    so a call with other keys is read the way config.json is, by from_dict."""
    def __init__(self, *args, **kwargs):
        cls = type(self)
        names = [f.name for f in dataclasses.fields(cls)]
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes at most {len(names)} positional arguments, got {len(args)}")
        given = dict(zip(names, args))
        twice = sorted(given.keys() & kwargs.keys())
        if twice:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {twice[0]!r}")
        given.update(kwargs)
        if given.keys() <= set(names):
            dataclass_init(self, **given)
            return
        extra = dict(given.pop("extra", None) or {})
        read = cls.from_dict(given)
        read.extra = {**extra, **read.extra}
        self.__dict__.update(read.__dict__)
    return __init__


@_config_dataclass
class LlamaConfig:
    """The shape of a Llama model, with transformers' field names and defaults.

    ``num_key_value_heads < num_attention_heads`` is grouped-query attention (GQA): several query
    heads share one key/value head. ``head_dim`` defaults to ``hidden_size // num_attention_heads``.
    The defaults are transformers' -- Llama-7B's shape (28 GB in float32) -- so a config.json that
    leaves a field out means the same thing here as there; give the sizes you want explicitly.
    """
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = None
    head_dim: int = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # RoPE scaling for long contexts, as in config.json's ``rope_scaling``: None (plain RoPE), or
    # {"rope_type": "linear", "factor": f}, {"rope_type": "dynamic", "factor": f} (NTK) or Llama 3.1's
    # {"rope_type": "llama3", "factor", ...}.
    rope_scaling: dict = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int = 2  # may also be a list of ids (Llama 3 has two end tokens)
    pad_token_id: int = None
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept for saving

    model_type = "llama"  # config.json's "model_type" (class attributes, not fields)
    _architecture = "LlamaForCausalLM"  # config.json's "architectures"
    # The variants of nn/llama_family.py change these few rules:
    _per_head_norms = ()  # RMSNorms over each head's features in attention (Qwen3: q_norm, k_norm)
    # Attributes of transformers' config class that its config.json holds at their defaults too (they are no
    # dataclass fields here: read through __getattr__); written the same, and not kept in ``extra`` at the default
    _written_defaults = {"attention_dropout": 0.0, "pretraining_tp": 1, "use_cache": True}

    def _biases(self):
        """Which Linear of a decoder layer has a bias: transformers' Llama gives the attention's four
        ``attention_bias`` and the MLP's three ``mlp_bias``."""
        return {**dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj"), self.attention_bias),
                **dict.fromkeys(("gate_proj", "up_proj", "down_proj"), self.mlp_bias)}

    def __post_init__(self):
        _check_field_types(self)
        if "attn_implementation" in self.extra:  # transformers' keyword sets config._attn_implementation, which
            self._attn_implementation = self.extra.pop("attn_implementation")  # the model reads (checked there)
        for name in generation.MODEL_CONFIG_PARAMETERS:  # dropped, as transformers' configs do (a model loaded
            self.extra.pop(name, None)  # from a folder without generation_config.json gets config.json's)
        for name, default in self._written_defaults.items():  # (one config whether the file wrote them or not)
            if name in self.extra and self.extra[name] == default and type(self.extra[name]) is type(default):
                del self.extra[name]
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                                 f"num_attention_heads {self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        self.rope_scaling = _checked_rope_scaling(self.rope_scaling, self.max_position_embeddings)

    _DERIVED = ("architectures", "model_type", "rope_parameters", "transformers_version")

    @classmethod
    def from_dict(cls, d, *, return_unused_kwargs=False, **kwargs):
        """From a config.json dict, old style (``rope_theta``) or new (``rope_parameters``). As
        transformers: keywords naming a config attribute override the dict; the others are left
        unused (returned as a dict with ``return_unused_kwargs=True``)."""
        config = cls._from_json_dict(d)
        used = {k: v for k, v in kwargs.items() if config._has_attribute(k)}
        config = config._with(used)
        unused = {k: v for k, v in kwargs.items() if k not in used}
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def _from_json_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"a Llama config must be a JSON object of field: value, got a "
                             f"{type(d).__name__}")
        d = dict(d)
        model_type = d.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config has model_type {model_type!r}; {cls.__name__} reads {cls.model_type!r} "
                             "(minilora.models.AutoConfig / AutoModelForCausalLM pick the class by model_type)")
        for key in ("rope_parameters", "rope_scaling"):  # both checked: a bad one beside the other is no less bad
            if d.get(key) is not None and not isinstance(d[key], dict):  # (transformers' strict config refuses it)
                raise _field_error(key, d[key], "an object or null")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if "rope_theta" in rope:
            if "rope_theta" in d and d["rope_theta"] != rope["rope_theta"]:  # transformers 4 reads one, 5 the other
                raise ValueError(f"config has rope_theta {d['rope_theta']!r} but rope_parameters.rope_theta "
                                 f"{rope['rope_theta']!r}: make them equal (or keep one)")
            d["rope_theta"] = rope["rope_theta"]
        if d.get("rope_parameters") and isinstance(d.get("rope_scaling"), dict) and \
                _without_theta(d["rope_scaling"]) != _without_theta(d["rope_parameters"]):
            raise ValueError(f"config has rope_scaling {d['rope_scaling']!r} but rope_parameters "
                             f"{d['rope_parameters']!r}: make them agree (or keep one)")
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "type")}
        scaling["rope_type"] = rope.get("rope_type", rope.get("type", "default"))  # "type": old configs
        d["rope_scaling"] = None if scaling["rope_type"] == "default" else scaling
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in d.items() if k not in names and k not in cls._DERIVED}
        return cls(**{k: v for k, v in d.items() if k in names}, extra=extra)

    def to_dict(self):
        """The config.json dict. ``rope_theta`` is written both ways so transformers 4.x and 5.x read it."""
        d = dataclasses.asdict(self)
        d.update(d.pop("extra"))
        for name, default in self._written_defaults.items():  # (transformers writes them; its version it parses, so
            d.setdefault(name, default)  # "minilora-..." cannot go there: transformers_version is left out)
        d["architectures"] = [self._architecture]
        d["model_type"] = self.model_type
        scaling = d.pop("rope_scaling") or {"rope_type": "default"}
        d["rope_parameters"] = {**scaling, "rope_theta": self.rope_theta}  # transformers 5
        if scaling["rope_type"] != "default":
            d["rope_scaling"] = scaling  # transformers 4 (rope_theta at the top level)
        return d

    # transformers' config attributes that are not fields here: kept in ``extra`` and read by the model
    # (pretraining_tp changes nothing in transformers 5; output_attentions=True is refused by the model)
    _ATTRIBUTES_IN_EXTRA = ("use_cache", "attention_dropout", "pretraining_tp", "dtype",
                            "output_attentions", "output_hidden_states", "return_dict",
                            # transformers' task-head attributes: from_pretrained(path, num_labels=3) sets them
                            "num_labels", "id2label", "label2id", "problem_type", "classifier_dropout")

    @classmethod
    def from_pretrained(cls, path, *, return_unused_kwargs=False, **kwargs):
        """Read ``config.json`` from a folder (or the file itself). As transformers: keywords that
        name a config attribute override the file; the others are left unused (returned as a dict
        with ``return_unused_kwargs=True``)."""
        path = os.fspath(path)
        put_back_a_cut_swap(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no config.json at {path}")
        if file.endswith((".safetensors", ".bin", ".pt", ".pth", ".gguf")):  # (an OSError, as transformers' refusal)
            raise OSError(f"{path} is a weights file, not a config.json: from_pretrained takes the model's folder "
                          f"({os.path.dirname(os.path.abspath(path))})")
        with _naming_the_file(file):
            return cls.from_dict(load_json(file), return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_json_file(cls, json_file):
        return cls.from_dict(load_json(json_file))

    def save_pretrained(self, directory, dtype=None, architecture=None):
        """config.json in ``directory``; ``architectures`` names ``architecture`` (the model class saving it, as
        transformers writes it), else this config's causal LM."""
        if os.path.isfile(directory):  # (transformers: an AssertionError with these words)
            raise ValueError(f"save_pretrained needs a directory, but {directory!r} is a file")
        if generation.generation_parameters(self):
            raise ValueError("Some generation parameters are set in the model config. These should go into "
                             "`model.generation_config`as opposed to `model.config`. \nGeneration parameters found: "
                             f"{generation.generation_parameters(self)}")
        d = self.to_dict()
        if architecture is not None:
            d["architectures"] = [architecture]
        if dtype is not None:
            d["dtype"] = str(np.dtype(dtype))
        save_json(d, os.path.join(directory, "config.json"))

    def to_diff_dict(self):
        """transformers' to_diff_dict: what differs from a bare config. For a Llama that is every Llama
        field (transformers compares with its base class's defaults), i.e. config.json's dict."""
        return self.to_dict()

    def to_json_string(self, use_diff=True):
        """config.json's text, as transformers writes it (indented, keys sorted, a final newline)."""
        d = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path, use_diff=True):
        with atomic_write(json_file_path, "w") as f:
            f.write(self.to_json_string(use_diff))

    def update(self, config_dict):
        """transformers' update: set each key; one that is not a field is kept (``extra``), as an attribute."""
        for key, value in config_dict.items():
            if key in self._field_names() or key in ("dtype", "torch_dtype"):  # (the dtype under either name)
                setattr(self, key, value)
            else:
                self.extra[key] = value
        _check_field_types(self)

    @property
    def rope_parameters(self):
        """transformers 5's name for the RoPE settings: ``rope_scaling`` (rope_type "default" when
        there is none) with ``rope_theta`` in it."""
        return {**(self.rope_scaling or {"rope_type": "default"}), "rope_theta": self.rope_theta}

    @classmethod
    def _field_names(cls):
        return _fields_of(cls) - {"extra"}

    def _has_attribute(self, key):
        return key in self._field_names() or key in self._ATTRIBUTES_IN_EXTRA or key in self.extra or \
            key == "rope_parameters"

    def _with(self, overrides):
        """A copy with ``overrides`` set (fields checked again; ``rope_parameters`` as its setter reads it;
        other attributes go to ``extra``)."""
        if not overrides:
            return self
        overrides = dict(overrides)
        rope = overrides.pop("rope_parameters", None)
        fields = self._field_names()
        extra = {**self.extra, **{k: v for k, v in overrides.items() if k not in fields}}
        config = dataclasses.replace(self, **{k: v for k, v in overrides.items() if k in fields}, extra=extra)
        if rope is not None:
            config.rope_parameters = rope
        return config

    @property
    def use_return_dict(self):
        """transformers' deprecated spelling of ``return_dict``, read-only there (a property without a setter)."""
        warnings.warn("`use_return_dict` is deprecated! Use `return_dict` instead!", FutureWarning, stacklevel=2)
        return self.return_dict

    def __setattr__(self, name, value):
        # transformers' configs take any attribute and save it (model.config.use_cache = False, read by
        # forward): a name that is not a field goes to ``extra``, where the model and to_dict look
        if name == "use_return_dict":  # (minilora kept it in extra, read by nothing: return_dict stayed True)
            raise AttributeError(f"property 'use_return_dict' of '{type(self).__name__}' object has no setter")
        if name == "rope_parameters":  # transformers 5's spelling: rope_theta and the scaling in one dict
            self._set_rope(value)
        elif name in ("dtype", "torch_dtype"):  # (torch_dtype: transformers' older name of dtype)
            self.extra.pop("dtype", None)
            if value is not None:
                self.extra["dtype"] = _dtype_name(value)
        elif name == "rope_scaling" and "extra" in self.__dict__:  # set after __init__: checked as there
            self._set_rope(value)
        elif name.startswith("_") or name in _fields_of(type(self)):
            object.__setattr__(self, name, value)
        else:
            if name == "output_attentions" and value:
                self._attention_weights_wanted()
            self.extra[name] = value

    def _attention_weights_wanted(self):
        """transformers' ``output_attentions`` setter: only eager attention computes weights, so a config whose
        model runs another (a model sets "sdpa" when made) refuses it, and one with none yet gets "eager"."""
        implementation = self.__dict__.get("_attn_implementation")
        if implementation is None:
            self._attn_implementation = "eager"
        elif implementation != "eager":
            raise ValueError("The `output_attentions` attribute is not supported when using the `attn_implementation` "
                             f"set to {implementation}. Please set it to 'eager' instead.")

    def _set_rope(self, rope):
        """``config.rope_parameters = {...}`` (or ``rope_scaling``, its transformers 4 name, after __init__):
        ``rope_theta`` from the dict (else kept), the rest checked and standardized as config.json's."""
        if rope is not None and not isinstance(rope, dict):
            raise _field_error("rope_parameters", rope, "an object or null")
        rope = dict(rope or {})
        theta = rope.pop("rope_theta", None)
        if theta is not None:
            object.__setattr__(self, "rope_theta", theta)
            _check_field_types(self)
        object.__setattr__(self, "rope_scaling", _checked_rope_scaling(rope, self.max_position_embeddings))

    def __getattr__(self, name):
        # Only reached for names that are not fields: config.json keys minilora does not use read back
        # as attributes, as on transformers' configs (config.my_note after LlamaConfig(my_note=...)).
        extra = self.__dict__.get("extra") or {}
        if name in ("dtype", "torch_dtype"):  # transformers' config.dtype: a dtype (config.json holds its name)
            return _to_dtype(extra["dtype"]) if extra.get("dtype") is not None else None
        if name in extra:
            return extra[name]
        if name in _UNSET_ATTRIBUTES:  # transformers' defaults for the attributes a config.json may leave out
            return _UNSET_ATTRIBUTES[name]
        if name in ("num_labels", "id2label", "label2id"):
            return _label_attribute(name, extra)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")


@functools.cache
def _fields_of(config_class):
    return frozenset(f.name for f in dataclasses.fields(config_class))


# what transformers' LlamaConfig reads for these when nobody set them (the model reads the same defaults)
_UNSET_ATTRIBUTES = {"use_cache": True, "attention_dropout": 0.0, "pretraining_tp": 1,
                     "output_attentions": False, "output_hidden_states": False, "return_dict": True,
                     "is_encoder_decoder": False, "problem_type": None}


def _label_attribute(name, extra):
    """transformers' task-head attributes a config leaves out (config.num_labels was an AttributeError where
    transformers reads 2, or the size of the id2label given): ``num_labels`` the size of ``id2label`` (else 2),
    ``id2label`` LABEL_0, LABEL_1, ... for each, ``label2id`` their inverse (None beside an id2label given alone,
    as transformers leaves it)."""
    count = len(extra["id2label"]) if extra.get("id2label") else extra.get("num_labels", 2)
    id2label = extra.get("id2label") or {i: f"LABEL_{i}" for i in range(count)}
    label2id = None if extra.get("id2label") else {label: i for i, label in id2label.items()}
    return {"num_labels": count, "id2label": id2label, "label2id": label2id}[name]


# What each config field may hold. JSON has no int/float distinction a user would notice, so a whole
# number is a fine float; but a float (4096.0) for a size, a string ("false", "4096") or a bool for a
# number is refused -- reading "false" as true, or 64.5 as 64, would build another model silently.
_INT_FIELDS = {"vocab_size": 1, "hidden_size": 1, "intermediate_size": 1, "num_hidden_layers": 0,
               "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 2,
               "max_position_embeddings": 1}  # field -> smallest allowed value
_OPTIONAL_INT_FIELDS = ("num_key_value_heads", "head_dim")  # None: derived from the others
_FLOAT_FIELDS = {"rms_norm_eps": "> 0", "rope_theta": "> 0", "initializer_range": ">= 0"}
_BOOL_FIELDS = ("tie_word_embeddings", "attention_bias", "mlp_bias")
_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _field_error(name, value, allowed):
    return ValueError(f"config field {name!r} is {value!r} ({type(value).__name__}); it must be {allowed}")


def _check_field_types(config):
    """Refuse every field value that transformers' strict config would refuse or that we would misread."""
    for name, smallest in _INT_FIELDS.items():
        value = getattr(config, name)
        if value is None and name in _OPTIONAL_INT_FIELDS:
            continue
        if not _is_int(value) or value < smallest:
            raise _field_error(name, value, f"an integer >= {smallest}" +
                               (" (or null)" if name in _OPTIONAL_INT_FIELDS else ""))
        setattr(config, name, int(value))
    for name, rule in _FLOAT_FIELDS.items():
        value = getattr(config, name)
        ok = _is_number(value) and math.isfinite(value) and (value > 0 if rule == "> 0" else value >= 0)
        if not ok:
            raise _field_error(name, value, f"a finite number {rule}")
        setattr(config, name, float(value))
    for name in _BOOL_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, (bool, np.bool_)):
            raise _field_error(name, value, "true or false (a JSON boolean, not a string or number)")
    for name in _TOKEN_FIELDS:
        value = getattr(config, name)
        ids = value if name == "eos_token_id" and isinstance(value, list) else [value]
        if value is not None and not all(_is_int(i) for i in ids):
            raise _field_error(name, value, "a token id (an integer) or null" +
                               (", or a list of token ids" if name == "eos_token_id" else ""))
    if not isinstance(config.hidden_act, str):
        raise _field_error("hidden_act", config.hidden_act, "an activation's name, such as 'silu'")
    if config.rope_scaling is not None and not isinstance(config.rope_scaling, dict):
        raise _field_error("rope_scaling", config.rope_scaling, "an object or null")
    if not isinstance(config.extra, dict):
        raise _field_error("extra", config.extra, "a dict")
    _standard_dtype(config.extra)
    # (transformers' strict config refuses a string; minilora read "0.1" as 0.1)
    dropout = config.extra.get("attention_dropout")
    if dropout is not None and not (_is_number(dropout) and 0 <= dropout <= 1):
        raise _field_error("attention_dropout", dropout, "a number in [0, 1]")
    for name, (fits, allowed) in _EXTRA_ATTRIBUTE_TYPES.items():
        value = config.extra.get(name)
        if value is not None and not fits(value):
            raise _field_error(name, value, allowed)


def _standard_dtype(extra):
    """config.json's ``dtype`` (``torch_dtype`` in older files; ``dtype`` wins where both are, as transformers reads
    them) kept in ``extra`` under its name: the dtype ``AutoModel*.from_config`` builds in and from_pretrained's
    ``dtype="auto"`` loads in (transformers' config.dtype; dropping it built a bfloat16 checkpoint's copy in float32)."""
    given = extra.pop("dtype", None)
    older = extra.pop("torch_dtype", None)
    given = older if given is None else given
    if given is not None:
        extra["dtype"] = _dtype_name(given)


def _dtype_name(value):
    """A dtype's name as config.json writes it ("bfloat16"), from a name, a torch dtype or a minilora/NumPy one."""
    name = value.removeprefix("torch.") if isinstance(value, str) else value
    if name == "bfloat16":  # (a name NumPy knows only with ml_dtypes: from_pretrained warns then, and loads float32)
        return name
    try:
        return str(_to_dtype(name))
    except (TypeError, ValueError) as exc:  # (NumPy's ValueError for a dict, say)
        raise TypeError(f"its dtype {value!r} is not a dtype ({exc})") from None


# The types transformers' config refuses others of, for attributes kept in ``extra``: "use_cache": "no" was
# read as true (a cache on), "num_labels": "2" failed far from config.json, in the classification head.
_EXTRA_ATTRIBUTE_TYPES = {
    "use_cache": (lambda v: isinstance(v, (bool, np.bool_)), "true or false (a JSON boolean, not a string or number)"),
    "pretraining_tp": (_is_int, "an integer"),
    "num_labels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "id2label": (lambda v: isinstance(v, dict), "an object of id: label"),
    "label2id": (lambda v: isinstance(v, dict), "an object of label: id"),
    "layer_types": (lambda v: isinstance(v, list), "a list of attention types, one a layer"),
}


_ROPE_SCALING_KEYS = {"linear": ("factor",), "dynamic": ("factor",),
                      "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
                      "yarn": ("factor",), "longrope": ("short_factor", "long_factor")}
_ROPE_LISTS = ("short_factor", "long_factor")  # longrope's per-frequency factors
# yarn's and longrope's numbers that may be left out (transformers' defaults apply), checked when given
_ROPE_OPTIONAL_NUMBERS = ("original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
                          "mscale_all_dim")


def _without_theta(rope):
    """A rope_scaling / rope_parameters dict, compared without rope_theta and with "type" as "rope_type"."""
    out = {k: v for k, v in rope.items() if k not in ("rope_theta", "type")}
    out["rope_type"] = rope.get("rope_type", rope.get("type", "default"))
    return out


def _checked_rope_scaling(scaling, max_position_embeddings):
    """``rope_scaling`` if minilora computes it (transformers' 'linear', 'dynamic', 'llama3', 'yarn' and
    'longrope'), else a clear error. yarn and longrope without ``original_max_position_embeddings`` get
    ``max_position_embeddings``, as transformers' ``standardize_rope_params`` writes it."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))  # "type": older config.json files
    scaling = {**{k: v for k, v in scaling.items() if k != "type"}, "rope_type": kind}
    if kind == "default":
        return None
    if kind not in _ROPE_SCALING_KEYS:
        raise NotImplementedError(f"rope_type {kind!r} is not supported; minilora implements 'default', "
                                  f"{', '.join(repr(k) for k in _ROPE_SCALING_KEYS)}")
    missing = [k for k in _ROPE_SCALING_KEYS[kind] if k not in scaling]
    if missing:
        raise ValueError(f"rope_scaling of type {kind!r} needs {', '.join(missing)}; got {scaling}")
    if kind in ("yarn", "longrope"):
        scaling.setdefault("original_max_position_embeddings", max_position_embeddings)
    numbers = [k for k in _ROPE_SCALING_KEYS[kind] if k not in _ROPE_LISTS] + \
        [k for k in _ROPE_OPTIONAL_NUMBERS if scaling.get(k) is not None and kind in ("yarn", "longrope")]
    for key in numbers:  # numbers, not "2.0" (which would fail deep in the RoPE tables)
        _check_rope_number(key, scaling[key])
    for key in _ROPE_LISTS if kind == "longrope" else ():
        if not isinstance(scaling[key], (list, tuple)) or not scaling[key]:
            raise _field_error(f"rope_scaling.{key}", scaling[key], "a list of finite numbers > 0")
        for value in scaling[key]:
            _check_rope_number(key, value)
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise NotImplementedError("partial_rotary_factor != 1 is not supported (Llama rotates whole heads)")
    if kind == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise ValueError(f"rope_scaling: high_freq_factor must exceed low_freq_factor, got {scaling}")
    return scaling


def _check_rope_number(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _field_error(f"rope_scaling.{key}", value, "a finite number > 0")


# ==================================================================================================
# Rotary position embedding (RoPE) tables
# ==================================================================================================
def rope_inverse_frequencies(config, seq_len=None):
    """The rotation speed of each pair of head features: ``theta^(-2i/d)`` for i < d/2, then scaled
    as the checkpoint says (transformers' rope_type), in float64.

    'linear' divides every frequency by ``factor``: positions count ``factor`` times slower, so a
    model trained on n positions reads n * factor. 'llama3' (Llama 3.1) divides only the slow
    frequencies (wavelengths above ``original_max_position_embeddings / low_freq_factor``), keeps the
    fast ones (below ``... / high_freq_factor``), and blends smoothly in between. 'dynamic' (NTK)
    raises theta for a sequence of ``seq_len`` > max_position_embeddings positions (transformers'
    ``_compute_dynamic_ntk_parameters``; shorter ones: plain RoPE). 'yarn' interpolates the slow
    frequencies (divided by ``factor``) and keeps the fast ones, with a linear ramp between the dimensions
    that turn ``beta_fast`` and ``beta_slow`` times over the original context. 'longrope' (Phi-3) divides
    each frequency by its own factor: ``long_factor`` for a sequence longer than the original context,
    ``short_factor`` otherwise. (yarn and longrope also scale cos and sin: ``rope_attention_scaling``.)
    """
    dim = config.head_dim
    scaling = config.rope_scaling or {"rope_type": "default"}
    theta = config.rope_theta
    if scaling["rope_type"] == "dynamic":
        longest, factor = max(seq_len or 0, config.max_position_embeddings), scaling["factor"]
        theta = theta * ((factor * longest / config.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if scaling["rope_type"] == "linear":
        return inv_freq / scaling["factor"]
    if scaling["rope_type"] == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv_freq
        smooth = (context / wavelength - low) / (high - low)  # 0 at the slow end of the blend, 1 at the fast
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        slow, fast = wavelength > context / low, wavelength < context / high
        return np.where(slow, inv_freq / factor, np.where(fast, inv_freq, blended))
    if scaling["rope_type"] == "yarn":
        return _yarn_inverse_frequencies(inv_freq, dim, theta, scaling)
    if scaling["rope_type"] == "longrope":
        long = seq_len is not None and seq_len > scaling["original_max_position_embeddings"]
        return inv_freq / np.asarray(scaling["long_factor" if long else "short_factor"], dtype=np.float64)
    return inv_freq


def _torch_float32_frequencies(config, seq_len=None):
    """``inv_freq`` as transformers computes it in float32 (its ROPE_INIT_FUNCTIONS for the config's rope_type, at a
    sequence of ``seq_len`` positions), op by op: the exponents ``arange(0, d, 2) / d`` in float32, torch's pow of a
    number base (SLEEF's powf in vectors, C's powf in the tail), then each scaling's float32 steps in its order.
    (``rope_inverse_frequencies`` in float64, rounded once, left about a third of the entries an ulp apart: plain
    RoPE's, and every scaled type's -- Llama 3.1's llama3 among them -- moving thousands of a bfloat16 model's
    cos/sin entries over 8192 positions.)"""
    scaling = config.rope_scaling or {"rope_type": "default"}
    kind, dim, one = scaling["rope_type"], config.head_dim, _F32(1)
    exponents = np.arange(0, dim, 2).astype(_F32) / _F32(dim)
    theta = _F32(config.rope_theta) if kind != "dynamic" else _dynamic_theta(config, scaling, seq_len)
    powers = float32_math.pow_loop(theta, exponents)
    if kind == "linear":
        return one / powers / _F32(scaling["factor"])
    if kind == "llama3":
        return _llama3_float32(one / powers, scaling)
    if kind == "yarn":
        return _yarn_float32(powers, dim, scaling, config.rope_theta)
    if kind == "longrope":
        long = seq_len is not None and seq_len > scaling["original_max_position_embeddings"]
        factors = np.asarray(scaling["long_factor" if long else "short_factor"], dtype=_F32)
        return one / (factors * powers)
    return one / powers


_F32 = np.float32


def _dynamic_theta(config, scaling, seq_len):
    """dynamic NTK's raised theta as transformers computes it: in Python floats when the model is made (seq_len
    None: max_position_embeddings), in float32 tensor steps from a forward's longer sequence (its seq_len is a
    torch int64 tensor there)."""
    dim, factor, context = config.head_dim, scaling["factor"], config.max_position_embeddings
    if seq_len is None or seq_len <= context:
        return _F32(config.rope_theta * ((factor * context / context) - (factor - 1)) ** (dim / (dim - 2)))
    grown = _F32(factor) * _F32(seq_len) / _F32(context) - _F32(factor - 1)
    exponent = dim / (dim - 2)
    raised = grown * grown if exponent == 2 else float32_math.pow_scalar_loop(np.array([grown]), exponent)[0]
    return _F32(config.rope_theta) * raised  # (torch computes tensor ** 2 as a product)


def _llama3_float32(inv_freq, scaling):
    """transformers' ``_compute_llama3_parameters`` on float32 ``inv_freq`` (each Python number met as a float32; a
    number divided by a tensor is torch's ``__rtruediv__``, the tensor's reciprocal times the number)."""
    factor, low, high = _F32(scaling["factor"]), scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = _F32(1) / inv_freq * _F32(2 * math.pi)
    slow, fast = wavelength > _F32(context / low), wavelength < _F32(context / high)
    scaled = np.where(slow, inv_freq / factor, inv_freq)
    smooth = (_F32(1) / wavelength * _F32(context) - _F32(low)) / _F32(high - low)
    blended = (_F32(1) - smooth) * scaled / factor + smooth * scaled
    return np.where(~fast & ~slow, blended, scaled)


def _yarn_float32(powers, dim, scaling, theta):
    """transformers' ``_compute_yarn_parameters`` in float32: the ramp of ``_yarn_ramp`` between the kept
    (``1 / powers``) and the interpolated (``1 / (factor * powers)``) frequencies."""
    low, high = _yarn_ramp_ends(dim, scaling, theta)
    ramp = np.clip((np.arange(dim // 2, dtype=_F32) - _F32(low)) / _F32(high - low), 0, 1)
    kept = _F32(1) - ramp
    return _F32(1) / (_F32(scaling["factor"]) * powers) * (_F32(1) - kept) + _F32(1) / powers * kept


def _yarn_inverse_frequencies(inv_freq, dim, theta, scaling):
    """transformers' ``_compute_yarn_parameters``: between the dimension that turns ``beta_fast`` times over
    the original context and the one that turns ``beta_slow`` times (``_yarn_ramp_ends``), the frequencies ramp
    linearly from kept (fast) to divided by ``factor`` (slow)."""
    low, high = _yarn_ramp_ends(dim, scaling, theta)
    kept = 1 - np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    return inv_freq / scaling["factor"] * (1 - kept) + inv_freq * kept


def _yarn_ramp_ends(dim, scaling, theta):
    """The dimensions where yarn's ramp starts and ends (floored / ceiled unless ``truncate`` is False)."""
    context = scaling["original_max_position_embeddings"]

    def dimension_turning(rotations):
        return dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))
    low, high = dimension_turning(scaling.get("beta_fast") or 32), dimension_turning(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    return low, high


def rope_attention_scaling(config):
    """What yarn and longrope multiply cos and sin by (transformers' ``attention_scaling``): the config's
    ``attention_factor``, else yarn's ``0.1 ln(factor) + 1`` (or the ratio of two such terms with ``mscale``
    and ``mscale_all_dim``) and longrope's ``sqrt(1 + ln(factor) / ln(original context))``; 1 otherwise."""
    scaling = config.rope_scaling or {"rope_type": "default"}
    if scaling["rope_type"] not in ("yarn", "longrope"):
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    context = scaling["original_max_position_embeddings"]
    if scaling["rope_type"] == "longrope":
        factor = scaling.get("factor") or config.max_position_embeddings / context
        return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(context))

    def mscale(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    if scaling.get("mscale") and scaling.get("mscale_all_dim"):
        return float(mscale(scaling["factor"], scaling["mscale"]) / mscale(scaling["factor"], scaling["mscale_all_dim"]))
    return mscale(scaling["factor"])


class LlamaRotaryEmbedding(Module):
    """cos/sin tables that rotate each (i, i + d/2) pair of q and k by ``position * inv_freq[i]``
    (``rope_inverse_frequencies``: ``theta^(-2i/d)``, scaled as the config says).

    Computed once per forward (they are tiny: positions x head_dim), shared by all layers. transformers
    computes them in float32 (and casts to a 16-bit model's dtype): float32 angles, off by up to position x
    2^-24 radians. float32 and 16-bit models take that recipe (``_float32_tables``: over 4096 positions 0-4 of
    262144 bfloat16 entries, and 5% of the float32 ones by an ulp, differ from transformers', where MKL's cos
    and sin are not correctly rounded; the float64 angles moved 2394 bfloat16 entries, from position 43 on,
    and every logit after them, and float32 ones by up to 2.4e-4 at position 4000; tests/test_bf16_llama.py,
    tests/test_bf16_bits_r21.py). A float64 model keeps float64 angles (gradient checks need them exact).
    The rotation itself is ``ops.rotary_embedding``.

    ``inv_freq`` is torch's non-persistent float32 buffer (torch's own float32 values, every rope_type's:
    ``_torch_float32_frequencies``): ``model.to(torch.bfloat16)`` (``.half()``) casts it with the weights, and
    transformers' tables then turn by the 16-bit frequencies; so do these. A model built or loaded in a
    16-bit dtype keeps float32 frequencies, as transformers' ``from_pretrained(dtype=...)``.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.original_inv_freq = rope_inverse_frequencies(config)
        self._set_frequencies(self.original_inv_freq, None)
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        self.attention_scaling = rope_attention_scaling(config)
        self.rope_type = (config.rope_scaling or {}).get("rope_type", "default")  # (transformers' attribute)

    def _set_frequencies(self, inv_freq, seq_len):
        """New float64 frequencies (those of a sequence of ``seq_len`` positions; None: the config's), and torch's
        buffer for them in float32, as transformers computes and registers it anew (``_torch_float32_frequencies``)."""
        self.frequencies, self._frequencies_seq_len = inv_freq, seq_len
        buffer = _torch_float32_frequencies(self.config, seq_len)
        self.register_buffer("inv_freq", Tensor(buffer), persistent=False)

    def _turning_frequencies(self):
        """The frequencies the tables use: float64, or the buffer's 16-bit values after a cast of the model."""
        buffer = self._buffers["inv_freq"]
        if buffer.dtype.itemsize == 2:
            return self.frequencies.astype(np.float32).astype(buffer.dtype).astype(np.float64)
        return self.frequencies

    def forward(self, x, position_ids=None, xp=None):
        """transformers' call, ``rotary_emb(x, position_ids)``: cos, sin Tensors [B, T, head_dim] in ``x``'s dtype
        on its device (``x`` gives only those; ``position_ids`` [B, T]), as ``LlamaModel`` calls it (forward hooks
        see that call). minilora's older call, ``rotary_emb(position_ids, dtype, xp)`` with NumPy positions,
        still gives the arrays of ``tables``."""
        if not isinstance(x, Tensor):
            return self.tables(x, position_ids, np if xp is None else xp)
        if position_ids is None:
            raise TypeError("LlamaRotaryEmbedding.forward(x, position_ids): position_ids [batch, seq_len] is "
                            "required (x gives the tables' dtype and device only)")
        tables = self.tables(_as_ids(position_ids, "position_ids"), x.dtype, x.device.xp)
        return tuple(Tensor._make(table[:, 0], x.device, False, None) for table in tables)

    def tables(self, position_ids, dtype, xp=np):
        """``position_ids`` [B, T] (NumPy ints) -> cos, sin arrays of shape [B, 1, T, head_dim]."""
        rope_type = (self.config.rope_scaling or {}).get("rope_type")
        if rope_type == "dynamic":
            self._dynamic_frequency_update(int(position_ids.max()) + 1)
        elif rope_type == "longrope":  # long or short factors, by this call's longest position
            seq_len = int(position_ids.max()) + 1
            self._set_frequencies(rope_inverse_frequencies(self.config, seq_len), seq_len)
        if xp is META.xp:  # (a meta model's tables: their shape, no cos or sin computed on the host)
            shape = (position_ids.shape[0], 1, position_ids.shape[-1], 2 * self._buffers["inv_freq"].shape[0])
            return xp.zeros(shape, dtype), xp.zeros(shape, dtype)
        if np.dtype(dtype) != np.float64:  # float32 and 16-bit models: transformers' float32 tables (rounded)
            return tuple(xp.asarray(table.astype(dtype)) for table in self._float32_tables(position_ids))
        freqs = position_ids[..., None].astype(np.float64) * self._turning_frequencies()  # [B, T, d/2]
        angles = np.concatenate((freqs, freqs), axis=-1)[:, None]           # [B, 1, T, d]
        cos, sin = np.cos(angles), np.sin(angles)
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return xp.asarray(cos, dtype=dtype), xp.asarray(sin, dtype=dtype)

    def _float32_tables(self, position_ids):
        """cos and sin as transformers computes them for every dtype: float32 angles (``inv_freq`` times the
        position, one float32 product each), their cos and sin in float32 (MKL's, taken as correctly rounded),
        times ``attention_scaling`` in float32; a 16-bit model rounds these."""
        inv_freq = _host(self._buffers["inv_freq"]._array).astype(np.float32)  # (a cast model's 16-bit values)
        freqs = position_ids[..., None].astype(np.float32) * inv_freq  # [B, T, d/2]
        angles = np.concatenate((freqs, freqs), axis=-1)[:, None]
        scaling = np.float32(self.attention_scaling)
        return tuple(float32_math.vml(name, angles) * scaling for name in ("cos", "sin"))

    def _dynamic_frequency_update(self, seq_len):
        """transformers' dynamic RoPE state: the frequencies of the longest sequence seen so far
        (recomputed as a call reaches past it), back to plain RoPE once a call is shorter than
        max_position_embeddings again. (Keys already cached keep the rotation they were given.)"""
        if seq_len > self.max_seq_len_cached:
            self._set_frequencies(rope_inverse_frequencies(self.config, seq_len), seq_len)
            self.max_seq_len_cached = seq_len
        elif seq_len < self.original_max_seq_len < self.max_seq_len_cached:
            self._set_frequencies(self.original_inv_freq, None)
            self.max_seq_len_cached = self.original_max_seq_len


# ==================================================================================================
# KV cache
# ==================================================================================================
class KVCache:
    """Keys and values of every layer from earlier steps, so each generated token costs one position.

    ``update`` appends the new positions (``cat`` along the sequence axis) and returns the whole
    history: key/value tensors of shape [B, num_key_value_heads, past + T, head_dim].
    """

    def __init__(self, config=None):
        # config: taken as transformers' DynamicCache(config=model.config) takes it; the layers come as they are filled
        self.keys, self.values = [], []
        self._layer_names = _cache_layer_names(config)

    def __repr__(self):
        """transformers' ``DynamicCache(layers=[DynamicLayer, ...])``: one entry a layer, made up front from a
        config, else as the layers are filled (``print(outputs)`` shows it as the model output's cache)."""
        names = self._layer_names if self._layer_names is not None else ["DynamicLayer"] * len(self.keys)
        return f"DynamicCache(layers=[{', '.join(names)}])"

    def get_seq_length(self, layer_idx=0):
        """How many positions are cached (transformers' DynamicCache.get_seq_length)."""
        return self.keys[layer_idx].shape[2] if len(self.keys) > layer_idx else 0

    def reorder_cache(self, beam_idx):
        """Row ``i`` becomes the old row ``beam_idx[i]`` (beam search continues the chosen beams' caches)."""
        rows = Tensor(np.asarray(beam_idx), dtype=np.int64)
        self.keys = [k.index_select(0, rows.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, rows.to(v.device)) for v in self.values]

    def crop(self, tokens_to_remove):
        """Drop the last ``-tokens_to_remove`` positions, as transformers 5's DynamicCache.crop: 0 keeps them all
        and a positive count (4.x's "keep this many") is its ValueError, not an emptied cache."""
        if tokens_to_remove > 0:
            raise ValueError(f"Calling `crop` with a positive value (`{tokens_to_remove}`) is not supported. Please use "
                             "a negative integer to remove that number of tokens from the cache instead.")
        if tokens_to_remove == 0:
            return
        keep = max(self.get_seq_length() + tokens_to_remove, 0)
        self.keys = [k[:, :, :keep] for k in self.keys]
        self.values = [v[:, :, :keep] for v in self.values]

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        """Append a layer's new keys and values and return its whole history, as transformers' DynamicCache.update
        (its argument order: ``update(k, v, layer_idx)``)."""
        k, v = key_states, value_states
        if layer_idx == len(self.keys):  # first call for this layer
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = ops.cat([self.keys[layer_idx], k], axis=2)
            self.values[layer_idx] = ops.cat([self.values[layer_idx], v], axis=2)
        return self.keys[layer_idx], self.values[layer_idx]

    def __len__(self):
        return len(self.keys)

    @property
    def layers(self):
        """transformers 5's view of the cache, one layer at a time: ``cache.layers[i].keys`` / ``.values``, each
        [B, num_key_value_heads, positions, head_dim] (a view to read; ``update`` writes)."""
        return [CacheLayer(k, v) for k, v in zip(self.keys, self.values)]


@dataclass(frozen=True)
class CacheLayer:
    """One layer of a ``KVCache`` as transformers 5's DynamicLayer shows it: its cached keys and values."""
    keys: Tensor
    values: Tensor


DynamicCache = KVCache  # transformers' name for it (``from transformers import DynamicCache``)


def _cache_layer_names(config):
    """The classes of transformers' cache layers for ``config``, as DynamicCache(config=...) makes them (its
    get_layer_types_and_kwargs): a sliding-window layer keeps the window, the others everything (minilora's cache
    keeps every position in both: the same numbers); None without a config."""
    if config is None:
        return None
    types = getattr(config, "layer_types", None)
    if types is None:
        window = getattr(config, "sliding_window", None)
        types = ["sliding_attention" if window is not None else "full_attention"] * config.num_hidden_layers
    return ["DynamicSlidingWindowLayer" if kind in ("sliding_attention", "chunked_attention") else "DynamicLayer"
            for kind in types]


# ==================================================================================================
# Attention, MLP, decoder layer
# ==================================================================================================
class LlamaAttention(Module):
    """Multi-head attention with rotary positions and grouped-query heads.

    ``q_proj`` makes ``num_attention_heads`` query heads; ``k_proj``/``v_proj`` make only
    ``num_key_value_heads``; ``ops.scaled_dot_product_attention`` lets each group of query heads
    share one key/value head without copying it.
    """

    def __init__(self, config, layer_idx, dtype=None, device=None):
        super().__init__()
        self.config = config  # (read at each forward: its _attn_implementation picks the computation, as transformers')
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        heads, kv_heads, hidden = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
        # transformers' attributes: query heads per key/value head, and the scores' factor (a new one is used)
        self.num_key_value_groups, self.scaling = heads // kv_heads, self.head_dim ** -0.5
        bias = config._biases()  # Llama: config.attention_bias for all four
        # transformers' config.attention_dropout (0.0 in Llama's configs): dropout on the attention
        # weights in training mode
        self.attention_dropout = float(config.extra.get("attention_dropout", 0.0) or 0.0)
        self.q_proj = Linear(hidden, heads * self.head_dim, bias=bias["q_proj"], dtype=dtype, device=device)
        self.k_proj = Linear(hidden, kv_heads * self.head_dim, bias=bias["k_proj"], dtype=dtype, device=device)
        self.v_proj = Linear(hidden, kv_heads * self.head_dim, bias=bias["v_proj"], dtype=dtype, device=device)
        self.o_proj = Linear(heads * self.head_dim, hidden, bias=bias["o_proj"], dtype=dtype, device=device)
        # Llama's queries see every earlier key; Mistral's and Qwen2's only the last sliding_window
        # (LlamaModel builds the mask for each window its layers have)
        self.sliding_window = None

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, *,
                past_key_values=None, output_attentions=False, **kwargs):
        """transformers' call: ``(attn_output [B, T, hidden], attn_weights)``; the weights [B, heads, Tq, Tk]
        (softmax(q k^T / sqrt(D) + mask)) come from "eager" attention, as transformers', None from "sdpa".
        ``position_embeddings`` is the (cos, sin) pair of ``rotary_emb(hidden_states, position_ids)``;
        ``attention_mask`` the model's 4-D additive or boolean mask (None: causal, as "sdpa" reads it);
        ``cache`` (or ``past_key_values``) gets this layer's keys and values. The other keywords transformers
        passes through (``position_ids``, ``use_cache``, ...) change nothing here; ``output_attentions`` asks
        for the weights under "eager" attention, which computes them anyway."""
        cache, x = _one_cache(past_key_values, cache), hidden_states
        _check_passed_through(kwargs)
        cos, sin = _rotary_pair(position_embeddings)
        b, t, _ = x.shape
        # [B, T, heads * D] -> [B, heads, T, D]: one row of D numbers per head and position.
        q, k = self._normed_heads(self.q_proj(x).reshape(b, t, -1, self.head_dim),
                                  self.k_proj(x).reshape(b, t, -1, self.head_dim))
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).reshape(b, t, -1, self.head_dim).transpose(1, 2)
        q = ops.rotary_embedding(q, cos, sin)
        k = ops.rotary_embedding(k, cos, sin)
        if cache is not None:  # attend to the cached positions too
            k, v = cache.update(k, v, self.layer_idx)
        # Causal: query i (at position Tk - Tq + i) sees keys up to its own position. ``mask`` from the model
        # holds that (with padding) wherever transformers' model builds one ("eager": always; "sdpa": for a chunk
        # after a cache or padding). Without one, this layer reads None as transformers' kernels do: "sdpa" is
        # torch's is_causal for more than one query (top-left), "eager" adds no mask at all (every query sees
        # every key: a direct call to the layer is not causal there).
        mask, tq = attention_mask, q.shape[2]
        eager = getattr(self.config, "_attn_implementation", None) == "eager"
        dropout = self.attention_dropout if self.training else 0.0
        if eager and (output_attentions or self._eager_op_by_op(q)):
            out, weights = _eager_attention(q, k, v, mask, dropout, self.scaling)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), weights
        groups = q.shape[1] // max(k.shape[1], 1)
        if mask is not None and groups > 1 and tq > 1:
            # transformers' sdpa repeats the key/value heads where a mask is given (repeat_kv): their gradients
            # come back per query head, each rounded, and are summed, where GQA (torch's flash kernel, and
            # ops/attention32.py's) adds each query head's products onto the previous ones
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and tq > 1 and not eager,
                                               dropout_p=dropout, enable_gqa=True, scale=self._sdpa_scale())
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), None

    def _sdpa_scale(self):
        """``scaling`` for scaled_dot_product_attention: None while it is 1/sqrt(head_dim), the kernel's own."""
        return None if self.scaling == self.head_dim ** -0.5 else self.scaling

    def _eager_op_by_op(self, q):
        """Whether transformers' "eager" attention runs here op by op, as transformers' own (it does whenever
        ``output_attentions`` asks for its weights; else the fused node might): in bfloat16/float16 (a
        16-bit model, or autocast's products) its steps round where torch's flash kernel (sdpa) does not (q k^T
        rounded to 16 bits, then the scaling, the weights before the product with v): 28% of a layer's attention
        outputs differ; in float32/float64 where MKL is minilora's BLAS (``minilora.blas``), whose products are
        torch's, so the ops give transformers' bits (a Llama's logits, every bit). Else the fused node, faster:
        with OpenBLAS's products neither way gives torch's bits."""
        return q.dtype.itemsize == 2 or amp.active or blas.library() == "mkl"

    def _normed_heads(self, q, k):
        """Queries and keys [B, T, heads, D] before RoPE: Llama's as projected (Qwen3 normalizes each head)."""
        return q, k


# The keywords transformers' decoder layers pass on to their attention (TransformersKwargs) that change nothing in a
# Llama's; another (flash attention's packed-sequence lengths, a typo) is refused rather than silently ignored
_PASSED_THROUGH = ("position_ids", "use_cache", "cache_position", "output_hidden_states", "return_dict",
                   "num_items_in_batch")


def _check_passed_through(kwargs):
    unknown = sorted(set(kwargs) - set(_PASSED_THROUGH))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}: a Llama layer takes hidden_states, attention_mask, "
                        f"position_embeddings, cache (past_key_values), output_attentions and {list(_PASSED_THROUGH)}")


def _rotary_pair(position_embeddings):
    """transformers' ``position_embeddings``, (cos, sin) each [B, T, head_dim], as the [B, 1, T, head_dim] tables
    that rotate every head (its ``apply_rotary_pos_emb``'s ``unsqueeze(1)``)."""
    if not (isinstance(position_embeddings, (tuple, list)) and len(position_embeddings) == 2):
        raise TypeError("position_embeddings=(cos, sin) is required, as transformers' Llama layers take it: "
                        "cos, sin = model.model.rotary_emb(hidden_states, position_ids) "
                        f"(got {type(position_embeddings).__name__})")
    if any(len(table.shape) != 3 for table in position_embeddings):
        raise ValueError("position_embeddings: cos and sin of shape [batch, seq_len, head_dim] (rotary_emb's), got "
                         f"{[tuple(table.shape) for table in position_embeddings]}")
    return tuple(table[:, None] for table in position_embeddings)


def _eager_attention(q, k, v, bias, dropout, scaling):
    """transformers' ``eager_attention_forward``: the weights themselves, for ``output_attentions``
    (each key/value head repeated for its group of query heads; a 16-bit softmax in float32)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(2, 3)) * scaling
    if bias is not None:
        if bias.dtype == np.bool_:  # a user's boolean 4-D mask: True keeps the key
            bias = bias._array if isinstance(bias, Tensor) else bias
            bias = q.device.xp.where(bias, 0.0, -np.inf).astype(scores._array.dtype)
        scores = scores + bias
    weights = ops.softmax(scores, -1, dtype=dtypes.compute_dtype(scores.dtype)).to(q.dtype)
    if dropout:
        weights = ops.dropout(weights, dropout, training=True)
    return weights @ v, weights


class SiLUActivation(SiLU):
    """``silu(x)`` under transformers' name, so that ``print(model)`` lists ``(act_fn): SiLUActivation()``."""


class _Formula(Module):
    """One of transformers' activations written as a formula of minilora ops (its own forward's order)."""

    def __init__(self, name, formula):
        super().__init__()
        self.name, self.formula = name, formula

    def forward(self, x):
        return self.formula(x)

    def extra_repr(self):
        return self.name


def _new_gelu(x):  # transformers' NewGELUActivation (GPT-2's tanh approximation, written out)
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * ops.pow(x, 3.0))))


# transformers' ACT2FN names for config.hidden_act that minilora's layers compute (torch's modules, or the formula
# transformers writes); its other names are refused by name (_activation)
_ACTIVATIONS = {
    "silu": SiLUActivation, "swish": SiLUActivation, "gelu": lambda: _layers.GELU(),
    "gelu_pytorch_tanh": lambda: _layers.GELU(approximate="tanh"), "gelu_new": lambda: _Formula("gelu_new", _new_gelu),
    "quick_gelu": lambda: _Formula("quick_gelu", lambda x: x * ops.sigmoid(1.702 * x)),
    "relu2": lambda: _Formula("relu2", lambda x: ops.square(ops.relu(x))),
    "relu": lambda: _layers.ReLU(), "relu6": lambda: _layers.ReLU6(), "leaky_relu": lambda: _layers.LeakyReLU(),
    "tanh": lambda: _layers.Tanh(), "sigmoid": lambda: _layers.Sigmoid(), "mish": lambda: _layers.Mish(),
    "hardswish": lambda: _layers.Hardswish(), "linear": lambda: _layers.Identity()}
_TRANSFORMERS_ONLY_ACTIVATIONS = ("gelu_10", "gelu_accurate", "gelu_fast", "gelu_python", "gelu_python_tanh", "laplace",
                                  "prelu", "sqrtsoftplus", "xielu")


def _activation(name):
    """transformers' ``ACT2FN[config.hidden_act]``: a name it lacks is its KeyError, one minilora lacks is refused."""
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]()
    if name in _TRANSFORMERS_ONLY_ACTIVATIONS:
        raise NotImplementedError(f"hidden_act={name!r} is not implemented in minilora; its activations are "
                                  f"{sorted(_ACTIVATIONS)}")
    raise KeyError(name)


class LlamaMLP(Module):
    """SwiGLU feed-forward: ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

    ``silu(gate) * up`` is one op, ``ops.swiglu``: one graph node and one saved array fewer."""

    def __init__(self, config, dtype=None, device=None):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config._biases()  # Llama: mlp_bias
        self.hidden_size, self.intermediate_size = hidden, inner  # (transformers' attributes)
        self.gate_proj = Linear(hidden, inner, bias=bias["gate_proj"], dtype=dtype, device=device)
        self.up_proj = Linear(hidden, inner, bias=bias["up_proj"], dtype=dtype, device=device)
        self.down_proj = Linear(inner, hidden, bias=bias["down_proj"], dtype=dtype, device=device)
        self.act_fn = _activation(config.hidden_act)  # transformers' ACT2FN; silu: forward fuses it into ops.swiglu

    def forward(self, x):
        if not isinstance(self.act_fn, SiLUActivation):  # another config.hidden_act: act(gate) * up, as there
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        # EXERCISE 2.6: the SwiGLU feed-forward of the class docstring, from gate_proj, up_proj and down_proj
        # BEGIN SOLUTION
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))
        # END SOLUTION


class LlamaRMSNorm(RMSNorm):
    """``RMSNorm`` as transformers' Llama computes it in a 16-bit model: normalize in float32, round
    to the model's dtype, *then* multiply by the weight (``weight * x_normed.to(input_dtype)``).
    torch's ``F.rms_norm`` (``nn.RMSNorm``, the fused op) rounds once, after the weight, so now and
    then a bfloat16 result would differ in its last bit from the checkpoint's own model. In float32
    the two agree to rounding, and the fused op (one node, one saved array) is used -- in float64 too,
    where transformers' ``.to(torch.float32)`` *lowers* the precision: a float64 transformers Llama
    normalizes (and computes its RoPE tables) in float32, so its logits sit about 1e-7 from minilora's
    float64 ones. minilora keeps float64 exact (gradient checks need it); tests/test_llama.py patches
    transformers' RMSNorm and RoPE to float64 and then agrees to 1e-13."""

    def extra_repr(self):
        return f"{tuple(self.normalized_shape)}, eps={self.eps}"  # transformers' (no elementwise_affine)

    @property
    def variance_epsilon(self):
        """transformers' name for ``eps``."""
        return self.eps

    @variance_epsilon.setter
    def variance_epsilon(self, value):
        self.eps = value

    def forward(self, x):
        if x.dtype.itemsize != 2 or self.weight is None:
            return super().forward(x)
        # (.to: under a CUDA autocast region rms_norm runs in float32; transformers' rounds to x's dtype)
        return self.weight * ops.rms_norm(x, self.normalized_shape, None, self.eps).to(x.dtype)


class LlamaDecoderLayer(Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""
    # (a variant's own attention, and Llama's MLP and norm under its name: nn/llama_family.py)
    attention_class, mlp_class, norm_class = LlamaAttention, LlamaMLP, LlamaRMSNorm

    def __init__(self, config, layer_idx, dtype=None, device=None):
        super().__init__()
        self.self_attn = self.attention_class(config, layer_idx, dtype=dtype, device=device)
        self.mlp = self.mlp_class(config, dtype=dtype, device=device)
        self.hidden_size = config.hidden_size  # (transformers' attribute)
        eps = config.rms_norm_eps
        self.input_layernorm = self.norm_class(config.hidden_size, eps=eps, dtype=dtype, device=device)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, eps=eps, dtype=dtype, device=device)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        """transformers 5's call and result: the layer's output [B, T, hidden] (a tensor, not a tuple: the
        attention weights reach ``output_attentions`` through a hook on ``self_attn``). ``position_embeddings``
        is rotary_emb's (cos, sin); the other keywords are ``LlamaAttention.forward``'s, passed on as there."""
        attended, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                                     position_ids=position_ids, cache=cache, use_cache=use_cache,
                                     position_embeddings=position_embeddings, **kwargs)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


# ==================================================================================================
# The transformer stack
# ==================================================================================================
class LlamaModel(Module):
    """Token embeddings, ``num_hidden_layers`` decoder layers, a final RMSNorm: transformers' bare model (no head;
    ``AutoModel`` builds it), whose ``last_hidden_state`` feeds embeddings or a task of one's own."""
    decoder_layer_class, norm_class, rotary_class = LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding
    config_class = LlamaConfig
    causal_lm_class = None  # the causal LM around this body (set below it), whose loader reads the files

    def __init__(self, config, dtype=None, device=None):
        super().__init__()
        dtype = _to_dtype(dtype)
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id,
                                      dtype=dtype, device=device)
        self.layers = ModuleList(self.decoder_layer_class(config, i, dtype=dtype, device=device)
                                 for i in range(config.num_hidden_layers))
        self.norm = self.norm_class(config.hidden_size, eps=config.rms_norm_eps, dtype=dtype, device=device)
        self.rotary_emb = self.rotary_class(config)
        self.gradient_checkpointing = False  # LlamaForCausalLM.gradient_checkpointing_enable()
        # transformers' config._attn_implementation, set on the config as transformers sets it ("sdpa" unless
        # asked otherwise); each forward reads it (see _attention_bias: only fully masked rows differ)
        config._attn_implementation = _attention_kind(getattr(config, "_attn_implementation", None))
        _init_weights(self.modules(), config.initializer_range)  # transformers' post_init, at the end of __init__

    @_signature_as_transformers
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, *, cache=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, cache_position=None):
        """transformers' ``LlamaModel`` call (its argument order): a ``BaseModelOutputWithPast`` with
        ``last_hidden_state`` [B, T, hidden_size] (after the final norm) and ``past_key_values`` (the
        cache; ``use_cache`` None: config.use_cache, on, as transformers, except while recomputing
        under gradient checkpointing).

        ``inputs_embeds`` [B, T, hidden_size] replaces ``input_ids`` (exactly one of the two, as in
        transformers): vectors fed in place of the embedding lookup, e.g. learned soft prompts.
        ``output_hidden_states=True`` fills ``hidden_states``: the embeddings, then each layer's
        output, the last one after the final norm (layers + 1 tensors). ``output_attentions=True``
        fills ``attentions``, each layer's weights [B, heads, Tq, Tk] with "eager" attention; "sdpa"
        (the default) computes none, and the tuple is empty, as transformers'. These two left at None
        follow the config. ``cache_position`` is accepted and unused, as transformers 5's Llama."""
        config = self.config.extra
        # (the keywords transformers hands on to its layers as they were given: hooks see them there)
        given = {name: value for name, value in (("output_hidden_states", output_hidden_states),
                                                 ("output_attentions", output_attentions),
                                                 ("cache_position", cache_position)) if value is not None}
        output_hidden_states = bool(config.get("output_hidden_states", False)) if output_hidden_states is None \
            else output_hidden_states
        output_attentions = bool(config.get("output_attentions", False)) if output_attentions is None \
            else output_attentions
        past_key_values = _one_cache(past_key_values, cache)
        weight = self.embed_tokens.weight
        xp, dtype = weight.device.xp, weight.dtype
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        _refuse_meta_inputs(weight, input_ids, attention_mask, position_ids)
        if inputs_embeds is not None:
            shape = _embeds_shape(inputs_embeds, weight.shape[1])
        else:
            ids = _as_ids(input_ids, "input_ids")
            shape = ids.shape
        if 0 in shape:
            raise ValueError(f"input_ids has shape {shape}: an empty batch or a zero-length sequence "
                             "has nothing to compute (give at least one token per row)")
        recompute = self.gradient_checkpointing and self.training and is_grad_enabled() and past_key_values is None
        if use_cache is None:
            use_cache = bool(config.get("use_cache", True)) and not recompute
        elif use_cache and recompute:  # transformers' GradientCheckpointingLayer turns the cache off
            warnings.warn("Caching is incompatible with gradient checkpointing: setting `use_cache=False`")
            use_cache = False
        cache = past_key_values if past_key_values is not None else KVCache(self.config) if use_cache else None
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:  # positions continue after the cached ones
            position_ids = Tensor(np.arange(past, past + shape[1])[None, :], dtype=np.int64)
        x = self.embed_tokens(xp.asarray(ids)) if inputs_embeds is None else inputs_embeds
        position_embeddings = self.rotary_emb(x, position_ids=position_ids)  # (transformers' call: hooks see it)
        attention = _attention_at_forward(getattr(self.config, "_attn_implementation", None))
        # as transformers 5: the first config.num_hidden_layers layers run, each with the window the config gives
        # its kind now (_window_of); one mask per window among them (None: Llama's full causal attention)
        layers = self.layers[:self.config.num_hidden_layers]
        windows = [self._window_of(i) for i in range(len(layers))]
        masks = {window: _as_mask_tensor(_attention_bias(attention_mask, shape, past, dtype, xp, attention, window),
                                         weight.device)
                 for window in set(windows) or {None}}
        weights_wanted = output_attentions and attention == "eager"  # (sdpa computes no weights)
        # (transformers' eager attention is matmuls and a softmax: forward-mode AD goes through it, where 'sdpa',
        # torch's flash kernel, refuses a dual input; minilora computes both with scaled_dot_product_attention)
        with forward_ad.composed(FLASH_ATTENTION_CPU) if attention == "eager" else contextlib.nullcontext():
            x, states, attentions = self._layers(
                zip(layers, [masks[w] for w in windows]), x, output_hidden_states, weights_wanted, recompute,
                dict(position_embeddings=position_embeddings, position_ids=position_ids, cache=cache,
                     use_cache=bool(use_cache), **given))
        hidden = self.norm(x)
        out = BaseModelOutputWithPast(last_hidden_state=hidden, cache=cache,
                                      hidden_states=tuple(states) + (hidden,) if output_hidden_states else None,
                                      attentions=tuple(attentions) if output_attentions else None)
        return out if (return_dict if return_dict is not None else config.get("return_dict", True)) else out.to_tuple()

    # --- transformers' PreTrainedModel methods, as its bare model has them (the causal LM takes the generic ones) ----
    main_input_name = "input_ids"

    def num_parameters(self, only_trainable=False, exclude_embeddings=False):
        """transformers': the parameter count; ``exclude_embeddings`` leaves the Embedding tables out."""
        skipped = {id(m.weight) for m in self.modules() if isinstance(m, Embedding)} if exclude_embeddings else set()
        return sum(p.numel() for p in self.parameters()
                   if (p.requires_grad or not only_trainable) and id(p) not in skipped)

    def get_memory_footprint(self, return_buffers=True):
        """transformers': the bytes the parameters (and buffers) take."""
        tensors = list(self.parameters()) + (list(self.buffers()) if return_buffers else [])
        return sum(t.nbytes for t in tensors)

    def can_generate(self):
        return False  # (no head: transformers' bare model cannot generate)

    @property
    def base_model(self):
        """transformers' ``model.base_model``: the body under a task head (its ``model``), the bare model itself."""
        return self._modules.get("model", self)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def get_output_embeddings(self):
        return None  # (no head to tie)

    def enable_input_require_grads(self):
        """Make the embedding output require grad, so gradient checkpointing of the first layer has a
        graph to recompute into even when the embeddings are frozen (LoRA); as in transformers."""
        def require_grads(module, inputs, output):
            output.requires_grad_(True)
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(require_grads)

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """The embedding's vocabulary grown or shrunk, as ``LlamaForCausalLM.resize_token_embeddings`` (no head
        here). Returns the embedding."""
        n = _new_vocabulary_size(self.embed_tokens, new_num_tokens, pad_to_multiple_of)
        if n != self.embed_tokens.num_embeddings:
            _resize_embedding(self.embed_tokens, n, self.config.initializer_range, mean_resizing)
            self.config.vocab_size = n
        return self.embed_tokens

    def set_attn_implementation(self, attn_implementation):
        """transformers' switch between "eager" and "sdpa" attention (see ``_attention_bias``)."""
        self.config._attn_implementation = _attention_kind(attn_implementation)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        """(See ``LlamaForCausalLM.gradient_checkpointing_enable``.)"""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        self.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self):
        return self.gradient_checkpointing

    @property
    def dtype(self):
        return self.embed_tokens.weight.dtype

    @property
    def device(self):
        return self.embed_tokens.weight.device

    @classmethod
    def from_pretrained(cls, path, *args, output_loading_info=False, **kwargs):
        """transformers' ``LlamaModel.from_pretrained`` / ``AutoModel.from_pretrained``: the body of a causal-LM
        folder (its ``lm_head`` left out: transformers reports it UNEXPECTED) or a bare model's folder (saved by
        ``save_pretrained`` here: no ``model.`` in the names), with ``LlamaForCausalLM.from_pretrained``'s options.
        Nothing is drawn: the global random stream is left as it was, as transformers leaves it."""
        causal, info = _load_body(cls.causal_lm_class, path, *args, **kwargs)
        model = causal.model
        model.name_or_path = causal.name_or_path
        if not output_loading_info:
            return model
        unexpected = {key.removeprefix("model.") for key in info["unexpected_keys"]} | info.pop("head_in_file")
        return model, {**info, "unexpected_keys": unexpected}

    def save_pretrained(self, save_directory, is_main_process=True, state_dict=None, push_to_hub=False,
                        max_shard_size="50GB", variant=None, token=None, safe_serialization=True):
        """transformers' bare-model folder: config.json (``architectures`` names this class) and the weights
        under their names here (``embed_tokens.weight``, ``layers.0...``), no generation_config.json. The
        options are ``LlamaForCausalLM.save_pretrained``'s."""
        _save_model_folder(self, save_directory, is_main_process, state_dict, push_to_hub, max_shard_size, variant,
                           architecture=type(self).__name__)

    def _window_of(self, index):
        """The sliding window of layer ``index`` at this forward (None: it sees every earlier position, as all of
        Llama's layers do; Mistral's and Qwen's read their config here, as transformers builds their masks)."""
        return None

    def _layers(self, layers_and_masks, x, output_hidden_states, weights_wanted, recompute, keywords):
        """The decoder layers, each with its mask and the ``keywords`` transformers' LlamaModel passes every layer,
        on ``x``: (their output, each layer's input when asked for, each layer's attention weights when asked
        for; both kept only then: each a whole [B, T, hidden])."""
        states, attentions = [], []
        if weights_wanted:  # (transformers 5 records them the same way: a hook on each self_attn)
            keywords = dict(keywords, output_attentions=True)
        for layer, mask in layers_and_masks:
            if output_hidden_states:
                states.append(x)
            with _recording_weights(layer.self_attn, attentions) if weights_wanted else contextlib.nullcontext():
                x = checkpoint(layer, x, use_reentrant=False, **dict(keywords, attention_mask=mask, cache=None)) \
                    if recompute else layer(x, attention_mask=mask, **keywords)
        return x, states, attentions


def _as_mask_tensor(mask, device):
    """The model's mask (an array, or None) as the Tensor transformers hands its layers (hooks see a tensor)."""
    return None if mask is None or isinstance(mask, Tensor) else Tensor._make(mask, device, False, None)


@contextlib.contextmanager
def _recording_weights(attention, attentions):
    """``attention``'s weights (its output's second item) appended to ``attentions`` while inside."""
    handle = attention.register_forward_hook(lambda module, args, output: attentions.append(output[1]))
    try:
        yield
    finally:
        handle.remove()


def _one_cache(past_key_values, cache):
    """transformers 5 calls the cache ``cache=``; ``past_key_values=`` is its old name: one of them."""
    if cache is not None:
        if past_key_values is not None:
            raise ValueError("pass the cache once: cache= (transformers 5's name) or past_key_values=")
        past_key_values = cache
    if past_key_values is not None and not isinstance(past_key_values, KVCache):
        raise TypeError(f"past_key_values must be minilora's cache (minilora.models.DynamicCache, or what a call "
                        f"with use_cache=True returned), got {type(past_key_values).__module__}."
                        f"{type(past_key_values).__name__}")
    return past_key_values


def _embeds_shape(inputs_embeds, hidden_size):
    """[batch, seq_len] of an ``inputs_embeds`` Tensor, which must be [batch, seq_len, hidden_size]."""
    if not isinstance(inputs_embeds, Tensor):
        raise TypeError(f"inputs_embeds must be a Tensor, got {type(inputs_embeds).__name__}")
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != hidden_size:
        raise ValueError(f"inputs_embeds must have shape [batch, seq_len, {hidden_size}], got "
                         f"{tuple(inputs_embeds.shape)}")
    return tuple(inputs_embeds.shape[:2])


def _as_ids(ids, name):
    """Token ids (or a 0/1 mask) as a 2-D NumPy int64 array, from a list, array or Tensor."""
    ids = _host_numpy(ids)
    if name == "attention_mask" and ids.dtype.kind == "f":  # transformers reads a float mask as mask != 0
        ids = ids != 0
    _check_ids(ids.shape, ids.dtype, name)
    return ids.astype(np.int64, copy=False)


def _check_ids(shape, dtype, name):
    if len(shape) != 2 or (0 not in shape and dtype.kind not in "iub"):
        raise ValueError(f"{name} must be integers of shape [batch, seq_len], got shape {tuple(shape)} "
                         f"and dtype {dtype} (wrap one sequence as [ids])")


def _causal_allowed(tq, tk):
    """[Tq, Tk] booleans: True where query i (position Tk - Tq + i) may see key j."""
    return np.arange(tk)[None, :] <= (tk - tq + np.arange(tq))[:, None]


def _in_window(tq, tk, window):
    """[Tq, Tk] booleans: True where key j is among the last ``window`` positions up to query i's own."""
    return np.arange(tk)[None, :] > (tk - tq + np.arange(tq))[:, None] - window


def _attention_bias(attention_mask, shape, past, dtype, xp, implementation=None, sliding_window=None):
    """Padding and causality as one bias to add to the scores, [B, 1, T, past + T], built once per
    forward for all layers; ``None`` where nothing is padded and the layers read None as causal
    (``_layers_read_none_as_causal``: then they use ``is_causal``).
    With a ``sliding_window`` (Mistral, Qwen2) a query also sees only the last ``sliding_window``
    positions, its own included (transformers' ``sliding_window_overlay``), once the sequence is longer.

    A query that may see no key at all -- the padding before a left-padded row's first token --
    gets what transformers' attention gives it. Its default, "sdpa", hands torch's SDPA a boolean
    mask: such a row's attention output is 0 (-inf here; the softmax of an all -inf row is 0).
    "eager" adds the dtype's most negative *finite* number for padding and future keys alike, so
    such a row attends evenly to ALL keys of its sequence, later real tokens included. The last
    padding position's logits predict the first real token, so this reaches the loss.
    A 4-D mask (``[B, 1, T, past + T]``, boolean or additive) is the user's, used as it is."""
    if isinstance(attention_mask, Tensor) and attention_mask.is_meta:
        return _meta_attention_bias(attention_mask._array, shape, past, dtype, xp)
    attention_mask = None if attention_mask is None else _host_numpy(attention_mask)
    if attention_mask is not None and attention_mask.ndim == 4:
        return _user_4d_mask(attention_mask, shape, past, dtype, xp)
    padding = _padding_allowed(attention_mask, shape, past)
    windowed = sliding_window is not None and past + shape[1] > sliding_window  # a key has left some window
    if padding is None and not windowed and _layers_read_none_as_causal(implementation, shape[1], past):
        return None
    allowed = np.ones((1, 1, 1, past + shape[1]), bool) if padding is None else padding[:, None, None, :]
    if shape[1] > 1:  # one query per row needs no causal part: every key is in its past
        allowed = allowed & _causal_allowed(shape[1], past + shape[1])
    if windowed:
        allowed = allowed & _in_window(shape[1], past + shape[1], sliding_window)
    fill = np.finfo(dtype).min if _attention_kind(implementation) == "eager" else -np.inf
    return xp.asarray(np.where(allowed, np.array(0, dtype), np.array(fill, dtype)))  # made once, in dtype


def _layers_read_none_as_causal(implementation, queries, past):
    """Whether a layer given no mask attends causally here, so the model may pass None (as transformers' model,
    whose "sdpa" mask is None for a whole sequence or one new token: torch's is_causal is top-left, wrong for a
    chunk after a cache; "eager" reads None as no mask at all, so its model always builds one)."""
    return _attention_kind(implementation) != "eager" and (queries == 1 or past == 0)


_ATTENTION_KINDS = (None, "eager", "sdpa")  # None: transformers' default, "sdpa"


# transformers' other attn_implementation names (ALL_ATTENTION_FUNCTIONS): kernels minilora does not compute; any
# other name is transformers' ValueError (a Hub kernel, "org/repo", is refused as minilora never downloads code)
_OTHER_ATTENTION_KINDS = ("flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention",
                          "paged|eager", "paged|sdpa", "paged|flash_attention_2")


def _attention_kind(implementation):
    if implementation not in _ATTENTION_KINDS and implementation not in _OTHER_ATTENTION_KINDS and \
            "/" not in str(implementation):
        raise ValueError(f'Specified `attn_implementation="{implementation}"` is not supported. The only possible '
                         'arguments are `attn_implementation="eager"`, `"paged|eager"`, `"attn_implementation='
                         'flash_attention_2"`, `"attn_implementation=flash_attention_3"`, `"attn_implementation='
                         'flash_attention_4"`, `"attn_implementation=flex_attention"`, `"attn_implementation=sdpa"` '
                         "(minilora computes 'eager' and 'sdpa')")
    if implementation not in _ATTENTION_KINDS:
        raise NotImplementedError(f"attn_implementation={implementation!r}: minilora computes transformers' "
                                  "'eager' and 'sdpa' attention (pass one of those, or leave it unset)")
    return implementation or "sdpa"


def _attention_at_forward(implementation):
    """``config._attn_implementation`` as each forward reads it (transformers looks it up in its
    AttentionInterface then): a name set on the config after the model was made that no interface has is that
    lookup's KeyError, in its words (``set_attn_implementation`` refuses it earlier, with a ValueError)."""
    if implementation not in _ATTENTION_KINDS and implementation not in _OTHER_ATTENTION_KINDS and \
            "/" not in str(implementation):
        raise KeyError(f"`{implementation}` is not a valid attention implementation registered in the "
                       "`AttentionInterface`")
    return _attention_kind(implementation)


def _meta_attention_bias(mask, shape, past, dtype, xp):
    """A meta ``attention_mask`` has no values to read: its bias is a meta array of the shape a padded batch's
    would have (the mask checked as one with values is), and nothing of its size is made on the host."""
    if mask.ndim == 4:
        _check_4d_mask(mask.shape, mask.dtype, shape, past)
        return xp.zeros(mask.shape, dtype)
    _check_ids(mask.shape, np.dtype(bool) if mask.dtype.kind == "f" else mask.dtype, "attention_mask")
    _check_mask_shape(mask.shape, shape, past)
    return xp.zeros((shape[0], 1, shape[1], past + shape[1]), dtype)


def _check_mask_shape(mask_shape, shape, past):
    if tuple(mask_shape) != (shape[0], past + shape[1]):
        raise ValueError(f"attention_mask has shape {tuple(mask_shape)}, expected [batch, past + seq_len] = "
                         f"{(shape[0], past + shape[1])}")


def _padding_allowed(attention_mask, shape, past):
    """``attention_mask`` [B, past + T] of 1 (attend) / 0 (padding) as booleans; ``None`` when
    there is no mask or nothing is padded (which costs nothing)."""
    if attention_mask is None:
        return None
    mask = _as_ids(attention_mask, "attention_mask")
    _check_mask_shape(mask.shape, shape, past)
    return None if mask.all() else mask != 0


def _refuse_meta_inputs(weight, *inputs):
    """torch's error for a meta tensor among the inputs of a model that is not on the meta device (the ids are read
    on the host here, where torch's embedding would meet the meta tensor)."""
    if weight.is_meta:
        return
    for x in inputs:
        if isinstance(x, Tensor) and x.is_meta:
            raise RuntimeError(f"Tensor on device meta is not on the expected device {weight.device.type}!")


def _host_numpy(x):
    """A list, NumPy/CuPy array, minilora or torch tensor as a NumPy array (a meta tensor's zeros: read for
    their shape only, by a model on the meta device; LlamaModel.forward refuses them for another)."""
    if isinstance(x, Tensor):
        return x._array if x.is_meta else x.cpu().numpy()
    if hasattr(x, "__cuda_array_interface__"):
        return x.get()
    return np.asarray(x.detach() if hasattr(x, "detach") else x)  # (a torch tensor may require grad)


def _user_4d_mask(mask, shape, past, dtype, xp):
    """``mask``, a 4-D NumPy array, taken as transformers takes one: already prepared, boolean
    (True = attend) or float (added to the scores), causality included, combined with nothing."""
    _check_4d_mask(mask.shape, mask.dtype, shape, past)
    if mask.dtype == np.bool_:  # torch's SDPA reading a boolean mask (True = attend)
        mask = np.where(mask, np.array(0, dtype), np.array(-np.inf, dtype))
    return xp.asarray(mask.astype(dtype, copy=False))


def _check_4d_mask(mask_shape, mask_dtype, shape, past):
    expected = (shape[0], 1, shape[1], past + shape[1])
    if tuple(mask_shape[2:]) != expected[2:] or mask_shape[0] not in (1, shape[0]):
        raise ValueError(f"a 4-D attention_mask must have shape [batch, 1, seq_len, past + seq_len] = "
                         f"{expected}, got {tuple(mask_shape)}")
    if mask_dtype.kind in "iu":  # torch's SDPA refuses it too
        raise RuntimeError(f"a 4-D attention_mask is used as it is: boolean (True = attend) or float (added "
                           f"to the scores), got {mask_dtype} (pass a 0/1 padding mask as [batch, seq_len])")


# ==================================================================================================
# The causal language model
# ==================================================================================================
def _new_vocabulary_size(embedding, new_num_tokens, pad_to_multiple_of):
    """resize_token_embeddings' size: ``new_num_tokens`` (None: the table's own) rounded up to a multiple of
    ``pad_to_multiple_of``."""
    n = embedding.num_embeddings if new_num_tokens is None else new_num_tokens
    if pad_to_multiple_of:
        n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"new_num_tokens must be an integer >= 1, got {new_num_tokens!r}")
    return n


def _resize_embedding(old, n, std, mean_resizing):
    """The embedding ``old`` with ``n`` rows, new ones drawn as transformers draws them (``_resize_into``). As
    transformers: the module and its Parameter stay (their hooks -- enable_input_require_grads' -- and
    requires_grad with them), holding the new table."""
    fresh = Embedding(n, old.embedding_dim, padding_idx=old.padding_idx if (old.padding_idx or 0) < n else None,
                      dtype=old.weight.dtype, device=old.weight.device)
    _resize_into(fresh, old.weight._array, std, mean_resizing)
    old.weight.data = fresh.weight.data
    old.num_embeddings = n
    if old.padding_idx is not None and old.padding_idx >= n:
        old.padding_idx = None


def _init_weights(modules, std):
    """transformers' ``_init_weights`` of each module, in the order given (its post-order walk visits
    the leaves in ``modules()`` order): N(0, std) for every Linear and Embedding weight (the padding
    row then zeroed), zero biases; the norms already hold ones. Each layer drew torch's own init when
    it was built, as in transformers: the same seed gives transformers' weights."""
    for module in modules:
        if isinstance(module, (Linear, Embedding)):
            init.normal_(module.weight, 0.0, std or 0.02)  # (transformers: initializer_range or 0.02)
        if isinstance(module, Embedding) and module.padding_idx is not None:
            init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, Linear) and module.bias is not None:
            init.zeros_(module.bias)


def _resize_into(layer, rows, std, mean_resizing):
    """transformers' resize of one table: ``layer`` (the new Embedding or Linear, which drew its own
    init when built) keeps the old ``rows``; a grown table's new rows are drawn around the old rows'
    mean (``mean_resizing``, ``_rows_around_the_mean``) or N(0, std^2) over the whole new layer as
    transformers' ``_init_weights`` does, before the old rows are copied in."""
    new, old_n = layer.weight._array, rows.shape[0]
    if new.shape[0] > old_n and not mean_resizing:
        _init_weights([layer], std)
    if new.shape[0] > old_n and mean_resizing:
        added = _rows_around_the_mean(_host(rows).astype(np.float32), new.shape[0] - old_n)
        new[old_n:] = layer.weight.device.xp.asarray(added.astype(new.dtype))  # (16-bit: rounded once)
    keep = min(old_n, new.shape[0])
    new[:keep] = rows[:keep]


def _rows_around_the_mean(rows, added):
    """transformers' ``_init_added_embeddings_weights_with_mean``: ``added`` rows drawn from
    N(mean, 1e-9 * covariance) of the float32 ``rows``, as torch's MultivariateNormal samples
    (mean + L @ eps, L torch's Cholesky, eps ``randn(added, dim)`` from the global generator), so a
    seeded program gets transformers' numbers; where 1e-9 * covariance is not positive-definite
    (fewer rows than columns, say) transformers repeats the mean and draws nothing."""
    mean = _torch_column_sum(rows) / np.float32(rows.shape[0])
    centered = Tensor(rows - mean)
    scaled = 1e-9 * (centered.T @ centered / rows.shape[0])
    scale_tril, info = linalg.cholesky_ex(scaled)
    if info.item() != 0:
        return np.broadcast_to(mean, (added, rows.shape[1]))
    eps = randn(added, rows.shape[1], dtype=dtypes.float32, device="cpu")
    return mean + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1).numpy()


# torch's float32 sum over the rows of a [rows, columns] array, in its CPU kernel's order (SumKernel's
# cascade of partial sums, its vectors of 8 floats, its split of the columns among threads), so the
# mean matches torch's to the last bit: NumPy adds the rows one by one, a different rounding.
def _torch_column_sum(rows):
    columns = rows.shape[1]
    blocked, interleaved = _multi_row_sum(rows), _interleaved_row_sum(rows)
    total = interleaved.copy()  # columns past the last whole group of a thread's share
    for begin, end in _thread_shares(rows.shape[0], columns):
        width = end - begin
        group = 32 if width >= 8 else 4  # 4 vectors of 8 floats (a narrow share: 4 single columns)
        whole = width - width % group
        total[begin:begin + whole] = blocked[begin:begin + whole]
    return total


def _thread_shares(rows, columns):
    """The column ranges torch's threads sum (parallel_dim_reduction: below 32768 elements or on
    one thread, all columns at once; else an even split, rounded to 32 columns)."""
    threads = min(parallel.num_threads(), columns)
    if rows * columns < 32768 or threads == 1:
        return [(0, columns)]
    size, shares = -(-columns // threads), []
    for begin in range(0, columns, size):
        end = min(columns, begin + size)
        begin, end = begin - begin % 32, end if end == columns else end - end % 32
        if begin < end:
            shares.append((begin, end))
    return shares


def _multi_row_sum(x, levels=4):
    """torch's multi_row_sum: rows added one by one into level 0; every ``step`` rows level 0 goes
    into level 1 (and level 1 into level 2 at every step**2 rows, ...); at the end the levels are
    added up from level 0."""
    n = x.shape[0]
    power = max(4, (n - 1).bit_length() // levels if n > 1 else 0)
    step = 1 << power
    acc = np.zeros((levels,) + x.shape[1:], np.float32)
    i = 0
    while i + step <= n:
        for row in x[i:i + step]:
            acc[0] += row
        i += step
        for level in range(1, levels):
            acc[level] += acc[level - 1]
            acc[level - 1] = 0
            if i & ((step - 1) << (level * power)):
                break
    for row in x[i:]:
        acc[0] += row
    for level in range(1, levels):
        acc[0] += acc[level]
    return acc[0]


def _interleaved_row_sum(x):
    """torch's row_sum: four interleaved partial sums (rows 0, 4, 8, ... in the first) by
    ``_multi_row_sum``, the leftover rows added to the first, then the other three."""
    whole = x.shape[0] // 4 * 4
    partial = _multi_row_sum(x[:whole].reshape((whole // 4, 4) + x.shape[1:]))
    total = partial[0].copy()
    for row in x[whole:]:
        total += row
    for k in range(1, 4):
        total += partial[k]
    return total


_WHOLE_MODEL_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # one device: all of the model on it


def _device_from_map(device, device_map):
    """transformers' ``device_map`` as minilora's one device (None: the default device)."""
    if device_map is None:
        return device
    if device is not None:
        raise ValueError("pass device= or device_map=, not both")
    if isinstance(device_map, dict):
        devices = {str(d) for d in device_map.values()}
        if len(devices) != 1:
            raise NotImplementedError(f"device_map={device_map!r} splits the model over devices {sorted(devices)}; "
                                      "minilora keeps a model on one device (device_map='auto' or a device name)")
        device_map = devices.pop()
    if isinstance(device_map, str) and device_map in _WHOLE_MODEL_MAPS:
        return None
    if isinstance(device_map, (int, np.integer)) and not isinstance(device_map, bool):
        return "cuda"  # a GPU index: minilora has one cuda device
    return str(device_map).split(":")[0]  # "cuda:0", torch.device("cpu") -> the device's name


# transformers' from_pretrained options for the Hub: nothing to do for a local folder
_HUB_OPTIONS = ("cache_dir", "force_download", "token", "proxies", "weights_only", "disable_mmap", "tqdm_class",
                "mirror", "_fast_init", "from_tf", "from_flax", "offload_state_dict")  # (the last: unused in 5.x)
# transformers' loading options minilora does not implement -> transformers' default (the only value taken)
_UNSUPPORTED_LOADING = {"quantization_config": None, "gguf_file": None, "variant": None, "tp_plan": None,
                        "tp_size": None, "device_mesh": None, "state_dict": None, "key_mapping": None,
                        "adapter_kwargs": None, "adapter_name": None, "offload_folder": None,
                        "offload_buffers": False, "max_memory": None, "use_kernels": False, "fusion_config": None,
                        "load_in_8bit": False, "load_in_4bit": False}


def _config_to_load(model_class, path, config, overrides):
    """transformers' rule for from_pretrained(path, config=None, **kwargs): keywords naming a config
    attribute override config.json; any other keyword (every keyword, beside a config object) reaches
    the model's __init__, which refuses it. Loading options are taken out first."""
    overrides = {k: v for k, v in overrides.items() if k not in _HUB_OPTIONS}
    for key, default in _UNSUPPORTED_LOADING.items():
        if key in overrides and overrides.pop(key) != default:
            raise NotImplementedError(f"from_pretrained({key}=...) is not supported by minilora: it loads a "
                                      "local safetensors folder as it is, whole, onto one device")
    from_file, unused = model_class.config_class.from_pretrained(path, return_unused_kwargs=True, **overrides)
    if config is not None:  # a copy, as transformers': loading sets its dtype and attention, not the caller's
        from_file, unused = copy.deepcopy(config), overrides
    if unused:
        raise TypeError(f"{model_class.__name__}.__init__() got an unexpected keyword argument "
                        f"{next(iter(unused))!r}")
    return from_file


def _generation_config(folder, config):
    """The folder's generation_config.json, as it is (transformers fills no id in from config.json), else
    config.json's ids and generation options (transformers reads that file as a GenerationConfig; a folder
    without one, loaded with ``config=``: that config's ids). One that is there but no file (a folder, a broken
    link) is an error, not the absence of one: its settings would be dropped in silence."""
    file = os.path.join(os.fspath(folder), generation.GENERATION_CONFIG_NAME)
    if os.path.lexists(file) and not os.path.isfile(file):
        raise OSError(f"{file} is not a readable file (a folder, or a link to nothing)")
    if not os.path.lexists(file):  # (GenerationConfig.from_pretrained's OSError there: transformers falls back)
        config_file = os.path.join(os.fspath(folder), "config.json")
        if not os.path.isfile(config_file):
            return generation.GenerationConfig.from_model_config(config)
        with _naming_the_file(config_file):
            return generation.GenerationConfig.from_model_config(load_json(config_file))
    with _naming_the_file(file):
        return generation.GenerationConfig.from_pretrained(folder)


def _built_to_be_loaded(cls, config, dtype, every_weight_loaded):
    """The model ``from_pretrained`` fills from the file. Where every weight comes from the file, a skeleton on the
    meta device (transformers' init_empty_weights): no init drawn or written, ~3/4 of loading a small model's
    time; ``_given_storage`` then gives it empty CPU storage for the file's values. Where some weights keep their
    init (ignore_mismatched_sizes: the modules drawn anew), or a buffer outside the file has values the skeleton
    lost, the model is built as ever (drawn inside fork_rng, the global stream left as it was)."""
    if every_weight_loaded:
        with _device("meta"):
            model = cls(config, dtype=dtype)
        if all(isinstance(module, LlamaRotaryEmbedding) and name == "inv_freq"
               for module in model.modules() for name in module._non_persistent_buffers_set):
            return model
    return cls(config, dtype=dtype)


def _given_storage(model):
    """A meta skeleton (``_built_to_be_loaded``) on the CPU, its values empty until load_state_dict writes them
    (strict: every parameter and persistent buffer); the rotary tables' ``inv_freq`` is set again from their
    frequencies, which the file does not hold."""
    if not any(p.is_meta for p in model.parameters()):
        return
    model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, LlamaRotaryEmbedding):
            module._set_frequencies(module.frequencies, module._frequencies_seq_len)


def _without_layers_past(state, num_layers):
    """The checkpoint without the layers from ``num_layers`` on (from_pretrained(num_hidden_layers=n)
    loads the first n, as transformers does)."""
    def layer_of(key):
        parts = key.split(".")
        return int(parts[2]) if key.startswith("model.layers.") and parts[2].isdigit() else -1
    return {k: v for k, v in state.items() if layer_of(k) < num_layers}


def _is_bare_body(names):
    """Is this checkpoint a bare model's (``LlamaModel.save_pretrained``: ``embed_tokens.weight``, ``layers.0...``,
    no ``model.`` before them and no head)?"""
    return "embed_tokens.weight" in names and not any(name.startswith("model.") for name in names)


def _under_body_prefix(state):
    """A bare model's checkpoint under the names a model with a head gives its body (``model.``), as transformers'
    loader adds the prefix; any other checkpoint as it is."""
    return {f"model.{name}": value for name, value in state.items()} if _is_bare_body(state) else state


# Set while LlamaModel or a task-head model loads its body through the causal LM's loader (_load_body): a head the
# file lacks is then not drawn nor reported, as those models have no lm_head
_LOADING_A_BODY = contextvars.ContextVar("loading_a_body", default=False)


def _load_body(causal_lm_class, path, *args, **kwargs):
    """``(causal LM, loading info)`` read from ``path`` for its body: from a causal-LM folder or a bare model's.
    ``info["head_in_file"]``: {"lm_head.weight"} where the file has a head of its own (UNEXPECTED for a bare model,
    as transformers reports it)."""
    token = _LOADING_A_BODY.set(True)
    try:
        causal, info = causal_lm_class.from_pretrained(path, *args, output_loading_info=True, **kwargs)
    finally:
        _LOADING_A_BODY.reset(token)
    head_missing = "lm_head.weight" in info["missing_keys"] or causal.config.tie_word_embeddings
    return causal, {**info, "missing_keys": info["missing_keys"] - {"lm_head.weight"},
                    "head_in_file": set() if head_missing else {"lm_head.weight"}}


def _draw_missing_head(model, path, config):
    """A bare model's checkpoint read by a causal LM: transformers draws the head anew (N(0, initializer_range) from
    the global stream, in the model's dtype) and reports it MISSING; here in a warning. (A causal-LM checkpoint
    without its head is a broken file: refused, see _check_checkpoint_fits.)"""
    if _LOADING_A_BODY.get():  # (its head is thrown away: nothing drawn, nothing said)
        return model.lm_head.weight
    _init_weights([model.lm_head], config.initializer_range)
    warnings.warn(f"{type(model).__name__} LOAD REPORT from: {os.fspath(path)}: lm_head.weight is MISSING: the "
                  "checkpoint is a bare model's (LlamaModel, no head), so the head was newly initialized "
                  "(N(0, initializer_range)). Consider training on your downstream task.", stacklevel=4)
    return model.lm_head.weight


def _report_layers_left_out(cls, path, source, everything, kept, num_layers):
    """transformers' load report for the checkpoint's layers past ``num_hidden_layers`` (a config.json edited
    by hand, or one of a smaller model beside these weights, or the keyword): they are UNEXPECTED, left out of
    the model, and said -- a model with fewer layers than its weights is never built without a word."""
    left_out = sorted(set(everything) - set(kept))
    if left_out:
        warnings.warn(f"{cls.__name__} LOAD REPORT from: {os.fspath(path)}: {len(left_out)} weights of the "
                      f"checkpoint are UNEXPECTED ({left_out[0]!r}, ...): its layers from {num_layers} on, past "
                      f"num_hidden_layers={num_layers} ({source}), are left out. They can be ignored when "
                      "loading from different task/architecture; not ok if you expect identical arch.",
                      stacklevel=3)


def _check_loading_options(path, attn_implementation, use_safetensors):
    """(``revision`` names a Hub commit: transformers loads a local folder as it is whatever it says, so here.)"""
    _attention_kind(attn_implementation)
    _check_weights_format(os.fspath(path), use_safetensors)


def _check_weights_format(path, use_safetensors):
    """``use_safetensors``: True needs the safetensors file, False the torch.save one (pytorch_model.bin), each
    transformers' OSError when the folder lacks it; None takes safetensors first, as there."""
    if use_safetensors is None or not os.path.isdir(path):
        return
    single, index = _checkpoint_layout(path)
    safetensors = (single or index or "").endswith((".safetensors", ".safetensors.index.json"))
    if use_safetensors is True and not safetensors:
        raise OSError(f"Error no file named model.safetensors found in directory {path}.")
    if use_safetensors is False and safetensors and \
            not any(os.path.isfile(os.path.join(path, name)) for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)):
        raise OSError(f"Error no file named model.safetensors, or pytorch_model.bin, found in directory {path}.")


def _dtype_argument(path, dtype, torch_dtype, config, safetensors=True):
    """``from_pretrained``'s dtype: ``torch_dtype`` as an alias; a name, a dtype or a torch dtype;
    ``"auto"`` as transformers reads it: the config's ``dtype`` (config.json's, or that of the ``config=`` passed),
    else the dtype of the checkpoint's first floating-point tensor."""
    if torch_dtype is not None:
        if dtype not in ("auto", None) and _dtype_or_auto(dtype) != _dtype_or_auto(torch_dtype):
            raise ValueError(f"from_pretrained: dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; "
                             "pass one (torch_dtype is the older name of dtype)")
        dtype = torch_dtype
    if dtype is None:
        return dtypes.float32
    if _dtype_or_auto(dtype) != "auto":
        return _to_dtype(dtype)  # a name ("bfloat16", "torch.bfloat16"), a dtype, torch.bfloat16
    file = os.path.join(os.fspath(path), "config.json") if os.path.isdir(path) else path
    saved = config.extra.get("dtype") or _first_float_dtype(os.path.dirname(file), safetensors)
    if saved == "bfloat16" and not dtypes.HAS_BFLOAT16:
        import warnings
        warnings.warn("dtype='auto': the checkpoint is bfloat16, which NumPy cannot hold without ml_dtypes "
                      "(pip install 'minilora[bf16]'); loading float32")
        return dtypes.float32
    return _to_dtype(saved)  # (config.json's name was checked as the config read it)


def _dtype_or_auto(dtype):
    return "auto" if isinstance(dtype, str) and dtype == "auto" else _to_dtype(dtype)


_HEADER_FLOATS = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _first_float_dtype(folder, safetensors=True):
    """The dtype of the first floating-point tensor in the checkpoint's headers (float32 if none)."""
    for file in checkpoint_files(folder, safetensors):
        header = read_weights_header(file)
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"] in _HEADER_FLOATS:
                return _HEADER_FLOATS[info["dtype"]]
    return "float32"


@dataclass
class BaseModelOutputWithPast(_ModelOutput):
    """What ``LlamaModel.__call__`` returns (transformers' ``BaseModelOutputWithPast``)."""
    last_hidden_state: Tensor = None
    cache: KVCache = None
    hidden_states: tuple = None  # with output_hidden_states=True
    attentions: tuple = None  # with output_attentions=True


@dataclass
class CausalLMOutputWithPast(_ModelOutput):
    """What ``LlamaForCausalLM.__call__`` returns (transformers 5's ``CausalLMOutputWithPast``)."""
    loss: Tensor = None
    logits: Tensor = None
    cache: KVCache = None
    hidden_states: tuple = None  # with output_hidden_states=True
    attentions: tuple = None  # with output_attentions=True


CausalLMOutput = CausalLMOutputWithPast  # minilora's earlier name


def _last_positions(hidden, logits_to_keep):
    """``hidden`` [B, T, H] cut as transformers' ``slice_logits_to_keep``: an int keeps the last
    ``logits_to_keep`` positions (0: all); a 1-D tensor of positions keeps those in every row; a 2-D
    integer one [B, P] each row's own; a 2-D boolean one [B, T] the True positions, flattened to
    [count, H]."""
    if isinstance(logits_to_keep, bool) or logits_to_keep is None:
        raise TypeError(f"logits_to_keep must be an integer >= 0 (0: every position) or a tensor of positions, "
                        f"got {logits_to_keep!r}")
    if isinstance(logits_to_keep, (int, np.integer)):
        if logits_to_keep < 0:
            raise TypeError(f"logits_to_keep must be an integer >= 0 (0: every position), got {logits_to_keep!r}")
        return hidden if logits_to_keep == 0 else hidden[:, -int(logits_to_keep):, :]
    positions = _host_numpy(logits_to_keep)
    if positions.ndim == 2 and positions.dtype == np.bool_:
        return hidden[hidden.device.xp.asarray(positions)]
    if positions.dtype.kind not in "iu" or positions.ndim not in (0, 1, 2):
        raise TypeError(f"logits_to_keep must be an integer or a tensor of integer positions (or a 2-D boolean "
                        f"mask), got {positions.dtype} of shape {positions.shape}")
    xp = hidden.device.xp
    if positions.ndim == 2:  # each row its own positions (torch.take_along_dim)
        return hidden[xp.arange(hidden.shape[0])[:, None], xp.asarray(positions)]
    return hidden[:, xp.asarray(positions), :]


_TORCH_DTYPE_NAMES = {"int8": "Char", "int16": "Short", "int32": "Int", "uint16": "UInt16", "uint32": "UInt32",
                      "uint64": "UInt64", "bool": "Bool", "float16": "Half", "bfloat16": "BFloat16",
                      "float32": "Float", "float64": "Double"}


def _check_labels_dtype(labels):
    """Labels given as a Tensor or an array must be int64 (or uint8), as torch's cross_entropy requires:
    an int32 or float label tensor is refused with torch's words, not converted."""
    dtype = getattr(labels, "dtype", None)
    if dtype is None or isinstance(labels, (list, tuple)):
        return
    # a torch tensor (transformers' DataCollatorForSeq2Seq makes its labels with torch.tensor) names its dtype
    name = str(dtype).removeprefix("torch.") if dtypes.is_torch_tensor(labels) else str(np.dtype(dtype))
    if name not in ("int64", "uint8"):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {_TORCH_DTYPE_NAMES.get(name, name)}")


def causal_lm_loss(logits, labels, ignore_index=-100, reduction="mean", shift_labels=None):
    """Next-token cross-entropy: position t predicts ``labels[t + 1]`` (or ``shift_labels[t]``, targets already
    shifted, as transformers' ForCausalLMLoss takes them); ``-100`` labels are skipped.

    As transformers: labels are shifted left and padded with ``ignore_index`` (so the logits need no
    slicing copy), and 16-bit logits are upcast first (``logits.float()``): the loss of a bfloat16 or
    float16 model is computed, and returned, in float32; its gradient flows back in the logits' dtype.
    A float64 model's loss stays float64, where transformers' ``.float()`` rounds it to float32: minilora
    computes a float64 model in float64 throughout (transformers also keeps its norms, softmax and RoPE
    tables in float32 there), so that it can serve as the float64 truth the gradient checks need.
    """
    name = "labels" if shift_labels is None else "shift_labels"
    labels = labels if shift_labels is None else shift_labels
    _check_labels_dtype(labels)
    labels = _as_ids(labels, name)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"{name} have shape {labels.shape}, logits {logits.shape}: expected {name} "
                         "[batch, seq_len] matching the input_ids")
    if shift_labels is None:
        shifted = np.full_like(labels, ignore_index)
        shifted[:, :-1] = labels[:, 1:]
    else:
        shifted = labels
    targets = logits.device.xp.asarray(shifted.reshape(-1))
    logits = logits.to(dtypes.compute_dtype(logits.dtype))  # itself unless 16-bit
    return ops.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets,
                             ignore_index=ignore_index, reduction=reduction)


def _body_returns_an_output(config):
    """transformers 5's heads read ``outputs.last_hidden_state`` from the body, which follows ``config.return_dict``
    alone (the head's own ``return_dict=`` keyword is not passed on): with ``config.return_dict = False`` every
    forward and generate of a causal LM or classifier crashes there (AttributeError: 'tuple' object has no
    attribute 'last_hidden_state'). minilora refuses at the same point, naming the setting; the bare
    ``LlamaModel`` returns its tuple in both."""
    if not config.extra.get("return_dict", True):
        raise AttributeError("config.return_dict is False: transformers 5's task heads cannot run with it (their "
                             "body then returns a tuple, and they fail reading 'last_hidden_state'). Leave "
                             "config.return_dict True and pass return_dict=False to the call for a tuple")


def _vocab_size_is_the_heads(config, logits):
    """transformers' causal LM loss reshapes the logits to (-1, config.vocab_size), read when the loss runs: a
    ``config.vocab_size`` changed after the head was made fails there (RuntimeError: shape '[-1, V]' is invalid,
    or a batch-size ValueError where the sizes divide). minilora refuses it before the loss, naming the setting."""
    if config.vocab_size != logits.shape[-1]:
        raise RuntimeError(f"config.vocab_size is {config.vocab_size} but the model's head gives {logits.shape[-1]} "
                           "logits a token: transformers' loss reshapes the logits to (-1, config.vocab_size) and "
                           "fails. Change the vocabulary with model.resize_token_embeddings(n), which sets "
                           f"config.vocab_size, or set it back to {logits.shape[-1]}")


class LlamaForCausalLM(Module):
    """``LlamaModel`` plus ``lm_head``, a Linear from hidden states to vocabulary logits.

    With ``tie_word_embeddings`` the head *is* the embedding matrix (one Parameter under two names).
    """

    def __init__(self, config, dtype=None, device=None):
        super().__init__()
        dtype = _to_dtype(dtype)  # "bfloat16", torch.bfloat16, minilora.bfloat16 alike
        self.config = config
        self.model = self.base_model_class(config, dtype=dtype, device=device)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype, device=device)
        # the body initialised itself (as transformers' LlamaModel.post_init): only the head remains,
        # drawn after the body's init and the head's own Linear init, in transformers' order
        _init_weights([self.lm_head], config.initializer_range)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.generation_config = generation.GenerationConfig.from_model_config(config)  # (copied, as there)

    @property
    def dtype(self):
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self):
        return self.model.embed_tokens.weight.device

    @_signature_as_transformers
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, *, cache=None,
                num_items_in_batch=None, return_dict=None, output_hidden_states=None, output_attentions=None,
                cache_position=None, shift_labels=None, ignore_index=-100):
        """transformers' argument order: ``model(ids, mask)`` passes the attention mask.

        As transformers 5: ``cache=`` is the new name of ``past_key_values=``; ``logits_to_keep=k``
        computes the logits of the last k positions only (0: all; generation needs just the last; a
        tensor picks positions, see ``_last_positions``); ``output_hidden_states`` /
        ``output_attentions`` fill ``out.hidden_states`` / ``out.attentions`` (see ``LlamaModel.forward``);
        ``use_cache`` (None: config.use_cache, on in training too, off while gradient checkpointing
        recomputes) returns the cache in ``out.past_key_values``, which continues a hand-written decoding
        loop; ``num_items_in_batch`` (the Trainer's, under gradient accumulation) makes the loss the sum
        over the labelled tokens divided by it, not their mean; ``return_dict=False`` gives a tuple
        (loss, logits, cache, hidden_states, attentions: those that are set). ``return_dict`` and the
        outputs left at None follow the config, as transformers. ``shift_labels`` (already shifted, [batch, seq_len]:
        context-parallel training's) are the targets instead of ``labels`` shifted, and, as transformers' loss
        function, only when ``labels`` are given too; ``ignore_index`` (-100) is the label its loss skips, as the
        keyword transformers hands its loss function."""
        _body_returns_an_output(self.config)
        if return_dict is None:
            return_dict = bool(self.config.extra.get("return_dict", True))
        body = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=_one_cache(past_key_values, cache), use_cache=use_cache,
                          inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states,
                          output_attentions=output_attentions, return_dict=True)
        logits = self.lm_head(_last_positions(body.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            _vocab_size_is_the_heads(self.config, logits)
            loss = causal_lm_loss(logits, labels, ignore_index, "mean" if num_items_in_batch is None else "sum",
                                  shift_labels=shift_labels)
            loss = loss if num_items_in_batch is None else loss / num_items_in_batch
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=body.cache, hidden_states=body.hidden_states,
                                     attentions=body.attentions)
        return out if return_dict else out.to_tuple()

    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None,
                 negative_prompt_ids=None, negative_prompt_attention_mask=None, custom_generate=None, **kwargs):
        """Continue ``inputs`` (or ``input_ids=``); transformers' signature, so ``generate(ids, config)`` takes
        a GenerationConfig second, as there. See ``minilora.generate.generate``."""
        passed = dict(logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                      prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, synced_gpus=synced_gpus,
                      assistant_model=assistant_model, negative_prompt_ids=negative_prompt_ids,
                      negative_prompt_attention_mask=negative_prompt_attention_mask, custom_generate=custom_generate)
        return generation.generate(self, inputs=inputs, generation_config=generation_config, streamer=streamer,
                                   **{name: value for name, value in passed.items() if value is not None}, **kwargs)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits=False):
        """Each generated token's score from ``generate``'s output; see ``generation.compute_transition_scores``."""
        return generation.compute_transition_scores(self, sequences, scores, beam_indices, normalize_logits)

    def can_generate(self):
        return True

    def get_decoder(self):
        return self.model

    num_parameters, get_memory_footprint = LlamaModel.num_parameters, LlamaModel.get_memory_footprint
    base_model = LlamaModel.base_model
    enable_input_require_grads = LlamaModel.enable_input_require_grads
    set_attn_implementation = LlamaModel.set_attn_implementation
    main_input_name = "input_ids"  # transformers' class attributes
    base_model_prefix = "model"
    config_class = LlamaConfig
    base_model_class = LlamaModel  # (nn/llama_family.py: Mistral's, Qwen2's, Qwen3's)

    # --- embeddings (transformers' names) ---------------------------------------------------------
    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def tie_weights(self, missing_keys=None, recompute_mapping=True):
        """transformers': with ``tie_word_embeddings``, make the head share the embedding matrix again
        (after ``set_input_embeddings``, say); otherwise nothing."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Grow or shrink the vocabulary of the embedding and the head (new tokens after resizing a
        tokenizer). New rows are drawn as transformers draws them, with torch's numbers for the same seed:
        around the old rows' mean, N(mean, 1e-9 * covariance) (a new token's logit starts near the
        old tokens' average), or with ``mean_resizing=False`` as a fresh model's init,
        N(0, initializer_range^2). Returns the embedding."""
        old = self.get_input_embeddings()
        n = _new_vocabulary_size(old, new_num_tokens, pad_to_multiple_of)
        if n == old.num_embeddings:
            return old
        # transformers 5 resizes a head that does not share the embedding's table (drawing its Linear's init and its
        # new rows), whatever config.tie_word_embeddings says, then ties the two again if the config says so (read
        # now: set after the model was made too)
        tied = self.lm_head.weight is old.weight
        std = self.config.initializer_range
        _resize_embedding(old, n, std, mean_resizing)
        if tied:  # transformers draws no new head: the embedding's table is the head's
            self.lm_head.weight = old.weight
            self.lm_head.out_features = n
        else:
            head = Linear(self.config.hidden_size, n, bias=False, dtype=old.weight.dtype, device=old.weight.device)
            _resize_into(head, self.lm_head.weight._array, std, mean_resizing)
            head.weight.requires_grad_(self.lm_head.weight.requires_grad)
            self.lm_head = head
            if self.config.tie_word_embeddings:  # (a checkpoint that said so, with two different tables)
                self.lm_head.weight = old.weight
        self.config.vocab_size = n
        return old

    # --- gradient checkpointing (transformers' names) ---------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        """While training, keep only each decoder layer's input and recompute its activations in
        backward (``minilora.nn.checkpoint``): less memory, one more forward per step. Decoding with
        a KV cache is never recomputed, so generation needs no ``use_cache=False``."""
        self.model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        self.model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self):
        return self.model.gradient_checkpointing

    # --- checkpoints ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, dtype="auto", device=None, torch_dtype=None, *, config=None, device_map=None,
                        attn_implementation=None, low_cpu_mem_usage=None, local_files_only=None,
                        trust_remote_code=None, use_safetensors=None, revision=None, subfolder="",
                        output_loading_info=False, ignore_mismatched_sizes=False, **config_overrides):
        """Load a Hugging Face-format folder: config.json + model.safetensors (or its shards).

        transformers' loading options as tutorials pass them: ``device_map`` ("auto": the default
        device; a device name; a dict sending everything to one device -- splitting a model over
        devices is refused), ``attn_implementation`` "eager" or "sdpa" (transformers' default; they
        differ only for a query that may see no key, as the padding before a left-padded row's first token);
        ``low_cpu_mem_usage``, ``local_files_only`` and ``trust_remote_code`` change nothing (a local
        folder, read once, no code in it; ``revision`` too, as transformers takes a local folder as it is);
        ``use_safetensors`` True / False need model.safetensors / pytorch_model.bin (transformers' OSError);
        ``attn_implementation`` names transformers lacks are its ValueError.

        Weights are cast to ``dtype`` (a name, ``minilora.bfloat16`` or ``torch.bfloat16``);
        ``"auto"`` keeps the checkpoint's dtype (a bfloat16 checkpoint stays bfloat16; only
        without ml_dtypes, which gives NumPy its bfloat16, does it become float32, with a warning), and
        ``torch_dtype`` is transformers' older name for ``dtype``. The default is ``"auto"``, as in
        transformers 5: a bfloat16 checkpoint loads in bfloat16 unless ``dtype="float32"`` asks for the
        widened copy (transformers 4 defaulted to float32). A checkpoint that does not fit the config
        raises ``StateDictError`` listing missing keys, unexpected keys and shape mismatches.

        As in transformers, ``config=`` replaces config.json, and other keyword arguments that name a
        config field override it (``num_hidden_layers=1`` loads the first layer: the checkpoint's
        later layers are left out, as transformers leaves them, and reported as its LOAD REPORT does, in a
        warning; ``output_loading_info=True`` returns
        ``(model, info)`` with them as ``unexpected_keys``); the Hub's options (``cache_dir``, ``token``,
        ``force_download``, ``proxies``) change nothing for a local folder, ``subfolder`` is a folder
        inside it, ``ignore_mismatched_sizes=True`` draws the modules whose weights do not fit anew (N(0,
        initializer_range) from the global stream, as transformers, which reports them as ``mismatched_keys``),
        and options minilora does not implement (``quantization_config``, ``variant``, ...) are refused by name; any other keyword is transformers'
        TypeError from the model's ``__init__``.
        """
        path = os.path.join(os.fspath(path), subfolder) if subfolder else path
        with one_version_of(path):  # (config.json, the weights and generation_config.json of one save: another
            return cls._from_folder(path, dtype, device, torch_dtype, config, device_map,  # process's swap waits)
                                    attn_implementation, use_safetensors, output_loading_info,
                                    ignore_mismatched_sizes, config_overrides)

    @classmethod
    def _from_folder(cls, path, dtype, device, torch_dtype, config, device_map, attn_implementation, use_safetensors,
                     output_loading_info, ignore_mismatched_sizes, config_overrides):
        """``from_pretrained``'s load of the folder ``path``, its loading options checked."""
        config_file = os.path.join(os.fspath(path), "config.json") if config is None else "the config passed"
        config = _config_to_load(cls, path, config, config_overrides)  # first: a missing folder is named as such
        device = _device_from_map(device, device_map)
        _check_loading_options(path, attn_implementation, use_safetensors)
        safetensors = use_safetensors is not False  # (False: torch.save's files, where a folder holds both)
        dtype = _dtype_argument(path, dtype, torch_dtype, config, safetensors)
        config.dtype = dtype  # (transformers' config.dtype: what the model was loaded in)
        # from the file headers, before allocating anything
        mismatched = _check_checkpoint_fits(path, config, cls.__name__, ignore_mismatched_sizes, safetensors)
        everything = load_checkpoint(path, safetensors)
        headless = _is_bare_body(everything) and not config.tie_word_embeddings
        everything = _under_body_prefix(everything)
        state = _without_layers_past(everything, config.num_hidden_layers)
        _report_layers_left_out(cls, path, "the num_hidden_layers keyword" if "num_hidden_layers" in config_overrides
                                else config_file, everything, state, config.num_hidden_layers)
        state = {name: value for name, value in state.items() if name not in {key for key, _, _ in mismatched}}
        untied = _untied_in_the_file(config, state)
        if config.tie_word_embeddings and "model.embed_tokens.weight" in state and not untied:
            # transformers leaves the tied head out of the file (and ignores it when it holds the same values)
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        # (the weights are read, not drawn: the global stream stays as it was, as transformers'; a value the
        # config alone cannot refuse, a pad_token_id past the vocabulary, is refused by the layer: name the file)
        with fork_rng(), _naming_the_file(config_file):
            model = _built_to_be_loaded(cls, config, _to_dtype(dtype), every_weight_loaded=not mismatched)
            if untied:  # the head gets a matrix of its own, as transformers then leaves the two apart
                model.lm_head.weight = type(model.lm_head.weight)(model.lm_head.weight.detach().clone())
        _given_storage(model)
        if headless:
            state["lm_head.weight"] = _draw_missing_head(model, path, config)
        try:
            model.load_state_dict(state, strict=not mismatched)  # strict: lists missing, unexpected, mis-shaped keys
        except StateDictError as exc:
            exc.args = (f"{os.fspath(path)}: {exc.args[0]}",)
            raise
        owners = {name.rpartition(".")[0] for name, _, _ in mismatched}  # drawn anew, in the model's module order
        _init_weights([module for name, module in model.named_modules() if name in owners], config.initializer_range)
        model.name_or_path = os.fspath(path)  # as transformers: an adapter records it as its base model
        if attn_implementation is None and model.config.extra.get("output_attentions"):
            attn_implementation = "eager"  # transformers' choice: sdpa computes no weights to output
        if attn_implementation is not None:  # read by each forward, as transformers' config._attn_implementation
            model.config._attn_implementation = attn_implementation
        model.generation_config = _generation_config(path, model.config)
        model = model.to(device=device) if device is not None else model
        model.eval()  # as transformers: a loaded model infers (dropout off) until model.train() (a Trainer's own)
        if output_loading_info:  # transformers' report: the layers a smaller config left out, a bare model's head
            return model, {"missing_keys": {"lm_head.weight"} if headless else set(),
                           "unexpected_keys": set(everything) - set(state) - {k for k, _, _ in mismatched},
                           "mismatched_keys": set(mismatched), "error_msgs": []}
        return model

    def save_pretrained(self, save_directory, is_main_process=True, state_dict=None, push_to_hub=False,
                        max_shard_size="50GB", variant=None, token=None, safe_serialization=True):
        """Write config.json and model.safetensors, readable by transformers.

        transformers' arguments: ``is_main_process=False`` writes nothing (the other processes of a
        distributed run); ``state_dict`` is saved instead of the model's own; ``max_shard_size`` (an
        int, or "5GB", "500MB", ...) splits the weights into ``model-0000i-of-0000n.safetensors`` with
        a ``model.safetensors.index.json`` (a tensor bigger than that gets a shard of its own);
        ``safe_serialization`` is accepted (transformers 5 writes
        safetensors either way). ``push_to_hub`` and ``variant`` are refused (a local folder only).

        The folder is replaced as one unit (``atomic_folder``): a crash or a full disk mid-save
        leaves the previous model whole, never the new config beside the old weights. Other files
        in the folder (a tokenizer, a README) are kept; old weight files are not."""
        _save_model_folder(self, save_directory, is_main_process, state_dict, push_to_hub, max_shard_size, variant)


def _save_model_folder(model, save_directory, is_main_process, state_dict, push_to_hub, max_shard_size, variant,
                       architecture=None):
    """``save_pretrained`` of a causal LM or a bare LlamaModel: config.json (``architectures``: ``architecture``,
    else the config's causal LM) and the weights, plus a causal LM's generation_config.json."""
    if push_to_hub:
        raise NotImplementedError("save_pretrained(push_to_hub=True): minilora saves to a local folder only")
    if variant is not None:
        raise NotImplementedError(f"save_pretrained(variant={variant!r}): minilora writes model.safetensors only")
    max_bytes = _file_size(max_shard_size)  # (a bad size is an error before anything is written)
    if os.path.isfile(save_directory):  # (transformers logs this and saves nothing: here it is an error)
        raise ValueError(f"save_pretrained needs a directory, but {save_directory!r} is a file")
    make_save_folder(save_directory)
    if not is_main_process:
        return
    state = dict(model.state_dict() if state_dict is None else state_dict)
    if _one_table(state.get("lm_head.weight"), state.get("model.embed_tokens.weight")):
        state.pop("lm_head.weight")
    generation_config = getattr(model, "generation_config", None)  # (a bare model has none)
    with atomic_folder(save_directory, replaces=_MODEL_FILES) as tmp:
        model.config.save_pretrained(tmp, dtype=model.dtype, architecture=architecture)
        _save_weights(state, tmp, max_bytes)
        if generation_config is not None:  # (written for every causal LM, as transformers: an empty
            generation_config.save_pretrained(tmp)  # config too, its file then names its writer only)


def _one_table(head, embeddings):
    """Do the head and the embedding share their memory? transformers' save_pretrained drops the head's copy of a
    table only then (remove_tied_weights_from_state_dict compares the tensors' storage, not the config): a
    ``config.tie_word_embeddings`` changed after the model was made changes nothing in the file (minilora dropped an
    untied head for True, and saved a tied table twice for False)."""
    if not isinstance(head, Tensor) or not isinstance(embeddings, Tensor) or head.device != embeddings.device:
        return False
    return bool(head.device.xp.shares_memory(head._array, embeddings._array))


def _file_size(size):
    """The bytes in ``max_shard_size`` as transformers 5 reads it (huggingface_hub's parse_size_to_int):
    an int, or a number with TB, GB, MB or KB (powers of 1000, any case: "5GB", "0.5gb")."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    text = str(size).strip()
    units = {"TB": 10 ** 12, "GB": 10 ** 9, "MB": 10 ** 6, "KB": 10 ** 3}
    unit = text[-2:].upper()
    if unit not in units:
        raise ValueError(f"Unit '{unit}' not supported. Supported units are TB, GB, MB, KB. Got '{text}'.")
    try:
        return int(float(text[:-2].strip()) * units[unit])
    except ValueError as exc:
        raise ValueError(f"Could not parse the size value from '{text}': {exc}") from None


def _save_weights(state, folder, max_bytes):
    """model.safetensors, or shards of at most ``max_bytes`` each (a bigger tensor gets its own) and
    transformers' index, as its save_pretrained writes them."""
    shards, filling, size = [], {}, 0  # (huggingface_hub's split_state_dict_into_shards)
    for name, tensor in state.items():
        if tensor.nbytes > max_bytes:  # alone, in the order transformers gives it
            shards.append({name: tensor})
            continue
        if filling and size + tensor.nbytes > max_bytes:
            shards.append(filling)
            filling, size = {}, 0
        filling[name] = tensor
        size += tensor.nbytes
    shards = [shard for shard in shards + [filling] if shard]
    if len(shards) <= 1:
        save_file(state, os.path.join(folder, SAFE_WEIGHTS_NAME))
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(folder, file))
        weight_map.update(dict.fromkeys(shard, file))
    metadata = {"total_parameters": sum(t.numel() for t in state.values()),
                "total_size": sum(t.nbytes for t in state.values())}
    save_json({"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))},
              os.path.join(folder, "model.safetensors.index.json"))


# The files a model save replaces: an older save's weights may be sharded, and its shards must not
# survive beside the new model.safetensors.
_MODEL_FILES = ("config.json", "model*.safetensors", "model.safetensors.index.json", generation.GENERATION_CONFIG_NAME)


def parameter_shapes(config, num_layers=None):
    """``{name: shape}`` of ``LlamaForCausalLM(config).state_dict()``, from the config alone (nothing
    is allocated), so a loader can check a checkpoint's header against it first. ``num_layers``: only
    the first layers (a config claiming 2**70 layers is checked without listing them all)."""
    hidden, inner, head_dim = config.hidden_size, config.intermediate_size, config.head_dim
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    bias = config._biases()
    shapes = {"model.embed_tokens.weight": (config.vocab_size, hidden)}
    for i in range(config.num_hidden_layers if num_layers is None else num_layers):
        layer = f"model.layers.{i}."
        linears = {"self_attn.q_proj": (q_out, hidden), "self_attn.k_proj": (kv_out, hidden),
                   "self_attn.v_proj": (kv_out, hidden), "self_attn.o_proj": (hidden, q_out),
                   "mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden), "mlp.down_proj": (hidden, inner)}
        for name, (out_features, in_features) in linears.items():
            shapes[f"{layer}{name}.weight"] = (out_features, in_features)
            if bias[name.split(".")[1]]:
                shapes[f"{layer}{name}.bias"] = (out_features,)
        for norm in config._per_head_norms:
            shapes[f"{layer}self_attn.{norm}.weight"] = (head_dim,)
        shapes[f"{layer}input_layernorm.weight"] = (hidden,)
        shapes[f"{layer}post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (config.vocab_size, hidden)
    return shapes


def _refuse_integer_weights(path, safetensors=True):
    """Every weight of a Llama is floating point. An integer tensor in its place (a header whose dtype was
    corrupted from F32 to I32, a quantized checkpoint) would be cast to floats in silence -- transformers
    does so -- and the model would compute garbage."""
    for file in checkpoint_files(path, safetensors):
        header = read_weights_header(file)
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"] not in _HEADER_FLOATS:
                raise CheckpointError(f"{file}: tensor {name!r} is stored as {info['dtype']}, but a Llama's "
                                      "weights are floating point (a corrupted header, or a quantized checkpoint, "
                                      "which minilora does not read)")


def _untied_in_the_file(config, state):
    """transformers 5 ties the head to the embeddings only when the file's two matrices agree: a checkpoint saved
    untied keeps its own head even under ``tie_word_embeddings=True`` (a config override, say), with its warning."""
    head, embeddings = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    if not config.tie_word_embeddings or head is None or embeddings is None or np.array_equal(head, embeddings):
        return False
    warnings.warn("The tied weights mapping and config for this model specifies to tie model.embed_tokens.weight to "
                  "lm_head.weight, but both are present in the checkpoints with different values, so we will NOT tie "
                  "them. You should update the config with `tie_word_embeddings=False` to silence this warning.")
    return True


def _check_checkpoint_fits(path, config, model_name="LlamaForCausalLM", ignore_mismatched_sizes=False,
                           safetensors=True):
    """Compare the checkpoint's tensor names and shapes (read from the file headers only) with the
    model ``config`` describes, so a mismatch -- ``{}`` as config.json means Llama-7B -- is refused
    before gigabytes of weights are allocated. Raises ``StateDictError`` like ``load_state_dict``; with
    ``ignore_mismatched_sizes`` returns the mis-shaped keys instead, as transformers' ``mismatched_keys``."""
    _refuse_integer_weights(path, safetensors)
    found = read_checkpoint_shapes(path, safetensors)
    headless = _is_bare_body(found)
    found = _without_layers_past(_under_body_prefix(found), config.num_hidden_layers)
    # one layer past the checkpoint's last is enough to name what is missing (and never loops 2**70 times)
    layers_found = 1 + max((int(k.split(".")[2]) for k in found if k.startswith("model.layers.")
                            and k.split(".")[2].isdigit()), default=-1)
    expected = parameter_shapes(config, min(config.num_hidden_layers, layers_found + 1))
    if config.tie_word_embeddings and "model.embed_tokens.weight" in found:
        found.setdefault("lm_head.weight", found["model.embed_tokens.weight"])  # transformers leaves it out
    elif headless:  # a bare model's: the loader draws the head (_draw_missing_head)
        found.setdefault("lm_head.weight", expected["lm_head.weight"])
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [(k, found[k], expected[k]) for k in expected if k in found and found[k] != expected[k]]
    if ignore_mismatched_sizes and not missing and not unexpected:
        return {(k, _Size(ckpt), _Size(model)) for k, ckpt, model in mismatched}  # (name, file's shape, model's)
    if missing or unexpected or mismatched:
        error = StateDictError(missing, unexpected, mismatched, model_name)
        error.args = (f"{os.fspath(path)}: {error.args[0]} (compared from the file headers with its "
                      "config.json, before loading any weights)",)
        raise error
    return set()



LlamaModel.causal_lm_class = LlamaForCausalLM  # (the body is defined first: it is told its causal LM here)


# --- classification heads (transformers' LlamaForSequenceClassification / LlamaForTokenClassification) ---
@dataclass
class SequenceClassifierOutputWithPast(_ModelOutput):
    """What ``LlamaForSequenceClassification.__call__`` returns (transformers' class of that name)."""
    loss: Tensor = None
    logits: Tensor = None  # [B, num_labels]: each row's last non-padding position
    cache: KVCache = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass
class TokenClassifierOutput(_ModelOutput):
    """What ``LlamaForTokenClassification.__call__`` returns (transformers' class of that name)."""
    loss: Tensor = None
    logits: Tensor = None  # [B, T, num_labels]
    hidden_states: tuple = None
    attentions: tuple = None


def _num_labels(config):
    """transformers' ``config.num_labels``: given, else the size of ``id2label``, else 2."""
    if getattr(config, "num_labels", None) is not None:
        return int(config.num_labels)
    return len(config.id2label) if getattr(config, "id2label", None) else 2


class _LlamaWithHead(Module):
    """The body and the few transformers methods PEFT calls on a model with a task head ``score``."""
    main_input_name = "input_ids"
    base_model_prefix = "model"
    config_class = LlamaConfig
    causal_lm_class = LlamaForCausalLM  # its body, and the checkpoints from_pretrained reads (nn/llama_family.py)

    def __init__(self, config, head_bias, dtype=None, device=None):
        super().__init__()
        dtype = _to_dtype(dtype)
        self.config = config
        self.num_labels = _num_labels(config)
        self.model = self.causal_lm_class.base_model_class(config, dtype=dtype, device=device)
        self._modules_before_head(config)
        self.score = Linear(config.hidden_size, self.num_labels, bias=head_bias, dtype=dtype, device=device)
        _init_weights([self.score], config.initializer_range)  # after the body's, as transformers' post_init

    def _modules_before_head(self, config):
        """Layers registered between the body and ``score`` (transformers' order, as ``print(model)`` shows)."""

    dtype = LlamaForCausalLM.dtype
    device = LlamaForCausalLM.device
    get_input_embeddings = LlamaForCausalLM.get_input_embeddings
    set_input_embeddings = LlamaForCausalLM.set_input_embeddings
    enable_input_require_grads = LlamaForCausalLM.enable_input_require_grads
    gradient_checkpointing_enable = LlamaForCausalLM.gradient_checkpointing_enable
    gradient_checkpointing_disable = LlamaForCausalLM.gradient_checkpointing_disable
    is_gradient_checkpointing = LlamaForCausalLM.is_gradient_checkpointing
    set_attn_implementation = LlamaForCausalLM.set_attn_implementation
    num_parameters = LlamaForCausalLM.num_parameters
    base_model = LlamaForCausalLM.base_model

    def get_output_embeddings(self):
        return None  # a task head is no vocabulary projection (transformers: None, nothing to tie)

    @classmethod
    def from_pretrained(cls, path, *args, output_loading_info=False, **kwargs):
        """transformers' start of a classification fine-tune from a causal-LM folder or a bare model's
        (``num_labels=3`` and the other keywords as ``LlamaForCausalLM.from_pretrained``): the body is read, the
        checkpoint's ``lm_head`` left out (transformers reports it UNEXPECTED) and the head drawn new, N(0,
        initializer_range) from the global stream -- the one draw transformers makes for missing weights."""
        try:
            causal, info = _load_body(cls.causal_lm_class, path, *args, **kwargs)
        except StateDictError as exc:
            if "score." not in str(exc):
                raise
            raise NotImplementedError(f"{path}: this checkpoint holds a trained task head ('score'); minilora's "
                                      f"{cls.__name__}.from_pretrained reads causal-LM checkpoints only (a new "
                                      "head on their body)") from None
        with fork_rng():  # the body is read, not drawn: only the head's init below takes numbers
            model = cls(causal.config, dtype=causal.dtype, device=causal.device)
        model.model = causal.model
        _init_weights([model.score], causal.config.initializer_range)
        model.name_or_path = causal.name_or_path
        model.eval()  # as transformers: its dropout off until model.train()
        if not output_loading_info:
            return model
        head, head_in_file = {f"score.{name}" for name, _ in model.score.named_parameters()}, info.pop("head_in_file")
        return model, {**info, "missing_keys": head, "unexpected_keys": info["unexpected_keys"] | head_in_file}

    def save_pretrained(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__}.save_pretrained is not implemented in minilora: with LoRA, the PeftModel's "
            "save_pretrained keeps the adapter and the trained head (modules_to_save); else save "
            "model.state_dict() with minilora.save")

    def _body(self, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
              output_hidden_states, output_attentions):
        _body_returns_an_output(self.config)
        return self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                          output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                          return_dict=True)

    def _labels_for(self, labels, logits):
        return labels if isinstance(labels, Tensor) else Tensor(logits.device.xp.asarray(_host_numpy(labels)))


def _cross_entropy(logits, labels):
    """transformers' fixed_cross_entropy as its classification heads call it: the mean over labelled items
    (-100 skipped). They take ``num_items_in_batch`` in their keywords and do not pass it on (transformers
    5's GenericForSequenceClassification / GenericForTokenClassification), so under the Trainer's gradient
    accumulation each micro-batch's mean adds up unscaled: the heads here ignore it too."""
    return ops.cross_entropy(logits, labels, ignore_index=-100, reduction="mean")


class LlamaForSequenceClassification(_LlamaWithHead):
    """transformers' ``LlamaForSequenceClassification``: a bias-free ``score`` Linear reads the hidden
    state of each row's last token that is not ``config.pad_token_id`` (left or right padding alike);
    ``config.num_labels`` classes (default 2). The loss follows ``config.problem_type`` -- chosen at the
    first call as transformers chooses it: "regression" (MSE) for one label, "single_label_classification"
    (cross-entropy) for integer labels, else "multi_label_classification" (BCE with logits)."""

    def __init__(self, config, dtype=None, device=None):
        super().__init__(config, head_bias=False, dtype=dtype, device=device)

    @_signature_as_transformers
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, *, cache=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, num_items_in_batch=None, cache_position=None):
        body = self._body(input_ids, attention_mask, position_ids, _one_cache(past_key_values, cache), inputs_embeds,
                          use_cache, output_hidden_states, output_attentions)
        logits = self.score(body.last_hidden_state)
        batch = logits.shape[0]
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        if pad is None or input_ids is None:  # (transformers warns for inputs_embeds with a pad token)
            last = np.full(batch, logits.shape[1] - 1)
        else:  # the rightmost non-padding position (argmax: 0 for a row of padding only)
            ids = _host_numpy(input_ids)
            last = (np.arange(ids.shape[-1]) * (ids != pad)).argmax(-1)
        xp = logits.device.xp
        pooled = logits[xp.arange(batch), xp.asarray(last)]
        loss = None if labels is None else self._loss(pooled, self._labels_for(labels, pooled))
        out = SequenceClassifierOutputWithPast(loss=loss, logits=pooled, cache=body.cache,
                                               hidden_states=body.hidden_states, attentions=body.attentions)
        return out if (return_dict if return_dict is not None else self.config.extra.get("return_dict", True)) \
            else out.to_tuple()

    def _loss(self, pooled, labels):
        n = _num_labels(self.config)  # (transformers' loss reads config.num_labels when it runs, not the head's size)
        if getattr(self.config, "problem_type", None) is None:
            integer = str(labels.dtype) in ("int64", "int32")  # transformers: torch.long or torch.int
            self.config.problem_type = "regression" if n == 1 else \
                "single_label_classification" if integer else "multi_label_classification"
        kind = self.config.problem_type
        if kind == "regression":
            return mse_loss(pooled.squeeze(), labels.squeeze()) if n == 1 else mse_loss(pooled, labels)
        if kind == "single_label_classification":
            return _cross_entropy(pooled.reshape(-1, n), labels.reshape(-1))
        if kind == "multi_label_classification":
            return binary_cross_entropy_with_logits(pooled, labels)
        raise RuntimeError(f"Invalid problem type: {kind}")


class LlamaForTokenClassification(_LlamaWithHead):
    """transformers' ``LlamaForTokenClassification``: dropout (``config.classifier_dropout``, else
    ``hidden_dropout``, else 0.1) then a ``score`` Linear with a bias on every position; cross-entropy
    over the labelled positions (-100 skipped), in float32."""

    def __init__(self, config, dtype=None, device=None):
        super().__init__(config, head_bias=True, dtype=dtype, device=device)

    def _modules_before_head(self, config):
        rate = next((getattr(config, name) for name in ("classifier_dropout", "hidden_dropout")
                     if getattr(config, name, None) is not None), 0.1)
        self.dropout = Dropout(rate)

    @_signature_as_transformers
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, *, cache=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, num_items_in_batch=None, cache_position=None):
        body = self._body(input_ids, attention_mask, position_ids, _one_cache(past_key_values, cache), inputs_embeds,
                          use_cache, output_hidden_states, output_attentions)
        logits = self.score(self.dropout(body.last_hidden_state))
        loss = None
        if labels is not None:
            labels = self._labels_for(labels, logits)
            flat = logits.reshape(-1, _num_labels(self.config)).to(dtypes.compute_dtype(logits.dtype))
            loss = _cross_entropy(flat, labels.reshape(-1))
        out = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=body.hidden_states,
                                    attentions=body.attentions)
        return out if (return_dict if return_dict is not None else self.config.extra.get("return_dict", True)) \
            else out.to_tuple()
