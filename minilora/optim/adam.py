"""Adam and AdamW, with exactly ``torch.optim.Adam`` / ``torch.optim.AdamW``'s update.

Each trained parameter keeps two arrays of its own shape: ``exp_avg`` (m, a running mean of the
gradient) and ``exp_avg_sq`` (v, a running mean of its square). The step moves each weight by
``lr * m_hat / (sqrt(v_hat) + eps)``: about ``lr`` in the direction the gradient keeps pointing,
whatever the gradient's scale. ``m_hat``, ``v_hat`` undo the bias of starting m and v at zero.

The two differ only in weight decay:

* ``Adam(weight_decay=wd)`` is L2 regularisation: ``wd * p`` is added to the gradient, so it is
  rescaled by ``1/sqrt(v)`` like everything else;
* ``AdamW(weight_decay=wd)`` decouples it (Loshchilov & Hutter): ``p -= lr * wd * p`` before the
  step, the same shrink for every weight. It is the optimizer LLM fine-tuning uses.

A float16/bfloat16 parameter keeps its state in its own dtype (as torch does) and is updated by
``adamw_update_16bit``, op by op as torch rounds; mixed-precision LoRA instead trains float32 adapters
(and float32 state) beside a bfloat16 base, where the float32 update below runs.

Speed: the update is ~18 NumPy ufuncs, all in place (four of them float64 passes: torch's fused
multiply-adds, ``float32_math.multiply_add_into``). On the CPU they run over slices of
``CHUNK`` elements (``minilora.device.cache_slices``), so the slice of p, g, m, v and the scratch
array stay in cache between ufuncs instead of streaming the full arrays through memory at each;
the elements of all parameters are shared out evenly among the threads (``parallel.spans``; longer
slices there, ``parallel.slice_elements``), and small parameters are updated together (``GATHER_BELOW``).
A float32 AdamW step where the C kernels are built goes further: each thread's share in ONE compiled pass
(``_in_one_pass``: float32_math.adamw_step, the same operations in the same order, so the same bits): a
weight, its gradient and moments are read once instead of ~14 times. The NumPy update stays the definition
(and exercise 6.1's); float64, Adam's L2 term, ``maximize`` and ``amsgrad`` run it.
"""
import contextlib
import functools
import math
import threading

import numpy as np

from .. import fastmath, float32_math, kernels, mkl_vml, parallel, solutions
from ..device import CHUNK, cache_slices, xp_of
from .. import dtypes
from . import fused_adam
from .optimizer import (Optimizer, _as_number, _check_adam_hyperparameters, add_scaled, add_scaled_16bit_rounded,
                        alpha_16bit, learning_rate, mul_scalar_16bit, new_step_count, occurrence_passes,
                        rounds_each_op, state_arrays, state_tensors)

__all__ = ["Adam", "AdamW", "adamw_update"]

# A parameter's update is 14 NumPy calls, ~15 us of Python for a small one whatever its size: parameters
# below GATHER_BELOW elements are updated together, gathered into flat arrays (one np.concatenate per
# array kind) and copied back (three copies each). The 56 LoRA matrices of benchmarks/lora_step.py's
# Llama (2K-5.5K elements, 156K in all): AdamW's step() 1.54 ms one by one, 1.38 ms gathered (cache
# flushed before: 1.65, 1.43 ms), on one thread; of those, ~0.3 ms is step()'s own work per parameter.
GATHER_BELOW = 8192


