"""``LoraConfig`` and ``VeraConfig``: what to adapt and how, with PEFT's field names and file format.

A config is checked when it is built (a wrong rank or dropout fails here, not deep inside training),
and ``to_dict()`` gives exactly the keys PEFT writes to ``adapter_config.json``, so adapters move
between minilora and PEFT. The fields are PEFT 0.22's, in PEFT's order. Fields PEFT has but minilora
does not implement (Megatron, QALoRA, LoftQ, ...) are accepted at PEFT's default value and
written with it; any other value is refused by name, by the constructor and ``from_dict`` alike,
rather than silently computing something else.
"""
import enum
import json
import math
import numbers
import os
import re
import warnings
from dataclasses import asdict, dataclass, field, fields, is_dataclass

__all__ = ["LoraConfig", "LoraRuntimeConfig", "EvaConfig", "CordaConfig", "LoraGAConfig", "LoftQConfig",
           "VeraConfig",
           "TrainableTokensConfig", "config_from_dict",
           "get_peft_config", "TaskType", "PeftType", "TASK_TYPES", "CONFIG_NAME"]

CONFIG_NAME = "adapter_config.json"
# adapter_config.json's keys are sorted but for the dicts under these, whose order survives a save and load (as
# PEFT 0.22): the first rank_pattern / alpha_pattern key that matches a module wins
CONFIG_KEYS_WITH_PRESERVED_ORDER = frozenset({"rank_pattern", "alpha_pattern"})

# The PEFT release whose behaviour and files minilora mirrors (setup.py's [interop] pin)
MIRRORED_PEFT_VERSION = "0.22.0"


def minilora_peft_version():
    """The ``peft_version`` minilora writes: the PEFT release it mirrors, with minilora's own version as a PEP 440
    local label ("0.22.0+minilora.0.1.0"). PEFT 0.22 parses the field (an MHA adapter saved before 0.22 gets its
    out_proj update doubled), and the older "minilora-0.1.0" made its loader raise InvalidVersion."""
    from .. import __version__
    return f"{MIRRORED_PEFT_VERSION}+minilora.{__version__}"


def written_by_minilora(config):
    """Whether a config's file was written by minilora (either form of its ``peft_version``)."""
    return "minilora" in str(config.peft_version)


