/* torch's float32 row sums in ATen's cascade_sum order (aten/src/ATen/native/cpu/SumKernel.cpp), written
 * scalar, step for step as minilora/float32_sums.py's NumPy port adds them: the port is the reference a
 * learner reads, this file the same additions at C speed (the port's many short NumPy calls cost 4-10x a
 * plain sum). minilora/native/__init__.py compiles it with -ffp-contract=off and without -ffast-math, so
 * GCC neither fuses nor reorders an addition; it may vectorize across independent running sums, which
 * changes no bit. */
#include <stddef.h>
#include <string.h>

#define LANES 8   /* the sum kernel's Vectorized<float>: its AVX2 build, on AVX-512 CPUs too */
#define ILP 4     /* row_sum's interleaved running sums */
#define LEVELS 4  /* multi_row_sum's cascade levels */
#define MAX_SUMS (ILP * LANES)

static int ceil_log2(size_t n) {
    int bits = 0;
    if (n <= 2) return 1;
    for (n -= 1; n; n >>= 1) bits++;
    return bits;
}

/* multi_row_sum: `count` running sums side by side (sum k reads x[i * row_step + k]) over `size` rows,
 * blocks of 2^p rows gathered level by level (p = max(4, ceil(log2(size)) / 4)), then the levels added
 * into level 0 in order. */
static inline float load(const float *x, size_t i, int square) { return square ? x[i] * x[i] : x[i]; }

static void multi_row_sum(const float *x, size_t row_step, size_t size, int count, int square, float *out) {
    float acc[LEVELS][MAX_SUMS];
    int power = ceil_log2(size) / LEVELS;
    size_t step, mask, i = 0;
    if (power < 4) power = 4;
    step = (size_t)1 << power;
    mask = step - 1;
    memset(acc, 0, sizeof acc);
    while (i + step <= size) {
        for (size_t j = 0; j < step; j++, i++)
            for (int k = 0; k < count; k++) acc[0][k] += load(x, i * row_step + k, square);
        for (int level = 1; level < LEVELS; level++) {
            for (int k = 0; k < count; k++) {
                acc[level][k] += acc[level - 1][k];
                acc[level - 1][k] = 0.0f;
            }
            if (i & (mask << (level * power))) break;
        }
    }
    for (; i < size; i++)
        for (int k = 0; k < count; k++) acc[0][k] += load(x, i * row_step + k, square);
    for (int level = 1; level < LEVELS; level++)
        for (int k = 0; k < count; k++) acc[0][k] += acc[level][k];
    memcpy(out, acc[0], (size_t)count * sizeof(float));
}

/* row_sum over `size` items of `width` floats (a vector, or 1): items i go to running sum i % 4, the
 * last size % 4 items into the first, then the four folded left to right into out[0 .. width). */
static void row_sum(const float *x, size_t size, int width, int square, float *out) {
    float sums[MAX_SUMS];
    size_t whole = size / ILP * ILP;
    multi_row_sum(x, (size_t)(ILP * width), size / ILP, ILP * width, square, sums);
    for (size_t i = whole; i < size; i++)
        for (int l = 0; l < width; l++) sums[l] += load(x, i * width + l, square);
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < width; l++) sums[l] += sums[k * width + l];
    memcpy(out, sums, (size_t)width * sizeof(float));
}

/* vectorized_inner_sum (scalar_inner_sum below a vector's width): out[r] = the sum of row r of the
 * C-contiguous rows x width array x (of its elements' rounded squares with `square`: pow(x, 2) summed,
 * without the temporary), added to the output's starting zero. */
void ml_row_sums(const float *x, float *out, size_t rows, size_t width, int square) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        float lanes[LANES], total = 0.0f;
        if (width < LANES) {
            row_sum(row, width, 1, square, lanes);
            out[r] = 0.0f + lanes[0];
            continue;
        }
        size_t vectors = width / LANES;
        row_sum(row, vectors, LANES, square, lanes);
        for (size_t k = vectors * LANES; k < width; k++) total += load(row, k, square);
        for (int l = 0; l < LANES; l++) total += lanes[l];
        out[r] = 0.0f + total;
    }
}
