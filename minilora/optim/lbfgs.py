"""L-BFGS, as ``torch.optim.LBFGS`` computes it: a quasi-Newton method for full-batch problems.

Each ``step(closure)`` runs up to ``max_iter`` iterations, each calling ``closure()`` (which zeroes the
gradients, computes the loss and calls ``backward()``) to get the loss and gradient. From the last
``history_size`` pairs (``s``: a step taken, ``y``: the gradient's change over it) the two-loop recursion
builds ``H @ g``, an estimate of the inverse Hessian times the gradient, without ever forming a matrix. The
step along ``d = -H g`` is ``lr`` (the first iteration: ``min(1, 1 / |g|_1) * lr``), or, with
``line_search_fn='strong_wolfe'``, the length a line search finds satisfying the strong Wolfe conditions.

All parameters are handled as one flat vector (torch's ``_gather_flat_grad``), so there is one parameter group
and the whole state is kept under the first parameter, with torch's names: ``func_evals``, ``n_iter``, ``d``,
``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``.

Numbers as torch keeps them: the losses are Python floats; dot products and what is computed from them
(``ys``, ``ro``, ``H_diag``, ``al``, ``gtd``) are 0-d values of the parameters' dtype (NumPy scalars here), so a
float32 problem stays in float32 as torch's does. The dot products are MKL's in torch, summed here in its order
where ``mkl_dot`` has measured it (an Intel AVX-512 CPU; elsewhere NumPy's BLAS, which may round otherwise);
``add_(v, alpha=a)`` is fused as ATen's add kernel fuses it, and ``|g|.sum()`` is torch's cascade sum: on that CPU
the weights are torch's bit for bit where the closure's are.
"""
import numpy as np

from .. import float32_sums, mkl_dot
from ..tensor import Tensor, enable_grad, no_grad
from .optimizer import Optimizer, _check_range, add_scaled, learning_rate, rounds_each_op, state_tensors

__all__ = ["LBFGS"]


