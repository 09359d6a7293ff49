"""PEFT 0.21's data-driven LoRA initialisations and variants that minilora refused by name, run once per library on
the same weights (transformers' tiny Llama copied into minilora's, the same seeds and batches):

* EVA (``init_lora_weights="eva"``, ``EvaConfig``, ``initialize_lora_eva_weights`` / ``get_eva_state_dict``):
  the ranks PEFT redistributes, the alphas it rescales, the target list it rewrites, lora_A (the layers' input
  components, to the LAPACKs' rounding), the generator state after, adapter_config.json, and PEFT loading the
  folder minilora saves;
* torch's unstable descending argsort, which decides between the tied variance ratios of layers fed one input.

Skipped when torch / peft / transformers are not installed."""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from minilora.lora.eva import _torch_argsort_descending  # noqa: E402

from test_hf_offpath_r10 import TINY, build  # noqa: E402

LIBRARIES = ((torch, peft), (ml, ml_peft))
# lora_A holds singular vectors of float32 layer inputs (the first SVD in float32, later ones in float64 on the
# float32 means): torch's MKL and NumPy's OpenBLAS round the products and the LAPACK steps differently, ~1e-6 seen
COMPONENTS_ATOL = 2e-5


def llama_pair():
    return build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))


def token_batches(lib, masked=True):
    """Six batches of 4 x 12 token ids; one row padded, and (``masked``) one row's first labels ignored."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(6):
        ids = rng.integers(0, TINY["vocab_size"], (4, 12))
        batch = {"input_ids": lib.tensor(ids)}
        if masked:
            mask = np.ones_like(ids)
            mask[0, 9:] = 0
            labels = ids.copy()
            labels[1, :3] = -100
            batch.update(attention_mask=lib.tensor(mask), labels=lib.tensor(labels))
        batches.append(batch)
    return batches


def states(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def assert_same_adapters(theirs, ours):
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == value.shape, key
        atol = COMPONENTS_ATOL if "lora_A" in key else 0
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=atol, err_msg=key)


def saved_config(model, path):
    model.save_pretrained(str(path))
    with open(path / "adapter_config.json") as f:
        return json.load(f)


# ==================================================================================================
# EVA
# ==================================================================================================
EVA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def test_eva_redistributes_ranks_and_initialises_lora_a_as_peft(tmp_path):
    """Before: ValueError (init_lora_weights='eva' not implemented). PEFT's docs recipe: get_peft_model with
    init_lora_weights='eva', then initialize_lora_eva_weights(model, dataloader)."""
    models_, draws, files = {}, {}, {}
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        config = lib_peft.LoraConfig(r=4, lora_alpha=8, target_modules=EVA_TARGETS, init_lora_weights="eva",
                                     eva_config=lib_peft.EvaConfig(rho=2.0, tau=0.9))
        lib.manual_seed(1)
        with pytest.warns(UserWarning, match="low_cpu_mem_usage=False"):
            model = lib_peft.get_peft_model(base, config)
        lib_peft.initialize_lora_eva_weights(model, token_batches(lib), show_progress_bar=False)
        draws[lib.__name__] = lib.rand(3).numpy()  # the same generator state after: the same draws on the way
        models_[lib.__name__] = model
        files[lib.__name__] = saved_config(model, tmp_path / lib.__name__)
    theirs, ours = models_["torch"], models_["minilora"]
    config = ours.peft_config["default"]
    assert config.rank_pattern == theirs.peft_config["default"].rank_pattern != {}  # the ranks moved
    assert config.alpha_pattern == theirs.peft_config["default"].alpha_pattern != {}
    assert config.target_modules == theirs.peft_config["default"].target_modules
    assert_same_adapters(states(theirs), states(ours))
    np.testing.assert_array_equal(draws["minilora"], draws["torch"])
    for key in ("eva_config", "rank_pattern", "alpha_pattern", "target_modules", "init_lora_weights", "r"):
        assert files["minilora"][key] == files["torch"][key], key
    # PEFT loads minilora's folder: the layers get EVA's ranks
    reloaded = peft.PeftModel.from_pretrained(llama_pair()[0], str(tmp_path / "minilora"))
    assert_same_adapters(states(theirs), states(reloaded))


def test_eva_state_dict_whitened_then_loaded_as_peft():
    """get_eva_state_dict on the plain model (whiten, rho=1: no redistribution), then initialize_lora_eva_weights
    with it: PEFT's components (whitening divides a shared input's components once per layer that shares them);
    its keys are the base model's names, which PEFT's loader looks up under the PeftModel's, so every layer falls
    back to init_lora_weights=True with PEFT's warning -- as there."""
    results = {}
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        config = lib_peft.LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                                     init_lora_weights="eva",
                                     eva_config=lib_peft.EvaConfig(rho=1.0, tau=0.95, whiten=True))
        lib.manual_seed(1)
        eva_state = lib_peft.get_eva_state_dict(base, token_batches(lib, masked=False), config,
                                                show_progress_bar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lib_peft.get_peft_model(base, config, low_cpu_mem_usage=True)
        with pytest.warns(UserWarning, match="not found in the eva state_dict"):
            lib_peft.initialize_lora_eva_weights(model, eva_state_dict=eva_state, show_progress_bar=False)
        results[lib.__name__] = {k: v.numpy() for k, v in eva_state.items()}, model
    (theirs_eva, theirs), (ours_eva, ours) = results["torch"], results["minilora"]
    assert list(ours_eva) == list(theirs_eva)
    for key, value in theirs_eva.items():
        np.testing.assert_allclose(ours_eva[key], value, rtol=1e-5, atol=COMPONENTS_ATOL, err_msg=key)
    assert_same_adapters(states(theirs), states(ours))


def test_eva_config_checks_and_warnings_as_peft():
    for lib_peft in (peft, ml_peft):
        with pytest.raises(ValueError, match="`rho` must be >= 1.0"):
            lib_peft.EvaConfig(rho=0.5)
        with pytest.raises(ValueError, match="`tau` must be between 0.0 and 1.0."):
            lib_peft.EvaConfig(tau=1.5)
        with pytest.warns(UserWarning, match="Using default EVA config"):
            assert lib_peft.LoraConfig(init_lora_weights="eva").eva_config == lib_peft.EvaConfig()
        with pytest.warns(UserWarning, match="will be ignored when `init_lora_weights` is not 'eva'"):
            lib_peft.LoraConfig(eva_config=lib_peft.EvaConfig())
        loaded = lib_peft.LoraConfig(init_lora_weights="eva", eva_config={"rho": 1.5, "whiten": True})
        assert loaded.eva_config == lib_peft.EvaConfig(rho=1.5, whiten=True)  # adapter_config.json's dict


def test_eva_refusals_in_pefts_words():
    _, base = llama_pair()
    plain = ml_peft.get_peft_model(base, ml_peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="can only be used with `init_lora_weights='eva'`"):
        ml_peft.initialize_lora_eva_weights(plain, token_batches(ml))
    with pytest.raises(ValueError, match="model must be a PeftModel"):
        ml_peft.initialize_lora_eva_weights(models.LlamaForCausalLM(models.LlamaConfig(**TINY)), [])
    with pytest.raises(ValueError, match="peft_config is required"):
        ml_peft.get_eva_state_dict(llama_pair()[1], token_batches(ml))
    with pytest.raises(ValueError, match="dataloader is empty"):
        ml_peft.get_eva_state_dict(llama_pair()[1], [], ml_peft.LoraConfig(init_lora_weights="eva",
                                                                           eva_config=ml_peft.EvaConfig()))


def test_descending_argsort_breaks_ties_as_torch():
    """EVA's rank budget goes to the largest variance ratios; layers fed one input (q, k, v) tie exactly, and
    which of them gets a rank is torch's std::sort order (neither stable nor NumPy's)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        values = rng.integers(0, rng.integers(1, 12), rng.integers(1, 120)).astype(np.float32)
        expected = torch.tensor(values).argsort(descending=True).tolist()
        assert _torch_argsort_descending(values) == expected


# ==================================================================================================
# CorDA
# ==================================================================================================
from peft.tuners.lora.config import CordaConfig as PeftCordaConfig  # noqa: E402  (PEFT's import paths for CorDA)
from peft.tuners.lora.corda import preprocess_corda as peft_preprocess_corda  # noqa: E402

from minilora.lora.config import CordaConfig  # noqa: E402
from minilora.lora.corda import preprocess_corda  # noqa: E402

CORDA = {torch: (PeftCordaConfig, peft_preprocess_corda), ml: (CordaConfig, preprocess_corda)}
CORDA_TARGETS = ["q_proj", "v_proj", "down_proj"]


def corda_model(lib, lib_peft, base, method, **corda_options):
    """PEFT's CorDA recipe: preprocess_corda with a run over samples (one sequence a call), then get_peft_model."""
    config_class, preprocess = CORDA[lib]
    config = lib_peft.LoraConfig(r=4, lora_alpha=8, target_modules=CORDA_TARGETS, init_lora_weights="corda",
                                 corda_config=config_class(corda_method=method, **corda_options))
    samples = [np.random.default_rng(i).integers(0, TINY["vocab_size"], (1, 24)) for i in range(4)]
    with lib.no_grad():
        preprocess(base, config, run_model=lambda: [base(lib.tensor(ids)) for ids in samples])
    return lib_peft.get_peft_model(base, config)


def assert_same_decomposition(theirs, ours):
    """Base residuals and B A to float32 rounding; A and B up to the sign of each singular pair (the LAPACKs
    may pick either)."""
    for key, value in theirs.items():
        if "base_layer.weight" in key:
            np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-6, err_msg=key)
        if "lora_A" in key:
            B_key = key.replace("lora_A", "lora_B")
            A, B, our_A, our_B = value, theirs[B_key], ours[key], ours[B_key]
            np.testing.assert_allclose(our_B @ our_A, B @ A, rtol=0, atol=1e-6, err_msg=key)
            signs = np.sign((A * our_A).sum(axis=1))
            np.testing.assert_allclose(our_A * signs[:, None], A, rtol=0, atol=2e-5, err_msg=key)
            np.testing.assert_allclose(our_B * signs, B, rtol=0, atol=2e-5, err_msg=B_key)


