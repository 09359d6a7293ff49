"""LoRA, DoRA and VeRA layers: a frozen ``base_layer`` plus small trainable pieces per adapter name.

The LoRA forward is ``Linear.forward`` -> ``ops.lora_linear`` (one fused op: ``W0 x + s B A x``).
The merge math is ``Linear.merge_math``. ``Embedding`` is PEFT's LoRA on an embedding table (a
lookup of r numbers per token, then B). ``ParamWrapper`` adds ``s B A`` to a layer's weight inside its
forward (``target_parameters``); ``TrainableTokensLayer`` trains a few rows of a table in full
(``trainable_token_indices``, ``TrainableTokensConfig``). Everything else here is bookkeeping that PEFT users know:
adapters live in dicts keyed by name (``lora_A["default"]``), so parameter names come out as
``q_proj.lora_A.default.weight`` and ``q_proj.base_layer.weight``, exactly as in PEFT.
"""
import copy
import math
import warnings

import numpy as np

from .. import amp as _amp, dtypes, nn, ops
from ..blas import matmul  # (np.matmul through minilora's BLAS: MKL's, as PEFT's, where installed)
from ..device import xp_of
from ..nn import Conv1d, Conv2d, Dropout, Identity, Module, ModuleDict, MultiheadAttention, Parameter
from ..nn import Embedding as _NNEmbedding
from ..nn import Linear as _NNLinear
from ..nn import init
from ..ops.matmul import linear_node
from ..tensor import Tensor, _host, is_grad_enabled, name_node, with_note
from .inits import (_torch_randn, corda_init, init_name, is_weight_mutating_init, lora_ga_init, mica_init,
                    olora_init, orthogonal_init, pissa_init)

__all__ = ["BaseTunerLayer", "Linear", "Embedding", "LoraLayer", "ParamWrapper", "TrainableTokensLayer",
           "TrainableTokensWrapper", "DoraMagnitude", "VeraLinear", "VeraLayer",
           "ModulesToSaveWrapper", "ParameterDict", "BufferDict", "BASE_ADAPTER"]

BASE_ADAPTER = "__base__"  # in ``adapter_names=[...]``: this sample uses no adapter


class ParameterDict(Module):
    """Parameters registered under their keys (``vera_lambda_b.default``), like ``nn.ParameterDict``."""

    _table = "_parameters"

    def _entries(self):
        return self.__dict__[self._table]

    def __getitem__(self, key):
        return self._entries()[key]

    def __setitem__(self, key, tensor):
        self._entries()[key] = tensor

    def __delitem__(self, key):
        del self._entries()[key]

    def __contains__(self, key):
        return key in self._entries()

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def keys(self):
        return self._entries().keys()

    def values(self):
        return self._entries().values()

    _kind = "Parameter"  # what torch's ParameterDict (PEFT's BufferDict: "Buffer") calls an entry in print()

    def extra_repr(self):
        """One line per entry, as torch prints ``nn.ParameterDict``:
        ``  (default): Parameter containing: [torch.FloatTensor of size 4x37]``."""
        return "\n".join(f"  ({key}): {self._kind} containing: [{value.type()} of size "
                         f"{'x'.join(str(n) for n in value.shape)}]" for key, value in self._entries().items())


class BufferDict(ParameterDict):
    """Frozen tensors registered under their keys (VeRA's shared ``vera_A`` / ``vera_B``).
    ``persistent=False``: kept out of ``state_dict()`` (PEFT's trainable_tokens_original)."""

    _table = "_buffers"
    _kind = "Buffer"

    def __init__(self, persistent=True):
        super().__init__()
        self.persistent = persistent

    def __setitem__(self, key, tensor):
        super().__setitem__(key, tensor)
        if not self.persistent:
            self._non_persistent_buffers_set.add(key)

    def __delitem__(self, key):
        super().__delitem__(key)
        self._non_persistent_buffers_set.discard(key)


def _is_16bit(dtype):
    return dtype.itemsize == 2 and dtypes.is_floating(dtype)


def _row_norm(W):
    """``||W[i, :]||`` for every output row i (PEFT's ``torch.linalg.norm(W, dim=1)``; a 16-bit W is summed
    in float32 and its norm rounded once, as torch's). torch's norm kernel's order of additions
    (``ops.reduce.p_norm``): NumPy's pairwise sum put 1 float32 norm in 5 an ulp off, and a float16 DoRA
    unmerge, dividing by it, a weight or two a step off PEFT's."""
    return ops.reduce.p_norm(dtypes.upcast(W), 2, (1,))[:, 0].astype(W.dtype, copy=False)


def _dora_norm_rounded(W, BA, scaling, dtype):
    """PEFT's DoRA weight norm ``||W + s * BA||_row`` with each op rounded to ``dtype`` as torch's 16-bit
    ops round (``BA``: the float32 product, rounded once; the norm's sum in float32), the result in ``dtype``."""
    if not _is_16bit(dtype):  # float32 / float64: one sum and the norm in dtype
        return _row_norm(_sum_laid_out_as_first(W.astype(dtype, copy=False), scaling * BA.astype(dtype, copy=False)))

    def op(a):
        return a.astype(dtype).astype(np.float32)
    weight = op(_sum_laid_out_as_first(op(dtypes.upcast(W)), op(np.float32(scaling) * op(BA))))
    return op(_row_norm(weight)).astype(dtype)


def _sum_laid_out_as_first(a, b):
    """``a + b`` laid out in memory as ``a``, as torch's TensorIterator lays out a sum whose operands' layouts differ
    (the first decides; NumPy's is row-major), so that a norm over it adds in torch's order: an Embedding's DoRA
    norm is taken of its table's transpose plus ``B A`` (13 of 32 float32 magnitudes an ulp off PEFT's, seen)."""
    return xp_of(a).add(a, b, out=xp_of(a).empty_like(a, dtype=np.result_type(a, b)))


def _with_delta(W, delta, unmerge=False, rounded_first=False):
    """``W + delta`` (``W - delta`` to unmerge) as PEFT writes it into a float16/bfloat16 weight: the float32
    delta added and the sum rounded once, or (``rounded_first``) delta first rounded to W's dtype, PEFT's
    ``delta_weight.to(orig_dtype)``, and the sum rounded again. Which one PEFT does depends on the layer and the
    path: ``BaseTunerLayer.delta_rounded_first_in``. Nothing changes for float32/float64 weights."""
    if rounded_first and delta.dtype != W.dtype:
        delta = delta.astype(W.dtype)
    return W - delta if unmerge else W + delta


def _constant_zeros(like, *shape):
    """A zero Tensor with ``like``'s device and dtype that takes no gradient."""
    return Tensor._make(like.device.xp.zeros(shape, dtype=like.dtype), like.device, False, None)


def _pad_rank(t, r_max, axis):
    """``t`` with zero ranks appended along ``axis`` up to ``r_max``: they add nothing to B A (per-sample
    adapters of different ranks are stacked into one array)."""
    missing = r_max - t.shape[axis]
    if not missing:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return ops.cat([t, _constant_zeros(t, *shape)], axis=axis)


