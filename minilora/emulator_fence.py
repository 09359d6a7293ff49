"""Argument arrays fenced like a GPU's allocations, so that a kernel's out-of-bounds access is named, not fatal.

A kernel that writes a few elements past the end of a NumPy array (the classic off-by-one of a missing
``if (i < n)``) would write into the host's heap: the malloc bookkeeping next to the array, which Python trips
over later ("corrupted size vs. prev_size", the process aborts).  On a GPU the same bug lands in the allocation's
padding or faults, and compute-sanitizer names it.  So for each launch (except ``sanitize=True``, whose child
process checks every access) the arrays are copied into fresh memory laid out as

    [ guard page: no access ][ ... | the array, 16-byte aligned | slack ][ guard page ]

and what the kernel changed is copied back after the launch.  An access that reaches a guard page stops the
launch with a KernelFault at its source line (the runtime's SIGSEGV report), which this module rewrites to name
the argument and how far past its end (or before its start) the access was.  The bytes still mapped around the
copy -- from the first guard page to the array's start, and the slack after an odd-sized array -- are marked in a
shadow as AddressSanitizer's (``fence_shadow``) that the kernel's loads check inline under ``memcheck=True``
(opt-in: emulator.py's _fence_checks; the racecheck and lockstep builds check loads and stores always, in
runtime.cpp's fence_check), so a read there is a KernelFault at its line, as
compute-sanitizer's memcheck reports it (on a GPU without it, such a read returns the allocation's padding or a
neighbour's bytes silently).  Those bytes are also filled with a pattern, so a write there is found after the
launch and named, without a line.  Pointer tables are followed into the fenced copies (``FencedArguments``),
and so are the addresses ``__device__`` variables and arrays of structs hold, pointed back at the arrays after the
launch (a pointer one launch saves, a linked list's ``next``, is valid in the next, as on a GPU).
The unit fenced is the allocation, as memcheck's: a view's whole base array (a kernel given ``x[2:]`` may read
``x[0]``, as on a GPU), one copy for arguments that share memory, so aliasing is kept.  Arrays above 256 MiB run
in place, unfenced.  The fresh memory is a pool of mappings kept from launch to launch (mapping and protecting
pages anew cost a small launch a millisecond; the copies cost it about 50 us).
"""
from __future__ import annotations

import ctypes
import mmap
import platform
import re
import sys
import threading

import numpy as np

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value

_PAGE = mmap.PAGESIZE
# A copy ends at the guard page less its size rounded up to 16 bytes, so a read even one element past the end
# is usually a fault naming it, and starts aligned to the lowest set bit of that rounded size: 16 bytes at least,
# what any load in the emulator needs (float4, double2, int4, a wmma pointer as checked, cp.async), and
# cudaMalloc's 256 where the size is a multiple of 256.  (On a GPU the rest of the 256 is the allocation's
# padding, where a read returns garbage silently; only compute-sanitizer names it.)
_ALIGN = 16
_SLACK_BYTE = 0xCD
_LIMIT = 1 << 28  # allocations above 256 MiB are not copied: they run in place, unfenced


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _allocation(a: np.ndarray) -> tuple[int, int]:
    """[start, end) of the memory the array is part of: its base array's, else its own."""
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    if base.base is None and base.flags.forc:  # an array that owns its (contiguous) memory
        return base.ctypes.data, base.ctypes.data + base.nbytes
    return a.ctypes.data, a.ctypes.data + a.nbytes


class _Mappings:
    """Fenced mappings kept for the next launches: mapping and fencing memory (mmap, mprotect, munmap) costs a
    process whose emulator threads have run a TLB shootdown each time, a millisecond for a small launch, where
    reusing a mapping costs a copy.  Up to 64 MiB are kept, the most recently released first."""

    _KEEP = 64 << 20

    def __init__(self):
        self.free: dict[int, list[int]] = {}  # mapping size -> bases
        self.kept = 0
        self.lock = threading.Lock()

    def take(self, size: int) -> int:
        with self.lock:
            if self.free.get(size):
                self.kept -= size
                return self.free[size].pop()
        base = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, _MAP_FAILED):
            raise MemoryError(f"the emulator could not map {size} bytes for a kernel argument")
        _libc.mprotect(base, _PAGE, 0)
        _libc.mprotect(base + size - _PAGE, _PAGE, 0)
        return base

    def give_back(self, base: int, size: int) -> None:
        with self.lock:
            if self.kept + size <= self._KEEP:
                self.free.setdefault(size, []).append(base)
                self.kept += size
                return
        _libc.munmap(base, size)