@pytest.mark.parametrize("method", ["ipm", "kpm"])
def test_corda_decomposes_w_times_the_input_covariance_as_peft(method, tmp_path):
    """Before: ValueError (init_lora_weights='corda' not implemented). The r largest ('ipm') or smallest ('kpm')
    singular directions of W C go to the adapter, the base keeps the rest: PEFT's numbers and config file."""
    built = [corda_model(lib, lib_peft, base, method) for (lib, lib_peft), base in zip(LIBRARIES, llama_pair())]
    theirs, ours = (states(model) for model in built)
    assert sorted(ours) == sorted(theirs)
    assert_same_decomposition(theirs, ours)
    assert not hasattr(built[1].base_model.model.model.layers[0].self_attn.q_proj.base_layer, "eigens")
    files = [saved_config(model, tmp_path / str(i)) for i, model in enumerate(built)]
    for key in ("corda_config", "init_lora_weights", "r", "lora_alpha"):
        assert files[1][key] == files[0][key], key


def test_corda_cache_file_and_conversion_to_plain_lora_loaded_by_peft(tmp_path):
    """cache_file is written, then read instead of running the model; the adapter saved with
    path_initial_model_for_weight_conversion is a plain LoRA that PEFT runs on the original base."""
    reference, base = llama_pair()
    cache = str(tmp_path / "cache" / "eigens.pt")
    first = corda_model(ml, ml_peft, base, "ipm", cache_file=cache)
    _, again = llama_pair()
    config = ml_peft.LoraConfig(r=4, lora_alpha=8, target_modules=CORDA_TARGETS, init_lora_weights="corda",
                                corda_config=CordaConfig(cache_file=cache))
    preprocess_corda(again, config)  # no run_model: the cache holds the eigens
    second = ml_peft.get_peft_model(again, config)
    for key, value in states(first).items():
        np.testing.assert_array_equal(states(second)[key], value, err_msg=key)
    first.save_pretrained(str(tmp_path / "initial"))
    with ml.no_grad():  # "training": the factors move
        for name, param in first.named_parameters():
            if "lora_" in name:
                param.add_(0.01 * ml.randn(param.shape))
    first.save_pretrained(str(tmp_path / "converted"),
                          path_initial_model_for_weight_conversion=str(tmp_path / "initial"))
    with open(tmp_path / "converted" / "adapter_config.json") as f:
        assert json.load(f)["r"] == 8
    loaded = peft.PeftModel.from_pretrained(reference, str(tmp_path / "converted"))  # the original weights
    ids = [[1, 5, 9, 13, 7, 3, 40, 22]]
    with torch.no_grad():
        expected = loaded(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(first(ml.tensor(ids)).logits.numpy(), expected, rtol=0, atol=1e-5)


def test_corda_refusals_in_pefts_words():
    with pytest.warns(UserWarning, match="Using default CorDA config"):
        assert ml_peft.LoraConfig(init_lora_weights="corda").corda_config == CordaConfig()
    _, base = llama_pair()
    config = ml_peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights="corda",
                                corda_config=CordaConfig())
    with pytest.raises(ValueError, match="`eigens` attribute not found for layer, please run `preprocess_corda`"):
        ml_peft.get_peft_model(base, config)
    with pytest.raises(ValueError, match="run_model must be specified"):
        preprocess_corda(llama_pair()[1], config)
    double = llama_pair()[1].double()
    preprocess_corda(double, config, run_model=lambda: double(ml.tensor([[1, 2, 3, 4]])))
    with pytest.raises(TypeError, match="Please initialize CorDA under float32, float16, or bfloat16"):
        ml_peft.get_peft_model(double, config)


