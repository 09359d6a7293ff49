"""Llama's close relatives, as transformers 5 builds them: Mistral, Qwen2 and Qwen3.

Each is Llama (``nn/llama.py``, read that first) with a rule or two changed, so each class here is a
subclass that names its change; everything else -- RoPE, grouped-query attention, the SwiGLU MLP,
the RMSNorms, the KV cache, ``generate``, loading and saving -- is Llama's own code:

==========  =========================================================================================
mistral     every layer's queries see only the last ``sliding_window`` positions, their own included
            (None: all of them, as Llama)
qwen2       ``q_proj``, ``k_proj`` and ``v_proj`` have a bias, ``o_proj`` none; with
            ``use_sliding_window`` the layers from ``max_window_layers`` on (``layer_types``:
            "sliding_attention") attend within ``sliding_window``
qwen3       Llama's biases (``attention_bias``) and Qwen2's window rule; each head's queries and keys
            pass an RMSNorm over ``head_dim`` (``q_norm``, ``k_norm``) before RoPE; ``head_dim``
            defaults to 128, not ``hidden_size // num_attention_heads``
==========  =========================================================================================

The config classes, their config.json and the state-dict names are transformers'; each family has
transformers' causal LM and its sequence / token classification heads; PEFT's default ``target_modules``
for each is in ``lora/model.py``. ``AutoConfig`` and ``AutoModelForCausalLM`` (``...ForSequenceClassification``,
``...ForTokenClassification``) pick the class from config.json's ``model_type``, as transformers' do.

A sliding window is a mask (``llama._attention_bias``): the KV cache keeps every position, where
transformers' ``DynamicSlidingWindowLayer`` drops the keys that left the window. The numbers are the
same (a masked key's weight is an exact 0); the cache holds more.
"""
import os

from ..checkpoint import load_json
from ..checkpoint import naming_the_file as _naming_the_file
from .llama import (LlamaAttention, LlamaConfig, LlamaDecoderLayer, LlamaForCausalLM, LlamaForSequenceClassification,
                    LlamaForTokenClassification, LlamaMLP, LlamaModel, LlamaRMSNorm, LlamaRotaryEmbedding,
                    _config_dataclass, _field_error, _is_int)

__all__ = ["MistralConfig", "MistralForCausalLM", "MistralModel", "Qwen2Config", "Qwen2ForCausalLM", "Qwen2Model",
           "Qwen3Config", "Qwen3ForCausalLM", "Qwen3Model", "AutoConfig", "AutoModel", "AutoModelForCausalLM",
           "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
           "MistralForSequenceClassification", "MistralForTokenClassification", "Qwen2ForSequenceClassification",
           "Qwen2ForTokenClassification", "Qwen3ForSequenceClassification", "Qwen3ForTokenClassification"]


