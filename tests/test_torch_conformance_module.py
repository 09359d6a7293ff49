"""``nn.Module`` and the containers behave as torch's (issue 12): the methods every model is built
from -- registration, traversal, ``state_dict`` / ``load_state_dict``, modes, casts, hooks, reprs --
and ``nn.Parameter`` / ``ParameterList`` / ``ParameterDict`` / ``ModuleList`` / ``ModuleDict`` /
``Sequential``.

Each case is ONE snippet, written the way a torch user writes it (positional and keyword), run with
``lib = torch`` and with ``lib = minilora``; what it returns (names, flags, dtypes, arrays) must agree,
and where torch raises minilora raises the same exception type. The signature checks at the end
compare every method torch's classes have with minilora's (``inspect.signature``), so a drift fails.
The PEFT loose end (``set_peft_model_state_dict``'s return) is checked against PEFT at the very end.
"""
import inspect
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

RNG = np.random.default_rng(12)
X2, X5 = RNG.standard_normal((2, 3)), RNG.standard_normal((5, 3))  # inputs, the same for both libraries


# ---- helpers ---------------------------------------------------------------------------------------
# One snippet, two libraries: the comparison (values to 1e-12, dtypes by name, dicts key by key) and the
# error-type check are test_torch_conformance.py's.
from test_torch_conformance import check, expect_error  # noqa: E402


def t(lib, array, grad=False):
    return lib.tensor(np.array(array), dtype=lib.float64, requires_grad=grad)


def linear(lib, n_in, n_out, bias=True, seed=0):
    """A float64 Linear with the same weights in both libraries."""
    layer = lib.nn.Linear(n_in, n_out, bias, dtype=lib.float64)
    rng = np.random.default_rng(seed)
    with lib.no_grad():
        layer.weight.copy_(t(lib, rng.standard_normal((n_out, n_in))))
        if bias:
            layer.bias.copy_(t(lib, rng.standard_normal(n_out)))
    return layer