_mappings = _Mappings()

# The shadow of the fences' mapped bytes, as AddressSanitizer's: one byte per 8 bytes of the 47-bit address space
# (16 TiB reserved, never committed: only the pages holding marks are touched), at a fixed address that the
# kernels' inline checks are compiled with (emulator.py's _fence_checks).  A byte is 0 where all 8 are
# addressable, k (1-7) where the first k are, negative where none is.
_SHADOW_BASE, _SHADOW_SIZE = 1 << 44, 1 << 44
_SHADOW_BLOCKED = -1  # a shadow byte for bytes next to an array (ASan's heap redzone value, 0xfa)
_MAP_NORESERVE, _MAP_FIXED_NOREPLACE = 0x4000, 0x100000
_shadow: list = []  # [base or None], once per process


def fence_shadow() -> int | None:
    """The shadow's base address, reserving it on first use; None where it cannot be (not x86-64 Linux, the
    range taken, no overcommit): then kernels are built without the checks."""
    if not _shadow:
        base = None
        if platform.machine() in ("x86_64", "AMD64") and sys.platform.startswith("linux"):
            got = _libc.mmap(_SHADOW_BASE, _SHADOW_SIZE, mmap.PROT_READ | mmap.PROT_WRITE,
                             mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE | _MAP_FIXED_NOREPLACE, -1, 0)
            if got == _SHADOW_BASE:
                base = got
            elif got not in (None, _MAP_FAILED):  # an old kernel ignores MAP_FIXED_NOREPLACE: elsewhere is no use
                _libc.munmap(got, _SHADOW_SIZE)
        _shadow.append(base)
    return _shadow[0]


def _mark(lo: int, hi: int, blocked: bool) -> None:
    """Mark [lo, hi) in the shadow as not addressable (or addressable again); lo may be mid-granule, the bytes
    before it in its granule addressable, hi ends a granule (a guard page, or the 16-aligned data)."""
    base = fence_shadow()
    if base is None or hi <= lo:
        return
    first, last = lo >> 3, (hi - 1) >> 3
    if lo & 7:
        ctypes.memset(base + first, (lo & 7) if blocked else 0, 1)
        first += 1
    if last >= first:
        ctypes.memset(base + first, (_SHADOW_BLOCKED & 0xFF) if blocked else 0, last - first + 1)


class _Region:
    """One fenced copy: the original bytes [start, end) at [data, data + size) inside a mapping whose first and
    last pages are inaccessible, the data ending within 16 bytes of the last."""

    def __init__(self, start: int, end: int):
        self.start, self.size = start, end - start
        self.padded = _round_up(max(self.size, 1), _ALIGN)
        self.reached = False  # written through a pointer table: copied back whatever the arguments' constness
        self.map_bytes = 2 * _PAGE + _round_up(self.padded, _PAGE)
        self.base = _mappings.take(self.map_bytes)
        self.guard_after = self.base + self.map_bytes - _PAGE
        self.data = self.guard_after - self.padded
        ctypes.memmove(self.data, self.start, self.size)
        self.initial = ctypes.string_at(self.start, self.size)
        for lo, hi in self.spans():  # the pattern shows a write there after the launch; the shadow, a read at once
            ctypes.memset(lo, _SLACK_BYTE, hi - lo)
            _mark(lo, hi, blocked=True)

    def spans(self) -> list[tuple[int, int]]:
        """The mapped bytes around the data, which no access may touch: from the front guard page to the data's
        start, and the slack after its end."""
        return [(lo, hi) for lo, hi in ((self.base + _PAGE, self.data), (self.data + self.size, self.guard_after))
                if hi > lo]

    def written(self) -> tuple[int, int]:
        """How many bytes before the data (up to the first guard page) and of the slack after it differ from the
        pattern (0, 0: none written)."""
        def changed(lo: int, hi: int) -> int:
            return hi - lo - ctypes.string_at(lo, hi - lo).count(_SLACK_BYTE)
        return changed(self.base + _PAGE, self.data), changed(self.data + self.size, self.guard_after)

    def release(self, copy_back: bool) -> None:
        """Copy back the bytes the kernel changed, and only those: a kernel may also write the original memory
        through addresses it was handed inside an array (minilora's AdamW reads a table of parameter addresses,
        and passes a parameter as an unused argument), and those writes must stay."""
        if copy_back:
            fenced = np.frombuffer((ctypes.c_char * self.size).from_address(self.data), np.uint8)
            changed = fenced != np.frombuffer(self.initial, np.uint8)
            if changed.any():
                original = np.frombuffer((ctypes.c_char * self.size).from_address(self.start), np.uint8)
                original[changed] = fenced[changed]
        for lo, hi in self.spans():
            _mark(lo, hi, blocked=False)
        _mappings.give_back(self.base, self.map_bytes)


