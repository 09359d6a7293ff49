"""Round 27: transformers' calls in the spellings its users write, beside transformers itself (tiny random Llama
checkpoints saved by transformers' save_pretrained). What the sweep found differed:

* The config's ``dtype`` (config.json's ``dtype``, ``torch_dtype`` in older files) was dropped on reading:
  ``AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bf16_folder))`` built a float32 model where
  transformers builds a bfloat16 one, ``from_pretrained(folder, config=LlamaConfig(dtype="float16"))`` loaded
  the file's dtype, and ``config.dtype`` was an AttributeError.
* ``from_pretrained(folder, config=config)`` kept the caller's config object as the model's (transformers copies
  it): loading a second model with ``attn_implementation="eager"`` switched the first one's attention too.
* transformers' own logits processors, stopping criteria and a transformers ``assistant_model`` failed inside
  torch on minilora's Tensors ("pad(): argument 'input' must be Tensor, not Tensor"): refused by name now.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora.models import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

SHAPE = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0)


def _theirs_random(dtype=None):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return model if dtype is None else model.to(dtype)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A float32 and a bfloat16 checkpoint, each written by transformers (config.json says its dtype)."""
    root = tmp_path_factory.mktemp("r27")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _theirs_random().save_pretrained(root / "f32")
        _theirs_random(torch.bfloat16).save_pretrained(root / "bf16")
    return {"float32": str(root / "f32"), "bfloat16": str(root / "bf16")}


def _name(dtype):
    """A dtype's name, torch's or minilora's ("bfloat16"); None stays None."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _load(lib, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib is torch:
            return transformers.LlamaForCausalLM.from_pretrained(*args, **kwargs).eval()
        return LlamaForCausalLM.from_pretrained(*args, **kwargs)


# ==================================================================================================
# config.dtype
# ==================================================================================================
@pytest.mark.parametrize("spelling", [{}, {"dtype": "bfloat16"}, {"torch_dtype": "float16"}, {"dtype": torch.float16},
                                      {"dtype": "float32", "torch_dtype": "bfloat16"}])
def test_from_config_builds_in_the_configs_dtype(spelling):
    shape = {k: v for k, v in SHAPE.items() if k != "pad_token_id"}
    theirs = transformers.LlamaConfig(**shape, **spelling)
    ours = LlamaConfig(**shape, **spelling)
    assert _name(ours.dtype) == _name(theirs.dtype)
    assert (ours.to_dict().get("dtype")) == theirs.to_dict().get("dtype")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = transformers.AutoModelForCausalLM.from_config(theirs)
        overridden = transformers.AutoModelForCausalLM.from_config(theirs, dtype=torch.float64)
    assert _name(AutoModelForCausalLM.from_config(ours).dtype) == _name(built.dtype)
    assert _name(AutoModelForCausalLM.from_config(ours, dtype="float64").dtype) == _name(overridden.dtype)
    # the model's own constructor ignores it, as transformers' does
    assert _name(LlamaForCausalLM(ours).dtype) == _name(transformers.LlamaForCausalLM(theirs).dtype) == "float32"


def test_a_config_read_from_a_bfloat16_checkpoint_builds_a_bfloat16_model(folders):
    theirs = transformers.AutoConfig.from_pretrained(folders["bfloat16"])
    ours = AutoConfig.from_pretrained(folders["bfloat16"])
    assert _name(ours.dtype) == _name(theirs.dtype) == "bfloat16"
    assert _name(AutoModelForCausalLM.from_config(ours).dtype) == \
        _name(transformers.AutoModelForCausalLM.from_config(theirs).dtype) == "bfloat16"


@pytest.mark.parametrize("folder", ["float32", "bfloat16"])
@pytest.mark.parametrize("options", [{}, {"dtype": "float32"}, {"dtype": "float16"}, {"torch_dtype": "bfloat16"},
                                     {"config_dtype": "float16"}, {"config_dtype": None},
                                     {"config_dtype": "float16", "dtype": "float32"}])
def test_from_pretrained_dtype_and_config_dtype_as_transformers(folders, folder, options):
    """The model's dtype and its config.dtype after loading; ``config=`` with a dtype decides "auto"."""
    options = dict(options)
    config_dtype = options.pop("config_dtype", "absent")
    shape = {k: v for k, v in SHAPE.items()}
    results = []
    for lib, config_class in ((torch, transformers.LlamaConfig), (ml, LlamaConfig)):
        extra = {} if config_dtype == "absent" else {"config": config_class(**shape, dtype=config_dtype)}
        model = _load(lib, folders[folder], **options, **extra)
        results.append((_name(model.dtype), _name(model.config.dtype)))
        if extra:  # the caller's config is left as it was
            assert _name(extra["config"].dtype) == config_dtype
    assert results[0] == results[1]


