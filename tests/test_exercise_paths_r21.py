"""Round 21: every exercise region is on the path the model really runs.

An exercise's promise is that what the learner writes is what the model trains with. Round 19 broke it without a
sign: float32 RMSNorm's backward ran a torch-bits twin of Exercise 2.2 and never called the region, so a learner's
float32 backward was dead code (and so was every learner's AdamW step, Exercise 6.1: ``AdamW.step`` ran
``adamw_update_as_torch``; and Exercise 2.1 for a view, ``x.T``). Here each Python region is replaced by
``raise NotImplementedError`` (in place, as ``minilora exercises build --only`` would cut it out: the enclosing
function's code object is swapped for one compiled with the stub) and the float32 CPU call that a learner's model
makes must then fail: a region that some float32 path skips shows as a row that runs through.

``PATHS`` has a row for every exercise: the call, or why no float32 CPU call reaches it (the CUDA regions run on
``emu``/``cuda`` only: tests/test_exercises_kernels.py). ``test_a_float32_llama_lora_step_reaches_its_regions``
runs the regions a Llama LoRA training step needs through one tiny step each.
"""
import ast
import contextlib
import functools
import importlib
import inspect
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import minilora as ml
from minilora import exercises

try:
    import torch
except ImportError:
    torch = None

ROOT = Path(exercises.__file__).resolve().parent.parent
EXERCISES = {e.number: e for e in exercises.find_exercises(ROOT)}
pytestmark = pytest.mark.skipif(not all(e.solved for e in EXERCISES.values()),
                                reason="a student copy: the regions are the learner's")
F = ml.nn.functional


# ---- putting a stub in a region's place --------------------------------------------------------------------
def _enclosing_function(tree, line):
    """The innermost (FunctionDef, [class names]) around 1-based ``line``."""
    found, classes = None, []

    def visit(node, owners):
        nonlocal found, classes
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)) and child.lineno <= line <= child.end_lineno:
                if isinstance(child, ast.FunctionDef):
                    found, classes = child, owners
                visit(child, owners + [child.name] if isinstance(child, ast.ClassDef) else owners)
    visit(tree, [])
    return found, classes


@functools.lru_cache(maxsize=None)
def _stub_code(number, replacement='raise NotImplementedError("stub")'):
    """(the live function object holding exercise ``number``'s region, its code with ``replacement`` (lines, at the
    region's indentation) as the region: by default a stub)."""
    ex = EXERCISES[number]
    module = importlib.import_module(ex.path[:-3].replace("/", "."))
    lines = Path(module.__file__).read_text(encoding="utf-8").splitlines()
    node, classes = _enclosing_function(ast.parse("\n".join(lines)), ex.begin + 1)
    indent = lines[ex.begin][:len(lines[ex.begin]) - len(lines[ex.begin].lstrip())]
    region = [indent + line for line in textwrap.dedent(replacement).strip("\n").splitlines()]
    body = lines[node.lineno - 1:ex.begin] + region + lines[ex.end + 1:node.end_lineno]
    # compiled inside a class, so that a method using super() keeps its __class__ cell
    source = "class _Owner:\n" + textwrap.indent(textwrap.dedent("\n".join(body)), "    ")
    [owner] = [c for c in compile(source, module.__file__, "exec").co_consts if isinstance(c, types.CodeType)]
    [new] = [c for c in owner.co_consts if isinstance(c, types.CodeType) and c.co_name == node.name]
    holder = module
    for name in classes:
        holder = inspect.unwrap(holder.__dict__[name]) if isinstance(holder, type) else getattr(holder, name)
    function = holder.__dict__[node.name]
    function = _defined_as(getattr(function, "__func__", function), ".".join(classes + [node.name]))
    assert function is not None, f"exercise {number}: no function {'.'.join(classes + [node.name])}"
    return function, new.replace(co_qualname=function.__code__.co_qualname)


