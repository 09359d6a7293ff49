"""Adapter composition: ``add_weighted_adapter`` -- a new adapter made from trained ones, no training.

PEFT's method and numbers (``LoraModel.add_weighted_adapter`` and ``peft.utils.merge_utils``):

* ``"linear"``: ``A = sum_i sqrt(w_i s_i) A_i`` and ``B = sum_i sqrt(w_i s_i) B_i`` (same ranks needed).
  Cheap but rough: ``B A`` is NOT ``sum_i w_i s_i B_i A_i`` (the cross terms ``B_i A_j`` come along).
* ``"cat"``: the ranks are stacked, ``A = [w_1 s_1 A_1; w_2 s_2 A_2]``, ``B = [B_1, B_2]``: exact
  (``B A = sum_i w_i s_i B_i A_i``), rank = the sum of the ranks.
* ``"svd"``: ``delta = sum_i w_i s_i B_i A_i`` and its best rank-``svd_rank`` factorisation (exact
  up to the truncation), optionally clamped at the ``svd_clamp`` quantile.
* ``"ties"``, ``"dare_linear"``, ``"dare_ties"``, ``"magnitude_prune"`` (and their ``*_svd`` forms):
  task-arithmetic variants that prune each task tensor (by magnitude or at random, keeping
  ``density``) and, for TIES, keep only the entries that agree with the majority sign.

The new adapter has ``lora_alpha = r`` and no rsLoRA, so its scaling is 1 (as PEFT 0.22). It is made from the
first adapter's config, init included (the same draws as PEFT's). DoRA adapters are refused, as PEFT 0.22
refuses them (0.21 combined only A and B, the magnitude left at the new adapter's initial one). lora_bias
adapters: the new lora_B bias is ``sum_i w_i s_i b_i`` over the sources that have one (PEFT 0.22; the bias adds
to the output apart from B A).
Random pruning (DARE) draws from minilora's generator (``minilora.manual_seed``) as PEFT draws from
torch's: after the new adapter's init, layer by layer, A's masks then B's, each
``torch.bernoulli(ones_like(t) * density)`` (torch's draw for the same seed).

Dtypes, as PEFT's (on a bfloat16 model): the merge rules compute in float32 (16-bit factors upcast, as
torch promotes them against its float32 weight tensor); "linear"/"ties"/"dare"/"magnitude_prune" round
the result to the first adapter's dtype and the SVD forms keep float32, and the new adapter takes that
dtype (PEFT assigns ``lora_A.weight.data``); "cat" writes its stacked factors into the new adapter,
which was made in the base model's dtype.
"""
import copy
import math
import warnings

import numpy as np

from .. import dtypes, linalg, std_sort
from ..device import xp_of
from .. import random as _random
from ..tensor import Tensor, _host
from .inits import is_weight_mutating_init
from .layers import Embedding, Linear, ModulesToSaveWrapper

__all__ = ["add_weighted_adapter", "task_arithmetic", "magnitude_prune", "ties", "dare_linear", "dare_ties",
           "prune", "calculate_majority_sign_mask", "disjoint_merge", "COMBINATION_TYPES"]

COMBINATION_TYPES = ("svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd",
                     "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd")
_SAME_RANK_TYPES = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")


# ==================================================================================================
# The merge rules on plain arrays (PEFT's merge_utils): each takes a list of same-shape task tensors
# ==================================================================================================
def _weighted(task_tensors, weights):
    """Stack [n, ...] and multiply tensor i by weights[i]."""
    stacked = np.stack(task_tensors, axis=0)
    w = np.asarray(weights, dtype=stacked.dtype).reshape((-1,) + (1,) * (stacked.ndim - 1))
    return stacked, stacked * w


