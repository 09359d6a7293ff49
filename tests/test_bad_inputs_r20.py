"""Round 20: bad inputs that went through silently (or failed in NumPy's words), found by a sweep of the public API.

The sweep called the paths a LoRA learner walks -- LoraConfig and the PeftModel methods, the optimizers, tensor
indexing and factories, autograd and its hooks, DataLoader, Trainer and the CLI -- with inputs torch, transformers
and PEFT reject, and compared the exception type and message. Each row below is one it found, fixed where the
check belongs:

* a gradient hook that returns something other than a Tensor (a NumPy array, a number, a list): NumPy took it as
  the gradient (``register_hook``), or ``.grad`` kept the hook's dtype (create_graph=True: no check at all);
  now torch's TypeError "expected Variable, but hook returned '...'". A node hook (``grad_fn.register_hook`` /
  ``register_prehook``) that returns a list, or a prehook returning two gradients: accepted; now torch's errors
  (``(None,)`` from a prehook stops the gradient there, as torch). A post-accumulate-grad hook's return value was
  thrown away; torch refuses it. A module's full backward hook (and pre-hook) may not change a gradient's dtype or
  shape: a float64 gradient went on into a float32 layer, a wrong shape failed as an "internal error";
* indexing with an int8 / int16 tensor: NumPy's positions; torch's IndexError (a 0-d one is one position);
* ``arange`` / ``range`` with a NaN or infinite bound: Python's ValueError from int(); torch's "unsupported range";
* an optimizer state dict whose moments have another shape than the parameters (saved for another model): Adam
  broadcast a (4, 3) moment into a (1, 3) parameter without a word, the others failed in NumPy's words; now a
  RuntimeError at ``load_state_dict`` (torch raises at the first step);
* a bool parameter given something else -- ``requires_grad_("no")``, ``ones(2, requires_grad="no")``,
  ``F.dropout(x, training="no")``, ``x.sort(descending="no")``, ``x.sum(1, keepdim="no")``, ``requires_grad_(0)``:
  Python's truth decided (a non-empty string is true: the gradient was required, dropout ran, the sort descended);
  now torch's TypeError "argument '...' must be bool, not str" (``dtypes.bool_argument``);
* ``PeftModel.from_pretrained(model, folder, is_trainable="False")`` (a command line's string) and ``load_adapter``:
  loaded trainable (PEFT does the same); ``LoraConfig(ensure_weight_tying="no")`` was kept as true; now TypeErrors,
  as LoraConfig's other flags;
* ``F.linear(ndarray, w)`` ran on the array (torch's TypeError), ``F.linear(x, w, True)`` and ``F.relu_(5)``
  (every in-place activation) failed in an AttributeError of minilora's code: now torch's TypeError naming the
  argument;
* ``exclude_modules`` naming no module: PEFT warns, minilora said nothing;
* ``merge_and_unload(adapter_names="default")`` and a layer's ``merge("default")``: the string read letter by
  letter merged nothing (PEFT's TypeError); an adapter name that is no adapter of the model is refused too (PEFT
  skips it, so the merge folds nothing in).

Each row runs under minilora and must raise the exception type with the key words; with torch (and PEFT)
installed, the same code runs there, where torch raises the same."""
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import lora as mlora

try:
    import torch
except ImportError:  # the minilora expectations still run
    torch = None
try:
    import peft
except ImportError:
    peft = None


def libraries():
    return [ml] + ([torch] if torch is not None else [])


def leaf(L):
    return L.ones(3, requires_grad=True)


# --- gradient hooks ------------------------------------------------------------------------------
def leaf_hook_returns_array(L):
    x = leaf(L)
    x.register_hook(lambda g: g.detach().numpy() * 2)
    (x * 2).sum().backward()


def retained_hook_returns_float(L):
    x = leaf(L)
    y = x * 2
    y.retain_grad()
    y.register_hook(lambda g: 3.0)
    y.sum().backward()


def create_graph_hook_returns_int(L):
    x = leaf(L)
    x.register_hook(lambda g: 5)
    (x ** 2).sum().backward(create_graph=True)


