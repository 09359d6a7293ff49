// Stand-in for CUB's <cub/block/block_histogram.cuh> under minilora's CPU emulator: see <cub/cub.cuh>.
#pragma once
#include "../cub.cuh"
