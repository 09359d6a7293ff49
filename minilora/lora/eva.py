"""EVA, Explained Variance Adaptation (PEFT's ``init_lora_weights="eva"``): lora_A starts as the top right-
singular vectors of each adapted layer's *inputs*, seen over a pass of data, and the ranks move to the layers
whose inputs carry the most variance.

    config = LoraConfig(r=16, target_modules=[...], init_lora_weights="eva", eva_config=EvaConfig(rho=2.0))
    model = get_peft_model(model, config)        # lora_B = 0, lora_A a placeholder
    initialize_lora_eva_weights(model, dataloader)

How (PEFT 0.21's ``peft.tuners.lora.eva``, step for step, so the same data gives its ranks and factors):

1. One forward pass with a hook on each adapted layer hashes its input: layers fed the same input (q, k and v;
   gate and up) share one SVD (``equal_inputs_map``).
2. Batches of the dataloader (cycled) run through the model with the adapters off. Each hook feeds its layer's
   input rows (the tokens the attention mask and the labels keep) to an incremental PCA (``IncrementalPCA``:
   sklearn's, with a randomised SVD of 2 x ``round(r * rho)`` components, seeded 42) until the components a layer
   is allotted stop turning (cosine similarity to the previous step >= ``tau``).
3. The budget of ``r`` per layer goes to the largest explained-variance ratios over all layers (torch's unstable
   descending argsort: ties between layers with one input fall as torch's ``std::sort`` leaves them).
4. Each layer gets its rank: lora_A = those components (``whiten``: over sqrt(singular value)), lora_B = 0; a
   rank-0 layer goes back to its base layer; with ``adjust_scaling_factors`` lora_alpha scales with the new rank.
   The config's ``target_modules`` / ``rank_pattern`` / ``alpha_pattern`` are rewritten to say so (saved in
   adapter_config.json, so PEFT and minilora load the adapter with these ranks).

The SVDs run in NumPy (float32 for the first batch, float64 after: PEFT stacks its float64 mean correction into
the matrix), so factors agree with PEFT's to the LAPACKs' rounding, not bit for bit.
"""
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from contextlib import nullcontext
from copy import copy
from functools import partial
from itertools import cycle

import numpy as np

from .. import ops, std_sort
from ..nn import Linear as _NNLinear
from ..factories import ones_like
from ..random import fork_rng, manual_seed
from ..tensor import Tensor, _host
from .config import EvaConfig
from .conv import _ConvNd
from .layers import Embedding, Linear as LoraLayer
from .inits import svd_lowrank

__all__ = ["EvaConfig", "get_eva_state_dict", "initialize_lora_eva_weights", "IncrementalPCA",
           "prepare_model_inputs_fn_language_modeling", "prepare_layer_inputs_fn_language_modeling", "forward_fn_dict"]

MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20  # PEFT's: from this many targets on, the list is shortened to suffixes


