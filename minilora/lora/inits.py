"""Data-driven LoRA initialisations that move part of W0 into the adapter: PiSSA, OLoRA, and the last step of
CorDA (``corda.py``) and LoRA-GA (``loraga.py``) (PEFT's numbers).

* ``init_lora_weights="pissa"``: W0 = U S V^T; the adapter takes the top-r singular triplets,
  ``B = U_r sqrt(S_r / s)``, ``A = sqrt(S_r / s) V_r^T`` (so ``s B A`` is the best rank-r part of W0),
  and the base keeps the residual ``W0 - s B A``. Training starts on the principal directions.
* ``"pissa_niter_K"``: the same with a randomised SVD (Halko et al., ``torch.svd_lowrank`` with K power
  iterations): much cheaper for large W0, its random start drawn as torch's (the same seed: PEFT's start).
* ``"olora"``: W0 = Q R (QR decomposition); ``B = Q[:, :r]``, ``A = R[:r]``, base ``W0 - s B A``.

The output of the model does not change at init (``W_res + s B A = W0``), but the base weights do, so
such an adapter only works on the residual base. ``save_pretrained(path_initial_model_for_weight_conversion=
initial_dir)`` turns it into a plain LoRA for the *original* base: ``s B A - s B0 A0 = s [B, -B0] [A; A0]``,
saved at rank 2r with alpha 2*alpha (the same scaling), exactly as PEFT does.

PEFT computes in float32 for float32, float16 and bfloat16 weights (the factors stay float32, the
residual is rounded once to the weight's dtype), and so does minilora, to give PEFT's numbers. PEFT
refuses float64 weights; minilora factorises them in float64.
"""
import os

import numpy as np

from .. import blas, dtypes, float32_math, linalg
from ..checkpoint import atomic_folder, load_file, save_file, save_json
from ..factories import randn
from ..tensor import Tensor, _host, no_grad

__all__ = ["init_name", "is_weight_mutating_init", "pissa_init", "olora_init", "corda_init", "lora_ga_init",
           "mica_init", "orthogonal_init", "svd_lowrank", "replace_lora_weights_loftq", "save_converted_to_lora"]


def init_name(init_lora_weights):
    """The init's name in lower case (PEFT compares "gaussian" and "olora" case-insensitively: "Gaussian"
    works there), or the value itself (True / False)."""
    return init_lora_weights.lower() if isinstance(init_lora_weights, str) else init_lora_weights


def is_weight_mutating_init(init_lora_weights):
    """True for the inits that change the base weight: "pissa", "pissa_niter_K", "olora", "corda", "lora_ga"."""
    return isinstance(init_lora_weights, str) and (init_lora_weights.lower() in ("olora", "corda", "lora_ga")
                                                   or init_lora_weights.lower().startswith("pissa"))


def parse_pissa_niter(init_lora_weights):
    """``"pissa_niter_4"`` -> 4; ``"pissa"`` -> None; anything else -> PEFT's ValueError."""
    if init_lora_weights == "pissa":
        return None
    parts = init_lora_weights.split("_niter_")
    if len(parts) == 2 and parts[0] == "pissa" and parts[1].isdigit():
        return int(parts[1])
    raise ValueError(f"init_lora_weights should be 'pissa' or 'pissa_niter_[number of iters]', got "
                     f"{init_lora_weights} instead.")


def svd_lowrank(A, q, niter=2):
    """Randomised rank-``q`` SVD of the host array ``A``, ``A ~ U diag(S) V^T``: ``torch.svd_lowrank``
    (``linalg.svd_lowrank``: torch's random start from the global generator, ``niter`` power iterations,
    then an exact SVD of a q-row matrix), as host arrays."""
    with no_grad():
        # (on the cpu whatever the default device: the factors stay host arrays, as the callers expect)
        return tuple(factor._array for factor in linalg.svd_lowrank(Tensor(A, dtype=A.dtype, device="cpu"), q, niter))


def _torch_randn(shape, dtype=None):
    """``torch.randn(shape, dtype=dtype)``'s numbers (the global generator; the default dtype) as a
    host array: PEFT draws its random starts and bare adapter tables this way."""
    dtype = None if dtype is None else np.dtype(dtype)  # (torch.randn takes a dtype object, not NumPy's type)
    return randn(shape, dtype=dtype, device="cpu")._array  # (on the host whatever the default device)


