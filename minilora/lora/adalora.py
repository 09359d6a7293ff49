"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form whose rank budget moves to where it matters. PEFT 0.22's API.

Each adapted Linear gets ``h = W0 x + (alpha / ranknum) * B diag(E) A x`` with ``A`` [r, in] (right
singular vectors), ``E`` [r, 1] (singular values, start at 0) and ``B`` [out, r] (left singular vectors).
Two things keep it an SVD and make the ranks adaptive:

* the **orthogonal regulariser**: ``orth_reg_weight * mean over A's and B's of ||A A^T - I||_F`` (and
  ``||B^T B - I||_F``) is added to the loss in the forward (when labels give a loss), as PEFT adds it;
* the **RankAllocator**, driven by ``model.base_model.update_and_allocate(global_step)`` after every
  ``backward()``: each entry's sensitivity ``|p * grad|`` is smoothed (EMA ``beta1``) and its uncertainty
  ``|sensitivity - EMA|`` too (EMA ``beta2``); a triplet (E_i, row A_i, column B_i) scores
  ``s(E_i) + mean s(A_i) + mean s(B_i)``. The total rank budget falls from ``init_r`` per layer to
  ``target_r`` per layer on a cubic schedule between ``tinit`` and ``total_step - tfinal``; every
  ``deltaT`` steps the least important singular values are set to 0 (masked) to fit it. The final
  mask is ``config.rank_pattern`` (lists of booleans per layer), saved in ``adapter_config.json``;
  a saved adapter keeps only the surviving triplets, as in PEFT's files.