class TaskType(str, enum.Enum):
    """PEFT's task types. A ``str`` enum, so ``TaskType.CAUSAL_LM == "CAUSAL_LM"`` and either may be passed."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


# PEFT 0.22's adapter methods, in its order. minilora implements LORA, ADALORA, VERA and TRAINABLE_TOKENS
# (PEFT_TYPE_TO_CONFIG); the others are named so that code written against PEFT's enum runs, and a
# config of theirs is refused by name where it is read (config_from_dict, get_peft_config).
_PEFT_TYPES = ("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "LORA", "ADALORA", "ADAMSS",
               "BOFT", "ADAPTION_PROMPT", "IA3", "BEFT", "LILY", "LOHA", "LOKR", "OFT", "POLY", "LN_TUNING", "VERA",
               "FROD", "PVERA", "FOURIERFT", "GLORA", "XLORA", "HRA", "VBLORA", "UNILORA", "CPT", "MISS", "RANDLORA",
               "ROAD", "TRAINABLE_TOKENS", "HIRA", "SHIRA", "C3A", "WAVEFT", "OSF", "DELORA", "GRALORA", "CARTRIDGE",
               "TINYLORA", "PSOFT", "PEANUT", "SHADOW", "SUPERTUNING", "DEFT", "PACA")
PeftType = enum.Enum("PeftType", [(name, name) for name in _PEFT_TYPES], type=str, module=__name__)
PeftType.__doc__ = """PEFT's adapter types: a ``str`` enum, so ``config.peft_type == "LORA"`` and it is written to
adapter_config.json as ``"LORA"`` (``PeftType.LORA`` is what ``LoraConfig().peft_type`` holds, as in PEFT)."""


TASK_TYPES = tuple(t.value for t in TaskType)


def _type_name(peft_type):
    """``PeftType.VERA`` -> ``"VERA"`` for messages (a str enum's repr and str show the member)."""
    return getattr(peft_type, "value", peft_type)
_BIAS_MODES = {"LORA": ("none", "all", "lora_only"), "VERA": ("none", "all", "vera_only")}


class UnknownBiasError(ValueError, NotImplementedError):
    """A ``bias`` mode PEFT does not know. PEFT raises NotImplementedError ("Requested bias: ..., is not
    implemented.") once the model is built; minilora refuses the config, and the error is both."""


def _check_rank(what, r):
    """A rank is a positive int: another type is a TypeError (PEFT's comes from torch.empty or a
    comparison), zero or less a ValueError, as PEFT's."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {r!r} of type {type(r).__name__}")
    if r <= 0:
        raise ValueError(f"{what} must be a positive integer, got {r!r}")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class FieldTypeError(TypeError, ValueError):
    """A config field given a value of another type (``lora_alpha="8"``, ``lora_dropout=None``): a TypeError, as
    PEFT's (its arithmetic on the value fails) and Python's rule for a wrong type; a ValueError too, as minilora
    raised for these before round 31. A value of the right type out of range stays a plain ValueError."""


def _wrong_type(value, *types):
    """True where ``value`` is none of ``types`` (a bool counts as no number, as torch's parsers)."""
    return isinstance(value, bool) or not isinstance(value, types)


def _is_probability(value):
    return 0 <= value <= 1  # (1: nn.Dropout's zeros, as PEFT)


def _check_number(name, value, is_valid, what):
    """A numeric field: another type is a FieldTypeError, a number ``is_valid`` refuses a ValueError."""
    if not _is_number(value) or not is_valid(value):
        raise (ValueError if _is_number(value) else FieldTypeError)(f"{name} must be {what}, got {value!r}")


def _check_names(name, value):
    """``None``, one regex string, or a list of module names (kept as a sorted list, like PEFT's set)."""
    if value is None:
        return value
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:  # e.g. an unbalanced parenthesis: say which field, not just "missing )"
            raise ValueError(f"{name}={value!r} is not a valid regular expression ({exc}); give a regex "
                             "matched against the full module name, or a list of module names") from None
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return sorted(set(value))
    raise TypeError(f"{name} must be None, a regex string or a list of module names, got {value!r}")


def _check_token_indices(value):
    """``trainable_token_indices``: None, a list of token ids (rows of the input embedding), or a dict
    ``{layer name: [token ids]}`` (e.g. ``{"embed_tokens": [...], "lm_head": [...]}``)."""
    if value is None:
        return None

    def ids(where, items):
        error = (FieldTypeError if not isinstance(items, (list, tuple))
                 or any(_wrong_type(i, numbers.Integral) for i in items) else ValueError)
        if error is FieldTypeError or not all(i >= 0 for i in items):
            raise error(f"trainable_token_indices{where} must be a list of token ids >= 0, got {items!r}")
        if not items:  # PEFT takes it and crashes in forward; refused here so a file's [] is named with its file
            raise ValueError(f"trainable_token_indices{where} is empty: give the ids of the tokens to train")
        return [int(i) for i in items]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"trainable_token_indices keys must be layer names, got {sorted(map(repr, value))}")
        return {k: ids(f"[{k!r}]", v) for k, v in value.items()}
    return ids("", value)


def _check_layer_map(value):
    """``layer_replication``: None or ``[[start, end], ...]`` ranges of decoder layers, stacked in order."""
    if value is None:
        return None
    pairs = value if isinstance(value, (list, tuple)) else None
    if pairs is None or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in p) for p in pairs):
        raise ValueError(f"layer_replication must be a list of [start, end] layer ranges (e.g. [[0, 4], [2, 5]]), "
                         f"got {value!r}")
    return [[int(a), int(b)] for a, b in pairs]


