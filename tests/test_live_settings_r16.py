"""Settings changed on a live model after it was built, side by side with transformers 5 / PEFT: one table row a
setting (ROWS, FIXED_ROWS). Each row builds both stacks from one config and seed, changes the setting on both,
then makes the same call; both must give the same value, or raise the same exception type. A row marked CRASH is
one where transformers itself fails with an unrelated message (an AttributeError on a tuple, a reshape's
RuntimeError): minilora raises the same type, with a message naming the setting.

Fixed this round (FIXED_ROWS fail on the tree before):

* ``config.vocab_size`` changed after the head was made: transformers' causal-LM loss reshapes the logits to
  (-1, config.vocab_size), read when the loss runs, and fails (CRASH); minilora computed the loss over the head's
  size, silently.
* ``config.return_dict = False`` on a causal LM or classifier: transformers 5's heads read
  ``outputs.last_hidden_state`` from a body that then returns a tuple, so every forward and generate fails
  (CRASH); minilora answered a tuple (and its generate crashed on it). The bare LlamaModel returns its tuple in
  both, and ``model(ids, return_dict=False)`` still gives one.
* ``config.use_return_dict``: transformers' deprecated read-only property (reading gives return_dict, setting
  is its AttributeError); minilora had no attribute to read and kept a set one, read by nothing.
* ``config.tie_word_embeddings`` changed after the model was made: transformers' save_pretrained drops the
  head's copy only when the two tensors share memory (remove_tied_weights_from_state_dict), and
  resize_token_embeddings reads the config and ties the head again; minilora dropped an untied head from the
  file (True after), saved a tied table twice (False after), and left the head untied after resizing.
* ``config._attn_implementation`` set to a name no attention interface has: transformers' lookup at the next
  forward is a KeyError; minilora's was set_attn_implementation's ValueError.

What the sweep found already matching (ROWS): read live -- output_hidden_states, output_attentions (eager),
use_cache, a classifier's pad_token_id and problem_type, _attn_implementation, generation_config; copied when the
model is made -- the embedding's padding_idx, rope_theta/rope_parameters (plain, linear, dynamic, llama3),
rms_norm_eps, hidden_act, attention_dropout, the sizes (hidden_size, heads, head_dim, layers), Mistral's
sliding_window; PEFT: a LoraConfig's lora_dropout/lora_alpha/use_rslora/fan_in_fan_out copied into the layers,
a layer's scaling and dropout p read live, and the config's fields read when the adapter is saved. TrainingArguments
changed after Trainer() (30 fields surveyed, /tmp/h213/survey5.py) all matched beyond round 15's
(tests/test_live_settings_r15.py).
"""
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models, trainer as ml_trainer  # noqa: E402
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402

CONFIG = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
PROMPT = [[5, 9, 3, 17, 22, 8, 11], [7, 7, 4, 12, 30, 1, 6]]
CRASH = "crash"  # transformers fails with an unrelated message: minilora's names the setting


def built(lib, head="LlamaForCausalLM", config="LlamaConfig", **overrides):
    """transformers' (lib=torch) or minilora's model of the table's head, from one config and seed."""
    make = transformers if lib is torch else models
    lib.manual_seed(0)
    return getattr(make, head)(getattr(make, config)(**{**CONFIG, **overrides})).eval()


def with_lora(lib, model):
    make = peft if lib is torch else ml_peft
    lib.manual_seed(1)
    return make.get_peft_model(model, make.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.1, init_lora_weights=False))


def config_set(**settings):
    def change(model, lib):
        for name, value in settings.items():
            setattr(model.config, name, value)
    return change


def logits(model, lib):
    return model(lib.tensor(PROMPT)).logits


def loss(model, lib):
    return model(lib.tensor(PROMPT), labels=lib.tensor(PROMPT)).loss


def generated(model, lib):
    return model.generate(lib.tensor(PROMPT), max_new_tokens=3)


def class_loss(model, lib):
    return model(lib.tensor(PROMPT), labels=lib.tensor([1, 0])).loss