def net(lib):
    """A model with everything the traversal rules care about: a buffer (persistent and not), a module
    registered under two names, a parameter shared by two modules, an empty (None) parameter slot."""
    class Block(lib.nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.proj = linear(lib, 3, 3, seed=seed)
            self.register_buffer("scale", t(lib, [2.0]))
            self.register_buffer("cache", t(lib, [0.0, 0.0]), persistent=False)
            self.register_buffer("steps", lib.tensor([0]))  # an integer buffer
            self.register_parameter("gate", None)

        def forward(self, x):
            return self.proj(x) * self.scale

    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = Block(1)
            self.blocks = lib.nn.ModuleList([Block(2), Block(3)])
            self.again = self.first  # the same module under a second name
            self.head = linear(lib, 3, 2, seed=4)
            self.tail = linear(lib, 3, 3, bias=False, seed=5)
            self.tail.weight = self.blocks[1].proj.weight  # tied: one Parameter in two modules

        def forward(self, x):
            x = self.first(x)
            for block in self.blocks:
                x = block(x)
            return self.tail(x)

    return Net()


def names(pairs):
    return [name for name, _ in pairs]


# ---- traversal -------------------------------------------------------------------------------------
def test_named_modules_positional_and_keyword():
    def snippet(lib):
        model = net(lib)
        memo = {model.blocks[0]}
        return [names(model.named_modules()),
                names(model.named_modules(None, "root")),            # torch's order: memo, prefix
                names(model.named_modules(prefix="m", remove_duplicate=False)),
                names(model.named_modules(memo)),                    # a memo of modules to skip
                len(memo),
                [type(m).__name__ for m in model.modules()],
                len(list(model.modules(remove_duplicate=False)))]
    check(snippet)


def test_named_parameters_and_buffers():
    def snippet(lib):
        model = net(lib)
        return [names(model.named_parameters()),
                names(model.named_parameters("p", False)),           # prefix, recurse
                names(model.named_parameters(prefix="p", remove_duplicate=False)),
                len(list(model.parameters())), len(list(model.parameters(recurse=False))),
                len(list(model.parameters(False))),
                names(model.named_buffers()),                         # non-persistent ones too
                names(model.blocks.named_buffers("b", True, False)),
                len(list(model.buffers(recurse=False))), len(list(model.buffers()))]
    check(snippet)


def test_children_come_once():
    def snippet(lib):
        model = net(lib)
        return [names(model.named_children()), [type(c).__name__ for c in model.children()]]
    check(snippet)


def test_get_and_set_submodule_parameter_buffer():
    def snippet(lib):
        model = net(lib)
        replacement = linear(lib, 3, 3, seed=9)
        model.set_submodule("blocks.1.proj", replacement)
        model.set_submodule("blocks.0.extra", linear(lib, 3, 3), strict=False)
        return [model.get_submodule("blocks.1.proj") is replacement,
                model.get_submodule("") is model,
                model.get_parameter("blocks.0.proj.bias"),
                model.get_buffer("first.scale"),
                model.get_buffer("blocks.1.cache"),
                names(model.blocks[0].named_children())]
    check(snippet)

    for bad in (lambda m: m.get_submodule("blocks.7"), lambda m: m.get_submodule("first.scale"),
                lambda m: m.get_parameter("first.scale"), lambda m: m.get_parameter("first.nope"),
                lambda m: m.get_buffer("first.proj.weight"), lambda m: m.get_submodule("first.proj.weight"),
                lambda m: m.set_submodule("first.new", None), lambda m: m.set_submodule("", m.head),
                lambda m: m.set_submodule("first.nope", m.head, strict=True),
                lambda m: m.set_submodule("first.scale", m.head)):
        expect_error(lambda lib, bad=bad: bad(net(lib)))


def test_apply_visits_children_first():
    def snippet(lib):
        seen = []
        model = net(lib)
        assert model.apply(lambda m: seen.append(type(m).__name__)) is model
        return seen
    check(snippet)


# ---- registration and attribute rules --------------------------------------------------------------
def test_setattr_rules():
    def snippet(lib):
        model = linear(lib, 2, 2)
        model.bias = None                                      # None keeps the slot registered
        slot = "bias" in model._parameters
        model.bias = lib.nn.Parameter(t(lib, [1.0, 2.0]))    # and takes a Parameter again
        model.register_buffer("buf", t(lib, [3.0]))
        model.buf = t(lib, [4.0])                              # a buffer takes a new Tensor
        model.buf = None
        model.child = linear(lib, 2, 2)
        model.child = None                                     # None keeps the child slot
        child_slot = "child" in model._modules
        model.note = "plain"
        del model.bias
        model.bias = 3                                         # after del: a plain attribute
        return [slot, child_slot, names(model.named_parameters()), names(model.named_buffers()),
                list(model.state_dict()), model.bias, model.buf, model.child, sorted(model._buffers)]
    check(snippet)


@pytest.mark.parametrize("case", [
    "model.weight = lib.zeros(2, 2)",                        # a plain Tensor where a Parameter sits
    "model.child = linear(lib, 2, 2); model.child = 3",      # a number where a module sits
    "model.register_buffer('buf', t(lib, [1.0])); model.buf = [1.0]",
    "model.register_buffer('a.b', t(lib, [1.0]))",
    "model.register_buffer('', t(lib, [1.0]))",
    "model.register_buffer(3, t(lib, [1.0]))",
    "model.register_buffer('weight', t(lib, [1.0]))",        # an existing attribute
    "model.register_buffer('in_features', t(lib, [1.0]))",
    "model.register_buffer('buf', [1.0])",
    "model.register_parameter('weight2', t(lib, [1.0]))",     # not a Parameter
    "model.register_parameter('x.y', None)",
    "model.register_parameter('forward', None)",
    "model.register_parameter('w', lib.nn.Parameter(t(lib, [1.0])) * 2)",  # not a leaf
    "model.add_module('child', 3)",
    "model.add_module('a.b', linear(lib, 2, 2))",
    "model.add_module('', linear(lib, 2, 2))",
    "model.add_module('weight', linear(lib, 2, 2))",
    "model.register_module(1, linear(lib, 2, 2))",
    "del model.nothing",
    "model.nothing",
])
def test_registration_errors_are_torchs(case):
    def snippet(lib):
        model = linear(lib, 2, 2)  # noqa: F841 (used by the case)
        exec(case, {"lib": lib, "t": t, "linear": linear, "model": model})
    expect_error(snippet)


def test_registering_before_init():
    def parameter_first(lib):
        class Early(lib.nn.Module):
            def __init__(self):
                self.w = lib.nn.Parameter(t(lib, [1.0]))
                super().__init__()
        Early()
    expect_error(parameter_first)

    def module_first(lib):
        class Early(lib.nn.Module):
            def __init__(self):
                self.child = linear(lib, 2, 2)
        Early()
    expect_error(module_first)

    def plain_first(lib):  # a plain attribute before super().__init__() is allowed
        class Early(lib.nn.Module):
            def __init__(self):
                self.size = 3
                super().__init__()
        return Early().size
    check(plain_first)
    expect_error(lambda lib: lib.nn.Module(3))
    expect_error(lambda lib: lib.nn.Module(size=3))


def test_register_module_and_add_module_none():
    def snippet(lib):
        model = lib.nn.Module()
        model.register_module("a", linear(lib, 2, 2))
        model.add_module("b", None)
        return [list(model._modules), names(model.named_children()), model.b, list(model.state_dict())]
    check(snippet)


# ---- state_dict ------------------------------------------------------------------------------------
def test_state_dict_keys_and_arguments():
    def snippet(lib):
        model = net(lib)
        destination = OrderedDict()
        out = model.state_dict(destination=destination, prefix="model.", keep_vars=True)
        plain = model.state_dict()
        return [list(plain), out is destination, list(out),
                out["model.first.proj.weight"] is model.first.proj.weight,
                plain["first.proj.weight"] is model.first.proj.weight,
                plain["first.proj.weight"].requires_grad, out["model.first.proj.weight"].requires_grad,
                plain["blocks.0.steps"], plain["first.scale"]]
    check(snippet)


def test_state_dict_positional_arguments_warn_as_torch():
    def snippet(lib):
        with pytest.warns(FutureWarning, match="Positional args are being deprecated"):
            out = linear(lib, 2, 2).state_dict(None, "p.", True)
        return [list(out), out["p.weight"].requires_grad]
    check(snippet)


def test_state_dict_shares_memory_with_the_model():
    def snippet(lib):
        model = linear(lib, 2, 2)
        state = model.state_dict()
        with lib.no_grad():
            model.weight.mul_(2)
        return state["weight"]
    check(snippet)


def test_load_state_dict_result_and_key_rules():
    def snippet(lib):
        model = net(lib)
        state = {k: v.clone() for k, v in net(lib).state_dict().items()}
        strict = model.load_state_dict(state)
        del state["first.scale"], state["blocks.1.proj.bias"]
        state["first.proj.weight.extra"] = t(lib, [1.0])   # below a tensor: unexpected
        state["extra_top"] = t(lib, [1.0])
        state["blocks.5.proj.weight"] = t(lib, [1.0])      # under the child list: unexpected there
        state["first.cache"] = t(lib, [1.0, 1.0])          # a non-persistent buffer's name: unexpected
        state["head._extra_state"] = 3                      # head has no extra state: unexpected
        loose = model.load_state_dict(state, False)
        return [repr(strict), str(strict), strict.missing_keys, strict.unexpected_keys,
                loose.missing_keys, loose.unexpected_keys, loose[0] == loose.missing_keys, len(loose)]
    check(snippet)


def test_load_state_dict_values_and_dtypes():
    def snippet(lib):
        source, model = net(lib), net(lib)
        with lib.no_grad():
            for p in source.parameters():
                p.add_(1.5)
        weight = model.first.proj.weight
        model.load_state_dict(source.state_dict())
        x = t(lib, X2)
        return [model(x), model.first.proj.weight is weight, weight.dtype]
    check(snippet)


def test_load_state_dict_errors():
    expect_error(lambda lib: net(lib).load_state_dict({"first.proj.weight": t(lib, [1.0])}, strict=False))
    expect_error(lambda lib: net(lib).load_state_dict({}))
    expect_error(lambda lib: net(lib).load_state_dict({**net(lib).state_dict(), "x": t(lib, [1.0])}))
    expect_error(lambda lib: net(lib).load_state_dict([("first.scale", t(lib, [1.0]))], strict=False))


def test_load_state_dict_assign():
    def snippet(lib):
        model = linear(lib, 2, 2)
        model.bias.requires_grad_(False)
        new_weight, new_bias = t(lib, [[1.0, 2.0], [3.0, 4.0]]), t(lib, [5.0, 6.0])
        result = model.load_state_dict({"weight": new_weight, "bias": new_bias}, assign=True)
        with lib.no_grad():
            new_weight.mul_(10)  # assigned, not copied: the module sees it
        return [repr(result), type(model.weight).__name__, model.weight, model.weight.requires_grad,
                model.bias.requires_grad, names(model.named_parameters())]
    check(snippet)


def test_zero_dim_parameter_loads_from_a_one_element_checkpoint():
    def snippet(lib):
        model = lib.nn.Module()
        model.s = lib.nn.Parameter(t(lib, 1.0))
        model.load_state_dict({"s": t(lib, [4.0])})
        return model.s
    check(snippet)


def test_extra_state():
    def snippet(lib):
        class Counter(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.count, self.lin = 0, linear(lib, 2, 2)

            def get_extra_state(self):
                return {"count": self.count}

            def set_extra_state(self, state):
                self.count = state["count"]

        source, target = Counter(), Counter()
        source.count = 7
        state = source.state_dict()
        target.load_state_dict(state)
        missing = Counter().load_state_dict({k: v for k, v in state.items() if k != "_extra_state"}, strict=False)
        return [list(state), state["_extra_state"], target.count, missing.missing_keys]
    check(snippet)
    expect_error(lambda lib: lib.nn.Module().get_extra_state())


def test_state_dict_and_load_hooks():
    def snippet(lib):
        model = net(lib)
        calls = []
        model.first.register_state_dict_pre_hook(lambda m, prefix, keep_vars: calls.append(("pre", prefix)))

        def drop_scale(module, state_dict, prefix, local_metadata):
            calls.append(("post", prefix))
            del state_dict[prefix + "scale"]
        handle = model.first.register_state_dict_post_hook(drop_scale)
        state = model.state_dict()
        handle.remove()
        again = model.state_dict()

        def rename(module, state_dict, prefix, *rest):  # an old checkpoint's name for the weight
            if prefix + "w_old" in state_dict:
                state_dict[prefix + "weight"] = state_dict.pop(prefix + "w_old")
        target = linear(lib, 3, 2, seed=7)
        target.register_load_state_dict_pre_hook(rename)
        target.load_state_dict({"w_old": t(lib, np.ones((2, 3))), "bias": t(lib, [1.0, 2.0])})

        def forgive(module, keys):  # a post-hook may clear the lists: strict loading then passes
            calls.append(("load-post", list(keys.missing_keys)))
            keys.missing_keys.clear()
        forgiving = linear(lib, 3, 2)
        forgiving.register_load_state_dict_post_hook(forgive)
        result = forgiving.load_state_dict({"weight": t(lib, np.zeros((2, 3)))})
        return [calls, "first.scale" in state, "first.scale" in again, target.weight, repr(result),
                forgiving.weight]
    check(snippet)

    def returning_post_hook(lib):
        model = linear(lib, 2, 2)
        model.register_state_dict_post_hook(lambda m, sd, prefix, meta: {})
        model.state_dict()
    expect_error(returning_post_hook)


# ---- modes, gradients, casts -----------------------------------------------------------------------
def test_train_eval_and_overridden_train():
    def snippet(lib):
        calls = []

        class Frozen(lib.nn.Module):  # a child whose train() torch calls (it is not bypassed)
            def train(self, mode=True):
                calls.append(mode)
                return super().train(False)

        model = net(lib)
        model.frozen = Frozen()
        out = [model.eval() is model, [m.training for m in model.modules()]]
        out += [model.train() is model, [m.training for m in model.modules()], model.train(False).training]
        return out + [calls]
    check(snippet)
    expect_error(lambda lib: net(lib).train("yes"))
    expect_error(lambda lib: net(lib).train(1))


def test_requires_grad_and_zero_grad():
    def snippet(lib):
        model = net(lib)
        model(t(lib, X2)).sum().backward()
        grad = model.first.proj.weight.grad
        model.zero_grad(False)                               # set_to_none=False: zeroed in place
        zeroed = [grad, model.first.proj.weight.grad is grad, model.first.proj.weight.grad.requires_grad]
        model.zero_grad()
        cleared = [p.grad is None for p in model.parameters()]
        model.requires_grad_(False)
        frozen = [p.requires_grad for p in model.parameters()]
        model.blocks.requires_grad_()
        return zeroed + [cleared, frozen, [p.requires_grad for p in model.parameters()]]
    check(snippet)


def test_casts_and_to():
    def snippet(lib):
        model = net(lib)
        params = list(model.parameters())
        out = [model.float() is model, [p.dtype for p in model.parameters()], model.first.steps.dtype]
        model.to(lib.float64)
        out.append([b.dtype for b in model.buffers()])
        model.to("cpu", lib.float32, True)                   # device, dtype, non_blocking
        out.append(model.first.scale.dtype)
        model.to(t(lib, [1.0]))                              # to(tensor): its device and dtype
        out.append(model.first.proj.weight.dtype)
        model.to(dtype=lib.float16)
        out.append(model.tail.weight.dtype)
        model.double().cpu()
        out.append(model.head.bias.dtype)
        out.append(all(a is b for a, b in zip(params, model.parameters())))  # the same objects
        model.type(lib.float32)                              # type() casts integer buffers too
        out += [model.first.steps.dtype, model.first.scale.dtype]
        return out
    check(snippet)
    expect_error(lambda lib: net(lib).to(lib.int64))
    expect_error(lambda lib: net(lib).to("cpu", copy=True))


def test_to_empty_keeps_shapes_and_dtypes():
    def snippet(lib):
        model = net(lib).to_empty(device="cpu")
        return [(n, tuple(p.shape), str(p.dtype).removeprefix("torch.")) for n, p in model.state_dict().items()]
    check(snippet)


# ---- calling, hooks, repr --------------------------------------------------------------------------
def test_forward_hooks_with_kwargs_prepend_and_always_call():
    def snippet(lib):
        class Scale(lib.nn.Module):
            def forward(self, x, factor=1.0):
                if factor < 0:
                    raise ValueError("negative factor")
                return x * factor

        model, seen = Scale(), []
        model.register_forward_pre_hook(lambda m, args, kwargs: (args, {"factor": kwargs["factor"] * 2}),
                                        with_kwargs=True)
        model.register_forward_hook(lambda m, args, kwargs, out: seen.append(("kw", kwargs["factor"])),
                                    with_kwargs=True)
        first = model.register_forward_hook(lambda m, args, out: seen.append("first"), prepend=True)
        model.register_forward_hook(lambda m, args, out: seen.append(("always", out is None)), always_call=True)
        y = model(t(lib, [1.0, 2.0]), factor=1.5)
        first.remove()
        with pytest.raises(ValueError):
            model(t(lib, [1.0]), factor=-1.0)
        with model.register_forward_hook(lambda m, args, out: out + 1):
            z = model(t(lib, [1.0]), factor=1.0)
        return [y, z, model(t(lib, [1.0]), factor=1.0), seen]  # ("always", True): called after forward raised
    check(snippet)


def test_modules_pickle_and_deepcopy():
    import copy
    import pickle
    model = net(ml)
    model.first.register_forward_hook(lambda m, args, out: out * 2)
    clone = copy.deepcopy(model)
    assert list(clone.state_dict()) == list(model.state_dict())
    assert clone.first.proj.weight is not model.first.proj.weight
    np.testing.assert_array_equal(clone(ml.tensor(X2)).numpy(force=True), model(ml.tensor(X2)).numpy(force=True))  # hook copied
    assert clone.again is clone.first and clone.tail.weight is clone.blocks[1].proj.weight  # sharing kept
    stack = ml.nn.Sequential(linear(ml, 3, 3), ml.nn.Tanh(), ml.nn.ModuleList([linear(ml, 3, 2)]))
    back = pickle.loads(pickle.dumps(stack))  # a class pickle can find (not a local one)
    assert repr(back) == repr(stack) and list(back.state_dict()) == list(stack.state_dict())
    np.testing.assert_array_equal(back[0].weight.numpy(force=True), stack[0].weight.numpy(force=True))


def test_module_without_forward():
    expect_error(lambda lib: lib.nn.Module()(t(lib, [1.0])))


def test_repr_layout():
    def snippet(lib):
        class Settings(lib.nn.Module):
            def __init__(self, lines):
                super().__init__()
                self.lines = lines

            def extra_repr(self):
                return "\n".join(self.lines)

        model = Settings(["alpha=1"])
        model.body = Settings(["beta=2", "gamma=3"])
        model.empty = None
        model.layers = lib.nn.ModuleList([Settings(["x"]), Settings(["x"]), Settings(["y"]), Settings([])])
        return [repr(Settings(["alpha=1"])), repr(Settings([])), repr(model), repr(lib.nn.ModuleList()),
                repr(lib.nn.Sequential(lib.nn.ReLU(), lib.nn.ReLU()))]
    check(snippet)


def test_dir_lists_registered_names():
    def snippet(lib):
        entries = dir(net(lib))
        return [name in entries for name in ("first", "blocks", "head", "forward", "state_dict", "training")]
    check(snippet)


# ---- containers ------------------------------------------------------------------------------------
def test_module_list():
    def snippet(lib):
        a, b, c, d = (linear(lib, 2, 2, seed=s) for s in range(4))
        layers = lib.nn.ModuleList([a, b])
        out = [len(layers), layers[-1] is b, type(layers[0:1]).__name__, len(layers[::-1])]
        layers.append(c).extend([d])
        layers.insert(1, linear(lib, 2, 2, seed=5))
        layers.insert(5, linear(lib, 2, 2, seed=6))          # at the end
        out += [len(layers), list(layers._modules), layers[1].weight]
        popped = layers.pop(1)
        out += [popped.weight, layers[1] is b]
        del layers[0]
        del layers[1:3]
        layers[0] = a
        out += [list(layers._modules), [m is a for m in layers], list(layers.state_dict())]
        layers += [b]
        combined = layers + lib.nn.ModuleList([c])
        return out + [len(layers), type(combined).__name__, list(combined._modules)]
    check(snippet)
    expect_error(lambda lib: lib.nn.ModuleList([linear(lib, 2, 2)])[3])
    expect_error(lambda lib: lib.nn.ModuleList([linear(lib, 2, 2)])["0"])
    expect_error(lambda lib: lib.nn.ModuleList([3]))
    expect_error(lambda lib: lib.nn.ModuleList().extend(3))
    expect_error(lambda lib: lib.nn.ModuleList().pop())     # torch's pop has no default index


def test_module_list_insert_outside_the_list_is_refused():
    """torch's insert misnumbers the list for an index outside 0..len (negative: a KeyError after
    shifting half the list); minilora refuses such an index with an IndexError instead."""
    with pytest.raises(KeyError):
        torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()]).insert(-1, torch.nn.Tanh())
    with pytest.raises(IndexError, match="must be in 0..2"):
        ml.nn.ModuleList([ml.nn.ReLU(), ml.nn.ReLU()]).insert(-1, ml.nn.Tanh())