@dataclass
class _AdapterConfig:
    """PEFT's ``PeftConfig`` fields, which every adapter config has; subclasses add their method's own.

    Every subclass defines ``r``, ``target_modules``, ``bias``, ``modules_to_save``,
    ``layers_to_transform`` and ``layers_pattern`` (in its own PEFT order), checked here
    (``_check_method_fields``; TrainableTokensConfig, which has none but target_modules, checks its own).
    """

    task_type: str = None
    peft_type: str = None
    auto_mapping: dict = None
    peft_version: str = None
    base_model_name_or_path: str = None
    revision: str = None
    inference_mode: bool = False

    PEFT_TYPE = None  # "LORA" / "VERA": what ``peft_type`` always is for the class
    _unimplemented = {}  # PEFT fields minilora does not implement -> the only value it accepts
    _not_saved = ()  # fields PEFT leaves out of adapter_config.json

    def __post_init__(self):
        if self.peft_type is not None and self.peft_type != self.PEFT_TYPE:
            raise ValueError(f"{type(self).__name__}: this adapter is of type {_type_name(self.peft_type)!r}, "
                             f"not {self.PEFT_TYPE!r}")
        self.peft_type = PeftType(self.PEFT_TYPE)  # PEFT's enum member (equal to the string)
        self._refuse_unimplemented()
        self._check_method_fields()
        if self.task_type is not None:
            if self.task_type not in TASK_TYPES:
                raise ValueError(f"task_type must be None or one of {TASK_TYPES}, got {self.task_type!r}")
            # kept as given, as PEFT: TaskType.CAUSAL_LM stays the member, "CAUSAL_LM" the string (the same in JSON)
        if not isinstance(self.inference_mode, bool):
            raise TypeError(f"inference_mode must be True or False, got {self.inference_mode!r}")
        if self.peft_version is None:
            self.peft_version = minilora_peft_version()

    def _check_method_fields(self):
        _check_rank("r (the rank of the update)", self.r)
        self.r = int(self.r)
        self.target_modules = _check_names("target_modules", self.target_modules)
        if self.bias not in _BIAS_MODES[self.PEFT_TYPE]:
            raise UnknownBiasError(f"Requested bias: {self.bias}, is not implemented. bias must be one of "
                                   f"{_BIAS_MODES[self.PEFT_TYPE]}, got {self.bias!r}")
        if self.modules_to_save is not None:
            if isinstance(self.modules_to_save, str) or not all(isinstance(m, str) for m in self.modules_to_save):
                raise TypeError(f"modules_to_save must be a list of module names, got {self.modules_to_save!r}")
            if not isinstance(self.modules_to_save, list):  # a list stays the caller's object, as in PEFT
                self.modules_to_save = list(self.modules_to_save)  # (which SEQ_CLS then extends in place)
        self._check_layers()

    def _refuse_unimplemented(self):
        """A PEFT field minilora does not implement may only hold PEFT's default (an empty dict may be None)."""
        for name, default in self._unimplemented.items():
            value = getattr(self, name)
            if value != default and not (default == {} and value is None):
                raise NotImplementedError(
                    f"{type(self).__name__}({name}={value!r}): minilora implements {self.PEFT_TYPE} without "
                    f"{name!r}; only PEFT's default {name}={default!r} is accepted")

    def _check_layers(self):
        layers = self.layers_to_transform
        if layers is not None:
            items = [layers] if isinstance(layers, numbers.Integral) else layers
            error = (FieldTypeError if isinstance(layers, bool) or not isinstance(items, (list, tuple))
                     or any(_wrong_type(i, numbers.Integral) for i in items) else ValueError)
            if error is FieldTypeError or not all(i >= 0 for i in items):
                raise error(f"layers_to_transform must be a layer index or a list of indices >= 0, got {layers!r}")
            self.layers_to_transform = int(layers) if isinstance(layers, numbers.Integral) else list(items)
        # PEFT's checks, in its order and words (a regex target_modules names the layers itself)
        if isinstance(self.target_modules, str) and layers is not None:
            raise ValueError("`layers_to_transform` cannot be used when `target_modules` is a str.")
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ValueError("`layers_pattern` cannot be used when `target_modules` is a str.")
        if self.layers_pattern and layers is None:
            raise ValueError("When `layers_pattern` is specified, `layers_to_transform` must also be specified. ")

    # --- PEFT's file format --------------------------------------------------------------------
    def to_dict(self):
        """The dict PEFT writes to ``adapter_config.json`` (same keys, PEFT's defaults where unused)."""
        out = {}
        for f in fields(self):
            if f.name in self._not_saved:
                continue
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, dict) else \
                list(value) if isinstance(value, (list, tuple)) else \
                asdict(value) if is_dataclass(value) else value  # a sub-config (EvaConfig) as PEFT's asdict
        return out

    @classmethod
    def from_dict(cls, data):
        """Build from an ``adapter_config.json`` dict (written by PEFT or minilora).

        The same checks as the constructor; keys this version does not know are ignored with a warning."""
        _require_object(data, f"{cls.__name__}.from_dict")
        if data.get("peft_type", cls.PEFT_TYPE) != cls.PEFT_TYPE:  # before any warning about its keys
            raise ValueError(f"{cls.__name__}.from_dict: this adapter is of type "
                             f"{_type_name(data['peft_type'])!r}, "
                             f"not {cls.PEFT_TYPE!r}")
        own = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in own)
        if unknown:  # (PEFT's words: a program filtering this warning finds it by them)
            warnings.warn(f"Unexpected keyword arguments {unknown} for class {cls.__name__}, these are ignored. "
                          "This probably means that you're loading a configuration file that was saved using a "
                          "higher version of the library and additional parameters have been introduced since "
                          "(which minilora does not know).")
        return cls(**{k: v for k, v in data.items() if k in own})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None):
        """Read ``adapter_config.json`` from a folder (or its ``subfolder``, e.g. a second adapter's).

        As PEFT, the file's ``peft_type`` picks the class: ``PeftConfig.from_pretrained(folder)`` (the
        docs' first step to find ``base_model_name_or_path``) gives a LoraConfig for a LoRA adapter."""
        from ..checkpoint import put_back_a_cut_swap
        directory = os.fspath(pretrained_model_name_or_path)
        put_back_a_cut_swap(directory)  # (a save killed half-way through its folder swap)
        path = os.path.join(directory, subfolder, CONFIG_NAME) if subfolder else os.path.join(directory, CONFIG_NAME)
        data = _read_json(path)
        try:
            return config_from_dict(data) if "peft_type" in data else cls.from_dict(data)
        except (ValueError, TypeError, NotImplementedError) as exc:  # a field alone does not say which file
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (f"{path}: {exc.args[0]}",) + exc.args[1:]
            raise

    @classmethod
    def from_json_file(cls, path_json_file):
        """PEFT's: the JSON in the file (a syntax error or non-UTF-8 bytes name the file)."""
        from ..checkpoint import load_json
        return without_runtime_config(load_json(os.fspath(path_json_file)))

    @property
    def is_prompt_learning(self):
        return False  # (PEFT's prompt-tuning methods are not implemented in minilora)

    @property
    def is_adaption_prompt(self):
        return False

    def save_pretrained(self, save_directory):
        """Write ``save_directory/adapter_config.json`` (PEFT's method; the folder is made if missing)."""
        from ..checkpoint import make_save_folder, save_json
        make_save_folder(save_directory)
        save_json(self.to_dict(), os.path.join(save_directory, CONFIG_NAME), CONFIG_KEYS_WITH_PRESERVED_ORDER)

    def to_json_string(self):
        from ..checkpoint import sorted_keys
        return json.dumps(sorted_keys(self.to_dict(), CONFIG_KEYS_WITH_PRESERVED_ORDER), indent=2)