def output_keys(model, lib):
    return list(model(lib.tensor(PROMPT)).keys())


def tuple_output(model, lib):
    out = model(lib.tensor(PROMPT))
    return type(out).__name__, out[0]


def saved_weights(model, lib, folder):
    """The head and embedding names in the saved model.safetensors."""
    model.save_pretrained(str(folder))
    from safetensors import safe_open
    with safe_open(os.path.join(folder, "model.safetensors"), "np") as f:
        return sorted(name for name in f.keys() if "embed" in name or "lm_head" in name)


def resized_head(model, lib):
    lib.manual_seed(4)
    model.resize_token_embeddings(40)
    return model.lm_head.weight is model.model.embed_tokens.weight, model.lm_head.weight


def q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


def train_logits(model, lib):
    model.train()
    lib.manual_seed(5)
    return model(lib.tensor(PROMPT)).logits


def merged_q(model, lib):
    return model.merge_and_unload().model.layers[0].self_attn.q_proj.weight


def adapter_config(model, lib, folder):
    model.save_pretrained(str(folder))
    saved = json.loads((folder / "adapter_config.json").read_text())
    return {name: saved[name] for name in ("r", "lora_alpha", "lora_dropout", "use_rslora", "inference_mode")}


def peft_config_set(**settings):
    def change(model, lib):
        for name, value in settings.items():
            setattr(model.peft_config["default"], name, value)
    return change


MISTRAL = dict(head="MistralForCausalLM", config="MistralConfig")
QWEN2 = dict(head="Qwen2ForCausalLM", config="Qwen2Config", num_hidden_layers=2, use_sliding_window=True,
             sliding_window=3, max_window_layers=1)  # layer 0 full attention, layer 1 in a window of 3
QWEN3 = QWEN2 | dict(head="Qwen3ForCausalLM", config="Qwen3Config", head_dim=4)


def uncached_logits(model, lib):
    return model(lib.tensor(PROMPT), use_cache=False).logits


# id: (model kwargs for built(), LoRA on top?, the change, the call, CRASH or None)
FIXED_ROWS = {
    "vocab_size_bigger_loss": ({}, False, config_set(vocab_size=40), loss, CRASH),
    "vocab_size_smaller_loss": ({}, False, config_set(vocab_size=30), loss, CRASH),
    "vocab_size_loss_through_peft": ({}, True, config_set(vocab_size=30), loss, CRASH),
    "return_dict_false_forward": ({}, False, config_set(return_dict=False), logits, CRASH),
    "return_dict_false_loss": ({}, False, config_set(return_dict=False), loss, CRASH),
    "return_dict_false_generate": ({}, False, config_set(return_dict=False), generated, CRASH),
    "return_dict_false_through_peft": ({}, True, config_set(return_dict=False), logits, CRASH),
    "return_dict_false_sequence_classifier": (dict(head="LlamaForSequenceClassification"), False,
                                              config_set(return_dict=False), class_loss, CRASH),
    "return_dict_false_token_classifier": (dict(head="LlamaForTokenClassification"), False,
                                           config_set(return_dict=False), logits, CRASH),
    "use_return_dict_read": ({}, False, lambda model, lib: None, lambda model, lib: model.config.use_return_dict,
                             None),
    "use_return_dict_set": ({}, False, config_set(use_return_dict=False), output_keys, None),
    "tie_word_embeddings_true_after_save": ({}, False, config_set(tie_word_embeddings=True), saved_weights, None),
    "tie_word_embeddings_false_after_save": (dict(tie_word_embeddings=True), False,
                                             config_set(tie_word_embeddings=False), saved_weights, None),
    "tie_word_embeddings_true_after_resize": ({}, False, config_set(tie_word_embeddings=True), resized_head, None),
    "attn_implementation_unknown_name": ({}, False, config_set(_attn_implementation="bogus"), logits, None),
    "num_hidden_layers_fewer": (dict(num_hidden_layers=2), False, config_set(num_hidden_layers=1), logits, None),
    "num_hidden_layers_none": (dict(num_hidden_layers=2), False, config_set(num_hidden_layers=0), logits, None),
    "mistral_sliding_window_set": (MISTRAL | dict(sliding_window=None), False, config_set(sliding_window=3), logits,
                                   None),
    "mistral_sliding_window_changed": (MISTRAL | dict(sliding_window=3), False, config_set(sliding_window=5), logits,
                                       None),
    "mistral_sliding_window_removed": (MISTRAL | dict(sliding_window=3), False, config_set(sliding_window=None),
                                       logits, None),
    "qwen2_sliding_window_changed": (QWEN2, False, config_set(sliding_window=5), logits, None),
    "qwen3_layer_types_all_full": (QWEN3, False, config_set(layer_types=["full_attention"] * 2), logits, None),
    "qwen2_layer_types_all_sliding": (QWEN2, False, config_set(layer_types=["sliding_attention"] * 2), logits, None),
    # (with its cache on, transformers 5.25 fails first in DynamicCache: a TypeError on the None window)
    "qwen2_sliding_window_removed": (QWEN2, False, config_set(sliding_window=None), uncached_logits, None),
    "qwen2_layer_types_sliding_unbuilt": (QWEN2 | dict(use_sliding_window=False), False,
                                          config_set(layer_types=["sliding_attention"] * 2), uncached_logits, None),
}

