/* A pool of threads that runs lists of BLAS products on blocks of rows, without Python's GIL.
 *
 * minilora.parallel splits work between Python threads. Each NumPy call in a block gives the GIL up and
 * takes it back; when the other thread holds it just then, the caller sleeps and is woken, and so is a
 * helper handed a block: on a KVM guest each such wake-up costs ~20 us to the thread that wakes and
 * ~30 us of latency to the one woken (2 vCPUs of an Intel Xeon: a split region of two 280 us products
 * took ~420 us, not ~290). A LoRA layer's block is 3 products forward and 5 backward, so its threads
 * meet at the GIL several times per block.
 *
 * Here the whole block -- its list of products (or a large elementwise add, or a compiled row kernel: an
 * RMSNorm's rows) -- runs in C. ``ml_pool_run`` is called through ctypes
 * (which gives the GIL up once for the whole call); the calling thread runs block 0 and each worker
 * thread its own block. Workers spin on a counter for a while after a job (``spin_ns``) before they
 * sleep, as OpenMP's workers do in PyTorch: the next layer's job usually comes within that time, and a
 * spinning worker starts within a microsecond. Each product is the same CBLAS call on the same block
 * of rows that minilora/ops/lora.py's NumPy code makes, so the numbers are the same to the bit.
 *
 * The hand-over: a job is published by bumping ``generation``. A block runs in the one thread that
 * claims it (``claimed[block]`` raised to the job's generation); the caller runs its own block, then every
 * block nobody has claimed yet (a worker that is slow to start, or asleep), waits for the blocks that
 * workers run, and before it returns raises every ``claimed`` to the job's generation: a worker that
 * wakes late for that job can claim nothing, so no thread reads a job's arrays after the caller
 * returned and Python freed them, and no block runs twice.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#define MAX_WORKERS 63
#define MAX_OPS 8

typedef void (*sgemm_fn)(int, int, int, int64_t, int64_t, int64_t, float, const void *, int64_t, const void *,
                         int64_t, float, void *, int64_t);
typedef void (*dgemm_fn)(int, int, int, int64_t, int64_t, int64_t, double, const void *, int64_t, const void *,
                         int64_t, double, void *, int64_t);

enum { ROW_MAJOR = 101, NO_TRANS = 111 };
enum { SPLIT_ROWS = 0,  /* block i computes rows [n i / parts, n (i+1) / parts) of C (rows of op(A)) */
       SPLIT_SUM = 1,   /* block i sums over k in that range into its own partial C: c + i * c_part */
       SCALE_ROWS = 2,  /* block i multiplies those rows of C by alpha (no product: M, N give C's shape) */
       WHOLE = 3,       /* the whole product, in block ``block`` only (products that run side by side) */
       ADD_ROWS = 4,    /* c = a + b over block i's elements of flat arrays, or its rows of N elements (no product) */
       MULTIPLY_ROWS = 5, /* c = a * b, likewise */
       ROW_KERNEL = 6     /* kernel(kernel_args, first, last): a compiled function of another library on the block's rows */
};

/* A row kernel computes rows [first, last) of an op from the arguments it is handed (its own struct). */
typedef void (*row_kernel_fn)(const void *args, int64_t first, int64_t last);

/* One product C = alpha op(A) op(B) + beta C, as CBLAS (row-major) takes it, and how blocks split it. */
typedef struct {
    int64_t split, is_double, trans_a, trans_b;
    int64_t M, N, K, lda, ldb, ldc, c_part, block;
    double alpha, beta;
    char *a, *b, *c;
    void *kernel, *kernel_args;  /* (ROW_KERNEL only) */
} ml_product;

typedef struct {
    void *sgemm, *dgemm;
    int64_t n_ops, rows, parts;
    ml_product ops[MAX_OPS];
} ml_job;

static ml_job *job;
static int64_t job_parts;  /* job->parts, read before a claim (job itself only after one) */
static unsigned job_control;  /* the caller's read_control(), published with the job */
static int64_t generation, blocks_done, claimed[MAX_WORKERS + 1];
static int workers, sleepers;
static int running;  /* 1 while a thread is inside ml_pool_start or ml_pool_run (``enter``) */
static int64_t spin_ns = 50000;  /* (set by ml_pool_start: gemm_pool.SPIN_US) */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The caller's MXCSR bits that change the numbers -- flush-to-zero, denormals-are-zero, rounding (as
 * cpu_switches.CONTROL_BITS) -- for its job's blocks: MXCSR is per thread, and a worker keeps what it had
 * when it started, so after torch.set_flush_denormal(True) a worker's rows came out unflushed. */
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
#define CSR_CONTROL 0xE040u
static unsigned read_control(void) { return __builtin_ia32_stmxcsr() & CSR_CONTROL; }
static void follow_control(unsigned wanted) {
    unsigned now = __builtin_ia32_stmxcsr();
    if ((now & CSR_CONTROL) != wanted) __builtin_ia32_ldmxcsr((now & ~CSR_CONTROL) | wanted);
}
#else
static unsigned read_control(void) { return 0; }
static void follow_control(unsigned wanted) { (void)wanted; }
#endif

