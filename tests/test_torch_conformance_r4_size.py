"""``x.shape``/``x.size()`` as torch.Size, and the ``out=`` keyword, side by side with torch (round 4).

Each snippet runs with ``lib = torch`` and ``lib = minilora``; results, types and exception types must
agree. Size prints ``minilora.Size([2, 3])`` where torch prints ``torch.Size([2, 3])`` (see
minilora/size.py for why).
"""
import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

LIBS = {"torch": torch, "minilora": ml}


def _both(snippet):
    """snippet(lib) for both libraries: (result or exception type) for each."""
    out = {}
    for name, lib in LIBS.items():
        try:
            out[name] = snippet(lib)
        except Exception as e:  # noqa: BLE001 -- the exception's type is what is compared
            out[name] = type(e)
    return out["torch"], out["minilora"]


def _plain(value):
    """A Size (either library's) as ('Size', tuple), so the two compare; other values as they are."""
    if type(value).__name__ == "Size":
        return ("Size", tuple(value))
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


# ---- Size -------------------------------------------------------------------------------------------
SIZE_SNIPPETS = {
    "shape.numel": lambda lib: lib.zeros(2, 3).shape.numel(),
    "size().numel": lambda lib: lib.zeros(2, 3).size().numel(),
    "0-d numel": lambda lib: lib.tensor(1.0).shape.numel(),
    "empty numel": lambda lib: lib.zeros(2, 0).size().numel(),
    "shape type": lambda lib: lib.zeros(2, 3).shape,
    "size() type": lambda lib: lib.zeros(2, 3).size(),
    "size(dim)": lambda lib: lib.zeros(2, 3).size(1),
    "size(-1) type": lambda lib: type(lib.zeros(2, 3).size(-1)),
    "item type": lambda lib: type(lib.zeros(2, 3).shape[0]),
    "slice": lambda lib: lib.zeros(2, 3, 4).shape[1:],
    "slice step": lambda lib: lib.zeros(2, 3, 4).shape[::2],
    "+ tuple": lambda lib: lib.zeros(2, 3).shape + (4,),
    "tuple +": lambda lib: (4,) + lib.zeros(2, 3).shape,
    "+ Size": lambda lib: lib.zeros(2).shape + lib.zeros(3).shape,
    "+ list": lambda lib: lib.zeros(2, 3).shape + [4],
    "* 2": lambda lib: lib.zeros(2, 3).shape * 2,
    "2 *": lambda lib: 2 * lib.zeros(2, 3).shape,
    "== tuple": lambda lib: lib.zeros(2, 3).shape == (2, 3),
    "== list": lambda lib: lib.zeros(2, 3).shape == [2, 3],
    "!= tuple": lambda lib: lib.zeros(2, 3).shape != (2, 3),
    "== Size": lambda lib: lib.zeros(2, 3).shape == lib.Size([2, 3]),
    "< tuple": lambda lib: lib.zeros(2, 3).shape < (2, 4),
    "hash": lambda lib: hash(lib.zeros(2, 3).shape) == hash((2, 3)),
    "dict key": lambda lib: {(2, 3): "yes"}[lib.zeros(2, 3).shape],
    "isinstance tuple": lambda lib: isinstance(lib.zeros(2, 3).shape, tuple),
    "len": lambda lib: len(lib.zeros(2, 3).shape),
    "unpack": lambda lib: tuple(lib.zeros(2, 3).shape),
    "count/index": lambda lib: (lib.Size([2, 3, 2]).count(2), lib.Size([2, 3, 2]).index(3)),
    "Size(list)": lambda lib: lib.Size([2, 3]),
    "Size(tuple)": lambda lib: lib.Size((2, 3)),
    "Size()": lambda lib: lib.Size(),
    "Size(bools)": lambda lib: lib.Size([True, 2]),
    "Size(np.int64)": lambda lib: tuple(int(s) for s in lib.Size([np.int64(2), 3])),
    "Size(0-d tensor)": lambda lib: lib.Size([lib.tensor(2), 3]),
    "Size(float)": lambda lib: lib.Size([2.0, 3]),
    "Size(int)": lambda lib: lib.Size(5),
    "Size(-1)": lambda lib: lib.Size([-1]),
    "Size numel": lambda lib: lib.Size([4, 5]).numel(),
    "pickle": lambda lib: pickle.loads(pickle.dumps(lib.Size([2, 3]))),
    "deepcopy": lambda lib: copy.deepcopy(lib.Size([2, 3])),
    "copy": lambda lib: copy.copy(lib.Size([2, 3])),
    "sum of shapes": lambda lib: sum([lib.Size([1]), lib.Size([2])], ()),
    "grad shape": lambda lib: lib.ones(2, requires_grad=True).sum().shape,
    "param shape": lambda lib: lib.nn.Linear(3, 2).weight.shape,
    "module output": lambda lib: lib.nn.Linear(3, 2)(lib.ones(4, 3)).size(),
}


@pytest.mark.parametrize("name", SIZE_SNIPPETS)
def test_size_like_torch(name):
    expected, got = _both(SIZE_SNIPPETS[name])
    assert _plain(got) == _plain(expected)


def test_size_repr_names_the_library():
    s = ml.zeros(2, 3).shape
    assert repr(s) == str(s) == "minilora.Size([2, 3])" == f"{s}"
    assert repr(ml.Size([])) == "minilora.Size([])"
    assert eval(repr(s), {"minilora": ml}) == s


# A Size wherever a shape is taken
SHAPE_TAKERS = {
    "zeros": lambda lib, s: lib.zeros(s),
    "ones": lambda lib, s: lib.ones(s),
    "empty": lambda lib, s: lib.empty(s).shape,
    "full": lambda lib, s: lib.full(s, 2.0),
    "randn shape": lambda lib, s: lib.randn(s).shape,
    "rand shape": lambda lib, s: lib.rand(s).shape,
    "view": lambda lib, s: lib.arange(6.0).view(s),
    "reshape": lambda lib, s: lib.arange(6.0).reshape(s),
    "view(*s)": lambda lib, s: lib.arange(6.0).view(*s),
    "expand": lambda lib, s: lib.ones(1, 3).expand(s),
    "expand(*s)": lambda lib, s: lib.ones(1, 3).expand(*s),
    "broadcast_to": lambda lib, s: lib.broadcast_to(lib.ones(3), s),
    "new_zeros": lambda lib, s: lib.ones(1).new_zeros(s),
    "new_full": lambda lib, s: lib.ones(1).new_full(s, 3.0),
    "repeat": lambda lib, s: lib.ones(1, 1).repeat(s),
    "zeros(x.shape)": lambda lib, s: lib.zeros(lib.ones(s).shape),
    "ones_like shape": lambda lib, s: lib.ones_like(lib.zeros(s)).shape,
    "np.zeros": lambda lib, s: np.zeros(s).shape,
}


@pytest.mark.parametrize("name", SHAPE_TAKERS)
def test_size_taken_as_a_shape(name):
    expected, got = _both(lambda lib: SHAPE_TAKERS[name](lib, lib.Size([2, 3])))
    if hasattr(expected, "numpy"):
        expected, got = expected.numpy(), got.numpy()
        assert expected.shape == got.shape and np.array_equal(expected, got)
    else:
        assert _plain(got) == _plain(expected)
