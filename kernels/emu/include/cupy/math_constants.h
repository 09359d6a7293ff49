// Stand-in for CuPy's <cupy/math_constants.h> under minilora's CPU emulator: the four constants CuPy bundles
// (for builds without a CUDA toolkit's math_constants.h) and no others, so a kernel that uses another CUDART_*
// name without CUDA's header fails here as under CuPy.  Written by their exact bits; CUDA's <math_constants.h>
// (the emulator's stand-in) gives the same values, so the two may be included together.
#pragma once
#include "../../cuda_emu.h"

#ifndef CUDART_INF_F
#define CUDART_INF_F __builtin_bit_cast(float, 0x7f800000U)
#endif
#ifndef CUDART_NAN_F
#define CUDART_NAN_F __builtin_bit_cast(float, 0x7fffffffU)
#endif
#ifndef CUDART_INF
#define CUDART_INF __builtin_bit_cast(double, 0x7ff0000000000000ULL)
#endif
#ifndef CUDART_NAN
#define CUDART_NAN __builtin_bit_cast(double, 0xfff8000000000000ULL)
#endif
