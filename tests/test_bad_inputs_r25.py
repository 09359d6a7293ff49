"""Round 25's bad inputs, found by rerunning tests/bad_inputs_sweep_torch.py, bad_inputs_sweep_tensor.py (now with
their ``accepts`` pass: each candidate call minilora answered and torch refuses) and promotion_sweep.py: torch's
class and first line of words where both refuse, torch's answer where torch answers.

- ``requires_grad=None`` to torch's TensorOptions factories is False (_argument_types.OPTIONAL_REQUIRES_GRAD);
- calls minilora answered that torch refuses: sizes one by one or a bare int for an ``int[]`` after the input
  (view_copy, as_strided, flip, tile, new_full), a Tensor for a float (nan_to_num, celu), overloads no call
  matches (result_type(x), bernoulli(x, t), trapezoid(y, 1)), index_put's indices, native_dropout's train;
- an in-place elementwise op checks its output's shape, then the promoted dtype's fit, before the kernel looks at
  the dtypes (Tensor._check_elementwise_inplace: promotion_sweep's errtype 660 -> 28);
- torch's words: Tensors one by one (einsum, meshgrid, ...), x.repeat/permute/tile/flip's non-ints, x.is_set_to(3),
  softmax's positional dtype, a non-float Parameter, and NumPy's MemoryError as torch's CPU allocator's RuntimeError.
"""
import warnings

import numpy as np
import pytest
import torch

import minilora as ml


def X(L, *shape):
    return L.tensor(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))


def _outcome(call, L):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call(L)
    except Exception as e:  # noqa: BLE001  (each refusal is compared with torch's)
        return type(e).__name__, str(e).split("\n")[0]
    return "OK", result


def _same_as_torch(call):
    ours, theirs = _outcome(call, ml), _outcome(call, torch)
    if theirs[0] == "OK":
        assert ours[0] == "OK", ours
        return ours[1], theirs[1]
    assert ours == theirs


@pytest.mark.parametrize("call", [
    lambda L: L.zeros(2, requires_grad=None), lambda L: L.arange(3, requires_grad=None),
    lambda L: L.hann_window(4, requires_grad=None), lambda L: L.zeros_like(L.ones(2), requires_grad=None),
    lambda L: L.ones(2).new_zeros(3, requires_grad=None), lambda L: L.scalar_tensor(3, requires_grad=None),
    lambda L: L.randn(2, requires_grad=None), lambda L: L.full((2,), 1.0, requires_grad=None),
    lambda L: L.normal(0.0, 1.0, (2,), requires_grad=None),
], ids=["zeros", "arange", "hann_window", "zeros_like", "new_zeros", "scalar_tensor", "randn", "full", "normal"])
def test_factories_read_requires_grad_none_as_false_as_torch(call):
    ours, theirs = _same_as_torch(call)
    assert ours.requires_grad is theirs.requires_grad is False


