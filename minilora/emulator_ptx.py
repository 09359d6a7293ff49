"""Inline PTX on the CPU emulator: the asm statements public CUDA code is full of, translated to C++.

Kernels written by others read special registers (``%laneid``, ``%warpid``, ``%smid``), load through the
read-only path (``ld.global.nc.v4.f32``), pack and convert 16-bit values (``cvt.rn.bf16x2.f32``,
``mov.b32 %0, {%1, %2}``) and do bit tricks (``lop3.b32``, ``prmt.b32``, ``bfe``, ``shf``) in one-line
asm statements.  Each such statement is rewritten, on its own line(s), into a C++ block over 64-bit
"registers" that carry each operand's bits: an input ``"r"(x)`` is copied in by its bytes, an output
``"=r"(y)`` copied back, and every instruction reads the bits as its type suffix says (``.f32``: a float,
``.s32``: a signed int, ``.bf16x2``: a pair).  Warp collectives (``shfl.sync``, ``vote.sync``,
``activemask``), barriers (``bar.sync``), fences and atomics go through the emulator's own, so its checks
still apply.

Shared memory is addressed through the runtime's 32-bit windows (``__cvta_generic_to_shared``, ``cvta.to.shared``):
``ld.shared``/``st.shared`` and Ampere's asynchronous copies (``cp.async.ca/cg.shared.global``,
``cp.async.commit_group``, ``cp.async.wait_group``/``wait_all``) go through them, the copies to the runtime's
queue (a copy lands when a wait covers it, so an early read sees the old bytes and racecheck names it).

Tensor cores (``mma.sync`` for f16/bf16/tf32/s8/u8/fp8/f64, ``ldmatrix``/``stmatrix``/``movmatrix``) are warp
collectives over the PTX ISA's fragment layouts, and mbarriers (``mbarrier.*``, ``cp.async.mbarrier.arrive``, 1-D
``cp.async.bulk`` with ``complete_tx``, PTX labels and ``bra`` for the wait loop) live in the barrier's 8 bytes of
shared memory (``kernels/emu/include/minilora_tensor_core.h``, ``minilora_mbarrier.h``).  What is not modelled
(``wgmma``, sparse ``mma.sp``, TMA tensor copies, textures, ...) is refused at build time naming the instruction,
never run wrongly.
"""
from __future__ import annotations

import re

__all__ = ["translate_asm", "PtxError", "SUPPORTED"]


class PtxError(ValueError):
    """An asm statement the emulator cannot translate (the message names the instruction)."""


# C++ type of each PTX type suffix (16-bit floats are the emulator's __half / __nv_bfloat16).
_TYPES = {
    "b8": "uint8_t", "u8": "uint8_t", "s8": "int8_t",
    "b16": "uint16_t", "u16": "uint16_t", "s16": "int16_t", "f16": "__half", "bf16": "__nv_bfloat16",
    "b32": "uint32_t", "u32": "uint32_t", "s32": "int32_t", "f32": "float", "f16x2": "__half2",
    "bf16x2": "__nv_bfloat162",
    "b64": "uint64_t", "u64": "uint64_t", "s64": "int64_t", "f64": "double", "pred": "bool",
    "e4m3x2": "uint16_t", "e5m2x2": "uint16_t",  # two FP8 values (sm_89)
}
_SPECIAL = {
    "%laneid": "__emu::ptx::laneid()", "%warpid": "__emu::ptx::warpid()", "%nwarpid": "__emu::ptx::nwarpid()",
    "%smid": "__emu::ptx::smid()", "%nsmid": "__emu::ptx::nsmid()", "%gridid": "0ull",
    "%lanemask_eq": "__emu::ptx::lanemask(0)", "%lanemask_lt": "__emu::ptx::lanemask(1)",
    "%lanemask_le": "__emu::ptx::lanemask(2)", "%lanemask_gt": "__emu::ptx::lanemask(3)",
    "%lanemask_ge": "__emu::ptx::lanemask(4)", "%clock": "(uint64_t)(uint32_t)clock64()",
    "%clock64": "(uint64_t)clock64()", "%globaltimer": "(uint64_t)clock64()",
    "%dynamic_smem_size": "0ull", "%total_smem_size": "0ull",
    # thread block clusters (sm_90): the block's rank in its cluster and the cluster's block count
    "%cluster_ctarank": "(uint64_t)__emu::cluster::block_rank()", "%cluster_nctarank": "(uint64_t)__emu::cluster::blocks()",
}
for _axis in "xyz":
    _SPECIAL.update({f"%tid.{_axis}": f"(uint64_t)threadIdx.{_axis}", f"%ntid.{_axis}": f"(uint64_t)blockDim.{_axis}",
                     f"%ctaid.{_axis}": f"(uint64_t)blockIdx.{_axis}",
                     f"%nctaid.{_axis}": f"(uint64_t)gridDim.{_axis}",
                     f"%clusterid.{_axis}": f"(uint64_t)__emu::cluster::cluster_index().{_axis}",
                     f"%nclusterid.{_axis}": f"(uint64_t)(gridDim.{_axis} / __emu::cluster::dims().{_axis})",
                     f"%cluster_ctaid.{_axis}": f"(uint64_t)__emu::cluster::block_index().{_axis}",
                     f"%cluster_nctaid.{_axis}": f"(uint64_t)__emu::cluster::dims().{_axis}"})

# What the translation covers, for the refusal message.
SUPPORTED = ("mov (special registers %laneid %warpid %smid %tid ..., {a, b} packing and unpacking), "
             "ld/st (.global, .nc, generic; .v2/.v4), cvt (ints, f32/f64, f16/bf16, .f16x2/.bf16x2 packing, "
             ".e4m3x2/.e5m2x2 FP8 pairs), "
             "add sub mul mad fma div rem min max neg abs and or xor not cnot shl shr shf bfe bfi lop3 prmt popc "
             "clz brev, ex2 lg2 rcp rsqrt sqrt sin cos tanh (.approx), setp selp (predicates, @p guards), "
             "shfl.sync, vote.sync, redux.sync, elect.sync, activemask, bar.sync/barrier.sync (named barriers with a thread count too), "
             "bar.arrive, bar.warp.sync, membar/fence, "
             "atom/red (.global: add, min, max, exch, cas, and, or, xor, inc, dec), dp4a, cvta (global, shared), isspacep (.shared .global .local), "
             "ld/st.shared, cp.async.ca/cg.shared.global, cp.async.commit_group/wait_group/wait_all, "
             "prefetch, nanosleep, trap, exit, mma.sync (f16 bf16 tf32 s8 u8 e4m3 e5m2 f64), ldmatrix/stmatrix (.x1 .x2 .x4, "
             ".trans), movmatrix, cvt.rna.tf32.f32, mbarrier (init inval arrive arrive.expect_tx arrive_drop expect_tx "
             "complete_tx test_wait try_wait, .parity), cp.async.mbarrier.arrive, cp.async.bulk (global -> shared, "
             "mbarrier::complete_tx), fence.proxy.async, fence.mbarrier_init, labels and bra; clusters: "
             "%cluster_ctarank %cluster_nctarank %clusterid %nclusterid %cluster_ctaid %cluster_nctaid, "
             "barrier.cluster.arrive/wait (.relaxed .aligned), mapa, getctarank, ld/st/atom/red.shared::cluster")


def translate_asm(statement: str) -> str:
    """C++ for one asm statement, given the text between its parentheses (`"mov.u32 %0, %%laneid;" : "=r"(x)`);
    PtxError names what cannot be translated."""
    return _translate(statement)


