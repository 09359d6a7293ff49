"""Matrix products: ``matmul`` (batched, broadcasting, like ``torch.matmul``) and ``linear``.

``linear(x, W, b)`` computes ``x W^T + b`` as ONE 2-D GEMM over all leading dims, and its backward
skips the weight-gradient GEMM when ``W`` is frozen (``ctx.needs_input_grad``) -- the saving LoRA
is built on: a frozen ``W0`` costs a forward GEMM and the ``dX`` GEMM, never a ``dW0`` GEMM.
"""
from .. import parallel
from ..tensor import Function
from .elementwise import unbroadcast

__all__ = ["matmul", "linear"]


def _check_dtypes(name, a, b):
    if a.dtype != b.dtype:
        raise TypeError(f"{name}: both operands must have the same dtype, got {a.dtype} and {b.dtype}")


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        _check_dtypes("matmul", a, b)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension "
                             f"(got shapes {a.shape} and {b.shape}); use mul for scalars")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match: "
                             f"{a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]}")
        ctx.a, ctx.b = a, b
        return parallel.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        # A 1-D operand is a matrix with a size-1 axis that matmul drops; put it back for backward.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:  # this order also turns the 0-d gradient of vector @ vector into [1, 1]
            g = g[..., None]
        if a.ndim == 1:
            g = g[..., None, :]
        na, nb = ctx.needs_input_grad
        # EXERCISE 1.4: gradients of a2 @ b2 for a and b (broadcast batch axes summed back), None if not needed
        # BEGIN SOLUTION
        ga = unbroadcast(parallel.matmul(g, b2.swapaxes(-1, -2)), a2.shape).reshape(a.shape) if na else None
        gb = unbroadcast(parallel.matmul(a2.swapaxes(-1, -2), g), b2.shape).reshape(b.shape) if nb else None
        # END SOLUTION
        return ga, gb

    @staticmethod
    def flops(ctx, arrays, out):
        a = arrays[0]
        return 2 * out.size * a.shape[-1]

    @staticmethod
    def backward_flops(ctx):
        a, b = ctx.a, ctx.b
        gemm = 2 * (a.size // a.shape[-1]) * a.shape[-1] * (b.shape[-1] if b.ndim > 1 else 1)
        return gemm * sum(ctx.needs_input_grad)


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b=None):
        _check_dtypes("linear", x, w)
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but "
                             f"the weight expects {w.shape[1]} (weight shape {w.shape}, [out, in])")
        x2 = x.reshape(-1, x.shape[-1])
        out = parallel.matmul(x2, w.T)
        if b is not None:
            out += b
        # The input is kept only for the weight gradient: a frozen weight does not hold it alive.
        ctx.x2 = x2 if ctx.needs_input_grad[1] else None
        ctx.w, ctx.x_shape, ctx.rows = w, x.shape, x2.shape[0]
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        nx, nw, nb = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])
        # EXERCISE 1.5: gradients of x W^T + b from g2 [rows, out]; no weight GEMM for a frozen weight (not nw)
        # BEGIN SOLUTION
        # dX = dY W and dW = dY^T X, side by side (one per thread); dW skipped for a frozen weight
        gx, gw = parallel.matmuls((g2, ctx.w) if nx else None, (g2.T, ctx.x2) if nw else None)
        gx = gx.reshape(ctx.x_shape) if nx else None
        gb = g2.sum(axis=0) if nb else None
        # END SOLUTION
        return gx, gw, gb

    @staticmethod
    def flops(ctx, arrays, out):
        return 2 * out.size * arrays[1].shape[1]

    @staticmethod
    def backward_flops(ctx):
        nx, nw, _ = ctx.needs_input_grad
        return 2 * ctx.rows * ctx.w.size * (int(nx) + int(nw))


def matmul(a, b):
    return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with ``weight`` stored ``[out_features, in_features]`` as in PyTorch."""
    return Linear.apply(x, weight, bias)