ROWS = {
    "output_hidden_states": ({}, False, config_set(output_hidden_states=True), output_keys, None),
    "use_cache_false": ({}, False, config_set(use_cache=False), output_keys, None),
    "eager_output_attentions": ({}, False, config_set(_attn_implementation="eager", output_attentions=True),
                                output_keys, None),
    "output_attentions_under_sdpa": ({}, False, config_set(output_attentions=True), output_keys, None),
    "bare_model_return_dict_false": (dict(head="LlamaModel"), False, config_set(return_dict=False), tuple_output,
                                     None),
    "call_return_dict_false": ({}, False, lambda model, lib: None,
                               lambda model, lib: type(model(lib.tensor(PROMPT), return_dict=False)).__name__, None),
    "pad_token_id_embedding": ({}, False, config_set(pad_token_id=5),
                               lambda model, lib: model.model.embed_tokens.padding_idx, None),
    "pad_token_id_classifier": (dict(head="LlamaForSequenceClassification"), False, config_set(pad_token_id=30),
                                logits, None),
    "problem_type": (dict(head="LlamaForSequenceClassification"), False,
                     config_set(problem_type="multi_label_classification"),
                     lambda model, lib: model(lib.tensor(PROMPT), labels=lib.tensor([[1., 0.], [0., 1.]])).loss,
                     None),
    "rope_theta": ({}, False, config_set(rope_theta=500.0), logits, None),
    "rope_parameters_linear": ({}, False, config_set(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                      "rope_theta": 10000.0}), logits, None),
    "rope_dynamic_factor": (dict(max_position_embeddings=4, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                             "rope_theta": 10000.0}), False,
                            config_set(rope_parameters={"rope_type": "dynamic", "factor": 4.0,
                                                        "rope_theta": 10000.0}), logits, None),
    "rms_norm_eps": ({}, False, config_set(rms_norm_eps=0.5), logits, None),
    "hidden_act": ({}, False, config_set(hidden_act="gelu"), logits, None),
    "sizes": ({}, False, config_set(hidden_size=8, num_attention_heads=2, head_dim=8, num_key_value_heads=1,
                                    intermediate_size=4, num_hidden_layers=3), logits, None),
    "vocab_size_without_labels": ({}, False, config_set(vocab_size=30), generated, None),
    "tied_built_false_after_resize": (dict(tie_word_embeddings=True), False, config_set(tie_word_embeddings=False),
                                      resized_head, None),
    "generation_config_eos": ({}, False, lambda model, lib: setattr(model.generation_config, "eos_token_id", [3, 4]),
                              generated, None),
    "peft_config_lora_dropout": ({}, True, peft_config_set(lora_dropout=0.6), train_logits, None),
    "lora_layer_dropout_p": ({}, True, lambda model, lib: setattr(q_proj(model).lora_dropout["default"], "p", 0.6),
                             train_logits, None),
    "lora_layer_scaling_merge": ({}, True, lambda model, lib: q_proj(model).scaling.__setitem__("default", 7.0),
                                 merged_q, None),
    "peft_config_alpha_merge": ({}, True, peft_config_set(lora_alpha=64), merged_q, None),
    "peft_config_use_rslora": ({}, True, peft_config_set(use_rslora=True), logits, None),
    "peft_config_saved": ({}, True, peft_config_set(r=8, lora_alpha=64, use_rslora=True), adapter_config, None),
}


