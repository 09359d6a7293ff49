// Stand-in for CuPy's <cupy/complex.cuh> under minilora's CPU emulator: thrust::complex<T> (the emulator's
// <thrust/complex.h>), which CuPy's header is and which its ElementwiseKernel / ReductionKernel name complex64 and
// complex128 as (complex<float>, complex<double>), with its names brought to the global namespace as CuPy's
// header does.
#pragma once
#include "../thrust/complex.h"

using thrust::complex;
using thrust::real;
using thrust::imag;
using thrust::abs;
using thrust::arg;
using thrust::norm;
using thrust::conj;
using thrust::polar;
using thrust::proj;
using thrust::exp;
using thrust::log;
using thrust::log10;
using thrust::sqrt;
using thrust::sin;
using thrust::cos;
using thrust::tan;
using thrust::sinh;
using thrust::cosh;
using thrust::tanh;
using thrust::asin;
using thrust::acos;
using thrust::atan;
using thrust::asinh;
using thrust::acosh;
using thrust::atanh;
using thrust::pow;
