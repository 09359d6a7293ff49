"""Looking inside a trained adapter, and at a training run: spectra, rank, loss-curve findings, and a
starting configuration.

1. **What did the adapter learn?** Each LoRA layer adds ``delta W = s B A`` (B: out x r, A: r x in).
   Its singular values say how many independent directions the update really uses.
   ``adapter_spectrum(model)`` computes them for every layer *without ever building B A*: with the
   thin QR factorisations ``B = Qb Rb`` and ``A^T = Qa Ra`` (Qb, Qa have orthonormal columns),

       delta W = s B A = Qb (s Rb Ra^T) Qa^T,

   so delta W has the singular values of the r x r core ``s Rb Ra^T``, and its singular vectors are
   Qb and Qa times the core's. Cost O((out + in) r^2) time and O(r^2) extra memory. Building B A for a
   4096 x 4096 layer would take 67 MB (float32) and its SVD ~10^11 flops; the core's SVD is 8 x 8.
   ``truncate_adapter`` keeps only the directions holding a given share of the update's energy, and
   ``rank_ablation`` measures what that costs on a task.

2. **Is training healthy?** ``diagnose_training(train_losses, eval_losses)`` turns loss histories into
   findings (non-finite values, no progress, spikes, overfitting), each with its thresholds stated
   and suggestions; ``diagnose_adapter(model)`` checks the adapter itself (NaNs, B still zero, rank
   saturation). ``diagnose_lora_training`` does both -- the lesson's function of that name, fixed
   (it used ``np`` without importing it and read ``module.lora_A.weight`` where ``lora_A`` is a dict
   of layers).

3. **Where to start?** ``recommend_lora_config(task_type, num_examples, ...)`` turns the lesson's
   guidance (rank by task, targets, alpha, learning rate, dropout, epochs) into code, adding
   distribution shift and a memory budget checked with ``minilora.memory.estimate``; every choice
   comes with its reason.
"""
import dataclasses
import math

import numpy as np

from .. import dtypes

__all__ = ["delta_svd", "delta_singular_values", "effective_rank", "energy_rank", "LayerSpectrum",
           "adapter_spectrum", "spectrum_table", "truncate_adapter", "rank_ablation", "Finding",
           "diagnose_training", "diagnose_adapter", "diagnose_lora_training", "Recommendation",
           "recommend_lora_config", "TASK_RANKS"]


def _host(x):
    """A float64 NumPy copy of a Tensor / NumPy / CuPy array."""
    x = x.cpu().numpy() if hasattr(x, "cpu") else x
    x = x if isinstance(x, np.ndarray) else x.get()
    return np.asarray(x, dtype=np.float64)


# ==================================================================================================
# 1. Spectra of the learned updates
# ==================================================================================================
def delta_svd(A, B, scale=1.0):
    """Thin SVD ``U, S, Vh`` of ``delta W = scale * B @ A`` without forming ``B @ A``.

    ``A``: [r, in], ``B``: [out, r]. Returns ``U`` [out, k], ``S`` [k] (descending), ``Vh`` [k, in]
    with k = min(r, out, in), in float64, so that ``U @ diag(S) @ Vh == scale * B @ A``.
    """
    A, B = _host(A), _host(B)
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"delta_svd: expected A [r, in] and B [out, r], got A {A.shape} and B {B.shape}")
    # EXERCISE 8.2: the thin SVD of scale * B @ A from QR factors of B and A^T and an SVD of a small core
    # BEGIN SOLUTION
    Qb, Rb = np.linalg.qr(B)     # B   = Qb Rb, Qb [out, k] orthonormal columns
    Qa, Ra = np.linalg.qr(A.T)   # A^T = Qa Ra, so A = Ra^T Qa^T
    Uc, S, Vhc = np.linalg.svd(scale * Rb @ Ra.T, full_matrices=False)  # delta W = Qb core Qa^T
    return Qb @ Uc, S, Vhc @ Qa.T
    # END SOLUTION


def delta_singular_values(A, B, scale=1.0):
    """The singular values of ``scale * B @ A`` (descending), through the r x r core only."""
    return delta_svd(A, B, scale)[1]


