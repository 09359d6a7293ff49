"""torch's short-time Fourier transform, its inverse and its window factories: ``torch.stft`` / ``istft`` and
``torch.hann_window``, ``hamming_window``, ``bartlett_window``, ``blackman_window``, ``kaiser_window``, each the
composition ATen runs (arange, then the same products and cosines in the window's dtype; frames of the padded
signal times the window, then one real FFT; istft's overlap-add), so the numbers are torch's up to its FFT's
(MKL's) roundings."""
import math
import warnings

from . import dtypes, ops
from .complex_numbers import fft, ifft, irfft, is_complex, rfft, view_as_real
from .factories import check_layout, empty, ones
from .tensor import Tensor

__all__ = ["stft", "istft", "hann_window", "hamming_window", "bartlett_window", "blackman_window", "kaiser_window"]


# ---- window factories (ATen's TensorFactories.cpp) ---------------------------------------------------------
def _window_start(name, window_length, dtype, device, requires_grad):
    """ATen's ``window_function_checks`` and the two trivial windows; None where the formula runs."""
    dtype = dtypes.get_default_dtype() if dtype is None else dtypes.dtype_argument(name, dtype)
    if not dtypes.is_floating(dtype):
        raise RuntimeError(f"{name} expects floating point dtypes, got: {dtypes.torch_name(dtype)}")
    if window_length < 0:
        raise RuntimeError(f"{name} requires non-negative window_length, got window_length={window_length}")
    if window_length == 0:
        return dtype, empty((0,), dtype=dtype, device=device, requires_grad=requires_grad)
    if window_length == 1:
        return dtype, ones((1,), dtype=dtype, device=device, requires_grad=requires_grad)
    return dtype, None


def _arange(n, dtype, device):
    from . import arange  # (the package's torch.arange, defined in minilora/__init__.py)
    return arange(n, dtype=dtype, device=device)


def _positions(name, window_length, periodic, dtype, device, requires_grad):
    """The trivial window (length 0 or 1) as a Tensor, else ``(N, arange(N))`` in the window's dtype: N is the
    symmetric window's length, one more than asked for a periodic one."""
    dtype, trivial = _window_start(name, window_length, dtype, device, requires_grad)
    if trivial is not None:
        return trivial
    n = window_length + 1 if periodic else window_length
    return n, _arange(n, dtype, device)


def _finished(window, periodic, requires_grad):
    """A periodic window is the symmetric one of length + 1 without its last point."""
    window = window[:-1] if periodic else window
    return window.detach().requires_grad_(requires_grad)


def hamming_window(window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None, layout=None, device=None,
                   requires_grad=False, pin_memory=False):
    """``torch.hamming_window``: ``alpha - beta cos(2 pi n / (N - 1))``."""
    if layout is not None or pin_memory is not False:
        check_layout("hamming_window", layout, pin_memory, device)
    start = _positions("hamming_window", window_length, periodic, dtype, device, requires_grad)
    if isinstance(start, Tensor):
        return start
    n, window = start
    window = ops.add(ops.mul(ops.cos(ops.mul(window, math.pi * 2.0 / (n - 1))), -beta), alpha)
    return _finished(window, periodic, requires_grad)


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False,
                pin_memory=False):
    """``torch.hann_window``: ``hamming_window`` with alpha = beta = 1/2 (ATen's own definition)."""
    if layout is not None or pin_memory is not False:
        check_layout("hann_window", layout, pin_memory, device)
    trivial = _window_start("hann_window", window_length, dtype, device, requires_grad)[1]
    if trivial is not None:
        return trivial
    return hamming_window(window_length, periodic, 0.5, 0.5, dtype=dtype, device=device, requires_grad=requires_grad)


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False,
                    pin_memory=False):
    """``torch.bartlett_window``: the triangle ``2 n / (N - 1)``, mirrored as ``2 - x`` past its middle."""
    if layout is not None or pin_memory is not False:
        check_layout("bartlett_window", layout, pin_memory, device)
    start = _positions("bartlett_window", window_length, periodic, dtype, device, requires_grad)
    if isinstance(start, Tensor):
        return start
    n, window = start
    window = ops.mul(window, 2.0 / (n - 1))
    first_half = ((n - 1) >> 1) + 1
    window = ops.cat([window[:first_half], ops.add(ops.mul(window[first_half:], -1), 2)])
    return _finished(window, periodic, requires_grad)


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False,
                    pin_memory=False):
    """``torch.blackman_window``: ``0.42 - 0.5 cos(2 pi n / (N - 1)) + 0.08 cos(4 pi n / (N - 1))``."""
    if layout is not None or pin_memory is not False:
        check_layout("blackman_window", layout, pin_memory, device)
    start = _positions("blackman_window", window_length, periodic, dtype, device, requires_grad)
    if isinstance(start, Tensor):
        return start
    n, window = start
    window = ops.mul(window, math.pi / (n - 1))
    window = ops.add(ops.sub(ops.mul(ops.cos(ops.mul(window, 4)), 0.08), ops.mul(ops.cos(ops.mul(window, 2)), 0.5)),
                     0.42)
    return _finished(window, periodic, requires_grad)