def _defined_as(function, qualname):
    """The function object compiled from ``qualname``'s source: ``function`` itself, or the one a decorator wraps
    (``__wrapped__``, held in its closure, ``backward_in_float32``'s ``backward``, or in a keyword's default,
    ``quiet_float_errors``' ``_method``); None if none."""
    if not isinstance(function, types.FunctionType):
        return None
    if function.__code__.co_qualname == qualname:
        return function
    inner = [getattr(function, "__wrapped__", None)] + [c.cell_contents for c in function.__closure__ or ()]
    inner += list(function.__defaults__ or ()) + list((function.__kwdefaults__ or {}).values())
    return next((found for f in inner if (found := _defined_as(f, qualname)) is not None), None)


@contextlib.contextmanager
def stubbed(number, *replacement):
    """Exercise ``number``'s region replaced by ``raise NotImplementedError`` (or by ``replacement``: the function
    object's code swapped, so every reference to it, imports and methods included, runs the stub)."""
    function, stub = _stub_code(number, *replacement)
    solution, function.__code__ = function.__code__, stub
    try:
        yield
    finally:
        function.__code__ = solution


# ---- each exercise's float32 call ---------------------------------------------------------------------------
def _t(*shape, grad=True, seed=0):
    return ml.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), requires_grad=grad)


def _backward(y):
    (y * _t(*y.shape, grad=False, seed=9)).sum().backward()


def _tiny_peft(config=None, forward=True):
    from minilora.lora import LoraConfig, get_peft_model

    class Net(ml.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = ml.nn.Linear(4, 4)

        def forward(self, x):
            return self.q(x)
    model = get_peft_model(Net(), config or LoraConfig(r=2, target_modules=["q"], init_lora_weights=False))
    if forward:
        _backward(model(_t(3, 4)))
    return model


def _adamw_step():
    p = ml.nn.Parameter(_t(5))
    p.grad = _t(5, grad=False, seed=1)
    ml.optim.AdamW([p], lr=1e-3, weight_decay=0.1).step()


def _scratch_lora():
    from minilora.lora.scratch import ScratchLoraLinear
    _backward(ScratchLoraLinear(ml.nn.Linear(4, 5), r=2, lora_alpha=4)(_t(3, 4)))


def _llama_mlp():
    from minilora.nn.llama import LlamaConfig, LlamaMLP
    _backward(LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2))(_t(2, 8)))


def _cosine_schedule():
    opt = ml.optim.AdamW([ml.nn.Parameter(_t(2))], lr=1e-3)
    ml.optim.get_cosine_schedule_with_warmup(opt, 1, 10).step()


def _clip():
    p = ml.nn.Parameter(_t(5))
    p.grad = _t(5, grad=False) * 9
    ml.nn.utils.clip_grad_norm_([p], 1.0)


def _vera_merge():
    from minilora.lora import VeraConfig
    _tiny_peft(VeraConfig(r=2, target_modules=["q"], init_weights=False)).merge_and_unload()


def _delta_svd():
    from minilora.lora import diagnostics
    layer = _tiny_peft(forward=False).base_model.model.q
    diagnostics.delta_svd(layer.lora_A["default"].weight, layer.lora_B["default"].weight, 1.0)


def _effective_rank():
    from minilora.lora import diagnostics
    diagnostics.effective_rank(np.array([1.0, 0.5], np.float32))


def _rms_norm(view):
    base = _t(8, 6)
    x = base.T if view else base
    _backward(F.rms_norm(x, (x.shape[-1],), _t(x.shape[-1], seed=2), 1e-6))


def _lora_linear():
    _backward(ml.ops.lora_linear(_t(3, 4), _t(5, 4, grad=False), _t(2, 4), _t(5, 2), 2.0, bias=_t(5, grad=False),
                                 dropout_p=0.25))