def energy_rank(singular_values, energy=0.9):
    """The smallest k whose top-k singular values hold ``energy`` of the update's squared Frobenius
    norm: ``sum(S[:k]**2) >= energy * sum(S**2)``. (A rank-k truncation keeps exactly that share.)
    0 for a zero update."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    total = sq.sum()
    if total == 0:
        return 0
    return int(min(np.searchsorted(np.cumsum(sq), energy * total * (1 - 1e-12)) + 1, len(sq)))


def effective_rank(singular_values):
    """Entropy effective rank (Roy & Vetterli, 2007): ``exp(H(p))`` with ``p_i = S_i / sum(S)``.

    A real number between 1 and the number of non-zero singular values: ``r`` when all directions
    are equally strong, close to 1 when one direction dominates. 0 for a zero update.
    """
    # EXERCISE 8.3: the entropy effective rank exp(H(p)) with p_i = S_i / sum(S); 0.0 for a zero update
    # BEGIN SOLUTION
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))
    # END SOLUTION


@dataclasses.dataclass
class LayerSpectrum:
    """The spectrum of one adapted layer's update ``delta W`` for one adapter."""
    name: str
    adapter: str
    r: int
    singular_values: np.ndarray
    effective_rank: float
    energy_rank: int        # at the ``energy`` adapter_spectrum was called with
    delta_norm: float       # ||delta W||_F
    relative_norm: float    # ||delta W||_F / ||W0||_F: how big the change is next to the weight


def _adapter_names(layer, adapter_name):
    names = layer.adapter_names()
    return names if adapter_name is None else [adapter_name] if adapter_name in names else []


def _factors(layer, name):
    """``(A, B, scale)`` with ``delta W = scale * B @ A`` for a LoRA or a VeRA layer (float64)."""
    if name in getattr(layer, "lora_embedding_A", ()):  # the table's update is (s B A)^T: the same singular values
        return layer.lora_embedding_A[name], layer.lora_embedding_B[name], layer.scaling[name]
    if hasattr(layer, "lora_A"):
        return layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name]
    # VeRA: delta W = diag(lambda_b) B diag(lambda_d) A, with this layer's block of the shared A, B
    A = _host(layer.vera_A[name])[:, :layer.in_features] * _host(layer.vera_lambda_d[name])[:, None]
    B = _host(layer.vera_B[name])[:layer.out_features, :] * _host(layer.vera_lambda_b[name])[:, None]
    return A, B, 1.0


def _adapter_layers(model):
    """``(short name, layer)`` for every adapter layer in ``model`` (a PeftModel or any Module)."""
    from .layers import BaseTunerLayer, TrainableTokensLayer
    for name, module in model.named_modules():  # (trainable token rows are no low-rank update: left out)
        if isinstance(module, BaseTunerLayer) and not isinstance(module, TrainableTokensLayer):
            yield name.replace("base_model.model.", ""), module


def adapter_spectrum(model, adapter_name=None, energy=0.9):
    """One ``LayerSpectrum`` per adapted layer and adapter (``adapter_name=None``: all adapters).

    For DoRA adapters this is the spectrum of the low-rank direction update ``s B A``; the learned
    magnitudes rescale rows on top of it.
    """
    out = []
    for name, layer in _adapter_layers(model):
        w0_norm = float(np.linalg.norm(_host(layer.base_layer.weight)))
        for adapter in _adapter_names(layer, adapter_name):
            S = delta_singular_values(*_factors(layer, adapter))
            norm = float(np.sqrt((S ** 2).sum()))
            out.append(LayerSpectrum(name, adapter, int(layer.r[adapter]), S, effective_rank(S),
                                     energy_rank(S, energy), norm, norm / w0_norm if w0_norm else math.inf))
    if not out:
        raise ValueError("adapter_spectrum: the model has no adapter layers"
                         + (f" with an adapter named {adapter_name!r}" if adapter_name else ""))
    return out


