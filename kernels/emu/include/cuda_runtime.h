// Stand-in for CUDA's <cuda_runtime.h> under minilora's CPU emulator: everything it would declare for
// device code is already provided by cuda_emu.h, which the emulator force-includes.
#pragma once
#include "../cuda_emu.h"
#ifndef CUDART_VERSION
#define CUDART_VERSION 12060  // the runtime API version cuda_runtime_api.h says (CUDA 12.6, as __CUDACC_VER_*__)
#endif