# ==================================================================================================
# QALoRA and LoftQ: PEFT's quantized-layer methods on float layers
# ==================================================================================================
def test_qalora_on_float_layers_trains_plain_lora_as_peft(tmp_path):
    """Before: NotImplementedError (use_qalora). PEFT's QALoRA variant is GPTQ's layer only: on a float Linear it
    builds plain LoRA and writes the fields, so the same seed gives the same adapter and file."""
    built = []
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        lib.manual_seed(1)
        config = lib_peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_qalora=True, qalora_group_size=8,
                                     init_lora_weights=False)
        built.append(lib_peft.get_peft_model(base, config))
    theirs, ours = built
    assert_same_adapters(states(theirs), states(ours))
    saved = saved_config(ours, tmp_path / "ours")
    assert (saved["use_qalora"], saved["qalora_group_size"]) == (True, 8) == \
        tuple(saved_config(theirs, tmp_path / "theirs")[k] for k in ("use_qalora", "qalora_group_size"))


def test_loftq_is_refused_naming_bitsandbytes():
    """PEFT's LoftQ quantizes with bitsandbytes on a CUDA device (PEFT without it: 'bitsandbytes is not
    available'); minilora names it at the config. A loftq_config without 'loftq' is dropped with PEFT's warning."""
    with pytest.raises(ValueError, match="init_lora_weights='loftq'.*bitsandbytes"):
        ml_peft.LoraConfig(init_lora_weights="loftq", loftq_config=ml_peft.LoftQConfig(loftq_bits=4))
    with pytest.raises(NotImplementedError, match="bitsandbytes"):
        ml_peft.replace_lora_weights_loftq(None)
    for lib_peft in (peft, ml_peft):
        with pytest.warns(UserWarning, match="`loftq_config` specified but will be ignored"):
            assert lib_peft.LoraConfig(loftq_config={"loftq_bits": 4}).loftq_config == {}


