// Device-side assert for minilora's CPU emulator.  A failed assert in a kernel becomes a
// minilora.emulator.KernelFault naming the expression, file, line, block and thread, instead of
// aborting the whole Python process.  (No include guard on purpose: like the real <assert.h>,
// re-including it re-reads NDEBUG.)
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e) ((e) ? (void)0 : __emu::assert_fail(#e, __FILE__, __LINE__))
#endif