def create_graph_hook_changes_dtype(L):
    x = leaf(L)
    y = x ** 2
    y.register_hook(lambda g: g.double())
    y.sum().backward(create_graph=True)


def create_graph_hook_changes_shape(L):
    x = leaf(L)
    x.register_hook(lambda g: g[:2])
    (x ** 2).sum().backward(create_graph=True)


def prehook_returns_list(L):
    x = leaf(L)
    y = x * 2
    y.grad_fn.register_prehook(lambda g: [g[0] * 2])
    y.sum().backward()


def prehook_returns_two(L):
    x = leaf(L)
    y = x * 2
    y.grad_fn.register_prehook(lambda g: (g[0], g[0]))
    y.sum().backward()


def node_hook_returns_list(L):
    x = leaf(L)
    y = x * 2
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: [grad_inputs[0] * 2, None])
    y.sum().backward()


def node_hook_returns_number(L):
    x = leaf(L)
    y = x * 2
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (5, None))
    y.sum().backward()


def post_accumulate_hook_returns_tensor(L):
    p = L.nn.Parameter(L.ones(3))
    p.register_post_accumulate_grad_hook(lambda t: t * 2)
    (p * 2).sum().backward()


def post_accumulate_hook_returns_number(L):
    p = L.nn.Parameter(L.ones(3))
    p.register_post_accumulate_grad_hook(lambda t: 5)
    (p * 2).sum().backward()


def module_backward_hook(L, hook, pre=False):
    layer = L.nn.Linear(3, 3)
    if pre:
        layer.register_full_backward_pre_hook(hook)
    else:
        layer.register_full_backward_hook(hook)
    x = L.ones(2, 3, requires_grad=True)
    layer(x).sum().backward()


HOOKS = [
    ("leaf hook returns an ndarray", leaf_hook_returns_array, TypeError, "hook returned 'numpy.ndarray'"),
    ("retained hook returns a float", retained_hook_returns_float, TypeError, "expected Variable, but hook returned"),
    ("create_graph hook returns an int", create_graph_hook_returns_int, TypeError, "hook returned 'int'"),
    ("create_graph hook changes the dtype", create_graph_hook_changes_dtype, RuntimeError,
     r"changed the type of value \(was torch.FloatTensor got torch.DoubleTensor\)"),
    ("create_graph hook changes the shape", create_graph_hook_changes_shape, RuntimeError,
     "changed the size of value"),
    ("prehook returns a list", prehook_returns_list, TypeError, "expected tuple, but hook returned 'list'"),
    ("prehook returns two gradients", prehook_returns_two, RuntimeError,
     r"incorrect number of values \(got 2, but expected 1\)"),
    ("node hook returns a list", node_hook_returns_list, TypeError, "expected tuple, but hook returned 'list'"),
    ("node hook returns a number", node_hook_returns_number, TypeError, "hook returned 'int'"),
    ("post-accumulate hook returns a Tensor", post_accumulate_hook_returns_tensor, RuntimeError,
     "post accumulate grad hooks should return None"),
    ("post-accumulate hook returns a number", post_accumulate_hook_returns_number, TypeError,
     "hook returned 'int'"),
    ("module backward hook changes the dtype",
     lambda L: module_backward_hook(L, lambda m, gi, go: (gi[0].double(),)), RuntimeError,
     "hook 'hook' has changed the type of value"),
    ("module backward pre-hook changes the shape",
     lambda L: module_backward_hook(L, lambda m, go: (L.ones(4),), pre=True), RuntimeError,
     "hook 'hook' has changed the size of value"),
    ("module backward hook returns a number",
     lambda L: module_backward_hook(L, lambda m, gi, go: (5,)), TypeError, "hook returned 'int'"),
]


@pytest.mark.parametrize("name, call, error, words", HOOKS, ids=[row[0] for row in HOOKS])
def test_hook_results_are_checked_as_torch(name, call, error, words):
    for lib in libraries():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch's full backward hook warnings)
            with pytest.raises(error, match=words):
                call(lib)


