"""torch's CPU ``sort`` and ``topk`` orders, ties included.

ATen sorts (value, index) pairs with libstdc++'s algorithms (``std::sort``; for topk ``std::partial_sort``, or
``std::nth_element`` then ``std::sort``), which are not stable: among equal values (and NaNs) the order they
leave is a consequence of their steps. NumPy's sorts leave another order, so ``torch.sort(x).indices`` of a
row with ties past 16 elements differed. The only way to give torch's indices is to run the same algorithms
on the same pairs under the same comparisons: ``native/std_sort.cpp`` calls them (C++), and ``_StdAlgorithms``
below is the Python port of libstdc++'s steps, run where no C++ compiler is found (same indices, slowly).

    sort_order(keys, descending)           # (rows, n) keys -> (rows, n) int64 indices
    topk_order(keys, k, largest, sorted)   # (rows, n) keys -> (rows, k) int64 indices
    kthvalue_index(keys, k), mode_index(keys)  # (rows, n) keys -> (rows,) int64 indices

kthvalue runs ATen's own quickselect (``quick_select_template``), mode ``std::sort`` under the plain ``a < b``.
"""
import ctypes
import functools
from pathlib import Path

import numpy as np

from . import native
from .dtypes import is_floating

__all__ = ["sort_order", "topk_order", "kthvalue_index", "mode_index", "nth_among_equals"]

_SOURCE = Path(__file__).with_name("native") / "std_sort.cpp"
_library = None


def _lib():
    global _library
    if _library is None:
        _library = native.load(_SOURCE) or False  # (False: tried, none)
    return _library or None


def _as_keys(keys):
    """``keys`` as float32, float64 or int64 C-ordered rows: each other dtype converts exactly (16-bit floats
    to float32, integers and bools to int64), so comparisons, ties and NaNs are the same."""
    if keys.dtype in (np.float32, np.float64, np.int64):
        return np.ascontiguousarray(keys)
    if is_floating(keys.dtype):  # (float16, and bfloat16: NumPy kind "V")
        return np.ascontiguousarray(keys, dtype=np.float32)
    return np.ascontiguousarray(keys, dtype=np.int64)


def _compiled(name, keys, *numbers, out):
    """Run std_sort.cpp's ``<name>_<dtype>(keys, numbers..., out)``; False where it is not available."""
    lib = _lib()
    if lib is None:
        return False
    numbers = [ctypes.c_int64(int(v)) for v in numbers]
    function = getattr(lib, f"{name}_{keys.dtype.name}")
    function(ctypes.c_void_p(keys.ctypes.data), *numbers, ctypes.c_void_p(out.ctypes.data))
    return True


def sort_order(keys, descending):
    """The indices that sort each row of the 2-D ``keys`` as ``torch.sort(stable=False)`` on the CPU."""
    keys = _as_keys(keys)
    rows, n = keys.shape
    order = np.empty((rows, n), np.int64)
    if _compiled("sort", keys, rows, n, descending, out=order):
        return order
    for r in range(rows):
        algorithms = _StdAlgorithms(keys[r].tolist(), descending)
        algorithms.sort(0, n)
        order[r] = algorithms.a
    return order


def topk_order(keys, k, largest, sorted):  # noqa: A002  (torch's name)
    """The indices ``torch.topk(keys, k, largest=, sorted=)`` gives for each row of the 2-D ``keys`` (k >= 1)."""
    keys = _as_keys(keys)
    rows, n = keys.shape
    out = np.empty((rows, k), np.int64)
    if _compiled("topk", keys, rows, n, k, largest, sorted, out=out):
        return out
    for r in range(rows):
        algorithms = _StdAlgorithms(keys[r].tolist(), descending=largest)
        if k * 64 <= n:
            algorithms.partial_sort(0, k, n)
        else:
            algorithms.nth_element(0, k - 1, n)
            if sorted:
                algorithms.sort(0, k - 1)
        out[r] = algorithms.a[:k]
    return out