# ==================================================================================================
# What every adapter layer shares: which adapters exist, which are active, merged, disabled
# ==================================================================================================
class BaseTunerLayer(Module):
    """A wrapped ``Linear`` (or ``Embedding``): ``base_layer`` (frozen) plus per-adapter pieces named in
    ``adapter_layer_names``."""

    adapter_layer_names = ()  # the dicts holding trainable per-adapter weights
    base_types = (_NNLinear,)  # what this kind of layer can wrap
    peft_name = None  # the name print(model) shows, PEFT's: "lora.Linear", "vera.Linear", ...
    # The merge paths ("merge", "safe_merge", "unmerge") on which PEFT rounds the update to a 16-bit base weight's
    # dtype before adding it (see _with_delta): lora.Linear and the convolutions on two of them; the others say
    delta_rounded_first_in = frozenset({"safe_merge", "unmerge"})
    _recovered_base = None  # (the unmerged weight while a DoRA merge replays the merged adapters: _replayed)

    def __repr__(self):
        text = super().__repr__()
        return text if self.peft_name is None else self.peft_name + text[len(self._get_name()):]

    def __init__(self, base_layer):
        super().__init__()
        if not isinstance(base_layer, self.base_types):
            raise TypeError(f"{type(self).__name__} wraps minilora.nn."
                            f"{' or '.join(t.__name__ for t in self.base_types)} layers, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        if isinstance(base_layer, _NNEmbedding):  # PEFT's convention: token ids in, features out
            self.in_features, self.out_features = base_layer.num_embeddings, base_layer.embedding_dim
        elif isinstance(base_layer, MultiheadAttention):  # PEFT's: the packed q, k, v input projection
            self.in_features, self.out_features = base_layer.embed_dim, 3 * base_layer.embed_dim
        elif hasattr(base_layer, "in_channels"):  # a convolution (lora.Conv2d): its channels, as PEFT
            self.in_features, self.out_features = base_layer.in_channels, base_layer.out_channels
        else:
            self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.active_adapters = []
        self.merged_adapters = []
        self.disable_adapters = False
        self.batch_adapter_names = None  # set by PeftModel.forward(adapter_names=[...])
        self.alora_offsets = None  # set by a causal LM's forward / generate for aLoRA adapters (lora/alora.py)

    @property
    def weight(self):
        """The base weight W0 that the adapters update and merge into (as ``lora.Linear.weight`` in PEFT)."""
        return self.base_layer.weight

    def _with_delta(self, W, delta, unmerge, safe_merge):
        """``W +- delta`` rounded as PEFT's merge of this kind of layer rounds it on this path."""
        path = "unmerge" if unmerge else "safe_merge" if safe_merge else "merge"
        return _with_delta(W, delta, unmerge, rounded_first=path in self.delta_rounded_first_in)

    def unwrapped(self):
        """The plain layer this one wraps: what ``unload()`` / ``merge_and_unload()`` put back."""
        return self.base_layer

    @property
    def base_bias(self):
        """The base layer's bias, or None (also for an Embedding, which has none)."""
        return getattr(self.base_layer, "bias", None)

    @property
    def merged(self):
        return bool(self.merged_adapters)

    @property
    def active_adapter(self):
        return self.active_adapters[0] if len(self.active_adapters) == 1 else list(self.active_adapters)

    def adapter_names(self):
        return list(getattr(self, self.adapter_layer_names[0]).keys())

    def set_adapter(self, adapter_names, inference_mode=False):
        """Activate these adapters; their weights train (unless ``inference_mode``), all others freeze."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for layer_name in self.adapter_layer_names:
            holder = getattr(self, layer_name)
            for key in holder.keys():
                trainable = key in names and not inference_mode
                item = holder[key]
                if isinstance(item, Module):
                    item.requires_grad_(trainable)
                else:
                    item.requires_grad = trainable
        for name in names:  # PEFT 0.22: an active adapter's modules (its Dropout) follow the layer's mode
            self.set_training(name, self.training and not inference_mode)
        self._freeze_non_trainable_peft_weights(names)
        self.active_adapters = names

    def set_training(self, adapter_names, training=True):
        """PEFT 0.22's: these adapters' own modules (their Dropout, A and B) to train or eval mode, the
        layer's other adapters left as they are (a layer holds several)."""
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            for layer_name in self.adapter_layer_names + getattr(self, "other_param_names", ()):
                holder = getattr(self, layer_name, None)
                if isinstance(holder, ModuleDict) and name in holder:
                    holder[name].train(training)

    def set_requires_grad(self, adapter_names, requires_grad=True):
        """Train (or freeze) these adapters' weights, active or not, leaving the others as they are."""
        names = {adapter_names} if isinstance(adapter_names, str) else set(adapter_names)
        for layer_name in self.adapter_layer_names:
            holder = getattr(self, layer_name)
            for key in holder.keys():
                if key not in names:
                    continue
                item = holder[key]
                if isinstance(item, Module):
                    item.requires_grad_(requires_grad)
                else:
                    item.requires_grad = requires_grad
        if requires_grad:
            self._freeze_non_trainable_peft_weights(names)

    frozen_peft_weight_names = {}  # PEFT's: adapter name -> its weights that never train (MiCA's B)

    def _freeze_non_trainable_peft_weights(self, adapter_names):
        for name in adapter_names:
            for layer_name in self.frozen_peft_weight_names.get(name, ()):
                holder = getattr(self, layer_name)
                if name in holder:
                    item = holder[name]
                    item.requires_grad_(False) if isinstance(item, Module) else setattr(item, "requires_grad", False)

    def enable_adapters(self, enabled):
        self.disable_adapters = not enabled

    per_adapter_settings = ("r", "lora_alpha", "scaling", "use_rslora", "lora_bias", "use_alora")  # plain dicts

    def delete_adapter(self, adapter_name):
        for layer_name in self.adapter_layer_names + getattr(self, "other_param_names", ()):
            holder = getattr(self, layer_name)
            if adapter_name in holder:
                del holder[adapter_name]
        for name in self.per_adapter_settings:
            getattr(self, name, {}).pop(adapter_name, None)
        if adapter_name in self.frozen_peft_weight_names:
            self.frozen_peft_weight_names = {name: frozen for name, frozen in self.frozen_peft_weight_names.items()
                                             if name != adapter_name}
        if adapter_name in self.active_adapters:
            self.active_adapters = [a for a in self.active_adapters if a != adapter_name]

    # --- forward: the base layer's output plus every active adapter's ---------------------------
    def forward(self, x, adapter_names=None):
        """``adapter_forward(x)``; with ``adapter_names``, one adapter per sample. Disabled adapters
        add nothing (merged ones are taken back out first), merged ones are already in the weight."""
        adapter_names = adapter_names if adapter_names is not None else self.batch_adapter_names
        if adapter_names is not None:
            return self._mixed_batch_forward(x, adapter_names)
        if self.disable_adapters and self.merged:
            self.unmerge()
        if self.disable_adapters or self.merged:
            return self.base_layer(x)
        return self.adapter_forward(x)

    def adapter_forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} must define adapter_forward")  # abstract

    def _mixed_batch_forward(self, x, adapter_names):
        raise ValueError(f"per-sample adapter_names are not supported for {type(self).__name__} adapters")

    stack_cache = None  # a server's dict {layer: stacks} (serve.RaggedBatch sets it); None: stack every forward

    def _stacked_adapters(self, adapter_names):
        """``(names, *stacks)``: this layer's adapters among ``adapter_names``, zero-padded to the largest
        rank and stacked by the layer's ``_stack(names)`` for one batched per-sample product.

        Stacking copies every adapter's weights, on every forward. A server, whose adapters change only
        when it loads or unloads one, sets ``stack_cache``: then ALL this layer's adapters are stacked
        once and reused for as long as the same weight tensors are loaded, unchanged (a load, a delete or
        an in-place change -- its version counter -- rebuilds). Only without gradients: a gradient needs
        the stack in its graph."""
        factors = self._adapter_factors()  # {name: (A, B)} the stacks are made of
        cache = None if is_grad_enabled() else self.stack_cache
        names = sorted(factors) if cache is not None else \
            sorted({n for n in adapter_names if n in factors})  # adapters present in this layer
        if not names:
            return (names, None, None)
        if cache is None:
            return (names, *self._stack(names))
        weights = [w for n in names for w in factors[n]]
        versions = [w._version for w in weights]
        entry = cache.get(self)
        same = entry is not None and entry[0] == names and entry[2] == versions and \
            all(a is b for a, b in zip(entry[1], weights))
        if not same:
            entry = cache[self] = (names, weights, versions, *self._stack(names))
        return (entry[0], *entry[3:])

    def _check_mixed_batch(self, x, adapter_names):
        """``adapter_names`` (per-sample adapters) must name one adapter per sample, unmerged, and none of
        them a DoRA adapter (PEFT refuses those in a mixed batch)."""
        if len(adapter_names) != x.shape[0]:  # PEFT's words (each check's), minilora's hint as a note
            raise with_note(ValueError("Length of `adapter_names` should be the same as the number of inputs, but got "
                                       f"{len(adapter_names)} and {x.shape[0]} respectively."),
                            f"give one adapter name (or '{BASE_ADAPTER}') per sample")
        if self.merged:
            raise ValueError("Cannot pass `adapter_names` when there are merged adapters, please call "
                             "`unmerge_adapter` first.")
        dora = getattr(self, "lora_magnitude_vector", {})
        for name in set(adapter_names):
            if name in dora:
                raise with_note(ValueError("Cannot pass `adapter_names` when DoRA is enabled."),
                                f"{name!r} is a DoRA adapter")
            if getattr(self, "use_alora", {}).get(name):
                raise NotImplementedError(f"adapter_names with an aLoRA adapter ({name!r}) is not implemented in "
                                          "minilora (PEFT runs each adapter's rows with their own offsets)")

    def _dropout_p(self, dropout_dict, adapter_name):
        """The adapter's dropout probability while *its Dropout module* trains: PEFT calls
        ``self.lora_dropout[name](x)``, so that module's own flag decides, not the layer's. (They part where
        an adapter is added to a model already in eval mode: its new Dropout trains, and PEFT's outputs are
        dropped out until the next ``model.eval()``.)"""
        module = dropout_dict[adapter_name]
        return module.p if module.training and isinstance(module, Dropout) else 0.0

    def _dora_dropout_p(self, adapter_name):
        """DoRA's: PEFT's DoRA variant skips the dropout while the layer is in eval mode
        (``not module.training``), and otherwise calls the Dropout module, whose flag decides."""
        return self._dropout_p(self.lora_dropout, adapter_name) if self.training else 0.0

    # --- merging: W0 <- W0 + delta, done in place on the base weight -------------------------------
    def merge(self, safe_merge=False, adapter_names=None):
        """Fold the adapters (default: the active ones) into ``base_layer.weight``.

        ``safe_merge``: compute the merged weight on a copy first and refuse it if it holds NaN/inf.
        """
        if isinstance(adapter_names, str):  # (PEFT's check: list("default") would merge nothing, silently)
            raise TypeError(f"adapter_names should be a list of strings, got {adapter_names!r}.")
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        for name in names:
            if name in self.merged_adapters or name not in self.adapter_names():
                continue
            W = self.weight
            new = self.merge_math(name, W._array.copy() if safe_merge else W._array, safe_merge=safe_merge)
            new_bias = self.merged_bias(name)
            if safe_merge and not all(bool(xp_of(a).isfinite(a).all()) for a in (new, new_bias) if a is not None):
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken "
                                 "(NaNs or infs; the base weight was left unchanged)")  # PEFT's words first
            W._array[...] = new
            if new_bias is not None:
                self.base_layer.bias._array[...] = new_bias
            self.merged_adapters.append(name)

    def unmerge(self):
        """Take every merged adapter back out of the base weight (last merged first)."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            W = self.weight
            W._array[...] = self.merge_math(name, W._array, unmerge=True)
            new_bias = self.merged_bias(name, unmerge=True)
            if new_bias is not None:
                self.base_layer.bias._array[...] = new_bias

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        raise NotImplementedError(f"{type(self).__name__} must define merge_math")  # abstract

    def merged_bias(self, adapter_name, unmerge=False):
        """The base bias with this adapter's own bias merged in (taken out), or None: it has none."""
        return None

    def _replayed(self, W, safe_merge):
        """``(W0, W)`` for a DoRA merge, as PEFT's ``_unmerged_base_weight``: W0 is the weight without the adapters
        merged so far (what the forward's norm is taken of). To get it, those adapters are unmerged from the base
        weight itself and merged again, so the weight is rebuilt -- in 16 bits a step off here and there (and a
        ulp in float32) from the one before, which PEFT then carries on from: ``W``, the array the merge was given,
        is the rebuilt weight (a safe merge's copy is taken again). The merges inside the replay get the W0 this
        outermost call recovered, as PEFT's cache gives them."""
        if self._recovered_base is not None:
            return self._recovered_base, W
        merged, live = list(self.merged_adapters), self.weight._array
        if not merged:
            return live, W
        self.unmerge()
        self._recovered_base = live.copy()
        try:
            self.merge(safe_merge=safe_merge, adapter_names=merged)
            return self._recovered_base, (W if W is live else live.copy())
        finally:
            self._recovered_base = None


