/* A Llama layer's float32 attention, forward and backward, on blocks of (batch, head) pairs in the C threads of
 * minilora/gemm_pool.py: ops/nn.py's _attention_forward and exercise 2.4's solution (_attention_backward),
 * step for step -- the same CBLAS calls (through the sgemm NumPy's own BLAS exports), the same elementwise
 * operations in the same order, torch's SLEEF exp (float32_kernels.c's ml_exp, as float32_math.sleef_exp) and
 * NumPy's pairwise sum where the NumPy code calls .sum() -- so the numbers are the NumPy code's to the bit.
 * What it saves: the NumPy code makes ~10 calls per block, and two Python threads running blocks side by side
 * meet at the GIL after each (a LoRA step's attention ran 1.5x faster on 2 threads than on 1, not 2x).
 *
 * Arrays are [B, H, T, X] with the last axis contiguous and any steps (in floats) along the other three: a
 * transposed [B, T, H, X] view needs no copy, a causal bias broadcasts with steps of 0. As many KV heads as query
 * heads (a grouped-query model runs the NumPy code). minilora/compiled_attention.py checks the arrays and
 * builds the arguments; each kernel returns early, leaving `failed` set, if it cannot allocate its scratch. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef void (*sgemm_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                         int64_t, float, float *, int64_t);
typedef void (*map_fn)(const float *, float *, size_t);
typedef int (*row_max_fn)(const float *, float *, size_t, size_t);
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef struct {        /* one [B, H, T, X] array: its first element and its steps along B, H, T */
    float *at;
    int64_t batch, head, row;
} view;

typedef struct {
    void *sgemm, *exp, *row_max;  /* cblas_sgemm; float32_kernels.c's ml_exp and ml_row_max */
    view q, k, v, out, probs, bias, g, dq, dk, dv;  /* (bias.at NULL: none; g .. dv: the backward's) */
    int64_t heads, tq, tk, d, dv_width, bias_column;  /* bias_column: the bias's step along the keys */
    float scale;
    int64_t failed;
} attention_args;

static float *of(const view *a, int64_t pair, int64_t heads) {
    return a->at + (pair / heads) * a->batch + (pair % heads) * a->head;
}

/* NumPy's float32 add.reduce of n contiguous elements: pairwise_sum (numpy/_core/src/umath/loops_utils.h.src)
 * added to the output's starting 0. Below 8 elements one by one from -0; up to 128, eight running sums of every
 * 8th element, folded ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest one by one; above, the two
 * halves (the first a multiple of 8 long), each summed so. */
static float pairwise_sum(const float *a, int64_t n) {
    if (n < 8) {
        float sum = -0.0f;
        for (int64_t i = 0; i < n; i++) sum += a[i];
        return sum;
    }
    if (n <= 128) {
        float r[8];
        int64_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        float sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) sum += a[i];
        return sum;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

/* max of a row; NaN if it holds one (NumPy's max: the peak is only subtracted, so which NaN does not matter, nor
 * the sign of a zero peak): for the rows where float32_kernels.c's ml_row_max leaves the choice to NumPy */
static float row_peak(const float *row, int64_t n) {
    float peak = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (row[j] != row[j]) return row[j];
        peak = row[j] > peak ? row[j] : peak;
    }
    return peak;
}

/* _attention_forward for one pair: S = (q scale) k^T (+ bias), P = softmax(S) into probs, out = P v */
static void forward_pair(const attention_args *a, int64_t pair, float *q_scaled, float *peaks) {
    const sgemm_fn sgemm = (sgemm_fn)a->sgemm;
    int64_t tq = a->tq, tk = a->tk, d = a->d;
    const float *q = of(&a->q, pair, a->heads), *bias = a->bias.at ? of(&a->bias, pair, a->heads) : 0;
    float *s = of(&a->probs, pair, a->heads);  /* probs: C-contiguous, rows of tk */
    for (int64_t t = 0; t < tq; t++)
        for (int64_t e = 0; e < d; e++) q_scaled[t * d + e] = q[t * a->q.row + e] * a->scale;
    sgemm(ROW_MAJOR, NO_TRANS, TRANS, tq, tk, d, 1.0f, q_scaled, d, of(&a->k, pair, a->heads), a->k.row, 0.0f, s, tk);
    for (int64_t t = 0; bias && t < tq; t++) {
        float *row = s + t * tk;
        const float *bias_row = bias + t * a->bias.row;
        if (a->bias_column == 1)  /* (contiguous: a loop GCC vectorizes) */
            for (int64_t j = 0; j < tk; j++) row[j] += bias_row[j];
        else
            for (int64_t j = 0; j < tk; j++) row[j] += bias_row[j * a->bias_column];
    }
    if (((row_max_fn)a->row_max)(s, peaks, (size_t)tq, (size_t)tk))  /* a NaN or a zero max in some row */
        for (int64_t t = 0; t < tq; t++) peaks[t] = row_peak(s + t * tk, tk);
    for (int64_t t = 0; t < tq; t++) {
        float *row = s + t * tk, peak = peaks[t];
        if (bias && peak == -INFINITY) peak = 0.0f;  /* a row with no key left: exp(-inf) = 0, not NaN */
        for (int64_t j = 0; j < tk; j++) row[j] -= peak;
    }
    ((map_fn)a->exp)(s, s, (size_t)(tq * tk));
    for (int64_t t = 0; t < tq; t++) {
        float *row = s + t * tk, total = 0.0f + pairwise_sum(row, tk);
        if (bias && total == 0.0f) total = 1.0f;  /* that row's probabilities stay 0 */
        for (int64_t j = 0; j < tk; j++) row[j] /= total;
    }
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, tq, a->dv_width, tk, 1.0f, s, tk, of(&a->v, pair, a->heads), a->v.row, 0.0f,
          of(&a->out, pair, a->heads), a->out.row);
}

