"""LoRA on ``nn.MultiheadAttention`` (PEFT's ``lora.MultiheadAttention``, ``target_modules=["self_attn"]``).

The attention has no Linear layers to wrap for its input projection: ``in_proj_weight`` ``[3E, E]`` (q, k
and v stacked) is a bare parameter. So, as PEFT, the layer holds one LoRA pair for it (``lora_A`` ``E -> r``,
``lora_B`` ``r -> 3E``) and wraps ``out_proj`` in a ``lora.Linear`` of its own; the names are PEFT's::

    self_attn.lora_A.default.weight                      [r, E]
    self_attn.lora_B.default.weight                      [3E, r]
    self_attn.base_layer.in_proj_weight                  (frozen)
    self_attn.base_layer.out_proj.lora_A.default.weight  [r, E]
    self_attn.base_layer.out_proj.base_layer.weight      (frozen)

The forward runs the base attention with the updated weights ``W_in + s B A`` and ``W_out + s B_o A_o``
(no LoRA dropout: PEFT merges them for the forward). PEFT merges them into the module before the call and
unmerges after; minilora hands the attention the updated weights as graph tensors for that one call, so
the frozen weights are never rewritten and the gradients reach A and B.

out_proj's update is added once, as PEFT 0.22 does. PEFT before 0.22 added it twice (its merge wrote
``W_out + dW`` and then called ``out_proj.merge()``, which added ``dW`` again -- in every forward and in
merge_and_unload; huggingface/peft#3774), so a file it wrote means ``W_out + 2 s B_o A_o``: as 0.22,
loading such a file doubles out_proj's lora_B, with PEFT's warning (``double_out_proj_of_old_peft_files``).
"""
import contextlib
import warnings

from packaging.version import InvalidVersion, Version

from ..nn import MultiheadAttention as _NNMultiheadAttention
from ..nn import functional as F
from .inits import is_weight_mutating_init
from .layers import Linear

__all__ = ["MultiheadAttention"]


class MultiheadAttention(Linear):
    """LoRA around a frozen ``nn.MultiheadAttention`` (packed q/k/v weights only, as PEFT)."""

    peft_name = "lora.MultiheadAttention"
    base_types = (_NNMultiheadAttention,)

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
        _check_supported(base_layer, config)
        base_layer.out_proj = Linear(base_layer.out_proj, adapter_name, config, r, lora_alpha)  # PEFT: first
        super().__init__(base_layer, adapter_name, config, r, lora_alpha)

    @property
    def weight(self):
        """The weight the layer's own adapters update: the packed input projection [3E, E]."""
        return self.base_layer.in_proj_weight

    @property
    def _out_lora(self):
        """out_proj's ``lora.Linear`` (its adapters are this layer's adapters, on the output projection)."""
        return self.base_layer.out_proj

    def update_layer(self, adapter_name, config, r, lora_alpha):
        _check_supported(self.base_layer, config)
        super().update_layer(adapter_name, config, r, lora_alpha)
        # out_proj's too, as PEFT: a new layer's out_proj adapter (made when out_proj was wrapped) is
        # made again here, drawing its init a second time -- the same seed gives PEFT's numbers
        self._out_lora.update_layer(adapter_name, config, r, lora_alpha)

    # --- forward: the base attention with the updated weights ----------------------------------------
    def forward(self, query, *args, adapter_names=None, **kwargs):
        if adapter_names is not None or self.batch_adapter_names is not None:  # PEFT's TypeError and words
            raise TypeError(f"lora.{type(self).__name__} does not support mixed adapter batches.")
        if self.disable_adapters and self.merged:
            self.unmerge()
        active = [name for name in self.active_adapters if name in self.lora_A]
        if self.disable_adapters or self.merged or not active:
            return self.base_layer(query, *args, **kwargs)
        with self._updated_weights(active):
            return self.base_layer(query, *args, **kwargs)

    @contextlib.contextmanager
    def _updated_weights(self, names):
        """For one call, the attention reads ``W_in + sum s B A`` as its ``in_proj_weight`` and runs its
        out_proj with ``W_out + sum s B_o A_o`` (instance attributes shadow the registered ones)."""
        attention, out_proj = self.base_layer, self._out_lora
        in_weight, out_weight = self.weight, out_proj.weight
        for name in names:  # PEFT's order: one adapter after the other, each rounded to the base dtype
            in_weight = in_weight + self._delta(self, name).to(in_weight.dtype)
            out_weight = out_weight + self._delta(out_proj, name).to(out_weight.dtype)
        bias = out_proj.base_layer.bias
        attention.__dict__["in_proj_weight"] = in_weight
        attention.__dict__["out_proj"] = lambda h: F.linear(h, out_weight, bias)
        try:
            yield
        finally:
            del attention.__dict__["in_proj_weight"], attention.__dict__["out_proj"]

    @staticmethod
    def _delta(layer, name):
        """``(B @ A) * s`` as a graph tensor (gradients reach A and B), PEFT's order of operations."""
        return (layer.lora_B[name].weight @ layer.lora_A[name].weight) * layer.scaling[name]

    # --- merging: the input projection here, the output projection by out_proj's own layer ----------
    def merge(self, safe_merge=False, adapter_names=None):
        """(A model's safe_merge checks every layer, out_proj's too, before any weight changes.)"""
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)
        self._out_lora.merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def unmerge(self):
        super().unmerge()
        self._out_lora.unmerge()

    def unwrapped(self):
        """The plain attention, with its plain out_proj back (PEFT's unload_and_optionally_merge_module)."""
        self.base_layer.out_proj = self._out_lora.unwrapped()
        return self.base_layer