static void pause_cpu(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Operand offsets: the first row of op(A) (or of C), and the k-th term of the sum. */
static char *a_row(const ml_product *p, int64_t i, int64_t size) {
    return p->a + (p->trans_a == NO_TRANS ? i * p->lda : i) * size;
}
static char *a_term(const ml_product *p, int64_t k, int64_t size) {
    return p->a + (p->trans_a == NO_TRANS ? k : k * p->lda) * size;
}
static char *b_term(const ml_product *p, int64_t k, int64_t size) {
    return p->b + (p->trans_b == NO_TRANS ? k * p->ldb : k) * size;
}

static void gemm(const ml_job *j, const ml_product *p, int64_t M, int64_t K, const char *a, const char *b, char *c) {
    if (p->is_double)
        ((dgemm_fn)j->dgemm)(ROW_MAJOR, (int)p->trans_a, (int)p->trans_b, M, p->N, K, p->alpha, a, p->lda, b,
                             p->ldb, p->beta, c, p->ldc);
    else
        ((sgemm_fn)j->sgemm)(ROW_MAJOR, (int)p->trans_a, (int)p->trans_b, M, p->N, K, (float)p->alpha, a, p->lda,
                             b, p->ldb, (float)p->beta, c, p->ldc);
}

/* NumPy's add / multiply of two flat arrays, on elements [first, last) -- or rows [first, last) of N elements each,
 * where N is not 1 (arrays of a job's rows): IEEE operations, the same numbers. c may be a (in place). */
static void elementwise(const ml_product *p, int64_t first, int64_t last) {
    int add = p->split == ADD_ROWS;
    if (p->N != 1) {
        first *= p->N;
        last *= p->N;
    }
    if (p->is_double) {
        const double *a = (const double *)p->a, *b = (const double *)p->b;
        double *c = (double *)p->c;
        for (int64_t i = first; i < last; i++) c[i] = add ? a[i] + b[i] : a[i] * b[i];
    } else {
        const float *a = (const float *)p->a, *b = (const float *)p->b;
        float *c = (float *)p->c;
        for (int64_t i = first; i < last; i++) c[i] = add ? a[i] + b[i] : a[i] * b[i];
    }
}

static void scale_rows(const ml_product *p, int64_t first, int64_t last) {
    for (int64_t i = first; i < last; i++) {
        if (p->is_double) {
            double *row = (double *)(p->c + i * p->ldc * 8);
            for (int64_t k = 0; k < p->N; k++) row[k] = row[k] * p->alpha;
        } else {  /* NumPy's float32 multiply: the scale rounded to float32 once, each product rounded */
            float *row = (float *)(p->c + i * p->ldc * 4), s = (float)p->alpha;
            for (int64_t k = 0; k < p->N; k++) row[k] = row[k] * s;
        }
    }
}

/* Block ``part`` of every product of the job, in order (a later product may read an earlier one's rows). */
static void run_block(const ml_job *j, int64_t part) {
    int64_t first = j->rows * part / j->parts, last = j->rows * (part + 1) / j->parts;
    if (last == first) return;
    for (int64_t o = 0; o < j->n_ops; o++) {
        const ml_product *p = &j->ops[o];
        int64_t size = p->is_double ? 8 : 4;
        if (p->split == ROW_KERNEL) {
            ((row_kernel_fn)p->kernel)(p->kernel_args, first, last);
        } else if (p->split == WHOLE) {
            if (p->block == part) gemm(j, p, p->M, p->K, p->a, p->b, p->c);
        } else if (p->split == ADD_ROWS || p->split == MULTIPLY_ROWS)
            elementwise(p, first, last);
        else if (p->split == SCALE_ROWS)
            scale_rows(p, first, last);
        else if (p->split == SPLIT_ROWS)
            gemm(j, p, last - first, p->K, a_row(p, first, size), p->b, p->c + first * p->ldc * size);
        else
            gemm(j, p, p->M, last - first, a_term(p, first, size), b_term(p, first, size),
                 p->c + part * p->c_part * size);
    }
}

/* 1 for the one thread that runs this block of job ``gen``; 0 once it is taken or the job is over. */
static int claim(int64_t part, int64_t gen) {
    int64_t before = __atomic_load_n(&claimed[part], __ATOMIC_ACQUIRE);
    while (before < gen)
        if (__atomic_compare_exchange_n(&claimed[part], &before, gen, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
    return 0;
}

static int64_t wait_for_job(int64_t seen) {
    int64_t gen, until = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {  /* spin first: a job usually follows within spin_ns */
        gen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (gen != seen) return gen;
        pause_cpu();
        if ((i & 63) == 0) {  /* now and then: let another thread ready on this core run (a Python helper) */
            if (now_ns() > until) break;
            sched_yield();
        }
    }
    pthread_mutex_lock(&mutex);  /* then sleep; see ml_pool_run for why no wake-up is lost */
    __atomic_add_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
    while ((gen = __atomic_load_n(&generation, __ATOMIC_SEQ_CST)) == seen) pthread_cond_wait(&wake, &mutex);
    __atomic_sub_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mutex);
    return gen;
}

static int64_t first_seen[MAX_WORKERS + 1];  /* the generation when each worker was started */

static void *worker(void *arg) {
    int64_t me = (int64_t)(intptr_t)arg, seen = first_seen[me];  /* jobs before it was started are not its */
    for (;;) {
        seen = wait_for_job(seen);
        if (me < __atomic_load_n(&job_parts, __ATOMIC_ACQUIRE) && claim(me, seen)) {
            follow_control(job_control);
            run_block(job, me);  /* (claimed: the caller waits for this block, so the job is alive) */
            __atomic_add_fetch(&blocks_done, 1, __ATOMIC_ACQ_REL);
        }
    }
    return 0;
}

/* A forked child has only the thread that forked: no workers, and the locks as they were then. */
static void after_fork_in_child(void) {
    workers = sleepers = running = 0;  /* (the forking thread is not inside ml_pool_run) */
    pthread_mutex_init(&mutex, NULL);
    pthread_cond_init(&wake, NULL);
}

/* One thread at a time in ml_pool_start and ml_pool_run: minilora.parallel's region lock orders its callers,
 * and a second caller (gemm_pool.run from two threads) is refused -- 0 here -- rather than mixed into the job
 * in flight (its reset of blocks_done, its claims closing the other's blocks: a hang, or rows never written). */
static int enter(void) {
    int idle = 0;
    return __atomic_compare_exchange_n(&running, &idle, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static void leave(void) { __atomic_store_n(&running, 0, __ATOMIC_RELEASE); }

static int start_workers(int count, int64_t spin);

/* Start worker threads until there are ``count`` (never stopped: they sleep when idle). 0 on success,
 * EBUSY while another thread is in the pool (the workers there are run its blocks; the caller runs the rest). */
int ml_pool_start(int count, int64_t spin) {
    if (!enter()) return EBUSY;
    int failed = start_workers(count, spin);
    leave();
    return failed;
}

static int start_workers(int count, int64_t spin) {
    static int fork_handler;
    if (!fork_handler) fork_handler = !pthread_atfork(NULL, NULL, after_fork_in_child);
    spin_ns = spin;
    if (count > MAX_WORKERS) count = MAX_WORKERS;
    while (workers < count) {
        first_seen[workers + 1] = generation;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, worker, (void *)(intptr_t)(workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) return failed;
        workers++;
    }
    return 0;
}

int ml_pool_workers(void) { return workers; }

int ml_pool_max_ops(void) { return MAX_OPS; }

int ml_pool_max_blocks(void) { return MAX_WORKERS + 1; }  /* (gemm_pool.MAX_BLOCKS checks it at load) */

/* Run ``j`` on its ``parts`` blocks: block 0 here, block i on worker i (or here, if it is slow to start); 0.
 * Refused (1, nothing done) where the job does not fit -- more blocks than ``claimed`` has slots
 * (set_num_threads(65)), more products than ``ops`` -- or another thread is in the pool (``enter``): the caller
 * then runs its NumPy code. */
int ml_pool_run(ml_job *j) {
    if (j->parts < 1 || j->parts > MAX_WORKERS + 1 || j->n_ops < 0 || j->n_ops > MAX_OPS || !enter())
        return 1;
    int64_t gen = generation + 1, ran_here = 0;
    job = j;
    job_control = read_control();
    __atomic_store_n(&job_parts, j->parts, __ATOMIC_RELEASE);
    __atomic_store_n(&blocks_done, 0, __ATOMIC_SEQ_CST);
    /* A sleeping worker counted itself in ``sleepers`` before it last read ``generation``: either it sees
     * the new value, or this load sees it counted and the broadcast wakes it. */
    __atomic_store_n(&generation, gen, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&mutex);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&mutex);
    }
    for (int64_t part = 0; part < j->parts; part++)  /* its own block, then any nobody has taken */
        if (claim(part, gen)) {
            run_block(j, part);
            ran_here++;
        }
    for (unsigned i = 1; __atomic_load_n(&blocks_done, __ATOMIC_ACQUIRE) < j->parts - ran_here; i++) {
        pause_cpu();  /* the blocks workers took */
        if ((i & 63) == 0) sched_yield();
    }
    for (int64_t part = 0; part < j->parts || part <= workers; part++) claim(part, gen);  /* the job is over */
    leave();
    return 0;
}