def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None, device=None,
                  requires_grad=False, pin_memory=False):
    """``torch.kaiser_window``: ``i0(beta sqrt(1 - ((n - a) / a)^2)) / i0(beta)``, a = (N - 1) / 2."""
    if layout is not None or pin_memory is not False:
        check_layout("kaiser_window", layout, pin_memory, device)
    start = _positions("kaiser_window", window_length, periodic, dtype, device, requires_grad)
    if isinstance(start, Tensor):
        return start
    n, window = start
    center = (n - 1) / 2.0
    position = ops.div(ops.sub(window, center), center)
    window = ops.div(ops.special.i0(ops.mul(ops.sqrt(ops.abs(ops.sub(1, ops.pow(position, 2)))), beta)),
                     ops.special.i0(ops.add(ops.mul(position[:1], 0), beta)))
    return _finished(window, periodic, requires_grad)


# ---- the short-time Fourier transform ----------------------------------------------------------------------
def _full_window(window, win_length, n_fft, like):
    """The window centred in n_fft points (zeros around it), or the rectangle where none is given."""
    left = (n_fft - win_length) // 2
    if window is None:
        if win_length == n_fft:
            return None
        window = ones((win_length,), dtype=like.dtype if not is_complex(like) else dtypes.float32,
                      device=like.device)
    if win_length == n_fft:
        return window
    return ops.nn.pad(window, [left, n_fft - win_length - left])