def prune(tensor, density, method, rescale=False, rng=None):
    """Keep a ``density`` fraction of ``tensor``: its largest magnitudes ("magnitude") or random
    entries ("random", divided by ``density`` when ``rescale`` so the expectation is unchanged; drawn
    from ``rng``, by default minilora's generator)."""
    if density >= 1:
        warnings.warn(f"The density {density} is greater than or equal to 1, no pruning will be performed.")
        return tensor
    if density < 0:
        raise ValueError(f"Density should be >= 0, got {density}")
    if method == "magnitude":
        k = int(density * tensor.size)
        keep = np.zeros(tensor.size, dtype=tensor.dtype)
        if k:  # PEFT's torch.topk: among equal magnitudes at the cut, the entries torch's topk keeps (std_sort.py)
            keep[std_sort.topk_order(np.abs(tensor).reshape(1, -1), k, largest=True, sorted=True)[0]] = 1
        return tensor * keep.reshape(tensor.shape)
    if method == "random":
        keep = _random_mask(tensor, density, rng).astype(tensor.dtype)
        pruned = tensor * keep
        return pruned / density if rescale else pruned
    raise ValueError(f"Unknown method {method}")


def _random_mask(tensor, density, rng):
    """PEFT's ``torch.bernoulli(torch.ones_like(tensor) * density)`` drawn from ``rng`` (a minilora
    Generator, None for the global one; a NumPy generator draws NumPy's uniforms)."""
    if isinstance(rng, np.random.Generator):
        return rng.random(tensor.shape) < density
    probs = np.full(tensor.shape, density, np.float64 if tensor.dtype == np.float64 else np.float32)
    return _random.resolve(rng).bernoulli_tensor(probs)


def calculate_majority_sign_mask(stacked, method="total"):
    """Where each task tensor agrees with the majority sign ("total": sign of the sum; "frequency":
    the sign most tensors have). Ties count as positive, as in PEFT."""
    sign = np.sign(stacked)
    if method == "total":
        magnitude = stacked.sum(axis=0)
    elif method == "frequency":
        magnitude = sign.sum(axis=0)
    else:
        raise RuntimeError(f'Unimplemented mask method "{method}"')
    return sign == np.where(magnitude >= 0, 1, -1)


def disjoint_merge(weighted, mask):
    """The mean over the tensors that agree with the majority sign (entries nobody keeps stay 0). PEFT divides
    by ``torch.clamp(count, min=1.0)``, a float32 tensor (an integer clamped to a float is the default dtype):
    float32 tensors stay float32 (NumPy's float64 count made ties_svd's factors float64)."""
    kept = np.maximum(mask.sum(axis=0), 1).astype(np.float32)
    return (weighted * mask).sum(axis=0) / kept


def task_arithmetic(task_tensors, weights):
    return _weighted(task_tensors, weights)[1].sum(axis=0)


def magnitude_prune(task_tensors, weights, density):
    return task_arithmetic([prune(t, density, "magnitude") for t in task_tensors], weights)


def ties(task_tensors, weights, density, majority_sign_method="total"):
    pruned = [prune(t, density, "magnitude") for t in task_tensors]
    stacked, weighted = _weighted(pruned, weights)
    return disjoint_merge(weighted, calculate_majority_sign_mask(stacked, majority_sign_method))


def dare_linear(task_tensors, weights, density, rng=None):
    return task_arithmetic([prune(t, density, "random", rescale=True, rng=rng) for t in task_tensors], weights)


def dare_ties(task_tensors, weights, density, majority_sign_method="total", rng=None):
    pruned = [prune(t, density, "random", rescale=True, rng=rng) for t in task_tensors]
    stacked, weighted = _weighted(pruned, weights)
    return disjoint_merge(weighted, calculate_majority_sign_mask(stacked, majority_sign_method))


def _combine(kind, task_tensors, weights, density, majority_sign_method, rng=None):
    """Apply the merge rule named ``kind`` (without any ``_svd`` suffix)."""
    if kind in ("linear", "svd"):
        return task_arithmetic(task_tensors, weights)
    if kind == "ties":
        return ties(task_tensors, weights, density, majority_sign_method)
    if kind == "dare_linear":
        return dare_linear(task_tensors, weights, density, rng)
    if kind == "dare_ties":
        return dare_ties(task_tensors, weights, density, majority_sign_method, rng)
    if kind == "magnitude_prune":
        return magnitude_prune(task_tensors, weights, density)
    raise ValueError(f"Invalid combination type: {kind}")