def test_module_dict():
    def snippet(lib):
        a, b, c = (linear(lib, 2, 2, seed=s) for s in range(3))
        heads = lib.nn.ModuleDict({"b": b, "a": a})
        heads.update([("c", c), ("a", b)])                    # pairs; an existing key keeps its place
        out = [list(heads), list(heads.keys()), heads["a"] is b, "c" in heads, len(heads),
               [type(v).__name__ for v in heads.values()], [k for k, _ in heads.items()],
               list(heads.state_dict())]
        heads.update(lib.nn.ModuleDict({"d": a}))
        out += [heads.pop("b") is b, list(heads)]
        heads.clear()
        return out + [len(heads)]
    check(snippet)
    for bad in ("heads['z']", "heads['a.b'] = linear(lib, 2, 2)", "heads[''] = linear(lib, 2, 2)",
                "heads['keys'] = linear(lib, 2, 2)", "heads['x'] = 3", "heads.update(3)",
                "heads.update([('x',)])", "heads.update([3])", "heads[1] = linear(lib, 2, 2)"):
        def snippet(lib, bad=bad):
            exec(bad, {"heads": lib.nn.ModuleDict(), "lib": lib, "linear": linear})
        expect_error(snippet)


def test_sequential():
    def snippet(lib):
        model = lib.nn.Sequential(linear(lib, 3, 4, seed=1), lib.nn.Tanh(), linear(lib, 4, 2, seed=2))
        x = t(lib, X5)
        out = [model(x), len(model), type(model[1:]).__name__, list(model[1:]._modules), model[-1].weight]
        named = lib.nn.Sequential(OrderedDict([("inp", linear(lib, 3, 3, seed=3)), ("act", lib.nn.ReLU())]))
        named.append(lib.nn.Tanh())
        out += [list(named._modules), list(named.state_dict()), type(named[::2]).__name__]
        del named[0]                                          # renumbered 0, 1 as torch does
        out.append(list(named._modules))
        named.insert(-1, lib.nn.Sigmoid())
        out.append([type(m).__name__ for m in named])
        out.append([type(m).__name__ for m in named + lib.nn.Sequential(lib.nn.ReLU())])
        doubled = model * 2
        out += [len(doubled), doubled[3] is model[0], list((2 * model)._modules)]
        model += lib.nn.Sequential(lib.nn.ReLU())
        out.append(list(model._modules))
        out.append(type(model.pop(3)).__name__)
        return out + [model(x)]
    check(snippet)
    expect_error(lambda lib: lib.nn.Sequential(lib.nn.ReLU())[1])
    expect_error(lambda lib: lib.nn.Sequential(lib.nn.ReLU()) + [lib.nn.ReLU()])
    expect_error(lambda lib: lib.nn.Sequential(lib.nn.ReLU()).insert(3, lib.nn.ReLU()))
    expect_error(lambda lib: lib.nn.Sequential(lib.nn.ReLU()).insert(0, 3))
    expect_error(lambda lib: lib.nn.Sequential(lib.nn.ReLU()) * 0)
    expect_error(lambda lib: lib.nn.Sequential(3))


