// Stand-in for CUDA's <cuda_pipeline_primitives.h> under minilora's CPU emulator: the same primitives as
// <cuda_pipeline.h> (which includes it on a GPU).
#pragma once
#include "cuda_pipeline.h"
