"""LoRA the way PEFT users know it: ``LoraConfig``, ``get_peft_model``, ``PeftModel``.

    from minilora.lora import LoraConfig, get_peft_model
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(model, config)        # a PeftModelForCausalLM when task_type="CAUSAL_LM"
    model.print_trainable_parameters()
    ...train...
    model.save_pretrained("my-adapter")          # adapter_config.json + adapter_model.safetensors

Where things are: ``config.py`` (the configs), ``layers.py`` (the LoRA/DoRA/VeRA layers -- LoRA on
Linear and on Embedding layers: the forward and the merge math), ``conv.py`` (LoRA on Conv1d/Conv2d),
``mha.py`` (LoRA on MultiheadAttention), ``inits.py`` / ``eva.py`` / ``corda.py`` / ``loraga.py`` (the
data-driven initialisations), ``alora.py`` (activated LoRA's offsets),
``model.py`` (injection, several adapters, merging), ``save.py`` (adapter files), ``status.py``
(PEFT's get_layer_status / get_model_status), ``helpers.py`` (``peft.helpers``: rescale_adapter_scale,
check_if_peft_model), ``hotswap.py`` (PEFT's ``peft.utils.hotswap``: new weights
into a loaded adapter, ``from minilora.lora.hotswap import hotswap_adapter``).
The op every LoRA forward runs is ``minilora.ops.lora_linear``.
"""
from .config import (LoraConfig, LoraRuntimeConfig, PeftConfig, PeftType, TaskType, TrainableTokensConfig,
                     VeraConfig, config_from_dict, get_peft_config)
from .layers import (BASE_ADAPTER, DoraMagnitude, Embedding, Linear, LoraLayer, ModulesToSaveWrapper, ParamWrapper,
                     TrainableTokensLayer, TrainableTokensWrapper, VeraLinear)
from .conv import Conv1d, Conv2d
from .loraplus import create_loraplus_optimizer
from .model import (AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification,
                    AutoPeftModelForTokenClassification, LoraModel, NoMatchingPeftModuleError, PeftError,
                    PeftMixedModel,
                    PeftModel, PeftModelForCausalLM, PeftModelForFeatureExtraction,
                    PeftModelForSequenceClassification, PeftModelForTokenClassification, TrainableTokensModel,
                    VeraModel, cast_mixed_precision_params, get_peft_model, inject_adapter_in_model,
                    prepare_model_for_kbit_training, target_module_matches)
from .save import (AdapterMismatchError, get_base_model_state_dict, get_peft_model_state_dict, load_peft_weights,
                   set_base_model_state_dict, set_peft_model_state_dict)
from .status import TunerLayerStatus, TunerModelStatus, get_layer_status, get_model_status
from .adalora import AdaLoraConfig, AdaLoraModel, RankAllocator, SVDLinear  # registers "ADALORA"
from .eva import EvaConfig, get_eva_state_dict, initialize_lora_eva_weights
from .corda import CordaConfig, preprocess_corda
from .config import LoftQConfig, LoraGAConfig
from .loraga import preprocess_loraga
from .inits import replace_lora_weights_loftq

__all__ = ["LoraConfig", "LoraRuntimeConfig", "PeftConfig", "VeraConfig", "TaskType", "PeftType", "config_from_dict",
           "get_peft_config",
           "get_peft_model", "PeftModel", "PeftModelForCausalLM", "PeftModelForFeatureExtraction", "PeftMixedModel",
           "PeftModelForSequenceClassification", "PeftModelForTokenClassification",
           "AutoPeftModelForCausalLM", "AutoPeftModelForSequenceClassification",
           "AutoPeftModelForTokenClassification", "LoraModel",
           "VeraModel", "inject_adapter_in_model", "Linear", "Embedding", "Conv1d", "Conv2d", "LoraLayer",
           "VeraLinear", "DoraMagnitude", "ModulesToSaveWrapper",
           "BASE_ADAPTER", "target_module_matches", "get_peft_model_state_dict",
           "set_peft_model_state_dict", "load_peft_weights", "get_base_model_state_dict", "set_base_model_state_dict",
           "AdapterMismatchError", "create_loraplus_optimizer",
           "AdaLoraConfig", "AdaLoraModel", "RankAllocator", "SVDLinear", "get_layer_status", "get_model_status",
           "TunerLayerStatus", "TunerModelStatus", "TrainableTokensConfig", "TrainableTokensModel",
           "TrainableTokensLayer", "TrainableTokensWrapper", "ParamWrapper", "prepare_model_for_kbit_training",
           "cast_mixed_precision_params", "PeftError", "NoMatchingPeftModuleError", "EvaConfig", "get_eva_state_dict",
           "initialize_lora_eva_weights", "CordaConfig", "preprocess_corda",
           "LoftQConfig", "replace_lora_weights_loftq", "LoraGAConfig", "preprocess_loraga"]
from . import helpers  # noqa: E402  peft.helpers (minilora.lora.helpers.rescale_adapter_scale, ...)
from . import diagnostics  # noqa: E402  spectra, training diagnosis, recommend_lora_config (minilora.lora.diagnostics)