REFUSED_BY_TORCH = {
    "view_copy sizes one by one": lambda L: L.view_copy(X(L, 2, 3, 4), 4, 6),
    "as_strided bare ints": lambda L: L.as_strided(X(L, 2, 3, 4), 2, 2),
    "x.as_strided bare ints": lambda L: X(L, 2, 3, 4).as_strided(2, 2),
    "flip bare int": lambda L: L.flip(X(L, 2, 3, 4), 1),
    "tile bare int": lambda L: L.tile(X(L, 2, 3, 4), 2),
    "new_full bare int": lambda L: X(L, 2, 3).new_full(3, 1.0),
    "permute_copy ints": lambda L: L.permute_copy(X(L, 2, 3, 4), 1, 0, 2),
    "resize_as_ three": lambda L: L.resize_as_(X(L, 2, 3), X(L, 2, 3), X(L, 2, 3)),
    "nan_to_num tensor": lambda L: L.nan_to_num(X(L, 2, 3), X(L, 2, 3)),
    "x.nan_to_num_ list": lambda L: X(L, 2, 3).nan_to_num_([1.0, 2.0]),
    "celu tensor alpha": lambda L: L.celu(X(L, 2, 3), X(L, 2, 3)),
    "index_put int indices": lambda L: L.index_put(X(L, 2, 3), 1, L.tensor(1.0)),
    "index_put int among indices": lambda L: L.index_put(X(L, 2, 3), (L.tensor([0]), 2), L.tensor(1.0)),
    "x.index_put_ None index": lambda L: X(L, 2, 3).index_put_((L.tensor([0]), None), L.tensor(1.0)),
    "result_type one": lambda L: L.result_type(X(L, 2, 3)),
    "result_type three": lambda L: L.result_type(X(L, 2, 3), 1, 2),
    "bernoulli tensor p": lambda L: L.bernoulli(X(L, 2, 3).sigmoid(), X(L, 2, 3)),
    "x.bernoulli tensor p": lambda L: X(L, 2, 3).sigmoid().bernoulli(X(L, 2, 3)),
    "trapezoid dx by position": lambda L: L.trapezoid(X(L, 2, 3), 1),
    "trapz dx by position": lambda L: L.trapz(X(L, 2, 3), 0.5),
    "native_dropout int train": lambda L: L.native_dropout(X(L, 2, 3), 0.5, 1),
    "broadcast_tensors list": lambda L: L.broadcast_tensors([X(L, 2, 3)]),
    "randint size a bare int": lambda L: L.randint(3, 3),
    "randint size= a bare int": lambda L: L.randint(3, size=3),
    "x.type of a tensor": lambda L: X(L, 2, 3).type(X(L, 2, 3)),
    "x.sum_to_size no size": lambda L: X(L, 2, 3).sum_to_size(),
    "unravel_index of an int": lambda L: L.unravel_index(3, (4,)),
    "histogram 2-d bins": lambda L: X(L, 2, 3).histogram(X(L, 2, 2)),
    "ormqr 2-d tau": lambda L: L.ormqr(X(L, 3, 3), X(L, 3, 3), X(L, 3, 3)),
}
REFUSED_BY_TORCH_OTHERWISE = {  # (minilora refused too, in another class)
    "x.clamp_min None": lambda L: X(L, 2, 3).clamp_min(None),
    "clamp_max_ None": lambda L: L.clamp_max_(X(L, 2, 3), None),
    "x.quantile str": lambda L: X(L, 2, 3).quantile("a"),
    "nanquantile str": lambda L: L.nanquantile(X(L, 2, 3), "a"),
    "x.float_power str": lambda L: X(L, 2, 3).float_power("abc"),
    "lerp list weight": lambda L: L.lerp(X(L, 2, 3), X(L, 2, 3), [1.0, 2.0]),
}


@pytest.mark.parametrize("call", [*REFUSED_BY_TORCH.values(), *REFUSED_BY_TORCH_OTHERWISE.values()],
                         ids=[*REFUSED_BY_TORCH, *REFUSED_BY_TORCH_OTHERWISE])
def test_calls_torch_refuses_are_refused_in_its_words(call):
    assert _outcome(call, torch)[0] != "OK"
    _same_as_torch(call)


def _inplace(method, self_dtype, self_0d, other):
    def call(L):
        x = L.ones(() if self_0d else (4,), dtype=getattr(L, self_dtype))
        operand = other(L)
        return getattr(x, method)(operand) if method != "lerp_" else x.lerp_(operand, 0.5)
    return call


INPLACE_ORDER = {  # torch: the output's shape, then the promoted dtype's fit, then the kernel's dtypes
    "0-d f16 &= bool": _inplace("__iand__", "float16", True, lambda L: L.ones(4, dtype=L.bool)),
    "0-d bool <<= bool": _inplace("__ilshift__", "bool", True, lambda L: L.ones(4, dtype=L.bool)),
    "0-d int8 lerp_": _inplace("lerp_", "int8", True, lambda L: L.ones(4, dtype=L.int8)),
    "0-d bool clamp_min_ complex": _inplace("clamp_min_", "bool", True, lambda L: L.ones(4, dtype=L.complex64)),
    "bool clamp_min_ complex": _inplace("clamp_min_", "bool", False, lambda L: L.ones(4, dtype=L.complex64)),
    "f16 += 1j": _inplace("__iadd__", "float16", False, lambda L: 1 + 2j),
    "f16 mul_ 0-d complex": _inplace("mul_", "float16", False, lambda L: L.tensor(1j, dtype=L.complex64)),
    "0-d uint8 remainder_": _inplace("remainder_", "uint8", True, lambda L: L.ones(4, dtype=L.complex64)),
}