# ==================================================================================================
# add_weighted_adapter on a LoraModel
# ==================================================================================================
def _max_rank(config):
    """The largest rank an adapter has anywhere (``r`` or a ``rank_pattern`` value)."""
    return max([config.r, *config.rank_pattern.values()])


def _is_negative(rank):
    return isinstance(rank, (int, float)) and rank < 0  # (another type: the layer's own TypeError, as PEFT's)


def _check(lora_model, adapters, combination_type, svd_rank):
    """PEFT's ``_check_add_weighted_adapter``: -> (combination_type, new rank, new target_modules)."""
    for adapter in adapters:
        if adapter not in lora_model.peft_config:
            raise ValueError(f"Adapter {adapter} does not exist")
        if getattr(lora_model.peft_config[adapter], "peft_type", "LORA") != "LORA":
            raise ValueError(f"add_weighted_adapter combines LoRA adapters; {adapter!r} is "
                             f"{lora_model.peft_config[adapter].peft_type.value}")
        if lora_model.peft_config[adapter].use_dora:  # PEFT 0.22's refusal and words
            raise ValueError(f"add_weighted_adapter does not support DoRA (problematic adapter '{adapter}')")
    wrappers = [m for m in lora_model.model.modules() if isinstance(m, ModulesToSaveWrapper)]
    if any(sum(a in w.modules_to_save for a in adapters) > 1 for w in wrappers):
        raise ValueError("Cannot add weighted adapters if they target the same module with modules_to_save, but "
                         f"found {sum(sum(a in w.modules_to_save for a in adapters) > 1 for w in wrappers)} "
                         "such instance(s).")
    combination_type = "linear" if len(adapters) == 1 else combination_type  # PEFT: one adapter, linear
    ranks = [_max_rank(lora_model.peft_config[a]) for a in adapters]
    if combination_type in _SAME_RANK_TYPES:
        if len(set(ranks)) != 1:
            raise ValueError("All adapters must have the same r value when using combination_type linear, ties, "
                             "dare_ties or dare_linear.")
        new_rank = ranks[0]
    elif combination_type == "cat":
        new_rank = sum(ranks)
    elif combination_type.endswith("svd"):
        new_rank = svd_rank or max(ranks)
        if _is_negative(new_rank):  # PEFT's refusal at the new layer, in its words (torch.empty's before)
            raise ValueError(f"`r` should be a positive integer value but the value passed is {new_rank}")
    else:
        raise ValueError(f"Invalid combination_type: {combination_type}")
    targets = [lora_model.peft_config[a].target_modules for a in adapters]
    if not targets:
        raise ValueError(f"Found no adapter matching the names in {adapters}")
    if len({isinstance(t, str) for t in targets}) > 1:
        raise ValueError("all adapter configs should follow the same target modules type. Combining adapters with "
                         "`target_modules` type being a mix of list/set and string is not supported.")
    if isinstance(targets[0], str):
        new_targets = "|".join(f"({t})" for t in targets)
    else:
        new_targets = sorted(set().union(*targets))
    return combination_type, new_rank, new_targets


def _refuse_bias_with_embeddings(lora_model, adapters, biased):
    """PEFT 0.22's refusal (its words): the combined adapter has lora_bias when a source has it, and an
    embedding's LoRA takes no bias."""
    if not biased:
        return
    embeddings = [m for m in lora_model.model.modules() if isinstance(m, Embedding)]
    on_embeddings = [a for a in adapters if any(a in m.lora_embedding_A for m in embeddings)]
    if on_embeddings:
        raise ValueError(f"add_weighted_adapter does not support lora_bias combined with nn.Embedding targeting: "
                         f"adapters {biased} use lora_bias=True while adapters {on_embeddings} target an "
                         "nn.Embedding, which does not support a bias. Leave either group out of the call.")


