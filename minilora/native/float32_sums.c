/* torch's float32 and float64 row sums in ATen's cascade_sum order (aten/src/ATen/native/cpu/SumKernel.cpp),
 * written scalar, step for step as minilora/float32_sums.py's NumPy port adds them: the port is the reference a
 * learner reads, this file the same additions at C speed (the port's many short NumPy calls cost 4-10x a
 * plain sum). minilora/native/__init__.py compiles it with -ffp-contract=off and without -ffast-math, so
 * GCC neither fuses nor reorders an addition; it may vectorize across independent running sums, which
 * changes no bit. */
#ifdef SUM_TYPE
/* ---- the cascade for one type: SUM_TYPE (float, double), SUM_LANES (its Vectorized<T>'s lanes in the sum
 * kernel's AVX2 build, on AVX-512 CPUs too: 32 bytes, 8 floats or 4 doubles) and NAMED(name) (the name with
 * the type's suffix) are set where this file includes itself below, once per type: C's way of writing a
 * function once for two types. ---- */
#define MAX_SUMS (ILP * SUM_LANES)

/* Element i of what is summed: x's, its square (`square`), or its product with y's (`y`: another array of x's
 * layout, as the rounded products of torch's ``(g * b).sum(0)``, without the product array). */
static inline SUM_TYPE NAMED(load)(const SUM_TYPE *x, const SUM_TYPE *y, size_t i, int square) {
    return y ? x[i] * y[i] : square ? x[i] * x[i] : x[i];
}

/* multi_row_sum: `count` running sums side by side (sum k reads x[i * row_step + k * col_step]) over `size` rows,
 * blocks of 2^p rows gathered level by level (p = max(4, ceil(log2(size)) / 4)), then the levels added
 * into level 0 in order; `acc` holds LEVELS x count sums, and level 0 (its first `count`) is the result.
 * (Inlined: each call site's constant count and steps let GCC vectorize it.) */
static inline __attribute__((always_inline)) void NAMED(multi_row_sum)(
        const SUM_TYPE *x, const SUM_TYPE *y, size_t row_step, size_t col_step, size_t size, size_t count, int square,
        SUM_TYPE *acc) {
    int power = ceil_log2(size) / LEVELS;
    size_t step, mask, i = 0;
    if (power < 4) power = 4;
    step = (size_t)1 << power;
    mask = step - 1;
    memset(acc, 0, LEVELS * count * sizeof(SUM_TYPE));
    while (i + step <= size) {
        for (size_t j = 0; j < step; j++, i++)
            for (size_t k = 0; k < count; k++) acc[k] += NAMED(load)(x, y, i * row_step + k * col_step, square);
        for (int level = 1; level < LEVELS; level++) {
            SUM_TYPE *below = acc + (level - 1) * count, *above = acc + level * count;
            for (size_t k = 0; k < count; k++) {
                above[k] += below[k];
                below[k] = 0;
            }
            if (i & (mask << (level * power))) break;
        }
    }
    for (; i < size; i++)
        for (size_t k = 0; k < count; k++) acc[k] += NAMED(load)(x, y, i * row_step + k * col_step, square);
    for (int level = 1; level < LEVELS; level++)
        for (size_t k = 0; k < count; k++) acc[k] += acc[level * count + k];
}

/* row_sum over `size` items `item_step` elements apart, each `width` contiguous elements (a vector: width ==
 * item_step, or one element): items i go to running sum i % 4, the last size % 4 items into the first, then the
 * four folded left to right into out[0 .. width). */
static inline __attribute__((always_inline)) void NAMED(row_sum)(
        const SUM_TYPE *x, const SUM_TYPE *y, size_t item_step, size_t size, int width, int square, SUM_TYPE *out) {
    SUM_TYPE sums[LEVELS * MAX_SUMS];
    size_t whole = size / ILP * ILP, col_step = width == 1 ? item_step : 1;
    NAMED(multi_row_sum)(x, y, ILP * item_step, col_step, size / ILP, (size_t)(ILP * width), square, sums);
    for (size_t i = whole; i < size; i++)
        for (int l = 0; l < width; l++) sums[l] += NAMED(load)(x, y, i * item_step + l, square);
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < width; l++) sums[l] += sums[k * width + l];
    memcpy(out, sums, (size_t)width * sizeof(SUM_TYPE));
}

