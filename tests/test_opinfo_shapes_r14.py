"""torch's OpInfo database (op_db) run through minilora: shape and view ops, indexing, scatter/gather, creation
and random ops.

Each OpInfo of the category (reshape, permute, split, cat, diagonal, as_strided, the *_copy and *_scatter ops,
gather, scatter_reduce, index_reduce, take, nonzero, arange, linspace, full, eye, to, bernoulli, normal,
multinomial, ...), each sample torch's own developers wrote, in each variant the OpInfo has (function, method,
in-place), with its arguments spelled as torch's database spells them: minilora's answer has torch's structure,
shape and dtype, and its values are torch's bits (float64, float32, bfloat16, integers, bool), except where a
dict below says why not. Random ops draw after op_db's own ``manual_seed(42)``: minilora's generator is torch's,
so the draws are compared bit for bit too. float64 gradients (a fixed random cotangent) agree within 1e-13, and
each of the database's error inputs is refused. OpInfos minilora does not implement are in REFUSED: the test
checks they are refused by name.
"""
import itertools
import types

import numpy as np
import pytest

from torch_db import assert_same, dtype_name, error_inputs, ml, resolve, sample_inputs, to_minilora, torch

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

NAMES = set("""item arange cauchy exponential geometric log_normal normal uniform broadcast_to broadcast_shapes
broadcast_tensors block_diag combinations cartesian_prod chunk unsafe_chunk clone contiguous view_as_real
view_as_complex expand expand_as expand_copy diag diag_embed diagonal diagonal_copy diagonal_scatter alias_copy
flip fliplr flipud linspace logspace masked_scatter masked_select meshgrid as_strided as_strided_copy
as_strided_scatter to narrow narrow_copy view_copy permute permute_copy roll rot90 split unsafe_split
split_with_sizes split_with_sizes_copy select select_scatter slice slice_scatter tensor_split hsplit vsplit dsplit
ravel unravel_index reshape reshape_as view view_as atleast_1d atleast_2d atleast_3d flatten unflatten
column_stack gather index_fill index_copy index_select index_add index_reduce __getitem__ index_put put take
scatter empty_like zeros_like ones_like randn randn_like rand_like randint randint_like full_like new_zeros
new_ones ones zeros full new_empty new_empty_strided empty_strided empty eye empty_permuted scalar_tensor new_full
multinomial bernoulli scatter_add stack _chunk_cat hstack cat unbind unbind_copy vstack dstack unfold unfold_copy
movedim repeat squeeze squeeze_copy resize_ resize_as_ take_along_dim tile unsqueeze unsqueeze_copy zero_
transpose transpose_copy T H mT mH tril triu triu_indices tril_indices nonzero nonzero_static t t_copy argwhere
repeat_interleave diagflat scatter_reduce sum_to_size""".split())
OPINFOS = [op for op in op_db if op.name in NAMES]


def key(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


# OpInfos minilora does not implement: ``minilora.<name>`` is refused by name (an AttributeError naming it)
REFUSED = {"_chunk_cat": "torch's private kernel behind FSDP's gradient packing (torch._chunk_cat): not a "
                         "public torch function"}
# op_db's op is ATen's operator itself, not a torch function: minilora's public twin of it computes the same values
TWIN = {"slice": "slice_copy"}  # (torch.ops.aten.slice.Tensor: x[..., start:end:step], copied)
# uninitialised memory: shape and dtype compared, values not
UNINITIALISED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted"}
# float64 results that are sums: NumPy adds in its pairwise order, torch in ATen's vectorised cascade, so the
# last bit may differ (1 ulp on op_db's samples); the project's float64 standard, 1e-13 relative, bounds it
FLOAT64_SUMS = {"sum_to_size"}
# minilora's gradient is not torch's here, on purpose
GRADIENT_DIFFERS = {
    "as_strided_scatter": "torch 2.13 gives input the gradient inside the scattered slice, where the values are "
                          "src's (minilora/ops/shape.py as_strided_scatter: minilora gives the true gradient, "
                          "which torch gives for the same computation written with a clone and copy_); src's "
                          "gradient is compared",
}
# error inputs minilora answers where torch refuses: (which ones, the reason); the test checks that only those
# are answered, and that some still are
ANSWERED = {
    "gather": (lambda sample: "out" in sample.kwargs and sample.kwargs["out"].numel() < sample.args[1].numel(),
               "an out= too small for the result, a view whose storage runs on into the index: torch resizes it in "
               "place, into the index's memory, then refuses the overlap; minilora's resized out is new memory"),
}
# keywords of op_db's samples that minilora refuses (a TypeError naming the keyword), with the reason
REFUSED_KEYWORDS = {"layout": "minilora has no torch.layout (every tensor is strided): its factories, normal's "
                              "number overload among them, refuse the keyword"}
# ops that draw: both generators are seeded alike before each call (op_db's function variants seed themselves)
RANDOM = {"cauchy", "exponential", "geometric", "log_normal", "normal", "uniform", "randn", "randn_like",
          "rand_like", "randint", "randint_like", "multinomial", "bernoulli"}
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.int64, torch.bool)
SAMPLES_PER_DTYPE = 8
SAMPLES_WITH_GRADIENT = 5