def _combine_biases(layer, adapters, weights, adapter_name):
    """The new lora_B bias: ``sum_i w_i s_i b_i`` over the sources with a bias here, in the bias's dtype, as
    PEFT 0.22 adds them (``w * s`` a Python float first)."""
    target = layer.lora_B[adapter_name].bias
    total = np.zeros(target.shape, _host(target._array).dtype)
    for adapter, weight in zip(adapters, weights):
        if adapter in layer.lora_B and layer.lora_bias.get(adapter):
            total += total.dtype.type(weight * layer.scaling[adapter]) * _host(layer.lora_B[adapter].bias._array)
    target._array[...] = xp_of(target._array).asarray(total)


def _factors(layer, adapter):
    """(A [r, in], B [out, r]) plain arrays of ``adapter`` in ``layer``, or None if it is not there."""
    if isinstance(layer, Embedding):
        if adapter not in layer.lora_embedding_A:
            return None
        return layer.lora_embedding_A[adapter]._array, layer.lora_embedding_B[adapter]._array
    if adapter not in layer.lora_A:
        return None
    return layer.lora_A[adapter].weight._array, layer.lora_B[adapter].weight._array


def _replace_factors(layer, adapter, A, B):
    """Make ``A`` and ``B`` the adapter's weights, dtype included (PEFT assigns ``.data``)."""
    if isinstance(layer, Embedding):
        params = layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
    else:
        params = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    for param, value in zip(params, (A, B)):
        if value.dtype == param.dtype and value.shape == param.shape:
            param._array[...] = value
        else:
            param.data = Tensor._make(value, param.device, False, None)


def _host_factors(layer, adapter):
    """``_factors`` as NumPy arrays: the merge rules run on the host (on cuda, copies)."""
    found = _factors(layer, adapter)
    return None if found is None else (_host(found[0]), _host(found[1]))


def _times(array, number):
    """``array * number`` as torch computes it: a 16-bit array in float32, rounded back once (NumPy would
    round the number to bfloat16 first)."""
    if array.dtype.itemsize == 2 and dtypes.is_floating(array.dtype):
        return (dtypes.upcast(array) * np.float32(number)).astype(array.dtype)
    return array * number


def _cat(layer, adapters, weights):
    """Ranks stacked: A rows ``w_i s_i A_i``, B columns ``B_i`` (exact)."""
    As, Bs = [], []
    for adapter, weight in zip(adapters, weights):
        found = _host_factors(layer, adapter)
        if found is not None:
            As.append(_times(_times(found[0], weight), layer.scaling[adapter]))
            Bs.append(found[1])
    if not As:
        raise ValueError("No matching LoRAs found. Please raise an issue on GitHub.")
    return np.concatenate(As, axis=0), np.concatenate(Bs, axis=1)


def _task_arithmetic_factors(kind, layer, adapters, weights, density, majority_sign_method, rng):
    """Combine the A's and the B's separately, each weighted by ``sqrt(|w s|)`` (the sign on A only)."""
    weights_A, weights_B, As, Bs = [], [], [], []
    dtype = None
    for adapter, weight in zip(adapters, weights):
        found = _host_factors(layer, adapter)
        if found is None:
            continue
        ws = weight * layer.scaling[adapter]
        weights_A.append(math.sqrt(abs(ws)) * (1 if ws >= 0 else -1))
        weights_B.append(math.sqrt(abs(ws)))
        As.append(dtypes.upcast(found[0]))
        Bs.append(dtypes.upcast(found[1]))
        if dtype is None:  # PEFT rounds the result to the first adapter's dtype
            dtype = found[0].dtype
    weights_A, weights_B = _as_peft_weights(weights_A), _as_peft_weights(weights_B)
    return (_combine(kind, As, weights_A, density, majority_sign_method, rng).astype(dtype, copy=False),
            _combine(kind, Bs, weights_B, density, majority_sign_method, rng).astype(dtype, copy=False))


def _as_peft_weights(weights):
    """The weights as PEFT combines them: ``torch.tensor(list of floats)``, i.e. rounded to float32
    (-0.7 is -0.699999988...), whatever the adapters' dtype."""
    return np.asarray(weights, dtype=np.float32)