# ==================================================================================================
# Incremental PCA (PEFT's peft.utils.incremental_pca, the parts EVA runs)
# ==================================================================================================
class IncrementalPCA:
    """sklearn's incremental PCA as PEFT ports it to torch: ``partial_fit`` keeps the running mean and variance
    and refits a randomised SVD (``lowrank_q`` = 2 x n_components, ``lowrank_niter`` = 4, torch's generator
    seeded ``lowrank_seed`` inside a fork) of [S V^T; the centred batch; the mean correction]."""

    def __init__(self, n_components, lowrank_niter=4, lowrank_seed=42):
        self.n_components = n_components
        self.lowrank_q = n_components * 2
        self.lowrank_niter = lowrank_niter
        self.lowrank_seed = lowrank_seed

    def _validate(self, X):
        n_samples, n_features = X.shape
        if self.n_components > n_features:  # PEFT's words
            raise ValueError(f"n_components={self.n_components} invalid for n_features={n_features}, "
                             "need more rows than columns for IncrementalPCA processing.")
        if self.n_components > n_samples:
            raise ValueError(f"n_components={self.n_components} must be less or equal to the batch number of "
                             f"samples {n_samples}")

    def partial_fit(self, X):
        """One batch ``X`` [samples, features] (float32 or float64; copied)."""
        self._validate(X)
        first_pass = not hasattr(self, "components_")
        n_samples = X.shape[0]
        if first_pass:
            self.mean_, self.var_, self.n_samples_seen_ = None, None, 0
        col_mean, col_var, n_total = _incremental_mean_and_var(X, self.mean_, self.var_, self.n_samples_seen_)
        if first_pass:  # torch's in-place X -= float64 mean: computed in float64, stored in X's dtype
            X = (X.astype(np.float64) - col_mean).astype(X.dtype)
        else:
            batch_mean = Tensor(X).mean(0)._array  # torch's float32 mean (its summation order)
            X = X - batch_mean
            factor = np.sqrt((self.n_samples_seen_ / n_total) * n_samples)
            mean_correction = factor * (self.mean_ - batch_mean)  # float64: the stack below becomes float64
            X = np.vstack((self.singular_values_.reshape(-1, 1) * self.components_, X, mean_correction[None]))
        with fork_rng():
            manual_seed(self.lowrank_seed)
            U, S, V = svd_lowrank(X, self.lowrank_q, niter=self.lowrank_niter)
        Vt = _svd_flip_rows(V.T)
        total = S.dtype.type(np.sum(col_var * n_total))  # a 0-d float64 tensor: S's dtype wins in torch
        self.n_samples_seen_ = n_total
        self.components_ = Vt[:self.n_components]
        self.singular_values_ = S[:self.n_components]
        self.mean_, self.var_ = col_mean, col_var
        self.explained_variance_ratio_ = (S ** 2 / total)[:self.n_components]
        return self


def _incremental_mean_and_var(X, last_mean, last_variance, last_count):
    """sklearn's running mean and variance, in float64 (PEFT's sums take dtype=torch.float64)."""
    if X.shape[0] == 0:
        return last_mean, last_variance, last_count
    new_count = X.shape[0]
    updated_count = last_count + new_count
    last_sum = np.zeros(X.shape[1]) if last_mean is None else last_mean * last_count
    new_sum = X.sum(axis=0, dtype=np.float64)
    updated_mean = (last_sum + new_sum) / updated_count
    centred = X - new_sum / new_count  # float64
    correction = np.square(centred.sum(axis=0))
    new_unnormalized = np.square(centred).sum(axis=0) - correction / new_count
    if last_variance is None:
        return updated_mean, new_unnormalized / updated_count, updated_count
    last_over_new = last_count / new_count
    updated_unnormalized = (last_variance * last_count + new_unnormalized
                            + last_over_new / updated_count * np.square(last_sum / last_over_new - new_sum))
    return updated_mean, updated_unnormalized / updated_count, updated_count


def _svd_flip_rows(Vt):
    """PEFT's ``_svd_flip(u_based_decision=False)``: each row's largest-magnitude entry made positive."""
    signs = np.sign(Vt[np.arange(Vt.shape[0]), np.argmax(np.abs(Vt), axis=1)])
    return Vt * signs[:, None]


def _cosine_similarity_rows(a, b, eps=1e-8):
    """torch's ``F.cosine_similarity`` of two matrices, row by row (each divided by its clamped norm first)."""
    a, b = np.asarray(a), np.asarray(b)
    na = np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
    nb = np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
    return ((a / na) * (b / nb)).sum(axis=1)


# ==================================================================================================
# The hooks
# ==================================================================================================
class _Hook:
    def __init__(self, name, prepare_layer_inputs_fn=None):
        self.name = name
        self._prepare_layer_inputs_fn = prepare_layer_inputs_fn or _prepare_layer_inputs_fn_default
        self.model_input = None

    def prepare_layer_inputs(self, layer_input):
        states = self._prepare_layer_inputs_fn(layer_input, self.model_input, self.name)
        return np.array(_host(states._array) if isinstance(states, Tensor) else states)


def _prepare_layer_inputs_fn_default(layer_input, model_input, layer_name):
    layer_input = _first_tensor(layer_input, layer_name)
    return layer_input.view(-1, layer_input.size(-1)) if layer_input.ndim > 2 else layer_input


def _first_tensor(layer_input, layer_name):
    if isinstance(layer_input, Tensor):
        return layer_input
    if isinstance(layer_input, (tuple, list)):
        return layer_input[0]
    raise TypeError(f"unsupported input type {type(layer_input)} for prepare_layer_inputs_fn in layer {layer_name}, "
                    "please provide a custom prepare_layer_inputs_fn")  # PEFT's words