def test_config_dtype_set_and_updated_as_transformers():
    for lib_config in (transformers.LlamaConfig, LlamaConfig):
        config = lib_config(**SHAPE)
        config.torch_dtype = torch.bfloat16  # transformers' older name sets dtype
        assert _name(config.dtype) == "bfloat16"
        config.update({"torch_dtype": "float16"})
        assert _name(config.dtype) == "float16"
    assert LlamaConfig(**LlamaConfig(**SHAPE, dtype="bfloat16").to_dict()).dtype == ml.bfloat16  # the copy idiom
    with pytest.raises(TypeError, match="its dtype 'float17' is not a dtype"):
        LlamaConfig(**SHAPE, dtype="float17")


@pytest.mark.parametrize("spelling", [{}, {"num_labels": 3}, {"num_labels": 1}, {"id2label": {0: "neg", 1: "neu", 2: "pos"}},
                                      {"id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}])
def test_task_head_attributes_read_as_transformers(folders, spelling):
    """config.num_labels / id2label / label2id / problem_type where the config leaves them out: transformers'
    defaults (num_labels was an AttributeError, where transformers reads 2 or the size of id2label)."""
    configs = [transformers.LlamaConfig(**SHAPE, **spelling), LlamaConfig(**SHAPE, **spelling)]
    if not spelling:
        configs += [_load(torch, folders["float32"]).config, _load(ml, folders["float32"]).config]
    for name in ("num_labels", "id2label", "label2id", "problem_type"):
        values = [getattr(config, name) for config in configs]
        assert all(value == values[0] for value in values), (name, values)


# ==================================================================================================
# from_pretrained(config=...): a copy
# ==================================================================================================
def test_from_pretrained_copies_the_config_it_is_given(folders):
    """Two models loaded with one config object: the second's attn_implementation="eager" left the first on sdpa
    in transformers, and switched it in minilora (the padding rows before a left-padded prompt then differ)."""
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    logits = []
    for lib, config_class in ((torch, transformers.LlamaConfig), (ml, LlamaConfig)):
        config = config_class(**SHAPE)
        first = _load(lib, folders["float32"], config=config)
        _load(lib, folders["float32"], config=config, attn_implementation="eager")
        assert first.config is not config
        assert first.config._attn_implementation == "sdpa"
        with torch.no_grad():
            out = first(ids, attention_mask=mask) if lib is torch else first(ml.tensor(ids.numpy()),
                                                                              attention_mask=ml.tensor(mask.numpy()))
        logits.append(out.logits.detach().numpy() if lib is torch else out.logits.numpy())
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-4, atol=1e-5)


# ==================================================================================================
# transformers' torch objects handed to generate
# ==================================================================================================
def _processors_and_criteria():
    from transformers import (EosTokenCriteria, LogitsProcessorList, MaxLengthCriteria, MinLengthLogitsProcessor,
                              RepetitionPenaltyLogitsProcessor, StoppingCriteriaList, TopKLogitsWarper)
    return [("logits_processor", LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.5)]), "repetition_penalty"),
            ("logits_processor", [MinLengthLogitsProcessor(8, eos_token_id=[7])], "min_length"),
            ("logits_processor", LogitsProcessorList([TopKLogitsWarper(3)]), "top_k"),
            ("stopping_criteria", StoppingCriteriaList([MaxLengthCriteria(7)]), "max_length"),
            ("stopping_criteria", [EosTokenCriteria(eos_token_id=7)], "eos_token_id")]