def adamw_update(param, grad, exp_avg, exp_avg_sq, scratch, *, step, lr, beta1, beta2, eps, weight_decay,
                 max_exp_avg_sq=None, wide=None):
    """One AdamW step on raw arrays, in place (``torch.optim.AdamW``'s single-tensor update): what ``Adam.step`` and
    ``AdamW.step`` run on every float32 and float64 parameter (on emu/cuda the fused kernel, exercise 5.2, instead).

    ``param``, ``exp_avg``, ``exp_avg_sq`` are updated in place; ``grad`` is only read;
    ``scratch`` is a work array of the same shape (so the step allocates nothing). ``step`` is
    this parameter's step count, starting at 1. With ``weight_decay=0`` this is Adam's update.
    ``max_exp_avg_sq``: ``amsgrad=True``'s running maximum of v (Reddi et al.), kept up to date here, whose root is
    the denominator instead of v's (torch's ``torch.maximum(max_v, v, out=max_v)``): a weight's step never grows
    because its gradients got smaller.

    The solution rounds as torch 2.13's CPU loop does, so the weights are torch's bits, its sqrt included where MKL's
    (not correctly rounded) is matched (``_root``: Intel AVX-512 CPUs; elsewhere ~1 root in 150 is an ulp off):
    ``exp_avg.lerp_(grad, 1 - beta1)`` and the ``addcmul_`` of ``v`` are fused multiply-adds where ATen's build fuses
    (``_multiply_add``, per ``torch_cpu_capability()``: two roundings changed the last bit of 30% of m and 2% of v);
    addcmul's product is ``((1 - beta2) g) g``, addcdiv's quotient ``(value m) / denom`` in that order. A textbook
    form is within rounding of it and passes the exercise's tests. ``wide``: a float64 work array of the
    parameter's shape for the fused multiply-adds (allocated when not given).
    """
    xp, number = xp_of(param), param.dtype.type
    wide = xp.empty(param.shape, np.float64) if wide is None else wide
    # (with max_exp_avg_sq, amsgrad: keep there the running maximum of v, and take its root instead of v's)
    # EXERCISE 6.1: one AdamW step in place: weight decay, moments m and v, the bias-corrected update (use scratch)
    # BEGIN SOLUTION
    # Decoupled weight decay: shrink every weight by the same factor, before the step.
    # (torch: a 0-d float64 lr's product rounded to the parameter's dtype first)
    if weight_decay:
        param *= number(1 - lr * weight_decay)
    # m <- m + (1 - beta1)(g - m), i.e. beta1 m + (1 - beta1) g   (torch: exp_avg.lerp_(grad, 1-beta1))
    xp.subtract(grad, exp_avg, out=scratch)
    _multiply_add(number(1 - beta1), scratch, exp_avg, wide)
    # v <- beta2 v + (1 - beta2) g^2   (torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2))
    xp.multiply(grad, number(1 - beta2), out=scratch)
    exp_avg_sq *= number(beta2)
    _multiply_add(grad, scratch, exp_avg_sq, wide)
    # denom = sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - beta2^t) + eps   (eps outside the root; amsgrad: max v's root)
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    _root(exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq, out=scratch)  # (xp.sqrt; torch's: _root)
    scratch /= math.sqrt(1 - beta2 ** step)
    scratch += eps
    # p <- p - lr * m_hat / denom, with m_hat = m / (1 - beta1^t)   (torch: addcdiv_, (value m) / denom)
    quotient = wide.reshape(-1).view(param.dtype)[:param.size].reshape(param.shape)  # (wide's first bytes)
    xp.multiply(exp_avg, number(-(lr / (1 - beta1 ** step))), out=quotient)
    quotient /= scratch
    param += quotient
    # END SOLUTION


_exact_roots = threading.local()  # ``on``: this thread's update is of a ``fused=True`` group (_root)


def _root(values, out):
    """``sqrt(values)`` into ``out`` as torch's AdamW takes it: its single-tensor and foreach updates call
    ``torch.sqrt``, MKL's for float32 and float64 (``float32_math.mkl_sqrt``: not correctly rounded, matched on
    Intel AVX-512 CPUs); its fused kernel (``fused=True``, ``_roots_of``) a correctly rounded one, as NumPy's."""
    if type(values) is np.ndarray and values.dtype in (np.float32, np.float64) and not getattr(_exact_roots, "on", False):
        return float32_math.mkl_sqrt(values, out=out)
    return xp_of(values).sqrt(values, out=out)


@contextlib.contextmanager
def _roots_of(group):
    """Within the block this thread's updates take ``group``'s roots: correctly rounded for ``fused=True``."""
    before = getattr(_exact_roots, "on", False)
    _exact_roots.on = bool(group.get("fused"))
    try:
        yield
    finally:
        _exact_roots.on = before


def _multiply_add(a, b, c, wide):
    """``c += a * b`` in place, rounded once where torch's build fuses the multiply-add (an FMA), else twice
    (``float32_math.multiply_add_into``). ``b`` is overwritten; ``wide``: float64 scratch of ``c``'s size."""
    float32_math.multiply_add_into(a, b, c, c, wide)


def amsgrad_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay):
    """``adamw_update`` with ``amsgrad=True`` on whole arrays, in place."""
    adamw_update(param, grad, exp_avg, exp_avg_sq, xp_of(param).empty_like(param), step=step, lr=lr,
                          beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, max_exp_avg_sq=max_exp_avg_sq)