# ---- carrying op_db's calls over -------------------------------------------------------------------------
def _set_seed_as_op_db(op, *args, **kwargs):
    """op_db's wrapper_set_seed for minilora: the same seed before the draw."""
    ml.manual_seed(42)
    return op(*args, **kwargs)


def on_minilora(fn):
    """One of op_db's lambdas (``lambda x: x.mT``, ``wrapper_set_seed(torch.Tensor.cauchy_, ...)``) with its
    ``torch`` meaning minilora."""
    names = dict(fn.__globals__, torch=ml, wrapper_set_seed=_set_seed_as_op_db)
    return types.FunctionType(fn.__code__, names, fn.__name__, fn.__defaults__, fn.__closure__)


def is_lambda(fn):
    return isinstance(fn, types.FunctionType) and fn.__name__ == "<lambda>"


def minilora_function(op):
    if op.name in TWIN:
        return getattr(ml, TWIN[op.name])
    if op.name == "__getitem__":
        return ml.Tensor.__getitem__
    if is_lambda(op.op):
        return on_minilora(op.op)
    return resolve(ml, op.op.__name__)


def variants(op):
    """(variant, torch's callable, minilora's) for the function, method and in-place spellings."""
    yield "function", op.op, minilora_function(op)
    for kind, theirs in (("method", op.method_variant), ("inplace", op.inplace_variant)):
        if theirs is not None and op.name != "__getitem__":
            yield kind, theirs, on_minilora(theirs) if is_lambda(theirs) else getattr(ml.Tensor, theirs.__name__)


def convert(value, memo=None):
    """``to_minilora``, with a view kept a view: a tensor made from another (``base[5:15]``, ``x.expand(3)``, an
    out= tensor that is a slice of the input) becomes the same view of the converted base, so as_strided reads
    the same storage and an overlap torch refuses is one in minilora too."""
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = (value, _converted_tensor(value, memo))
        return memo[id(value)][1]
    if isinstance(value, dict):
        return {name: convert(item, memo) for name, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(convert(item, memo) for item in value)
    if isinstance(value, torch.memory_format):
        return getattr(ml, str(value).removeprefix("torch."))
    return to_minilora(value)


def _converted_tensor(tensor, memo):
    if tensor._base is None or not tensor.is_leaf:
        return to_minilora(tensor)
    base = convert(tensor._base, memo)
    with ml.no_grad():
        view = ml.as_strided(base, tuple(tensor.shape), tensor.stride(), tensor.storage_offset())
    return view.requires_grad_() if tensor.requires_grad else view


def call(fn, arguments, seeded=None):
    first, args, kwargs = arguments
    if seeded is not None:
        seeded.manual_seed(0)
    return fn(first, *args, **kwargs)


def arguments_of(sample):
    return (sample.input, tuple(sample.args), dict(sample.kwargs))


def samples(op, dtype):
    requires_grad = dtype == torch.float64 and op.supports_autograd
    return list(itertools.islice(sample_inputs(op, dtype, requires_grad), SAMPLES_PER_DTYPE))


# ---- comparing -------------------------------------------------------------------------------------------
def tensors_in(value, kind):
    if isinstance(value, kind):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for part in value for t in tensors_in(part, kind)]
    return []


def compare(name, ours, theirs, what):
    if name in UNINITIALISED:
        assert tuple(ours.shape) == tuple(theirs.shape) and dtype_name(ours) == dtype_name(theirs), what
    elif name in FLOAT64_SUMS and theirs.dtype == torch.float64:
        assert_same(ours, theirs, 1e-13, 0, what)
    else:
        assert_same(ours, theirs, 0, 0, what)