def test_parameter_and_parameter_list():
    def snippet(lib):
        empty = lib.nn.Parameter()
        frozen = lib.nn.Parameter(t(lib, [1.0, 2.0]), False)
        params = lib.nn.ParameterList([lib.nn.Parameter(t(lib, [1.0])), t(lib, [[2.0, 3.0]])])
        params.append(t(lib, [4.0, 5.0, 6.0]))
        params.extend([lib.nn.Parameter(t(lib, [7.0]))])
        params += [t(lib, [8.0])]
        part = params[1:4:2]
        params[0] = t(lib, [9.0])
        return [tuple(empty.shape), empty.requires_grad, frozen.requires_grad, type(frozen).__name__,
                len(params), [type(p).__name__ for p in params], list(params.state_dict()),
                names(params.named_parameters()), type(part).__name__, [p for p in part], params[-1],
                params[0], repr(params), repr(frozen).startswith("Parameter containing:")]
    check(snippet)
    expect_error(lambda lib: lib.nn.ParameterList([t(lib, [1.0])])[2])
    expect_error(lambda lib: lib.nn.ParameterList().extend(t(lib, [1.0])))
    expect_error(lambda lib: lib.nn.ParameterList()(t(lib, [1.0])))


def test_parameter_dict():
    def snippet(lib):
        params = lib.nn.ParameterDict({"b": t(lib, [1.0]), "a": lib.nn.Parameter(t(lib, [2.0, 3.0]))})
        out = [list(params), names(params.named_parameters())]       # a plain dict: added sorted, as torch
        params.update(OrderedDict([("z", t(lib, [4.0])), ("c", t(lib, [5.0]))]))  # in order
        params.update([("y", t(lib, [6.0]))])
        params["x"] = lib.nn.Parameter(t(lib, [7.0]), requires_grad=False)
        out += [list(params.keys()), len(params), "z" in params, params["z"], type(params["z"]).__name__,
                params.get("nope", 3), params.setdefault("w", t(lib, [8.0])), list(reversed(params)),
                [k for k, _ in params.items()], [v.requires_grad for v in params.values()],
                list(params.state_dict()), repr(params)]
        out += [params.pop("a"), list(params), params.popitem()[0], list(params)]
        merged = params | lib.nn.ParameterDict(OrderedDict([("q", t(lib, [9.0]))]))
        copied = params.copy()
        out += [list(merged), copied["b"] is params["b"], list(params.fromkeys(["m", "n"])),
                type(params.fromkeys(["m"])["m"]).__name__]
        params |= merged
        params.clear()
        return out + [len(params), list(params.state_dict())]
    check(snippet)
    for bad in ("params[3] = t(lib, [1.0])", "params['nope']", "params.update(3)", "params.update([('k',)])",
                "params.update([3])", "params(t(lib, [1.0]))", "params.popitem()", "params['a.b'] = t(lib, [1.0])"):
        def snippet(lib, bad=bad):
            exec(bad, {"params": lib.nn.ParameterDict(), "lib": lib, "t": t})
        expect_error(snippet)