# ==================================================================================================
# What the variants' configs share
# ==================================================================================================
class _VariantConfig(LlamaConfig):
    """What the three configs share: Llama fields their transformers class does not have are left out
    of config.json unless set to something else (transformers keeps such a key as a plain attribute)."""
    _not_in_transformers = ()
    _written_defaults = {"attention_dropout": 0.0, "use_cache": True}  # (no pretraining_tp in these classes)

    def to_dict(self):
        d = super().to_dict()
        unset = {"attention_bias": False, "mlp_bias": False,
                 "head_dim": self.hidden_size // self.num_attention_heads}
        for name in self._not_in_transformers:
            if d[name] == unset[name]:
                del d[name]
        return d


def _renamed(prefix, *llama_classes):
    """Llama's classes under a variant's name (Qwen2MLP is LlamaMLP), so print(model) lists transformers' names."""
    return [type(cls.__name__.replace("Llama", prefix), (cls,), {"__module__": __name__, "__doc__": cls.__doc__})
            for cls in llama_classes]


_WINDOW_LAYER_TYPES = ("full_attention", "sliding_attention")


def _check_window_fields(config):
    """Refuse what transformers' strict config refuses in the sliding-window fields."""
    window = config.sliding_window
    if window is not None and not (_is_int(window) and window >= 1):
        raise _field_error("sliding_window", window, "an integer >= 1 (or null)")
    if not isinstance(getattr(config, "use_sliding_window", False), bool):  # (Qwen2's, Qwen3's)
        raise _field_error("use_sliding_window", config.use_sliding_window, "true or false")


# ==================================================================================================
# Mistral: a sliding window on every layer
# ==================================================================================================
@_config_dataclass
class MistralConfig(_VariantConfig):
    """transformers' MistralConfig: Llama's fields, Mistral 7B's defaults, and ``sliding_window``."""
    vocab_size: int = 32000
    intermediate_size: int = 14336
    num_key_value_heads: int = 8
    max_position_embeddings: int = 4096 * 32
    sliding_window: int = 4096  # None: every layer sees every earlier position

    model_type, _architecture = "mistral", "MistralForCausalLM"
    _not_in_transformers = ("attention_bias", "mlp_bias")

    def _biases(self):
        """transformers' Mistral has no bias anywhere (``attention_bias`` / ``mlp_bias`` are not read)."""
        return dict.fromkeys(super()._biases(), False)

    def __post_init__(self):
        _check_window_fields(self)
        super().__post_init__()


MistralMLP, MistralRMSNorm, MistralRotaryEmbedding = _renamed("Mistral", LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding)


class MistralAttention(LlamaAttention):
    """Llama's attention; every query sees the last ``config.sliding_window`` positions only."""

    def __init__(self, config, layer_idx, dtype=None, device=None):
        super().__init__(config, layer_idx, dtype=dtype, device=device)
        self.sliding_window = config.sliding_window


class MistralDecoderLayer(LlamaDecoderLayer):
    attention_class, mlp_class, norm_class = MistralAttention, MistralMLP, MistralRMSNorm


class MistralModel(LlamaModel):
    decoder_layer_class, norm_class, rotary_class = MistralDecoderLayer, MistralRMSNorm, MistralRotaryEmbedding

    def _window_of(self, index):
        """transformers' MistralModel picks the sliding-window mask by ``config.sliding_window`` at each forward
        (None: the full causal mask), so a window set after the model was made is used (the attention's own
        ``sliding_window``, copied when it was made, goes to flash kernels only)."""
        return self.config.sliding_window


class MistralForCausalLM(LlamaForCausalLM):
    config_class, base_model_class = MistralConfig, MistralModel


MistralModel.config_class, MistralModel.causal_lm_class = MistralConfig, MistralForCausalLM


class MistralForSequenceClassification(LlamaForSequenceClassification):
    config_class, causal_lm_class = MistralConfig, MistralForCausalLM


class MistralForTokenClassification(LlamaForTokenClassification):
    config_class, causal_lm_class = MistralConfig, MistralForCausalLM


# ==================================================================================================
# Qwen2: q/k/v biases, a sliding window on the later layers
# ==================================================================================================
@_config_dataclass
class Qwen2Config(_VariantConfig):
    """transformers' Qwen2Config: Llama's fields, Qwen2-7B's defaults, and the sliding window settings:
    ``sliding_window`` is kept only with ``use_sliding_window`` (else None), and ``layer_types`` (one
    entry a layer) defaults to "sliding_attention" from layer ``max_window_layers`` on where there is
    a window, "full_attention" elsewhere."""
    vocab_size: int = 151936
    intermediate_size: int = 22016
    max_position_embeddings: int = 32768
    bos_token_id: int = None
    eos_token_id: int = None
    use_sliding_window: bool = False
    sliding_window: int = 4096
    max_window_layers: int = 28
    layer_types: list = None

    model_type, _architecture = "qwen2", "Qwen2ForCausalLM"
    _not_in_transformers = ("attention_bias", "mlp_bias", "head_dim")

    def _biases(self):
        """Qwen2's rule: q_proj, k_proj, v_proj with a bias, o_proj and the MLP without."""
        return {**dict.fromkeys(super()._biases(), False), "q_proj": True, "k_proj": True, "v_proj": True}

    def __post_init__(self):
        _check_window_fields(self)
        if not _is_int(self.max_window_layers):
            raise _field_error("max_window_layers", self.max_window_layers, "an integer")
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None and _is_int(self.num_hidden_layers):
            self.layer_types = ["sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                                else "full_attention" for i in range(self.num_hidden_layers)]
        super().__post_init__()
        self._check_layer_types()

    def _with(self, overrides):
        """``from_pretrained(folder, num_hidden_layers=n)`` loads the first n layers, each with its own attention
        type, as transformers' (which keeps the longer list in the config it then saves, a config.json it refuses
        to read back: here the list is cut to the n layers)."""
        layers = overrides.get("num_hidden_layers")
        if _is_int(layers) and "layer_types" not in overrides and isinstance(self.layer_types, list):
            overrides = {**overrides, "layer_types": self.layer_types[:layers]}
        return super()._with(overrides)

    def _check_layer_types(self):
        """transformers' validate_layer_type (minilora computes the two attention kinds these models have)."""
        if not isinstance(self.layer_types, list) or not all(t in _WINDOW_LAYER_TYPES for t in self.layer_types):
            raise ValueError(f"The `layer_types` entries must be in {list(_WINDOW_LAYER_TYPES)} but got "
                             f"{self.layer_types}")
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"`num_hidden_layers` ({self.num_hidden_layers}) must be equal to the number of "
                             f"`layer_types` ({len(self.layer_types)})")


Qwen2MLP, Qwen2RMSNorm, Qwen2RotaryEmbedding = _renamed("Qwen2", LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding)


class Qwen2Attention(LlamaAttention):
    """Llama's attention (with Qwen2's q/k/v biases: ``Qwen2Config._biases``); a layer that
    ``config.layer_types`` marks "sliding_attention" sees the last ``sliding_window`` positions only."""

    def __init__(self, config, layer_idx, dtype=None, device=None):
        super().__init__(config, layer_idx, dtype=dtype, device=device)
        if config.layer_types[layer_idx] == "sliding_attention":
            self.sliding_window = config.sliding_window


class Qwen2DecoderLayer(LlamaDecoderLayer):
    attention_class, mlp_class, norm_class = Qwen2Attention, Qwen2MLP, Qwen2RMSNorm


class _LayerTypeWindows:
    """How transformers' Qwen2Model and Qwen3Model mask at each forward: layer i takes the mask of
    ``config.layer_types[i]`` read then, the sliding one built with ``config.sliding_window`` read then; only a
    model made with sliding layers (``has_sliding_layers``, copied when it was made) builds that mask at all, so a
    layer turned to "sliding_attention" later is transformers' KeyError, and a model with sliding layers whose
    ``sliding_window`` is set to None its ValueError."""

    def __init__(self, config, dtype=None, device=None):
        super().__init__(config, dtype=dtype, device=device)
        self.has_sliding_layers = "sliding_attention" in config.layer_types

    def _window_of(self, index):
        if self.has_sliding_layers and self.config.sliding_window is None:
            raise ValueError("Could not find a `sliding_window` argument in the config, or it is not set")
        kind = self.config.layer_types[index]
        if kind == "full_attention":
            return None
        if kind != "sliding_attention" or not self.has_sliding_layers:
            raise KeyError(kind)  # (no mask of that kind was built)
        return self.config.sliding_window


class Qwen2Model(_LayerTypeWindows, LlamaModel):
    decoder_layer_class, norm_class, rotary_class = Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding


class Qwen2ForCausalLM(LlamaForCausalLM):
    config_class, base_model_class = Qwen2Config, Qwen2Model


Qwen2Model.config_class, Qwen2Model.causal_lm_class = Qwen2Config, Qwen2ForCausalLM


class Qwen2ForSequenceClassification(LlamaForSequenceClassification):
    config_class, causal_lm_class = Qwen2Config, Qwen2ForCausalLM


class Qwen2ForTokenClassification(LlamaForTokenClassification):
    config_class, causal_lm_class = Qwen2Config, Qwen2ForCausalLM


# ==================================================================================================
# Qwen3: Qwen2 with each head's queries and keys normalized
# ==================================================================================================
@_config_dataclass
class Qwen3Config(Qwen2Config):
    """transformers' Qwen3Config: Qwen2's, with Llama's ``attention_bias`` (default False), ``head_dim``
    128 unless given, and a per-head RMSNorm on queries and keys."""
    head_dim: int = 128

    model_type, _architecture = "qwen3", "Qwen3ForCausalLM"
    _not_in_transformers = ("mlp_bias",)
    _per_head_norms = ("q_norm", "k_norm")

    def _biases(self):
        """Qwen3's rule: the attention's four Linears follow ``attention_bias``, the MLP has none."""
        return {**LlamaConfig._biases(self), "gate_proj": False, "up_proj": False, "down_proj": False}


Qwen3MLP, Qwen3RMSNorm, Qwen3RotaryEmbedding = _renamed("Qwen3", LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding)


class Qwen3Attention(Qwen2Attention):
    """Qwen2's attention, with an RMSNorm over each head's ``head_dim`` features of the queries
    (``q_norm``) and keys (``k_norm``), applied before RoPE: every head's scores stay in scale."""

    def __init__(self, config, layer_idx, dtype=None, device=None):
        super().__init__(config, layer_idx, dtype=dtype, device=device)
        self.q_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps, dtype=dtype, device=device)
        self.k_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps, dtype=dtype, device=device)

    def _normed_heads(self, q, k):
        return self.q_norm(q), self.k_norm(k)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_class, mlp_class, norm_class = Qwen3Attention, Qwen3MLP, Qwen3RMSNorm