def check_gradients(op, sample, arguments, theirs, ours, what):
    """sum(outputs * fixed random cotangents) differentiated w.r.t. every input that requires grad."""
    torch_outputs = [t for t in tensors_in(sample.output_process_fn_grad(theirs), torch.Tensor) if t.requires_grad]
    if not torch_outputs:
        return
    our_outputs = [t for t in tensors_in(sample.output_process_fn_grad(ours), ml.Tensor) if t.requires_grad]
    assert len(our_outputs) == len(torch_outputs), f"{what}: outputs that require grad"
    torch_leaves = [t for t in tensors_in(arguments_of(sample), torch.Tensor) if t.requires_grad]
    our_leaves = [t for t in tensors_in(arguments, ml.Tensor) if t.requires_grad]
    if op.name in GRADIENT_DIFFERS:  # (the input's gradient is minilora's own: see the dict)
        torch_leaves, our_leaves = torch_leaves[1:], our_leaves[1:]
    torch_outputs = [torch.view_as_real(t) if t.is_complex() else t for t in torch_outputs]  # (real cotangents)
    our_outputs = [ml.view_as_real(t) if t.is_complex() else t for t in our_outputs]
    rng = np.random.default_rng(0)
    cotangents = [rng.standard_normal(tuple(t.shape)) for t in torch_outputs]
    expected = torch.autograd.grad(sum((t * torch.from_numpy(c)).sum() for t, c in zip(torch_outputs, cotangents)),
                                   torch_leaves, allow_unused=True)
    got = ml.autograd.grad(sum((t * ml.tensor(c)).sum() for t, c in zip(our_outputs, cotangents)), our_leaves,
                           allow_unused=True)
    for index, (mine, torchs) in enumerate(zip(got, expected)):
        if torchs is None or (mine is None and torchs.numel() == 0):  # (an empty input's empty gradient)
            assert mine is None or mine.numel() == 0, f"{what}: gradient {index} where torch has none"
            continue
        assert mine is not None, f"{what}: no gradient {index}"
        assert_same(mine, torchs, 1e-13, 1e-13, f"{what}: gradient {index}")


COMPARED = [op for op in OPINFOS if key(op) not in REFUSED]


@pytest.mark.parametrize("op", COMPARED, ids=key)
def test_samples_match_torch(op):
    supported = op.supported_dtypes("cpu")
    for dtype in (d for d in DTYPES if d in supported):
        for number, sample in enumerate(samples(op, dtype)):
            for kind, theirs_fn, mine_fn in variants(op):
                what = f"{key(op)} {kind} {dtype} sample {number}"
                if kind == "inplace":  # (on a copy: the sample's input stays for the next variant)
                    sample = sample.transform(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t)
                arguments = convert(arguments_of(sample))
                refused = set(sample.kwargs) & set(REFUSED_KEYWORDS)
                if refused:
                    with pytest.raises(TypeError, match=refused.pop()):
                        call(mine_fn, arguments)
                    continue
                draws = op.name in RANDOM
                try:
                    theirs = call(theirs_fn, arguments_of(sample), torch if draws else None)
                except Exception:  # torch refuses (an in-place result that would broadcast): so must minilora
                    with pytest.raises(Exception):
                        call(mine_fn, arguments)
                    continue
                ours = call(mine_fn, arguments, ml if draws else None)
                assert (ours is arguments[0]) == (theirs is sample.input), f"{what}: the input itself returned"
                for mine, torchs in zip(tensors_in([ours], ml.Tensor), tensors_in([theirs], torch.Tensor)):
                    compare(op.name, mine, torchs, what)
                assert_same(ours, theirs, 0, 0, what) if op.name not in UNINITIALISED | FLOAT64_SUMS else None
                if kind == "inplace":
                    compare(op.name, arguments[0], sample.input, what + ": self after")
                if kind == "function" and dtype == torch.float64 and op.supports_autograd \
                        and number < SAMPLES_WITH_GRADIENT:
                    check_gradients(op, sample, arguments, theirs, ours, what)


ERROR_CASES = [op for op in COMPARED if op.error_inputs_func is not None]


@pytest.mark.parametrize("op", ERROR_CASES, ids=key)
def test_error_inputs_are_refused(op):
    """Each call torch's database says torch refuses is refused by minilora too (any exception: some wordings
    differ), except where ANSWERED says why minilora answers it."""
    mine_fn = minilora_function(op)
    known, _ = ANSWERED.get(key(op), (lambda sample: False, ""))
    answered, answered_as_known = [], 0
    for error in error_inputs(op):
        sample = error.sample_input
        try:
            call(mine_fn, convert(arguments_of(sample)))
        except Exception:
            continue
        if known(sample):
            answered_as_known += 1
        else:
            answered.append(f"{error.error_regex!r} for {sample.input!r:.80} {sample.args!r:.80} "
                            f"{sample.kwargs!r:.80}")
    assert not answered, f"{key(op)}: torch refuses, minilora answers:\n" + "\n".join(answered)
    assert answered_as_known or key(op) not in ANSWERED, f"{key(op)} refuses all now: update ANSWERED"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_name(name):
    with pytest.raises(AttributeError, match=name):
        getattr(ml, name)