"""
import warnings
from dataclasses import dataclass

import numpy as np

from .. import dtypes, ops
from ..blas import matmul
from ..factories import eye, randn
from ..nn import Dropout, Identity, ModuleDict, Parameter, init
from ..nn import Embedding as _NNEmbedding
from ..nn import Linear as _NNLinear
from ..tensor import Tensor, with_note
from .config import PEFT_TYPE_TO_CONFIG, LoraConfig, _BIAS_MODES
from .layers import BaseTunerLayer, ParameterDict
from .model import PEFT_TYPE_TO_TUNER, LoraModel

__all__ = ["AdaLoraConfig", "AdaLoraModel", "SVDLinear", "RankAllocator"]

_RANKNUM_EPS = 1e-5  # PEFT divides by ranknum + 1e-5


@dataclass
class AdaLoraConfig(LoraConfig):
    """PEFT's ``AdaLoraConfig``: ``LoraConfig``'s fields (``r`` is unused: the rank is ``init_r``) plus the
    schedule. ``total_step`` is required (the budget schedule needs the length of training)."""

    target_r: int = 8
    init_r: int = 12
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int = None
    rank_pattern: dict = None

    PEFT_TYPE = "ADALORA"
    # LoRA's trainable_token_indices, layer replication and parameter targets are not built into AdaLoraModel here
    # (lora_bias is accepted and unused, as PEFT's SVDLinear ignores it; a loftq_config is LoraConfig's warning)
    _unimplemented = {**LoraConfig._unimplemented, "trainable_token_indices": None,
                      "layer_replication": None, "target_parameters": None, "eva_config": None,
                      "corda_config": None, "lora_ga_config": None, "alora_invocation_tokens": None,
                      "use_qalora": False, "qalora_group_size": 16}  # (LoRA's data inits and variants: none here)

    def __post_init__(self):
        # PEFT's AdaLoRA refuses LoftQ; minilora's LoraConfig would refuse init_lora_weights='loftq' in its own
        # words first, so PEFT's refusal is made here (LoraConfig's missing-loftq_config error stays first)
        if self.init_lora_weights == "loftq" and self.loftq_config and not self.use_dora:
            raise ValueError("PeftType.ADALORA does not support LOFTQ.")
        pattern, self.rank_pattern = self.rank_pattern, {}  # LoraConfig's rank_pattern holds ints; ours, masks
        super().__post_init__()
        self.rank_pattern = pattern
        if self.use_dora:
            raise ValueError(f"{self.peft_type} does not support DoRA.")  # "PeftType.ADALORA ...", as PEFT
        if self.r != 8:  # PEFT's warning: r is LoraConfig's, AdaLoRA starts at init_r
            warnings.warn("Note that `r` is not used in AdaLora and will be ignored."
                          "If you intended to set the initial rank, use `init_r` instead.")
        # PEFT checks nothing else here: beta1/beta2 are asserted by the RankAllocator (a trainable adapter only),
        # a negative init_r is refused by the layer, deltaT=0 fails at the first budget step (step % 0), and
        # tinit/tfinal/target_r take any number; refusing them here would refuse configs PEFT loads and trains
        if self.total_step is None or self.total_step <= 0:
            raise ValueError("AdaLoRA does not work when `total_step` is None, supply a value > 0.")
        if self.orth_reg_weight < 0:
            raise ValueError(f"`orth_reg_weight` should be greater than or equal to 0, but the value passed is "
                             f"{self.orth_reg_weight}")
        if self.tinit >= (self.total_step - self.tfinal):
            raise ValueError("The supplied schedule values don't allow for a budgeting phase. Decrease "
                             "`tfinal`/`tinit` or increase `total_step`.")


# ==================================================================================================
# The SVD-form layer
# ==================================================================================================
class SVDLinear(BaseTunerLayer):
    """PEFT's ``adalora.SVDLinear``: ``h = W0 x + b + (alpha / (ranknum + 1e-5)) B ((A * E) dropout(x))``.

    ``lora_A.<name>`` [r, in], ``lora_E.<name>`` [r, 1], ``lora_B.<name>`` [out, r] are plain Parameters
    (file keys ``...q_proj.lora_A``), ``ranknum.<name>`` a frozen [1] holding the initial rank."""

    peft_name = "adalora.SVDLinear"  # as print(model) shows it in PEFT
    is_lora_layer = True  # PEFT's AdaLoraLayer is a LoraLayer (rescale_adapter_scale scales it too)
    delta_rounded_first_in = frozenset()  # (PEFT's AdaLoRA adds the float32 update on every path)
    adapter_layer_names = ("lora_A", "lora_B", "lora_E")
    other_param_names = ("ranknum", "lora_dropout")

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
        super().__init__(base_layer)
        self.r, self.lora_alpha, self.scaling = {}, {}, {}
        self.lora_dropout = ModuleDict()  # Dropout modules hold p (PEFT's lora_dropout.<name>)
        # registered in PEFT's order (A, B, E): named_parameters, state_dict and optimizer groups list them so
        self.lora_A, self.lora_B, self.lora_E = ParameterDict(), ParameterDict(), ParameterDict()
        self.ranknum = ParameterDict()
        self.active_adapters = [adapter_name]
        self.update_layer(adapter_name, config, r, lora_alpha)

    def update_layer(self, adapter_name, config, r, lora_alpha):
        """Create (or re-create at rank ``r``) adapter ``adapter_name``: A, B ~ N(0, 0.02^2) and E = 0, so
        the model starts at the base (``init_lora_weights=False``: all three N(0, 1), as PEFT)."""
        if r < 0:  # PEFT's check (r == 0 is allowed for AdaLoRA: an adapter cut to nothing)
            raise ValueError(f"`r` should be a positive integer or 0, but the value passed is {r}")
        W0 = self.base_layer.weight
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha if lora_alpha > 0 else float(r)
        self.lora_dropout[adapter_name] = Dropout(config.lora_dropout) if config.lora_dropout > 0 else Identity()
        # PEFT's draws, in its order (torch.randn for A, E, B and the ranknum it then overwrites; its
        # reset then zeroes E and draws A and B again as N(0, 0.02^2)), so the same seed gives its numbers
        factors = {"A": randn(r, self.in_features), "E": randn(r, 1), "B": randn(self.out_features, r)}
        randn(1)  # ranknum's draw (the value is r)
        if config.init_lora_weights:  # PEFT tests its truth only: "gaussian", "pissa", ... start as True does
            init.zeros_(factors["E"])
            init.normal_(factors["A"], 0.0, 0.02)
            init.normal_(factors["B"], 0.0, 0.02)
        for table, key in ((self.lora_A, "A"), (self.lora_E, "E"), (self.lora_B, "B")):
            table[adapter_name] = Parameter(factors[key]._array, dtype=W0.dtype, device=W0.device)
        # frozen on every base, as PEFT 0.22 (0.21's move to a float64 / 16-bit base's dtype registered a new
        # Parameter, which trained: AdamW's weight decay then shrank the scale alpha / ranknum)
        self.ranknum[adapter_name] = Parameter(np.full(1, float(r)), requires_grad=False,
                                               dtype=W0.dtype, device=W0.device)
        self.set_adapter(self.active_adapters)

    def _scaled(self, value, adapter_name):
        """``value * alpha / (ranknum + 1e-5)`` (a Tensor or an array), op by op as PEFT: ranknum is the
        initial rank (it stays so while E is masked), a [1] in the adapter's dtype, so in 16 bits
        ``ranknum + 1e-5`` is the rank itself, and in float32 the division rounds after the product."""
        ranknum = self.ranknum[adapter_name]  # a Tensor keeps it in the graph (its grad_fn, as PEFT's)
        ranknum = ranknum._array if not isinstance(value, Tensor) else ranknum
        return value * self.scaling[adapter_name] / (ranknum + _RANKNUM_EPS)

    def adapter_forward(self, x):
        result = self.base_layer(x)
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            p = self._dropout_p(self.lora_dropout, name)
            xd = x.to(self.lora_A[name].dtype)  # float32 on a 16-bit base, cast before dropout as PEFT
            xd = ops.dropout(xd, p) if p > 0 else xd
            AE = self.lora_A[name] * self.lora_E[name]  # scale row i of A by the singular value E_i
            update = self._scaled(ops.matmul(ops.matmul(xd, AE.T), self.lora_B[name].T), name)
            result = (result + update).to(result.dtype)  # PEFT's in-place result += ...: rounded once per adapter
        return result

    def get_delta_weight(self, adapter_name):
        """PEFT's ``B @ (A * E) * alpha / (ranknum + 1e-5)``, op by op in the adapter's dtype: with 16-bit
        factors (``autocast_adapter_dtype=False``) each op rounds, the matmul once (float32 inside, as
        torch's CPU kernel)."""
        A, E, B = (t._array for t in (self.lora_A[adapter_name], self.lora_E[adapter_name], self.lora_B[adapter_name]))
        product = matmul(dtypes.upcast(B), dtypes.upcast(A * E)).astype(B.dtype, copy=False)
        return self._scaled(product, adapter_name)

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        return self._with_delta(W, self.get_delta_weight(adapter_name), unmerge, safe_merge)


# ==================================================================================================
# The RankAllocator: importance scores, the budget schedule, the masks
# ==================================================================================================
class RankAllocator:
    """PEFT's ``RankAllocator`` (AdaLoRA paper, sections 3.2-3.3), on the parameters of ``model``
    (the model inside ``AdaLoraModel``, so names look like ``model.layers.0...lora_E.default``)."""

    def __init__(self, model, peft_config, adapter_name):
        self.peft_config, self.adapter_name = peft_config, adapter_name
        self.beta1, self.beta2 = peft_config.beta1, peft_config.beta2
        # PEFT's asserts (a bare AssertionError at get_peft_model; the config itself takes any beta)
        assert self.beta1 > 0 and self.beta1 < 1
        assert self.beta2 > 0 and self.beta2 < 1
        self.reset_ipt()
        self._set_budget_scheduler(model)

    def set_total_step(self, total_step):
        self.peft_config.total_step = total_step

    def reset_ipt(self):
        self.ipt, self.exp_avg_ipt, self.exp_avg_unc = {}, {}, {}

    def _set_budget_scheduler(self, model):
        """Initial budget: the sum of all ranks; target: ``target_r`` per adapted matrix."""
        self.init_bgt, names = 0, set()
        for n, p in model.named_parameters():
            if f"lora_A.{self.adapter_name}" in n:
                self.init_bgt += p.shape[0]
                names.add(n.replace("lora_A", "%s"))
        self.name_set = sorted(names)
        self.target_bgt = self.peft_config.target_r * len(self.name_set)

    def budget_schedule(self, step):
        """(budget, mask now?): full budget until ``tinit``, then a cubic fall to the target, reached at
        ``total_step - tfinal``; masks every ``deltaT`` steps in between and at every step after."""
        tinit, tfinal, total = self.peft_config.tinit, self.peft_config.tfinal, self.peft_config.total_step
        if step <= tinit:
            return self.init_bgt, False
        if step > total - tfinal:
            return self.target_bgt, True
        progress_left = 1 - (step - tinit) / (total - tfinal - tinit)
        budget = int((self.init_bgt - self.target_bgt) * (progress_left ** 3) + self.target_bgt)
        return budget, step % self.peft_config.deltaT == 0

    def update_ipt(self, model):
        """Sensitivity ``|p * grad|`` and its two EMAs, for every entry of this adapter's A, E, B."""
        for n, p in model.named_parameters():
            if "lora_" not in n or self.adapter_name not in n:
                continue
            if p.grad is None:  # PEFT's p * p.grad fails on None with a TypeError
                raise TypeError(f"update_and_allocate needs the gradients: {n} has none (call it after "
                                   "loss.backward() and before zero_grad())")
            if n not in self.ipt:
                self.exp_avg_ipt[n] = np.zeros_like(p._array)
                self.exp_avg_unc[n] = np.zeros_like(p._array)
            self.ipt[n] = np.abs(p._array * p.grad._array)
            self.exp_avg_ipt[n] = self.beta1 * self.exp_avg_ipt[n] + (1 - self.beta1) * self.ipt[n]
            self.exp_avg_unc[n] = (self.beta2 * self.exp_avg_unc[n]
                                   + (1 - self.beta2) * np.abs(self.ipt[n] - self.exp_avg_ipt[n]))

    def _element_score(self, n):
        return self.exp_avg_ipt[n] * self.exp_avg_unc[n]

    def _triplet_scores(self, model):
        """{lora_E parameter name: [r] score of each triplet}: ``s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)``."""
        vectors, values = {}, {}
        for n, _ in model.named_parameters():
            for part, axis in (("lora_A", 1), ("lora_B", 0)):
                if f"{part}.{self.adapter_name}" in n:
                    vectors.setdefault(n.replace(part, "%s"), []).append(self._element_score(n).mean(axis=axis))
            if f"lora_E.{self.adapter_name}" in n:
                values[n.replace("lora_E", "%s")] = self._element_score(n).reshape(-1)
        return {name % "lora_E": values[name] + sum(vectors[name]) for name in vectors}

    def mask_to_budget(self, model, budget):
        """Zero the E of every triplet scoring at or below the (init - budget)-th smallest score.

        Returns the ``rank_pattern``: {lora_E name: [kept?] per triplet}."""
        scores = self._triplet_scores(model)
        everything = np.concatenate(list(scores.values()))
        k = self.init_bgt - budget  # torch.kthvalue(k) is the k-th smallest, k counted from 1
        try:  # the ops' kthvalue: torch's errors where PEFT's call fails (k <= 0, no ranks at all)
            threshold = ops.kthvalue(Tensor(everything, dtype=everything.dtype), k)[0].item()  # (float32 by default)
        except (RuntimeError, IndexError) as error:
            raise with_note(error, f"AdaLoRA masks the {k} least important of its {self.init_bgt} ranks at budget "
                                   f"{budget}: PEFT needs 0 < target_r < init_r") from None
        rank_pattern = {}
        for n, p in model.named_parameters():
            if n in scores:
                drop = scores[n] <= threshold
                p._array[drop, :] = 0.0
                p._bump_version()  # an in-place change, as PEFT's masked_fill_
                rank_pattern[n] = [bool(keep) for keep in ~drop]
        return rank_pattern

    def update_and_allocate(self, model, global_step, force_mask=False):
        if global_step < self.peft_config.total_step - self.peft_config.tfinal:
            self.update_ipt(model)
        budget, mask_now = self.budget_schedule(global_step)
        rank_pattern = self.mask_to_budget(model, budget) if mask_now or force_mask else None
        return budget, rank_pattern

    def mask_using_rank_pattern(self, model, rank_pattern):
        """Re-apply a fixed mask (during the final ``tfinal`` steps: masked values stay 0)."""
        # rank_pattern.keys(): with no pattern yet (a step past total_step - tfinal first), PEFT's AttributeError
        truncated = self.adapter_name not in next(iter(rank_pattern.keys()))
        for n, p in model.named_parameters():
            if f"lora_E.{self.adapter_name}" in n:
                key = n.replace(f".{self.adapter_name}", "") if truncated else n
                p._array[~np.asarray(rank_pattern[key], dtype=bool), :] = 0.0


# ==================================================================================================
# The tuner
# ==================================================================================================
class AdaLoraModel(LoraModel):
    """PEFT's ``AdaLoraModel``: SVD-form layers, the orthogonal regulariser in the loss, the allocator."""

    prefix = "lora_"
    layer_cls = SVDLinear

    def __init__(self, model, config, adapter_name="default"):
        super().__init__(model, config, adapter_name)
        if sum(not c.inference_mode for c in self.peft_config.values()) > 1:
            raise ValueError("AdaLoraModel supports only 1 trainable adapter. When using multiple adapters, set "
                             "inference_mode to True for all adapters except the one you want to train.")
        if self.peft_config[adapter_name].inference_mode:
            for module in self.tuner_layers():  # PEFT's _freeze_adapter
                module.set_adapter(adapter_name, inference_mode=True)
        else:
            self.trainable_adapter_name = adapter_name
            self.rankallocator = RankAllocator(self.model, self.peft_config[adapter_name], adapter_name)

    def _before_injection(self, adapter_name, config):
        super()._before_injection(adapter_name, config)
        if not config.inference_mode and any(not c.inference_mode for c in self.peft_config.values()):
            raise ValueError("AdaLoraModel supports only 1 trainable adapter. When using multiple adapters, set "
                             "inference_mode to True for all adapters except the one you want to train.")

    def _rank_and_alpha(self, config, key):
        return config.init_r, config.lora_alpha

    def _create_layer(self, target, adapter_name, config, key):
        if not isinstance(target, _NNLinear):
            kind = "an Embedding" if isinstance(target, _NNEmbedding) else f"a {type(target).__name__}"
            peft_too = "as PEFT" if isinstance(target, _NNEmbedding) else "PEFT's also adapts Conv2d"
            raise ValueError(f"Target module {key!r} is {kind}: minilora's AdaLoRA adapts Linear layers only "
                             f"({peft_too}); choose target_modules that name Linear layers")
        return SVDLinear(target, adapter_name, config, *self._rank_and_alpha(config, key))

    def _update_layer(self, layer, adapter_name, config, key):
        layer.update_layer(adapter_name, config, *self._rank_and_alpha(config, key))

    # --- the loss: PEFT adds the orthogonal regulariser in AdaLoraModel.forward ----------------------
    def orthogonal_regularizer(self):
        """Mean over this adapter's A's and B's of ``||A A^T - I||_F`` / ``||B^T B - I||_F`` (a Tensor)."""
        name = self.trainable_adapter_name
        total, count = None, 0
        for n, p in self.model.named_parameters():
            if ("lora_A" in n or "lora_B" in n) and name in n:
                cov = ops.matmul(p, p.T) if "lora_A" in n else ops.matmul(p.T, p)
                diff = cov - eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
                norm = ops.sqrt(ops.sum(diff * diff))
                total = norm if total is None else total + norm
                count += 1
        return total / count if count else None

    def add_to_loss(self, outputs):
        """Called by ``PeftModel.forward``: a loss gets ``orth_reg_weight * orthogonal_regularizer()``."""
        if getattr(outputs, "loss", None) is None:
            return outputs
        # an adapter loaded for inference has no trainable adapter: PEFT's forward fails on the name (with labels
        # only), so a loss is never reported without the regulariser PEFT would have added
        if not hasattr(self, "trainable_adapter_name"):
            raise AttributeError(f"'{type(self.model).__name__}' object has no attribute 'trainable_adapter_name'")
        weight = self.peft_config[self.trainable_adapter_name].orth_reg_weight
        if weight < 0:
            raise ValueError("orth_reg_weight should be greater than or equal to 0. ")
        regularizer = self.orthogonal_regularizer()
        if regularizer is not None:
            outputs.loss = outputs.loss + weight * regularizer
        return outputs

    # --- the allocator ---------------------------------------------------------------------------
    def update_and_allocate(self, global_step):
        """Update importances and re-mask (call after ``loss.backward()``, before ``zero_grad()``).

        Before ``total_step - tfinal``: scores and, on the schedule, masks (``rank_pattern`` recorded);
        at that step: the final mask; after it: the final mask re-applied."""
        config = self.peft_config[self.trainable_adapter_name]
        boundary = config.total_step - config.tfinal
        if global_step < boundary:
            _, rank_pattern = self.rankallocator.update_and_allocate(self.model, global_step)
            if rank_pattern:
                config.rank_pattern = rank_pattern
        elif global_step == boundary:
            _, rank_pattern = self.rankallocator.update_and_allocate(self.model, global_step, force_mask=True)
            config.rank_pattern = rank_pattern
            self.rankallocator.reset_ipt()
        else:
            self.rankallocator.mask_using_rank_pattern(self.model, config.rank_pattern)

    # --- resuming a run: what the allocator carries from step to step besides the weights ------------
    def allocator_state_dict(self):
        """The importance scores and their averages, and the rank pattern so far (``None`` without a
        trainable adapter). ``minilora.train`` keeps it in its checkpoints: without it a resumed run
        restarts the averages from zero (other ranks get masked) and, past ``total_step - tfinal``,
        has no pattern to re-apply."""
        if not hasattr(self, "trainable_adapter_name"):
            return None
        allocator = self.rankallocator
        return {"ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt),
                "exp_avg_unc": dict(allocator.exp_avg_unc),
                "rank_pattern": self.peft_config[self.trainable_adapter_name].rank_pattern}

    def load_allocator_state_dict(self, state):
        """Restore what ``allocator_state_dict`` returned; a state of another model is refused (ValueError)
        before anything changes."""
        params = dict(self.model.named_parameters())
        tables = {name: state[name] for name in ("ipt", "exp_avg_ipt", "exp_avg_unc")}
        for table in tables.values():
            for n, value in table.items():
                if n not in params or tuple(params[n].shape) != tuple(np.shape(value)):
                    raise ValueError(f"the AdaLoRA allocator state holds {n!r} of shape {np.shape(value)}, which "
                                     "this model's adapter does not have")
        allocator = self.rankallocator
        for name, table in tables.items():
            setattr(allocator, name, {n: params[n].device.xp.asarray(v) for n, v in table.items()})
        pattern = state["rank_pattern"]
        self.peft_config[self.trainable_adapter_name].rank_pattern = \
            None if pattern is None else {n: [bool(k) for k in keep] for n, keep in pattern.items()}

    def allocated_ranks(self, adapter_name=None):
        """{module path: rank} after allocation (the initial ranks before any masking)."""
        adapter_name = adapter_name or self.active_adapter
        pattern = self.peft_config[adapter_name].rank_pattern
        if pattern is None:
            return {path: layer.r[adapter_name] for path, layer in self.model.named_modules()
                    if isinstance(layer, SVDLinear) and adapter_name in layer.lora_A}
        return {self._pattern_module_path(name, adapter_name): int(self._kept_and_rank(keep)[1])
                for name, keep in pattern.items()}

    # --- files: PEFT saves only the triplets rank_pattern keeps, and resizes to them when loading ---------
    @staticmethod
    def _pattern_module_path(name, adapter_name):
        """The module a rank_pattern key names: PEFT drops ``lora_E.<adapter>`` when the adapter's name is in
        the key (a substring test, as PEFT's), else ``lora_E``."""
        parts = name.split(".")
        return ".".join(parts[:-2] if adapter_name in name else parts[:-1])

    @staticmethod
    def _kept_and_rank(keep):
        """(index, rank) of a rank_pattern entry: a list (of booleans, or PEFT's integer indices) or a Tensor."""
        if isinstance(keep, list):
            return np.asarray(keep), sum(keep)
        if isinstance(keep, Tensor):
            keep = keep.numpy(force=True).reshape(-1)
            return keep, keep.sum().item()
        raise TypeError("Unexpected type of rank_idx")

    def _cut_tensors(self, rank_pattern, tensors, adapter_name, key_of):
        """PEFT's ``resize_state_dict_by_rank_pattern``: each layer's E, A (rows) and B (columns) indexed by its
        pattern, unless they already hold that many ranks (an adapter loaded cut is saved as it is)."""
        for name, keep in rank_pattern.items():
            index, rank = np.asarray(keep), sum(keep)
            prefix = self._pattern_module_path(name, adapter_name)
            for part, axis in (("lora_E", 0), ("lora_A", 0), ("lora_B", 1)):
                key = key_of(prefix, part)
                if rank != tensors[key].shape[axis]:
                    tensors[key] = tensors[key][index] if axis == 0 else tensors[key][:, index]
        return tensors

    def resize_state_dict_by_rank_pattern(self, rank_pattern, state_dict, adapter_name):
        """PEFT's: ``state_dict`` keyed ``base_model.model.<module>.lora_E.<adapter>`` cut to the pattern (in place)."""
        return self._cut_tensors(rank_pattern, state_dict, adapter_name,
                                 lambda prefix, part: f"base_model.model.{prefix}.{part}.{adapter_name}")

    def tensors_for_file(self, adapter_name, tensors):
        """As PEFT: no ranknum (it is always the initial rank), and with a rank_pattern only the kept
        triplets, under keys without the adapter name (the config's rank_pattern is rewritten so too)."""
        config = self.peft_config[adapter_name]
        if config.rank_pattern is None:
            return tensors
        config.rank_pattern = {k.replace(f".{adapter_name}", ""): v for k, v in config.rank_pattern.items()}
        return self._cut_tensors(config.rank_pattern, dict(tensors), adapter_name,
                                 lambda prefix, part: f"base_model.model.{prefix}.{part}")

    def resize_modules_by_rank_pattern(self, rank_pattern, adapter_name):
        """PEFT's: every layer the pattern names re-created at its kept rank, holding the kept triplets (and the
        initial rank's ranknum, so the scale stays; a layer cut to rank 0 keeps nothing)."""
        config = self.peft_config[adapter_name]
        for name, keep in rank_pattern.items():
            index, rank = self._kept_and_rank(keep)
            layer = self.model.get_submodule(self._pattern_module_path(name, adapter_name))
            kept = {t: getattr(layer, t)[adapter_name]._array[index] for t in ("lora_E", "lora_A")}
            kept["lora_B"] = layer.lora_B[adapter_name]._array[:, index]
            ranknum = layer.ranknum[adapter_name]._array.copy()
            layer.update_layer(adapter_name, config, int(rank), config.lora_alpha)
            if rank > 0:
                for table, value in kept.items():
                    getattr(layer, table)[adapter_name]._array[...] = value
                layer.ranknum[adapter_name]._array[...] = ranknum
            # PEFT's update_layer ends with set_adapter(active adapters, inference_mode=<this config's>): the
            # re-created weights train only if the adapter does, and loading a cut adapter for inference beside a
            # trained one (load_adapter) freezes the active adapter's weights in every resized layer, as PEFT's
            layer.set_adapter(layer.active_adapters, inference_mode=config.inference_mode)

    def prepare_to_load(self, adapter_name):
        """Shrink every layer to the ranks the saved rank_pattern keeps, as PEFT before loading the weights."""
        config = self.peft_config[adapter_name]
        if config.rank_pattern is not None:
            self.resize_modules_by_rank_pattern(config.rank_pattern, adapter_name)

    def add_weighted_adapter(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not support add_weighted_adapter method.")


PEFT_TYPE_TO_CONFIG["ADALORA"] = AdaLoraConfig
PEFT_TYPE_TO_TUNER["ADALORA"] = AdaLoraModel
_BIAS_MODES.setdefault("ADALORA", _BIAS_MODES["LORA"])