# PEFT's refusals of a base weight outside float32/float16/bfloat16 (float64), by method: it factors in float32
_NOT_FLOAT32 = {
    "PiSSA": "Please initialize PiSSA under float32, float16, or bfloat16. Subsequently, re-quantize the residual "
             "model to help minimize quantization errors.",
    "CorDA": "Please initialize CorDA under float32, float16, or bfloat16. Subsequently, re-quantize the residual "
             "model to help minimize quantization errors.",
    "MiCA": "Please initialize MiCA under float32, float16, or bfloat16.",
    "OLoRA": "Unsupported data type for the base layer. Got {dtype}.",
}


def _base_weight(layer, method=None):
    """The base weight on the host in float32, the dtype PEFT factors it in (``weight.to(torch.float32)``).
    ``method`` names an init that PEFT refuses for a float64 weight (a TypeError in its words), where a float64
    factorisation would give other numbers than PEFT's float32 one; without it a float64 weight stays float64."""
    W = _host(layer.base_layer.weight._array)
    if W.dtype == np.float64 and method is not None:
        raise TypeError(_NOT_FLOAT32[method].format(dtype=f"torch.{W.dtype}"))
    return W.astype(np.float64 if W.dtype == np.float64 else np.float32)


def _write_factors(layer, adapter_name, W, A, B):
    """Set lora_A/lora_B and subtract ``s B A`` from the base weight ``W`` (the compute-dtype copy),
    as PEFT: ``W - (s * B) @ A`` in the compute dtype, rounded once to the weight's own dtype."""
    weight = layer.base_layer.weight
    to_device = weight.device.xp.asarray  # the factors are computed on the host (NumPy's SVD and QR)
    for table, factor in ((layer.lora_A, A), (layer.lora_B, B)):
        _replace_data(table[adapter_name].weight, to_device(factor))
    residual = W - blas.matmul(W.dtype.type(layer.scaling[adapter_name]) * B, A)  # (torch's mm: MKL's gemm)
    weight._array[...] = to_device(residual.astype(weight._array.dtype))


def _replace_data(param, factor):
    """PEFT's ``lora_A[name].weight.data = factor`` (in the parameter's dtype, which PEFT casts to next).
    With r > min(out, in) the SVD and the QR have only min(out, in) components: the adapter is that
    narrow, as in PEFT (``layer.r`` and the scaling keep the configured r, as there)."""
    if tuple(factor.shape) == tuple(param.shape):
        param._array[...] = factor
    else:
        param.data = Tensor(factor, dtype=param._array.dtype, device=param.device)


def pissa_init(layer, adapter_name, init_lora_weights):
    """PiSSA: the adapter gets W0's top-r singular triplets, the base keeps the rest."""
    r, s = layer.r[adapter_name], layer.scaling[adapter_name]
    W = _base_weight(layer, "PiSSA")
    niter = parse_pissa_niter(init_lora_weights)
    if niter is None:
        U, S, Vh = linalg.svd_of_array(W, full_matrices=False)
        Ur, Sr, Vhr = U[:, :r], S[:r] / s, Vh[:r]
    else:
        Ur, Sr, V = svd_lowrank(W, r, niter=niter)
        Sr, Vhr = Sr / s, V.T
    root = float32_math.mkl_sqrt(Sr)  # (torch.sqrt: MKL's, not correctly rounded)
    _write_factors(layer, adapter_name, W, A=root[:, None] * Vhr, B=Ur * root)