/* vectorized_outer_sum (group == 4 vectors' lanes) or scalar_outer_sum (group == 4) down each column of each
 * rows x columns slab (contiguous columns; rows `row_step`, slabs `slab_step` elements apart): `group` columns
 * side by side at a time (multi_row_sum), each column after the
 * last whole group on its own (row_sum down the column), each added to the output's starting zero. Every group's
 * running sums follow the same row index, so all whole groups run as one multi_row_sum, row after row through
 * memory (`acc`: LEVELS x columns sums, the caller's). */
void NAMED(ml_outer_sums)(const SUM_TYPE *x, SUM_TYPE *out, SUM_TYPE *acc, size_t slabs, size_t rows,
                          size_t columns, size_t slab_step, size_t row_step, int group) {
    size_t grouped = columns / (size_t)group * (size_t)group;
    for (size_t s = 0; s < slabs; s++) {
        const SUM_TYPE *slab = x + s * slab_step;
        SUM_TYPE *o = out + s * columns, sums[LEVELS * MAX_SUMS];
        NAMED(multi_row_sum)(slab, 0, row_step, 1, rows, grouped, 0, acc);
        for (size_t j = 0; j < grouped; j++) o[j] = (SUM_TYPE)0 + acc[j];
        for (size_t j = grouped; j < columns; j++) {
            NAMED(row_sum)(slab + j, 0, row_step, rows, 1, 0, sums);
            o[j] = (SUM_TYPE)0 + sums[0];
        }
    }
}

/* ``x.sum(0)`` (``(x * y).sum(0)`` with y) of C-contiguous rows x columns arrays, on the column ranges [first,
 * last) of a row kernel (minilora/gemm_pool.py's C threads): range r is columns [ranges[2 r], ranges[2 r + 1]),
 * the part one of torch's threads sums (``parallel_dim_reduction``), added as ml_outer_sums adds that range (of
 * the product array: each product rounded first). So the ranges run side by side, and a weight's gradient
 * (RMSNorm's: the gradient times the normalised input) needs no product array. `acc`: LEVELS sums a column. */
void NAMED(ml_outer_product_sums)(const void *arguments, int64_t first, int64_t last) {
    const outer_product_args *a = arguments;
    size_t rows = (size_t)a->rows, columns = (size_t)a->columns;
    for (int64_t r = first; r < last; r++) {
        size_t begin = (size_t)a->ranges[2 * r], width = (size_t)a->ranges[2 * r + 1] - begin;
        const SUM_TYPE *x = (const SUM_TYPE *)a->x + begin, *y = a->y ? (const SUM_TYPE *)a->y + begin : 0;
        SUM_TYPE *out = (SUM_TYPE *)a->out + begin, *acc = (SUM_TYPE *)a->acc + LEVELS * begin, sums[LEVELS * MAX_SUMS];
        size_t group = width >= SUM_LANES ? ILP * SUM_LANES : ILP, grouped = width / group * group;
        NAMED(multi_row_sum)(x, y, columns, 1, rows, grouped, 0, acc);
        for (size_t j = 0; j < grouped; j++) out[j] = (SUM_TYPE)0 + acc[j];
        for (size_t j = grouped; j < width; j++) {
            NAMED(row_sum)(x + j, y ? y + j : 0, columns, rows, 1, 0, sums);
            out[j] = (SUM_TYPE)0 + sums[0];
        }
    }
}

/* vectorized_inner_sum (scalar_inner_sum below a vector's width): out[r] = the sum of row r of the
 * C-contiguous rows x width array x (of its elements' rounded squares with `square`: pow(x, 2) summed,
 * without the temporary), added to the output's starting zero. */
void NAMED(ml_row_sums)(const SUM_TYPE *x, SUM_TYPE *out, size_t rows, size_t width, int square) {
    for (size_t r = 0; r < rows; r++) {
        const SUM_TYPE *row = x + r * width;
        SUM_TYPE lanes[SUM_LANES], total = 0;
        if (width < SUM_LANES) {
            NAMED(row_sum)(row, 0, 1, width, 1, square, lanes);
            out[r] = (SUM_TYPE)0 + lanes[0];
            continue;
        }
        size_t vectors = width / SUM_LANES;
        NAMED(row_sum)(row, 0, SUM_LANES, vectors, SUM_LANES, square, lanes);
        for (size_t k = vectors * SUM_LANES; k < width; k++) total += NAMED(load)(row, 0, k, square);
        for (int l = 0; l < SUM_LANES; l++) total += lanes[l];
        out[r] = (SUM_TYPE)0 + total;
    }
}