def _fused_multiply_add(a, b, c):
    """``a * b + c`` of float32 arrays rounded once, as an FMA instruction computes it (torch's CPU ``addcmul``
    is ``fmadd(value * t1, t2, self)``), or twice where torch's build fuses none (``fastmath.multiply_add``)."""
    return fastmath.multiply_add(a, b, c)


def adamw_update_16bit(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
                       max_exp_avg_sq=None, foreach=False):
    """``adamw_update`` for a float16/bfloat16 parameter with state in its dtype, as torch's single-tensor
    AdamW runs it on the CPU: each torch op (``mul_``, ``lerp_``, ``addcmul_``, ``sqrt``, ``/``, ``add_``,
    ``addcdiv_``) computes in float32 with float32 scalars and rounds its result to the dtype once; ``foreach``:
    torch's multi-tensor path, whose ``_foreach_mul_`` rounds its scalar to the dtype (``mul_scalar_16bit``)."""
    dtype, f32 = param.dtype, np.float32

    def op(value):  # one torch op: its float32 result rounded to the parameter's dtype
        return value.astype(dtype).astype(f32)
    p, g, m, v = (dtypes.upcast(a) for a in (param, grad, exp_avg, exp_avg_sq))
    if weight_decay:
        p = op(p * mul_scalar_16bit(1 - lr * weight_decay, dtype, foreach))  # param.mul_(1 - lr * wd)
    m = op(m + f32(1 - beta1) * (g - m))  # exp_avg.lerp_(grad, 1 - beta1): torch's lerp for weight < 0.5
    v = op(v * mul_scalar_16bit(beta2, dtype, foreach))  # exp_avg_sq.mul_(beta2)
    v = op(_fused_multiply_add(f32(1 - beta2) * g, g, v))  # .addcmul_(g, g, value=1 - beta2)
    root_of = v
    if max_exp_avg_sq is not None:  # amsgrad: torch.maximum(max_v, v) (exact: no rounding)
        max_exp_avg_sq[...] = np.maximum(dtypes.upcast(max_exp_avg_sq), v).astype(dtype)
        root_of = dtypes.upcast(max_exp_avg_sq)
    # .add_(eps): torch rounds a number added to a 16-bit tensor to the dtype first (as alpha=)
    denom = op(op(op(np.sqrt(root_of)) / f32(math.sqrt(1 - beta2 ** step))) + alpha_16bit(eps, dtype))
    p = op(p + f32(-lr / (1 - beta1 ** step)) * m / denom)  # param.addcdiv_(exp_avg, denom, -step_size)
    param[...], exp_avg[...], exp_avg_sq[...] = p, m, v


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
    foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
    decoupled_weight_decay=False)``, as in PyTorch: ``weight_decay`` is an L2 penalty added to the
    gradient, or AdamW's decoupled decay with ``decoupled_weight_decay=True``; ``maximize`` climbs.

    ``foreach``, ``fused`` and ``capturable`` choose among torch's implementations of the same
    update; minilora accepts them and runs its own (fused kernel on ``cuda``/``emu``). ``amsgrad=True``
    keeps a third array, ``max_exp_avg_sq`` (``amsgrad_update``). ``differentiable=True`` is not
    implemented and raises.
    """
    _state_shaped_as_params = True
    _steps_are_tensors = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        if _is_tensor(lr) and foreach and not capturable:  # torch's check
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        betas = group["betas"]  # torch's Adam/AdamW check: two Python floats (not ints) or two Tensors
        if isinstance(betas, (tuple, list)) and not (all(isinstance(beta, float) for beta in betas)
                                                     or all(hasattr(beta, "detach") for beta in betas)):
            raise ValueError("betas must be either both floats or both Tensors")
        if isinstance(betas, (tuple, list)) and _is_tensor(betas[0]) and group["foreach"] and not group["capturable"]:
            raise ValueError("betas[0] as a Tensor is not supported for capturable=False and foreach=True")
        _check_adam_hyperparameters(group, index)
        group["betas"] = tuple(float(_as_number(beta)) for beta in group["betas"])  # (a list too, as torch's)

    def _check_tensor_hyperparameters(self, group):
        if group["foreach"] and _is_tensor(group["lr"]) and not group["capturable"]:  # torch's step: the same
            raise RuntimeError("lr as a Tensor is not supported for capturable=False and foreach=True")

    def step(self, closure=None):
        """Update every trainable parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._evaluate(closure)
        todo = []  # (parameter, its state's arrays, its group) for every parameter updated now
        for group in self.param_groups:
            for p in self._params_to_update(group):
                state = self.state[p]
                if not state:  # first step: moments start at zero
                    state.update(state_tensors(_new_state(p, group["amsgrad"]), p.device))
                if group["amsgrad"] and "max_exp_avg_sq" not in state:  # torch: a KeyError too
                    raise KeyError("'max_exp_avg_sq': the parameter group has amsgrad=True, but a parameter's "
                                   "state was made with amsgrad=False; switch amsgrad on only in a fresh optimizer")
                todo.append((p, state_arrays(state, p.device), group))  # (the update writes into them in place)
        for each_once in occurrence_passes(todo):  # (one pass, unless a parameter is listed twice)
            for _, state, _ in each_once:  # (counted once every parameter's state is known to be good)
                state["step"] += 1
            # update() below, or on emu/cuda kernel_update(): one launch of kernels/adamw.cu
            kernels.run_update(self, each_once)
        return loss

    def update(self, todo):
        """The NumPy/CuPy update, ``adamw_update`` on every parameter.

        On the CPU the parameters' elements are shared out evenly among the threads (``parallel.spans``:
        by elements, not by parameters), and each thread updates its share in slices of
        ``parallel.slice_elements()``. The small parameters (``GATHER_BELOW``) of one group and step count
        are first gathered into flat arrays, updated as one and copied back (``_flat_tasks``).
        CuPy arrays, and parameters whose state is strided, are updated whole, one after the other.
        """
        todo = [entry for entry in todo if not _fused_step_taken(*entry)]
        tasks, gathered, whole = self._flat_tasks(todo)
        self._update_pieces(whole)
        parallel.spans(functools.partial(self._update_spans, tasks), [arrays[0].size for arrays, _, _ in tasks])
        for flat, members in gathered:
            _scatter(flat, [arrays for arrays, _, _ in members])

    # The fused kernel (kernels/adamw.cu): minilora.kernels.run_update runs kernel_update instead of
    # update on a device that launches kernels, for float32 contiguous parameters, when kernel_applies.
    @staticmethod
    def kernel_applies(todo):
        """The kernel computes AdamW's rule: not Adam's L2 weight decay, not ``maximize``, not ``amsgrad``."""
        return not any((g["weight_decay"] and not g["decoupled_weight_decay"]) or g["maximize"] or g["amsgrad"]
                       for _, _, g in todo)

    def kernel_update(self, todo):
        """Every parameter in ONE launch of the fused AdamW kernel. The launch's pointer and size tables
        stay on the device between steps (``kernels.AdamWTables``, one per optimizer): rebuilt only
        when the parameter set changes, so a step's host work is a key check, one small copy, one launch."""
        tables = self.__dict__.get("_adamw_tables")
        if tables is None:
            tables = self._adamw_tables = kernels.AdamWTables()
        kernels.adamw_step([p._array for p, _, _ in todo], kernels.contiguous(*(p.grad._array for p, _, _ in todo)),
                           [st["exp_avg"] for _, st, _ in todo], [st["exp_avg_sq"] for _, st, _ in todo],
                           lr=[learning_rate(g) for _, _, g in todo], beta1=[g["betas"][0] for _, _, g in todo],
                           beta2=[g["betas"][1] for _, _, g in todo], eps=[g["eps"] for _, _, g in todo],
                           weight_decay=[g["weight_decay"] for _, _, g in todo],
                           step=[int(st["step"]) for _, st, _ in todo], device=todo[0][0].device, tables=tables)

    def _update_pieces(self, pieces, work=None):
        """The NumPy/CuPy update of ``(param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq])`` pieces (any device);
        ``work``: flat float32 and float64 work arrays for 1-d pieces up to their size (else each allocates its own)."""
        for (param, grad, exp_avg, exp_avg_sq, *amsgrad_max), state, group in pieces:
            beta1, beta2 = group["betas"]
            step = float(state["step"])
            wd, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
            if group["maximize"]:
                grad = -grad  # climb: a new array, p.grad stays as it is
            if wd and not decoupled:  # Adam's L2 penalty: a new array, p.grad stays as it is
                grad = _with_l2(grad, param, wd)
            if rounds_each_op(param.dtype):  # a bf16/fp16 parameter, its state in its dtype (as torch)
                adamw_update_16bit(param, grad, exp_avg, exp_avg_sq, step=step, lr=learning_rate(group), beta1=beta1,
                                   beta2=beta2, eps=group["eps"], weight_decay=wd if decoupled else 0.0,
                                   max_exp_avg_sq=amsgrad_max[0] if amsgrad_max else None,
                                   foreach=bool(group["foreach"]))
                continue
            if amsgrad_max:
                with _roots_of(group):
                    amsgrad_update(param, grad, exp_avg, exp_avg_sq, amsgrad_max[0], step=step,
                                   lr=learning_rate(group), beta1=beta1, beta2=beta2, eps=group["eps"],
                                   weight_decay=wd if decoupled else 0.0)
                continue
            scratch, wide = (w[:param.size] for w in work) if work else (xp_of(param).empty_like(param), None)
            hyper = dict(step=step, lr=learning_rate(group), beta1=beta1, beta2=beta2, eps=group["eps"],
                         weight_decay=wd if decoupled else 0.0)
            # torch's roundings, its fused multiply-adds included: float64 bit for bit, float32 too where MKL's sqrt
            # is matched (float32_math.mkl_sqrt: Intel AVX-512 CPUs)
            with _roots_of(group):
                adamw_update(param, grad, exp_avg, exp_avg_sq, scratch, wide=wide, **hyper)

    def _update_spans(self, tasks, spans):
        """Update one thread's share of the flat ``tasks``: its ``(task, start, stop)`` spans, slice by slice."""
        step = parallel.slice_elements()
        longest = min(step or CHUNK, max(stop - start for _, start, stop in spans)) if spans else 0
        work = (np.empty(longest, np.float32), np.empty(longest, np.float64))  # (shared by the slices)
        for task, start, stop in spans:
            arrays, state, group = tasks[task]
            if _in_one_pass([a[start:stop] for a in arrays], state, group):
                continue
            self._update_pieces([(piece, state, group)
                                 for piece in cache_slices(*(a[start:stop] for a in arrays), step=step)],
                                work if arrays[0].dtype == np.float32 else None)

    @staticmethod
    def _flat_tasks(todo):
        """``(tasks, gathered, whole)`` for ``todo``'s parameters: ``tasks`` of flat ``(param, grad, exp_avg,
        exp_avg_sq[, max_exp_avg_sq])`` arrays with their state and group (a parameter's own arrays seen
        flat: writing into them writes the parameter), where the small parameters of one group, step
        count and dtype share one task of gathered copies; ``gathered`` lists such a task's flat arrays
        and its members, to copy back; ``whole``: the parameters updated as they are (CuPy, strided state).
        """
        tasks, small, whole = [], {}, []
        for p, state, group in todo:
            arrays = (p._array, p.grad._array, state["exp_avg"], state["exp_avg_sq"])
            arrays += (state["max_exp_avg_sq"],) if group["amsgrad"] else ()
            if not all(type(a) is np.ndarray and (a.flags.c_contiguous or a is arrays[1]) for a in arrays):
                whole.append((arrays, state, group))  # (a flat view must be a view; grad is only read)
                continue
            flat = tuple(a.reshape(-1) for a in arrays)
            dtype = flat[0].dtype
            if flat[0].size < GATHER_BELOW and all(a.dtype is dtype for a in flat):  # (`is`: ==, 0.4 us, is slow)
                small.setdefault((id(group), float(state["step"]), dtype), []).append((flat, state, group))
            else:
                tasks.append((flat, state, group))
        gathered = []
        for members in small.values():
            if len(members) == 1:
                tasks.append(members[0])
                continue
            flat = tuple(np.concatenate(column) for column in zip(*(arrays for arrays, _, _ in members)))
            tasks.append((flat, members[0][1], members[0][2]))  # (one step count: any member's state says it)
            gathered.append((flat, members))
        return tasks, gathered, whole