# ==================================================================================================
# Activated LoRA (alora_invocation_tokens)
# ==================================================================================================
ALORA_IDS = [[1, 5, 9, 7, 3, 40, 22, 8, 9], [1, 22, 3, 40, 8, 9, 63, 2, 4], [7, 3, 5, 6, 7, 3, 11, 12, 13]]


def alora_models(**options):
    built = []
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        lib.manual_seed(1)
        config = lib_peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                     init_lora_weights=False, alora_invocation_tokens=[7, 3], **options)
        built.append(lib_peft.get_peft_model(base, config))
    return built


def test_alora_acts_from_the_last_invocation_on_as_peft(tmp_path):
    """Before: NotImplementedError (alora_invocation_tokens). Row 0 holds the tokens once, row 1 never, row 2 twice
    (the last counts): the logits before them are the base model's; the generated tokens (each step inside the
    adapter), a training step's loss with dropout and its gradients are PEFT's."""
    theirs, ours = alora_models(lora_dropout=0.1)
    results = []
    for lib, model in ((torch, theirs), (ml, ours)):
        model.eval()
        ids = lib.tensor(ALORA_IDS)
        with lib.no_grad():
            logits = model(ids).logits.numpy()
            with model.disable_adapter():
                base = model(ids).logits.numpy()
            generated = model.generate(ids, attention_mask=lib.ones_like(ids), max_new_tokens=4,
                                       do_sample=False).numpy()
        model.train()
        lib.manual_seed(3)
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logits, base, generated, loss.item(), grads))
    (logits, base, generated, loss, grads), (our_logits, our_base, our_generated, our_loss, our_grads) = results
    changed = np.abs(our_logits - our_base).max(axis=-1) > 0
    assert changed.tolist() == [[False] * 3 + [True] * 6, [False] * 9, [False] * 4 + [True] * 5]
    np.testing.assert_allclose(our_logits, logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(our_generated, generated)
    np.testing.assert_allclose(our_loss, loss, rtol=1e-6)
    assert sorted(our_grads) == sorted(grads)
    for name, grad in grads.items():
        np.testing.assert_allclose(our_grads[name], grad, rtol=0, atol=1e-6, err_msg=name)
    ours.save_pretrained(str(tmp_path))  # PEFT reads the invocation tokens from minilora's file
    loaded = peft.PeftModel.from_pretrained(llama_pair()[0], str(tmp_path))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.tensor(ALORA_IDS)).logits.numpy(), our_logits, rtol=0, atol=1e-5)