class _SVDHook(_Hook):
    """Feeds each batch's layer input to an IncrementalPCA; a component has converged when its cosine
    similarity to the previous step's reaches ``sim_thresh``."""

    def __init__(self, n_components, sim_thresh, **kwargs):
        super().__init__(**kwargs)
        self.n_components = n_components
        self.sim_thresh = sim_thresh
        self.svd = IncrementalPCA(n_components=n_components, lowrank_seed=42)
        self.converged = np.zeros(n_components, dtype=bool)

    def __call__(self, module, args, output):
        previous = self.svd.components_.copy() if hasattr(self.svd, "components_") else None
        states = self.prepare_layer_inputs(args)
        if states.shape[0] < self.n_components:  # PEFT prints this
            print(f"skipping SVD for {self.name} because there are less than {self.n_components} examples")
            return
        self.svd.partial_fit(states.astype(np.float32))
        if previous is not None:
            self.converged = _cosine_similarity_rows(self.svd.components_, previous) >= self.sim_thresh


class _HashHook(_Hook):
    """Records a hash of the layer's input (PEFT's: of its values as Python floats)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hashed_inputs = []

    def __call__(self, module, args, output):
        self.hashed_inputs.append(hash(tuple(self.prepare_layer_inputs(args).ravel().tolist())))


# ==================================================================================================
# PEFT's default input functions (language modelling)
# ==================================================================================================
def prepare_model_inputs_fn_language_modeling(model_input, peft_config):
    """The (batch, position) indices of the tokens the SVD sees: attention mask, and labels != -100."""
    if not isinstance(model_input, dict):
        raise TypeError("When using `prepare_model_inputs_fn_language_modeling` inputs must be a dictionary")
    mask = model_input.get("attention_mask", ones_like(model_input["input_ids"])).bool()
    if peft_config.eva_config.use_label_mask and "labels" in model_input:
        mask = ops.logical_and(mask, model_input["labels"] != peft_config.eva_config.label_mask_value)
    return mask.nonzero()


def prepare_layer_inputs_fn_language_modeling(layer_input, model_input, layer_name):
    """The layer input's rows at those indices: [tokens, features]."""
    layer_input = _first_tensor(layer_input, layer_name)
    return layer_input[tuple(model_input.T.unbind())]


def forward_fn_dict(model, inputs):
    return model(**inputs)


# ==================================================================================================
# get_eva_state_dict
# ==================================================================================================
def get_eva_state_dict(model, dataloader, peft_config=None, forward_fn=forward_fn_dict,
                       prepare_model_inputs_fn=prepare_model_inputs_fn_language_modeling,
                       prepare_layer_inputs_fn=prepare_layer_inputs_fn_language_modeling, adapter_name="default",
                       gather_distributed_inputs=True, show_progress_bar=True):
    """``{layer name: lora_A [rank, in]}`` from the data (PEFT's function; ``model`` a PeftModel, or a plain
    model with ``peft_config``). minilora draws no progress bar; in a distributed run it refuses to guess
    whether the ranks' inputs should be gathered (PEFT all-gathers them)."""
    _refuse_distributed(gather_distributed_inputs)
    is_peft_model = hasattr(model, "peft_config")
    if is_peft_model and peft_config is None:
        peft_config = model.peft_config[adapter_name]
    elif peft_config is None:
        raise ValueError("peft_config is required if model is not a PeftModel")
    if is_peft_model:
        context, is_target = model.disable_adapter(), _is_eva_layer
    else:
        from .model import target_module_matches
        context = nullcontext()
        is_target = partial(_is_target_linear, target_module_matches, peft_config)
    with context:
        state = _EvaRun(model, dataloader, peft_config, is_target, forward_fn, prepare_model_inputs_fn,
                        prepare_layer_inputs_fn).run()
    return state


def _refuse_distributed(gather_distributed_inputs):
    from .. import distributed
    if distributed.is_initialized() and gather_distributed_inputs:
        raise NotImplementedError("EVA with torch.distributed initialised (PEFT all-gathers every rank's layer "
                                  "inputs) is not implemented in minilora: pass gather_distributed_inputs=False "
                                  "to use each rank's own inputs")