_NUMPY_SQRT = np.sqrt  # the one pass's sqrtf rounds as NumPy's does


_runs_the_solution = solutions.solution_check(adamw_update)  # (exercise 6.1's region as shipped)


def _in_one_pass(arrays, state, group):
    """``adamw_update`` of flat float32 ``(param, grad, exp_avg, exp_avg_sq)`` in one compiled pass over the
    arrays (``float32_math.adamw_step``, the same bits from the same float32 numbers as the exercise's ~14
    NumPy calls, computed here as it computes them), for AdamW's rule (Adam's L2 term, ``maximize`` and
    ``amsgrad`` go the NumPy way); False where it does not apply. On a 3.4M-parameter Llama's full fine-tuning
    step (benchmarks/train_step.py) AdamW took 23 ms on 2 threads, torch's 8.8 ms (Intel Xeon, 2 vCPUs)."""
    if (len(arrays) != 4 or arrays[0].dtype != np.float32 or group["maximize"]
            or (group["weight_decay"] and not group["decoupled_weight_decay"]) or np.sqrt is not _NUMPY_SQRT
            or not _runs_the_solution()):
        return False  # (np.sqrt replaced: tests/mkl_vml.py gives it MKL's rounding, which torch's sqrt has; the
        # region not the shipped solution: a learner's, or a test's stub, must be what runs)
    if not group.get("fused") and not float32_math.MKL_SQRT_CPU and mkl_vml.applies("sqrt", arrays[0]):
        return False  # (torch's sqrt is MKL's own vsSqrt on this CPU, which the NumPy way calls: the C kernel's root
        # is the correctly rounded one -- 163 of 10000 weights an ulp off after 5 steps on an AMD Zen 4)
    beta1, beta2 = group["betas"]
    lr, wd, step, number = learning_rate(group), group["weight_decay"], float(state["step"]), np.float32
    return float32_math.adamw_step(
        *arrays, decay=bool(wd), shrink=number(1 - lr * wd), one_minus_beta1=number(1 - beta1),
        one_minus_beta2=number(1 - beta2), beta2=number(beta2), bias2_root=number(math.sqrt(1 - beta2 ** step)),
        eps=number(group["eps"]), step_size=number(-(lr / (1 - beta1 ** step))), mkl_sqrt=not group.get("fused"))


