"""CorDA, context-oriented decomposition adaptation (PEFT's ``init_lora_weights="corda"``): like PiSSA the adapter
takes r singular directions of the weight and the base keeps the rest, but of ``W C`` -- the weight times the
covariance ``C`` of the layer's inputs over sample data -- so the directions are the ones that data excites.

    config = LoraConfig(r=8, target_modules=[...], init_lora_weights="corda",
                        corda_config=CordaConfig(corda_method="ipm"))
    preprocess_corda(model, config, run_model=lambda: [model(ids) for ids in samples])
    model = get_peft_model(model, config)

``preprocess_corda`` (PEFT 0.21's ``peft.tuners.lora.corda``, step for step):

1. A forward hook on each target Linear adds ``X^T X`` of its input (one sample a call, scaled by its maximum)
   while ``run_model()`` runs; ``C`` is the mean over the calls.
2. ``W C = U S Vh`` with ``C`` damped until it inverts (``C + damp * mean(diag C) * I``, damp 0.01, doubled
   while ``||C C^-1 - I|| >= 0.05``); ``V = (Vh C^-1)^T``, so ``U S V^T = W``.
3. ``corda_method="ipm"`` keeps the r largest (the directions the data uses: fine-tune them), ``"kpm"`` the r
   smallest (leave the knowledge the data uses in the base). The eigens sit on each layer as ``layer.eigens``.

``get_peft_model`` then sets ``A = sqrt(S / s) V^T``, ``B = U sqrt(S / s)`` and the base weight to
``W - s B A`` (``inits.corda_init``). ``save_pretrained(path_initial_model_for_weight_conversion=...)`` turns it
into a plain LoRA as for PiSSA. The covariance and cache files are minilora's ``torch.save`` files (PEFT's are
torch pickles, which minilora does not read). The arithmetic is float32, as PEFT's; the LAPACKs differ in their
last bits and may choose the opposite sign for a singular pair (B A is the same).
"""
import os
from dataclasses import dataclass

import numpy as np

from .. import linalg
from ..nn import Linear as _NNLinear
from ..tensor import Tensor, _host, no_grad
from .config import CordaConfig

__all__ = ["CordaConfig", "CordaEigens", "preprocess_corda"]


@dataclass
class CordaEigens:
    S_WC: Tensor
    U_WC: Tensor
    V_WC: Tensor


_FILE_ISSUE = "please file an issue at https://github.com/huggingface/peft/issues."
_TEMPORARY_FIELDS = ("sample_count", "covariance_matrix", "corda_method", "rank")


def _target_modules(model, config):
    from .model import target_module_matches
    for name, module in model.named_modules():
        if isinstance(module, _NNLinear) and target_module_matches(config, name):
            yield name, module


def _load(path):
    from ..serialization import load
    return load(path)


def cached_entry(cache, path, key, shape):
    """``cache[key]`` of a cache file (CorDA's, LoRA-GA's) that must fit this model's layer: ``shape`` with None
    where any size goes. A file computed for another model or other target_modules (an entry missing, or of
    another shape) is refused naming the file, not a bare KeyError or a broadcast error far from it."""
    again = "delete it (or pass another file name) to compute it for this model"
    if not isinstance(cache, dict) or key not in cache:
        raise ValueError(f"{path} has no entry {key!r}: it was computed for another model or other target_modules; "
                         f"{again}")
    value = cache[key]
    got = tuple(getattr(value, "shape", ()))
    if len(got) != len(shape) or any(want is not None and size != want for size, want in zip(got, shape)):
        needed = tuple("any" if want is None else want for want in shape)
        raise ValueError(f"{path}: entry {key!r} has shape {got}, this model's layer needs {needed}: the file was "
                         f"computed for another model; {again}")
    return value


def _save(obj, path):
    from ..serialization import save
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # (PEFT's makedirs("") fails on a bare file name)
    save(obj, path)


def _nonempty_file(path):
    return path is not None and os.path.exists(path) and os.path.getsize(path) > 0


def preprocess_corda(model, lora_config, run_model=None, hooked_model=None):
    """PEFT's: the covariance of each target layer's inputs (or ``covariance_file``), then the cropped eigens
    of ``W C`` on each layer (or ``cache_file``), for ``get_peft_model`` with ``init_lora_weights="corda"``."""
    corda = lora_config.corda_config
    with no_grad():
        if _nonempty_file(corda.cache_file):
            cache = _load(corda.cache_file)
            for name, module in _target_modules(model, lora_config):
                out_dim, in_dim = module.weight.shape
                module.eigens = CordaEigens(*(cached_entry(cache, corda.cache_file, f"{name}.eigens.{part}", shape)
                                              for part, shape in (("S_WC", (None,)), ("U_WC", (out_dim, None)),
                                                                  ("V_WC", (in_dim, None)))))
            return
        if corda.corda_method is None:
            raise ValueError("corda_method is required when cache_file is not provided.")
        from .model import _pattern_value
        for name, module in _target_modules(model, lora_config):
            module.corda_method = corda.corda_method
            module.rank = _pattern_value(lora_config.rank_pattern, name, lora_config.r)
        _covariances(model, lora_config, run_model, hooked_model, corda.covariance_file)
        for name, module in _target_modules(model, lora_config):
            if corda.verbose:
                print(f"Collecting eigens: {name}")
            module.eigens = _eigens_of_layer(module)
        for name, module in _target_modules(model, lora_config):
            _crop(module)
        if corda.prune_temporary_fields:
            for name, module in _target_modules(model, lora_config):
                for field_name in _TEMPORARY_FIELDS:
                    if hasattr(module, field_name):
                        delattr(module, field_name)
        if corda.cache_file is not None:
            _save({f"{name}.eigens.{part}": getattr(module.eigens, part)
                   for name, module in _target_modules(model, lora_config) for part in ("S_WC", "U_WC", "V_WC")},
                  corda.cache_file)