def _split_sections(body: str) -> list[str]:
    """The asm statement's template, outputs, inputs and clobbers (split at the ':' outside parentheses)."""
    parts, depth, quote, cur, j = [], 0, None, [], 0
    while j < len(body):
        ch = body[j]
        if quote:
            cur.append(ch)
            if ch == "\\":
                cur.append(body[j + 1])
                j += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "([{":
            depth += 1
            cur.append(ch)
        elif ch in ")]}":
            depth -= 1
            cur.append(ch)
        elif ch == ":" and depth == 0:  # `"..." :: "r"(x)`: no outputs (a `::` in C++ lies inside parentheses)
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        j += 1
    parts.append("".join(cur))
    return parts


def _string_literals(text: str) -> str:
    """The concatenated contents of C string literals, escapes decoded."""
    found = re.findall(r'"((?:\\.|[^"\\])*)"', text)
    if not found or re.sub(r'"(?:\\.|[^"\\])*"', "", text).strip():
        raise PtxError("the asm template is not a plain string literal (a macro or a variable is not modelled)")
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\n", "0": ""}
    return "".join(re.sub(r"\\(.)", lambda e: escapes.get(e.group(1), e.group(1)), s) for s in found)


def _operands(section: str, outputs: bool, names: list[str] | None = None) -> list[tuple[str, str]]:
    """[(constraint, C++ expression)] of an operand list such as `"=r"(x), [p] "l"(ptr)`; `names` receives
    each operand's symbolic name (`%[p]` in the template), or ""."""
    found = []
    for item in split_top_level(section, quotes=True):
        item = item.strip()
        if not item:
            continue
        m = re.fullmatch(r'(?:\[(\w+)\]\s*)?"([^"]*)"\s*\((.*)\)', item, re.S)
        if not m:
            raise PtxError(f"cannot read the asm operand {item!r}")
        if names is not None:
            names.append(m.group(1) or "")
        m = re.fullmatch(r'"([^"]*)"\s*\((.*)\)', item[m.start(2) - 1:], re.S)
        constraint = m.group(1).replace("&", "")
        if constraint.strip("=+") not in ("r", "l", "h", "f", "d", "n", "c") and not constraint.strip("=+").isdigit():
            raise PtxError(f"the asm operand constraint {m.group(1)!r} is not modelled (r, l, h, f, d, n are)")
        found.append((constraint, m.group(2)))
    return found


def split_top_level(text: str, sep: str = ",", brackets: str = "([{", quotes: bool = False) -> list[str]:
    """Split ``text`` at ``sep`` outside the ``brackets`` pairs (and, with ``quotes``, outside "..." and
    '...'). The emulator splits C++ parameter lists with ``brackets="([{<"`` (template arguments); asm
    operand lists keep ``<`` as a comparison and may quote commas."""
    closers = {"(": ")", "[": "]", "{": "}", "<": ">"}
    closing = "".join(closers[b] for b in brackets)
    parts, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
            cur.append(ch)
            continue
        if quotes and ch in "\"'":
            quote = ch
        depth += ch in brackets
        depth -= ch in closing
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _translate(statement: str) -> str:
    sections = _split_sections(statement)
    template = _string_literals(sections[0])
    names: list[str] = []
    outs = _operands(sections[1], True, names) if len(sections) > 1 else []
    ins = _operands(sections[2], False, names) if len(sections) > 2 else []
    basic = len(sections) == 1  # basic asm: no operands, `%` is not doubled
    operands = outs + ins
    code = []
    for k, (constraint, expr) in enumerate(operands):
        if constraint.startswith("=") and not constraint.startswith("=+"):
            code.append(f"uint64_t __ptx{k} = 0;")
        elif constraint.strip("=+").isdigit():  # "0"(x): tied to output 0, which starts with x's bits
            tied = int(constraint.strip("=+"))
            code.append(f"uint64_t __ptx{k} = __emu::ptx::in({expr});")
            code.append(f"__ptx{tied} = __ptx{k};")
        else:
            code.append(f"uint64_t __ptx{k} = __emu::ptx::in({expr});")
    body = template if basic else template.replace("%%", "\x00")
    if not basic:
        body = re.sub(r"%\[(\w+)\]", lambda m: _named_ref(m.group(1), names), body)
        body = re.sub(r"%(\d+)", lambda m: _operand_ref(m, len(operands)), body)
    body = body.replace("\x00", "%")
    registers: set[str] = set()
    labels = re.findall(r"(?:^|[;{}\n])\s*([A-Za-z_$][\w$]*)\s*:(?!:)", body)
    if labels:  # PTX labels are local to the asm's braces: GCC's local labels, declared at the block's start
        code.insert(0, "__label__ " + ", ".join(_label(x) for x in dict.fromkeys(labels)) + ";")
    for instruction in _instructions(body):
        code.append(_instruction(instruction, registers))
    for k, (constraint, expr) in enumerate(outs):
        if constraint.startswith(("=", "+")):
            code.append(f"__emu::ptx::out({expr}, __ptx{k});")
    if len(sections) > 3 and '"memory"' in sections[3]:  # asm volatile("" ::: "memory"): a compiler barrier
        code.append("__atomic_signal_fence(__ATOMIC_SEQ_CST);")
    return " ".join(code)


def _named_ref(name: str, names: list[str]) -> str:
    if name not in names:
        raise PtxError(f"the asm template names %[{name}], but no operand is called [{name}]")
    return f"__ptx{names.index(name)}"


def _operand_ref(m, count: int) -> str:
    k = int(m.group(1))
    if k >= count:
        raise PtxError(f"the asm template names %{k}, but only {count} operands are given")
    return f"__ptx{k}"


def _instructions(body: str) -> list[str]:
    """The template's statements: split at ';' and newlines, braces (register scopes) dropped."""
    body = re.sub(r"//[^\n]*", "", body).replace("{", " { ").replace("}", " } ")
    found = []
    for piece in re.split(r"[;\n]", body):
        piece = piece.strip()
        # keep vector operands `{a, b}` together: braces were spaced above, join them back
        piece = re.sub(r"\{\s*([^{}]*?)\s*\}", lambda v: "{" + v.group(1) + "}", piece)
        while piece.startswith(("{", "}")) and not re.match(r"\{[^{}]*\}", piece):
            piece = piece[1:].strip()
        piece = re.sub(r"\s*\}$", "", piece) if piece.count("}") > piece.count("{") else piece
        if piece:
            found.append(piece)
    return found


def _reg(name: str) -> str:
    return "__ptxr_" + re.sub(r"\W", "_", name)


def _value(token: str, registers: set[str]) -> str:
    """A source operand as a uint64_t expression of its bits."""
    token = token.strip()
    if token.startswith("__ptx"):
        return token
    if token in _SPECIAL:
        return _SPECIAL[token]
    if token in registers:
        return _reg(token)
    m = re.fullmatch(r"0[fF]([0-9a-fA-F]{8})", token)
    if m:
        return f"0x{m.group(1)}ull"
    m = re.fullmatch(r"0[dD]([0-9a-fA-F]{16})", token)
    if m:
        return f"0x{m.group(1)}ull"
    if re.fullmatch(r"-?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)[uU]?", token):
        return f"(uint64_t)(int64_t)({token.rstrip('uU')}ll)"
    if re.fullmatch(r"-?\d+\.\d*(?:[eE][-+]?\d+)?", token):
        return f"__emu::ptx::fbits({token})"
    if token.startswith("%"):
        raise PtxError(f"the special register {token} is not modelled")
    raise PtxError(f"cannot read the operand {token!r}")


def _dest(token: str, registers: set[str]) -> str:
    token = token.strip()
    if token.startswith("__ptx") or token in registers:
        return token if token.startswith("__ptx") else _reg(token)
    raise PtxError(f"cannot write to {token!r}")


def _vector(token: str) -> list[str] | None:
    token = token.strip()
    if token.startswith("{") and token.endswith("}"):
        return [t.strip() for t in token[1:-1].split(",")]
    return None