def test_alora_refusals_as_peft():
    """What PEFT refuses (its exception and words): merging, beam search, DoRA or an embedding with aLoRA."""
    for model in alora_models():
        with pytest.raises(NotImplementedError, match="aLoRA does not support merging."):
            model.merge_and_unload()
        ids = (torch if isinstance(model, peft.PeftModel) else ml).tensor(ALORA_IDS)
        with pytest.raises(ValueError, match="Beam search not yet supported for aLoRA."):
            model.generate(ids, max_new_tokens=2, num_beams=2)
    for options in (dict(use_dora=True), dict(target_modules=["embed_tokens"])):
        for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
            config = dict(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"], alora_invocation_tokens=[7, 3])
            with pytest.raises(ValueError, match="Invalid or unsupported variant combination"):
                lib_peft.get_peft_model(base, lib_peft.LoraConfig(**{**config, **options}))
    with pytest.warns(UserWarning, match="aLoRA is currently only supported for CAUSAL_LM task."):
        ml_peft.LoraConfig(alora_invocation_tokens=[7, 3])


# ==================================================================================================
# PEFT's docs snippets on a model with a tied lm_head
# ==================================================================================================
def test_adapter_on_a_tied_head_warns_on_save_and_merge_as_peft(tmp_path):
    """Before: minilora said nothing when saving (PEFT: the embedding tables go into the file, with a warning) or
    merging (PEFT: the tied module warning with its untie recipe). The files' keys and the merged logits agree."""
    configs = (transformers.LlamaConfig(**TINY, tie_word_embeddings=True),
               models.LlamaConfig(**TINY, tie_word_embeddings=True))
    results = []
    for (lib, lib_peft), base in zip(LIBRARIES, build(*configs)):
        lib.manual_seed(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(r=2, target_modules=["q_proj", "lm_head"],
                                                                      init_lora_weights=False))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.save_pretrained(str(tmp_path / lib.__name__))
            merged = model.merge_and_unload()
        with lib.no_grad():
            logits = merged(lib.tensor(ALORA_IDS)).logits.numpy()
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        keys = sorted(safetensors_keys(tmp_path / lib.__name__ / "adapter_model.safetensors"))
        results.append((messages, keys, logits, merged.lm_head.weight is merged.model.embed_tokens.weight))
    (messages, keys, logits, tied), (our_messages, our_keys, our_logits, our_tied) = results
    assert our_messages == messages and len(messages) == 2
    assert our_keys == keys and our_tied == tied
    np.testing.assert_allclose(our_logits, logits, rtol=0, atol=1e-5)


def safetensors_keys(path):
    from safetensors.numpy import load_file
    return load_file(str(path)).keys()


# ==================================================================================================
# LoRA-GA
# ==================================================================================================
from peft import LoraGAConfig as PeftLoraGAConfig, preprocess_loraga as peft_preprocess_loraga  # noqa: E402

LORA_GA = {torch: (PeftLoraGAConfig, peft_preprocess_loraga), ml: (ml_peft.LoraGAConfig, ml_peft.preprocess_loraga)}


@pytest.mark.parametrize("direction,scale", [("ArB2r", "stable"), ("ArBr", "weight_svd"), ("random", "gd_scale")])
def test_lora_ga_starts_along_the_gradient_as_peft(direction, scale):
    """Before: ValueError (init_lora_weights='lora_ga' not implemented). The gradients preprocess_loraga averages
    over train_step's backward passes are PEFT's; A and B are PEFT's up to the sign LAPACK gives each singular
    vector (torch's MKL and NumPy's LAPACK choose differently; A and B take different pairs, so B A and the
    residual base differ where they do), the base keeps exactly W - s B A, and the generator ends where PEFT's does
    (the randomised SVDs' starts, 'random''s permutation)."""
    batches = [np.random.default_rng(i).integers(0, TINY["vocab_size"], (2, 10)) for i in range(3)]
    results = []
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        config_class, preprocess = LORA_GA[lib]
        original = {k: v.detach().numpy().copy() for k, v in base.state_dict().items()}
        lib.manual_seed(1)
        config = lib_peft.LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "down_proj"],
                                     init_lora_weights="lora_ga",
                                     lora_ga_config=config_class(direction=direction, scale=scale))

        def train_step():
            for ids in batches:
                base(lib.tensor(ids), labels=lib.tensor(ids)).loss.backward()
        preprocess(base, config, train_step)
        gradient = base.model.layers[1].mlp.down_proj._peft_loraga_grad.numpy().copy()
        model = lib_peft.get_peft_model(base, config)
        results.append((gradient, states(model), original, lib.rand(2).numpy(),
                        model.peft_config["default"].to_dict()["lora_ga_config"]))
    (gradient, theirs, _, draws, file), (our_gradient, ours, original, our_draws, our_file) = results
    assert our_file == file  # adapter_config.json's lora_ga_config
    np.testing.assert_allclose(our_gradient, gradient, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(our_draws, draws)
    for key, A in theirs.items():
        if "lora_A" not in key:
            continue
        B_key, W_key = key.replace("lora_A", "lora_B"), key.replace("lora_A.default", "base_layer")
        np.testing.assert_allclose(np.abs(ours[key]), np.abs(A), rtol=0, atol=2e-5, err_msg=key)
        B_atol = 1e-4 * np.abs(theirs[B_key]).max()  # (float32 SVDs of a gradient: relative to its largest value)
        np.testing.assert_allclose(np.abs(ours[B_key]), np.abs(theirs[B_key]), rtol=0, atol=B_atol, err_msg=B_key)
        W = original[W_key.replace("base_model.model.", "").replace(".base_layer", "")]
        np.testing.assert_allclose(ours[W_key] + 2.0 * ours[B_key] @ ours[key], W, rtol=0, atol=1e-6, err_msg=W_key)


# ==================================================================================================
# MiCA
# ==================================================================================================
def test_mica_trains_a_along_the_minor_directions_as_peft():
    """Before: ValueError (init_lora_weights='mica' not implemented). B = the minor left singular vectors of each
    weight (of an embedding table's transpose) and frozen, also after set_adapter; A = 0 and alone trains: after
    three AdamW steps the factors are PEFT's up to each singular vector's sign (LAPACK's choice; A's row follows
    its B column, so the model is the same) and the logits agree."""
    results = []
    for (lib, lib_peft), base in zip(LIBRARIES, llama_pair()):
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(
            r=3, target_modules=["q_proj", "down_proj", "embed_tokens"], init_lora_weights="mica"))
        model.set_adapter("default")
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        optimizer = lib.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        ids = lib.tensor(ALORA_IDS)
        for _ in range(3):
            optimizer.zero_grad()
            model(ids, labels=ids).loss.backward()
            optimizer.step()
        with lib.no_grad():
            results.append((trainable, states(model), model(ids).logits.numpy()))
    (trainable, theirs, logits), (our_trainable, ours, our_logits) = results
    assert our_trainable == trainable and all("lora_A" in n or "lora_embedding_A" in n for n in trainable)
    for key, value in theirs.items():
        if "lora_" in key:
            np.testing.assert_allclose(np.abs(ours[key]), np.abs(value), rtol=0, atol=5e-5, err_msg=key)
    np.testing.assert_allclose(our_logits, logits, rtol=0, atol=5e-5)
    with pytest.raises(ValueError, match=r"Invalid or unsupported variant combination: \('mica', 'use_dora'\)"):
        ml_peft.get_peft_model(llama_pair()[1], ml_peft.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True,
                                                                   init_lora_weights="mica"))
