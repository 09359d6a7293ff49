// Stand-in for CUDA's <cuda.h> under minilora's CPU emulator: everything it would declare for
// device code is already provided by cuda_emu.h, which the emulator force-includes.
#pragma once
#include "../cuda_emu.h"
#ifndef CUDA_VERSION
#define CUDA_VERSION 12060  // the driver API version cuda.h says (CUDA 12.6, as __CUDACC_VER_*__)
#endif