# ==================================================================================================
# LoRA (and DoRA)
# ==================================================================================================
class DoraMagnitude(Module):
    """DoRA's trainable magnitude: one number per output row (PEFT's ``lora_magnitude_vector.<name>.weight``);
    on an Embedding, one per embedding dimension."""

    def __init__(self, row_norms, peft_class="DoraLinearLayer"):
        super().__init__()
        self.weight = Parameter(row_norms)
        self._peft_class = "lora.dora." + peft_class

    def __repr__(self):  # PEFT's class for it, as print(model) shows it there
        return self._peft_class + super().__repr__()[len(self._get_name()):]


def _dropout_module(config):
    """``Dropout(lora_dropout)``, or ``Identity()`` when it is 0 (PEFT's choice, seen in print(model))."""
    return Dropout(config.lora_dropout) if config.lora_dropout > 0 else Identity()


def _redraw_A(weight, init_lora_weights, r):
    """PEFT's ``reset_lora_parameters`` for A (already drawn once by its Linear/Conv constructor): True
    draws Kaiming-uniform(a=sqrt(5)) again, "gaussian" N(0, 1/r); other inits leave it."""
    if init_lora_weights is True:
        init.kaiming_uniform_(weight, a=np.sqrt(5))
    elif init_name(init_lora_weights) == "gaussian":
        init.normal_(weight, std=1.0 / r)


def _nora_normalize_columns(weight):
    """NoRA (PEFT 0.22's ``init_lora_weights="nora"``): A keeps its constructor's draw, each column (one input
    feature's r entries) scaled to unit L2 norm, a norm below 1e-6 taken as 1e-6 (PEFT's clamp_min). In
    A's own dtype, before the move to the base's dtype, as PEFT's ``nora_init``: torch's norm over dim 0 adds
    the squares row after row in that dtype (seen: a float64 sum rounded once is 1 ulp off in 1 norm of 5)."""
    A = _host(weight._array)
    squares = np.zeros(A.shape[1], A.dtype)
    for row in A:
        squares += row * row
    norms = np.maximum(np.sqrt(squares), A.dtype.type(1e-6))
    weight.data = Tensor(A / norms, device=weight.device)


def _to_base_dtype(modules, W0):
    """PEFT's ``_move_adapter_to_device_of_base_layer``: adapter modules built in the default dtype
    take a floating base weight's dtype."""
    if dtypes.is_floating(W0.dtype):
        for module in modules:
            module.to(W0.dtype)


class _LoraScales:
    """PEFT's ``LoraLayer.set_scale`` / ``scale_layer`` / ``unscale_layer``, which diffusers' ``set_adapters``
    and ``scale_lora_layers`` call on every LoRA layer (Linear, Embedding, convolutions): the scale of the
    adapters is ``scaling[name]``, which every forward and merge reads."""

    def _initial_scale(self, adapter):
        r, alpha = self.r[adapter], self.lora_alpha[adapter]
        return alpha / math.sqrt(r) if self.use_rslora.get(adapter, False) else alpha / r

    def set_scale(self, adapter, scale):
        """The adapter's scale: its initial ``alpha / r`` (rsLoRA: ``/ sqrt(r)``) times ``scale`` (an adapter
        this layer does not hold: nothing, as PEFT)."""
        if adapter in self.scaling:
            self.scaling[adapter] = scale * self._initial_scale(adapter)

    def scale_layer(self, scale):
        """Multiply the active adapters' current scales by ``scale``."""
        if scale == 1:
            return
        for adapter in self.active_adapters:
            if adapter in self.scaling:
                self.scaling[adapter] *= scale

    def unscale_layer(self, scale=None):
        """Divide the active adapters' current scales by ``scale``; None: back to the initial scales."""
        for adapter in self.active_adapters:
            if adapter in self.scaling:
                self.scaling[adapter] = self._initial_scale(adapter) if scale is None else \
                    self.scaling[adapter] / scale


def _add_lora_dicts(layer):
    """The per-adapter dicts PEFT's ``LoraLayer`` gives every LoRA layer, Linear or Embedding, in its
    order (so ``print(model)`` lists the same children; a Linear's embedding dicts stay empty)."""
    layer.r, layer.lora_alpha, layer.scaling = {}, {}, {}
    layer.use_rslora = {}  # adapter name -> whether its scale is alpha / sqrt(r) (set_scale, unscale_layer)
    layer.lora_bias = {}  # adapter name -> whether its lora_B has a bias (LoraConfig.lora_bias)
    layer.use_alora = {}  # adapter name -> whether it is an activated LoRA (LoraConfig.alora_invocation_tokens)
    layer.lora_dropout = ModuleDict()  # Dropout modules hold p; the fused op applies the mask
    layer.lora_A = ModuleDict()
    layer.lora_B = ModuleDict()
    layer.lora_embedding_A = ParameterDict()
    layer.lora_embedding_B = ParameterDict()
    layer.lora_magnitude_vector = ModuleDict()


def _check_variants(layer, config):
    """PEFT's ``resolve_lora_variant`` for aLoRA and MiCA: each alone on the layer kinds that have it (aLoRA:
    lora.Linear; MiCA: lora.Linear and lora.Embedding), never with each other or DoRA -- else PEFT's ValueError.
    Returns whether the adapter is an activated LoRA."""
    alora, mica = bool(getattr(config, "alora_invocation_tokens", None)), config.init_lora_weights == "mica"
    if not (alora or mica):
        return False
    requested = tuple(sorted(name for name, on in (("alora_invocation_tokens", alora), ("mica", mica),
                                                  ("use_dora", config.use_dora)) if on))
    kinds = (Linear,) if alora else (Linear, Embedding)
    if len(requested) > 1 or type(layer) not in kinds:
        raise ValueError(f"Invalid or unsupported variant combination: {requested}")
    return alora


def _shown_as_peft(out, x, base_layer, A, B, dropout_p):
    """``out`` of the fused LoRA op (one node) shown as PEFT's graph of lora.Linear.forward (``print(out.grad_fn)``
    and ``next_functions`` walk the same nodes): ``result + lora_B(lora_A(dropout(x))) * scaling``, an
    AddBackward0 of the base layer's linear node and a MulBackward0 of the branch, x cast to the adapter's dtype
    first and the sum cast back (ToCopyBackward0) where they differ. A hook on that node gets PEFT's
    grad_outputs (register_prehook); its grad_inputs (register_hook) and the branch's inner nodes are not
    minilora's, so hooks there are refused (tensor._edge_slots, _ShownNode)."""
    if out._ctx is None:  # (_ctx, not grad_fn: asking grad_fn gives the node its class, which name_node would redo)
        return out
    if _amp.used and _amp.state.active:
        return _shown_as_peft_in_autocast(out, x, base_layer, A, B, dropout_p)
    cast = A.dtype != x.dtype
    branch_x = ("ToCopyBackward0", x) if cast else x
    if dropout_p > 0:  # (nn.Dropout in training: x times a mask that needs no gradient)
        branch_x = ("MulBackward0", branch_x, None)
    branch = linear_node(linear_node(branch_x, A, None, x.ndim), B, None, x.ndim)
    graph = ("AddBackward0", linear_node(x, base_layer.weight, base_layer.bias, x.ndim),
             ("MulBackward0", branch, None))  # (None: scaling, a number)
    if cast:
        graph = ("ToCopyBackward0", graph)
    return name_node(out, graph[0], graph=graph[1:])


def _shown_as_peft_in_autocast(out, x, base_layer, A, B, dropout_p):
    """_shown_as_peft in an autocast region: each of PEFT's F.linear calls casts its input, weight and bias to the
    autocast dtype (a ToCopyBackward0 where one is of another dtype: x, the float32 adapters); the branch's x is
    cast to the adapter's dtype first and its dropout runs before lora_A's cast; the sum is already in the
    autocast dtype (no cast back)."""
    dtype = out.dtype

    def cast(entry, entry_dtype, to=dtype):
        return ("ToCopyBackward0", entry) if entry is not None and entry_dtype != to else entry

    def linear(entry, entry_dtype, weight, bias):
        return linear_node(cast(entry, entry_dtype), cast(weight, weight.dtype),
                           None if bias is None else cast(bias, bias.dtype), x.ndim)

    branch_x = cast(x, x.dtype, A.dtype)  # (PEFT's _cast_input_dtype)
    if dropout_p > 0:
        branch_x = ("MulBackward0", branch_x, None)
    branch = linear(linear(branch_x, A.dtype, A, None), dtype, B, None)  # (lora_A's output: the autocast dtype)
    graph = ("AddBackward0", linear(x, x.dtype, base_layer.weight, base_layer.bias), ("MulBackward0", branch, None))
    return name_node(out, graph[0], graph=graph[1:])