# ---- signatures ------------------------------------------------------------------------------------
# torch.nn.Module methods minilora does not have, and why (calling one is an AttributeError that names it).
NOT_IN_MINILORA = {
    "ipu": "no IPU devices", "xpu": "no XPU devices", "mtia": "no MTIA devices",
    # torch's drop and restore its hook tables around pickling; minilora's Modules pickle and deepcopy
    # through Python's default protocol (test_modules_pickle_and_deepcopy)
    "__getstate__": "Python's default", "__setstate__": "Python's default",
}
DUNDERS = {"__init__", "__call__", "__setattr__", "__getattr__", "__delattr__", "__dir__", "__repr__",
           "__getstate__", "__setstate__"}


def _public_methods(cls):
    """The public methods of ``cls`` that torch defines (transformers patches ``smart_apply`` onto
    torch.nn.Module when it is imported: not torch's API)."""
    return sorted(n for n in dir(cls) if (not n.startswith("_") or n in DUNDERS)
                  and callable(getattr(cls, n)) and not isinstance(getattr(cls, n), type)
                  and getattr(getattr(cls, n), "__module__", "torch").startswith(("torch", "builtins")))


def _signature(fn):
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", [n for n in _public_methods(torch.nn.Module) if n not in NOT_IN_MINILORA])
def test_module_method_signatures_match_torch(name):
    assert hasattr(ml.nn.Module, name), f"nn.Module.{name}: torch has it, minilora does not"
    assert _signature(getattr(ml.nn.Module, name)) == _signature(getattr(torch.nn.Module, name)), name


