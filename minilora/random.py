"""One seeded random-number generator for the whole library (init, dropout, sampling), drawing
torch's CPU numbers: ``manual_seed(0); randn(3)`` prints what ``torch.manual_seed(0); torch.randn(3)``
prints.

``minilora.manual_seed(seed)`` seeds ``default_generator`` (and returns it, as torch does). Seeds are
torch's: an integer in ``[-2**63, 2**64)``, a negative one standing for ``2**64 + seed``.

The engine is torch's CPU generator: the standard 32-bit Mersenne Twister (MT19937) seeded with the
seed's low 32 bits (``init_genrand``). NumPy's ``MT19937`` is the same engine; its ``random_raw``
draws the words in C, so whole arrays are drawn at NumPy speed. On top of it, ``Generator``'s
methods are torch's CPU distribution kernels (aten/src/ATen/core/DistributionsHelper.h,
TransformationHelper.h, native/cpu/DistributionTemplates.h), each drawing the same words in the
same order as torch:

- ``random_bits(n)`` / ``random64(n)``: torch's ``random()`` (one 32-bit word) / ``random64()``
  (two words, the first the high half), as uint64 arrays.
- ``uniform(shape, dtype, low, high)``: ``uniform_`` / ``rand`` (double: 53 bits of a random64;
  the others: 24 bits of a word, computed in float and rounded to the dtype).
- ``normal(shape, dtype, mean, std, contiguous=True)``: ``normal_`` / ``randn`` (16 or more
  contiguous elements: uniforms turned into normals by Box-Muller on blocks of 16; fewer, or a
  non-contiguous tensor: one Box-Muller pair of doubles at a time, the second kept for the next call).
- ``integers(shape, dtype, low, high)``: ``random_(low, high)`` / ``randint`` / ``random_()``.
- ``bernoulli(shape, p)``: ``bernoulli_(p)`` (a 53-bit double below ``p``; dropout's masks);
  ``bernoulli_tensor(probs)``: ``bernoulli_(p_tensor)`` / ``torch.bernoulli(probs)``.
- ``randperm(n)``, ``exponential``, ``cauchy``, ``log_normal``, ``geometric``, ``poisson``: torch's
  too (a Poisson rate past int64 gives torch's -2**63, but may draw another number of uniforms).

All return NumPy arrays in C (row-major) order of draws; a caller filling a non-contiguous tensor
passes the shape in its memory order (torch's iterator walks memory order):
``factories._drawn_in_memory_order(array, draw)`` does that. ``resolve(generator)`` is the generator
a ``generator=None`` call draws from; ``ops.nn.dropout_noise`` is torch's dropout mask; ``numpy()``
(and the module's ``generator()``) is NumPy's API on the same engine, for draws no torch call stands
for.

Exactness: every draw is bit for bit torch's. Where torch's compiled kernels use glibc's double
log/sin/cos/exp, minilora calls them through Python's math module (NumPy's vectorised ones differ in
the last bit now and then); where they fuse a multiply-add, minilora rounds once too (``_fma``,
``_fma32``); torch's float32 Box-Muller uses avx_mathfun's log and sincos, reproduced step by step
(that is torch on an x86 CPU with AVX2, as every current one; elsewhere, on Apple silicon say, torch's
scalar loop gives other last bits).
The price is speed: a float32 ``randn`` of 1M values takes a few times NumPy's ``standard_normal``,
a float64 one ten times (Python's math, value by value), a dropout mask about twice (two 32-bit words
per element, as torch draws them).
On ``cuda`` tensors torch draws from a Philox generator, which minilora does not reproduce: a draw
on the GPU is this CPU stream's numbers moved there, and the first such draw (or a ``Generator(device="cuda")``)
says so in a UserWarning (``note_cuda_draw``), once per process.
"""
import contextlib
import math
import warnings

import numpy as np

from . import dtypes
from .float32_math import CPU_CAPABILITY, FUSED_MULTIPLY_ADD
from .glibc_math import glibc_cosf, glibc_logf, glibc_sinf

_SEED_RANGE = 1 << 64
_MT_WORDS = 624  # MT19937's state: 624 32-bit words


def _seed_value(seed):
    """``seed`` (an int) as torch stores it: negatives wrapped to 64 bits; outside ``[-2**63, 2**64)``
    the ValueError torch raises."""
    if not -(1 << 63) <= seed < _SEED_RANGE:
        raise ValueError("Overflow when unpacking long long")  # (torch's words: the seed is outside [-2**63, 2**64))
    return seed % _SEED_RANGE


