// Stand-in for CUDA's <host_defines.h> under minilora's CPU emulator: everything it would declare for
// device code is already provided by cuda_emu.h, which the emulator force-includes.
#pragma once
#include "../cuda_emu.h"