PeftConfig = _AdapterConfig  # PEFT's base class name: PeftConfig.from_pretrained(folder), isinstance checks


def _require_object(data, where):
    """An adapter config is a JSON object; a list (or anything else) is named, not an AttributeError."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: an adapter config must be a JSON object of field: value, got a "
                         f"{type(data).__name__}")


def _read_json(path):
    """The JSON object in ``path``, read as the other loaders read theirs (checkpoint.load_json: a syntax
    error or non-UTF-8 bytes name the file)."""
    from ..checkpoint import load_json
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {os.path.dirname(path)!r}: not an adapter directory")
    data = load_json(path)
    _require_object(data, path)
    return without_runtime_config(data)


def without_runtime_config(data):
    """An adapter_config.json's fields less ``runtime_config``: settings for one run (PEFT's LoraConfig.to_dict
    leaves it out), ignored with PEFT's warning when a file holds one anyway (PeftConfig.from_json_file)."""
    if isinstance(data, dict) and "runtime_config" in data:
        warnings.warn("The configuration file contains a `runtime_config` key. This is ignored. Runtime "
                      "configurations are only valid at runtime.")
        data = {k: v for k, v in data.items() if k != "runtime_config"}
    return data


@dataclass
class EvaConfig:
    """PEFT's EvaConfig: ``rho`` (a layer may get up to ``round(r * rho)``), ``tau`` (the cosine similarity at
    which a component counts as converged), ``use_label_mask`` / ``label_mask_value`` (tokens whose label is
    -100 are left out of the SVD), ``whiten``, ``adjust_scaling_factors`` (alpha follows the new rank)."""

    rho: float = 2.0
    tau: float = 0.99
    use_label_mask: bool = True
    label_mask_value: int = -100
    whiten: bool = False
    adjust_scaling_factors: bool = True

    def __post_init__(self):  # PEFT's checks and words
        if self.rho < 1.0:
            raise ValueError("`rho` must be >= 1.0")
        if self.tau < 0.0 or self.tau > 1.0:
            raise ValueError("`tau` must be between 0.0 and 1.0.")


@dataclass
class CordaConfig:
    """PEFT's CordaConfig: ``cache_file`` / ``covariance_file`` (reused when they exist, written otherwise),
    ``corda_method`` ("ipm" or "kpm"), ``verbose``, ``use_float16_for_covariance`` (the inputs keep their
    dtype), ``prune_temporary_fields`` (drop the covariance from the layers when done)."""

    cache_file: str = None
    covariance_file: str = None
    corda_method: str = "ipm"
    verbose: bool = False
    use_float16_for_covariance: bool = False
    prune_temporary_fields: bool = True


@dataclass
class LoraGAConfig:
    """PEFT's LoraGAConfig (LoRA-GA, ``lora/loraga.py``): which gradient singular vectors go to A and B
    (``direction``: "ArBr", "A2rBr", "ArB2r", "random") and how B is scaled (``scale``: "stable", "weight_svd",
    "gd_scale", "unit"; ``stable_gamma``)."""

    direction: str = "ArB2r"
    scale: str = "stable"
    stable_gamma: int = 16


@dataclass
class LoftQConfig:
    """PEFT's LoftQConfig, so that code passing it reaches minilora's refusal of ``init_lora_weights='loftq'``
    (LoftQ needs bitsandbytes' quantized layers)."""

    loftq_bits: int = 4
    loftq_iter: int = 1


