// Part of the emulator's stand-in for libcu++ (<cuda/std/...>): included (no #pragma once, on purpose) just
// before a stand-in includes the standard C++ header it maps to.  cuda_emu.h defines __noinline__ and printf
// as macros, which a standard header included after it may spell itself (recent libstdc++ and glibc write
// __attribute__((__noinline__))); they are set aside here and restored by __emu_close.h.
#include "../../../cuda_emu.h"
#pragma push_macro("__noinline__")
#pragma push_macro("printf")
#undef __noinline__
#undef printf