/* RMSNorm's forward on rows [first, last) (a row kernel of minilora/gemm_pool.py's C threads): exercise 2.1's
 * solution in minilora/ops/nn.py (_rms_norm_rows) with the same IEEE operations in the same order --
 * r = 1 / sqrt(mean of the squares + eps), the squares added as ml_row_sums adds them (torch's order),
 * normed = x r, out = normed w (normed without a weight) -- in one pass over each row while it is in the
 * cache, where NumPy makes four passes over the whole array (~8x the time at [1024, 256]). */
void NAMED(ml_rms_norm_rows)(const void *arguments, int64_t first, int64_t last) {
    const rms_norm_args *a = arguments;
    size_t width = (size_t)a->width;
    const SUM_TYPE *weight = a->weight, eps = (SUM_TYPE)a->eps;
    for (int64_t i = first; i < last; i++) {
        const SUM_TYPE *x = (const SUM_TYPE *)a->x + i * width;
        SUM_TYPE *normed = (SUM_TYPE *)a->normed + i * width, *out = (SUM_TYPE *)a->out + i * width, squares;
        NAMED(ml_row_sums)(x, &squares, 1, width, 1);
        SUM_TYPE r = (SUM_TYPE)1 / SUM_SQRT(squares / (SUM_TYPE)width + eps);
        ((SUM_TYPE *)a->r)[i] = r;
        for (size_t k = 0; k < width; k++) normed[k] = x[k] * r;
        for (size_t k = 0; k < width; k++) out[k] = weight ? normed[k] * weight[k] : normed[k];
    }
}

/* RMSNorm's input gradient on rows [first, last): exercise 2.2's solution (_rms_norm_backward_rows), the same
 * operations in the same order -- gw = g w, k = -(sum(gw x) r^3) / n with the sum in torch's order (the
 * products, rounded, first go to gx's row), gx = gw r and gx_mean = x k -- and, where gx_mean is NULL, their
 * sum in gx (the node returns the sum unless its input was used twice: RMSNorm's docstring). */
void NAMED(ml_rms_norm_backward_rows)(const void *arguments, int64_t first, int64_t last) {
    const rms_norm_backward_args *a = arguments;
    size_t width = (size_t)a->width;
    const SUM_TYPE *weight = a->weight;
    for (int64_t i = first; i < last; i++) {
        const SUM_TYPE *g = (const SUM_TYPE *)a->g + i * width, *x = (const SUM_TYPE *)a->x + i * width;
        SUM_TYPE *gx = (SUM_TYPE *)a->gx + i * width, *gx_mean = a->gx_mean ? (SUM_TYPE *)a->gx_mean + i * width : 0;
        SUM_TYPE r = ((const SUM_TYPE *)a->r)[i], r_cubed = r * r * r, products;
        for (size_t j = 0; j < width; j++) gx[j] = (weight ? g[j] * weight[j] : g[j]) * x[j];
        NAMED(ml_row_sums)(gx, &products, 1, width, 0);
        SUM_TYPE k = -(products * r_cubed) / (SUM_TYPE)width;
        for (size_t j = 0; j < width; j++) {
            SUM_TYPE along = (weight ? g[j] * weight[j] : g[j]) * r, through_mean = x[j] * k;
            if (gx_mean) {
                gx[j] = along;
                gx_mean[j] = through_mean;
            } else
                gx[j] = along + through_mean;
        }
    }
}
#undef MAX_SUMS
#else
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ILP 4     /* row_sum's interleaved running sums */
#define LEVELS 4  /* multi_row_sum's cascade levels */

static int ceil_log2(size_t n) {
    int bits = 0;
    if (n <= 2) return 1;
    for (n -= 1; n; n >>= 1) bits++;
    return bits;
}

/* The arguments of the RMSNorm row kernels (minilora/ops/nn.py builds them as ctypes structures) */
typedef struct {
    const void *x, *weight;  /* [rows, width], [width] or NULL */
    void *normed, *r, *out;  /* [rows, width], [rows], [rows, width] */
    int64_t width;
    double eps;              /* (the input's type's eps, exact in a double) */
} rms_norm_args;

typedef struct {  /* ml_outer_product_sums' */
    const void *x, *y;        /* [rows, columns] twice (y NULL: x's own sums) */
    void *out, *acc;          /* [columns], [LEVELS x columns] */
    const int64_t *ranges;    /* the column ranges: [begin, end) pairs */
    int64_t rows, columns;
} outer_product_args;

typedef struct {
    const void *g, *x, *r, *weight;  /* [rows, width] twice, [rows], [width] or NULL */
    void *gx, *gx_mean;              /* [rows, width]; gx_mean NULL: the two parts summed in gx */
    int64_t width;
} rms_norm_backward_args;