CUDA = "a CUDA kernel: runs on emu/cuda only (tests/test_exercises_kernels.py stubs it there)"
PATHS = {  # exercise: [(what the call is, the call)] or a string saying why no float32 CPU call reaches it
    "1.1": [("a broadcast add's backward", lambda: _backward(_t(3, 1) + _t(2, 3, 4)))],
    "1.2": [("a broadcast mul's backward", lambda: _backward(_t(3, 1) * _t(2, 3, 4))),
            ("x * 2.5", lambda: _backward(_t(3, 4) * 2.5))],
    "1.3": [("a broadcast div's backward", lambda: _backward(_t(3, 1) / (_t(2, 3, 4, grad=False).abs() + 1)))],
    "1.4": [("a batched matmul's backward", lambda: _backward(_t(2, 3, 4) @ _t(4, 5))),
            ("bmm", lambda: _backward(ml.bmm(_t(2, 3, 4), _t(2, 4, 5))))],
    "1.5": [("F.linear's backward", lambda: _backward(F.linear(_t(2, 3, 4), _t(5, 4), _t(5))))],
    "1.6": [("softmax's backward", lambda: _backward(F.softmax(_t(3, 7), -1))),
            ("softmax along dim 0", lambda: _backward(F.softmax(_t(5, 3), 0)))],
    "1.7": [("log_softmax's backward", lambda: _backward(F.log_softmax(_t(3, 7), -1)))],
    "2.1": [("rms_norm", lambda: _rms_norm(view=False)), ("rms_norm of x.T", lambda: _rms_norm(view=True))],
    "2.2": [("rms_norm's backward", lambda: _rms_norm(view=False)),
            ("rms_norm of x.T's backward", lambda: _rms_norm(view=True))],
    "2.3": [("rotary_embedding's backward", lambda: _backward(ml.ops.rotary_embedding(
        _t(1, 2, 3, 4), np.cos(np.ones((1, 1, 3, 4), np.float32)), np.sin(np.ones((1, 1, 3, 4), np.float32)))))],
    "2.4": [("causal sdpa's backward", lambda: _backward(F.scaled_dot_product_attention(
        _t(1, 2, 4, 8), _t(1, 2, 4, 8, seed=1), _t(1, 2, 4, 8, seed=2), is_causal=True)))],
    "2.5": [("cross_entropy's backward", lambda: F.cross_entropy(_t(4, 6), ml.tensor([1, -100, 3, 0])).backward())],
    "2.6": [("LlamaMLP", _llama_mlp)],
    "3.1": [("matrix_lora_params", lambda: __import__("minilora.memory", fromlist=["_"]).matrix_lora_params(64, 64, 8))],
    "4.1": [("get_peft_model", lambda: _tiny_peft(forward=False))],
    "4.2": [("lora_linear", _lora_linear)],
    "4.3": [("lora_linear's backward", _lora_linear)],
    "4.4": [("get_peft_model", lambda: _tiny_peft(forward=False))],
    "4.5": [("ScratchLoraLinear", _scratch_lora)],
    "4.6": [("ScratchLoraLinear", _scratch_lora)],
    "5.1": CUDA,
    "5.2": CUDA,
    "6.1": [("AdamW.step", _adamw_step)],
    "6.2": [("clip_grad_norm_", _clip)],
    "6.3": [("the cosine schedule", _cosine_schedule)],
    "7.1": [("merge_and_unload", lambda: _tiny_peft().merge_and_unload())],
    "7.2": [("merge_and_unload", lambda: _tiny_peft().merge_and_unload())],
    "8.1": [("VeRA's merge_and_unload", _vera_merge)],
    "8.2": [("delta_svd", _delta_svd)],
    "8.3": [("effective_rank", _effective_rank)],
}


def test_every_exercise_region_is_on_its_float32_path():
    assert sorted(PATHS) == sorted(EXERCISES), "PATHS needs a row for every exercise, and only those"
    bypassed = []
    for number, calls in PATHS.items():
        if isinstance(calls, str):
            assert EXERCISES[number].path.endswith(".cu"), f"exercise {number}: only CUDA regions are left out"
            continue
        for name, call in calls:
            with stubbed(number):
                try:
                    call()
                except NotImplementedError as error:
                    assert str(error) == "stub", f"exercise {number}, {name}: {error}"
                else:
                    bypassed.append(f"exercise {number}: {name} ran without its region")
    assert not bypassed, "\n".join(bypassed)


def _llama_lora_step(dtype):
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    model = get_peft_model(LlamaForCausalLM(config).to(dtype=dtype), LoraConfig(
        r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]))
    ids = np.random.default_rng(0).integers(0, 32, (2, 6))
    optimizer = ml.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    schedule = ml.optim.get_cosine_schedule_with_warmup(optimizer, 1, 4)
    model(ids, labels=ids).loss.backward()
    ml.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()


