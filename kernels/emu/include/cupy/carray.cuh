// Stand-in for CuPy's <cupy/carray.cuh> under minilora's CPU emulator, for raw kernels that include it for its
// half type: `float16` is cuda_fp16.h's __half here (CuPy's own class has the same arithmetic and conversions).
// Its CArray / CIndexer are what CuPy passes an ElementwiseKernel's or ReductionKernel's arrays as: the emulator
// generates those kernels with its own (minilora/emulator_kernels.py), and a raw kernel gets pointers, as CuPy's.
#pragma once
#include "../../cuda_emu.h"
#include <cuda_fp16.h>

typedef __half float16;