class Qwen3Model(_LayerTypeWindows, LlamaModel):
    decoder_layer_class, norm_class, rotary_class = Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding


class Qwen3ForCausalLM(LlamaForCausalLM):
    config_class, base_model_class = Qwen3Config, Qwen3Model


Qwen3Model.config_class, Qwen3Model.causal_lm_class = Qwen3Config, Qwen3ForCausalLM


class Qwen3ForSequenceClassification(LlamaForSequenceClassification):
    config_class, causal_lm_class = Qwen3Config, Qwen3ForCausalLM


class Qwen3ForTokenClassification(LlamaForTokenClassification):
    config_class, causal_lm_class = Qwen3Config, Qwen3ForCausalLM


# ==================================================================================================
# Auto classes: the class from config.json's model_type
# ==================================================================================================
def _by_model_type(*classes):
    return {model.config_class.model_type: model for model in classes}


CAUSAL_LM_CLASSES = _by_model_type(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)
BASE_MODEL_CLASSES = _by_model_type(LlamaModel, MistralModel, Qwen2Model, Qwen3Model)
SEQUENCE_CLASSIFICATION_CLASSES = _by_model_type(
    LlamaForSequenceClassification, MistralForSequenceClassification, Qwen2ForSequenceClassification,
    Qwen3ForSequenceClassification)