def test_prehook_returning_none_stops_the_gradient():
    for lib in libraries():
        x = leaf(lib)
        y = x * 2
        y.grad_fn.register_prehook(lambda g: (None,))
        (y.sum() + x.sum()).backward()
        assert x.grad.tolist() == [1.0, 1.0, 1.0]  # only the direct path: torch's answer (minilora: AttributeError)


# --- indexing, ranges ------------------------------------------------------------------------------
SMALL_INTEGER_INDEX = [
    ("x[int8]", lambda L: L.ones(3)[L.tensor([1], dtype=L.int8)]),
    ("x[:, int16]", lambda L: L.ones(2, 3)[:, L.tensor([1, 2], dtype=L.int16)]),
    ("x[int8] = v", lambda L: L.ones(3).__setitem__(L.tensor([1], dtype=L.int8), 2.0)),
    ("index_put int16", lambda L: L.ones(3).index_put((L.tensor([1], dtype=L.int16),), L.tensor(2.0))),
]


@pytest.mark.parametrize("name, call", SMALL_INTEGER_INDEX, ids=[row[0] for row in SMALL_INTEGER_INDEX])
def test_index_of_a_small_integer_dtype_is_refused(name, call):
    for lib in libraries():
        with pytest.raises(IndexError, match="tensors used as indices must be long, int, byte or bool tensors"):
            call(lib)
        assert lib.ones(3)[lib.tensor(1, dtype=lib.int8)].item() == 1.0  # (a 0-d one is one position, in both)


NAN, INF = float("nan"), float("inf")
RANGES = [
    ("arange(0, nan)", lambda L: L.arange(0, NAN), "unsupported range: 0 -> nan"),
    ("arange(nan, 5)", lambda L: L.arange(NAN, 5), "unsupported range: nan -> 5"),
    ("arange(1.5, inf)", lambda L: L.arange(1.5, INF), "unsupported range: 1.5 -> inf"),
    ("arange(-inf, 0)", lambda L: L.arange(-INF, 0), "unsupported range: -inf -> 0"),
    ("arange(0, 5, nan)", lambda L: L.arange(0, 5, NAN), "step must be nonzero"),
    ("arange(0, nan, dtype=int64)", lambda L: L.arange(0, NAN, dtype=L.int64), "unsupported range: 0 -> nan"),
]


@pytest.mark.parametrize("name, call, words", RANGES, ids=[row[0] for row in RANGES])
def test_range_bounds_that_are_not_finite(name, call, words):
    for lib in libraries():
        with pytest.raises(RuntimeError, match=words):
            call(lib)


def test_deprecated_range_with_a_nan_bound():
    for lib in libraries():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch.range is deprecated)
            with pytest.raises(RuntimeError, match="unsupported range: 0 -> nan"):
                lib.range(0, NAN)


# --- bool parameters --------------------------------------------------------------------------------------
def functional(L):
    return L.nn.functional