def _address(token: str, registers: set[str]) -> str:
    m = re.fullmatch(r"\[\s*([^\]+\-]+?)\s*(?:([+-])\s*(\w+))?\s*\]", token.strip())
    if not m:
        raise PtxError(f"cannot read the address {token!r}")
    base = _value(m.group(1), registers)
    offset = f" {m.group(2)} (int64_t)({m.group(3)})" if m.group(2) else ""
    return f"((char*)(uintptr_t)({base}){offset})"


def _shared_address(token: str, registers: set[str], nbytes: str) -> str:
    """A .shared operand `[addr + off]` (a 32-bit window address) as the pointer it stands for; the runtime
    faults, named, when `nbytes` bytes there are outside every __shared__ array of the block."""
    window = _address(token, registers).replace("((char*)(uintptr_t)(", "((uint64_t)(", 1)
    return f"((char*)__emu::shared_window_ptr({window}, {nbytes}, __FILE__, __LINE__))"


def _cluster_address(token: str, registers: set[str], nbytes: str) -> str:
    """A .shared::cluster operand (a window address with the block's rank above it, from mapa) as the pointer into
    that block's shared memory; the runtime faults, named, outside its arrays or for a block that has exited."""
    window = _address(token, registers).replace("((char*)(uintptr_t)(", "((uint64_t)(", 1)
    return f"((char*)__emu::cluster_window_ptr({window}, {nbytes}, __FILE__, __LINE__))"


def _space_address(mods: list[str], token: str, registers: set[str], nbytes: str) -> str:
    """The pointer an ld/st/atom operand names in its state space: .shared(::cta) and .shared::cluster addresses are
    windows (runtime.cpp), generic and .global ones plain pointers."""
    if "shared::cluster" in mods:
        return _cluster_address(token, registers, nbytes)
    if "shared" in mods or "shared::cta" in mods:
        return _shared_address(token, registers, nbytes)
    return _address(token, registers)