TOKEN_CLASSIFICATION_CLASSES = _by_model_type(
    LlamaForTokenClassification, MistralForTokenClassification, Qwen2ForTokenClassification,
    Qwen3ForTokenClassification)


def _class_for(classes, model_type):
    if model_type not in classes:
        raise ValueError(f"config has model_type {model_type!r}, which minilora does not implement: it builds "
                         f"the Llama family, {', '.join(repr(t) for t in classes)}")
    return classes[model_type]


def _folder_model_type(path, subfolder=""):
    """config.json's ``model_type`` (Llama's where it names none, as LlamaConfig reads it); None where
    there is no config.json, so that the Llama class's loader says what is missing."""
    path = os.path.join(os.fspath(path), subfolder) if subfolder else os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file) or not file.endswith(".json"):
        return None
    with _naming_the_file(file):
        config = load_json(file)
    return config.get("model_type", "llama") if isinstance(config, dict) else None


class AutoConfig:
    """transformers' AutoConfig: ``from_pretrained(folder)`` reads config.json as its model_type's class."""

    def __init__(self, *args, **kwargs):
        raise OSError("AutoConfig is designed to be instantiated using the "
                      "`AutoConfig.from_pretrained(pretrained_model_name_or_path)` method.")

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        model_type = _folder_model_type(path) or "llama"
        return _class_for(CAUSAL_LM_CLASSES, model_type).config_class.from_pretrained(path, **kwargs)

    @classmethod
    def for_model(cls, model_type, **kwargs):
        return _class_for(CAUSAL_LM_CLASSES, model_type).config_class(**kwargs)


class _AutoModel:
    """transformers' AutoModelFor*: the task's class for the config's ``model_type``."""
    _classes = {}  # model_type -> class

    def __init__(self, *args, **kwargs):
        name = type(self).__name__
        raise OSError(f"{name} is designed to be instantiated using the `{name}.from_pretrained("
                      f"pretrained_model_name_or_path)` or `{name}.from_config(config)` methods.")

    @classmethod
    def from_pretrained(cls, path, *args, config=None, subfolder="", **kwargs):
        """The class's ``from_pretrained`` arguments; the class from ``config`` if given, else from the folder's
        config.json."""
        model_type = config.model_type if config is not None else _folder_model_type(path, subfolder) or "llama"
        return _class_for(cls._classes, model_type).from_pretrained(path, *args, config=config, subfolder=subfolder,
                                                                    **kwargs)

    @classmethod
    def from_config(cls, config, dtype=None, device=None, torch_dtype=None):
        """A new model of ``config``'s shape, its weights drawn as transformers draws them, in ``dtype`` (else
        ``config.dtype``, as transformers: a config read from a bfloat16 checkpoint builds a bfloat16 model)."""
        model_class = next((m for m in cls._classes.values() if type(config) is m.config_class), None)
        if model_class is None:
            raise ValueError(f"Unrecognized configuration class {type(config)} for this kind of AutoModel: "
                             f"{cls.__name__}. Model type should be one of "
                             f"{', '.join(m.config_class.__name__ for m in cls._classes.values())}.")
        dtype = next((d for d in (dtype, torch_dtype, config.dtype) if d is not None), None)
        return model_class(config, dtype=dtype, device=device)


class AutoModel(_AutoModel):
    """The bare model (no head): ``last_hidden_state``, e.g. to pool into sentence embeddings."""
    _classes = BASE_MODEL_CLASSES


class AutoModelForCausalLM(_AutoModel):
    _classes = CAUSAL_LM_CLASSES


class AutoModelForSequenceClassification(_AutoModel):
    _classes = SEQUENCE_CLASSIFICATION_CLASSES


class AutoModelForTokenClassification(_AutoModel):
    _classes = TOKEN_CLASSIFICATION_CLASSES