class Linear(_LoraScales, BaseTunerLayer):
    """LoRA around a frozen Linear: ``h = W0 x + b + (alpha/r) * B A dropout(x)``.

    ``lora_A[name]`` is a Linear ``in -> r`` (weight ``[r, in]``), ``lora_B[name]`` a Linear
    ``r -> out`` (weight ``[out, r]``). With DoRA, ``lora_magnitude_vector[name].weight`` ``[out]``.
    """

    peft_name = "lora.Linear"
    adapter_layer_names = ("lora_A", "lora_B", "lora_magnitude_vector")
    other_param_names = ("lora_dropout",)

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
        super().__init__(base_layer)
        _add_lora_dicts(self)
        self._dora_merge_norms = {}  # row norms used when merging a DoRA adapter, needed to unmerge
        self.active_adapters = [adapter_name]  # a new layer uses its adapter at once, as PEFT's does
        self.update_layer(adapter_name, config, r, lora_alpha)

    def _record_hyperparameters(self, adapter_name, config, r, lora_alpha):
        """The adapter's r, alpha, scale, dropout and lora_bias flag (every LoRA layer kind's first step)."""
        self.use_alora[adapter_name] = _check_variants(self, config)
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = config.scaling(r, lora_alpha)
        self.use_rslora[adapter_name] = bool(config.use_rslora)
        self.lora_dropout[adapter_name] = _dropout_module(config)
        self.lora_bias[adapter_name] = config.lora_bias
        if config.lora_bias and self.base_bias is None:  # PEFT's warning
            warnings.warn(f"`lora_bias=True` was passed but the targeted layer of type {type(self.base_layer).__name__} "
                          "has no bias. This means that merging LoRA weights won't be possible.")

    def update_layer(self, adapter_name, config, r, lora_alpha):
        """Create adapter ``adapter_name`` (PEFT's ``update_layer``); the active adapters stay as they
        were, so an adapter added to an existing layer starts inactive and frozen."""
        W0 = self.weight
        self._record_hyperparameters(adapter_name, config, r, lora_alpha)
        # nn.Linear initialises its weight kaiming-uniform(a=sqrt(5)): PEFT's init for A (and for B
        # when init_lora_weights=False, so that the adapter changes the output from the start). As PEFT,
        # both are built in the default dtype (each drawing its Linear init), A drawn again, then moved
        # to the base's dtype: the same seed gives PEFT's numbers.
        self.lora_A[adapter_name] = _NNLinear(self.in_features, r, bias=False, device=W0.device)
        # lora_bias=True: lora_B has its own trainable bias (h gains s * b_B), saved as lora_B.bias
        self.lora_B[adapter_name] = _NNLinear(r, self.out_features, bias=config.lora_bias, device=W0.device)
        _redraw_A(self.lora_A[adapter_name].weight, config.init_lora_weights, r)
        # EXERCISE 4.4: unless init_lora_weights is False, zero lora_B: a new adapter leaves the model unchanged
        # BEGIN SOLUTION
        if config.init_lora_weights is not False:
            init.zeros_(self.lora_B[adapter_name].weight)  # B = 0: the model starts exactly at the base
        # END SOLUTION
        if config.lora_bias and config.init_lora_weights is not False:
            init.zeros_(self.lora_B[adapter_name].bias)  # the bias starts at 0 too (PEFT's)
        if config.init_lora_weights == "nora":
            _nora_normalize_columns(self.lora_A[adapter_name].weight)
        _to_base_dtype((self.lora_A[adapter_name], self.lora_B[adapter_name]), W0)
        if config.init_lora_weights == "orthogonal":
            orthogonal_init(self, adapter_name)
        if init_name(config.init_lora_weights) == "mica":
            mica_init(self, adapter_name, config.init_lora_weights == "mica")
        if is_weight_mutating_init(config.init_lora_weights):  # PiSSA / OLoRA / CorDA: W0 -> W_res + s B A
            if init_name(config.init_lora_weights) == "olora":
                olora_init(self, adapter_name)
            elif config.init_lora_weights == "corda":
                corda_init(self, adapter_name)
            elif config.init_lora_weights == "lora_ga":
                lora_ga_init(self, adapter_name, config.lora_ga_config)
            else:
                pissa_init(self, adapter_name, config.init_lora_weights)
        if config.use_dora:  # PEFT's DoraLinearLayer.update_layer: in the adapter's dtype, the base's here, so a
            # 16-bit base rounds B A, s * (B A) and the sum each to 16 bits (summing in float32 and rounding once
            # put 1 bfloat16 row in 16 one ulp off)
            norms = _dora_norm_rounded(W0._array, self._BA(adapter_name), self.scaling[adapter_name], W0.dtype)
            self.lora_magnitude_vector[adapter_name] = DoraMagnitude(Tensor(norms, dtype=norms.dtype, device=W0.device))
        self.set_adapter(self.active_adapters)

    def _BA(self, adapter_name):
        """``B @ A`` as a plain array [out, in]: only for merging and DoRA's norm, never in the LoRA forward.
        16-bit factors are multiplied in float32 (PEFT's get_delta_weight upcasts them on the CPU; NumPy
        would sum a bfloat16 product in bfloat16) and the result stays float32."""
        B, A = self.lora_B[adapter_name].weight._array, self.lora_A[adapter_name].weight._array
        return matmul(dtypes.upcast(B), dtypes.upcast(A))

    # --- forward -------------------------------------------------------------------------------
    def adapter_forward(self, x):
        """``h = W0 x + b + s * B (A dropout(x))`` for each active adapter (DoRA: rescaled per row)."""
        active = [a for a in self.active_adapters if a in self.lora_A]
        if not active:
            return self.base_layer(x)
        if len(active) == 1 and active[0] not in self.lora_magnitude_vector and not self.lora_bias[active[0]] \
                and not self.use_alora.get(active[0]) and self._fuses(x, active[0]):
            name = active[0]  # the usual case: base GEMM and LoRA branch in ONE fused op
            dropout_p = self._dropout_p(self.lora_dropout, name)
            out = ops.lora_linear(x, self.base_layer.weight, self.lora_A[name].weight, self.lora_B[name].weight,
                                  self.scaling[name], bias=self.base_layer.bias, dropout_p=dropout_p)
            return _shown_as_peft(out, x, self.base_layer, self.lora_A[name].weight, self.lora_B[name].weight,
                                  dropout_p)
        # several adapters (or DoRA): PEFT's loop. Each branch runs on x cast to its adapter's dtype (float32
        # on a 16-bit base) and the sum stays in the promoted dtype until ONE cast back at the end.
        result = None
        for name in active:
            if name in self.lora_magnitude_vector:
                result = self._dora_forward(x, name, result)
                continue
            result = self.base_layer(x) if result is None else result
            if self.use_alora.get(name):
                result = self._alora_forward(x, name, result)
                continue
            xd = ops.dropout(x.to(self.lora_A[name].weight.dtype), self._dropout_p(self.lora_dropout, name))
            result = result + self.lora_B[name](self.lora_A[name](xd)) * self.scaling[name]
        return result.to(x.dtype)

    def _alora_forward(self, x, name, result):
        """aLoRA (lora/alora.py): ``s B A dropout(x)`` added to each row's last ``alora_offsets[row]`` positions
        only, computed on those positions alone (PEFT's ``res[mask] += lora(x[mask])``: dropout draws for them)."""
        tokens = result.shape[1] if result.ndim == 3 else 1
        rows = np.zeros((result.shape[0], tokens), dtype=bool)
        for i, offset in enumerate(self.alora_offsets or ()):  # no offsets: the adapter adds nothing
            rows[i, tokens - (0 if offset is None else min(int(offset), tokens)):] = True
        index = Tensor(np.flatnonzero(rows), dtype=dtypes.int64, device=result.device)
        x_rows = x.to(self.lora_A[name].weight.dtype).reshape(-1, x.shape[-1])[index]
        delta = self.lora_B[name](self.lora_A[name](ops.dropout(x_rows, self._dropout_p(self.lora_dropout, name))))
        flat = result.reshape(-1, result.shape[-1])
        updated = (flat[index] + delta * self.scaling[name]).to(flat.dtype)  # one rounding, as torch's in-place +=
        return flat.index_put((index,), updated).reshape(result.shape)

    def _fuses(self, x, name):
        """Whether ``ops.lora_linear`` computes this adapter: adapter and base of one dtype, or float32
        adapters on a float16/bfloat16 base (the op follows PEFT's mixed precision)."""
        base, adapter = x.dtype, self.lora_A[name].weight.dtype
        return adapter == base or (base.itemsize == 2 and adapter == np.float32)

    def _dora_forward(self, x, name, result):
        """DoRA: ``h = m / ||W0 + s B A||_row * (W0 x + s B A x) + b``.

        The row norm is computed without gradient (a constant in backward, DoRA paper section 4.3,
        as PEFT): gradients reach the magnitude ``m`` and, through the direction, A and B.
        """
        if _is_16bit(x.dtype):  # a float16/bfloat16 base
            return self._dora_forward_16bit(x, name, result)
        W0, bias = self.base_layer.weight, self.base_layer.bias
        A, B, s = self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]
        out_dtype = x.dtype
        if A.dtype != x.dtype:  # a float32 adapter on a float64 base: compute
            x, W0 = x.to(A.dtype), W0.to(A.dtype)  # in the adapter's dtype, as PEFT does, and cast back
            bias = bias.to(A.dtype) if bias is not None else None
            result = result.to(A.dtype) if result is not None else None
        norm = _row_norm(W0._array + s * self._BA(name))  # plain arrays: outside the graph
        mag_scale = self.lora_magnitude_vector[name].weight / norm  # [out], differentiable in m
        p = self._dora_dropout_p(name)
        if result is None and p == 0:
            h = mag_scale * ops.lora_linear(x, W0, A, B, s)
            return (h + bias if bias is not None else h).to(out_dtype)
        if p == 0:  # after another adapter, PEFT's formula: it rescales the output so far (that adapter's
            base_result = result - bias if bias is not None else result  # part included), not W0 x alone
            lora_result = self.lora_B[name](self.lora_A[name](x)) * s
            return (result + (mag_scale - 1) * base_result + mag_scale * lora_result).to(out_dtype)
        # With dropout (PEFT's formula): h = result + (m/n - 1) W0 x' + (m/n) s B A x', x' = dropout(x)
        base = result if result is not None else ops.linear(x, W0, bias)
        xd = ops.dropout(x, p)
        return (base + mag_scale * ops.lora_linear(xd, W0, A, B, s) - ops.linear(xd, W0)).to(out_dtype)

    def _dora_forward_16bit(self, x, name, result):
        """DoRA on a float16/bfloat16 base, op for op as PEFT's DoraLinearLayer, so every rounding is PEFT's:

            result      = the base layer's output (16-bit, bias included)
            base_result = result - bias   (with dropout: x' W0^T on the dropped-out x', in the adapter dtype)
            result     += (m/n - 1) * base_result + (m/n) * B A x' * s

        with x' = dropout(x.to(A.dtype)) and n = ||W0 + s B A||_row computed in the adapter's dtype without
        gradient. Returns the sum in the promoted dtype: ``adapter_forward`` casts it back once."""
        W0, bias = self.base_layer.weight, self.base_layer.bias
        A = self.lora_A[name].weight
        s, dtype = self.scaling[name], A.dtype
        result = self.base_layer(x) if result is None else result
        mag_scale = self.lora_magnitude_vector[name].weight / self._dora_norm_16bit(name, dtype)
        xa = x.to(dtype)
        p = self._dora_dropout_p(name)
        if p == 0:
            base_result = result - bias if bias is not None else result
        else:
            xa = ops.dropout(xa, p)
            base_result = ops.linear(xa, W0.to(dtype))
        lora_result = self.lora_B[name](self.lora_A[name](xa))
        return result + ((mag_scale - 1) * base_result + mag_scale * lora_result * s)

    def _dora_norm_16bit(self, name, dtype):
        """PEFT's weight norm ``||W0 + s * (B A)||_row`` in ``dtype`` as a constant Tensor."""
        W0 = self.base_layer.weight
        norm = _dora_norm_rounded(W0._array, self._BA(name), self.scaling[name], dtype)
        return Tensor._make(norm, W0.device, False, None)

    def _mixed_batch_forward(self, x, adapter_names):
        """Per-sample adapters (BGMV, the idea behind Punica and S-LoRA): sample b uses ``adapter_names[b]``.

        The adapters' A and B are stacked (zero-padded to the largest rank) and ONE op,
        ``ops.bgmv``, adds every row's own ``s B A x`` to the shared base output -- no Python loop
        over the batch; on ``emu``/``cuda`` it is kernels/bgmv.cu. ``"__base__"`` rows get nothing.
        """
        self._check_mixed_batch(x, adapter_names)
        result = self.base_layer(x)
        names, A_stack, B_stack = self._stacked_adapters(adapter_names)
        if not names:
            return result
        slot = {name: i for i, name in enumerate(names)}  # -1: "__base__", or an adapter not in this layer
        tokens = result.numel() // (result.shape[0] * self.out_features)  # rows per sample
        index = np.repeat([slot.get(n, -1) for n in adapter_names], tokens)  # one adapter per token row
        out = ops.bgmv(result.reshape(-1, self.out_features), x.reshape(-1, self.in_features), A_stack, B_stack,
                       [self.r[n] for n in names], [self.scaling[n] for n in names], index)
        if any(self.lora_bias[n] for n in names):  # lora_bias: each row adds its own adapter's s * b_B
            zeros = _constant_zeros(result, self.out_features)
            biases = ops.stack([zeros] + [self.lora_B[n].bias * self.scaling[n] if self.lora_bias[n] else zeros
                                          for n in names])
            out = out + biases[result.device.xp.asarray(index + 1)]  # slot 0: "__base__" rows, no bias
        return out.reshape(result.shape)

    def _adapter_factors(self):
        return {n: (self.lora_A[n].weight, self.lora_B[n].weight) for n in self.lora_A}

    def _stack(self, names):
        """``A [L, r_max, in], B [L, out, r_max]`` for ``ops.bgmv``."""
        r_max = max(self.r[n] for n in names)
        A_stack = ops.stack([_pad_rank(self.lora_A[n].weight, r_max, 0) for n in names])  # [L, r_max, in]
        B_stack = ops.stack([_pad_rank(self.lora_B[n].weight, r_max, 1) for n in names])  # [L, out, r_max]
        return A_stack, B_stack

    # --- merging -------------------------------------------------------------------------------
    def get_delta_weight(self, adapter_name):
        """``s * B @ A`` [out, in]: the full-size update that merging adds to W0 (merge_and_unload, merge_adapter run
        it; the forward never forms it: ``W0 x + s B (A x)``, exercise 4.2)."""
        # EXERCISE 7.1: delta = the full-size update s * B @ A, [out, in], that merging adds to W0
        # BEGIN SOLUTION
        delta = self.scaling[adapter_name] * self._BA(adapter_name)
        # END SOLUTION
        return delta.astype(self.lora_B[adapter_name].weight.dtype, copy=False)  # 16-bit adapters: round once

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        """The merge math, both ways, on a plain array ``W`` (the current base weight).

        LoRA: ``W0 + s B A`` (unmerge: minus). DoRA: ``m / ||W0 + s B A||_row * (W + s B A)``, where
        ``W0`` is the weight without any merged adapter (what the forward uses); unmerging divides by
        the same factor and subtracts, so it keeps the norm it merged with.
        """
        if self.use_alora.get(adapter_name):  # PEFT's words
            raise NotImplementedError("aLoRA does not support unmerging." if unmerge else
                                      "aLoRA does not support safe merging." if safe_merge else
                                      "aLoRA does not support merging.")
        delta = self.get_delta_weight(adapter_name)
        # EXERCISE 7.2: plain LoRA: add delta to W to merge, take it back out to unmerge (DoRA follows)
        # BEGIN SOLUTION
        if adapter_name not in self.lora_magnitude_vector:
            return self._with_delta(W, delta, unmerge, safe_merge)
        # END SOLUTION
        if not unmerge:
            W0, W = self._replayed(W, safe_merge)
            self._dora_merge_norms[adapter_name] = _row_norm(W0 + delta)
        norm = self._dora_merge_norms[adapter_name]
        factor = (self.lora_magnitude_vector[adapter_name].weight._array / norm)[:, None]
        return W / factor - delta if unmerge else factor * (W + delta)

    def merged_bias(self, adapter_name, unmerge=False):
        """lora_bias: ``b + s * b_B`` (unmerge: minus), summed in the adapter's dtype as PEFT's in-place add."""
        if not self.lora_bias.get(adapter_name):
            return None
        if self.base_bias is None:  # PEFT's words (model.merge_adapter checks every layer before merging)
            raise RuntimeError("Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.")
        delta = self.scaling[adapter_name] * self.lora_B[adapter_name].bias._array
        b = self.base_bias._array
        return b - delta if unmerge else b + delta