class FencedArguments:
    """The pointer arguments of one launch moved into fenced copies: ``arrays`` (index, staged view) and the
    pointer to put in each argument's slot.  ``release()`` copies back what the kernel may have written and
    returns a message for a write into an allocation's slack, ``explain()`` names the argument behind a fault.

    ``arrays`` may name an argument more than once: a pointer table (``float* const* tensors``) given as a list
    of arrays comes as the table first and then each array it points to.  ``tables`` are the arguments whose
    elements are addresses (pointer tables, and ``const unsigned long long*`` tables as kernels/adamw.cu's):
    for the launch, an address inside a fenced allocation is redirected to its fenced copy (and restored after),
    so a write through the table past an array's end is named too; other addresses are followed unfenced.
    ``holders`` are arguments whose elements may hold addresses among other data (arrays of structs, a written
    ``unsigned long long*``): an address inside a fenced allocation points at its copy for the launch, and an
    address inside a copy -- one the kernel stored, a linked list's ``next`` -- points back at the allocation
    after it, so the pointers a launch leaves in an array stay valid for the next, as device pointers do."""

    def __init__(self, arrays: list, names: dict[int, str], writable: set[int], tables: set[int] = frozenset(),
                 holders: set[int] = frozenset()):
        self.writable = writable
        self.regions: list[tuple[_Region, list[int]]] = []  # each region with the positions (in arrays) inside it
        self.arrays, self.pointers, self._extents, self._names = [], {}, {}, names
        self._index = {pos: i for pos, (i, _) in enumerate(arrays)}  # position -> argument index
        self._tables: list[tuple[np.ndarray, np.ndarray]] = []  # (fenced entries, their original addresses)
        self._holders: list[np.ndarray] = []  # uint64 views of the staged copies of `holders`
        first = {}
        for pos, (i, _) in enumerate(arrays):
            first.setdefault(i, pos)
        self._first = first
        spans = sorted((*_allocation(a), pos) for pos, (_, a) in enumerate(arrays) if a.nbytes and a.nbytes <= _LIMIT)
        groups: list[list] = []
        for start, end, pos in spans:
            if groups and start < groups[-1][1]:  # overlaps the previous allocation: the same memory
                groups[-1][1] = max(groups[-1][1], end)
                groups[-1][2].append(pos)
            else:
                groups.append([start, end, [pos]])
        staged = {}
        try:
            for start, end, members in groups:
                if end - start > _LIMIT:
                    continue
                region = _Region(start, end)
                self.regions.append((region, members))
                for pos in members:
                    i, a = arrays[pos]
                    pointer = region.data + (a.ctypes.data - start)
                    if first[i] == pos:
                        self.pointers[i] = pointer
                    view = (ctypes.c_char * a.nbytes).from_address(pointer)
                    staged[pos] = np.frombuffer(view, a.dtype).reshape(a.shape)
                    self._extents[pos] = (pointer, pointer + a.nbytes)
            for i in tables:
                if i in first and first[i] in staged:
                    self._redirect(staged[first[i]])
            for i in holders - set(tables):
                view = staged.get(first.get(i))
                if view is not None and view.nbytes % 8 == 0 and view.ctypes.data % 8 == 0:
                    words = view.reshape(-1).view(np.uint8).view(np.uint64)
                    self._translate(words, to_copies=True)
                    self._holders.append(words)
        except BaseException:
            self.release()
            raise
        self.arrays = [(i, staged.get(pos, a)) for pos, (i, a) in enumerate(arrays)]

    def _label(self, pos: int) -> str:
        """How a message names the array at position `pos`: the argument, or one array of a table argument."""
        i = self._index[pos]
        k = pos - self._first[i]
        return f"argument {i} ('{self._names[i]}')" if k == 0 else \
            f"array {k - 1} of the table argument {i} ('{self._names[i]}')"

    def _redirect(self, table: np.ndarray) -> None:
        """Point the table's addresses that lie inside a fenced allocation (its end included, as C allows) at
        the fenced copy; those allocations are copied back after the launch, written through the table."""
        if table.dtype.itemsize != 8 or not self.regions:
            return
        entries = table.reshape(-1).view(np.uint64)
        originals = entries.copy()
        if self._translate(entries, to_copies=True):
            self._tables.append((entries, originals))

    def _translate(self, words: np.ndarray, to_copies: bool) -> bool:
        """Move the addresses among `words` (uint64, in place) that lie inside an allocation (its end included)
        into its fenced copy, or (to_copies=False) inside a copy back into the allocation; whether any moved.  A
        region reached this way is copied back after the launch: the kernel may write through it."""
        if not self.regions:
            return False
        starts = np.array([r.start for r, _ in self.regions], np.uint64)
        datas = np.array([r.data for r, _ in self.regions], np.uint64)
        sizes = np.array([r.size for r, _ in self.regions], np.uint64)
        froms, tos = (starts, datas) if to_copies else (datas, starts)
        # Most words (counts, hashes, a table's other addresses) lie outside every region: two comparisons find the
        # few that may not, before the search (it made a launch on an 8 MB unsigned long long array 2x slower).
        at = np.flatnonzero((words >= froms.min()) & (words <= (froms + sizes).max()))
        if not at.size:
            return False
        candidates = words[at]
        order = np.argsort(froms)
        found = np.searchsorted(froms[order], candidates, side="right") - 1
        inside = found >= 0
        which = order[np.where(inside, found, 0)]
        inside &= (candidates != 0) & (candidates - froms[which] <= sizes[which])
        if not inside.any():
            return False
        words[at[inside]] = tos[which[inside]] + (candidates[inside] - froms[which[inside]])
        for r in set(which[inside].tolist()):
            self.regions[r][0].reached = True
        return True

    def follow_globals(self, words: list) -> None:
        """The __device__ variables that may hold pointers (uint64 views): an address inside an argument's
        allocation -- a pointer a previous launch saved there -- points at the fenced copy for this launch, so it
        aliases the argument as on a GPU."""
        for w in words:
            self._translate(w, to_copies=True)

    def unfollow_globals(self, words: list) -> None:
        """After the launch, before the copies go: an address inside a fenced copy (one the kernel stored, `saved =
        in;`, or one follow_globals put there) points back into the allocation, which stays valid for the next
        launches as a device pointer stays valid while its array lives."""
        for w in words:
            self._translate(w, to_copies=False)

    def release(self) -> str | None:
        """Copy the regions back (those holding an argument the kernel may write) and unmap them."""
        for entries, originals in self._tables:  # the table as it was, so that no fenced address is copied back
            entries[:] = originals
        self._tables = []
        for words in self._holders:  # before any copy goes: addresses into the copies point at the arrays again
            self._translate(words, to_copies=False)
        self._holders = []
        problem = None
        for region, members in self.regions:
            before, after = region.written()
            if (before or after) and problem is None:
                if after:
                    where = max(members, key=lambda pos: self._extents[pos][1])
                    what = f"past the end of {self._label(where)}: {after} of the {region.padded - region.size} " \
                           f"bytes after"
                else:
                    where = min(members, key=lambda pos: self._extents[pos][0])
                    what = f"before the start of {self._label(where)}: {before} of the " \
                           f"{region.data - region.base - _PAGE} bytes before"
                problem = (f"out-of-bounds write {what} its allocation ({region.size} bytes) were written (on a "
                           "GPU: the allocation's padding, or another allocation); launch with sanitize=True to "
                           "name the line")
            region.release(copy_back=region.reached or any(self._index[pos] in self.writable for pos in members))
        self.regions = []
        return problem

    def explain(self, message: str) -> str:
        """A fault report whose address lies in a guard page or a fence's mapped bytes, with the argument and
        the distance named."""
        m = re.search(r"at address 0x([0-9a-f]+) \(([^)]*)\)", message)
        if not m:
            return message
        address = int(m.group(1), 16)
        for region, members in self.regions:
            if region.data + region.size <= address < region.guard_after + _PAGE:
                pos = max(members, key=lambda k: self._extents[k][1])
                where = f"{address - self._extents[pos][1]} bytes past the end of {self._label(pos)}"
            elif region.base <= address < region.data:
                pos = min(members, key=lambda k: self._extents[k][0])
                where = f"{self._extents[pos][0] - address} bytes before the start of {self._label(pos)}"
            else:
                continue
            return message[:m.start(2)] + f"out of bounds: {where}, an allocation of {region.size} bytes" + \
                message[m.end(2):]
        return message