def spectrum_table(spectra, energy=0.9, top=4):
    """A text table: per layer, r, entropy effective rank, energy rank, ||delta W|| / ||W0||, top singular values."""
    lines = [f"{'layer':<34}{'r':>4}{'eff. rank':>10}{f'{energy:.0%} energy':>12}{'|dW|/|W0|':>11}"
             f"  top singular values"]
    for s in spectra:
        values = ", ".join(f"{v:.3g}" for v in s.singular_values[:top])
        lines.append(f"{s.name:<34}{s.r:>4}{s.effective_rank:>10.2f}{s.energy_rank:>12}"
                     f"{s.relative_norm:>11.2e}  {values}")
    return "\n".join(lines)


# --- truncation and ablation -----------------------------------------------------------------------
def _lora_layers(model, adapter_name):
    for name, layer in _adapter_layers(model):
        if not hasattr(layer, "lora_A") or layer.lora_embedding_A:  # (a LoRA Embedding has an empty lora_A)
            raise TypeError(f"{name} is a {type(layer).__name__}: only LoRA adapters of Linear layers can be "
                            "truncated (VeRA's A and B are shared by all layers; embedding LoRA is not handled)")
        if layer.merged:
            raise ValueError(f"{name} has merged adapters: call unmerge_adapter() before truncating")
        for adapter in _adapter_names(layer, adapter_name):
            yield name, layer, adapter


def truncate_adapter(model, energy=None, rank=None, adapter_name=None):
    """Replace each LoRA update ``s B A`` by its best rank-k approximation, in place.

    k is the ``energy_rank`` at ``energy`` (e.g. 0.9 keeps 90% of each layer's squared norm) or a
    fixed ``rank``. A and B keep their shapes (so the config, the scaling and saving stay valid):
    rows of A / columns of B beyond k become zero. Returns ``{layer name: k}``.
    """
    if (energy is None) == (rank is None):
        raise ValueError("truncate_adapter: give exactly one of energy= (0..1] or rank= (>= 0)")
    kept = {}
    for name, layer, adapter in list(_lora_layers(model, adapter_name)):
        A, B, s = _factors(layer, adapter)
        U, S, Vh = delta_svd(A, B, s)
        k = energy_rank(S, energy) if energy is not None else min(int(rank), len(S))
        k = k if s else 0  # lora_alpha = 0: the update is zero whatever A and B hold
        root = np.sqrt(S[:k] / abs(s)) if k else S[:0]  # s * (U root)(sign(s) root Vh) = U S Vh
        new_B = np.zeros(B.shape)
        new_A = np.zeros(A.shape)
        new_B[:, :k] = U[:, :k] * root
        new_A[:k] = np.sign(s) * root[:, None] * Vh[:k]
        for param, value in ((A, new_A), (B, new_B)):
            # (into a 16-bit parameter through float32, as torch's copy_ rounds a float64 value)
            param._array[...] = param.device.xp.asarray(dtypes.cast(value, param.dtype))
        kept[name if len(layer.adapter_names()) == 1 else f"{name}[{adapter}]"] = k
    if not kept:
        raise ValueError("truncate_adapter: the model has no LoRA layers to truncate")
    return kept


def rank_ablation(model, evaluate_fn, energies=(0.5, 0.8, 0.9, 0.99, 1.0), ranks=None, adapter_name=None):
    """Truncate the adapter at each level, run ``evaluate_fn(model)`` (a number), restore the weights.

    Levels are ``energies`` (share of each layer's update energy kept) or, if given, fixed ``ranks``.
    Returns rows ``{"level", "mean_rank", "lora_params" (parameters of the truncated factors),
    "metric"}``: how much of the adapter a task actually needs.
    """
    layers = list(_lora_layers(model, adapter_name))
    saved = [(layer.lora_A[a].weight, layer.lora_A[a].weight._array.copy(),
              layer.lora_B[a].weight, layer.lora_B[a].weight._array.copy()) for _, layer, a in layers]
    rows = []
    try:
        for level in (ranks if ranks is not None else energies):
            kept = truncate_adapter(model, rank=level, adapter_name=adapter_name) if ranks is not None \
                else truncate_adapter(model, energy=level, adapter_name=adapter_name)
            params = sum(k * (layer.in_features + layer.out_features)
                         for k, (_, layer, _) in zip(kept.values(), layers))
            rows.append({"level": level, "mean_rank": float(np.mean(list(kept.values()))),
                         "lora_params": int(params), "metric": float(evaluate_fn(model))})
            for A, a0, B, b0 in saved:
                A._array[...], B._array[...] = a0, b0
    finally:
        for A, a0, B, b0 in saved:
            A._array[...], B._array[...] = a0, b0
    return rows