def _check_svd_driver_device(lora_model, adapters):
    """torch.linalg.svd takes ``driver=`` for CUDA tensors only: PEFT's SVD combination of a CPU model raises
    torch's RuntimeError (after making the new adapter); minilora raises it before changing anything."""
    held = [layer for layer in lora_model.tuner_layers() if any(_factors(layer, name) is not None for name in adapters)]
    if any(next(iter(layer.parameters())).device.type == "cpu" for layer in held):
        raise RuntimeError("torch.linalg.svd: keyword argument `driver=` is only supported on CUDA inputs with "
                           "cuSOLVER backend.")


def _svd_factors(kind, layer, adapters, weights, new_rank, density, majority_sign_method, clamp,
                 full_matrices, rng):
    """The combined full-size update, truncated to rank ``new_rank`` by SVD: ``B = U_r S_r``, ``A = V_r^T``."""
    present = [(a, w) for a, w in zip(adapters, weights) if _factors(layer, a) is not None]
    if not present:
        raise ValueError("No matching LoRAs found. Please raise an issue on GitHub.")
    deltas = [dtypes.upcast(_host(layer.get_delta_weight(a))) for a, _ in present]  # already scaled
    weights = _as_peft_weights([w for _, w in present])
    delta = _combine(kind[:-len("_svd")] if kind != "svd" else "svd", deltas, weights, density,
                     majority_sign_method, rng)
    if isinstance(layer, Embedding):
        delta = delta.T  # an embedding's delta is [num_embeddings, dim]; its factors are for [dim, num]
    A_in, B_out = _factors(layer, present[0][0])
    delta = delta.reshape(delta.shape[0], -1)  # a convolution's [out, in, *kernel] as [out, in * kernel] (PEFT)
    # A layer whose update has fewer than new_rank singular values (a 2-output head under rank 8) gets
    # factors only that wide, as PEFT's slices U[:, :r], S[:r], Vh[:r] with svd_full_matrices=False; layer.r
    # keeps new_rank. (With PEFT's default full_matrices=True its Vh keeps r rows for a B of fewer columns,
    # an adapter whose forward fails; minilora keeps the working narrow pair either way.)
    rank = min(new_rank, *delta.shape)
    U, S, Vh = linalg.svd_of_array(delta, full_matrices=full_matrices)
    U = U[:, :rank] * S[:rank]
    Vh = Vh[:rank, :]
    if clamp is not None:  # clip outliers at the clamp quantile of all factor entries (kohya's svd merge)
        high = np.quantile(np.concatenate([U.reshape(-1), Vh.reshape(-1)]), clamp)
        U, Vh = np.clip(U, -high, high), np.clip(Vh, -high, high)
    # a convolution's factors: A [r, in, *kernel], B [out, r, 1, ...] (a Linear's reshape changes nothing)
    return Vh.reshape((rank,) + A_in.shape[1:]), U.reshape(B_out.shape[:1] + (rank,) + B_out.shape[2:])


def _warn_base_factorised_again(adapter_name, first, init_lora_weights):
    """PEFT builds the new adapter from the first one's config, init included: a PiSSA / OLoRA / CorDA / LoRA-GA
    init factorises the (already residual) base weights again before the combination overwrites the factors,
    so the base, and every other adapter's output, changes. minilora does the same (PEFT's numbers), and says so."""
    warnings.warn(f"add_weighted_adapter: {adapter_name!r} takes init_lora_weights={init_lora_weights!r} from "
                  f"{first!r}, as PEFT's does, so its init changed the base weights (W_res - s B A once more) "
                  "before the combination replaced its factors: the base model and the other adapters' outputs "
                  "changed too. Combine such adapters on a model loaded again, or convert them to plain LoRA "
                  "first (save_pretrained(path_initial_model_for_weight_conversion=...)).")


def _warn_layers_replicated_again(adapter_name, first, layer_map):
    """PEFT's new adapter takes the first one's ``layer_replication`` too, and its injection replicates the (already
    replicated) layers by that map once more: the model's layers change under every adapter. As PEFT, and said."""
    warnings.warn(f"add_weighted_adapter: {adapter_name!r} takes layer_replication={layer_map!r} from {first!r}, as "
                  "PEFT's does, so the model's (already replicated) layers were replicated by it again: the "
                  "layers, and every adapter's output, changed.")