def _sub_config(value, config_class):
    """PEFT's ``_get_lora_subconfig``: None, an instance, or its dict from adapter_config.json (unknown keys
    dropped)."""
    if value is None or isinstance(value, config_class):
        return value
    if isinstance(value, dict):
        return config_class(**{k: v for k, v in value.items() if k in {f.name for f in fields(config_class)}})
    name = config_class.__name__
    raise TypeError(f"`{name}` must be a `{name}`, a dict, or None.")  # PEFT's words


@dataclass
class LoraRuntimeConfig:
    """PEFT's runtime options of a LoRA adapter (never saved): ``ephemeral_gpu_offload`` only, which
    minilora does not implement (True is refused by LoraConfig)."""
    ephemeral_gpu_offload: bool = False


@dataclass
class LoraConfig(_AdapterConfig):
    """LoRA: ``h = W0 x + (lora_alpha / r) * B A x`` on every module that ``target_modules`` selects.

    * ``target_modules``: a list of names (a module matches if its full name equals one or ends with
      ``"." + name``), a regex string (``re.fullmatch`` on the full name), or ``"all-linear"``
      (every Linear except the output head). ``None`` picks the model type's default (Llama: q, v).
    * ``init_lora_weights``: ``True`` (A kaiming-uniform as ``nn.Linear``, B = 0, so training starts
      exactly at the base model), ``"gaussian"`` (A ~ N(0, (1/r)^2), B = 0), ``False`` (A and B both
      random: the adapter changes the output from the start; for tests), ``"pissa"`` /
      ``"pissa_niter_K"`` (the adapter takes W0's principal part, from its SVD, the base keeps the
      residual: see ``minilora/lora/inits.py``), ``"olora"`` (the same with W0's QR decomposition:
      B the first r columns of Q, A the first r rows of R), ``"orthogonal"`` (A and B from the odd and even rows of
      one random orthogonal matrix, so ``B A = 0`` up to rounding; the base stays; even r), ``"eva"`` (B = 0;
      ``initialize_lora_eva_weights(model, dataloader)`` then sets A and the ranks from the data: ``lora/eva.py``,
      ``eva_config`` an ``EvaConfig``), ``"corda"`` (``preprocess_corda(model, config, run_model)`` first; the
      adapter takes singular directions of W times its inputs' covariance, the base the rest: ``lora/corda.py``),
      ``"lora_ga"`` (``preprocess_loraga(model, config, train_step)`` first: singular vectors of each weight's
      gradient, ``lora/loraga.py``), ``"mica"`` (B = W's minor left singular vectors, frozen; A = 0), ``"nora"``
      (PEFT 0.22's NoRA: A drawn as for ``True``, then each column scaled to unit L2 norm; B = 0; Linear layers).
    * ``use_rslora``: scale ``lora_alpha / sqrt(r)`` instead of ``lora_alpha / r`` (rank-stabilised).
    * ``use_dora``: weight-decomposed LoRA, a trainable magnitude per output row.
    * ``rank_pattern`` / ``alpha_pattern``: per-module overrides, keys matched like target names.
    * ``lora_bias``: lora_B gets a trainable bias too (``h += s * b_B``; merged into the base bias).
    * ``trainable_token_indices``: train these rows of the input embedding in full (new tokens after
      ``resize_token_embeddings``), or ``{layer name: ids}``; see ``layers.TrainableTokensLayer``.
    * ``layer_replication``: ``[[start, end], ...]`` builds a deeper model from copies of the decoder
      layers that share their base weights, each copy with its own adapter (``model.replicate_layers``).
    * ``target_parameters``: parameter names (``["q_proj.weight"]``, matched as target names) adapted
      as ``W + s B A`` inside the layer's own forward (PEFT's ``lora.ParamWrapper``; 2-D weights of Linear
      and Embedding layers here -- PEFT's use is MoE expert tensors, which minilora's Llama has none of).

    * ``alora_invocation_tokens``: activated LoRA -- the adapter acts only from the last occurrence of these
      tokens on (``lora/alora.py``); a causal LM only.
    * ``use_qalora`` / ``qalora_group_size``: PEFT applies QALoRA's pooled adapter to GPTQ-quantized layers only;
      on float layers (all of minilora's) PEFT trains plain LoRA and writes the fields, and so does minilora.

    The other fields are PEFT's, accepted at their default value only (see ``_unimplemented``).
    Pass fields by keyword, as PEFT's documentation does (PEFT's first positional field is ``task_type``).
    """

    r: int = 8
    target_modules: object = None
    exclude_modules: object = None
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: list = None
    init_lora_weights: object = True
    layers_to_transform: object = None
    layers_pattern: object = None
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    megatron_config: dict = None
    megatron_core: str = "megatron.core"
    trainable_token_indices: object = None
    loftq_config: dict = field(default_factory=dict)
    eva_config: object = None
    corda_config: object = None
    astra_config: object = None  # (PEFT 0.22)
    lora_ga_config: object = None
    use_dora: bool = False
    velora_config: object = None
    alora_invocation_tokens: list = None
    use_qalora: bool = False
    qalora_group_size: int = 16
    monteclora_config: object = None
    layer_replication: list = None
    runtime_config: object = field(default_factory=LoraRuntimeConfig)  # (PEFT's default, an object)
    lora_bias: bool = False
    target_parameters: list = None
    use_bdlora: object = None
    arrow_config: object = None
    kasa_config: object = None
    ensure_weight_tying: bool = False

    PEFT_TYPE = "LORA"
    _unimplemented = {
        "megatron_config": None, "megatron_core": "megatron.core",
        "velora_config": None,
        "monteclora_config": None,
        "use_bdlora": None,
        "arrow_config": None, "kasa_config": None,
        "astra_config": None,  # PEFT 0.22's Astra (init_lora_weights="astra" is refused by name below)
    }  # (ensure_weight_tying: accepted where it ties nothing, refused by name where it would: lora/model.py)
    _not_saved = ("runtime_config",)  # PEFT's LoraConfig.to_dict drops it too

    def __post_init__(self):
        super().__post_init__()
        if getattr(self.runtime_config, "ephemeral_gpu_offload", None) or \
                (isinstance(self.runtime_config, dict) and self.runtime_config.get("ephemeral_gpu_offload")):
            raise NotImplementedError("runtime_config.ephemeral_gpu_offload=True is not implemented in minilora")
        _check_number("lora_alpha", self.lora_alpha, math.isfinite, "a finite number")
        _check_number("lora_dropout", self.lora_dropout, _is_probability, "a probability in [0, 1]")
        self.exclude_modules = _check_names("exclude_modules", self.exclude_modules)
        for name in ("use_rslora", "use_dora", "use_qalora", "fan_in_fan_out", "ensure_weight_tying"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.init_lora_weights == "loftq" and not self.loftq_config:  # PEFT's refusal, in its words, first
            raise ValueError("`loftq_config` must be specified when `init_lora_weights` is 'loftq'.")
        if self.init_lora_weights == "loftq":
            raise ValueError("init_lora_weights='loftq' is not implemented in minilora: PEFT's LoftQ quantizes the "
                             "base weights with bitsandbytes (NF4 / int8, on a CUDA device; without bitsandbytes PEFT "
                             "raises too) and minilora has no quantized layers")
        if self.init_lora_weights == "astra":
            raise ValueError("init_lora_weights='astra' (PEFT 0.22's Astra) is not implemented in minilora: it needs "
                             "peft.preprocess_astra's eigendecomposition of each layer's output activations over a "
                             "calibration set before get_peft_model; use 'corda' (preprocess_corda), the nearest "
                             "data-driven init minilora has")
        if not (self.init_lora_weights is True or self.init_lora_weights is False
                or self.init_lora_weights in ("pissa", "orthogonal", "eva", "corda", "lora_ga", "nora")
                or str(self.init_lora_weights).lower() in ("gaussian", "olora", "mica")  # PEFT's .lower() for these
                or re.fullmatch(r"pissa_niter_\d+", str(self.init_lora_weights))):
            error = ValueError if isinstance(self.init_lora_weights, str) else FieldTypeError
            raise error(f"init_lora_weights must be True, False, 'gaussian', 'pissa', 'pissa_niter_[K]', "
                             f"'olora', 'orthogonal', 'eva', 'corda', 'lora_ga', 'mica' or 'nora', got "
                             f"{self.init_lora_weights!r}")
        for name in ("rank_pattern", "alpha_pattern"):
            if getattr(self, name) is None:  # PEFT takes null as "no overrides"
                setattr(self, name, {})
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict of module name pattern: value, got {getattr(self, name)!r}")
        for key, r in self.rank_pattern.items():
            _check_rank(f"rank_pattern[{key!r}]", r)
        for key, alpha in self.alpha_pattern.items():
            _check_number(f"alpha_pattern[{key!r}]", alpha, lambda _: True, "a number")
        if self.loftq_config is None:
            self.loftq_config = {}
        if not isinstance(self.loftq_config, (dict, LoftQConfig)):  # (a 0 in a file was kept, and written back)
            raise TypeError(f"loftq_config must be a LoftQConfig, a dict or None, got {self.loftq_config!r}")
        if self.loftq_config:  # PEFT's words (init_lora_weights='loftq' is refused above)
            warnings.warn("`loftq_config` specified but will be ignored when `init_lora_weights` is not 'loftq'.")
            self.loftq_config = {}
        self._check_data_init_configs()
        self._warn_rslora_with_converted_base()
        self._check_alora()
        self._check_lora_bias()
        self.trainable_token_indices = _check_token_indices(self.trainable_token_indices)
        self.layer_replication = _check_layer_map(self.layer_replication)
        if self.target_parameters is not None:
            if isinstance(self.target_parameters, str) or not isinstance(self.target_parameters, (list, tuple, set)) \
                    or not all(isinstance(t, str) for t in self.target_parameters):  # PEFT's words (str: TypeError)
                raise TypeError("`target_parameters` must be a list of strings or None.")
            self.target_parameters = list(self.target_parameters)

    def _check_data_init_configs(self):
        """``eva_config`` / ``corda_config``: None, the sub-config or its dict (as read from adapter_config.json);
        PEFT's defaults and warnings for the init without its config, or the config without its init."""
        self.eva_config = _sub_config(self.eva_config, EvaConfig)
        self.corda_config = _sub_config(self.corda_config, CordaConfig)
        self.lora_ga_config = _sub_config(self.lora_ga_config, LoraGAConfig)
        if self.loftq_config:  # (PEFT's elif chain: a loftq_config is handled first, then EVA's, then CorDA's)
            return
        if self.init_lora_weights == "eva" and self.eva_config is None:
            warnings.warn("`init_lora_weights` is 'eva' but `eva_config` is not specified. Using default EVA config.")
            self.eva_config = EvaConfig()
        elif self.init_lora_weights != "eva" and self.eva_config is not None:
            warnings.warn("`eva_config` specified but will be ignored when `init_lora_weights` is not 'eva'.")
        elif self.init_lora_weights == "corda" and self.corda_config is None:
            warnings.warn("`init_lora_weights` is 'corda' but `corda_config` is not specified. Using default CorDA "
                          "config.")
            self.corda_config = CordaConfig()
        elif self.init_lora_weights != "corda" and self.corda_config is not None:
            warnings.warn("`corda_config` specified but will be ignored when `init_lora_weights` is not 'corda'.")

    def _warn_rslora_with_converted_base(self):
        """PEFT's warning: rsLoRA with rank or alpha patterns under an init that changes the base weights
        (PiSSA, OLoRA, CorDA, LoRA-GA) cannot be converted back by save_pretrained's
        ``path_initial_model_for_weight_conversion``."""
        init = self.init_lora_weights
        converted = (isinstance(init, str) and init.startswith("pissa")) or init in ("olora", "corda", "lora_ga")
        if self.use_rslora and (self.rank_pattern or self.alpha_pattern) and converted:
            warnings.warn("Using Rank-Stabilized LoRA with rank_pattern/alpha_pattern and post-training conversion of "
                          "modified base weights PiSSA/CorDA/OLoRA/LoRA-GA means that you won't be able to pass "
                          "`path_initial_model_for_weight_conversion` to `save_pretrained` to restore the initial "
                          "values of the base weights; if you intend to do this, please ensure not to use rslora or "
                          "rank_pattern/alpha_pattern.")

    def _check_alora(self):
        """``alora_invocation_tokens``: None or the token ids that switch the adapter on (lora/alora.py)."""
        tokens = self.alora_invocation_tokens
        if tokens is None:
            return
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)) or not all(
                isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in tokens):
            raise TypeError(f"alora_invocation_tokens must be a list of token ids, got {tokens!r}")
        self.alora_invocation_tokens = [int(t) for t in tokens]
        if self.task_type != "CAUSAL_LM":  # PEFT's words
            warnings.warn("aLoRA is currently only supported for CAUSAL_LM task.")

    def _check_lora_bias(self):
        """``lora_bias=True``: lora_B gets a bias (PEFT's rules: plain inits only, not with DoRA)."""
        if not isinstance(self.lora_bias, bool):
            raise TypeError(f"lora_bias must be True or False, got {self.lora_bias!r}")
        if not self.lora_bias:
            return
        if self.init_lora_weights not in (True, False):  # PEFT's words
            raise ValueError(f"The argument lora_bias=True is only supported with init_lora_weights=True or False, "
                             f"got init_lora_weights={self.init_lora_weights} instead.")
        if self.use_dora:
            raise ValueError("The argument lora_bias=True is not supported for DoRA, please pass use_dora=False")

    def scaling(self, r, alpha):
        """The factor in front of ``B A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        # EXERCISE 4.1: the factor s in h = W0 x + s B A x: lora_alpha over r, or over sqrt(r) with use_rslora
        # BEGIN SOLUTION
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r
        # END SOLUTION

    _custom_modules = None  # not a field: PEFT keeps it out of adapter_config.json too

    def _register_custom_module(self, mapping):
        """PEFT's experimental API (its "Custom models" guide): your own LoRA layer classes for layer types
        minilora does not adapt, ``{target layer type: LoRA layer class}``, tried before the built-in ones.
        The class is called ``cls(target, adapter_name, config=config, r=r, lora_alpha=lora_alpha)`` and
        follows minilora's conventions (subclass ``minilora.lora.LoraLayer`` or ``BaseTunerLayer``). Pass the
        same config to ``PeftModel.from_pretrained(..., config=config)`` to load such an adapter."""
        self._custom_modules = {**(self._custom_modules or {}), **mapping}


@dataclass
class VeraConfig(_AdapterConfig):
    """VeRA: ``h = W0 x + lambda_b * (B (lambda_d * (A x)))`` with A and B random, frozen and SHARED by
    every adapted layer (only the vectors ``lambda_b`` [out] and ``lambda_d`` [r] are trained).

    ``projection_prng_key`` seeds A and B; ``save_projection`` writes them into the adapter file
    (PEFT's default). minilora draws them with NumPy, so a file without them can only be rebuilt
    by the library that wrote it.
    """

    r: int = 256
    target_modules: object = None
    projection_prng_key: int = 0
    save_projection: bool = True
    vera_dropout: float = 0.0
    d_initial: float = 0.1
    fan_in_fan_out: bool = False
    bias: str = "none"
    modules_to_save: list = None
    init_weights: bool = True
    layers_to_transform: object = None
    layers_pattern: object = None

    PEFT_TYPE = "VERA"

    def __post_init__(self):
        super().__post_init__()
        _check_number("vera_dropout", self.vera_dropout, _is_probability, "a probability in [0, 1]")
        _check_number("d_initial", self.d_initial, lambda _: True, "a number")
        if isinstance(self.projection_prng_key, bool) or not isinstance(self.projection_prng_key, numbers.Integral):
            raise TypeError(f"projection_prng_key must be an integer, got {self.projection_prng_key!r}")
        for name in ("save_projection", "init_weights", "fan_in_fan_out"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass
class TrainableTokensConfig(_AdapterConfig):
    """PEFT's TrainableTokens method on its own: train the rows ``token_indices`` of the layer(s)
    ``target_modules`` (None: the input embedding) in full, nothing else -- new tokens after
    ``resize_token_embeddings``, with a file of a few rows. ``init_weights=False``: random rows (tests).
    LoRA can do the same next to its adapters: ``LoraConfig(trainable_token_indices=...)``."""

    token_indices: list = field(default_factory=list)
    target_modules: object = None
    init_weights: bool = True

    PEFT_TYPE = "TRAINABLE_TOKENS"
    # what the shared tuner code reads of every config; not fields (PEFT's config has none of them)
    r = None
    bias = "none"
    modules_to_save = None
    exclude_modules = None
    layers_to_transform = None
    layers_pattern = None
    rank_pattern = {}
    alpha_pattern = {}

    def _check_method_fields(self):
        self.token_indices = _check_token_indices(list(self.token_indices) if isinstance(self.token_indices, tuple)
                                                  else self.token_indices)
        if not isinstance(self.token_indices, list):
            raise ValueError(f"token_indices must be a list of token ids, got {self.token_indices!r}")
        self.target_modules = _check_names("target_modules", self.target_modules)
        if not isinstance(self.init_weights, bool):
            raise TypeError(f"init_weights must be True or False, got {self.init_weights!r}")


PEFT_TYPE_TO_CONFIG = {"LORA": LoraConfig, "VERA": VeraConfig, "TRAINABLE_TOKENS": TrainableTokensConfig}


def get_peft_config(config_dict):
    """PEFT's ``get_peft_config``: the config class of ``config_dict["peft_type"]`` called with the dict's fields
    (an unknown field is Python's TypeError, as there; ``config_from_dict`` is the lenient reader of files)."""
    peft_type = config_dict["peft_type"]
    if peft_type not in PEFT_TYPE_TO_CONFIG:
        raise NotImplementedError(f"adapter type {_type_name(peft_type)!r} is not supported by minilora "
                                  f"(supported: {sorted(PEFT_TYPE_TO_CONFIG)})")
    return PEFT_TYPE_TO_CONFIG[peft_type](**config_dict)


def config_from_dict(data):
    """The right config class for ``data["peft_type"]``."""
    _require_object(data, "config_from_dict")
    peft_type = data.get("peft_type")
    if peft_type not in PEFT_TYPE_TO_CONFIG:
        raise NotImplementedError(f"adapter type {_type_name(peft_type)!r} is not supported by minilora "
                                  f"(supported: {sorted(PEFT_TYPE_TO_CONFIG)})")
    return PEFT_TYPE_TO_CONFIG[peft_type].from_dict(data)