#define SUM_TYPE float
#define SUM_LANES 8
#define SUM_SQRT sqrtf
#define NAMED(name) name##_f32
#include "float32_sums.c"
#undef SUM_TYPE
#undef SUM_LANES
#undef SUM_SQRT
#undef NAMED
#define SUM_TYPE double
#define SUM_LANES 4
#define SUM_SQRT sqrt
#define NAMED(name) name##_f64
#include "float32_sums.c"
#undef SUM_TYPE
#undef SUM_LANES
#undef SUM_SQRT
#undef NAMED

/* ---- layer_norm's moments: RowwiseMoments (torch 2.13's ATen/native/cpu/moments_utils.h) -------------- */
#define CHUNK 16       /* vectors per Welford chunk (kChunkSize) */
#define MAX_LANES 16
#define MAX_DEPTH 64

/* vec::fmadd: one rounding in the AVX2/AVX-512 builds, a product and a sum in the "default" one */
static inline float fmadd(float a, float b, float c, int fused) { return fused ? fmaf(a, b, c) : a * b + c; }

/* AddMomentsVec: merge (count_add, m1_add, m2_add) into (count, m1, m2), lane by lane */
static void add_moments_vec(long count_add, const float *m1_add, const float *m2_add, long *count, float *m1,
                            float *m2, int lanes, int fused) {
    long n = *count + count_add;
    float c = n == 0 ? 0.0f : (float)count_add / (float)n;
    for (int l = 0; l < lanes; l++) {
        float delta = m1_add[l] - m1[l], sum2 = m2[l] + m2_add[l], c_delta = c * delta;
        float count_delta = delta * (float)*count;
        m1[l] = m1[l] + c_delta;
        m2[l] = fmadd(count_delta, c_delta, sum2, fused);
    }
    *count = n;
}

/* AddMoments, scalar: merge one lane's moments into the row's (GCC fuses its a * b + c where it fuses) */
static void add_moments(long count_add, float m1_add, float m2_add, long *count, float *m1, float *m2, int fused) {
    long n = *count + count_add;
    float c = n == 0 ? 0.0f : (float)count_add / (float)n;
    float delta = m1_add - *m1;
    *m1 = fmadd(c, delta, *m1, fused);
    *m2 += fmadd(delta * delta * c, (float)*count, m2_add, fused);
    *count = n;
}

/* The mean and biased variance of each row as torch's RowwiseMoments: Welford over chunks of 16 vectors
 * of `lanes` floats (each lane its own running moments, weights 1/(j+1) as floats), the chunks merged
 * in a binary cascade, the rest of the stack merged into its bottom, then the elements after the last
 * vector by scalar Welford, and each lane's moments merged into those; `fused`: the multiply-adds fused
 * as the AVX2/AVX-512 builds do (vec::fmadd, and GCC's contraction of AddMoments' steps; the scalar
 * Welford steps are not fused there). */
void ml_row_moments(const float *x, float *mean, float *var, size_t rows, size_t width, int lanes, int fused) {
    float weights[CHUNK];
    for (int j = 0; j < CHUNK; j++) weights[j] = 1.0f / (float)(j + 1);
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        long n = (long)(width / (size_t)lanes), chunks = (n + CHUNK - 1) / CHUNK;
        int depth = ceil_log2((size_t)chunks);
        long counts[MAX_DEPTH] = {0};
        float m1[MAX_DEPTH][MAX_LANES] = {{0}}, m2[MAX_DEPTH][MAX_LANES] = {{0}};
        for (long i = 0; i < chunks; i++) {
            const float *chunk = row + i * CHUNK * lanes;
            long count = n - i * CHUNK < CHUNK ? n - i * CHUNK : CHUNK;
            float c1[MAX_LANES] = {0}, c2[MAX_LANES] = {0};
            for (long j = 0; j < count; j++)
                for (int l = 0; l < lanes; l++) {
                    float value = chunk[j * lanes + l], delta = value - c1[l];
                    c1[l] = fmadd(weights[j], delta, c1[l], fused);
                    c2[l] = fmadd(delta, value - c1[l], c2[l], fused);
                }
            add_moments_vec(count, c1, c2, &counts[0], m1[0], m2[0], lanes, fused);
            long mask = i + 1;
            for (int j = 1; j < depth && (mask & 1) == 0; j++) {
                add_moments_vec(counts[j - 1], m1[j - 1], m2[j - 1], &counts[j], m1[j], m2[j], lanes, fused);
                counts[j - 1] = 0;
                memset(m1[j - 1], 0, sizeof m1[0]);
                memset(m2[j - 1], 0, sizeof m2[0]);
                mask >>= 1;
            }
        }
        for (int j = 1; j < depth; j++)
            add_moments_vec(counts[j], m1[j], m2[j], &counts[0], m1[0], m2[0], lanes, fused);
        long count = 0;
        float s1 = 0.0f, s2 = 0.0f;
        for (size_t k = (size_t)n * (size_t)lanes; k < width; k++) {
            float value = row[k], delta = value - s1;
            count++;
            s1 += delta / (float)count;
            s2 += delta * (value - s1);  /* (not fused: checked against torch's variances) */
        }
        for (int l = 0; l < lanes; l++) add_moments(n, m1[0][l], m2[0][l], &count, &s1, &s2, fused);
        mean[r] = s1;
        var[r] = s2 / (float)width;
    }
}