def test_every_torch_module_method_is_checked_or_explained():
    missing = [n for n in _public_methods(torch.nn.Module) if not hasattr(ml.nn.Module, n)]
    assert set(missing) <= set(NOT_IN_MINILORA), f"add these, or say why not: {set(missing) - set(NOT_IN_MINILORA)}"
    assert ml.nn.Module.call_super_init is torch.nn.Module.call_super_init is False


CONTAINERS = ["ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict"]


@pytest.mark.parametrize("cls, name", [(c, n) for c in CONTAINERS
                                       for n in sorted(set(vars(getattr(torch.nn, c))) - {"__annotations__"})
                                       if callable(vars(getattr(torch.nn, c))[n])
                                       and n not in ("__init__", "_get_abs_string_index", "_get_item_by_idx",
                                                     "__class_getitem__")])
def test_container_methods_match_torch(cls, name):
    ours, theirs = getattr(ml.nn, cls), getattr(torch.nn, cls)
    assert hasattr(ours, name), f"nn.{cls}.{name}: torch has it, minilora does not"
    assert _signature(getattr(ours, name)) == _signature(getattr(theirs, name)), f"{cls}.{name}"


@pytest.mark.parametrize("cls", CONTAINERS)
def test_container_constructors_match_torch(cls):
    assert _signature(getattr(ml.nn, cls).__init__) == _signature(getattr(torch.nn, cls).__init__), cls