class Embedding(_LoraScales, BaseTunerLayer):
    """LoRA around a frozen Embedding (PEFT's ``lora.Embedding``): ``h = W0[x] + s * A^T[x] B^T``.

    ``lora_embedding_A[name]`` ``[r, num_embeddings]`` and ``lora_embedding_B[name]`` ``[dim, r]`` are
    plain Parameters (file names ``...embed_tokens.lora_embedding_A``). The lookup ``A^T[x]`` picks r
    numbers per token, so the rank-r update ``s (B A)^T`` of the table is never built. PEFT starts A at
    zero and B normal (the reverse of Linear: the model still starts exactly at the base). No dropout:
    PEFT's embedding LoRA has none. The base layer's ``padding_idx`` applies to the A lookup too.

    DoRA (PEFT's DoraEmbeddingLayer): the table is seen as ``[dim, num_embeddings]`` (fan_in_fan_out), so
    the magnitude ``lora_magnitude_vector[name].weight`` has one number per embedding dimension, and
    ``h = m / n * (W0[x] + s A^T[x] B^T)`` with ``n = ||(W0 + s (B A)^T)[:, j]||`` per column j, a constant
    in backward (as for Linear).
    """

    peft_name = "lora.Embedding"
    delta_rounded_first_in = frozenset({"merge", "safe_merge", "unmerge"})  # (PEFT's lora.Embedding: every path)
    adapter_layer_names = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
    other_param_names = ("lora_dropout",)  # PEFT keeps a (never applied) dropout per adapter here too
    base_types = (_NNEmbedding,)

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
        super().__init__(base_layer)
        _add_lora_dicts(self)
        self._dora_merge_norms = {}  # column norms used when merging a DoRA adapter, needed to unmerge
        self.active_adapters = [adapter_name]  # a new layer uses its adapter at once, as PEFT's does
        self.update_layer(adapter_name, config, r, lora_alpha)

    def update_layer(self, adapter_name, config, r, lora_alpha):
        _check_variants(self, config)
        if config.lora_bias:  # PEFT's refusal, in its words (its embedding tables are bare Parameters)
            raise ValueError(f"lora_bias={config.lora_bias} is not supported for {type(self).__name__}.")
        W0 = self.base_layer.weight
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.lora_bias[adapter_name] = False
        self.scaling[adapter_name] = config.scaling(r, lora_alpha)
        self.use_rslora[adapter_name] = bool(config.use_rslora)
        self.lora_dropout[adapter_name] = _dropout_module(config)  # PEFT's; its embedding LoRA never applies it
        A = _torch_randn((r, self.in_features))  # init_lora_weights=False keeps these (PEFT: torch.randn)
        B = _torch_randn((self.out_features, r))
        if config.init_lora_weights is not False and init_name(config.init_lora_weights) != "mica":  # PEFT's reset:
            # zeros_(A), normal_(B) (B drawn again; MiCA sets both itself)
            A[...] = 0.0  # A = 0: the model starts exactly at the base; B N(0, 1)
            B = _torch_randn((self.out_features, r))
        self.lora_embedding_A[adapter_name] = Parameter(A, dtype=W0.dtype, device=W0.device)
        self.lora_embedding_B[adapter_name] = Parameter(B, dtype=W0.dtype, device=W0.device)
        if init_name(config.init_lora_weights) == "mica":
            mica_init(self, adapter_name, config.init_lora_weights == "mica")
        if config.use_dora:
            norms = self._dora_norms(adapter_name)  # the adapter is in the table's dtype here
            magnitude = Tensor(norms, dtype=norms.dtype, device=W0.device)  # (PEFT 0.21 prints the prefix twice)
            self.lora_magnitude_vector[adapter_name] = DoraMagnitude(magnitude, "lora.dora.DoraEmbeddingLayer")
        self.set_adapter(self.active_adapters)

    def _BA(self, adapter_name):
        """``B A`` [dim, num_embeddings] in float32 for 16-bit factors (as Linear's)."""
        A, B = self.lora_embedding_A[adapter_name]._array, self.lora_embedding_B[adapter_name]._array
        return matmul(dtypes.upcast(B), dtypes.upcast(A))

    def _dora_norms(self, adapter_name):
        """DoRA's weight norm ``||(W + s (B A)^T)[:, j]||`` for every embedding dimension j, as PEFT's
        DoraEmbeddingLayer: its DoraLinearLayer's norm on the table's transpose, in the adapter's dtype."""
        return _dora_norm_rounded(self.base_layer.weight._array.T, self._BA(adapter_name),
                                  self.scaling[adapter_name], self.lora_embedding_A[adapter_name].dtype)

    def adapter_forward(self, ids):
        result = self.base_layer(ids)
        dtype = result.dtype
        for name in self.active_adapters:
            if name in self.lora_embedding_A:  # A^T[x]: r numbers per token, pad rows as in the base
                after_A = ops.embedding(ids, self.lora_embedding_A[name].T, padding_idx=self.base_layer.padding_idx)
                lora_result = after_A @ self.lora_embedding_B[name].T
                if name in self.lora_magnitude_vector:  # PEFT's order: m/n * result + m/n * (A^T[x] B^T) * s
                    norms = self._dora_norms(name)
                    mag_scale = self.lora_magnitude_vector[name].weight / Tensor._make(norms, result.device, False,
                                                                                       None)
                    result = mag_scale * result + mag_scale * lora_result * self.scaling[name]
                else:
                    result = result + lora_result * self.scaling[name]
        return result.to(dtype)  # float32 tables on a 16-bit base: the sum is rounded back once, as PEFT

    def _mixed_batch_forward(self, ids, adapter_names):
        """Per-sample adapters: every sample's rank-r rows gathered from a stack of all adapters'
        tables in one lookup, then one batched matmul (as ``Linear._mixed_batch_forward``)."""
        self._check_mixed_batch(ids, adapter_names)
        result = self.base_layer(ids)
        names, A_stack, B_stack = self._stacked_adapters(adapter_names)  # a server's are cached
        if not names:
            return result
        xp = self.base_layer.weight.device.xp
        slot = xp.asarray([{n: i + 1 for i, n in enumerate(names)}.get(n, 0) for n in adapter_names])
        r_max = A_stack.shape[-1]
        ids_array = xp.asarray(ids._array if isinstance(ids, Tensor) else ids)
        after_A = A_stack[slot.reshape(-1, *([1] * (ids_array.ndim - 1))), ids_array]  # [batch, ..., r]
        B_g = B_stack[slot]                                                             # [batch, r, dim]
        flat = after_A.reshape(ids_array.shape[0], -1, r_max)
        # PEFT's order: (A^T[x] B^T) * s in the tables' dtype, added to the base's rows and rounded to its dtype
        # once (float32 tables on a 16-bit base: a stack in both dtypes was refused); s read now, not stacked
        scales = xp.asarray([0.0] + [self.scaling[n] for n in names], dtype=B_stack.dtype)[slot]
        lora = ops.matmul(flat, B_g) * Tensor._make(scales.reshape(-1, 1, 1), result.device, False, None)
        return (result + lora.reshape(result.shape)).to(result.dtype)

    def _adapter_factors(self):
        return {n: (self.lora_embedding_A[n], self.lora_embedding_B[n]) for n in self.lora_embedding_A}

    def _stack(self, names):
        """``A [n+1, V, r_max], B [n+1, r_max, dim]`` in the tables' dtype, slot 0 all zeros (rows without an
        adapter)."""
        table = self.lora_embedding_A[names[0]]
        r_max = max(self.r[n] for n in names)
        A_stack = ops.stack([_constant_zeros(table, self.in_features, r_max)]
                            + [_pad_rank(self.lora_embedding_A[n].T, r_max, 1) for n in names])
        B_stack = ops.stack([_constant_zeros(table, r_max, self.out_features)]
                            + [_pad_rank(self.lora_embedding_B[n].T, r_max, 0) for n in names])
        return A_stack, B_stack

    def get_delta_weight(self, adapter_name):
        """``s (B A)^T`` [num_embeddings, dim]: the update merging adds to the table."""
        A, B = self.lora_embedding_A[adapter_name]._array, self.lora_embedding_B[adapter_name]._array
        delta = self.scaling[adapter_name] * matmul(dtypes.upcast(B), dtypes.upcast(A)).T  # 16-bit: in float32,
        return delta.astype(B.dtype, copy=False)                                     # rounded once (PEFT)

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        """LoRA: ``W0 + s (B A)^T``. DoRA: every column j scaled by ``m_j / n_j`` (the norms of the unmerged
        weight, kept for unmerging), as PEFT's DoraEmbeddingVariant."""
        delta = self.get_delta_weight(adapter_name)
        if adapter_name not in self.lora_magnitude_vector:
            return self._with_delta(W, delta, unmerge, safe_merge)
        if not unmerge:
            W0, W = self._replayed(W, safe_merge)
            self._dora_merge_norms[adapter_name] = _row_norm((W0 + delta).T)
        factor = (self.lora_magnitude_vector[adapter_name].weight._array / self._dora_merge_norms[adapter_name])[None]
        return W / factor - delta if unmerge else factor * (W + delta)