def _check_supported(base_layer, config):
    """What PEFT refuses (its words), and what its layer cannot do (refused here by name)."""
    if not base_layer._qkv_same_embed_dim:
        raise ValueError("Only same embed for query/key/value is supported as of now for MultiheadAttention.")
    if config.use_dora:
        raise ValueError("MultiheadAttention does not support DoRA (yet), please set use_dora to False")
    if config.lora_bias:  # PEFT 0.22's refusal and words (0.21 made the bias, and its forward ignored it)
        raise ValueError("MultiheadAttention does not support lora_bias=True, please set lora_bias to False")
    init = config.init_lora_weights
    if is_weight_mutating_init(init) or init == "orthogonal":  # PEFT fails on these (no .weight, or float64)
        raise NotImplementedError(f"init_lora_weights={init!r} on a MultiheadAttention is not implemented (PEFT "
                                  "fails on it too): use True, False or 'gaussian'")


def _counted_out_proj_twice(raw_config):
    """Whether an adapter_config.json dict comes from a PEFT that added out_proj's update twice: PEFT 0.22's
    rule (no peft_version: before 0.18; a release before 0.22; a 0.21.x dev build before 0.21.1). minilora
    always added it once, whatever its file says (``+minilora`` or the older ``minilora-``)."""
    written = raw_config.get("peft_version")
    if written is None:
        return True
    if "minilora" in str(written):
        return False
    try:
        version = Version(str(written).partition("@")[0])
    except InvalidVersion:
        return False  # (PEFT 0.22 raises there; a file it cannot date is taken as written)
    release = Version(version.base_version)
    return release < Version("0.21.1") or (not version.is_devrelease and release < Version("0.22.0"))


def double_out_proj_of_old_peft_files(peft_model, tensors, raw_config, adapter_name):
    """PEFT 0.22's load rule for MultiheadAttention adapters saved before its fix: out_proj's lora_B doubled,
    so the adapter computes what it computed where it was trained, with PEFT's warning. ``tensors`` are the
    file's (keys without the adapter name); returns them, changed where needed."""
    suffix = ".base_layer.out_proj.lora_B.weight"
    layers = dict(peft_model.named_modules())  # (a key naming no layer is left to the loader's error)
    keys = [key for key in tensors if key.endswith(suffix) and isinstance(layers.get(key[:-len(suffix)]),
                                                                         MultiheadAttention)]
    if not keys or not _counted_out_proj_twice(raw_config):
        return tensors
    warnings.warn(f"Adapter '{adapter_name}' was saved with PEFT < 0.22.0, which applied the out_proj LoRA weights "
                  "of MultiheadAttention twice. They were doubled to keep the outputs of the adapter unchanged.")
    return {key: 2 * value if key in keys else value for key, value in tensors.items()}