def outcome(row, lib, folder):
    """What the row's call gives after the change on lib's stack: ("value", ...) or ("raises", type, message)."""
    options, lora, change, call, _ = row
    model = built(lib, **options)
    model = with_lora(lib, model) if lora else model
    arguments = (folder / lib.__name__,) if "folder" in call.__code__.co_varnames else ()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            change(model, lib)
            return ("value", plain(call(model, lib, *arguments)))
    except Exception as error:  # noqa: BLE001 (the type is what is compared)
        return ("raises", type(error), str(error))


def plain(value):
    """Tensors as float64 arrays, tuples as lists: what the two stacks' answers are compared by."""
    if hasattr(value, "detach"):
        return np.asarray(value.detach().numpy(), dtype=np.float64)
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    return value


def assert_same(theirs, ours):
    if isinstance(theirs, np.ndarray):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)  # (float32 products summed in another order)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(theirs, ours):
            assert_same(a, b)
    else:
        assert ours == theirs


def check_row(row, tmp_path):
    theirs, ours = outcome(row, torch, tmp_path), outcome(row, ml, tmp_path)
    assert ours[0] == theirs[0], (theirs, ours)
    if theirs[0] == "value":
        assert_same(theirs[1], ours[1])
        return
    assert ours[1] is theirs[1], (theirs, ours)
    setting = row[2].__code__.co_freevars and row[2].__closure__[0].cell_contents
    if row[4] == CRASH:  # transformers' message is about a tuple or a shape: minilora's names the setting
        assert any(f"config.{name}" in ours[2] and name not in theirs[2] for name in setting), (theirs, ours)
    else:
        assert ours[2] == theirs[2]


@pytest.mark.parametrize("row", FIXED_ROWS.values(), ids=FIXED_ROWS.keys())
def test_settings_changed_after_building(row, tmp_path):
    check_row(row, tmp_path)


def test_settings_that_already_matched(tmp_path):
    """The sweep's rows that matched before this round: kept so that a change to one is seen."""
    for name, row in ROWS.items():
        try:
            check_row(row, tmp_path / name)
        except AssertionError as error:
            raise AssertionError(f"row {name}: {error}") from error