def add_weighted_adapter(lora_model, adapters, weights, adapter_name, combination_type="svd", svd_rank=None,
                         svd_clamp=None, svd_full_matrices=True, svd_driver=None, density=None,
                         majority_sign_method="total"):
    """Add adapter ``adapter_name`` combined from ``adapters`` with ``weights`` (PEFT's signature).

    As PEFT, nothing happens if ``adapter_name`` exists already; the new adapter is neither active nor
    trainable (``set_adapter(adapter_name)`` to use it). ``svd_driver`` selects a cuSOLVER routine in
    torch: minilora's SVD is NumPy's (LAPACK gesdd) whatever the value; on a CPU model it is torch's error.
    """
    if adapter_name in lora_model.peft_config:
        return
    if svd_driver not in (None, "gesvd", "gesvdj", "gesvda"):
        raise ValueError(f"svd_driver must be None, 'gesvd', 'gesvdj' or 'gesvda', got {svd_driver!r}")
    if combination_type not in COMBINATION_TYPES:
        raise ValueError(f"Invalid combination_type: {combination_type}")
    if len(weights) != len(adapters):
        raise ValueError(f"add_weighted_adapter: {len(adapters)} adapters but {len(weights)} weights")
    combination_type, new_rank, new_targets = _check(lora_model, adapters, combination_type, svd_rank)
    biased = [name for name in adapters if getattr(lora_model.peft_config[name], "lora_bias", False)]
    _refuse_bias_with_embeddings(lora_model, adapters, biased)
    if svd_driver is not None and combination_type.endswith("svd"):
        _check_svd_driver_device(lora_model, adapters)
    needs_density = combination_type not in ("linear", "cat", "svd")
    if needs_density and density is None:
        raise ValueError(f"combination_type={combination_type!r} needs density (the fraction of entries kept)")
    config = copy.deepcopy(lora_model.peft_config[adapters[0]])
    config.r, config.lora_alpha, config.target_modules = new_rank, new_rank, new_targets
    config.rank_pattern, config.alpha_pattern = {}, {}
    # scaling 1 (each source's is in the combined factors): so no rsLoRA (r / sqrt(r)), as PEFT 0.22
    config.use_rslora, config.lora_bias = False, bool(biased)
    if is_weight_mutating_init(config.init_lora_weights):
        _warn_base_factorised_again(adapter_name, adapters[0], config.init_lora_weights)
    masks = None  # DARE's masks: the global generator, after the new adapter's init (PEFT's order)
    active = lora_model.active_adapter
    if getattr(config, "layer_replication", None) is not None:
        _warn_layers_replicated_again(adapter_name, adapters[0], config.layer_replication)
    lora_model.inject_adapter(adapter_name, config)
    lora_model.set_adapter(active)  # the new adapter stays inactive and frozen
    for layer in lora_model.tuner_layers():
        if not isinstance(layer, (Linear, Embedding)) or _factors(layer, adapter_name) is None:
            continue
        target_A, target_B = _factors(layer, adapter_name)
        layer_xp = xp_of(target_A)
        target_A[...] = 0
        target_B[...] = 0
        if combination_type == "cat":
            A, B = _cat(layer, adapters, weights)
        elif combination_type.endswith("svd"):
            A, B = _svd_factors(combination_type, layer, adapters, weights, new_rank, density,
                                majority_sign_method, svd_clamp, svd_full_matrices, masks)
        else:
            A, B = _task_arithmetic_factors(combination_type, layer, adapters, weights, density,
                                            majority_sign_method, masks)
        if combination_type == "cat":  # into the new adapter's arrays (the base dtype), as PEFT's data[:r] = ...
            target_A[:A.shape[0], :] = layer_xp.asarray(A)  # on cuda, to the device: CuPy does not
            target_B[:, :B.shape[1]] = layer_xp.asarray(B)  # fill a slice from a host array
        else:  # PEFT's lora_A.weight.data = A: the new adapter takes the result's dtype
            _replace_factors(layer, adapter_name, layer_xp.asarray(A), layer_xp.asarray(B))
        if biased and not isinstance(layer, Embedding):
            _combine_biases(layer, adapters, weights, adapter_name)