def test_every_opinfo_of_the_category_is_compared_or_refused():
    """A new op_db entry of these names is compared, or refused with a reason: nothing is skipped silently."""
    assert {key(op) for op in OPINFOS} == {key(op) for op in COMPARED} | set(REFUSED)
    missing = [key(op) for op in COMPARED if minilora_function(op) is None]
    assert not missing, f"minilora lacks {missing}"


# ---- found by the sweep, beside op_db's own calls --------------------------------------------------------
WRITES_THROUGH_A_NUMBER_INDEX = {
    "fill_": lambda lib, x: x[3].fill_(7.0),
    "select_copy_": lambda lib, x: x.select(0, 2).copy_(lib.tensor(9.0, dtype=lib.float64)),
    "add_": lambda lib, x: x[1].add_(100),
    "matrix element": lambda lib, x: x.view(2, 3)[1, 2].mul_(-1),
    "select_scatter": lambda lib, x: x.copy_(lib.select_scatter(x, lib.tensor(-4.0, dtype=lib.float64), 0, 2)),
}


@pytest.mark.parametrize("write", sorted(WRITES_THROUGH_A_NUMBER_INDEX))
def test_an_element_taken_by_integers_is_a_view(write):
    """x[3] (every dimension taken by an integer) is a 0-d view of x, as torch's: writing into it changes x, and
    the gradient flows through the write (NumPy hands back a copied scalar: minilora's writes were lost)."""
    results = []
    for lib in (ml, torch):
        leaf = lib.arange(6.0, dtype=lib.float64, requires_grad=True)
        x = leaf * 2
        WRITES_THROUGH_A_NUMBER_INDEX[write](lib, x)
        (x * lib.arange(1.0, 7.0, dtype=lib.float64)).sum().backward()
        results.append((x.detach().numpy(), leaf.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


COPY_TWINS = {  # torch's *_copy functions op_db has no OpInfo of
    "select_copy": lambda lib, x: lib.select_copy(x, 1, -1),
    "slice_copy": lambda lib, x: lib.slice_copy(x, 1, 1, None, 2),
    "split_copy": lambda lib, x: lib.split_copy(x, 2, dim=1),
    "unsafe_split_with_sizes": lambda lib, x: lib.unsafe_split_with_sizes(x, [1, 3], 1),
}


@pytest.mark.parametrize("name", sorted(COPY_TWINS))
def test_copy_twins_as_torch(name):
    results = []
    for lib in (ml, torch):
        x = lib.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
        out = COPY_TWINS[name](lib, x)
        pieces = out if isinstance(out, tuple) else (out,)
        sum((p * (i + 2)).sum() for i, p in enumerate(pieces)).backward()
        results.append([p.detach().numpy() for p in pieces] + [x.grad.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
def test_arange_with_a_fractional_step_is_torchs_bits(dtype):
    """torch's arange kernel starts each 32-byte vector from its own rounded base and fuses its multiply-adds where
    its build does (float64 and float32 on AVX2/AVX-512 builds): ``start + i * step`` rounded once differs from it
    in the last bit of ~20-30% of the elements (before: arange(0, 1000, 0.1) float64, 2323 of 10000). More than
    32768 elements are cut into each thread's chunk, as at::parallel_for cuts them (torch's threads there,
    minilora's here: the test gives both the same number)."""
    threads = ml.num_threads()
    ml.set_num_threads(torch.get_num_threads())
    try:
        for start, end, step in [(0, 1000, 0.1), (0.3, 500, 0.7), (1, 2, 1e-3), (2.5, -7.1, -0.3), (0, 40000, 0.37)]:
            ours = ml.arange(start, end, step, dtype=getattr(ml, dtype))
            theirs = torch.arange(start, end, step, dtype=getattr(torch, dtype))
            assert_same(ours, theirs, 0, 0, f"arange({start}, {end}, {step}, dtype={dtype})")
    finally:
        ml.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_linspace_as_torch_and_logspace_refused(dtype):
    """op_db's complex samples: linspace's real and imaginary parts are each torch's real range (it crashed in a
    NumPy integer check); complex logspace (torch's complex pow) is refused by name."""
    for op in (op for op in OPINFOS if op.name == "linspace" and not op.variant_test_name):
        for sample in samples(op, dtype):
            assert_same(call(ml.linspace, convert(arguments_of(sample))), call(op.op, arguments_of(sample)), 0, 0)
    assert_same(ml.linspace(1 + 2j, 3 - 1j, 4), torch.linspace(1 + 2j, 3 - 1j, 4))
    with pytest.raises(NotImplementedError, match="logspace of a complex dtype"):
        ml.logspace(0, 1, 3, dtype=convert(dtype))