# ==================================================================================================
# 2. Diagnosing a training run
# ==================================================================================================
@dataclasses.dataclass
class Finding:
    """One thing noticed: ``kind`` (a stable keyword), ``severity`` ("error" | "warning" | "info"),
    what was seen, what to try, and the 1-based steps involved."""
    kind: str
    severity: str
    message: str
    suggestions: tuple = ()
    steps: tuple = ()

    def __str__(self):
        text = f"{self.severity.upper()} [{self.kind}] {self.message}"
        return text + ("\n    try: " + "; ".join(self.suggestions) if self.suggestions else "")


SUGGESTIONS = {
    "non_finite": ("lower the learning rate (10x)", "clip gradients (clip_norm=1.0 or 0.3)",
                   "train in float32 or bfloat16 rather than float16", "check the data for NaN/inf"),
    "not_decreasing": ("raise the learning rate 3-5x (LoRA usually wants 1e-4..5e-4, more than full "
                       "fine-tuning)", "check that the labels are not all -100 (nothing to learn)",
                       "check that the LoRA parameters require grad and are in the optimizer "
                       "(diagnose_adapter: B still zero)",
                       "check that target_modules matched the layers you meant (print_trainable_parameters)"),
    "overfitting": ("stop earlier: keep the checkpoint with the best eval loss", "add lora_dropout=0.05-0.1",
                    "use more data, or mix in ~10% general data", "lower r or the learning rate"),
    "diverging": ("lower the learning rate 2-5x", "add warmup steps"),
    "spikes": ("lower the learning rate 2x", "add warmup steps", "clip gradients (max_norm 0.3-1.0)",
               "look for corrupted or extreme examples in the batches at those steps"),
}


def _finite_prefix(losses):
    bad = np.flatnonzero(~np.isfinite(losses))
    return (losses, None) if not len(bad) else (losses[:bad[0]], int(bad[0]))


def _spikes(losses, ratio, window, floor):
    """Steps whose loss exceeds ``(1 + ratio)`` times the median of the ``window`` losses before it
    (at least 3 of them) AND exceeds it by ``floor`` times the first loss. A median of the recent
    past follows the downward trend, so a falling curve is not mistaken for spikes (a mean + 3 std
    rule over the whole run would be); the absolute floor keeps batch-to-batch noise of a loss that
    is already near zero (0.02 -> 0.18) from counting as a spike."""
    out = []
    min_jump = floor * abs(losses[0])
    for i in range(3, len(losses)):
        ref = np.median(losses[max(0, i - window):i])
        if losses[i] > ref * (1 + ratio) and losses[i] - ref > max(min_jump, 1e-12):
            out.append(i + 1)
    return out


def _as_eval_points(eval_losses, n_train):
    """``[(step, loss)]`` from a list of losses (assumed evenly spread over the run) or of pairs."""
    items = list(eval_losses)
    if items and isinstance(items[0], (tuple, list)):
        return [(int(s), float(v)) for s, v in items]
    k = len(items)
    return [(max(1, round((j + 1) * n_train / k)), float(v)) for j, v in enumerate(items)]