TRAINING = ("1.1", "1.5", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "4.1", "4.2", "4.3", "4.4", "6.1", "6.2",
            "6.3")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_llama_lora_step_reaches_its_regions(dtype):
    """One tiny Llama LoRA training step (forward, backward, clipping, AdamW, the schedule) with each region it
    needs stubbed in turn: each must stop it, in float32 and in float64."""
    bypassed = []
    for number in TRAINING:
        with stubbed(number):
            try:
                _llama_lora_step(getattr(ml, dtype))
            except NotImplementedError as error:
                assert str(error) == "stub", f"exercise {number}: {error}"
            else:
                bypassed.append(number)
    assert not bypassed, f"a {dtype} Llama LoRA step ran without the regions of exercises {bypassed}"


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("shape", [(7, 37), (3, 5)], ids=str)
def test_float64_rms_norm_input_gradient_is_torchs_bits(rng, shape):
    """Exercise 2.2's solution is torch's composite's steps for float64 too (it was the normed formula there:
    within rounding, ~half of the elements an ulp off)."""
    x, w, g = (rng.standard_normal(s) for s in (shape, shape[-1:], shape))
    grads = []
    for lib in (torch, ml):
        xt = lib.tensor(x, requires_grad=True)
        lib.nn.functional.rms_norm(xt, shape[-1:], lib.tensor(w), 1e-6).backward(lib.tensor(g))
        grads.append(xt.grad.numpy())
    np.testing.assert_array_equal(grads[1], grads[0])


def _linear_bias_grad(dtype, weight_trained):
    x, w = _t(3, 4).to(dtype), _t(5, 4, grad=weight_trained).to(dtype)
    b = ml.tensor(np.ones(5), dtype=dtype, requires_grad=True)
    F.linear(x, w, b).sum().backward()
    return b.grad.numpy()


def _cross_entropy_grad(dtype):
    z = ml.tensor(np.random.default_rng(0).standard_normal((4, 6)), dtype=dtype, requires_grad=True)
    F.cross_entropy(z, ml.tensor([1, -100, 3, 0])).backward()
    return z.grad.numpy()


WRONG = {  # exercise: (a wrong region, the result it gives from the right one, the float32/float64 call)
    "1.5 (bias gradient doubled)": ("1.5", """
        if gx is not None:
            xp_of(g).matmul(g, w, out=gx)
        gw = g.T @ x if need_w else None
        gb = 2 * _sum_over_rows(g) if need_b else None
        """, lambda right: 2 * right, [functools.partial(_linear_bias_grad, weight_trained=trained)
                                        for trained in (True, False)]),
    "2.5 (one-hot added, not subtracted)": ("2.5", """
        share = ((g / divisor) * valid).astype(grad.dtype, copy=False)
        grad[...] = probs * share[:, None]
        grad[xp_of(grad).arange(len(grad)), targets] += share
        grad[valid == 0] = 0
        """, None, [_cross_entropy_grad]),
    "2.5 (ignored rows not zeroed)": ("2.5", """
        share = (g / divisor).astype(grad.dtype, copy=False)
        grad[...] = probs * share[:, None]
        grad[xp_of(grad).arange(len(grad)), targets] -= share
        """, None, [_cross_entropy_grad]),
}


@pytest.mark.parametrize("case", WRONG)
def test_what_a_region_computes_is_what_the_op_returns(case):
    """A region whose results the op recomputed after it (float32 and float64 F.linear summed the bias's gradient
    beside 1.5's region; F.cross_entropy rewrote 2.5's target entries and ignored rows) made a learner's wrong
    code pass unseen: with a wrong region in place, the op's result must change (to ``expected``, where given)."""
    number, wrong, expected, calls = WRONG[case]
    for dtype in (ml.float32, ml.float64):
        for call in calls:
            right = call(dtype)
            with stubbed(number, wrong):
                got = call(dtype)
            if expected is not None:
                np.testing.assert_array_equal(got, expected(right), err_msg=f"{dtype}")
            else:
                assert not np.array_equal(got, right), f"{dtype}: the wrong region left the result unchanged"