def stft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, pad_mode="reflect",
         normalized=False, onesided=None, return_complex=None):
    """``torch.stft``: frames of ``n_fft`` samples every ``hop_length`` (the signal padded by n_fft // 2 at both
    ends with ``pad_mode`` when ``center``), each times the window, Fourier transformed: (freq, frames), a batch
    in front for a 2-D input; ``normalized`` scales by n_fft^-1/2; real inputs give the non-negative
    frequencies unless ``onesided=False``."""
    if window is None:
        warnings.warn("A window was not provided. A rectangular window will be applied,which is known to cause "
                      "spectral leakage. Other windows such as torch.hann_window or torch.hamming_window are "
                      "recommended to reduce spectral leakage.To suppress this warning and use a rectangular window, "
                      "explicitly set `window=torch.ones(n_fft, device=<device>)`.", UserWarning, stacklevel=2)
    complex_input = is_complex(input) or (window is not None and is_complex(window))
    if return_complex is None:
        if not complex_input:
            raise RuntimeError("stft requires the return_complex parameter be given for real inputs, and will "
                               "further require that return_complex=True in a future PyTorch release.")
        return_complex = True
    if not return_complex:
        warnings.warn("stft with return_complex=False is deprecated. In a future pytorch release, stft will return "
                      "complex tensors for all inputs, and return_complex=False will raise an error.\nNote: you can "
                      "still call torch.view_as_real on the complex output to recover the old return format.",
                      UserWarning, stacklevel=2)
    if input.ndim not in (1, 2):
        raise RuntimeError(f"stft: expected a 1D or 2D tensor, but got {input.ndim}D tensor")
    if center:
        signal_dim = input.ndim
        padded = ops.nn.pad(input.reshape((1,) * (3 - signal_dim) + tuple(input.shape)), [n_fft // 2, n_fft // 2],
                            pad_mode)
        input = padded.reshape(padded.shape[-signal_dim:])
    batched = input.ndim == 2
    signal = input if batched else input.unsqueeze(0)
    length = signal.shape[-1]
    hop_length = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if n_fft <= 0 or n_fft > length:
        raise RuntimeError(f"stft: expected 0 < n_fft < {length}, but got n_fft={n_fft}")
    if hop_length <= 0:
        raise RuntimeError(f"stft: expected hop_length > 0, but got hop_length={hop_length}")
    if win_length <= 0 or win_length > n_fft:
        raise RuntimeError(f"stft: expected 0 < win_length <= n_fft, but got win_length={win_length}")
    if window is not None and (window.ndim != 1 or window.shape[0] != win_length):
        raise RuntimeError(f"stft: expected a 1D window tensor of size equal to win_length={win_length}, but got "
                           f"window with size {list(window.shape)}")
    frames = signal.unfold(-1, n_fft, hop_length)  # (batch, frames, n_fft)
    full_window = _full_window(window, win_length, n_fft, signal)
    if full_window is not None:
        frames = ops.mul(frames, full_window)
    norm = "ortho" if normalized else "backward"
    onesided = not complex_input if onesided is None else onesided
    if complex_input or not onesided:
        spectrum = fft(frames, dim=-1, norm=norm)
    else:
        spectrum = rfft(frames, dim=-1, norm=norm)
    spectrum = spectrum.transpose(1, 2)
    if not batched:
        spectrum = spectrum.squeeze(0)
    return spectrum if return_complex else view_as_real(spectrum)


def _overlap_added(frames, hop_length):
    """Frames (batch, n_frames, n_fft) summed into one signal, frame k starting at k * hop_length (ATen's col2im)."""
    batch, n_frames, n_fft = frames.shape
    length = n_fft + hop_length * (n_frames - 1)
    positions = ops.add(ops.mul(_arange(n_frames, dtypes.int64, frames.device).unsqueeze(1), hop_length),
                        _arange(n_fft, dtypes.int64, frames.device)).reshape(-1)
    total = ops.mul(frames.reshape(batch, n_frames * n_fft)[:, :1], 0).expand(batch, length)
    return total.index_add(1, positions, frames.reshape(batch, n_frames * n_fft))


def istft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, normalized=False,
          onesided=None, length=None, return_complex=False):
    """``torch.istft``: stft's inverse -- each frame's inverse FFT times the window, overlap-added and divided by
    the overlap-added squared window (which must not vanish: torch's error), cut as stft padded (``center``) or
    to ``length``."""
    if not is_complex(input):
        raise RuntimeError("istft requires a complex-valued input tensor matching the output from stft with "
                           "return_complex=True.")
    if window is None:
        warnings.warn("A window was not provided. A rectangular window will be applied.Please provide the same "
                      "window used by stft to make the inversion lossless.To suppress this warning and use a "
                      "rectangular window, explicitly set `window=torch.ones(n_fft, device=<device>)`.", UserWarning,
                      stacklevel=2)
    hop_length = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if input.ndim not in (2, 3):
        raise RuntimeError(f"istft: expected a tensor with 2 or 3 dimensions of complex, but got {input.ndim}")
    spectrum = input.unsqueeze(0) if input.ndim == 2 else input
    fft_size = spectrum.shape[-2]
    onesided = fft_size != n_fft if onesided is None else onesided
    if onesided and n_fft // 2 + 1 != fft_size:
        raise RuntimeError(f"istft: expected the frequency dimension (3rd to the last) of the input tensor to match "
                           f"n_fft / 2 + 1 when onesided=True, but got {fft_size}")
    if not onesided and n_fft != fft_size:
        raise RuntimeError(f"istft: expected the frequency dimension (3rd to the last) of the input tensor to match "
                           f"n_fft when onesided=False, but got {fft_size}")
    if not 0 < hop_length <= win_length or not 0 < win_length <= n_fft:
        raise RuntimeError("istft: expected 0 < hop_length <= win_length <= n_fft")
    real_dtype = dtypes.float64 if spectrum.dtype.itemsize == 16 else dtypes.float32  # (complex128 -> float64)
    full_window = _full_window(window, win_length, n_fft, ones((1,), dtype=real_dtype, device=input.device))
    if full_window is None:
        full_window = ones((n_fft,), dtype=real_dtype, device=input.device)
    spectrum = spectrum.transpose(1, 2)  # (batch, frames, frequencies)
    norm = "ortho" if normalized else "backward"
    if return_complex:
        if onesided:
            raise RuntimeError("cannot have onesided output if window or input is complex")
        frames = ifft(spectrum, dim=-1, norm=norm)
    else:
        frames = irfft(spectrum if onesided else spectrum[..., :n_fft // 2 + 1], n=n_fft, dim=-1, norm=norm)
    frames = ops.mul(frames, full_window)
    n_frames = frames.shape[1]
    expected = n_fft + hop_length * (n_frames - 1)
    signal = _overlap_added(frames, hop_length)
    envelope = _overlap_added(ops.pow(full_window, 2).expand(1, n_frames, n_fft), hop_length)
    start = n_fft // 2 if center else 0
    end = start + length if length is not None else expected - n_fft // 2 if center else expected
    signal, envelope = signal[:, start:min(end, expected)], envelope[:, start:min(end, expected)]
    if envelope.numel() and bool(ops.abs(envelope).min() < 1e-11):
        raise RuntimeError("istft(...) window overlap add min: 1")
    signal = ops.div(signal, envelope)
    if input.ndim == 2:
        signal = signal.squeeze(0)
    if end > expected:  # (a longer length: zeros after the signal, as torch's)
        signal = ops.nn.pad(signal, [0, end - expected])
    return signal


Tensor.stft, Tensor.istft = stft, istft