def _overfitting(losses, eval_points, tolerance, window):
    """Eval loss ended ``tolerance`` above its best while the train loss kept falling (or not)."""
    evals = [(s, v) for s, v in eval_points if math.isfinite(v)]
    if len(evals) < 3:
        return None
    best = min(range(len(evals)), key=lambda j: evals[j][1])
    (best_step, best_val), (last_step, last_val) = evals[best], evals[-1]
    if best == len(evals) - 1 or last_val <= best_val * (1 + tolerance):
        return None
    train_at = lambda step: float(np.mean(losses[max(0, step - window):max(1, step)]))  # noqa: E731
    t_best, t_last = train_at(min(best_step, len(losses))), train_at(min(last_step, len(losses)))
    steps = (best_step, last_step)
    seen = (f"eval loss rose from {best_val:.4f} (step {best_step}) to {last_val:.4f} (step {last_step}), "
            f"more than {tolerance:.0%} above its best")
    if t_last < t_best:
        return Finding("overfitting", "warning", f"{seen}, while the train loss fell from {t_best:.4f} "
                       f"to {t_last:.4f}: the adapter is memorising the training set",
                       SUGGESTIONS["overfitting"], steps)
    return Finding("diverging", "warning", f"{seen}, and the train loss did not fall either "
                   f"({t_best:.4f} -> {t_last:.4f})", SUGGESTIONS["diverging"], steps)


