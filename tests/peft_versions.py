"""Which PEFT the oracle tests run against, and what changed in PEFT 0.22.0 that minilora follows.

minilora mirrors PEFT 0.22.0 (setup.py's ``[interop]`` pin). The oracle tests also run against 0.21.2 (a user
who has not upgraded yet); where 0.22.0 deliberately changed PEFT's behaviour (a bug fix, a new default, a new
field), minilora has 0.22.0's, and a test compares it with 0.21.2 through one of these named differences --
never by skipping the comparison. Import after ``pytest.importorskip("peft")``.
"""
import peft
from packaging.version import Version

PEFT_VERSION = Version(peft.__version__)
PEFT_022 = PEFT_VERSION >= Version("0.22.0")


def as_of_peft(before_022, since_022):
    """The value the installed PEFT gives: ``since_022`` from 0.22.0 on (minilora's), else ``before_022``."""
    return since_022 if PEFT_022 else before_022


# LoraConfig fields that 0.22.0 added (written to adapter_config.json at their default): minilora writes them;
# a 0.21 PEFT writes none of them
LORA_CONFIG_FIELDS_NEW_IN_022 = {"astra_config": None}


def peft_config_file_as_022(config_dict):
    """A LoRA adapter_config.json dict written by the installed PEFT, as 0.22.0 writes it (its new fields at
    their defaults): what minilora's file must equal. A 0.22 file is returned unchanged."""
    if PEFT_022 or config_dict.get("peft_type") != "LORA":
        return config_dict
    return {**config_dict, **LORA_CONFIG_FIELDS_NEW_IN_022}


def freeze_ranknum_as_022(peft_model):
    """PEFT 0.21's AdaLoRA ``ranknum`` turns trainable where the adapter is cast to its base layer's dtype
    (``ParameterDict[name] = p.to(dtype)`` registers a new Parameter, requires_grad=True), so AdamW's weight
    decay shrinks the scale ``alpha / ranknum``. 0.22.0 restores the flag (frozen, as created): the oracle
    for minilora is 0.21 with that fix applied. Returns the names it froze (none on 0.22)."""
    frozen = [name for name, p in peft_model.named_parameters() if ".ranknum." in name and p.requires_grad]
    for name, p in peft_model.named_parameters():
        if name in frozen:
            p.requires_grad = False
    assert not frozen or not PEFT_022, f"PEFT {PEFT_VERSION} left ranknum trainable: {frozen}"
    return frozen


def classifier_modules_to_save(given, since_022=PEFT_022):
    """The ``modules_to_save`` that a SEQ_CLS / TOKEN_CLS model gives a config that held ``given``, as the
    installed PEFT writes it (``since_022=True``: as 0.22 and minilora write it): 0.22 adds "classifier",
    "score" and "pre_classifier", each once, in a new list; 0.21 extended the caller's list with "classifier"
    and "score", duplicates and all."""
    given = list(given or [])
    if since_022:
        return given + [name for name in ("classifier", "score", "pre_classifier") if name not in given]
    return given + ["classifier", "score"]


# Warnings PEFT 0.22 reworded: (0.21's words, 0.22's words). minilora writes 0.22's
WORDS_CHANGED_IN_022 = [
    ("did not match any targeted module and were ignored", "did not match any targeted module or parameter and "
                                                           "were ignored"),
]


def peft_words_as_022(message):
    """A message of the installed PEFT in 0.22's words (unchanged on 0.22)."""
    if not PEFT_022:
        for old, new in WORDS_CHANGED_IN_022:
            message = message.replace(old, new)
    return message