def kthvalue_index(keys, k):
    """The index ``torch.kthvalue(keys, k)`` gives for each row of the 2-D ``keys`` (1 <= k <= n): ATen's own
    quickselect (``quick_select_template``, Sedgewick's partition with a median of three) run to position
    ``k - 1`` under "greater, or NaN", on a copy of the row; among ties, whichever index it leaves there."""
    keys = _as_keys(keys)
    rows, n = keys.shape
    out = np.empty(rows, np.int64)
    if _compiled("kthvalue", keys, rows, n, k - 1, out=out):
        return out
    for r in range(rows):
        out[r] = _quick_select(keys[r].tolist(), k - 1)
    return out


def mode_index(keys):
    """The index ``torch.mode(keys)`` gives for each row of the 2-D ``keys``: ATen sorts the (value, index)
    pairs with ``std::sort`` under the values' plain ``a < b`` (NaN unordered: each NaN its own run) and takes
    the last pair of the first longest run of equal values."""
    keys = _as_keys(keys)
    rows, n = keys.shape
    out = np.empty(rows, np.int64)
    if _compiled("mode", keys, rows, n, out=out):
        return out
    for r in range(rows):
        algorithms = _StdAlgorithms(keys[r].tolist(), descending=False, nan_last=False)
        algorithms.sort(0, n)
        out[r] = _last_of_longest_run([algorithms.keys[i] for i in algorithms.a], algorithms.a)
    return out


@functools.lru_cache(maxsize=64)
def nth_among_equals(n, nth):
    """The index ``std::nth_element`` leaves at position ``nth`` of ``0..n-1`` when no element is less than another:
    ``torch.nanmedian(dim=)``'s index for a row that is all NaN (its comparator orders no NaN before another)."""
    algorithms = _StdAlgorithms([float("nan")] * n, descending=False, nan_last=False)
    algorithms.nth_element(0, nth, n)
    return algorithms.a[nth]


def _last_of_longest_run(values, indices):
    """mode's scan over the sorted pairs: the index ending the first run of equal values longest of all."""
    run = longest = pick = 0
    for j, value in enumerate(values):
        run += 1
        if j == len(values) - 1 or value != values[j + 1]:
            if run > longest:
                pick, longest = indices[j], run
            run = 0
    return pick


def _greater_or_nan(x, y):
    return (x != x and y == y) or x > y


def _quick_select(values, k):
    """ATen's ``quick_select_template`` (native/std_sort.cpp's kthvalue_rows) on the list ``values``: the original
    index of the element it leaves at position ``k``."""
    pairs, gt = [[v, i] for i, v in enumerate(values)], _greater_or_nan
    low, high = 0, len(pairs) - 1
    while high > low:
        if high == low + 1:
            if gt(pairs[low][0], pairs[high][0]):
                pairs[low], pairs[high] = pairs[high], pairs[low]
            break
        middle = (low + high) >> 1  # the median of three, as the pivot, at low
        pairs[middle], pairs[low + 1] = pairs[low + 1], pairs[middle]
        for a, b in ((low + 1, high), (low, high), (low + 1, low)):
            if gt(pairs[a][0], pairs[b][0]):
                pairs[a], pairs[b] = pairs[b], pairs[a]
        i, j, pivot = low + 1, high, pairs[low][0]
        while True:
            i += 1
            while gt(pivot, pairs[i][0]):
                i += 1
            j -= 1
            while gt(pairs[j][0], pivot):
                j -= 1
            if j < i:
                break
            pairs[i], pairs[j] = pairs[j], pairs[i]
        pairs[low], pairs[j] = pairs[j], pairs[low]
        if j <= k:
            low = i
        if j >= k:
            high = j - 1
    return pairs[k][1]