def orthogonal_init(layer, adapter_name):
    """``init_lora_weights="orthogonal"`` (PEFT's): Q from the QR of an r x r Gaussian; A takes Q's even-
    numbered rows (0, 2, ...), B the odd ones, each times a Gaussian, over 10. Rows of Q are orthogonal, so
    ``B A = 0`` up to rounding: the model starts at the base, with both factors nonzero (the base weight
    is untouched, unlike OLoRA). Drawn in float32, then cast, as PEFT (its numbers come from torch's RNG)."""
    r = layer.r[adapter_name]
    if r % 2 != 0:  # PEFT's words
        raise ValueError(f"Orthogonal initialization requires the LoRA rank to be even, got {r} instead.")
    Q = linalg.qr_of_array(_torch_randn((r, r), np.float32))[0]
    A = (_torch_randn((layer.in_features, r // 2), np.float32) @ Q[0::2]).T / np.float32(10)
    B = _torch_randn((r // 2, layer.out_features), np.float32).T @ Q[1::2] / np.float32(10)
    for table, value in ((layer.lora_A, A), (layer.lora_B, B)):
        weight = table[adapter_name].weight
        weight._array[...] = weight.device.xp.asarray(value.astype(weight._array.dtype))


def corda_init(layer, adapter_name):
    """CorDA (``lora/corda.py``): the adapter takes the eigens ``preprocess_corda`` left on the base layer,
    ``A = sqrt(S / s) V^T``, ``B = U sqrt(S / s)``; the base keeps ``W - s B A``. PEFT's checks and words."""
    r, s = layer.r[adapter_name], layer.scaling[adapter_name]
    linear = layer.base_layer
    W = _base_weight(layer, "CorDA")
    eigens = getattr(linear, "eigens", None)
    if eigens is None:
        raise ValueError("`eigens` attribute not found for layer, please run `preprocess_corda` first. "
                         "More information can be found at examples/corda_finetuning/README.md.")
    U, S, V = (_host(getattr(eigens, part)._array) for part in ("U_WC", "S_WC", "V_WC"))
    for what, factor in (("S", S), ("U", U), ("V", V)):
        if not np.isfinite(factor).all():
            raise ValueError(f"Invalid value found in matrix {what}. Please file an issue at "
                             "https://github.com/huggingface/peft/issues.")
    for what, shape, expected in (("U", U.shape, (layer.out_features, r)), ("S", S.shape, (r,)),
                                  ("V", V.shape, (layer.in_features, r))):
        if shape != expected:
            raise ValueError(f"Matrix {what} size mismatch: {shape} vs. {expected}. Please make sure the "
                             "`lora_config` and `model` argument of `preprocess_corda` is consistent with "
                             "`get_peft_model`. If you're using cache in `preprocess_corda`, please make sure the "
                             "cache is built with the same model and LoRA rank.")
    root = float32_math.mkl_sqrt(S / S.dtype.type(s))  # (torch.sqrt: MKL's)
    _write_factors(layer, adapter_name, W, A=V.T * root[:, None], B=U * root)
    del linear.eigens


def lora_ga_init(layer, adapter_name, lora_ga_config):
    """LoRA-GA (``lora/loraga.py``): A and B from the randomised SVD of the gradient ``preprocess_loraga`` left on
    the base layer, as PEFT's ``lora_ga_init`` (without one -- an adapter being loaded -- A is drawn as for True)."""
    base = layer.base_layer
    grad = getattr(base, "_peft_loraga_grad", None)
    if grad is None:
        from .layers import _redraw_A
        _redraw_A(layer.lora_A[adapter_name].weight, True, layer.r[adapter_name])
        return
    if lora_ga_config is None:  # PEFT's words
        raise ValueError("lora_ga_config must be provided when init_lora_weights='lora_ga'. Please pass "
                         "lora_ga_config=LoraGAConfig(...) to LoraConfig.")
    r, s = layer.r[adapter_name], layer.scaling[adapter_name]
    G = _host(grad._array).astype(np.float32)
    U, S, V = svd_lowrank(G, min(4 * r, min(G.shape)), niter=4)
    U, S, Vh = U[:, :2 * r], S[:2 * r], V.T[:2 * r]
    A, B, S_B = _lora_ga_split(U, S, Vh, r, lora_ga_config.direction)
    B = B * S_B
    if lora_ga_config.scale == "stable":
        B = B * np.float32(layer.out_features ** 0.25 / lora_ga_config.stable_gamma ** 0.5)
    elif lora_ga_config.scale == "weight_svd":
        weight_S = svd_lowrank(_base_weight(layer).astype(np.float32), r, niter=4)[1]
        if S_B[0] > 0:
            B = B * (weight_S[0] / S_B[0])
    elif lora_ga_config.scale == "gd_scale":
        A, B = A / np.float32(s), B / np.float32(s)
    weight = base.weight
    A, B = (Tensor(f, device=weight.device).to(weight.dtype) for f in (A, B))  # the base's dtype, as PEFT's
    for table, factor in ((layer.lora_A, A), (layer.lora_B, B)):
        _replace_data(table[adapter_name].weight, factor._array)
    offset = np.float32(s) * blas.matmul(dtypes.upcast(_host(B._array)), dtypes.upcast(_host(A._array)))
    residual = _host(weight._array).astype(np.float32) - offset
    weight._array[...] = weight.device.xp.asarray(residual.astype(weight._array.dtype))
    del base._peft_loraga_grad


def _lora_ga_split(U, S, Vh, r, direction):
    """PEFT's directions: which of the 2r singular triplets go to A (rows of Vh) and to B (columns of U)."""
    if direction == "ArBr":
        return Vh[1:2 * r:2], U[:, 0:2 * r:2], S[0:2 * r:2]
    if direction == "A2rBr":
        return Vh[r:2 * r], U[:, :r], S[:r]
    if direction == "ArB2r":
        return Vh[:r], U[:, r:2 * r], S[r:2 * r]
    if direction == "random":
        from ..factories import randperm
        indices = randperm(2 * r).numpy()[:r]
        return Vh[indices], U[:, indices], S[indices]
    raise ValueError(f"lora_ga_config.direction must be 'ArBr', 'A2rBr', 'ArB2r' or 'random', got {direction!r}")


def mica_init(layer, adapter_name, freeze_B=True):
    """MiCA, minor component adaptation (PEFT's ``init_lora_weights="mica"``): B = the left singular vectors of
    the r smallest singular values of W (of W^T for an embedding table), A = 0, and B never trains (``freeze_B``:
    PEFT freezes it for "mica" written so; "MiCA" gets the init without the freeze, as there). The base weight
    is untouched. A singular vector's sign is LAPACK's choice (NumPy's may differ from torch's MKL): the update
    s B A stays the same as training goes, A's row following its B column's sign."""
    embedding = adapter_name in layer.lora_embedding_A  # (a lora.Embedding's tables; a Linear's dict is empty)
    W = _base_weight(layer, "MiCA")
    W = W.T if embedding else W
    r = layer.r[adapter_name]
    if r > min(W.shape):  # PEFT's words
        shape = tuple(layer.base_layer.weight.shape)
        raise ValueError(f"MiCA requires `r` <= min(in_features, out_features) but got r={r} for a layer with weight "
                         f"shape {shape} (max usable r is {min(W.shape)})." if not embedding else
                         f"MiCA requires `r` <= min(num_embeddings, embedding_dim) but got r={r} for an embedding "
                         f"layer with weight shape {shape} (max usable r is {min(W.shape)}).")
    B = linalg.svd_of_array(W, full_matrices=False)[0][:, -r:]
    A = np.zeros((r, W.shape[1]), np.float32)
    dtype = layer.base_layer.weight.dtype
    if embedding:
        tables = (layer.lora_embedding_A[adapter_name], layer.lora_embedding_B[adapter_name])
        frozen = "lora_embedding_B"
    else:
        tables = (layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight)
        frozen = "lora_B"
    for param, factor in zip(tables, (A, B)):
        param.data = Tensor(factor, device=param.device).to(dtype)  # PEFT's weight.data = factor.to(base dtype)
    if freeze_B:
        layer.frozen_peft_weight_names = {**layer.frozen_peft_weight_names, adapter_name: (frozen,)}


def replace_lora_weights_loftq(peft_model, model_path=None, adapter_name="default", callback=None):
    """PEFT's LoftQ on a bitsandbytes 4-bit model: refused by name (minilora has no quantized layers)."""
    raise NotImplementedError("replace_lora_weights_loftq is not implemented in minilora: PEFT's LoftQ replaces the "
                              "LoRA weights of a model quantized with bitsandbytes (4-bit, on a CUDA device), and "
                              "minilora has no quantized layers")


def olora_init(layer, adapter_name):
    """OLoRA: W0 = Q R; the adapter gets Q's first r columns and R's first r rows."""
    r = layer.r[adapter_name]
    W = _base_weight(layer, "OLoRA")
    Q, R = linalg.qr_of_array(W)
    _write_factors(layer, adapter_name, W, A=R[:r], B=Q[:, :r])


# ==================================================================================================
# Saving a PiSSA/OLoRA adapter as a plain LoRA for the original base (PEFT's conversion)
# ==================================================================================================
def _doubled_config(config_dict):
    """r and alpha doubled (rsLoRA: alpha * sqrt 2), so [A; A0] and [B, -B0] keep the scaling."""
    out = dict(config_dict, init_lora_weights=True, r=config_dict["r"] * 2)
    out["lora_alpha"] = config_dict["lora_alpha"] * (2 ** 0.5 if config_dict["use_rslora"] else 2)
    out["rank_pattern"] = {k: 2 * v for k, v in (config_dict.get("rank_pattern") or {}).items()}
    out["alpha_pattern"] = {k: 2 * v for k, v in (config_dict.get("alpha_pattern") or {}).items()}
    return out


def converted_tensors(tensors, initial, ranks=None):
    """``A' = [A; A0]``, ``B' = [B, -B0]`` per LoRA pair: ``B' A' = B A - B0 A0`` (what training added).

    ``ranks`` (``{key: r}``): a factor narrower than its layer's r (PiSSA/OLoRA with r > min(out, in)) is
    first padded with zero ranks up to r, so the file is the plain rank-2r LoRA its config says (B' A' is
    unchanged); PEFT's conversion stops there with a size mismatch."""
    out = {}
    for key, value in tensors.items():
        value = value.numpy(force=True) if hasattr(value, "numpy") else value  # get_peft_model_state_dict's Tensors
        if key not in initial:
            raise ValueError(f"the initial adapter has no tensor {key!r}: it is not this adapter's starting point")
        r = (ranks or {}).get(key, 0)
        if "lora_A" in key:
            out[key] = np.concatenate([_pad_ranks(value, r, 0), _pad_ranks(initial[key], r, 0)], axis=0)
        elif "lora_B" in key:
            out[key] = np.concatenate([_pad_ranks(value, r, 1), -_pad_ranks(initial[key], r, 1)], axis=1)
    return out


def _pad_ranks(factor, r, axis):
    """``factor`` with zero ranks added along ``axis`` up to ``r`` (a zero rank adds nothing to B A)."""
    missing = r - factor.shape[axis]
    if missing <= 0:
        return factor
    widths = [(0, 0)] * factor.ndim
    widths[axis] = (0, missing)
    return np.pad(factor, widths)


def _layer_ranks(peft_model, adapter_name, keys):
    """``{state-dict key: the layer's r}`` for the adapter's lora_A / lora_B keys (as get_peft_model_state_dict
    names them: the module's full name, then ``.lora_A.weight``)."""
    ranks = {}
    for name, module in peft_model.named_modules():
        r = getattr(module, "r", None)
        if isinstance(r, dict) and adapter_name in r:
            for part in ("lora_A", "lora_B"):
                ranks[f"{name}.{part}.weight"] = r[adapter_name]
    return {key: ranks[key] for key in keys if key in ranks}


def save_converted_to_lora(peft_model, save_directory, initial_directory, selected_adapters=None):
    """``save_pretrained(..., path_initial_model_for_weight_conversion=initial_directory)``.

    As PEFT: the current config is first written to ``initial_directory`` with ``init_lora_weights=True``
    (so loading that folder never re-runs the init), then each adapter is saved as the rank-2r LoRA
    ``[B, -B0] [A; A0]`` that works on the original, unmutated base weights."""
    from . import save as _io  # save.py imports the layers, which import this module
    names = list(peft_model.peft_config) if selected_adapters is None else list(selected_adapters)
    initial = load_file(os.path.join(initial_directory, _io.WEIGHTS_NAME))
    files = {}  # adapter name -> (tensors, config): every adapter converted before anything is written
    for name in names:
        config = peft_model.peft_config[name].to_dict()
        if config["use_rslora"] and (config["rank_pattern"] or config["alpha_pattern"]):
            raise ValueError("Passing `path_initial_model_for_weight_conversion` to `save_pretrained` is not "
                             "supported when using `rank_pattern` or `alpha_pattern` at the same time as "
                             "`use_rslora=True`.")
        config["inference_mode"] = True
        if config["base_model_name_or_path"] is None:
            config["base_model_name_or_path"] = _io._name_or_path(peft_model.get_base_model())
        tensors = _io.get_peft_model_state_dict(peft_model, adapter_name=name)
        files[name] = converted_tensors(tensors, initial, _layer_ranks(peft_model, name, tensors)), config
    if files:  # (PEFT writes it for each adapter in turn: the last one's stays)
        _, last_config = list(files.values())[-1]
        save_json(dict(last_config, init_lora_weights=True), os.path.join(initial_directory, _io.CONFIG_NAME))
    # One unit, as save_adapters: a kill mid-save must not leave the rank-2r weights beside the old rank-r
    # config (a folder that no longer loads), nor one adapter converted and the next not.
    with atomic_folder(save_directory) as tmp:
        for name, (tensors, config) in files.items():
            directory = _io._adapter_dir(tmp, name)
            save_file(tensors, os.path.join(directory, _io.WEIGHTS_NAME), metadata={"format": "pt"})
            save_json(_doubled_config(config), os.path.join(directory, _io.CONFIG_NAME))