/* ---- vec::reduce_all's lane sums (softmax's and log_softmax's rows) ------------------------------- */
/* out[r] = the sum of row r as torch's vec::reduce_all adds it: one running sum per lane of `lanes`, the
 * partial last vector into its first lanes, then the lanes folded in halves (`halving`; the "default"
 * build adds them left to right); a row narrower than a vector left to right. */
void ml_lane_sums(const float *x, float *out, size_t rows, size_t width, int lanes, int halving) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        float acc[MAX_LANES];
        size_t whole = width - width % (size_t)lanes;
        if (width < (size_t)lanes) {
            float total = row[0];
            for (size_t k = 1; k < width; k++) total += row[k];
            out[r] = total;
            continue;
        }
        for (int l = 0; l < lanes; l++) acc[l] = row[l];
        for (size_t d = (size_t)lanes; d < whole; d += (size_t)lanes)
            for (int l = 0; l < lanes; l++) acc[l] += row[d + l];
        for (size_t k = whole; k < width; k++) acc[k - whole] += row[k];
        if (halving) {
            for (int n = lanes; n > 1; n /= 2)
                for (int l = 0; l < n / 2; l++) acc[l] += acc[l + n / 2];
        } else {
            for (int l = 1; l < lanes; l++) acc[0] += acc[l];
        }
        out[r] = acc[0];
    }
}

/* ---- batch norm's channels-last squares (ops/nn.py's _aten_batch_stats) -------------------------- */
/* out[c] = the squares of column c added down the rows by fused multiply-adds, from 0, in row order:
 * one thread's chunk of a [N, C] batch as ATen's batch_norm channels-last kernel collects var_sum. */
void ml_fma_square_columns(const float *x, float *out, size_t rows, size_t width) {
    for (size_t c = 0; c < width; c++) out[c] = 0.0f;
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * width;
        for (size_t c = 0; c < width; c++) out[c] = fmaf(row[c], row[c], out[c]);
    }
}

/* out[c] = x[r, c] * y[r, c] added down the rows by fused multiply-adds, from 0, in row order: one thread's
 * chunk of batch norm's channels-last backward dot product, sum over rows of (x - mean) * dy. */
void ml_fma_product_columns(const float *x, const float *y, float *out, size_t rows, size_t width) {
    for (size_t c = 0; c < width; c++) out[c] = 0.0f;
    for (size_t r = 0; r < rows; r++) {
        const float *xrow = x + r * width, *yrow = y + r * width;
        for (size_t c = 0; c < width; c++) out[c] = fmaf(xrow[c], yrow[c], out[c]);
    }
}

/* ---- var/std along dims: WelfordOps (torch 2.13's ATen/native/SharedReduceOps.h) ---------------------- */
/* mean[r], m2[r] = WelfordOps::reduce down row r of the C-contiguous float64 rows x width array x, from its
 * init (n = 0): the running mean moves by delta / n, M2 gains delta * (x - new mean), both in double and
 * unfused (binary_kernel_reduce's scalar loop: GCC does not contract it; measured against torch). */
void ml_welford_rows(const double *x, double *mean, double *m2, size_t rows, size_t width) {
    for (size_t r = 0; r < rows; r++) {
        const double *row = x + r * width;
        double m = 0.0, s = 0.0;
        for (size_t i = 0; i < width; i++) {
            double delta = row[i] - m;
            m = m + delta / (double)(i + 1);
            s = s + delta * (row[i] - m);
        }
        mean[r] = m;
        m2[r] = s;
    }
}
#endif
