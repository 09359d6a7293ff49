// Stand-in for CUB's <cub/warp/warp_store.cuh> under minilora's CPU emulator: see <cub/cub.cuh>.
#pragma once
#include "../cub.cuh"