def _mt19937_key(seed32):
    """MT19937's ``init_genrand(seed32)`` state words (torch's ``mt19937::init_with_uint32``)."""
    key = [seed32]
    for j in range(1, _MT_WORDS):
        previous = key[-1]
        key.append((1812433253 * (previous ^ (previous >> 30)) + j) & 0xFFFFFFFF)
    return np.array(key, dtype=np.uint32)


_MASK_53 = np.uint64((1 << 53) - 1)
_MASK_24 = np.uint64((1 << 24) - 1)
_FLOAT_DIGITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
_TWO_PI = 2 * math.pi
_NORMAL_BLOCK = 16  # torch's normal_fill: Box-Muller on 16 values, pairs (j, j + 8)

# torch's generator state (CPUGeneratorImplState, 5056 bytes): the legacy THGenerator layout, then
# the cached float normal. The 624 words are stored as 64-bit numbers.
_STATE_LAYOUT = np.dtype([("seed", "<u8"), ("left", "<i4"), ("seeded", "<i4"), ("next", "<u8"),
                          ("words", "<u8", (_MT_WORDS,)), ("normal_x", "<f8"), ("normal_y", "<f8"),
                          ("normal_rho", "<f8"), ("normal_is_valid", "<i4"), ("pad", "<i4"),
                          ("next_float_normal", "<f4"), ("float_normal_is_valid", "u1"),
                          ("pad2", "u1", (3,))])
STATE_SIZE = _STATE_LAYOUT.itemsize  # 5056, as torch.get_rng_state().numel()


PHILOX_NOTE = ("torch draws a cuda tensor's random numbers from its CUDA generator (Philox), which minilora does "
               "not reproduce: minilora's cuda tensors get its CPU generator's numbers (torch's CPU numbers for the "
               "seed), so a seeded run on cuda draws other numbers than torch's on cuda")
_philox_noted = False


def note_cuda_draw(device):
    """Say once per process (a UserWarning) that a draw made for a ``cuda`` tensor is not torch's cuda numbers:
    minilora cannot match them, and says so rather than differ silently."""
    global _philox_noted
    if not _philox_noted and str(device).startswith("cuda"):
        _philox_noted = True
        warnings.warn(PHILOX_NOTE, stacklevel=3)