def _covariances(model, config, run_model, hooked_model, covariance_file):
    """Each target layer's ``covariance_matrix``: the mean of ``X^T X / max(X)^2`` over ``run_model``'s calls."""
    if _nonempty_file(covariance_file):
        saved = _load(covariance_file)
        for name, module in _target_modules(model, config):
            in_dim = module.weight.shape[1]
            module.covariance_matrix = cached_entry(saved, covariance_file, name, (in_dim, in_dim))
        return
    if run_model is None:
        raise ValueError("run_model must be specified when covariance file and cache file aren't built.")
    hooked_model = model if hooked_model is None else hooked_model
    hooked_model.eval()
    keep_dtype = config.corda_config.use_float16_for_covariance

    def hook(module, args, output):
        x = args[0].detach().squeeze(0)  # PEFT's: one sample [tokens, features] a call
        x = x if keep_dtype else x.float()
        x = x / x.max().abs()
        if x.isnan().any() or x.isinf().any():
            raise ValueError("Invalid value found in input, please check your input data.")
        covariance = x.t().matmul(x)
        if covariance.isnan().any() or covariance.isinf().any():
            raise ValueError(f"Invalid value found in covariance. Please {_FILE_ISSUE[7:]}")
        module.sample_count += 1
        module.covariance_matrix = module.covariance_matrix + covariance

    handles = []
    for name, module in _target_modules(hooked_model, config):
        module.sample_count, module.covariance_matrix = 0, 0
        handles.append(module.register_forward_hook(hook))
    try:
        run_model()
    finally:
        for handle in handles:
            handle.remove()
    if hooked_model is not model:  # the statistics of a stand-in model, for the layers this model has
        hooked = dict(_target_modules(hooked_model, config))
        for name, module in _target_modules(model, config):
            if name in hooked:
                module.sample_count = hooked[name].sample_count
                module.covariance_matrix = hooked[name].covariance_matrix
    for name, module in _target_modules(model, config):
        module.covariance_matrix = module.covariance_matrix / module.sample_count
    if covariance_file is not None:
        _save({name: module.covariance_matrix for name, module in _target_modules(model, config)}, covariance_file)


def _eigens_of_layer(linear):
    """``W C = U S Vh`` on the damped covariance, ``V = (Vh C^-1)^T`` (PEFT's collect_eigens_for_layer, float32)."""
    if not hasattr(linear, "covariance_matrix"):
        raise ValueError("Covariance matrix not found in linear module. Please do not call this function directly, "
                         "instead call `preprocess_corda`. If your usage is correct but this error still encounters, "
                         f"{_FILE_ISSUE}")
    W = _host(linear.weight._array).astype(np.float32)
    C = _host(linear.covariance_matrix.float()._array)
    identity = np.eye(C.shape[0], dtype=np.float32)
    damp = 0.01
    while True:  # damp C until it inverts to within 0.05 (Frobenius)
        C_fixed = C + np.diag(np.ones(C.shape[0], np.float32) * np.mean(np.diag(C)) * np.float32(damp))
        C_inv = np.linalg.inv(C_fixed)
        if float(np.linalg.norm(C_fixed @ C_inv - identity)) < 0.05:
            break
        damp *= 2
    U, S, Vh = linalg.svd_of_array(W @ C_fixed, full_matrices=False)
    V = (Vh @ C_inv).T
    return CordaEigens(S_WC=Tensor(S), U_WC=Tensor(U), V_WC=Tensor(V))


def _crop(module):
    """Keep the ``rank`` largest ("ipm") or smallest ("kpm") singular triplets."""
    eigens, rank = module.eigens, module.rank
    if module.corda_method == "ipm":
        keep = slice(None, rank)
    elif module.corda_method == "kpm":
        keep = slice(-rank, None)
    else:
        raise ValueError(f"Invalid corda_method found: {module.corda_method}, it should be 'ipm' or 'kpm'.")
    module.eigens = CordaEigens(S_WC=Tensor(eigens.S_WC._array[keep].copy()),
                                U_WC=Tensor(eigens.U_WC._array[:, keep].copy()),
                                V_WC=Tensor(eigens.V_WC._array[:, keep].copy()))
    out_dim, in_dim = module.weight.shape
    for what, size, expected in (("rank", module.eigens.S_WC.shape[0], rank), ("U", module.eigens.U_WC.shape[0],
                                 out_dim), ("U", module.eigens.U_WC.shape[1], rank),
                                 ("V", module.eigens.V_WC.shape[0], in_dim), ("V", module.eigens.V_WC.shape[1], rank)):
        if size != expected:
            raise ValueError(f"{what} {'mismatch' if what == 'rank' else 'size mismatch'}: {size} vs. {expected},"
                             f"{_FILE_ISSUE}")