def test_transformers_processors_and_criteria_are_refused_by_name_a_users_own_runs(folders):
    """transformers runs its own processors and criteria; minilora names the generate option each stands for. A
    class of the user's derived from transformers' base class computes on what it is given: it still runs."""
    ids = torch.tensor([[3, 4, 5, 6, 8]])
    theirs, ours = _load(torch, folders["float32"]), _load(ml, folders["float32"])
    for argument, value, option in _processors_and_criteria():
        with torch.no_grad():
            theirs.generate(ids, max_new_tokens=3, **{argument: value})
        with pytest.raises(TypeError, match=f"generate\\({argument}=.*computes on torch tensors") as info:
            ours.generate(ml.tensor(ids.numpy()), max_new_tokens=3, **{argument: value})
        assert type(value[0]).__name__ in str(info.value) and f"{option}=" in str(info.value)

    class Favour7(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, 7] = 100.0
            return scores
    with torch.no_grad():
        expected = theirs.generate(ids, max_new_tokens=3, logits_processor=[Favour7()])
    got = ours.generate(ml.tensor(ids.numpy()), max_new_tokens=3, logits_processor=[Favour7()])
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_a_transformers_assistant_model_is_refused_by_name(folders):
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    theirs = _load(torch, folders["float32"])
    with pytest.raises(TypeError, match="assistant is a torch model"):
        _load(ml, folders["float32"]).generate(ml.tensor(ids.numpy()), assistant_model=theirs, max_new_tokens=3)


# ==================================================================================================
# RoPE frequencies of every rope_type: transformers' float32 steps
# ==================================================================================================
LLAMA31_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)
ROPES = {"linear": dict(rope_scaling=dict(rope_type="linear", factor=3.0)),
         "llama3.1": dict(rope_theta=500000.0, rope_scaling=LLAMA31_ROPE),
         "llama3": dict(rope_scaling=dict(LLAMA31_ROPE, factor=2.7, high_freq_factor=3.5)),
         "dynamic": dict(rope_scaling=dict(rope_type="dynamic", factor=3.0)),
         "yarn": dict(rope_scaling=dict(rope_type="yarn", factor=3.0, original_max_position_embeddings=256)),
         "yarn_betas": dict(rope_scaling=dict(rope_type="yarn", factor=4.0, beta_fast=16.0, beta_slow=2.0,
                                              truncate=False, original_max_position_embeddings=256)),
         "longrope": dict(rope_scaling=dict(rope_type="longrope", short_factor=list(np.linspace(1, 1.7, 32)),
                                            long_factor=list(np.linspace(1, 3.3, 32)),
                                            original_max_position_embeddings=256))}