def diagnose_training(train_losses, eval_losses=None, *, min_points=8, min_improvement=0.05,
                      spike_ratio=0.5, spike_window=10, spike_floor=0.1, overfit_tolerance=0.03):
    """Findings about a run from its loss history; never empty (a healthy run says so).

    ``train_losses``: one loss per step. ``eval_losses``: losses at evaluation points, either plain
    values (taken as evenly spread over the run) or ``(step, loss)`` pairs. The checks:

    * ``non_finite`` (error): a NaN/inf loss; the checks below use the losses before it.
    * ``too_short`` (info): fewer than ``min_points`` finite losses -- nothing else is judged.
    * ``not_decreasing`` (warning): the mean of the last quarter is not at least ``min_improvement``
      (5%) below the mean of the first quarter.
    * ``spikes`` (warning if 3 or more, else info): a loss more than ``spike_ratio`` (50%) above the
      median of the ``spike_window`` (10) losses before it, and by at least ``spike_floor`` (10%)
      of the first loss.
    * ``overfitting`` (warning): the last eval loss is more than ``overfit_tolerance`` (3%) above the
      best one while the train loss fell meanwhile (``diverging`` if the train loss did not fall).
    * ``healthy`` (info): none of the above.
    """
    losses = np.asarray(list(train_losses), dtype=np.float64)
    if losses.ndim != 1 or not len(losses):
        raise ValueError("diagnose_training: train_losses must be a non-empty list of numbers")
    findings, n_steps = [], len(losses)
    losses, bad = _finite_prefix(losses)
    if bad is not None:
        findings.append(Finding("non_finite", "error", f"the train loss became non-finite at step {bad + 1}",
                                SUGGESTIONS["non_finite"], (bad + 1,)))
    if len(losses) < min_points:
        findings.append(Finding("too_short", "info", f"only {len(losses)} finite train losses: at least "
                                f"{min_points} are needed to judge the trend"))
        return findings
    q = max(1, len(losses) // 4)
    early, late = float(losses[:q].mean()), float(losses[-q:].mean())
    if late > early * (1 - min_improvement):
        how = "rose" if late > early else "barely fell"
        findings.append(Finding("not_decreasing", "warning", f"the train loss {how}: {early:.4f} (mean of the "
                                f"first quarter) -> {late:.4f} (last quarter), less than {min_improvement:.0%} "
                                "lower", SUGGESTIONS["not_decreasing"]))
    spikes = _spikes(losses, spike_ratio, spike_window, spike_floor)
    if spikes:
        shown = ", ".join(map(str, spikes[:8])) + (" ..." if len(spikes) > 8 else "")
        findings.append(Finding("spikes", "warning" if len(spikes) >= 3 else "info",
                                f"{len(spikes)} loss spike(s) more than {spike_ratio:.0%} above the recent "
                                f"median, at step(s) {shown}", SUGGESTIONS["spikes"], tuple(spikes)))
    if eval_losses is not None:
        finding = _overfitting(losses, _as_eval_points(eval_losses, n_steps), overfit_tolerance,
                               spike_window)
        if finding:
            findings.append(finding)
    if not any(f.severity in ("error", "warning") for f in findings):
        findings.append(Finding("healthy", "info", f"no problem found: the train loss fell from {early:.4f} "
                                f"(mean of the first quarter of the steps) to {late:.4f} (last quarter)"))
    return findings


def diagnose_adapter(model, adapter_name=None, energy=0.9, saturation=0.5):
    """Findings about the adapter weights themselves (call after some training; empty if all is well):

    * ``no_trainable`` (error): nothing requires grad;
    * ``non_finite_weights`` (error): NaN/inf in adapter parameters (names listed);
    * ``adapter_not_trained`` (warning): every LoRA B is still exactly zero, its initial value: the
      optimizer never updated the adapter (not in the optimizer, lr 0, frozen, or not trained yet);
    * ``rank_saturated`` (info): in more than ``saturation`` of the layers, the update needs all r
      directions to hold ``energy`` of its norm -- a larger r may help (the lesson's "rank too low"
      check, done with the energy rank over all layers rather than a 1% cut on the first one).
    """
    findings = []
    named = list(model.named_parameters())
    if not any(p.requires_grad for _, p in named):
        findings.append(Finding("no_trainable", "error", "no parameter requires grad: nothing will train",
                                ("call get_peft_model(model, config) / set_adapter(name)",
                                 "load with is_trainable=True to keep training a saved adapter")))
    bad = [n for n, p in named if ("lora_" in n or "vera_lambda" in n) and not np.isfinite(_host(p)).all()]
    if bad:
        findings.append(Finding("non_finite_weights", "error", f"NaN/inf in {len(bad)} adapter parameter(s): "
                                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}", SUGGESTIONS["non_finite"]))
        return findings
    lora = [(n, layer, a) for n, layer in _adapter_layers(model) if hasattr(layer, "lora_B")
            for a in _adapter_names(layer, adapter_name)]
    if lora and all(not _host(layer.lora_B[a].weight).any() for _, layer, a in lora):
        findings.append(Finding("adapter_not_trained", "warning", "every LoRA B matrix is still all zeros "
                                "(its initial value): the adapter has not changed the model",
                                SUGGESTIONS["not_decreasing"][2:3] + ("check that the learning rate is > 0",)))
    elif lora:
        spectra = adapter_spectrum(model, adapter_name, energy)
        full = [s for s in spectra if s.energy_rank >= s.r]
        if len(full) > saturation * len(spectra):
            findings.append(Finding("rank_saturated", "info", f"{len(full)} of {len(spectra)} layers need all "
                                    f"r directions to hold {energy:.0%} of the update's energy",
                                    ("try doubling r (and keep lora_alpha / r, or use rsLoRA)",)))
    return findings


def diagnose_lora_training(model, train_losses, eval_losses=None, **thresholds):
    """The lesson's ``diagnose_lora_training``, working: ``diagnose_training`` on the losses plus
    ``diagnose_adapter`` on the model (findings from both, loss findings first)."""
    findings = diagnose_training(train_losses, eval_losses, **thresholds)
    return findings + diagnose_adapter(model)


# ==================================================================================================
# 3. A starting configuration
# ==================================================================================================
# Rank by task, from the lesson: format/style r=4; classification 8; instruction following 16;
# domain adaptation 16-32; code/math 32-64; new knowledge 64+ (where LoRA is the wrong tool).
TASK_RANKS = {"style": 4, "classification": 8, "instruction": 16, "domain": 16, "code": 32, "math": 32,
              "knowledge": 64}
SHIFTS = ("low", "medium", "high")
PRIORITIES = ("speed", "balanced", "quality")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ACTIVATION_RESERVE = 0.25  # share of a memory budget left for activations (a rough, stated margin)


@dataclasses.dataclass
class Recommendation:
    """A LoRA setup to start from, with the reason for every choice (``print(rec)`` shows them)."""
    r: int
    lora_alpha: int
    target_modules: object
    lora_dropout: float
    learning_rate: float
    num_epochs: int
    dtype: str
    reasons: list
    warnings: list
    estimate: object = None  # minilora.memory.MemoryEstimate when a model was given
    fits: bool = None        # within the memory budget (None: no budget given)

    def lora_config(self, **overrides):
        """The ``LoraConfig`` to pass to ``get_peft_model``."""
        from .config import LoraConfig
        kwargs = dict(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                      target_modules=self.target_modules, task_type="CAUSAL_LM")
        kwargs.update(overrides)
        return LoraConfig(**kwargs)

    def __str__(self):
        lines = [f"r={self.r}, lora_alpha={self.lora_alpha}, target_modules={self.target_modules!r}, "
                 f"lora_dropout={self.lora_dropout}, learning_rate={self.learning_rate:g}, "
                 f"num_epochs={self.num_epochs}, dtype={self.dtype}"]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)


def _choose_rank(task_type, num_examples, shift, reasons, warnings):
    r = TASK_RANKS[task_type]
    reasons.append(f"r={r}: the lesson's rank for task type {task_type!r}")
    if shift == "high" and r < 64:
        r *= 2
        reasons.append(f"r={r}: doubled, because the target data is far from the pretraining data")
    elif shift == "low" and r > 4:
        r //= 2
        reasons.append(f"r={r}: halved, because the target data is close to the pretraining data")
    if num_examples < 1000 and r > 8:
        r = 8
        reasons.append("r=8: capped, because under 1,000 examples cannot fill a larger update "
                       "(it would only memorise them)")
    if task_type == "knowledge":
        warnings.append("teaching new facts is where LoRA is weakest: the knowledge lives in the frozen "
                        "weights. Consider retrieval (RAG) or full fine-tuning.")
    return r


def _choose_targets(task_type, shift, priority, n_params, reasons):
    if n_params is not None and n_params <= 3e9:
        reasons.append("all-linear: on a small model (<= 3B parameters) adapting every Linear is cheap")
        return "all-linear"
    if task_type in ("instruction", "code", "math", "domain", "knowledge") or shift == "high":
        reasons.append("all-linear: generation-heavy or far-from-pretraining tasks need the MLP layers "
                       "too; q,v only is enough for GLUE-style tasks, not for these")
        return "all-linear"
    if priority == "speed":
        reasons.append("q_proj,v_proj: the LoRA paper's choice, enough for simple tasks, fewest parameters")
        return ["q_proj", "v_proj"]
    reasons.append("q,k,v,o_proj: all attention projections, a safe default for simple tasks")
    return list(ATTENTION)


def _learning_rate(r):
    """Higher rank -> lower learning rate (the update has more directions that can blow up)."""
    return 3e-4 if r <= 8 else 2e-4 if r <= 32 else 1e-4


def _fit_budget(model_config, rec, budget_gb, reasons, warnings):
    """Find the first setup whose weights + gradients + AdamW state fit ``(1 - ACTIVATION_RESERVE)``
    of the budget, trying in order: the chosen one, lower ranks (down to 4), narrower targets
    (attention, then q,v), and -- only if float32 fails -- all of that again in bfloat16.
    Updates ``rec``; returns ``(estimate, fits)``."""
    from .. import memory
    from .config import LoraConfig
    usable = (1 - ACTIVATION_RESERVE) * budget_gb * 1e9
    targets = [rec.target_modules] + [t for t in (list(ATTENTION), ["q_proj", "v_proj"]) if t != rec.target_modules]
    ranks = [rec.r]
    while ranks[-1] > 4:
        ranks.append(max(4, ranks[-1] // 2))
    dtypes = [rec.dtype] + (["bfloat16"] if rec.dtype == "float32" else [])
    first = None
    for dtype in dtypes:
        for target in targets:
            for r in ranks:
                e = memory.estimate(model_config, LoraConfig(r=r, target_modules=target), dtype=dtype)
                first = first or e
                if e.total_bytes <= usable:
                    for name, old, new in (("dtype", rec.dtype, dtype), ("target_modules", rec.target_modules, target),
                                           ("r", rec.r, r)):
                        if old != new:
                            reasons.append(f"{name}={new!r}: changed from {old!r} to fit the {budget_gb:g} GB budget")
                    rec.dtype, rec.target_modules, rec.r = dtype, target, r
                    reasons.append(f"memory: {memory.format_bytes(e.total_bytes)} for weights, gradients and "
                                   f"AdamW state; {ACTIVATION_RESERVE:.0%} of the {budget_gb:g} GB budget is "
                                   "left for activations")
                    return e, True
    warnings.append(f"does not fit: even the smallest setup tried needs {memory.format_bytes(e.total_bytes)}, and "
                    f"{memory.format_bytes(usable)} of {budget_gb:g} GB is usable ({ACTIVATION_RESERVE:.0%} is kept "
                    "for activations). The frozen weights dominate: quantise the base model to 4 bits (QLoRA) "
                    "or use a larger GPU.")
    return first, False


def recommend_lora_config(task_type, num_examples, distribution_shift="medium", model=None,
                          memory_budget_gb=None, priority="balanced", dtype="float32"):
    """A LoRA starting point from the lesson's guidance, as a ``Recommendation`` with reasons.

    * ``task_type``: one of ``TASK_RANKS`` (style, classification, instruction, domain, code, math,
      knowledge) -- sets the base rank.
    * ``num_examples``: training examples. Under 1,000 caps r at 8; dropout 0.1 under 1,000, 0.05
      under 10,000, else 0; epochs 5 under 5,000, 3 under 50,000, else 1.
    * ``distribution_shift``: "low" halves r, "high" doubles it and adapts every Linear.
    * ``model``: a ``LlamaConfig``, ``TransformerConfig`` or preset name; enables the small-model
      rule (<= 3B parameters: all-linear) and the memory check.
    * ``memory_budget_gb``: weights + gradients + optimizer state must fit in 75% of it (25% is kept
      for activations); if not, targets narrow, then r halves, then the dtype drops to bfloat16.
    * ``priority``: "speed" | "balanced" | "quality" -- ``lora_alpha = 2r`` for quality, else ``r``.

    The lesson's own examples: (7B, code, 50k examples, quality) -> r=32, alpha=64, all linear layers,
    lr 2e-4, 1 epoch; (1B, classification, 2k, speed) -> r=8, alpha=8, all linear, 3e-4, 5 epochs.
    """
    from .. import memory
    if task_type not in TASK_RANKS:
        raise ValueError(f"unknown task_type {task_type!r}: choose one of {sorted(TASK_RANKS)}")
    if distribution_shift not in SHIFTS:
        raise ValueError(f"distribution_shift must be one of {SHIFTS}, got {distribution_shift!r}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    if not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if memory_budget_gb is not None and model is None:
        raise ValueError("memory_budget_gb needs model= (a config or preset name) to count the memory")
    config = memory.get_preset(model) if isinstance(model, str) else model
    n_params = memory.estimate(config).total_params if config is not None else None
    reasons, warnings = [], []
    r = _choose_rank(task_type, num_examples, distribution_shift, reasons, warnings)
    targets = _choose_targets(task_type, distribution_shift, priority, n_params, reasons)
    alpha = 2 * r if priority == "quality" else r
    reasons.append(f"lora_alpha={alpha}: scale alpha/r = {alpha // r}"
                   + (" (a stronger update for quality)" if alpha > r else " (tune the learning rate, not alpha)"))
    lr = _learning_rate(r)
    reasons.append(f"learning_rate={lr:g}: higher ranks get lower rates")
    dropout = 0.1 if num_examples < 1000 else 0.05 if num_examples < 10_000 else 0.0
    reasons.append(f"lora_dropout={dropout}: " + ("regularise, the data set is small" if dropout
                                                  else "enough data to need no dropout"))
    epochs = 5 if num_examples < 5000 else 3 if num_examples < 50_000 else 1
    reasons.append(f"num_epochs={epochs}: fewer passes the more examples there are")
    rec = Recommendation(r, alpha, targets, dropout, lr, epochs, memory._dtype_name(dtype), reasons, warnings)
    if config is not None and memory_budget_gb is not None:
        rec.estimate, rec.fits = _fit_budget(config, rec, memory_budget_gb, reasons, warnings)
        rec.lora_alpha = 2 * rec.r if priority == "quality" else rec.r
        rec.learning_rate = _learning_rate(rec.r)
    elif config is not None:
        rec.estimate = memory.estimate(config, rec.lora_config(), dtype=rec.dtype)
    return rec