class Generator:
    """``torch.Generator()`` on the CPU: torch's MT19937 engine and its distribution algorithms (see
    the module's docstring). ``randn(..., generator=g)`` draws from ``g``, the rest from
    ``default_generator``."""

    def __init__(self, device="cpu"):
        self.device = device
        note_cuda_draw(device)
        self.manual_seed(67280421310721)  # torch's default seed, so initial_seed() reads as torch's

    # ---- seeding and state ----------------------------------------------------------------------
    def manual_seed(self, seed):
        """A Python int only, as torch's ``Generator.manual_seed`` (``minilora.manual_seed`` takes
        anything ``int()`` takes)."""
        if isinstance(seed, np.integer):
            raise TypeError("an integer is required")
        if type(seed) is not int:
            kind = type(seed).__name__ if type(seed).__module__ == "builtins" else \
                f"{type(seed).__module__.split('.')[0]}.{type(seed).__name__}"
            raise RuntimeError(f"manual_seed expected a long, but got {kind}")
        self._seed = _seed_value(seed)
        self._engine = np.random.MT19937()
        self._engine.state = {"bit_generator": "MT19937",
                              "state": {"key": _mt19937_key(self._seed & 0xFFFFFFFF), "pos": _MT_WORDS}}
        self._numpy = np.random.Generator(self._engine)
        self._next_double_normal = None  # torch's cached second Box-Muller sample (reset by a seed)
        self._next_float_normal = None
        return self  # torch returns the generator: g = torch.Generator().manual_seed(42)

    def seed(self):
        """Seed from the operating system's entropy (non-deterministic); returns the 64-bit seed."""
        seed = int(np.random.SeedSequence().entropy) % _SEED_RANGE
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The state as torch's ``get_state()`` bytes (5056 uint8, the same layout: a state taken from
        torch's generator can be set here, and the other way round)."""
        state = np.zeros((), _STATE_LAYOUT)
        engine = self._engine.state["state"]
        position = int(engine["pos"])
        state["seed"], state["seeded"], state["words"] = self._seed, 1, engine["key"]
        state["left"], state["next"] = _MT_WORDS + 1 - position, position % _MT_WORDS
        if self._next_double_normal is not None:
            state["normal_is_valid"], state["normal_y"] = 1, self._next_double_normal
        if self._next_float_normal is not None:
            state["float_normal_is_valid"], state["next_float_normal"] = 1, self._next_float_normal
        return _as_state_tensor(np.frombuffer(state.tobytes(), np.uint8).copy())

    def set_state(self, state):
        """Restore a state from ``get_state`` (minilora's or torch's: a uint8 tensor or array)."""
        raw = _state_bytes(state)
        fields = np.frombuffer(raw, _STATE_LAYOUT)[0]
        left = int(fields["left"])
        if not 1 <= left <= _MT_WORDS + 1 or np.any(fields["words"] > 0xFFFFFFFF):
            raise RuntimeError("Invalid mt19937 state")
        self._seed = int(fields["seed"])
        self._engine.state = {"bit_generator": "MT19937",
                              "state": {"key": fields["words"].astype(np.uint32), "pos": _MT_WORDS + 1 - left}}
        self._next_double_normal = float(fields["normal_y"]) if fields["normal_is_valid"] else None
        self._next_float_normal = float(fields["next_float_normal"]) if fields["float_normal_is_valid"] else None
        return self

    def clone_state(self):
        """A new Generator in this one's state (torch's ``clone_state``): both draw the same numbers next."""
        return Generator(self.device).set_state(self.get_state())

    def get_offset(self):
        raise RuntimeError(self._no_offset())

    def set_offset(self, offset):
        raise RuntimeError(self._no_offset())

    def _no_offset(self):
        """An offset is Philox's (torch's CUDA generator): torch's CPU one refuses it in these words; a cuda
        Generator here is that CPU engine too (Philox is not reproduced), so it says so rather than pretend."""
        if str(self.device).startswith("cuda"):
            return ("minilora's cuda Generator is torch's CPU generator (MT19937): torch's CUDA Philox "
                    "generator, whose offset this is, is not reproduced")
        return "CPU Generator does not use offset"

    def graphsafe_get_state(self):
        raise NotImplementedError("graphsafe_get_state is not supported in this Generator")

    def graphsafe_set_state(self, state):
        raise NotImplementedError("graphsafe_set_state is not supported in this Generator")

    # ---- raw words --------------------------------------------------------------------------------
    def random_bits(self, n):
        """``n`` draws of torch's ``random()``: 32-bit words (as uint64)."""
        return self._engine.random_raw(int(n))

    def random64(self, n):
        """``n`` draws of torch's ``random64()``: two words each, the first the high half."""
        words = self.random_bits(2 * int(n))
        return (words[0::2] << np.uint64(32)) | words[1::2]

    def _unit_doubles(self, n):
        """``n`` uniform doubles in [0, 1): 53 bits of a random64 each (uniform_real_distribution<double>)."""
        return (self.random64(n) & _MASK_53).astype(np.float64) * 2.0 ** -53

    def _unit_floats(self, n):
        """``n`` uniform floats in [0, 1): 24 bits of a word each (uniform_real_distribution<float>)."""
        return (self.random_bits(n) & _MASK_24).astype(np.float32) * np.float32(2.0 ** -24)

    # ---- continuous distributions ----------------------------------------------------------------
    def uniform(self, shape, dtype=np.float32, low=0.0, high=1.0):
        """``uniform_(low, high)``: ``u * (high - low) + low`` (one fused multiply-add, as torch's
        compiled kernel) with ``u`` 53 bits of a random64 for double, else 24 bits of a word in float,
        rounded to the dtype; a 16-bit value that rounds up to ``high`` becomes
        ``low``, as torch keeps the range half-open."""
        dtype, n = np.dtype(dtype), math.prod(shape)
        if dtype == np.float64:
            return _fma(self._unit_doubles(n), float(high) - float(low), float(low)).reshape(shape)
        low32, high32 = np.float32(low), np.float32(high)
        if FUSED_MULTIPLY_ADD:  # fmaf(u, width, low): the float product is exact in double, so one rounding remains
            values = (self._unit_floats(n).astype(np.float64) * float(high32 - low32) + float(low32)).astype(np.float32)
        else:  # (torch's "default" build: two roundings)
            values = self._unit_floats(n) * (high32 - low32) + low32
        if dtype == np.float32:
            return values.reshape(shape)
        values, (low16, high16) = dtypes.cast(values, dtype), (dtypes.cast(np.array(v), dtype) for v in (low32, high32))
        return np.where(values == high16, low16, values).reshape(shape)

    def normal(self, shape, dtype=np.float32, mean=0.0, std=1.0, contiguous=True):
        """``normal_(mean, std)`` / ``randn``: torch's ``normal_fill`` for 16 or more contiguous
        elements, else its one-at-a-time Box-Muller of doubles (with the cached second sample)."""
        dtype, n = np.dtype(dtype), math.prod(shape)
        if n >= _NORMAL_BLOCK and contiguous:
            return self._normal_fill(n, dtype, mean, std).reshape(shape)
        return dtypes.cast(_fma(self._normal_doubles(n), float(std), float(mean)), dtype).reshape(shape)

    def _normal_fill(self, n, dtype, mean, std):
        """torch's ``normal_fill``: ``n`` uniforms of the dtype, Box-Muller on each block of 16 (a last
        partial block: 16 fresh uniforms that overwrite the tensor's last 16 values)."""
        draw = self._unit_doubles if dtype == np.float64 else self._unit_floats  # (16-bit: in float)
        work = np.dtype(np.float64 if dtype == np.float64 else np.float32)
        whole = n - n % _NORMAL_BLOCK
        # float16/bfloat16 (a kernel of its own) draw only the whole blocks' uniforms before the tail's
        values = draw(n) if dtype.itemsize >= 4 else np.concatenate([draw(whole), np.zeros(n - whole, np.float32)])
        values[:whole] = _box_muller_blocks(values[:whole], work, mean, std)
        if whole != n:
            values[n - _NORMAL_BLOCK:] = _box_muller_blocks(draw(_NORMAL_BLOCK), work, mean, std)
        return dtypes.cast(values, dtype)

    def _normal_doubles(self, n):
        """``n`` draws of torch's ``normal_distribution<double>``: each Box-Muller pair of uniforms
        ``(u1, u2)`` gives ``r cos(theta)`` now and keeps ``r sin(theta)`` for the next draw."""
        out = []
        if n and self._next_double_normal is not None:
            out.append(self._next_double_normal)
            self._next_double_normal = None
        pairs = (n - len(out) + 1) // 2
        if pairs:
            uniforms = self._unit_doubles(2 * pairs).tolist()
            for u1, u2 in zip(uniforms[0::2], uniforms[1::2]):  # (glibc's log/cos/sin: torch's own)
                radius, theta = math.sqrt(-2.0 * math.log1p(-u2)), _TWO_PI * u1
                out += (radius * math.cos(theta), radius * math.sin(theta))
            if len(out) > n:
                self._next_double_normal = out.pop()
        return np.array(out, np.float64)

    def exponential(self, shape, lambd=1.0):
        """``exponential_(lambd)`` in double: ``-1/lambd * log1p(-u)`` (the caller casts to its dtype)."""
        uniforms = self._unit_doubles(math.prod(shape))
        return (-1.0 / float(lambd) * _libm(math.log1p, -uniforms)).reshape(shape)

    def cauchy(self, shape, median=0.0, sigma=1.0):
        """``cauchy_(median, sigma)`` in double: ``median + sigma * tan(pi * (u - 0.5))``."""
        uniforms = self._unit_doubles(math.prod(shape))
        return (float(median) + float(sigma) * _libm(math.tan, np.pi * (uniforms - 0.5))).reshape(shape)

    def log_normal(self, shape, mean=1.0, std=2.0):
        """``log_normal_(mean, std)`` in double: ``exp(normal * std + mean)``, one normal at a time."""
        return _libm(math.exp, _fma(self._normal_doubles(math.prod(shape)), float(std), float(mean))).reshape(shape)

    def geometric(self, shape, p):
        """``geometric_(p)`` in double: ``ceil(log(u) / log1p(-p))`` (trials up to the first success)."""
        uniforms = self._unit_doubles(math.prod(shape))
        return np.ceil(_libm(math.log, uniforms) / math.log1p(-float(p))).reshape(shape)  # (u = 0: inf)

    def poisson(self, rates):
        """``torch.poisson(rates)`` (an array of doubles): torch's CPU sampler, element by element
        in index order: below 10 a product of uniforms against ``exp(-rate)``; from 10 on Hoermann's
        transformed rejection (PTRS), each try drawing two uniform doubles."""
        rates = np.asarray(rates, np.float64)
        return np.array([self._poisson_one(rate) for rate in rates.ravel().tolist()],
                        np.float64).reshape(rates.shape)

    def _poisson_one(self, rate):
        uniform = lambda: float(self._unit_doubles(1)[0])  # noqa: E731
        if rate == 0:
            return 0
        if rate < 10:
            limit, count, product = math.exp(-rate), 0, 1.0
            while True:
                product *= uniform()
                if product <= limit:
                    return count
                count += 1
        root, log_rate = math.sqrt(rate), math.log(rate)
        b = 0.931 + 2.53 * root
        a = -0.059 + 0.02483 * b
        inverse_alpha, vr = 1.1239 + 1.1328 / (b - 3.4), 0.9277 - 3.6224 / (b - 2)
        while True:
            u, v = uniform() - 0.5, uniform()
            us = 0.5 - abs(u)
            x = (2 * a / us + b) * u + rate + 0.43
            k = math.floor(x) if -2.0 ** 63 <= x < 2.0 ** 63 else -2 ** 63  # (C's int64 cast of a huge or nan x)
            if us >= 0.07 and v <= vr:
                return k
            if k < 0 or (us < 0.013 and v > us):
                continue
            if math.log(v) + math.log(inverse_alpha) - math.log(a / (us * us) + b) <= \
                    -rate + k * log_rate - math.lgamma(k + 1):
                return k

    # ---- discrete distributions ------------------------------------------------------------------
    def integers(self, shape, dtype, low, high):
        """``random_(low, high)`` / ``randint``: ``word % (high - low) + low``, the word a random64 for
        a range of 2**28 or more (torch 2.13's threshold, measured; it keeps the modulo's bias small),
        else a 32-bit one; the full int64 range: the random64 itself."""
        dtype, n, span = np.dtype(dtype), math.prod(shape), int(high) - int(low)
        if span == 1 << 64:  # random_(-2**63) / random_(-2**63, None): every int64
            return dtypes.cast(self.random64(n).view(np.int64), dtype).reshape(shape)
        words = self.random64(n) if span >= 1 << 28 else self.random_bits(n)
        values = (words % np.uint64(span)).astype(np.int64) + np.int64(low) if span < 1 << 63 else \
            ((words % np.uint64(span)) + np.uint64(int(low) % (1 << 64))).view(np.int64)
        return dtypes.cast(values, dtype).reshape(shape)

    def random_(self, shape, dtype):
        """``random_()``: ``word % (top + 1)`` with top the dtype's largest integer (2**digits for a
        float dtype), a random64 for int64 and double; ``word & 1`` for bool."""
        dtype, n = np.dtype(dtype), math.prod(shape)
        words = self.random64(n) if dtype.name in ("int64", "float64") else self.random_bits(n)
        if dtype.kind == "b":
            return (words & np.uint64(1)).astype(bool).reshape(shape)
        top = (1 << _FLOAT_DIGITS[dtype.name]) if dtype.name in _FLOAT_DIGITS else int(np.iinfo(dtype).max)
        return dtypes.cast((words % np.uint64(top + 1)).astype(np.int64), dtype).reshape(shape)

    def bernoulli(self, shape, p):
        """``bernoulli_(p)`` (p a number) and dropout's mask: a 53-bit uniform double below ``p``
        (bool array). torch 2.13 draws this on every CPU (measured on an Intel CPU with MKL: its
        older MKL stream is not used)."""
        n, p = math.prod(shape), float(p)
        if not 0 < p < 1:  # (all or nothing; the words are drawn all the same)
            self.random_bits(2 * n)
            return np.full(shape, p >= 1)
        # u = m * 2**-53 < p  <=>  m < ceil(p * 2**53), m the random64's low 53 bits: compared as
        # (high 21 bits of the first word, second word) without building the 64-bit numbers
        threshold = math.ceil(p * 2.0 ** 53)
        words = self.random_bits(2 * n).reshape(n, 2)
        high = words[:, 0] & np.uint64(0x1FFFFF)
        keep = high < np.uint64(threshold >> 32)
        ties = np.flatnonzero(high == np.uint64(threshold >> 32))
        keep[ties] = words[ties, 1] < np.uint64(threshold & 0xFFFFFFFF)
        return keep.reshape(shape)

    def bernoulli_tensor(self, probs):
        """``bernoulli_(p_tensor)`` / ``torch.bernoulli(probs)``: per element a uniform below its
        probability: a 53-bit double for float64 probabilities, a 24-bit float for the others."""
        probs = np.asarray(probs)
        if probs.dtype == np.float64:
            return self._unit_doubles(probs.size).reshape(probs.shape) < probs
        return self._unit_floats(probs.size).reshape(probs.shape) < probs.astype(np.float32)

    def randperm(self, n):
        """``randperm(n)``: torch's CPU shuffle (int64 array). Below 2**32 / 20 a Fisher-Yates swap of
        ``i`` with ``i + random() % (n - i)``; from there an inside-out shuffle of random64 draws."""
        if n < _RANDPERM_SMALL_N:
            indices = list(range(n))
            for i, word in enumerate(self.random_bits(max(n - 1, 0)).tolist()):
                j = i + word % (n - i)
                indices[i], indices[j] = indices[j], indices[i]
            return np.array(indices, np.int64)
        indices = np.empty(n, np.int64)
        for i, word in enumerate(self.random64(n).tolist()):
            j = word % (i + 1)
            indices[i], indices[j] = indices[j], i
        return indices

    # ---- NumPy's API on the same engine ----------------------------------------------------------
    def numpy(self):
        """A ``numpy.random.Generator`` drawing from this generator's engine (NumPy's algorithms on
        the same stream), for draws torch has no counterpart of."""
        return self._numpy


