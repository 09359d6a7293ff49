"""``torch.fft``: discrete Fourier transforms of tensors, with torch's gradients (written in
minilora/complex_numbers.py, where complex tensors are explained)."""
from .complex_numbers import (fft, fft2, fftfreq, fftn, fftshift, ifft, ifft2, ifftn, ifftshift, irfft,  # noqa: F401
                              irfft2, irfftn, rfft, rfft2, rfftfreq, rfftn)
import numpy as _np  # noqa: E402

from . import dtypes  # noqa: E402
from .device import holds_no_values as _holds_no_values, unwritten_zeros as _unwritten_zeros  # noqa: E402
from .device import xp_of as _xp_of  # noqa: E402
from .factories import contiguous_format as _contiguous_format, known_layout as _known_layout  # noqa: E402
from .factories import suggested_format as _suggested_format, unknown_layout as _unknown_layout  # noqa: E402
from .complex_numbers import conj_physical, is_complex  # noqa: E402
from .factories import with_out as _with_out  # noqa: E402

fftfreq, rfftfreq = _with_out(fftfreq), _with_out(rfftfreq)  # (torch.fft.fftfreq(4, out=t): a factory's out=)

# torch's Hermitian transforms, as torch defines them: hfft is the inverse real transform of the conjugate
# with the forward transform's scaling (norm "backward" leaves hfft unscaled), ihfft the conjugate of rfft with
# the inverse's; the n-D forms take the last dimension as the halved one (irfftn's / rfftn's).
_SWAPPED_NORM = {None: "forward", "backward": "forward", "forward": "backward"}


def _hermitian(name, real_transform, to_real, input, sizes, dim, norm, out):
    if not to_real and is_complex(input):
        raise RuntimeError(f"{name} expects a real input tensor, but got {dtypes.torch_name(input.dtype)}")
    norm = _SWAPPED_NORM.get(norm, norm)  # ("ortho" is its own dual; anything else irfft/rfft refuse)
    if to_real:
        return real_transform(conj_physical(input) if is_complex(input) else input, sizes, dim, norm, out=out)
    result = conj_physical(real_transform(input, sizes, dim, norm))
    if name != "ihfft" and result.ndim > 1:
        if _suggested_format(input._array) is not _contiguous_format:  # (a channels_last input: torch's transform
            _unknown_layout(result._array)  # orders its dimensions otherwise, by no rule found: stride() refuses)
        else:
            _laid_out_as_torchs(result, _transformed_dims(input.ndim, sizes, dim))
    if out is None:
        return result
    from . import ops
    return ops._write_out(lambda: result, name, (), {}, out)


def _transformed_dims(ndim, sizes, dim):
    """The dimensions an n-D transform runs over, as torch resolves ``s`` and ``dim``."""
    if dim is None:
        dim = range(ndim - len(sizes), ndim) if sizes is not None else range(ndim)
    return [d % ndim for d in ((dim,) if isinstance(dim, int) else dim)]


def _laid_out_as_torchs(result, dims):
    """ihfft2 / ihfftn's result (just made by conj_physical, handed to no one) in torch's layout: ATen's ihfftn
    leaves the dimensions it did not transform outermost, then the halved one, then the other transformed ones
    (ascending), innermost (stride() answers so: a transposed pair for ihfft2)."""
    order = (tuple(d for d in range(result.ndim) if d not in dims) + (dims[-1],)
             + tuple(sorted(d for d in dims[:-1])))
    array = result._array
    if order != tuple(range(array.ndim)):
        shape = tuple(array.shape[i] for i in order)
        meta = _holds_no_values(array)  # (a meta result: the layout, no values to copy)
        buffer = _unwritten_zeros(shape, array.dtype) if meta else _xp_of(array).empty(shape, array.dtype)
        laid_out = buffer.transpose(tuple(_np.argsort(order)))
        if not meta:
            laid_out[...] = array
        result._array = _known_layout(laid_out, order)


def hfft(input, n=None, dim=-1, norm=None, *, out=None):
    """``torch.fft.hfft``: the real spectrum of a signal given by its one-sided Hermitian half."""
    return _hermitian("hfft", irfft, True, input, n, dim, norm, out)


def ihfft(input, n=None, dim=-1, norm=None, *, out=None):
    """``torch.fft.ihfft``: hfft's inverse, the one-sided half of a real signal's inverse transform."""
    return _hermitian("ihfft", rfft, False, input, n, dim, norm, out)


def hfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """``torch.fft.hfft2``: hfftn over two dimensions."""
    return _hermitian("hfft2", irfft2, True, input, s, dim, norm, out)


def ihfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """``torch.fft.ihfft2``: ihfftn over two dimensions."""
    return _hermitian("ihfft2", rfft2, False, input, s, dim, norm, out)


def hfftn(input, s=None, dim=None, norm=None, *, out=None):
    """``torch.fft.hfftn``: hfft over ``dim``, the last of them the halved one."""
    return _hermitian("hfftn", irfftn, True, input, s, dim, norm, out)


def ihfftn(input, s=None, dim=None, norm=None, *, out=None):
    """``torch.fft.ihfftn``: ihfft over ``dim``, the last of them the halved one."""
    return _hermitian("ihfftn", rfftn, False, input, s, dim, norm, out)
