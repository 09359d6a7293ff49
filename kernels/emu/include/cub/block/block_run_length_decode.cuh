// Stand-in for CUB's <cub/block/block_run_length_decode.cuh> under minilora's CPU emulator: see <cub/cub.cuh>.
#pragma once
#include "../cub.cuh"