class _StdAlgorithms:
    """libstdc++'s ``std::sort``, ``std::partial_sort`` and ``std::nth_element`` on the index list ``a``
    (``0..n-1``), comparing ``keys[i]`` as ATen's comparators do: ``a < b`` with NaN after every number, or
    descending ``a > b`` with NaN before (checked against torch on arrays full of ties and NaNs); with
    ``nan_last=False`` the plain ``a < b`` (mode's: a NaN is neither less nor greater than anything)."""

    THRESHOLD = 16  # libstdc++'s _S_threshold: runs this short are left to the final insertion sort

    def __init__(self, keys, descending, nan_last=True):
        self.a, self.keys, self.descending, self.nan_last = list(range(len(keys))), keys, descending, nan_last

    def _less(self, i, j):
        x, y = self.keys[i], self.keys[j]
        if self.descending:
            return (x != x and y == y) or x > y
        return (self.nan_last and x == x and y != y) or x < y

    # -- std::sort: introsort to runs of 16, then one insertion sort ------------------------------------
    def sort(self, lo, hi):
        if hi - lo < 2:
            return
        self._introsort(lo, hi, 2 * ((hi - lo).bit_length() - 1))
        if hi - lo > self.THRESHOLD:
            self._insertion(lo, lo + self.THRESHOLD)
            self._unguarded_insertion(lo + self.THRESHOLD, hi)
        else:
            self._insertion(lo, hi)

    def _introsort(self, lo, hi, depth):
        while hi - lo > self.THRESHOLD:
            if depth == 0:
                self.partial_sort(lo, hi, hi)  # (heapsort)
                return
            depth -= 1
            cut = self._partition_pivot(lo, hi)
            self._introsort(cut, hi, depth)
            hi = cut

    def _partition_pivot(self, lo, hi):
        self._median_to_first(lo, lo + 1, lo + (hi - lo) // 2, hi - 1)
        return self._partition(lo + 1, hi, lo)

    def _insertion(self, lo, hi):
        a = self.a
        for i in range(lo + 1, hi):
            v = a[i]
            if self._less(v, a[lo]):
                a[lo + 1:i + 1] = a[lo:i]
                a[lo] = v
            else:
                self._shift_into_place(v, i)

    def _unguarded_insertion(self, lo, hi):
        for i in range(lo, hi):
            self._shift_into_place(self.a[i], i)

    def _shift_into_place(self, v, j):
        a = self.a
        while self._less(v, a[j - 1]):
            a[j] = a[j - 1]
            j -= 1
        a[j] = v

    def _median_to_first(self, result, x, y, z):
        a, less = self.a, self._less
        if less(a[x], a[y]):
            pick = y if less(a[y], a[z]) else z if less(a[x], a[z]) else x
        elif less(a[x], a[z]):
            pick = x
        else:
            pick = z if less(a[y], a[z]) else y
        a[result], a[pick] = a[pick], a[result]

    def _partition(self, lo, hi, pivot):
        a, less = self.a, self._less
        while True:
            while less(a[lo], a[pivot]):
                lo += 1
            hi -= 1
            while less(a[pivot], a[hi]):
                hi -= 1
            if not lo < hi:
                return lo
            a[lo], a[hi] = a[hi], a[lo]
            lo += 1

    # -- std::partial_sort: a heap of the first mid - lo, the rest sifted through it, then sorted ---------
    def partial_sort(self, lo, mid, hi):
        self._heap_select(lo, mid, hi)
        while mid - lo > 1:  # std::__sort_heap
            mid -= 1
            self._pop_heap(lo, mid, mid)

    def _heap_select(self, lo, mid, hi):
        a = self.a
        for parent in range((mid - lo - 2) // 2, -1, -1):  # std::__make_heap
            self._adjust_heap(lo, parent, mid - lo, a[lo + parent])
        for i in range(mid, hi):
            if self._less(a[i], a[lo]):
                self._pop_heap(lo, mid, i)

    def _pop_heap(self, lo, hi, result):
        a = self.a
        value, a[result] = a[result], a[lo]
        self._adjust_heap(lo, 0, hi - lo, value)

    def _adjust_heap(self, first, hole, length, value):
        a, less = self.a, self._less
        top = child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if less(a[first + child], a[first + child - 1]):
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and less(a[first + parent], value):
            a[first + hole] = a[first + parent]
            hole, parent = parent, (parent - 1) // 2
        a[first + hole] = value

    # -- std::nth_element: introselect down to 3 elements, then insertion sort -----------------------
    def nth_element(self, lo, nth, hi):
        if lo == hi or nth == hi:
            return
        depth = 2 * ((hi - lo).bit_length() - 1)
        while hi - lo > 3:
            if depth == 0:
                self._heap_select(lo, nth + 1, hi)
                self.a[lo], self.a[nth] = self.a[nth], self.a[lo]
                return
            depth -= 1
            cut = self._partition_pivot(lo, hi)
            if cut <= nth:
                lo = cut
            else:
                hi = cut
        self._insertion(lo, hi)
