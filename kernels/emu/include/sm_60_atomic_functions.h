// Stand-in for CUDA's <sm_60_atomic_functions.h> under minilora's CPU emulator: one of the headers <cuda_runtime.h> includes,
// which older samples include themselves; what it declares for device code is provided by cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