class LBFGS(Optimizer):
    """``LBFGS(params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
    history_size=100, line_search_fn=None)``, as in PyTorch (``max_eval`` defaults to ``max_iter * 5 // 4``;
    ``line_search_fn``: None or ``'strong_wolfe'``). ``step(closure)`` needs the closure. float16/bfloat16
    parameters are refused (``NotImplementedError``)."""

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        low_precision = [str(p.dtype) for p in self._params if rounds_each_op(p.dtype)]
        if low_precision:  # torch rounds each vector op (and its dot products) its own way: not reproduced here
            raise NotImplementedError(f"LBFGS on {low_precision[0]} parameters is not implemented in minilora (torch's "
                                      f"16-bit rounding of its vector ops and dot products is not reproduced); "
                                      f"optimize float32 or float64 parameters")

    def _check_group(self, group, index):
        super()._check_group(group, index)
        _check_range(group, index, "lr", low=0.0)

    # --- the parameters as one flat vector ---------------------------------------------------------------
    def _gather_flat_grad(self):
        """Every parameter's gradient, flattened and joined (zeros for a parameter without one)."""
        xp = self._params[0].device.xp
        return xp.concatenate([xp.zeros(p.numel(), p.dtype) if p.grad is None else p.grad._array.reshape(-1)
                               for p in self._params])

    def _add_grad(self, step_size, update):
        """``p += step_size * update`` for each parameter's slice of the flat ``update``."""
        offset = 0
        for p in self._params:
            n = p.numel()
            p._array[...] = _plus_scaled(p._array, step_size, update[offset:offset + n].reshape(p.shape))
            p._bump_version()  # an in-place change, as torch's add_
            offset += n

    def _clone_param(self):
        return [p._array.copy() for p in self._params]

    def _set_param(self, arrays):
        for p, array in zip(self._params, arrays):
            p._array[...] = array
            p._bump_version()

    def _directional_evaluate(self, closure, x, t, d):
        """Loss and flat gradient at ``x + t * d``; the parameters are put back to ``x`` afterwards."""
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # --- the step --------------------------------------------------------------------------------------------
    def step(self, closure):
        """Up to ``max_iter`` L-BFGS iterations; returns the loss ``closure()`` gave at the start."""
        group, state, device = self.param_groups[0], self.state[self._params[0]], self._params[0].device
        arrays = {name: _unwrapped(value) for name, value in state.items()}  # (torch's state holds tensors,
        with no_grad():                                                       # lists of them and numbers)
            loss = self._iterate(_with_grad(closure), group, arrays)
        state.update(state_tensors(arrays, device))
        return loss

    def _iterate(self, closure, group, state):
        lr, max_iter, max_eval = learning_rate(group), group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss, current_evals = float(orig_loss), 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if abs(flat_grad).max() <= tolerance_grad:  # already optimal
            return orig_loss
        d, t = state.get("d"), state.get("t")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:  # steepest descent to start, an empty history
                d = -flat_grad
                state.update(old_dirs=[], old_stps=[], ro=[], H_diag=1)
            else:
                self._remember(state, flat_grad - prev_flat_grad, d * _in_dtype(t, d), group["history_size"])
                d = self._two_loop(state, flat_grad, group["history_size"])
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            # the step length: the first iteration's is scaled down by the gradient's size
            t = min(1.0, 1.0 / _sum(abs(flat_grad))) * lr if state["n_iter"] == 1 else lr
            gtd = _dot(flat_grad, d)  # the directional derivative
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if group["line_search_fn"] is not None:
                if group["line_search_fn"] != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = self._clone_param()

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)
                loss, flat_grad, t, ls_func_evals = _strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                                  max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:  # re-evaluate, unless this was the last iteration
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if (n_iter == max_iter or current_evals >= max_eval or opt_cond
                    or abs(d * _in_dtype(t, d)).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change):
                break
        state.update(d=d, t=t, prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    @staticmethod
    def _remember(state, y, s, history_size):
        """Keep the pair (``y``, ``s``) if it has positive curvature (``y . s > 1e-10``), dropping the oldest
        beyond ``history_size``; ``H_diag`` (the initial inverse Hessian's scale) becomes ``y.s / y.y``."""
        ys = _dot(y, s)
        if ys > 1e-10:
            if len(state["old_dirs"]) == history_size:
                for name in ("old_dirs", "old_stps", "ro"):
                    state[name].pop(0)
            state["old_dirs"].append(y)
            state["old_stps"].append(s)
            state["ro"].append(1.0 / ys)
            state["H_diag"] = ys / _dot(y, y)

    @staticmethod
    def _two_loop(state, flat_grad, history_size):
        """The two-loop recursion: ``-H @ g`` from the remembered pairs, newest first, then oldest first."""
        old_dirs, old_stps, ro = state["old_dirs"], state["old_stps"], state["ro"]
        if "al" not in state:
            state["al"] = [None] * history_size
        al = state["al"]
        q = -flat_grad
        for i in range(len(old_dirs) - 1, -1, -1):
            al[i] = _dot(old_stps[i], q) * ro[i]
            q = _plus_scaled(q, -al[i], old_dirs[i])
        r = q * _in_dtype(state["H_diag"], q)
        for i in range(len(old_dirs)):
            be_i = _dot(old_dirs[i], r) * ro[i]
            r = _plus_scaled(r, al[i] - be_i, old_stps[i])
        return r

    def state_bytes(self):
        """Bytes of the state's vectors: ``d``, ``prev_flat_grad`` and up to ``2 * history_size`` remembered ones
        (torch's warning: ``param_bytes * (history_size + 1)`` and more)."""
        values = [v for st in self.state.values() for v in st.values()]
        arrays = [a for v in values for a in (v if isinstance(v, list) else [v])]
        return sum(int(a.nbytes) for a in arrays if hasattr(a, "nbytes") and getattr(a, "ndim", 0) > 0)

    def load_state_dict(self, state_dict):
        """As ``Optimizer.load_state_dict``; LBFGS's state (flat vectors, lists of them) is converted whole,
        torch's tensors to arrays of the parameters' dtype and 0-d ones to NumPy scalars."""
        state_dict = dict(state_dict, state={k: {name: _to_arrays(v, self._params[0]) for name, v in st.items()}
                                             for k, st in state_dict["state"].items()})
        super().load_state_dict(state_dict)

    def _restore_value(self, value, param, index, name):
        return value  # already converted (flat vectors have no parameter's shape to check against)


def _with_grad(closure):
    """The closure run with gradients on (torch: ``torch.enable_grad()(closure)``)."""
    def closure_with_grad():
        with enable_grad():
            return closure()
    return closure_with_grad


def _in_dtype(number, array):
    """A Python number or 0-d value as torch uses it beside a tensor (``alpha=``, ``mul(t)``): in the array's
    dtype (a float32 problem stays in float32)."""
    if isinstance(number, (int, float)):
        return number
    if isinstance(number, (np.ndarray, np.generic)):
        return np.asarray(number).astype(array.dtype)[()]
    return number.astype(array.dtype)  # a 0-d CuPy array (a dot product's result on the GPU)


def _dot(a, b):
    """``a . b`` as torch's dot sums it: MKL's order where ``mkl_dot`` claims it, else the BLAS sum."""
    in_mkl_order = mkl_dot.dot(a, b)
    return a.dot(b) if in_mkl_order is None else in_mkl_order


def _plus_scaled(a, alpha, b):
    """``a.add(b, alpha=alpha)`` as torch's add kernel: alpha in a's dtype, the product fused into the sum
    (``add_scaled``; NumPy's ``a + alpha * b`` rounds twice: most weights an ulp off after a few iterations)."""
    if type(a) is np.ndarray:
        return add_scaled(a, alpha, b)
    return a + _in_dtype(alpha, a) * b  # (a CuPy array: its own kernels)


def _sum(a):
    """``a.sum()`` in torch's order (``float32_sums``' cascade) on the CPU; NumPy's pairwise sum elsewhere."""
    return float32_sums.torch_order_sum(a, (0,)) if type(a) is np.ndarray else a.sum()


def _unwrapped(value):
    """A state value as ``_iterate`` computes on it: a Tensor's array, a list's Tensors' arrays (a new list)."""
    if isinstance(value, list):
        return [_unwrapped(v) for v in value]
    return value._array if isinstance(value, Tensor) else value


def _to_arrays(value, param):
    """torch's LBFGS state values as minilora keeps them: tensors as arrays on the parameter's device in its
    dtype (0-d ones as NumPy scalars), lists element by element, numbers as they are."""
    if isinstance(value, (list, tuple)):
        return type(value)(_to_arrays(v, param) for v in value)
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy() if str(value.dtype) == "torch.bfloat16" else value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__cuda_array_interface__"):
        floating = np.dtype(value.dtype).kind == "f" or value.dtype == param.dtype
        dtype = param.dtype if floating else value.dtype
        if np.ndim(value) == 0:
            return np.asarray(value).astype(dtype)[()]
        return param.device.xp.array(value, dtype=dtype)
    return value


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimum of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, kept within ``bounds``."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch's line search (from minFunc): bracket a step length with enough decrease (``c1``) and a flat
    enough slope (``c2``), then zoom into the bracket by cubic interpolation. Returns
    ``(loss, flat_grad, t, evaluations)``."""
    d_norm = abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    # first: widen the step until a bracket [t_prev, t] holds a point satisfying the conditions
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    # then: zoom, shrinking the bracket until the conditions hold
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        t, insuf_progress = _away_from_the_ends(t, bracket, insuf_progress)
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:  # not enough decrease: t is the new high end
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:  # the old high end is the wrong side
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _away_from_the_ends(t, bracket, insuf_progress):
    """torch's safeguard: a trial step within 10% of the bracket's ends is moved to 10% inside, unless the last
    one made progress. Returns ``(t, insuf_progress)``."""
    eps = 0.1 * (max(bracket) - min(bracket))
    if min(max(bracket) - t, t - min(bracket)) >= eps:
        return t, False
    if insuf_progress or t >= max(bracket) or t <= min(bracket):
        t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
        return t, False
    return t, True