class _EveryLoraLayerKind(type):
    """``isinstance(m, LoraLayer)`` holds for every LoRA layer kind, as PEFT's base class does for its Linear,
    Embedding, convolutions and AdaLoRA's SVDLinear (helpers.rescale_adapter_scale and users' loops over the
    LoRA layers ask it; a check that missed the embedding's layer would leave its scale alone, silently). The kinds
    say so with ``is_lora_layer``; a user's subclass of LoraLayer (a Linear) is checked as any class."""

    def __instancecheck__(cls, obj):
        return cls.__subclasscheck__(type(obj))

    def __subclasscheck__(cls, sub):
        if cls is LoraLayer:  # (the class below; a subclass of it is checked as any class)
            return bool(getattr(sub, "is_lora_layer", False))
        return super().__subclasscheck__(sub)


class LoraLayer(Linear, metaclass=_EveryLoraLayerKind):
    """PEFT's name for the LoRA layer base class: subclass it to write a custom LoRA layer (a Linear's)."""


Linear.is_lora_layer = Embedding.is_lora_layer = True


class ParamWrapper(Linear):
    """LoRA on a parameter (``LoraConfig(target_parameters=["q_proj.weight"])``, PEFT's ``lora.ParamWrapper``):
    the wrapped layer runs its own forward with ``W + s B A`` in place of ``W`` (PEFT parametrizes the
    parameter). Same names and files as ``lora.Linear``; for a Linear the same numbers too. The factors take
    the parameter's shape ``[out, in]``: on an Embedding ``[num_embeddings, dim]``, so B is ``[V, r]``.

    As PEFT: no dropout, fan_in_fan_out, lora_bias or DoRA (the update is applied to the weight, not to
    the input), and no per-sample adapter_names."""

    peft_name = "lora.ParamWrapper"
    delta_rounded_first_in = frozenset({"merge", "safe_merge", "unmerge"})  # (its get_delta_weight: in W's dtype)
    base_types = (_NNLinear, _NNEmbedding)

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha, parameter_name="weight"):
        self.parameter_name = parameter_name
        super().__init__(base_layer, adapter_name, config, r, lora_alpha)

    def update_layer(self, adapter_name, config, r, lora_alpha):
        """(Also for a second adapter on the same wrapper: the same refusals.)"""
        for refused, words in ((config.lora_dropout, "lora_dropout != 0"), (config.fan_in_fan_out, "fan_in_fan_out"),
                               (config.lora_bias, "lora_bias=True"), (config.use_dora, "use_dora=True")):
            if refused:  # PEFT's words
                raise ValueError(f"lora.ParamWrapper does not work with {words}.")
        shape = self.base_layer.weight.shape  # the factors follow the parameter, not the layer's in/out
        self.out_features, self.in_features = shape[0], shape[1]
        super().update_layer(adapter_name, config, r, lora_alpha)

    def extra_repr(self):
        return f"parameter_name='{self.parameter_name}',"

    def adapter_forward(self, x):
        active = [a for a in self.active_adapters if a in self.lora_A]
        if not active:
            return self.base_layer(x)
        W = self.base_layer.weight
        delta = None
        for name in active:  # PEFT's get_delta_weight: (B @ A) * s in the adapter's dtype, then W's; the terms of
            # several adapters summed in W's dtype (a 16-bit weight: summed in float32, the logits a step off PEFT's)
            term = ((self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]).to(W.dtype)
            delta = term if delta is None else delta + term
        weight = W + delta
        if isinstance(self.base_layer, _NNEmbedding):
            return ops.embedding(x, weight, padding_idx=self.base_layer.padding_idx)
        return ops.linear(x, weight, self.base_layer.bias)

    def _mixed_batch_forward(self, x, adapter_names):
        raise ValueError("lora.ParamWrapper does not support mixed batch inference")  # PEFT's words