def _is_eva_layer(name, module):
    """PEFT's check on a PeftModel: an adapter layer, not an embedding, convolution or attention one."""
    from .mha import MultiheadAttention
    return hasattr(module, "base_layer") and not isinstance(module, (Embedding, MultiheadAttention, _ConvNd))


def _is_target_linear(matches, peft_config, name, module):
    return isinstance(module, _NNLinear) and (peft_config.target_modules is None or matches(peft_config, name))


class _EvaRun:
    """One run of PEFT's ``_get_eva_state_dict``: hash pass, SVD passes to convergence, rank distribution."""

    def __init__(self, model, dataloader, peft_config, is_target, forward_fn, prepare_model_inputs_fn,
                 prepare_layer_inputs_fn):
        self.model, self.dataloader, self.config = model, dataloader, peft_config
        self.is_target, self.forward_fn = is_target, forward_fn
        self.prepare_model_inputs_fn, self.prepare_layer_inputs_fn = prepare_model_inputs_fn, prepare_layer_inputs_fn

    def _model_inputs(self, inputs):
        if self.prepare_model_inputs_fn is not None:
            return self.prepare_model_inputs_fn(inputs, self.config)
        return inputs

    def _rho(self):
        """PEFT caps a rho over 1000 at the largest parameter dimension over r."""
        rho = self.config.eva_config.rho
        if rho > 1000:
            max_dim = max(max(p.shape) for p in self.model.parameters())
            rho = min(rho, max_dim // self.config.r)
        return rho

    def run(self):
        from .model import _pattern_value
        if len(self.dataloader) == 0:
            raise ValueError("dataloader is empty")
        rho, training = self._rho(), self.model.training
        self.model.eval()
        inputs = next(iter(self.dataloader))
        model_inputs = self._model_inputs(inputs)
        hooks, max_components, rank_budget = {}, {}, 0
        layer_fns = dict(self.prepare_layer_inputs_fn) if isinstance(self.prepare_layer_inputs_fn, Mapping) else None
        for name, module in self.model.named_modules():
            if not self.is_target(name, module):
                continue
            fn = layer_fns.pop(name, None) if layer_fns is not None else self.prepare_layer_inputs_fn
            hook = _HashHook(name=name, prepare_layer_inputs_fn=fn)
            hook.model_input = model_inputs
            hooks[name] = (hook, module.register_forward_hook(hook))
            layer_rank = _pattern_value(self.config.rank_pattern, name, self.config.r)
            max_components[name] = round(layer_rank * rho)
            rank_budget += layer_rank
        if layer_fns:
            raise ValueError("prepare_layer_inputs_fn is a mapping but the following module names were not found in "
                             f"the model: {layer_fns.keys()}")
        self.forward_fn(self.model, inputs)
        equal_inputs = list(_find_equal_values({k: h[0].hashed_inputs[0] for k, h in hooks.items()}).values())
        equal_inputs_map = {vv: v[0] for v in equal_inputs for vv in v[1:]}
        for names in equal_inputs:  # layers sharing an input share the largest max_components
            largest = max(max_components[n] for n in names)
            for n in names:
                max_components[n] = largest
        for name in list(hooks):
            hook, handle = hooks.pop(name)
            handle.remove()
            if name in equal_inputs_map:
                continue
            svd_hook = _SVDHook(n_components=max_components[name], sim_thresh=self.config.eva_config.tau, name=name,
                                prepare_layer_inputs_fn=hook._prepare_layer_inputs_fn)
            hooks[name] = (svd_hook, self.model.get_submodule(name).register_forward_hook(svd_hook))
        layer_hook_map = {**dict(zip(hooks, hooks)), **equal_inputs_map}
        try:
            rank_dist = self._fit_until_converged(hooks, layer_hook_map, equal_inputs_map, rank_budget, max_components)
        finally:
            for _, handle in hooks.values():
                if handle is not None:
                    handle.remove()
        state = self._components(hooks, layer_hook_map, rank_dist)
        self.model.train(training)
        return state

    def _fit_until_converged(self, hooks, layer_hook_map, equal_inputs_map, rank_budget, max_components):
        converged_layers = {k: False for k in hooks}
        rank_dist = dict(max_components)
        for inputs in cycle(self.dataloader):
            model_inputs = self._model_inputs(inputs)
            for name in list(hooks):
                hook, handle = hooks[name]
                converged = bool(np.all(hook.converged[:rank_dist[name]]))
                if not converged_layers[name] and converged and handle:  # converged in this step: stop feeding it
                    handle.remove()
                    converged_layers[name] = True
                    hooks[name] = (hook, None)
                    continue
                if converged_layers[name] and not converged:  # a new rank needs components it has not settled
                    handle = self.model.get_submodule(name).register_forward_hook(hook)
                    converged_layers[name] = False
                hook.model_input = model_inputs
                hooks[name] = (hook, handle)
            if all(converged_layers.values()):
                break
            self.forward_fn(self.model, inputs)
            if not all(hasattr(h[0].svd, "components_") for h in hooks.values()):
                continue  # a layer saw fewer tokens than components: no distribution yet
            rank_dist = _rank_distribution(hooks, layer_hook_map, equal_inputs_map, rank_budget, max_components)
        return rank_dist

    def _components(self, hooks, layer_hook_map, rank_dist):
        state = {}
        for name, rank in rank_dist.items():
            hook = hooks[layer_hook_map[name]][0]
            if not np.all(hook.converged[:rank]):  # PEFT's words
                raise ValueError(f"Layer {name} has not converged but was assigned rank {rank}. "
                                 "Please report this issue at https://github.com/huggingface/peft/issues")
            u = hook.svd.components_[:rank]  # a view, as PEFT's: whitening the components of a layer that shares
            if self.config.eva_config.whiten:  # its input divides them again for every layer before it too
                u /= np.sqrt(hook.svd.singular_values_[:rank]).reshape(-1, 1)
            state[name] = u
        return {name: Tensor(u.copy(), dtype=u.dtype) for name, u in state.items()}


def _find_equal_values(dictionary):
    """``{value: [keys with it]}`` for the values held by more than one key (PEFT's find_equal_values)."""
    groups = defaultdict(list)
    for key, value in dictionary.items():
        groups[value].append(key)
    return {value: keys for value, keys in groups.items() if len(keys) > 1}


def _rank_distribution(hooks, layer_hook_map, equal_inputs_map, rank_budget, max_components):
    """The budget goes to the largest explained-variance ratios over all layers, in torch's descending argsort
    order (unstable: the ratios of layers sharing an input tie, and torch's std::sort decides between them);
    a layer that shares its hook's input never gets more than the hook's layer (PEFT swaps them)."""
    exp_vars = {k: h[0].svd.explained_variance_ratio_[:max_components[k]] for k, h in hooks.items()}
    keys, values = zip(*[(k, c) for k, name in layer_hook_map.items() for c in exp_vars[name]])
    values = np.array(values)
    order = _torch_argsort_descending(values)
    counts = Counter(keys[i] for i in order[:rank_budget])
    counts = {k: counts.get(k, 0) for k in layer_hook_map}
    for k, k_hook in equal_inputs_map.items():
        if counts[k_hook] < counts[k]:
            counts[k_hook], counts[k] = counts[k], counts[k_hook]
    return counts


def _torch_argsort_descending(values):
    """``torch.argsort(values, descending=True)`` on the CPU, ties included (``minilora/std_sort.py``: ATen's
    std::sort of (value, index) pairs)."""
    return std_sort.sort_order(np.asarray(values, dtype=np.float64).reshape(1, -1), descending=True)[0].tolist()


# ==================================================================================================
# initialize_lora_eva_weights
# ==================================================================================================
def initialize_lora_eva_weights(model, dataloader=None, eva_state_dict=None, forward_fn=forward_fn_dict,
                                prepare_model_inputs_fn=prepare_model_inputs_fn_language_modeling,
                                prepare_layer_inputs_fn=prepare_layer_inputs_fn_language_modeling,
                                adapter_name="default", gather_distributed_inputs=True, show_progress_bar=True):
    """PEFT's: compute (or take) the EVA state dict and load it: each layer gets its rank and lora_A."""
    if not hasattr(model, "peft_config"):
        raise ValueError("model must be a PeftModel")
    if len(model.active_adapters) > 1:
        raise ValueError("`initialize_lora_eva_weights` currently only works with a single active adapter")
    if model.peft_config[adapter_name].init_lora_weights != "eva":
        raise ValueError("`initialize_lora_eva_weights` can only be used with `init_lora_weights='eva'`")
    if eva_state_dict is None:
        if dataloader is None:
            raise ValueError("dataloader is required if eva_state_dict is not provided")
        eva_state_dict = get_eva_state_dict(model, dataloader, forward_fn=forward_fn,
                                            prepare_model_inputs_fn=prepare_model_inputs_fn,
                                            prepare_layer_inputs_fn=prepare_layer_inputs_fn, adapter_name=adapter_name,
                                            gather_distributed_inputs=gather_distributed_inputs,
                                            show_progress_bar=show_progress_bar)
    _load_eva_state_dict(model, dict(eva_state_dict), adapter_name)


def _load_eva_state_dict(model, eva_state_dict, adapter_name):
    """PEFT's: re-create each layer's adapter at its EVA rank (alpha scaled with it), lora_A = the components;
    a rank-0 layer becomes its base layer again; the config records the new targets, ranks and alphas."""
    from .model import _pattern_value
    base = model.peft_config[adapter_name]
    config = copy(base)
    missing, new_targets, others, rank_pattern, alpha_pattern = [], [], [], {}, {}
    for name, module in list(model.named_modules()):
        name_in_base = name.replace("base_model.model.", "")
        if not isinstance(module, (LoraLayer, Embedding)):  # PEFT's LoraLayer: every LoRA layer kind
            others.append(name_in_base)
            continue
        r = _pattern_value(config.rank_pattern, name, config.r)
        alpha = _pattern_value(config.alpha_pattern, name, config.lora_alpha)
        if name in eva_state_dict:
            w = eva_state_dict.pop(name)
            new_rank = w.shape[0]
            if new_rank == 0:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, module.base_layer)
                continue
            if new_rank != r and config.eva_config.adjust_scaling_factors:
                alpha *= new_rank / r
            if new_rank != r or adapter_name in getattr(module, "meta_adapters", ()):  # (low_cpu_mem_usage=True)
                config.init_lora_weights = "eva"
                module.update_layer(adapter_name, config, new_rank, alpha)
                getattr(module, "meta_adapters", set()).discard(adapter_name)
            weight = module.lora_A[adapter_name].weight
            weight._array[...] = weight.device.xp.asarray(_host(w._array if isinstance(w, Tensor) else np.asarray(w))
                                                          .astype(weight._array.dtype))
            new_targets.append(name_in_base)
        else:
            config.init_lora_weights = True
            module.update_layer(adapter_name, config, r, alpha)
            getattr(module, "meta_adapters", set()).discard(adapter_name)
            missing.append(name_in_base)
            new_rank = r
        if new_rank != config.r:
            rank_pattern[name_in_base] = new_rank
        if alpha != config.lora_alpha:
            alpha_pattern[name_in_base] = alpha
    new_targets = new_targets + missing
    if len(new_targets) >= MIN_TARGET_MODULES_FOR_OPTIMIZATION:
        new_targets = _find_minimal_target_modules(new_targets, others)
    base.target_modules = new_targets
    base.rank_pattern = rank_pattern
    base.alpha_pattern = alpha_pattern
    if missing:  # PEFT's words
        warnings.warn("the following layers were initialized with init_lora_weights=True because they were not found "
                      f"in the eva state_dict: {missing}\ncurrently the following lora modules are not supported by "
                      "EVA: (Embedding, MultiheadAttention, _ConvNd)")


def _find_minimal_target_modules(target_modules, other_module_names):
    """PEFT's: the fewest name suffixes that pick exactly ``target_modules`` out of the model's modules."""
    target_modules, other_module_names = set(target_modules), set(other_module_names)
    if not target_modules.isdisjoint(other_module_names):
        raise ValueError("target_modules and other_module_names contain common elements, this should not happen")

    def suffixes(name):
        parts = name.split(".")
        return [".".join(parts[i:]) for i in range(len(parts))][::-1]
    other_suffixes = {s for item in other_module_names for s in suffixes(item)}
    required = set()
    for item, item_suffixes in sorted(((t, suffixes(t)) for t in target_modules), key=lambda pair: pair[1]):
        for suffix in item_suffixes:
            if suffix in required or suffix in other_suffixes:
                continue
            if not any(item.endswith("." + r) for r in required):
                required.add(suffix)
                break
    return required or target_modules