BOOLS = [
    ("x.requires_grad_('no')", lambda L: L.ones(2).requires_grad_("no"), "requires_grad"),
    ("x.requires_grad_(0)", lambda L: L.ones(2).requires_grad_(0), "requires_grad"),
    ("module.requires_grad_('no')", lambda L: L.nn.Linear(2, 2).requires_grad_("no"), "requires_grad"),
    ("ones(requires_grad='no')", lambda L: L.ones(2, requires_grad="no"), "requires_grad"),
    ("tensor(requires_grad='no')", lambda L: L.tensor([1.0], requires_grad="no"), "requires_grad"),
    ("Parameter(requires_grad='no')", lambda L: L.nn.Parameter(L.ones(2), requires_grad="no"),
     "requires?_grad"),  # (torch's names its _make_subclass's require_grad)
    ("set_grad_enabled('no')", lambda L: L.set_grad_enabled("no"), "enabled"),
    ("dropout(training='no')", lambda L: functional(L).dropout(L.ones(3), 0.5, training="no"), "train"),
    ("dropout2d(training='no')", lambda L: functional(L).dropout2d(L.ones(1, 2, 3, 3), 0.5, "no"), "train"),
    ("alpha_dropout(training='no')", lambda L: functional(L).alpha_dropout(L.ones(3), 0.5, "no"), "train"),
    ("rrelu(training='no')", lambda L: functional(L).rrelu(L.ones(3), training="no"), "training"),
    ("batch_norm(training='no')",
     lambda L: functional(L).batch_norm(L.ones(2, 3), L.zeros(3), L.ones(3), training="no"), "training"),
    ("sort(descending='no')", lambda L: L.tensor([1.0, 3.0, 2.0]).sort(descending="no"), "descending"),
    ("argsort(stable='no')", lambda L: L.tensor([2, 1]).argsort(stable="no"), "stable"),
    ("topk(largest='no')", lambda L: L.tensor([1.0, 3.0, 2.0]).topk(1, largest="no"), "largest"),
    ("unique(sorted='no')", lambda L: L.tensor([2, 1]).unique(sorted="no"), "sorted"),
    ("sum(keepdim='no')", lambda L: L.ones(2, 3).sum(1, keepdim="no"), "keepdim"),
    ("sum(1, 'no')", lambda L: L.sum(L.ones(2, 3), 1, "no"), "keepdim"),
    ("max(keepdim='no')", lambda L: L.ones(2, 3).max(1, keepdim="no"), "keepdim"),
    ("mean(keepdim=np.True_)", lambda L: L.ones(2, 3).mean(1, keepdim=np.True_), "keepdim"),
    ("median(keepdim='no')", lambda L: L.ones(2, 3).median(1, keepdim="no"), "keepdim"),
    ("kthvalue(keepdim='no')", lambda L: L.ones(2, 3).kthvalue(1, 1, "no"), "keepdim"),
]


@pytest.mark.parametrize("name, call, parameter", BOOLS, ids=[row[0] for row in BOOLS])
def test_bool_parameters_take_only_bools(name, call, parameter):
    for lib in libraries():
        words = rf"argument '{parameter}'( \(position \d\))? must be bool, not|expected one of"  # (torch's sort)
        with pytest.raises(TypeError, match=words):
            call(lib)


NOT_TENSORS = [
    ("linear(ndarray, w)", lambda L: functional(L).linear(np.ones((2, 3), np.float32), L.ones(4, 3)),
     r"linear\(\): argument 'input' \(position 1\) must be Tensor, not numpy.ndarray"),
    ("linear(x, w, True)", lambda L: functional(L).linear(L.ones(2, 3), L.ones(4, 3), True),
     r"linear\(\): argument 'bias' \(position 3\) must be Tensor, not bool"),
    ("relu_(5)", lambda L: functional(L).relu_(5),
     r"relu_\(\): argument 'input' \(position 1\) must be Tensor, not int"),
    ("elu_([1.0])", lambda L: functional(L).elu_([1.0]), "must be Tensor, not list"),
]


@pytest.mark.parametrize("name, call, words", NOT_TENSORS, ids=[row[0] for row in NOT_TENSORS])
def test_functional_arguments_that_are_not_tensors(name, call, words):
    for lib in libraries():
        with pytest.raises(TypeError, match=words):
            call(lib)


# --- optimizer state saved for another model ------------------------------------------------------------
OPTIMIZERS = ["Adam", "SGD", "RMSprop", "Adagrad", "Rprop"]  # (Adam's and _StepEach's loads; SGD's own)


def resume_on_another_shape(L, name, saved_shape, shape):
    options = {"momentum": 0.9} if name in ("SGD", "RMSprop") else {}
    p = L.nn.Parameter(L.ones(*saved_shape))
    optimizer = getattr(L.optim, name)([p], lr=0.1, **options)
    p.grad = L.ones(*saved_shape)
    optimizer.step()
    q = L.nn.Parameter(L.ones(*shape))
    resumed = getattr(L.optim, name)([q], lr=0.1, **options)
    resumed.load_state_dict(optimizer.state_dict())  # (minilora refuses here, torch at the step)
    q.grad = L.ones(*shape)
    resumed.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("shapes", [((4, 3), (1, 3)), ((3,), (5,))], ids=["broadcasts", "does not broadcast"])