def _fused_step_taken(p, state, group):
    """Run torch's fused CPU kernel's steps on this parameter where its group asks for ``fused=True`` (and the
    exercise's region is the shipped solution: a learner's update is what runs otherwise); False where not taken."""
    arrays = (p._array, p.grad._array, state["exp_avg"], state["exp_avg_sq"])
    if not (group.get("fused") and fused_adam.takes(arrays) and _runs_the_solution()):
        return False
    beta1, beta2 = group["betas"]
    fused_adam.fused_adam_step(*arrays, state.get("max_exp_avg_sq") if group["amsgrad"] else None,
                               step=float(state["step"]), lr=learning_rate(group), beta1=beta1, beta2=beta2,
                               eps=group["eps"], weight_decay=group["weight_decay"],
                               decoupled=group["decoupled_weight_decay"], maximize=group["maximize"])
    return True


def _scatter(flat, members):
    """Copy the updated flat arrays of gathered parameters back into each member's param and state (flat
    views of them; ``flat``'s column 1, the gradient, is only read)."""
    start = 0
    for arrays in members:  # (each member's arrays are flat views)
        stop = start + arrays[0].size
        for k, array in enumerate(arrays):
            if k != 1:
                array[...] = flat[k][start:stop]
        start = stop


def _new_state(p, amsgrad):
    """A parameter's state before its first step: the count and the moments at zero (and amsgrad's maximum)."""
    xp = p.device.xp
    state = dict(step=new_step_count(), exp_avg=xp.zeros(p.shape, dtype=p.dtype),
                 exp_avg_sq=xp.zeros(p.shape, dtype=p.dtype))
    if amsgrad:
        state["max_exp_avg_sq"] = xp.zeros(p.shape, dtype=p.dtype)
    return state


def _is_tensor(value):
    """A tensor (minilora's, torch's, a NumPy array), not a Python number."""
    return hasattr(value, "shape") and not isinstance(value, (int, float))


def _with_l2(grad, param, weight_decay):
    """``grad.add(param, alpha=weight_decay)`` as torch computes it (``add_scaled``: a fused multiply-add where
    torch's build fuses; 16-bit: ``add_scaled_16bit``)."""
    if rounds_each_op(param.dtype):
        sum_ = add_scaled_16bit_rounded(dtypes.upcast(grad), weight_decay, dtypes.upcast(param), param.dtype)
        return sum_.astype(param.dtype)
    return add_scaled(grad, weight_decay, param)


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False, *,
    maximize=False, ...)``, as in PyTorch: decoupled weight decay ``p -= lr * wd * p`` before the
    Adam step (``Adam(..., decoupled_weight_decay=True)``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)
