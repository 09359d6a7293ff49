// Part of the emulator's stand-in for libcu++: restores the macros __emu_open.h set aside, and makes cuda::std
// name the standard library.  libcu++'s cuda::std is the C++ standard library made usable in device code; on
// the CPU the host's own std:: is exactly that, so cuda::std::min, cuda::std::numeric_limits,
// cuda::std::array, ... are std's (a using-directive: qualified names find std's declarations, and the
// stand-ins can still add what C++17's std lacks, such as bit_cast).
#pragma pop_macro("printf")
#pragma pop_macro("__noinline__")
namespace cuda {
namespace std {
using namespace ::std;
}  // namespace std
}  // namespace cuda