def test_optimizer_state_of_another_shape_is_refused(name, shapes):
    for lib in libraries():
        error = IndexError if (lib is torch and name == "Rprop" and shapes[0] == (4, 3)) else RuntimeError  # (torch's)
        with pytest.raises(error, match="shape|size"):
            resume_on_another_shape(lib, name, *shapes)


def test_optimizer_state_check_names_the_state_and_both_shapes():
    words = (r"size mismatch for state 'exp_avg' of parameter 0: copying a state with shape \[4, 3\] from "
             r"checkpoint, the shape in current optimizer is \[1, 3\]")
    with pytest.raises(RuntimeError, match=words):
        resume_on_another_shape(ml, "Adam", (4, 3), (1, 3))


# --- LoRA ------------------------------------------------------------------------------------------------
def small_model(L):
    class Model(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.v_proj, self.head = L.nn.Linear(4, 4), L.nn.Linear(4, 4), L.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.v_proj(self.q_proj(x)))
    return Model()


def peft_libraries():
    return [(ml, mlora)] + ([(torch, peft)] if torch is not None and peft is not None else [])


def adapted(L, P, **options):
    config = P.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False, **options)
    return P.get_peft_model(small_model(L), config)


def test_exclude_modules_that_exclude_nothing_warn():
    for L, P in peft_libraries():
        with pytest.warns(UserWarning, match=r"You have passed exclude_modules=\{'k_porj'\} but no modules were "
                                             r"excluded. Please check that exclude_modules was set correctly."):
            adapted(L, P, exclude_modules=["k_porj"])


MERGE_STRINGS = [
    ("merge_and_unload('default')", lambda model: model.merge_and_unload(adapter_names="default")),
    ("layer.merge('default')", lambda model: model.base_model.model.q_proj.merge(adapter_names="default")),
]


@pytest.mark.parametrize("name, call", MERGE_STRINGS, ids=[row[0] for row in MERGE_STRINGS])
def test_merge_of_a_string_is_refused_as_peft(name, call):
    for L, P in peft_libraries():
        model = adapted(L, P)
        with pytest.raises(TypeError, match="adapter_names should be a list of strings, got 'default'"):
            call(model)
        assert model.base_model.model.q_proj.merged_adapters == []


@pytest.mark.parametrize("how", ["merge_adapter", "merge_and_unload"])
def test_merge_of_an_adapter_the_model_lacks_is_refused(how):
    model = adapted(ml, mlora)
    weight = model.base_model.model.q_proj.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match=r"Adapter defualt not found.*adapters: \['default'\]"):
        getattr(model, how)(adapter_names=["default", "defualt"])
    layer = model.base_model.model.q_proj
    assert isinstance(layer, mlora.Linear) and layer.merged_adapters == []  # nothing merged or unloaded
    assert ml.equal(layer.base_layer.weight, weight)


@pytest.mark.parametrize("how", ["from_pretrained", "load_adapter"])
def test_is_trainable_takes_only_a_bool(how, tmp_path):
    adapted(ml, mlora).save_pretrained(tmp_path)
    model = mlora.get_peft_model(small_model(ml), mlora.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(TypeError, match="is_trainable must be True or False, got 'False'"):
        if how == "from_pretrained":
            mlora.PeftModel.from_pretrained(small_model(ml), str(tmp_path), is_trainable="False")
        else:
            model.load_adapter(str(tmp_path), adapter_name="other", is_trainable="False")
    assert list(model.peft_config) == ["default"]


def test_ensure_weight_tying_takes_only_a_bool():
    with pytest.raises(TypeError, match="ensure_weight_tying must be True or False, got 'no'"):
        mlora.LoraConfig(r=2, target_modules=["q_proj"], ensure_weight_tying="no")