@pytest.mark.parametrize("call", INPLACE_ORDER.values(), ids=INPLACE_ORDER.keys())
def test_inplace_ops_check_shape_then_dtype_fit_as_torch(call):
    assert _outcome(call, torch)[0] != "OK"
    _same_as_torch(call)


def test_the_inplace_pre_check_leaves_clamps_complex_number_to_clamp_and_ops_run():
    _same_as_torch(_inplace("clamp_", "bool", False, lambda L: L.ones(4, dtype=L.complex64)))  # (the cast first)
    _same_as_torch(lambda L: L.ones(2).clamp_(1j))  # (a complex number: torch's Scalar conversion, not the cast)
    _same_as_torch(_inplace("clamp_max_", "bool", False, lambda L: 1j))  # (clamp's own refusal)
    x = ml.ones(4)
    x.add_(ml.ones(4), alpha=2).mul_(0.5).clamp_(max=1.0).lerp_(ml.zeros(1), 0.5)
    assert x.tolist() == [0.5] * 4


WORDS = {
    "einsum int": lambda L: L.einsum("i,i", X(L, 3), 2),
    "einsum list": lambda L: L.einsum("i,i", [X(L, 3), None]),
    "meshgrid int": lambda L: L.meshgrid(3),
    "meshgrid list of floats": lambda L: L.meshgrid([1.0, 2.0]),
    "meshgrid of nothing": lambda L: L.meshgrid(indexing="ij"),
    "cartesian_prod str": lambda L: L.cartesian_prod(X(L, 3), "a"),
    "chain_matmul list": lambda L: L.chain_matmul([X(L, 3, 3)]),
    "block_diag int": lambda L: L.block_diag(X(L, 2, 2), 2),
    "x.repeat str": lambda L: X(L, 2, 3).repeat("a"),
    "x.repeat str second": lambda L: X(L, 2, 3).repeat(1, "a"),
    "x.repeat float first": lambda L: X(L, 2, 3).repeat(1.5, 1),
    "x.permute float": lambda L: X(L, 2, 3, 4).permute(1.5, 0, 2),
    "x.permute list with a float": lambda L: X(L, 2, 3, 4).permute([1, 1.5, 2]),
    "x.tile str": lambda L: X(L, 2, 3).tile("a"),
    "x.tile tuple with a float second": lambda L: X(L, 2, 3).tile((1, 2.5)),
    "x.flip float": lambda L: X(L, 2, 3).flip(1.5),
    "x.is_set_to int": lambda L: X(L, 2, 3).is_set_to(3),
    "softmax dtype by position": lambda L: L.softmax(X(L, 2, 3), 0, 3),
    "x.log_softmax dtype by position": lambda L: X(L, 2, 3).log_softmax(0, "a"),
    "Linear of ints": lambda L: L.nn.Linear(2, 2, dtype=L.int64),
    "requires_grad_ of ints": lambda L: L.ones(2, dtype=L.int64).requires_grad_(),
    "factory of ints requiring grad": lambda L: L.zeros(2, dtype=L.int32, requires_grad=True),
}


@pytest.mark.parametrize("call", WORDS.values(), ids=WORDS.keys())
def test_refusals_in_torchs_class_and_words(call):
    _same_as_torch(call)


@pytest.mark.parametrize("call", [
    lambda L: L.empty(2 ** 40), lambda L: L.arange(2 ** 40), lambda L: L.zeros(2 ** 38, 16),
    lambda L: L.ones(4).expand(2 ** 38, 4).contiguous(), lambda L: L.ones(4).expand(2 ** 38, 4) + 1,
], ids=["empty", "arange", "zeros", "contiguous", "add"])
def test_a_cpu_allocation_too_large_is_torchs_runtime_error(call):
    _same_as_torch(call)
    with pytest.raises(MemoryError):  # (still a MemoryError to code that catches NumPy's)
        call(ml)


def test_the_sweeps_accepts_pass_finds_a_call_minilora_answers_and_torch_refuses(capsys):
    import os
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from bad_inputs_core import accepted_calls

    def lenient(L, name):  # a view_copy that takes the sizes one by one, as minilora's did
        return (lambda x, *sizes: x.reshape(*sizes)) if L is ml else getattr(L, name)
    assert accepted_calls("view_copy", lenient, "torch.") >= 1
    assert "accepts  torch.view_copy(Tensor, int, int" in capsys.readouterr().out