# ----------------------------------------------------------------------------------------------------------
# The Trainer's data: when a dataset hears the epoch, and datasets' streams (the datasets library is in the
# [interop] extra now: 5.2 with pyarrow 26 and dill 0.4.1 installs and fingerprints on this machine)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def trained(lib, base, folder, dataset, eval_dataset=None, **arguments):
    """(the first rows' lengths of each batch the collator saw, the logged losses) of a 2-row-batch run."""
    seen, collate = [], collator(torch.tensor if lib is transformers else ml.tensor)

    def recording(features):
        seen.append([len(f["input_ids"]) for f in features])
        return collate(features)
    model = (transformers.LlamaForCausalLM if lib is transformers else models.LlamaForCausalLM).from_pretrained(
        str(base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = lib.TrainingArguments(output_dir=str(folder), report_to="none", save_strategy="no", disable_tqdm=True,
                                     per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-2,
                                     **arguments)
        trainer = lib.Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                              data_collator=recording)
        trainer.train()
    return seen, [(e["step"], round(e["loss"], 4)) for e in trainer.state.log_history if "loss" in e]


class EpochRecording(list):
    """Rows that note each set_epoch they are told (as a dataset drawing by the epoch would read it)."""

    def __init__(self, rows):
        super().__init__(rows)
        self.told = []

    def set_epoch(self, epoch):
        self.told.append(epoch)


def test_the_datasets_are_told_the_epoch_as_accelerate_tells_them(base, tmp_path):
    """accelerate's DataLoaderShard/Dispatcher.set_epoch reaches the dataset's own set_epoch (after the
    sampler's), once from the Trainer as an epoch starts and once from the loader as its pass starts; an
    evaluation's new loader tells its dataset 0. minilora told the sampler only."""
    told = []
    for lib in (transformers, ml_trainer):
        train_rows, eval_rows = EpochRecording(examples(4)), EpochRecording(examples(3))
        trained(lib, base, tmp_path / lib.__name__, train_rows, eval_rows, max_steps=3, eval_strategy="steps",
                eval_steps=2)
        told.append((train_rows.told, eval_rows.told))
    assert told[1] == told[0] == ([0, 0, 1, 1], [0, 0])  # (evaluations at step 2 and at the last, 3)


class TorchStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(7))


def test_a_torch_iterable_dataset_is_a_stream_to_the_dataloader():
    """torch's DataLoader reads a torch.utils.data.IterableDataset (datasets' IterableDataset derives from it) as a
    stream, without a sampler; minilora's asked it for a length (TypeError)."""
    answers = [[b.tolist() for b in lib.utils.data.DataLoader(TorchStream(), batch_size=3)] for lib in (torch, ml)]
    assert answers[1] == answers[0] == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_datasets_stream_trains_as_transformers(base, tmp_path):
    """A datasets.IterableDataset (a shuffle buffer reseeded by each epoch) over two epochs and a half: its unused
    "text" column dropped in the collator (not by remove_columns), the next epoch's order from set_epoch.
    minilora's DataLoader took it for a map-style dataset and failed on its length."""
    datasets = pytest.importorskip("datasets")
    runs = [trained(lib, base, tmp_path / lib.__name__,
                    datasets.Dataset.from_list(examples(8)).to_iterable_dataset().shuffle(seed=1, buffer_size=4),
                    max_steps=9) for lib in (transformers, ml_trainer)]
    assert runs[1] == runs[0]


# ----------------------------------------------------------------------------------------------------------
# torch.optim.Adafactor's norms and means in torch's order
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", [{}, dict(lr=0.5, weight_decay=0.1), dict(beta2_decay=-0.5, eps=(1e-3, 1e-3)),
                                     dict(lr=0.1, d=2.0, maximize=True)])
def test_adafactor_steps_bit_for_bit_as_torch(dtype, options):
    """torch's Adafactor takes torch.norm of the weights, of the update, and of the gradient's rows and columns
    (its mean squares), and row_var's mean: minilora summed them in NumPy's pairwise order, 8 to 1119 float32 ulps
    off after three steps; now they go through the norm kernel's order (ops.reduce.p_norm) and the mean
    through torch's sum (rows of any width: the vectorized norm's tail is fused as torch's build fuses it, 25aebc2).
    torch's foreach=True path, off by default on the CPU, has an order of its own (not modelled)."""
    g = np.random.default_rng(0)
    weights = [g.standard_normal(shape).astype(dtype) for shape in ((16, 40), (129,), (3, 7, 9), (5, 1))]
    grads = [[g.standard_normal(w.shape).astype(dtype) for w in weights] for _ in range(3)]
    params = [[lib.nn.Parameter(lib.tensor(w)) for w in weights] for lib in (torch, ml)]
    optimizers = [lib.optim.Adafactor(group, **options) for lib, group in zip((torch, ml), params)]
    for step in grads:
        for lib, group, optimizer in zip((torch, ml), params, optimizers):
            for p, grad in zip(group, step):
                p.grad = lib.tensor(grad)
            optimizer.step()
    for theirs, ours in zip(*params):
        np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
