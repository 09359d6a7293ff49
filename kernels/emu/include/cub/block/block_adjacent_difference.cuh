// Stand-in for CUB's <cub/block/block_adjacent_difference.cuh> under minilora's CPU emulator: see <cub/cub.cuh>.
#pragma once
#include "../cub.cuh"