@pytest.mark.parametrize("rope", sorted(ROPES))
def test_rope_frequencies_are_transformers_float32_bits(rope):
    """The inv_freq buffer, when made and after a sequence past max_position_embeddings (dynamic grows, longrope
    takes its long factors): transformers' float32 bits. Computed in float64 and rounded, a third of a scaled
    type's entries were an ulp apart, which moved thousands of a bfloat16 model's cos/sin entries."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as TheirRotary
    from minilora.nn.llama import LlamaRotaryEmbedding
    shape = dict(vocab_size=10, hidden_size=128, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=1024, **ROPES[rope])
    theirs, ours = TheirRotary(transformers.LlamaConfig(**shape)), LlamaRotaryEmbedding(LlamaConfig(**shape))
    for positions in (np.arange(8), np.arange(3000, 3008)):  # (the float32 cos and sin: MKL's, see the class)
        with torch.no_grad():
            theirs(torch.zeros(1), torch.tensor(positions)[None])
        ours(positions[None], np.float32)
        np.testing.assert_array_equal(ours.inv_freq.numpy().view(np.int32), theirs.inv_freq.numpy().view(np.int32))


def test_a_bfloat16_llama31_model_far_into_its_context(tmp_path):
    """Llama 3.1's RoPE in a bfloat16 model: the logits at positions 1000 and 20000 are transformers' bits (38% and
    75% of them differed)."""
    shape = dict(SHAPE, hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                 max_position_embeddings=131072, rope_theta=500000.0, rope_scaling=LLAMA31_ROPE)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).save_pretrained(tmp_path)
    theirs = _load(torch, tmp_path, dtype=torch.bfloat16)
    ours = _load(ml, tmp_path, dtype="bfloat16")
    ids = torch.randint(3, 50, (1, 16), generator=torch.Generator().manual_seed(0))
    for start in (1000, 20000):
        positions = torch.arange(start, start + 16)[None]
        with torch.no_grad():
            expected = theirs(ids, position_ids=positions).logits.float().numpy()
        got = ours(ml.tensor(ids.numpy()), position_ids=ml.tensor(positions.numpy())).logits.float().numpy()
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("options", [({"max_new_tokens": 3, "do_sample": True, "top_k": 4, "eos_token_id": [2, 7]}, {}),
                                     ({"temperature": 0.5}, {"do_sample": True}), ({"my_note": 1}, {"max_length": 9})])
def test_generation_config_from_dict_as_transformers(folders, options):
    """GenerationConfig.from_dict (an AttributeError before), and generate with what it makes."""
    from minilora.nn.generation import GenerationConfig
    config_dict, kwargs = options
    theirs = transformers.GenerationConfig.from_dict(config_dict, **kwargs)
    ours, unused = GenerationConfig.from_dict(config_dict, return_unused_kwargs=True, **kwargs)
    assert unused == transformers.GenerationConfig.from_dict(config_dict, return_unused_kwargs=True, **kwargs)[1]
    written = [{k: v for k, v in c.to_diff_dict().items() if k != "transformers_version"} for c in (theirs, ours)]
    assert written[0] == written[1]
    ids = torch.tensor([[3, 4, 5, 6, 8]])
    torch.manual_seed(0)
    with torch.no_grad():
        expected = _load(torch, folders["float32"]).generate(ids, theirs, max_new_tokens=3)
    ml.manual_seed(0)
    got = _load(ml, folders["float32"]).generate(ml.tensor(ids.numpy()), ours, max_new_tokens=3)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_cache_layers_read_as_transformers(folders):
    """``out.past_key_values.layers[i].keys / .values``, transformers 5's way to look into a cache (an
    AttributeError before): the same shapes and values."""
    ids = torch.tensor([[3, 4, 5, 6, 8], [9, 8, 7, 6, 5]])
    with torch.no_grad():
        theirs = _load(torch, folders["float32"])(ids, use_cache=True).past_key_values
    ours = _load(ml, folders["float32"])(ml.tensor(ids.numpy()), use_cache=True).past_key_values
    assert len(ours.layers) == len(theirs.layers) == SHAPE["num_hidden_layers"]
    for our_layer, their_layer in zip(ours.layers, theirs.layers):
        for name in ("keys", "values"):
            np.testing.assert_allclose(getattr(our_layer, name).numpy(), getattr(their_layer, name).numpy(),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{"ignore_index": 5}, {"ignore_index": 5, "num_items_in_batch": 4},
                                     {"ignore_index": -1}])
def test_forward_ignore_index_reaches_the_loss_as_transformers(folders, options):
    """``model(ids, labels=labels, ignore_index=5)``: transformers hands the keyword to its loss function (5 is
    skipped, and pads the shifted labels); minilora refused it (TypeError)."""
    ids = torch.tensor([[3, 4, 5, 6, 8, 9], [9, 8, 7, 6, 5, 4]])
    labels = ids.clone()
    labels[0, :3] = 5
    with torch.no_grad():
        expected = _load(torch, folders["float32"])(ids, labels=labels, **options).loss
    got = _load(ml, folders["float32"])(ml.tensor(ids.numpy()), labels=ml.tensor(labels.numpy()), **options).loss
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)