/* exercise 2.4's solution for one pair: dv = P^T g, dS = (g v^T - rowsum(g * out)) * P * scale, dq = dS k,
 * dk = dS^T q (scratch: dS, and one row of the products g * out) */
static void backward_pair(const attention_args *a, int64_t pair, float *ds, float *products) {
    const sgemm_fn sgemm = (sgemm_fn)a->sgemm;
    int64_t tq = a->tq, tk = a->tk, d = a->d, dv_width = a->dv_width, heads = a->heads;
    const float *p = of(&a->probs, pair, heads), *g = of(&a->g, pair, heads), *out = of(&a->out, pair, heads);
    sgemm(ROW_MAJOR, TRANS, NO_TRANS, tk, dv_width, tq, 1.0f, p, tk, g, a->g.row, 0.0f, of(&a->dv, pair, heads),
          a->dv.row);
    sgemm(ROW_MAJOR, NO_TRANS, TRANS, tq, tk, dv_width, 1.0f, g, a->g.row, of(&a->v, pair, heads), a->v.row, 0.0f,
          ds, tk);
    for (int64_t t = 0; t < tq; t++) {
        for (int64_t e = 0; e < dv_width; e++) products[e] = g[t * a->g.row + e] * out[t * a->out.row + e];
        float along = 0.0f + pairwise_sum(products, dv_width);  /* rowsum(dP * P) = rowsum(dO * O) */
        float *row = ds + t * tk;
        for (int64_t j = 0; j < tk; j++) row[j] = ((row[j] - along) * p[t * tk + j]) * a->scale;  /* (3 roundings) */
    }
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, tq, d, tk, 1.0f, ds, tk, of(&a->k, pair, heads), a->k.row, 0.0f,
          of(&a->dq, pair, heads), a->dq.row);
    sgemm(ROW_MAJOR, TRANS, NO_TRANS, tk, d, tq, 1.0f, ds, tk, of(&a->q, pair, heads), a->q.row, 0.0f,
          of(&a->dk, pair, heads), a->dk.row);
}

/* A block's scratch of `floats` floats; NULL, with `failed` raised for the caller to run the NumPy code, if none. */
static float *scratch(attention_args *a, int64_t floats) {
    float *memory = malloc((size_t)floats * sizeof(float));
    if (!memory) __atomic_store_n(&a->failed, 1, __ATOMIC_RELAXED);
    return memory;
}

/* The row kernels gemm_pool.c calls on a block of pairs [first, last) (pair = batch * heads + head). */
void ml_attention_forward_blocks(const void *arguments, int64_t first, int64_t last) {
    attention_args *a = (attention_args *)arguments;
    float *q_scaled = scratch(a, a->tq * a->d + a->tq);  /* (q scale, then the rows' peaks) */
    for (int64_t pair = first; q_scaled && pair < last; pair++) forward_pair(a, pair, q_scaled, q_scaled + a->tq * a->d);
    free(q_scaled);
}

void ml_attention_backward_blocks(const void *arguments, int64_t first, int64_t last) {
    attention_args *a = (attention_args *)arguments;
    float *ds = scratch(a, a->tq * a->tk + a->dv_width);  /* (dS, then one row of g * out) */
    for (int64_t pair = first; ds && pair < last; pair++) backward_pair(a, pair, ds, ds + a->tq * a->tk);
    free(ds);
}
