/* No code: this library exists for its links. blas.py builds it linked with MKL's layered libraries (the LP64
   interface, a threading layer, the core) and GNU OpenMP, and loads it with RTLD_LOCAL, so MKL's symbols resolve
   among themselves in this library's scope and never enter the process's global one. Through libmkl_rt they did
   (it opens its layers RTLD_GLOBAL), and torch, imported afterwards, bound ~5000 of its own statically linked MKL
   functions to the wheel's sequential ones: torch's 2-thread products came out as its 1-thread products. */
int minilora_mkl_link;
