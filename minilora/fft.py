"""``torch.fft``: discrete Fourier transforms of tensors, with torch's gradients (written in
minilora/complex_numbers.py, where complex tensors are explained)."""
from .complex_numbers import (fft, fft2, fftfreq, fftn, fftshift, ifft, ifft2, ifftn, ifftshift, irfft,  # noqa: F401
                              irfft2, irfftn, rfft, rfft2, rfftfreq, rfftn)