def test_parameter_signature_matches_torch():
    """``Parameter(data=None, requires_grad=True)``; minilora's device/dtype are keyword-only extras."""
    ours = [s for s in _signature(ml.nn.Parameter.__init__) if s[2] != inspect.Parameter.KEYWORD_ONLY]
    assert ours[1:] == _signature(torch.nn.Parameter.__new__)[1:]


# ---- PEFT: set_peft_model_state_dict returns the load result ---------------------------------------
def test_set_peft_model_state_dict_returns_peft_load_result(tmp_path):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from minilora.lora import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from minilora.models import LlamaConfig, LlamaForCausalLM
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    LlamaForCausalLM(config, dtype="float64").save_pretrained(str(tmp_path))
    settings = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ours = get_peft_model(LlamaForCausalLM.from_pretrained(str(tmp_path)), LoraConfig(**settings))
    ours.add_adapter("other", LoraConfig(**{**settings, "r": 2}))
    theirs = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)),
                                 peft.LoraConfig(**settings))
    theirs.add_adapter("other", peft.LoraConfig(**{**settings, "r": 2}))
    ours_result = set_peft_model_state_dict(ours, get_peft_model_state_dict(ours, adapter_name="other"), "other")
    theirs_result = peft.set_peft_model_state_dict(
        theirs, peft.get_peft_model_state_dict(theirs, adapter_name="other"), "other")
    assert ours_result.unexpected_keys == theirs_result.unexpected_keys == []
    assert ours_result.missing_keys == theirs_result.missing_keys
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in ours_result.missing_keys
    assert not any(".other." in k for k in ours_result.missing_keys)
