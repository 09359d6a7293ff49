"""Where the emulator's bounds check lets an index pass: the inner subscripts of a kernel's arrays, and __shared__'s.

Every build compiles the kernel with GCC's ``-fsanitize=bounds`` (emulator.py's _UB_CHECKS), so that an index past
an array whose size the compiler knows -- a thread's local array (``float w[8]; w[8] = ...``), a ``__constant__`` or
``__device__`` array -- stops the launch at its line (runtime.cpp's ``__ubsan_handle_out_of_bounds``).  On a GPU
such an index silently reads or overwrites another of the thread's variables (local memory), which
compute-sanitizer does not report either.  Two kinds of subscript are let through:

* an inner one: GCC checks each subscript of ``a[i][j]`` against its own dimension, but a GPU runs ``tile[i][32]``
  of a ``float tile[32][32]`` (it is ``tile[i + 1][0]``: the same object), and kernels written that way work there;
* one of a static ``__shared__`` array: the guard pages around a block's shared memory name an access past it
  better (the variable, its size, the byte), and only where it really leaves the array.

This module lists those places as GCC reports them -- the line (after ``#line`` markers) and the byte column of the
subscript's closing ``]``, or of the name of a macro whose body holds an inner subscript (GCC names a macro's
expansion by where it is used) -- for a table in the kernel's wrapper that the runtime searches.
"""
from __future__ import annotations

import bisect
import re

_LINE_MARKER = re.compile(r"[ \t]*#[ \t]*(?:line[ \t]+)?(\d+)\b")
_INNER_OPEN = re.compile(r"\]\s*\[")
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)", re.M)


def _presumed_lines(text: str) -> list[int]:
    """For each physical line of ``text`` (0-based), the line number GCC reports for it (0 for a line marker)."""
    numbers, current = [], 1
    for line in text.split("\n"):
        marker = _LINE_MARKER.match(line)
        if marker:
            numbers.append(0)
            current = int(marker.group(1))
            continue
        numbers.append(current)
        current += 1
    return numbers


def _closing_bracket(masked: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(masked)):
        if masked[i] == "[":
            depth += 1
        elif masked[i] == "]":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _macros_with_inner_subscripts(masked: str) -> tuple[set[str], list[tuple[int, int]]]:
    """The #defines whose body holds an inner subscript, and the (start, end) of every #define."""
    names, spans = set(), []
    for m in _DEFINE.finditer(masked):
        end = m.end()
        while True:  # the body's continued lines
            end = masked.find("\n", end)
            if end < 0 or not masked[:end].rstrip(" \t\r").endswith("\\"):
                break
            end += 1
        end = len(masked) if end < 0 else end
        spans.append((m.start(), end))
        if _INNER_OPEN.search(masked, m.end(), end):
            names.add(m.group(1))
    return names, spans


def _uses(masked: str, names, pattern: str = "") -> list[re.Match]:
    if not names:
        return []
    return list(re.finditer(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b" + pattern, masked))


def unchecked_subscripts(text: str, masked: str, shared_names=()) -> list[int]:
    """The sorted places ``line << 20 | column`` where ``text`` (``masked``: the same with comments and strings
    blanked) writes an inner subscript or one of the ``__shared__`` arrays ``shared_names``."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    presumed = _presumed_lines(text)

    def site(pos: int) -> int:
        row = bisect.bisect_right(line_starts, pos) - 1
        column = len(text[line_starts[row]:pos].encode("utf-8")) + 1
        return presumed[row] << 20 | column

    openings = [m.end() - 1 for m in _INNER_OPEN.finditer(masked)]
    # `tile[i]`, `s.rows[i]` of a __shared__ `tile` or struct `s`
    openings += [m.end() - 1 for m in _uses(masked, set(shared_names), r"\s*(?:\.\s*\w+\s*)*\[")]
    sites = {site(end) for end in map(lambda at: _closing_bracket(masked, at), openings) if end >= 0}
    macros, directives = _macros_with_inner_subscripts(masked)
    sites |= {site(m.start()) for m in _uses(masked, macros)
              if not any(start <= m.start() < end for start, end in directives)}
    return sorted(sites)


def table_source(sites: list[int]) -> str:
    """The wrapper's C++ table of ``sites``, which runtime.cpp's bounds-check hook searches."""
    values = ", ".join(f"{s}ull" for s in sites) or "0ull"
    return (f'extern "C" const unsigned long long __emu_unchecked_subscripts[] = {{{values}}};\n'
            f'extern "C" const int __emu_unchecked_subscript_count = {len(sites)};')