_RANDPERM_SMALL_N = (2 ** 32 - 1) // 20  # torch switches to 64-bit draws from here on


def _fma(a, b, c, fused=None):
    """``a * b + c`` rounded once, as the fused multiply-add torch's compiled ``normal`` transformation
    uses: the product's rounding error recovered exactly (Dekker's split), then added back. (Exact
    but for a double rounding of the two error terms, which only a near tie can expose.) torch's
    "default" build fuses none of these (two roundings; ``fused`` None: as the build does)."""
    a = np.asarray(a, np.float64)
    fused = FUSED_MULTIPLY_ADD if fused is None else fused
    if c == 0 or b == 1 or not fused:  # (a * b or a + c: one rounding either way)
        return a * b + c
    product = a * b
    a_high, b_high = _split_high(a), _split_high(np.float64(b))
    a_low, b_low = a - a_high, b - b_high
    product_error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    total = product + c
    virtual = total - product
    sum_error = (product - (total - virtual)) + (c - virtual)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(total), total + (sum_error + product_error), total)


def _split_high(x):
    """The high 26 bits of ``x`` (Veltkamp's split), so that high * high is exact."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x * 134217729.0  # 2**27 + 1
        return scaled - (scaled - x)


def _libm(function, values):
    """``function`` (one of Python's math functions: glibc's, so torch's own) of each value: NumPy's
    vectorised float64 log/exp/sin/cos differ from glibc's in the last bit now and then."""
    flat = values.ravel().tolist()
    try:
        return np.fromiter(map(function, flat), np.float64, len(flat))
    except (ValueError, OverflowError):  # (where C answers inf or nan, Python raises)
        return np.array([_c_answer(function, v) for v in flat], np.float64)


def _c_answer(function, value):
    try:
        return function(value)
    except (ValueError, OverflowError):
        with np.errstate(all="ignore"):
            return float(getattr(np, function.__name__)(value))


def _box_muller_blocks(values, dtype, mean, std):
    """torch's ``normal_fill_16`` on each block of 16 uniforms: ``u1 = 1 - v[j]``, ``u2 = v[j + 8]``
    (j < 8) give ``r cos(theta)`` at j and ``r sin(theta)`` at j + 8, scaled by std and shifted by mean
    in one fused multiply-add (in every build: torch 2.13's "default" one too, measured, though it
    leaves uniform_'s and the one-at-a-time normal's multiply-adds unfused)."""
    blocks = values.reshape(-1, 2, _NORMAL_BLOCK // 2)
    if dtype == np.float64:  # torch's scalar loop: glibc's log/cos/sin, as Python's math module
        radius = np.sqrt(-2.0 * _libm(math.log, 1.0 - blocks[:, 0])).reshape(-1, 8)
        theta = _TWO_PI * blocks[:, 1]
        cos, sin = (_libm(f, theta).reshape(-1, 8) for f in (math.cos, math.sin))
        out = np.stack([radius * cos, radius * sin], 1)
        return _fma(out, float(std), float(mean), fused=True).reshape(-1)
    # float32 (and float16/bfloat16, computed in float and rounded by the caller), all in float
    f32 = np.float32
    if CPU_CAPABILITY == "default":  # torch's scalar loop: theta = 2pi u2 in double, C's logf, cosf, sinf
        radius = np.sqrt(f32(-2) * glibc_logf(f32(1) - blocks[:, 0]))
        theta = (_TWO_PI * blocks[:, 1].astype(np.float64)).astype(f32)
        sin, cos = glibc_sinf(theta), glibc_cosf(theta)
    else:  # torch's AVX2 kernel (its AVX-512 build runs it too): theta = 2pi (a float) u2, avx_mathfun's
        radius = np.sqrt(f32(-2) * _cephes_log(f32(1) - blocks[:, 0]))
        sin, cos = _cephes_sincos(f32(_TWO_PI) * blocks[:, 1])
    out = np.stack([radius * cos, radius * sin], 1)
    # fmadd(n, std, mean): the float product is exact in double, rounded once with the sum
    return (out if std == 1 and mean == 0 else _fma32(out, f32(std), f32(mean))).reshape(-1)


# torch's float32 normal_fill computes log, sin and cos with avx_mathfun.h (Julien Pommier's AVX port
# of the Cephes float routines), compiled with fused multiply-adds where GCC contracts them: the
# polynomial steps and the two marked below. Reproduced step by step in float32, bit for bit.
_LOG_POLYNOMIAL = [7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
                   -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1]
_SIN_POLYNOMIAL = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1]
_COS_POLYNOMIAL = [2.443315711809948E-005, -1.388731625493765E-003, 4.166664568298827E-002]


def _fma32(a, b, c):
    """Float32 ``a * b + c`` rounded once: the product is exact in double (a double rounding of the sum
    could only differ at a float tie, far rarer than anything a test sees)."""
    if not np.ndim(c) and c == 0:  # (a * b alone: one rounding in float)
        return np.float32(b) * a if b != 1 else np.asarray(a, np.float32)
    exact = np.asarray(a).astype(np.float64)
    exact *= b
    exact += c
    return exact.astype(np.float32)


def _polynomial32(coefficients, x):
    result = np.full(x.shape, np.float32(coefficients[0]))
    for coefficient in coefficients[1:]:
        result = _fma32(result, x, np.float32(coefficient))
    return result


def _cephes_log(x):
    """avx_mathfun's ``log256_ps`` (x > 0): x = m 2**e with m in [sqrt(1/2), sqrt(2)), then a
    polynomial in m - 1."""
    f32 = np.float32
    word = np.maximum(x, f32(np.finfo(f32).tiny)).view(np.int32)
    exponent = ((word >> 23) - 0x7F).astype(f32) + f32(1)
    x = ((word & ~0x7F800000) | 0x3F000000).view(f32)  # the mantissa in [0.5, 1)
    small = x < f32(0.707106781186547524)
    exponent = exponent - small.astype(f32)
    x = (x - f32(1)) + np.where(small, x, f32(0))
    z = x * x
    y = _polynomial32(_LOG_POLYNOMIAL, x) * x
    y = _fma32(y, z, exponent * f32(-2.12194440e-4))  # (contracted: y * z + e * q1)
    y = y - z * f32(0.5)
    return (x + y) + exponent * f32(0.693359375)


def _cephes_sincos(x):
    """avx_mathfun's ``sincos256_ps``: x reduced by multiples of pi/4 (in three parts), then the sine
    and cosine polynomials, swapped and signed by the octant. Returns (sin, cos)."""
    f32 = np.float32
    sin_sign = x.view(np.int32) & np.int32(-2 ** 31)
    x = np.abs(x)
    octant = (x * f32(1.27323954473516)).astype(np.int32)
    octant = (octant + 1) & ~1
    y = octant.astype(f32)
    sin_sign = sin_sign ^ ((octant & 4) << 29)
    cos_sign = (~(octant - 2) & 4) << 29
    use_sin = (octant & 2) == 0
    x = (x + y * f32(-0.78515625)) + y * f32(-2.4187564849853515625e-4)  # (y, a small even number,
    x = _fma32(y, f32(-3.77489497744594108e-8), x)                         # times these is exact)
    z = x * x
    cos = _polynomial32(_COS_POLYNOMIAL, z) * z
    cos = _fma32(cos, z, -(z * f32(0.5))) + f32(1)  # (contracted: cos * z - z / 2)
    sin = _fma32(_polynomial32(_SIN_POLYNOMIAL, z) * z, x, x)
    sin, cos = np.where(use_sin, sin, cos), np.where(use_sin, cos, sin)
    return (sin.view(np.int32) ^ sin_sign).view(f32), (cos.view(np.int32) ^ cos_sign).view(f32)


def _state_bytes(state):
    """A state's 5056 bytes from a uint8 tensor (minilora's or torch's), array or bytes; a clear
    error for anything else (an older minilora's NumPy dict among them)."""
    if isinstance(state, dict):
        raise ValueError("this random-generator state is from an older minilora, which drew NumPy's "
                         "PCG64 stream; minilora now draws torch's MT19937 stream and cannot continue "
                         "that one: seed again (manual_seed) instead of restoring it")
    if not hasattr(state, "numpy") and not isinstance(state, (np.ndarray, bytes)):  # (torch's argument parser)
        raise TypeError(f"expected a torch.ByteTensor, but got {type(state).__name__}")
    array = state.numpy() if hasattr(state, "numpy") else np.frombuffer(state, np.uint8) \
        if isinstance(state, bytes) else np.asarray(state)
    if array.dtype != np.uint8:
        raise TypeError("RNG state must be a torch.ByteTensor")
    if array.size != STATE_SIZE:
        raise RuntimeError(f"Expected a CPUGeneratorImplState of size {STATE_SIZE} but found the input RNG state "
                           f"size to be {array.size}")
    return array.tobytes()


def _as_state_tensor(array):
    """A state's bytes as ``get_state`` returns them: factories.py makes this a uint8 Tensor (torch
    returns a ByteTensor); a plain NumPy array until then."""
    return _STATE_WRAPPER(array)


_STATE_WRAPPER = np.asarray


# The library's generator. Seeded 0 at import (torch's starts at a seed of the operating system's):
# minilora's unseeded runs draw the stream of seed 0, the same on every run.
default_generator = Generator().manual_seed(0)


def manual_seed(seed):
    """Reset the global generator: the same seed gives the same inits, dropout masks and samples.
    Returns ``default_generator``, as torch."""
    return default_generator.manual_seed(int(seed))


def seed():
    """``torch.seed()``: seed the global generator non-deterministically; returns the seed."""
    return default_generator.seed()


def initial_seed():
    """The seed the global generator was last seeded with (``torch.initial_seed()``)."""
    return default_generator.initial_seed()


def resolve(generator=None):
    """The minilora Generator a draw uses: ``generator`` or the global one."""
    return default_generator if generator is None else generator


def thread_safe_generator():
    """``torch.random.thread_safe_generator()``: a thread worker's own generator, else None (the global
    one). minilora's DataLoader workers are torch's process workers, so None, as torch answers there."""
    return None


def generator():
    """A ``numpy.random.Generator`` on the global generator's engine (NumPy's algorithms, the same
    stream): for draws that stand for no torch call."""
    return default_generator.numpy()


def fresh_seed():
    """A 63-bit seed drawn from the global generator (for ops that take an explicit seed)."""
    return int(default_generator.random64(1)[0] >> np.uint64(1))


def get_rng_state():
    """The global generator's state (``torch.get_rng_state``, torch's 5056 bytes): hand it to
    ``set_rng_state`` to replay the same draws (gradient checkpointing replays a layer's dropout
    masks this way)."""
    return default_generator.get_state()


def set_rng_state(state):
    """Restore a state from ``get_rng_state`` (or torch's ``get_rng_state()``)."""
    default_generator.set_state(state)


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices", device_type=None):
    """``torch.random.fork_rng``: what the block draws (a ``manual_seed`` in it too) leaves the global
    generator as it was before the block. minilora has one generator for every device, so ``devices``
    and ``device_type`` change nothing."""
    if not enabled:
        yield
        return
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