def _cluster(op: str, mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """The cluster instructions: barrier.cluster.arrive/wait, mapa (a block's address -> block `rank`'s), and
    getctarank (which block an address belongs to)."""
    if op == "barrier":
        if "arrive" in mods:  # .relaxed: no memory ordering (racecheck orders nothing by it)
            return f"__emu::cluster_arrive({'true' if 'relaxed' in mods else 'false'}, __FILE__, __LINE__);"
        if "wait" in mods:
            return "__emu::cluster_wait(__FILE__, __LINE__);"
        raise PtxError(f"the inline PTX instruction '{head}' needs .arrive or .wait (barrier.cluster.arrive / .wait)")
    windowed = "shared::cluster" in mods  # else generic addresses
    if op == "mapa":
        address, rank = _value(args[1], regs), _value(args[2], regs)
        if windowed:
            return f"{_dest(args[0], regs)} = __emu::cluster::window_of_rank((uint64_t)({address}), (unsigned)({rank}));"
        return (f"{_dest(args[0], regs)} = (uint64_t)(uintptr_t)__emu::map_shared_rank((const void*)(uintptr_t)"
                f"({address}), (unsigned)({rank}), __FILE__, __LINE__);")
    address = _value(args[1], regs)  # getctarank
    if windowed:
        return f"{_dest(args[0], regs)} = __emu::cluster::rank_of_window((uint64_t)({address}));"
    return (f"{_dest(args[0], regs)} = __emu::shared_rank_of((const void*)(uintptr_t)({address}), __FILE__, "
            "__LINE__);")


def _cp_async(mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}; commit_group; wait_group N; wait_all."""
    if mods == ["commit_group"]:
        return "__emu::async_commit();"
    if mods == ["wait_group"]:
        return f"__emu::async_wait((int){_value(args[0], regs)});"
    if mods == ["wait_all"]:  # commit_group + wait_group 0
        return "__emu::async_commit(); __emu::async_wait(0);"
    if mods[:2] == ["mbarrier", "arrive"]:  # the barrier tracks this thread's copies: they land, then it arrives
        arrive = (f"__emu::mbar::update({_mbarrier_pointer(args[0], mods, regs)}, 1, 0, 0, __FILE__, __LINE__);"
                  if "noinc" in mods else "")  # without .noinc the pending count is raised by one first: no net arrival
        return "__emu::async_commit(); __emu::async_wait(0); " + arrive
    if mods[:1] == ["bulk"] and "tensor" not in mods and "global" in mods and \
            mods.index("global") > next((i for i, m in enumerate(mods) if m.startswith("shared")), 99) and \
            any(m.startswith("mbarrier::complete_tx") for m in mods):
        # cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [src], size, [mbar]: one copy,
        # done at once here (a GPU finishes it before the barrier's phase can complete), then complete_tx(size)
        if len(args) != 4:
            raise PtxError(f"the inline PTX instruction '{head}': a multicast mask or cache hint is not modelled")
        size = f"(size_t)(uint32_t){_value(args[2], regs)}"
        return (f"__emu::mbar::bulk_copy({_shared_address(args[0], regs, size)}, {_address(args[1], regs)}, {size}, "
                f"{_mbarrier_pointer(args[3], ['shared'], regs)}, __FILE__, __LINE__);")
    if "shared" not in mods or "global" not in mods or any(m in mods for m in ("bulk", "mbarrier")):
        raise PtxError(f"the inline PTX instruction '{head}' is not modelled by minilora's CUDA emulator (it runs "
                       "cp.async.ca/cg.shared.global with commit_group and wait_group, cp.async.mbarrier.arrive, and "
                       "1-D cp.async.bulk global -> shared with mbarrier::complete_tx; TMA tensor copies (a tensor map "
                       "made on the host) and bulk stores to global memory are not)")
    if len(args) > 3 and not re.fullmatch(r"!?-?\w+", args[3].strip()) or len(args) > 4:
        raise PtxError(f"the inline PTX instruction '{head}': only a src-size or an ignore-src predicate is modelled "
                       "after cp-size (a cache policy is not)")
    size = f"(size_t){_value(args[2], regs)}"
    src_size = f"(size_t){_value(args[3], regs)}" if len(args) > 3 else size
    last = args[3].strip() if len(args) > 3 else ""
    if _PRED + last.lstrip("!") in regs:  # ignore-src: when the predicate holds, nothing is read, all zero-filled
        ignore = f"!{_value(last[1:], regs)}" if last.startswith("!") else _value(last, regs)
        src_size = f"(({ignore}) ? (size_t)0 : {size})"
    src = _address(args[1], regs)
    return (f"__emu::async_copy({_shared_address(args[0], regs, size)}, {src}, {size}, {src_size}, {size}, "
            "__FILE__, __LINE__);")


def _split_operands(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch in "{["
        depth -= ch in "}]"
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _types(mods: list[str]) -> list[str]:
    return [m for m in mods if m in _TYPES]


def _label(name: str) -> str:
    return "__ptxl_" + re.sub(r"\W", "_", name)


def _instruction(text: str, registers: set[str]) -> str:
    label = re.match(r"([A-Za-z_$][\w$]*)\s*:(?!:)\s*(.*)", text, re.S)
    if label:  # `LAB_WAIT:` (a C++ label needs a statement after it)
        rest = label.group(2).strip()
        return f"{_label(label.group(1))}:; " + (_instruction(rest, registers) if rest else "")
    guard = ""
    m = re.match(r"@(!?)(\S+)\s+(.*)", text, re.S)
    if m:
        if m.group(2) not in registers and not m.group(2).startswith("__ptx"):
            raise PtxError(f"the predicate {m.group(2)} is not declared")
        guard = f"if ({'!' if m.group(1) else ''}{_value(m.group(2), registers)}) "
        text = m.group(3)
    head, _, rest = text.partition(" ")
    if head == ".reg":
        return _declare(rest, registers)
    parts = head.split(".")
    op, mods = parts[0], parts[1:]
    args = _split_operands(rest)
    try:
        if "ftz" in mods:
            code = _emit_flushing(op, mods, args, registers, head)
        else:
            code = _emit(op, mods, args, registers, head)
            if op in _FLOAT_ARITHMETIC and "f32" in _types(mods):  # no .ftz: subnormals kept even under -ftz=true
                code = f"__emu::ptx::keep_subnormals([&]() {{ {code} }});"
    except IndexError:
        raise PtxError(f"the inline PTX instruction '{text}' has too few operands") from None
    return guard + "{ " + code + " }"


_PRED = "\x00pred:"  # marks a predicate register's name in the set of declared registers


def _declare(rest: str, registers: set[str]) -> str:
    words = rest.replace(",", " ").split()
    if not words or not words[0].startswith("."):
        raise PtxError(f"cannot read the register declaration '.reg {rest}'")
    names = []
    for w in words[1:]:
        m = re.fullmatch(r"([%\w$]+)<(\d+)>", w)  # .reg .b32 r<4>: r0 .. r3
        names += [f"{m.group(1)}{i}" for i in range(int(m.group(2)))] if m else [w]
    registers.update(names)
    if words[0] == ".pred":  # remembered by type too: cp.async's last operand is a src-size or an ignore-src predicate
        registers.update(_PRED + n for n in names)
    return " ".join(f"uint64_t {_reg(n)} = 0;" for n in names)


def _set(dest: str, ctype: str, value: str) -> str:
    return f"{dest} = __emu::ptx::bits<{ctype}>({value});"


def _get(ctype: str, value: str) -> str:
    return f"__emu::ptx::val<{ctype}>({value})"


# Signed types compute in their unsigned twin, as PTX's two's-complement arithmetic wraps around.
_SIGNED = {"int32_t": "uint32_t", "int64_t": "uint64_t", "int16_t": "uint16_t", "int8_t": "uint8_t"}
_PACKED_OR_16BIT = ("__half", "__nv_bfloat16", "__half2", "__nv_bfloat162")
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%", "and": "&", "or": "|", "xor": "^",
          "shl": "<<", "shr": ">>"}
_UNARY_MATH = {"ex2": "exp2f", "lg2": "log2f", "rsqrt": "rsqrtf", "sqrt": "sqrtf", "sin": "sinf", "cos": "cosf",
               "tanh": "tanhf"}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "lo": "<", "ls": "<=",
            "hi": ">", "hs": ">="}
_UNORDERED = {"equ": "!({a} < {b} || {a} > {b})", "neu": "({a} != {b})", "ltu": "!({a} >= {b})", "leu": "!({a} > {b})",
              "gtu": "!({a} <= {b})", "geu": "!({a} < {b})", "nan": "({a} != {a} || {b} != {b})",
              "num": "({a} == {a} && {b} == {b})"}
_WARP_SHFL = {"idx": "W_SHFL_IDX", "up": "W_SHFL_UP", "down": "W_SHFL_DOWN", "bfly": "W_SHFL_XOR"}
_ATOMIC = {"add": "atomicAdd", "min": "atomicMin", "max": "atomicMax", "exch": "atomicExch", "and": "atomicAnd",
           "or": "atomicOr", "xor": "atomicXor", "inc": "atomicInc", "dec": "atomicDec", "cas": "atomicCAS"}


def _cvt_fp8(types: list[str], mods: list[str], args: list[str], regs: set[str]) -> str:
    """cvt.rn.satfinite{.relu}.e4m3x2.f32 d, a, b (a to the upper byte), .e4m3x2.f16x2 d, a, and back,
    cvt.rn{.relu}.f16x2.e4m3x2 d, a (the low byte to the low half)."""
    relu = "relu" in mods
    if types[0] in ("e4m3x2", "e5m2x2"):
        e4m3 = "true" if types[0] == "e4m3x2" else "false"
        if types[1] == "f32":
            values = [_get("float", _value(x, regs)) for x in args[1:3]]  # upper, lower
        elif types[1] == "f16x2":
            pair = _get("__half2", _value(args[1], regs))
            values = [f"float({pair}.y)", f"float({pair}.x)"]
        else:
            raise PtxError(f"the inline PTX conversion to .{types[0]} from .{types[1]} is not modelled")
        upper, lower = (f"(uint64_t)__emu::fp8::encode({'(' + v + ' < 0 ? 0.0f : ' + v + ')' if relu else v}, "
                        f"{'true' if 'satfinite' in mods else 'false'}, {e4m3})" for v in values)
        return f"{_dest(args[0], regs)} = ({upper} << 8) | {lower};"
    if types[0] != "f16x2":
        raise PtxError(f"the inline PTX conversion to .{types[0]} from .{types[1]} is not modelled")
    e4m3 = "true" if types[1] == "e4m3x2" else "false"
    src = _value(args[1], regs)
    lanes = [f"(float)__emu::fp8::decode((unsigned char)(({src}) >> {8 * k}), {e4m3})" for k in range(2)]
    if relu:
        lanes = [f"__emu::ptx::relu({lane})" for lane in lanes]  # (a NaN stays NaN)
    return f"{_dest(args[0], regs)} = __emu::ptx::bits<__half2>(__half2(__half({lanes[0]}), __half({lanes[1]})));"


# mma.sync's element types, as minilora_tensor_core.h names them, and the shapes it runs for each input type.
_MMA_ELEM = {"f16": "E_F16", "bf16": "E_BF16", "tf32": "E_TF32", "f32": "E_F32", "f64": "E_F64", "s8": "E_S8",
             "u8": "E_U8", "s32": "E_S32", "e4m3": "E_E4M3", "e5m2": "E_E5M2"}
_MMA_SHAPES = {"f16": ("m16n8k16", "m16n8k8"), "bf16": ("m16n8k16", "m16n8k8"), "tf32": ("m16n8k8", "m16n8k4"),
               "s8": ("m16n8k32", "m16n8k16", "m8n8k16"), "u8": ("m16n8k32", "m16n8k16", "m8n8k16"),
               "e4m3": ("m16n8k32",), "e5m2": ("m16n8k32",), "f64": ("m8n8k4",)}


def _bits_of(elem: str) -> int:
    return {"f16": 16, "bf16": 16, "s8": 8, "u8": 8, "e4m3": 8, "e5m2": 8, "f64": 64}.get(elem, 32)


def _mma(mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """mma.sync.aligned.mMnNkK.row.col{.satfinite}.dtype.atype.btype.ctype {d}, {a}, {b}, {c}: a warp collective
    (minilora_tensor_core.h) over the PTX ISA's fragment layouts."""
    shape = next((m for m in mods if re.fullmatch(r"m\d+n\d+k\d+", m)), "")
    dtype, atype, btype, ctype = (mods[-4:] + ["", "", "", ""])[:4]
    if "sync" not in mods or "sp" in mods or not shape or any(t not in _MMA_ELEM for t in (dtype, atype, btype, ctype)):
        raise PtxError(f"the inline PTX instruction '{head}' is not modelled by minilora's CUDA emulator (it runs "
                       "mma.sync.aligned with f16/bf16 (m16n8k16, m16n8k8), tf32 (m16n8k8, m16n8k4), s8/u8 (m16n8k32, "
                       "m16n8k16, m8n8k16), e4m3/e5m2 (m16n8k32) and f64 (m8n8k4) inputs; sparse mma.sp, sub-byte "
                       "types and Volta's m8n8k4 f16 quad-pairs are not)")
    if shape not in _MMA_SHAPES.get(atype, ()) or (atype in ("f16", "bf16") and btype != atype) or \
            (atype in ("tf32", "f64") and btype != atype):
        raise PtxError(f"the inline PTX instruction '{head}': shape {shape} with .{atype}/.{btype} inputs is not one the "
                       "emulator runs (" + "; ".join(f"{t}: {', '.join(v)}" for t, v in _MMA_SHAPES.items()) + ")")
    if "row" not in mods or "col" not in mods:
        raise PtxError(f"the inline PTX instruction '{head}': only the .row.col layouts are modelled (the only ones "
                       "these shapes allow)")
    m, n, k = (int(x) for x in re.findall(r"\d+", shape))
    counts = {"d": m * n // 32, "a": m * k // 32, "b": k * n // 32, "c": m * n // 32}
    elems = {"d": dtype, "a": atype, "b": btype, "c": ctype}
    vectors = {}
    for name, token in zip("dabc", args):
        vector = _vector(token) or [token]
        per = 1 if _bits_of(elems[name]) >= 32 else 32 // _bits_of(elems[name])
        if len(vector) != counts[name] // per:
            raise PtxError(f"the inline PTX instruction '{head}': its {name} operand has {len(vector)} registers, the "
                           f"shape and type need {counts[name] // per}")
        vectors[name] = vector
    if len(vectors) != 4:
        raise PtxError(f"the inline PTX instruction '{head}' has too few operands")
    tc = ", ".join(f"__emu::tc::{_MMA_ELEM[t]}" for t in (dtype, atype, btype, ctype))
    code = [f"const uint64_t __mma_{x}[{len(vectors[x])}] = {{{', '.join(_value(v, regs) for v in vectors[x])}}};"
            for x in "abc"]
    code.append(f"uint64_t __mma_d[{len(vectors['d'])}];")
    code.append(f"__emu::ptx::mma(__emu::ptx::MmaShape{{{m}, {n}, {k}, {tc}, {'true' if 'satfinite' in mods else 'false'}}}, "
                "__mma_d, __mma_a, __mma_b, __mma_c, __FILE__, __LINE__);")
    code += [f"{_dest(v, regs)} = __mma_d[{i}];" for i, v in enumerate(vectors["d"])]
    return " ".join(code)


def _window(token: str, regs: set[str]) -> str:
    """A .shared operand `[addr + off]` as its 32-bit window address (a uint64_t expression)."""
    return _address(token, regs).replace("((char*)(uintptr_t)(", "((uint64_t)(", 1)


def _matrix(op: str, mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """ldmatrix / stmatrix .sync.aligned.m8n8.x1|x2|x4{.trans}.shared.b16, movmatrix.sync.aligned.m8n8.trans.b16."""
    if "m8n8" not in mods or "b16" not in mods or "sync" not in mods:
        raise PtxError(f"the inline PTX instruction '{head}' is not modelled by minilora's CUDA emulator (it runs "
                       f"{op}.sync.aligned.m8n8 ... .b16; the m16n16 / .b8 forms of sm_100 are not)")
    if op == "movmatrix":
        return f"{_dest(args[0], regs)} = __emu::ptx::movmatrix({_value(args[1], regs)}, __FILE__, __LINE__);"
    count = next((int(m[1:]) for m in mods if m in ("x1", "x2", "x4")), 0)
    if not count or not any(m.startswith("shared") for m in mods):
        raise PtxError(f"the inline PTX instruction '{head}' needs .x1, .x2 or .x4 and a .shared address")
    trans = "true" if "trans" in mods else "false"
    if op == "ldmatrix":
        dests = _vector(args[0]) or [args[0]]
        if len(dests) != count:
            raise PtxError(f"the inline PTX instruction '{head}' writes {count} registers, {len(dests)} are given")
        return (f"uint64_t __ldm[{count}]; __emu::ptx::ldmatrix(__ldm, {count}, {trans}, {_window(args[1], regs)}, "
                f"__FILE__, __LINE__); " + " ".join(f"{_dest(d, regs)} = __ldm[{i}];" for i, d in enumerate(dests)))
    sources = _vector(args[1]) or [args[1]]
    if len(sources) != count:
        raise PtxError(f"the inline PTX instruction '{head}' reads {count} registers, {len(sources)} are given")
    return (f"const uint64_t __stm[{count}] = {{{', '.join(_value(v, regs) for v in sources)}}}; "
            f"__emu::ptx::stmatrix(__stm, {count}, {trans}, {_window(args[0], regs)}, __FILE__, __LINE__);")


def _mbarrier_pointer(token: str, mods: list[str], regs: set[str]) -> str:
    """The barrier's address: a .shared window address, or a generic pointer (no state space given)."""
    if any(m.startswith("shared") for m in mods):
        return f"((uint64_t*){_shared_address(token, regs, '8')})"
    return f"((uint64_t*){_address(token, regs)})"


def _mbarrier(mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """mbarrier.init / inval / arrive{.expect_tx} / arrive_drop / expect_tx / complete_tx / test_wait / try_wait
    {.parity} (minilora_mbarrier.h); the sem and scope qualifiers (.release.cta, .acquire.cta, .relaxed) change
    nothing here: the block's threads run one at a time."""
    kind = mods[0] if mods else ""
    where = "__FILE__, __LINE__"
    if kind == "init":
        return f"__emu::mbar::init({_mbarrier_pointer(args[0], mods, regs)}, {_value(args[1], regs)}, {where});"
    if kind == "inval":
        return f"__emu::mbar::inval({_mbarrier_pointer(args[0], mods, regs)});"
    if kind in ("arrive", "arrive_drop"):
        if "noComplete" in mods:
            raise PtxError(f"the inline PTX instruction '{head}': .noComplete is not modelled")
        bar = _mbarrier_pointer(args[1], mods, regs)
        expect_tx = "expect_tx" in mods
        count = "1" if expect_tx or len(args) < 3 else f"(uint64_t)(uint32_t){_value(args[2], regs)}"
        tx = f"(int64_t)(uint32_t){_value(args[2], regs)}" if expect_tx else "0"
        drop = count if kind == "arrive_drop" else "0"
        call = f"__emu::mbar::update({bar}, {count}, {drop}, {tx}, {where})"
        return f"{call};" if args[0].strip() == "_" else f"{_dest(args[0], regs)} = {call};"
    if kind in ("expect_tx", "complete_tx"):
        sign = "" if kind == "expect_tx" else "-"
        return (f"__emu::mbar::update({_mbarrier_pointer(args[0], mods, regs)}, 0, 0, "
                f"{sign}(int64_t)(uint32_t){_value(args[1], regs)}, {where});")
    if kind in ("test_wait", "try_wait"):
        token = _value(args[2], regs)
        return (f"{_dest(args[0], regs)} = __emu::mbar::wait({_mbarrier_pointer(args[1], mods, regs)}, {token}, "
                f"{where}) ? 1 : 0;")
    raise PtxError(f"the inline PTX instruction '{head}' is not modelled by minilora's CUDA emulator (of mbarrier it "
                   "runs init, inval, arrive, arrive.expect_tx, arrive_drop, expect_tx, complete_tx, test_wait, "
                   "try_wait and their .parity forms)")


# The f32 instructions that flush with .ftz and keep subnormals without it, under -ftz=true too (whose SSE flags
# runtime.cpp sets while blocks run): these run in __emu::ptx::keep_subnormals, which clears them (minilora_ptx.h).
_FLOAT_ARITHMETIC = {"add", "sub", "mul", "div", "fma", "mad", "min", "max", "sqrt", "rsqrt", "rcp", "sin", "cos",
                     "lg2", "ex2", "tanh", "setp", "set", "cvt", "testp"}
# How many source operands an instruction with .ftz reads as floats (setp's optional last one is a predicate).
_FLOAT_SOURCES = {"add": 2, "sub": 2, "mul": 2, "div": 2, "min": 2, "max": 2, "setp": 2, "fma": 3, "mad": 3}
_FLUSHABLE = {"f32": "flush_f32", "f16": "flush_f16", "f16x2": "flush_f16x2"}  # .ftz is for these types only


def _emit_flushing(op: str, mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """An instruction with .ftz (add.ftz.f32, fma.rn.ftz.f32, ex2.approx.ftz.f32, setp.lt.ftz.f32, cvt.rn.ftz.f32.f64,
    add.ftz.f16x2, ...): its subnormal .f32 / .f16 inputs are read as zero of the same sign, and a subnormal result is
    written as one -- the GPU's flush-to-zero, which -ftz=true (--use_fast_math) sets for every float op nvcc emits
    and kernels ask for by name in inline PTX.  The instruction itself runs on the flushed copies."""
    types = _types(mods)
    if not types:
        raise PtxError(f"the inline PTX instruction '{head}' has .ftz but no type")
    source_type, result_type = (types[1], types[0]) if op == "cvt" and len(types) == 2 else (types[-1], types[-1])
    if op == "cvt":  # cvt's .ftz is about its .f32 side only (a subnormal half widens to a normal float)
        source_type, result_type = (t if t == "f32" else "" for t in (source_type, result_type))
    code = []
    sources = list(args)
    for k in range(1, 1 + _FLOAT_SOURCES.get(op, 1)):
        if source_type in _FLUSHABLE and k < len(args) and not _vector(args[k]):
            code.append(f"uint64_t __ptxftz{k} = __emu::ptx::{_FLUSHABLE[source_type]}({_value(args[k], regs)});")
            sources[k] = f"__ptxftz{k}"
    code.append(_emit(op, [m for m in mods if m != "ftz"], sources, regs, head))
    if op != "setp" and result_type in _FLUSHABLE and not _vector(args[0]):
        dest = _dest(args[0], regs)
        code.append(f"{dest} = __emu::ptx::{_FLUSHABLE[result_type]}({dest});")
    return " ".join(code)


_REDUX = {"add": "__reduce_add_sync", "min": "__reduce_min_sync", "max": "__reduce_max_sync",
          "and": "__reduce_and_sync", "or": "__reduce_or_sync", "xor": "__reduce_xor_sync"}


def _redux(mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    """redux.sync.op.type d, a, membermask: sm_80's warp reduction, what CUDA's __reduce_*_sync compile to (so
    the same checks of the mask and of who takes part); .add/.min/.max of .u32/.s32, .and/.or/.xor of .b32."""
    op = next((m for m in mods if m in _REDUX), None)
    types = _types(mods)
    if op is None or types not in (["u32"], ["s32"], ["b32"]) or (types == ["b32"]) != (op in ("and", "or", "xor")):
        raise PtxError(f"the inline PTX instruction '{head}' is not modelled: redux.sync runs .add/.min/.max of "
                       ".u32/.s32 and .and/.or/.xor of .b32 (the float forms of sm_100a are not modelled)")
    ctype = "int" if types == ["s32"] else "unsigned"
    value = f"({ctype})(uint32_t){_value(args[1], regs)}"
    return f"{_dest(args[0], regs)} = (uint32_t){_REDUX[op]}((unsigned){_value(args[2], regs)}, {value});"


def _elect(args: list[str], regs: set[str]) -> str:
    """elect.sync d|p, membermask (sm_90): the lowest lane of the mask is the leader; d gets its lane id in every
    lane (`_` drops it), p is true in the leader only.  A ballot of the mask waits for all of its lanes, as the
    instruction does."""
    dest, _, pred = args[0].partition("|")
    mask = _value(args[1], regs)
    code = f"const unsigned __ptx_elected = (unsigned)__ffs(__ballot_sync((unsigned){mask}, 1)) - 1u; "
    if dest.strip() != "_":
        code += f"{_dest(dest, regs)} = __ptx_elected; "
    if pred.strip() not in ("", "_"):
        code += f"{_dest(pred, regs)} = (__ptx_elected == (unsigned)__emu::ptx::laneid()) ? 1 : 0;"
    return code


def _emit(op: str, mods: list[str], args: list[str], regs: set[str], head: str) -> str:
    if op == "bra":  # a jump to a label of the same asm statement
        return f"goto {_label(args[0])};"
    if (op == "barrier" and "cluster" in mods) or op in ("mapa", "getctarank"):
        return _cluster(op, mods, args, regs, head)
    if op == "mbarrier":
        return _mbarrier(mods, args, regs, head)
    if op == "mma":
        return _mma(mods, args, regs, head)
    if op in ("ldmatrix", "stmatrix", "movmatrix"):
        return _matrix(op, mods, args, regs, head)
    if op == "cvt" and "tf32" in mods:  # cvt.rna.tf32.f32: to nearest, ties away, in a float32's bits
        if "rna" not in mods:
            raise PtxError(f"the inline PTX instruction '{head}': only cvt.rna.tf32.f32 is modelled")
        return f"{_dest(args[0], regs)} = __emu::ptx::tf32_bits({_value(args[1], regs)});"
    types = _types(mods)
    t = _TYPES[types[-1]] if types else "uint32_t"
    refuse = PtxError(f"the inline PTX instruction '{head}' is not modelled by minilora's CUDA emulator; it runs: "
                      f"{SUPPORTED}")
    if op == "mov":
        dst, src = args[0], args[1]
        if _vector(src):  # mov.b32 d, {lo, hi}: the first element in the low bits
            parts = _vector(src)
            width = {"b32": 16, "b64": 32, "b16": 8}.get(types[-1] if types else "b32", 16)
            pieces = " | ".join(f"(({_value(p, regs)} & {hex((1 << width) - 1)}ull) << {width * i})"
                                for i, p in enumerate(parts))
            return f"{_dest(dst, regs)} = {pieces};"
        if _vector(dst):
            parts = _vector(dst)
            width = {"b32": 16, "b64": 32, "b16": 8}.get(types[-1] if types else "b32", 16)
            value = _value(src, regs)
            return " ".join(f"{_dest(p, regs)} = ({value} >> {width * i}) & {hex((1 << width) - 1)}ull;"
                            for i, p in enumerate(parts) if p != "_")
        return _set(_dest(dst, regs), t, _get(t, _value(src, regs)))
    if op == "cp" and mods[:1] == ["async"]:
        return _cp_async(mods[1:], args, regs, head)
    if op in ("ld", "st"):
        if any(s in mods for s in ("local", "param", "tex")):
            raise PtxError(f"the inline PTX instruction '{head}': {op} from .local/.param addresses is "
                           "not modelled by minilora's CUDA emulator; use the pointer in C++ instead")
        width = 4 if "v4" in mods else 8 if "v8" in mods else 2 if "v2" in mods else 1
        # .volatile / .relaxed / .acquire / .release, and the cache operators that read past L1 (.cv "fetch again",
        # .cg): a real atomic access, so a spin loop on a flag that another block sets re-reads memory (a plain
        # copy could be hoisted out of the loop by the compiler) and gives the setter a turn
        ordered = "true" if any(m in mods for m in ("volatile", "relaxed", "acquire", "release", "cv", "cg")) \
            else "false"
        if op == "ld":
            dests = _vector(args[0]) or [args[0]]
            addr = _space_address(mods, args[1], regs, f"{width} * sizeof({t})")
            return " ".join(_set(_dest(d, regs), t, f"__emu::ptx::load<{t}>({addr}, {i}, {ordered})")
                            for i, d in enumerate(dests[:width]) if d != "_")
        srcs = _vector(args[1]) or [args[1]]
        addr = _space_address(mods, args[0], regs, f"{width} * sizeof({t})")
        return " ".join(f"__emu::ptx::store<{t}>({addr}, {i}, {_get(t, _value(s, regs))}, {ordered});"
                        for i, s in enumerate(srcs[:width]))
    if op == "cvt":
        if len(types) != 2:
            raise refuse
        dt, st = _TYPES[types[0]], _TYPES[types[1]]
        rnd = next((m for m in mods if m in ("rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi")), "")
        sat = "true" if "sat" in mods else "false"
        if types[0] in ("e4m3x2", "e5m2x2") or types[1] in ("e4m3x2", "e5m2x2"):
            return _cvt_fp8(types, mods, args, regs)
        if types[0] in ("f16x2", "bf16x2"):  # cvt.rn.bf16x2.f32 d, a, b: a in the upper half, b in the lower
            half, mode = ("__half" if types[0] == "f16x2" else "__nv_bfloat16"), rnd or "rn"
            upper, lower = (f"__emu::ptx::bits<{half}>(__emu::ptx::round_to<{half}>({_get('float', _value(x, regs))}, "
                            f"\"{mode}\"))" for x in args[1:3])
            return f"{_dest(args[0], regs)} = ({upper} << 16) | {lower};"
        return _set(_dest(args[0], regs), dt,
                    f"__emu::ptx::convert<{dt}>({_get(st, _value(args[1], regs))}, \"{rnd}\", {sat})")
    if op in _ARITH and op not in ("shl", "shr"):
        a, b = _get(t, _value(args[1], regs)), _get(t, _value(args[2], regs))
        if op in ("mul", "div") and t in _PACKED_OR_16BIT and t in ("__half2", "__nv_bfloat162"):
            return _set(_dest(args[0], regs), t, f"({a} {_ARITH[op]} {b})")
        if op == "div" and "approx" in mods and t == "float":  # a * (1/b), as __fdividef (cuda_emu.h)
            return _set(_dest(args[0], regs), t, f"__fdividef({a}, {b})")
        if op == "mul" and ("hi" in mods or "wide" in mods):
            return _set(_dest(args[0], regs), "uint64_t" if "wide" in mods else t,
                        f"__emu::ptx::mul_{'hi' if 'hi' in mods else 'wide'}({a}, {b})")
        expr = f"({t})({a} {_ARITH[op]} {b})"
        if op == "div":  # a call, not `/`: --use_fast_math's rewrite of the source's `/` must not reach div.rn
            expr = f"__emu::ptx::quotient<{t}>({a}, {b})"
        if op in ("add", "sub", "mul") and t in _SIGNED:  # PTX wraps around; C++'s signed overflow is undefined
            expr = f"({t})(({_SIGNED[t]}){a} {_ARITH[op]} ({_SIGNED[t]}){b})"
        if "sat" in mods:
            expr = f"__emu::ptx::saturate<{t}>((double){a} {_ARITH[op]} (double){b})"
        return _set(_dest(args[0], regs), t, expr)
    if op in ("shl", "shr"):
        a, b = _get(t, _value(args[1], regs)), _get("uint32_t", _value(args[2], regs))
        return _set(_dest(args[0], regs), t, f"__emu::ptx::shift<{t}>({a}, {b}, {'true' if op == 'shl' else 'false'})")
    if op in ("mad", "fma"):
        a, b, c = (_get(t, _value(x, regs)) for x in args[1:4])
        if t in _PACKED_OR_16BIT:  # rounded once to 16 bits, lane by lane
            fma16 = "__hfma2" if t in ("__half2", "__nv_bfloat162") else "__hfma"
            return _set(_dest(args[0], regs), t, f"{fma16}({a}, {b}, {c})")
        if op == "fma" or t in ("float", "double"):
            expr = f"(({t})std::fma({a}, {b}, {c}))"
            return _set(_dest(args[0], regs), t, f"__emu::ptx::saturate<{t}>({expr})" if "sat" in mods else expr)
        if "hi" in mods:
            return _set(_dest(args[0], regs), t, f"({t})(__emu::ptx::mul_hi({a}, {b}) + {c})")
        if "wide" in mods:
            return _set(_dest(args[0], regs), "uint64_t", f"__emu::ptx::mul_wide({a}, {b}) + (int64_t){c}")
        if t in _SIGNED:
            return _set(_dest(args[0], regs), t, f"({t})(({_SIGNED[t]}){a} * ({_SIGNED[t]}){b} + ({_SIGNED[t]}){c})")
        return _set(_dest(args[0], regs), t, f"({t})({a} * {b} + {c})")
    if op in ("min", "max"):
        a, b = _get(t, _value(args[1], regs)), _get(t, _value(args[2], regs))
        fn = f"f{op}" if t in ("float", "double") else f"std::{op}"
        if t in _PACKED_OR_16BIT:
            fn = f"__h{op}2" if t in ("__half2", "__nv_bfloat162") else f"__h{op}"
        return _set(_dest(args[0], regs), t, f"({t}){fn}({a}, {b})")
    if op in ("neg", "abs", "not", "cnot", "popc", "clz", "brev", "rcp") or op in _UNARY_MATH:
        a = _get(t, _value(args[1], regs))
        expr = {"neg": f"({t})(-{a})", "abs": f"({t})({a} < 0 ? -{a} : {a})", "not": f"({t})(~{a})",
                "cnot": f"({t})({a} == 0)", "popc": f"__emu::ptx::popc({a})", "clz": f"__emu::ptx::clz({a})",
                "brev": f"__emu::ptx::brev({a})", "rcp": f"__emu::ptx::quotient<{t}>(({t})1, {a})"}.get(op)
        if expr is None:
            expr = f"({t}){_UNARY_MATH[op]}({a})"
        out_t = "uint32_t" if op in ("popc", "clz") else t
        return _set(_dest(args[0], regs), out_t, expr)
    if op == "shf":  # funnel shift: shf.l.wrap.b32 d, lo, hi, n
        left = "l" in mods
        clamp = "clamp" in mods
        lo, hi, n = (_value(x, regs) for x in args[1:4])
        fn = "__funnelshift_l" if left else "__funnelshift_r"
        return _set(_dest(args[0], regs), "uint32_t",
                    f"{fn}{'c' if clamp else ''}((unsigned){lo}, (unsigned){hi}, (unsigned){n})")
    if op == "bfe":
        a, pos, length = _get(t, _value(args[1], regs)), _value(args[2], regs), _value(args[3], regs)
        return _set(_dest(args[0], regs), t, f"__emu::ptx::bfe<{t}>({a}, (unsigned){pos}, (unsigned){length})")
    if op == "bfi":
        a, b, pos, length = (_value(x, regs) for x in args[1:5])
        return _set(_dest(args[0], regs), t, f"__emu::ptx::bfi<{t}>({_get(t, a)}, {_get(t, b)}, (unsigned){pos}, "
                                             f"(unsigned){length})")
    if op == "lop3":
        a, b, c, lut = (_value(x, regs) for x in args[1:5])
        return _set(_dest(args[0], regs), "uint32_t", f"__emu::ptx::lop3((uint32_t){a}, (uint32_t){b}, "
                                                      f"(uint32_t){c}, (unsigned){lut})")
    if op == "prmt":
        mode = next((m for m in mods if m in ("f4e", "b4e", "rc8", "ecl", "ecr", "rc16")), None)
        if mode:
            raise PtxError(f"the inline PTX instruction '{head}': prmt's {mode} mode is not modelled (the default "
                           "mode is)")
        a, b, c = (_value(x, regs) for x in args[1:4])
        return _set(_dest(args[0], regs), "uint32_t", f"__emu::ptx::prmt((uint32_t){a}, (uint32_t){b}, (uint32_t){c})")
    if op == "setp":
        cmp = next((m for m in mods if m in _COMPARE or m in _UNORDERED), None)
        if cmp is None:
            raise refuse
        a, b = _get(t, _value(args[1], regs)), _get(t, _value(args[2], regs))
        if cmp in _UNORDERED:  # true when either is NaN: the negated opposite ordered compare
            test = _UNORDERED[cmp].format(a=a, b=b)
        elif cmp == "ne" and t in ("float", "double"):  # ordered: false when either is NaN (C++'s != is not)
            test = f"({a} < {b} || {a} > {b})"
        else:
            test = f"({a} {_COMPARE[cmp]} {b})"
        combine = next((m for m in mods if m in ("and", "or", "xor")), None)
        dests = args[0].split("|")

        def combined(value: str) -> str:  # setp.lt.and.s32 p, a, b, q: p = (a < b) && q
            if not combine:
                return value
            c = args[3].strip()
            other = f"!{_value(c[1:], regs)}" if c.startswith("!") else f"({_value(c, regs)} != 0)"
            operator = {"and": "&&", "or": "||", "xor": "!="}[combine]
            return f"({value} {operator} {other})"
        code = f"{_dest(dests[0], regs)} = {combined(test)} ? 1 : 0;"
        if len(dests) > 1:  # p|q: q takes the complement of the compare
            code += f" {_dest(dests[1], regs)} = {combined('!' + test)} ? 1 : 0;"
        return code
    if op == "selp":
        a, b, p = _value(args[1], regs), _value(args[2], regs), _value(args[3], regs)
        return f"{_dest(args[0], regs)} = {p} ? {a} : {b};"
    if op == "shfl":
        mode = next((m for m in mods if m in _WARP_SHFL), None)
        if mode is None or "sync" not in mods:
            raise refuse
        dests = args[0].split("|")
        if len(dests) > 1:
            raise PtxError(f"the inline PTX instruction '{head}': the predicate output of shfl.sync (d|p) is not "
                           "modelled; use __shfl_*_sync")
        a, b, c = (_value(x, regs) for x in args[1:4])
        mask = _value(args[4], regs) if len(args) > 4 else "0xffffffffull"
        return (f"{_dest(dests[0], regs)} = __emu::ptx::shfl(__emu::{_WARP_SHFL[mode]}, __FILE__, __LINE__, "
                f"(unsigned){mask}, (uint32_t){a}, (unsigned){b}, (unsigned){c});")
    if op == "vote":
        mode = next((m for m in mods if m in ("ballot", "any", "all", "uni")), None)
        if mode is None:
            raise refuse
        p = args[1].strip()
        pred = f"!{_value(p[1:], regs)}" if p.startswith("!") else _value(p, regs)
        mask = _value(args[2], regs) if len(args) > 2 else "0xffffffffull"
        op_name = {"ballot": "W_BALLOT", "any": "W_ANY", "all": "W_ALL", "uni": "W_ALL"}[mode]
        return (f"{_dest(args[0], regs)} = __emu::warp_op(__emu::{op_name}, __FILE__, __LINE__, (unsigned){mask}, "
                f"({pred}) ? 1 : 0, 0, 32);")
    if op == "activemask":
        return f"{_dest(args[0], regs)} = __activemask();"
    if op == "redux" and "sync" in mods:
        return _redux(mods, args, regs, head)
    if op == "elect" and "sync" in mods:
        return _elect(args, regs)
    if op in ("bar", "barrier") and not any(m in mods for m in ("red", "cluster")):
        if "warp" in mods:
            return f"__syncwarp((unsigned){_value(args[0], regs) if args else '0xffffffffu'});"
        if len(args) > 1 or "arrive" in mods:  # bar.sync / bar.arrive id, count: a named barrier for `count` threads
            if len(args) < 2:
                raise PtxError(f"the inline PTX instruction '{head}' needs a thread count, as PTX's bar.arrive does")
            wait = "false" if "arrive" in mods else "true"
            return (f"__emu::named_barrier((int)({_value(args[0], regs)}), (int)({_value(args[1], regs)}), {wait}, "
                    "__FILE__, __LINE__);")
        if args and args[0].strip() not in ("0", "0x0"):
            # bar.sync id without a count: barrier `id` for all the block's threads ("If no thread count is
            # specified, all threads in the CTA participate", PTX ISA) -- not barrier 0, __syncthreads()'
            return f"__emu::named_barrier_of_block((int)({_value(args[0], regs)}), __FILE__, __LINE__);"
        return "__syncthreads();"
    if op in ("membar", "fence"):
        # fence.proxy.async (generic writes seen by async copies) and fence.mbarrier_init.release.cluster (an init
        # seen by the cluster): copies and barriers are the block's own memory here, so a full fence covers them
        if "proxy" in mods and "async" not in mods:
            raise refuse
        return "__threadfence();"
    if op == "nanosleep" or op in ("prefetch", "prefetchu"):
        return ""  # no sleeping and no caches to warm here
    if op == "cvta":  # generic <-> global addresses are the same pointers here; shared ones go through the windows
        if any(m in mods for m in ("local", "const", "param")):
            raise PtxError(f"the inline PTX instruction '{head}': .local/.const/.param address windows are not "
                           "modelled by minilora's CUDA emulator")
        if "shared" in mods:
            value = _value(args[1], regs)
            if "to" in mods:  # cvta.to.shared: generic pointer -> window address
                return f"{_dest(args[0], regs)} = __emu::shared_window_of((const void*)(uintptr_t)({value}), __FILE__, __LINE__);"
            return f"{_dest(args[0], regs)} = (uint64_t)(uintptr_t)__emu::shared_window_ptr({value}, 0, __FILE__, __LINE__);"
        return f"{_dest(args[0], regs)} = {_value(args[1], regs)};"
    if op == "isspacep":  # isspacep.space p, a: whether generic address a lies in that state space
        space = mods[0].split("::")[0] if mods else ""  # .shared::cta is the block's own shared memory
        test = {"shared": "__isShared", "global": "__isGlobal", "local": "__isLocal"}.get(space)
        if test is None:  # .const and .param: __constant__ variables and parameters are ordinary memory here
            raise refuse
        return f"{_dest(args[0], regs)} = {test}((const void*)(uintptr_t)({_value(args[1], regs)})) ? 1 : 0;"
    if op == "dp4a":  # dp4a.atype.btype d, a, b, c: four byte products (signed or not) added to c
        if len(types) != 2:
            raise refuse
        signed_a, signed_b = types[0] == "s32", types[1] == "s32"
        a, b, c = (_value(x, regs) for x in args[1:4])
        def byte(v: str, signed: bool, k: int) -> str:
            return f"(int32_t)({'(int8_t)' if signed else '(uint8_t)'}(uint8_t)((uint32_t){v} >> {8 * k}))"
        terms = " + ".join(f"{byte(a, signed_a, k)} * {byte(b, signed_b, k)}" for k in range(4))
        return f"{_dest(args[0], regs)} = (uint32_t)((uint32_t)(int32_t){c} + (uint32_t)({terms}));"
    if op in ("trap", "brkpt"):
        return "__trap();"
    if op == "exit":  # the thread ends; a barrier no longer waits for it (runtime.cpp, thread_exit)
        return "__emu::exit_thread();"
    if op in ("atom", "red"):
        kind = next((m for m in mods if m in _ATOMIC), None)
        if kind is None:  # (.cluster, .gpu, .sys: scopes; every atomic here is real, so the widest)
            raise refuse
        ptr_type = {"float": "float", "double": "double", "int32_t": "int", "uint32_t": "unsigned",
                    "uint64_t": "unsigned long long", "__half": "__half", "__half2": "__half2",
                    "__nv_bfloat16": "__nv_bfloat16", "__nv_bfloat162": "__nv_bfloat162"}.get(t)
        if ptr_type is None:
            raise refuse
        first = 1 if op == "atom" else 0
        addr = _space_address(mods, args[first], regs, f"sizeof({ptr_type})")
        values = [_get(ptr_type if t != "int64_t" else t, _value(x, regs)) for x in args[first + 1:]]
        call = f"{_ATOMIC[kind]}(({ptr_type}*){addr}, {', '.join(values)})"
        return _set(_dest(args[0], regs), ptr_type, call) if op == "atom" else f"{call};"
    raise refuse