# ==================================================================================================
# Trainable tokens: a few rows of an embedding table trained in full (new tokens), the rest frozen
# ==================================================================================================
class TrainableTokensLayer(BaseTunerLayer):
    """PEFT's ``TrainableTokensLayer``: ``trainable_tokens_delta[name]`` ``[k, dim]`` holds the trained rows
    ``token_indices[name]`` of the table; the forward looks tokens up in the table with those rows
    replaced (``index_copy``), so only the k rows get gradients and the file holds k rows, not V.

    The new-token recipe: ``tokenizer.add_tokens([...])``, ``model.resize_token_embeddings(len(tokenizer))``,
    then ``LoraConfig(..., trainable_token_indices=new_ids)``. The rows start as the table's own
    (PEFT: replacing values, not adding deltas, so a re-initialised resized table cannot shift them);
    ``trainable_tokens_original`` keeps them (not saved) to unmerge. Around a Linear (an output head)
    the rows are output rows: ``x W'^T`` without the bias, as PEFT. With tied embeddings the head's layer
    is ``tied_adapter``: it shares the embedding layer's rows and is not saved separately.
    """

    adapter_layer_names = ("trainable_tokens_delta",)
    other_param_names = ("trainable_tokens_original",)
    per_adapter_settings = ("token_indices",)
    base_types = (_NNEmbedding, _NNLinear)
    saves_rows = True  # False: a tied head inside a TrainableTokensWrapper (see there)

    def __init__(self, base_layer, adapter_name, token_indices, tied_adapter=None, init_weights=True):
        super().__init__(base_layer)
        self.tied_adapter = tied_adapter  # a plain attribute: not a child (its rows are saved once, as PEFT)
        if tied_adapter is None:
            self.trainable_tokens_delta = ParameterDict()
            self.trainable_tokens_original = BufferDict(persistent=False)
            self.token_indices = {}
        else:  # the same tables (the same Parameters) as the layer it is tied to
            self.trainable_tokens_delta = tied_adapter.trainable_tokens_delta
            self.trainable_tokens_original = tied_adapter.trainable_tokens_original
            self.token_indices = tied_adapter.token_indices
        self.active_adapters = [adapter_name]
        self.update_layer(adapter_name, token_indices, init_weights)

    def __setattr__(self, name, value):
        if name == "tied_adapter":  # keep it out of the module tree (named_modules, state_dict)
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def update_layer(self, adapter_name, token_indices, init_weights=True):
        """The rows start as the table's own; ``init_weights=False`` (TrainableTokensConfig's): random."""
        if self.tied_adapter is not None:  # it follows the layer it is tied to
            self.set_adapter(self.active_adapters)
            return
        W = self.base_layer.weight
        indices = list(token_indices)
        if not indices:
            raise ValueError("trainable_token_indices is empty: give the ids of the tokens to train")
        if max(indices) >= W.shape[0]:  # torch's IndexError, named: the vocabulary was not resized?
            raise IndexError(f"trainable_token_indices: index {max(indices)} is out of bounds for dimension 0 with "
                             f"size {W.shape[0]} (call model.resize_token_embeddings(len(tokenizer)) after adding "
                             "tokens)")
        self.token_indices[adapter_name] = indices
        originals = W._array[W.device.xp.asarray(indices)].copy()
        values = originals.copy() if init_weights else _torch_randn(originals.shape, W.dtype)
        self.trainable_tokens_delta[adapter_name] = Parameter(values, dtype=W.dtype, device=W.device)
        self.trainable_tokens_original[adapter_name] = Tensor(originals, dtype=W.dtype, device=W.device)
        self.set_adapter(self.active_adapters)

    def check_set_adapter(self, adapter_names):
        """PEFT's rule: one trainable-tokens adapter per layer at a time."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        here = [n for n in names if n in self.trainable_tokens_delta]
        if len(here) > 1:
            raise ValueError(f"Only one adapter can be set at a time for {self}, got {len(here)}")

    def merged_weight(self, names):
        """The table with the rows of the adapters ``names`` replaced (a Tensor in the graph of the rows)."""
        W = self.base_layer.weight
        for name in names:
            if name in self.trainable_tokens_delta:
                index = Tensor(np.asarray(self.token_indices[name]), dtype=np.int64, device=W.device)
                W = ops.index_copy(W, 0, index, self.trainable_tokens_delta[name].to(W.dtype))
        return W

    def _lookup(self, x, W):
        if isinstance(self.base_layer, _NNEmbedding):
            return ops.embedding(x, W, padding_idx=self.base_layer.padding_idx)
        return ops.linear(x, W)  # an output head (PEFT: F.linear without the bias)

    def adapter_forward(self, x):
        active = [n for n in self.active_adapters if n in self.trainable_tokens_delta]
        if not active:
            return self.base_layer(x)
        return self._lookup(x, self.merged_weight(active))

    def _mixed_batch_forward(self, x, adapter_names):
        """Per-sample adapters: each adapter's table on its own rows of the batch (as PEFT's wrapper)."""
        self._check_mixed_batch(x, adapter_names)
        out = self.base_layer(x)
        for name in sorted(set(adapter_names) & set(self.trainable_tokens_delta.keys())):
            rows = np.array([n == name for n in adapter_names]).reshape((-1,) + (1,) * (out.ndim - 1))
            out = ops.where(out.device.xp.asarray(rows), self._lookup(x, self.merged_weight([name])), out)
        return out

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        """Merging writes the trained rows into the table; unmerging writes the original rows back."""
        rows = (self.trainable_tokens_original if unmerge else self.trainable_tokens_delta)[adapter_name]._array
        W = W.copy() if safe_merge else W
        W[xp_of(W).asarray(self.token_indices[adapter_name])] = rows.astype(W.dtype, copy=False)
        return W


class TrainableTokensWrapper(Module):
    """What stands in the model where a layer gets trainable tokens (PEFT's class of that name): its
    ``token_adapter`` is the ``TrainableTokensLayer`` (hence PEFT's parameter names,
    ``embed_tokens.token_adapter.trainable_tokens_delta.default``). ``weight`` is the table the active
    adapter's forward uses; other attributes are the wrapped layer's (``num_embeddings``, ...)."""

    def __init__(self, module, adapter_name, token_indices, tied_adapter=None):
        if not isinstance(module, TrainableTokensLayer.base_types) or isinstance(module, BaseTunerLayer):
            raise TypeError(f"trainable_token_indices cannot be applied to modules of type {type(module)} "
                            "(an Embedding or Linear that no other adapter wraps)")
        super().__init__()
        self.add_module("original_module", None)  # an empty slot, as PEFT's (print(model) shows it: None)
        self.token_adapter = TrainableTokensLayer(module, adapter_name, token_indices, tied_adapter)
        # PEFT's wrapper saves nothing for a tied head (its rows are the embedding's); its TrainableTokensModel
        # saves the tied layer's rows under the head's name too
        self.token_adapter.saves_rows = tied_adapter is None

    @property
    def original_module(self):
        return self.token_adapter.base_layer

    def update(self, adapter_name, token_indices):
        if adapter_name not in self.token_adapter.trainable_tokens_delta:
            self.token_adapter.update_layer(adapter_name, token_indices)

    def forward(self, x, *args, **kwargs):
        return self.token_adapter(x, *args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if modules is None or "token_adapter" not in modules:  # (still being built)
                raise
        layer = modules["token_adapter"]
        if name == "weight":  # PEFT's: the table with the active adapter's rows
            return layer.merged_weight([] if layer.disable_adapters else layer.active_adapters)
        return getattr(layer.base_layer, name)


# ==================================================================================================
# VeRA
# ==================================================================================================
class VeraLinear(BaseTunerLayer):
    """VeRA around a frozen Linear: ``h = W0 x + b + lambda_b * (B (lambda_d * (A dropout(x))))``.

    ``vera_A`` ``[r, max_in]`` and ``vera_B`` ``[max_out, r]`` are random, frozen and shared by every
    adapted layer (each layer uses the top-left block it needs); only ``vera_lambda_d`` ``[r]`` and
    ``vera_lambda_b`` ``[out]`` are trained -- r + out numbers per layer.
    """

    peft_name = "vera.Linear"
    delta_rounded_first_in = frozenset()  # (PEFT's VeRA adds the float32 update on every path)
    adapter_layer_names = ("vera_lambda_b", "vera_lambda_d")
    other_param_names = ("vera_dropout",)

    def __init__(self, base_layer, adapter_name, config, vera_A, vera_B):
        super().__init__(base_layer)
        self.r = {}
        self.vera_dropout = ModuleDict()
        self.vera_lambda_b = ParameterDict()
        self.vera_lambda_d = ParameterDict()
        self.vera_A, self.vera_B = vera_A, vera_B  # the model's shared BufferDicts
        self.active_adapters = [adapter_name]  # a new layer uses its adapter at once, as PEFT's does
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name, config):
        A, B = self.vera_A[adapter_name], self.vera_B[adapter_name]
        if A.shape[0] < config.r or A.shape[1] < self.in_features or B.shape[0] < self.out_features:
            raise ValueError(f"shared vera_A {A.shape} / vera_B {B.shape} are too small for a layer "
                             f"{self.in_features} -> {self.out_features} at r={config.r}")
        W0 = self.base_layer.weight
        self.r[adapter_name] = config.r
        self.vera_dropout[adapter_name] = Dropout(config.vera_dropout) if config.vera_dropout > 0 else Identity()
        lambda_b = np.ones(self.out_features)
        lambda_d = _torch_randn((config.r,))  # (PEFT: torch.randn(r), then reset to d_initial)
        if config.init_weights:  # PEFT: lambda_b = 0 (start at the base model), lambda_d = d_initial
            lambda_b[:], lambda_d[:] = 0.0, config.d_initial
        self.vera_lambda_b[adapter_name] = Parameter(lambda_b, dtype=W0.dtype, device=W0.device)
        self.vera_lambda_d[adapter_name] = Parameter(lambda_d, dtype=W0.dtype, device=W0.device)
        self.set_adapter(self.active_adapters)

    def _projections(self, adapter_name):
        """The blocks of the shared A [r, in] and B [out, r] this layer uses (constants)."""
        A = self.vera_A[adapter_name]._array[:, :self.in_features]
        B = self.vera_B[adapter_name]._array[:self.out_features, :]
        dev = self.base_layer.weight.device
        return Tensor._make(A, dev, False, None), Tensor._make(B, dev, False, None)

    def _mixed_batch_forward(self, x, adapter_names):
        raise ValueError("per-sample adapter_names are not supported for VeRA adapters (nor in PEFT)")

    def adapter_forward(self, x):
        result = self.base_layer(x)
        for name in self.active_adapters:
            if name not in self.vera_lambda_d:
                continue
            A, B = self._projections(name)
            dtype = self.vera_lambda_d[name].dtype  # float32 on a 16-bit base (autocast_adapter_dtype), as PEFT
            xd = ops.dropout(x.to(dtype), self._dropout_p(self.vera_dropout, name))
            update = self.vera_lambda_b[name] * ops.linear(self.vera_lambda_d[name] * ops.linear(xd, A.to(dtype)),
                                                           B.to(dtype))
            result = result + update
        return result.to(x.dtype)  # the float32 sum rounded back to the base's dtype once, as PEFT

    def get_delta_weight(self, adapter_name):
        """``diag(lambda_b) B diag(lambda_d) A`` [out, in], what merging adds to W0. (VeRA's forward, as PEFT's,
        scales the activations by the vectors instead, never forming the update: ``adapter_forward``.)"""
        # EXERCISE 8.1: VeRA's update diag(lambda_b) B diag(lambda_d) A, without building the diagonal matrices
        # BEGIN SOLUTION
        A, B = (t._array for t in self._projections(adapter_name))
        lambda_b = self.vera_lambda_b[adapter_name]._array[:, None]
        lambda_d = self.vera_lambda_d[adapter_name]._array[:, None]
        return matmul(lambda_b * B, lambda_d * A)
        # END SOLUTION

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        return self._with_delta(W, self.get_delta_weight(adapter_name), unmerge, safe_merge)

VeraLayer = VeraLinear


# ==================================================================================================
# modules_to_save: a full trainable copy of a module (e.g. a classification head) per adapter
# ==================================================================================================
_MIXED_BATCH_MODULES = (_NNLinear, _NNEmbedding, Conv1d, Conv2d)  # PEFT's list (minilora has no Conv3d)


class ModulesToSaveWrapper(Module):
    """Keeps ``original_module`` frozen and trains a copy per adapter in ``modules_to_save[name]``."""

    def __init__(self, module, adapter_name, tied_module=None):
        # PEFT's check_module: a container has no forward to run, and a module another adapter already
        # wraps (modules_to_save=["embed_tokens"] after a LoRA on embed_tokens) cannot also be copied
        if isinstance(module, (ModuleDict, nn.ModuleList, nn.ParameterList, nn.ParameterDict, BaseTunerLayer)):
            raise TypeError(f"modules_to_save cannot be applied to modules of type {type(module)}")
        super().__init__()
        self.original_module = module
        self.modules_to_save = ModuleDict()
        self.active_adapters = []
        self.disable_adapters = False
        self.batch_adapter_names = None
        self.update(adapter_name, tied_module)

    def update(self, adapter_name, tied_module=None):
        """A copy of the original module for ``adapter_name``; with ``tied_module`` (ensure_weight_tying: the
        embedding's copy, for a head tied to it) PEFT's ``nn.Linear(*table.shape, bias=False)`` -- its init
        drawn, as there -- whose weight is that copy's table, so both layers train one matrix."""
        if adapter_name not in self.modules_to_save:
            if tied_module is not None:
                head = _NNLinear(*tied_module.weight.shape, bias=False)
                head.weight = tied_module.weight
                self.modules_to_save[adapter_name] = head
            else:
                self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)
        self.original_module.requires_grad_(False)

    @property
    def active_adapter(self):
        return self.active_adapters[0] if self.active_adapters else None

    def __getattr__(self, name):
        """As PEFT: an attribute the wrapper lacks is the running module's (``embed_tokens.weight``,
        ``lm_head.out_features``): the active adapter's copy, or the original when none is active."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if modules is None or "original_module" not in modules:  # (still being built)
                raise
        active = self.__dict__.get("active_adapters")
        if self.__dict__.get("disable_adapters") or not active or active[0] not in modules["modules_to_save"]:
            return getattr(modules["original_module"], name)
        return getattr(modules["modules_to_save"][active[0]], name)

    def adapter_names(self):
        return list(self.modules_to_save.keys())

    def check_set_adapter(self, adapter_names):
        """PEFT's: one module copy runs at a time, so at most one of the adapters may have one here."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        names = [n for n in names if n in self.modules_to_save]
        if len(names) > 1:
            raise ValueError(f"Only one adapter can be set at a time for {self}, got {len(names)}")
        return names

    def set_adapter(self, adapter_names, inference_mode=False):
        names = self.check_set_adapter(adapter_names)
        for key, module in self.modules_to_save.items():
            module.requires_grad_(key in names and not inference_mode)
            if key in names:  # PEFT 0.22: the active copy follows the wrapper's mode
                module.train(self.training and not inference_mode)
        self.active_adapters = names

    def set_requires_grad(self, adapter_names, requires_grad=True):
        names = {adapter_names} if isinstance(adapter_names, str) else set(adapter_names)
        for key, module in self.modules_to_save.items():
            if key in names:
                module.requires_grad_(requires_grad)

    def enable_adapters(self, enabled):
        self.disable_adapters = not enabled

    def delete_adapter(self, adapter_name):
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        self.active_adapters = [a for a in self.active_adapters if a != adapter_name]

    def forward(self, x, *args, **kwargs):
        names = self.batch_adapter_names
        if self.disable_adapters or (names is None and not self.active_adapters):
            return self.original_module(x, *args, **kwargs)
        if names is None:
            return self.modules_to_save[self.active_adapters[0]](x, *args, **kwargs)
        # per-sample adapters: each copy runs on the batch, its rows are kept where it is chosen
        if not isinstance(self.original_module, _MIXED_BATCH_MODULES):  # PEFT's refusal, in its words
            raise TypeError("Mixed batching is only supported for the following modules: Linear, Embedding, "
                            f"Conv1d, Conv2d, Conv3d (this one is a {type(self.original_module).__name__}).")
        out = self.original_module(x, *args, **kwargs)
        for name in sorted(set(names) & set(self.modules_to_save.keys())):
            rows = np.array([n == name for n in names]).reshape((-1,) + (1,) * (out.ndim - 1))
            out = ops.where(out.device.xp.asarray(rows), self.modules_to_save[name](x, *args, **kwargs), out)
        return out

