"""Round 21: bad inputs that minilora answered where torch refuses, found by a sweep of nn.functional and the
tensor's writable attributes against torch 2.13 (the sweep: every F name shared with torch, called with a number, a
list, None, an ndarray or a string in each Tensor parameter, an integer or bool tensor, and bad dims, sizes and
string options; classified as torch's error class, another class, or a value where torch raises).

* ``x.requires_grad = "no"`` (or 1, or None) was stored as it came, and an int tensor or a non-leaf took any flag;
  now torch's setter: "requires_grad must be a bool", "only Tensors of floating point and complex dtype can require
  gradients", "you can only change requires_grad flags of leaf variables";
* ``x.grad = x``: torch's "can't assign Variable as its own grad"; ``p.data = int_tensor`` for a tensor that
  requires grad: an int64 parameter still requiring grad; ``x.data = meta_tensor``: values gone; now torch's
  RuntimeErrors; ``backward(retain_graph="no")`` / ``create_graph="no"`` / ``grad(allow_unused="no")``: a truthy
  string kept the graph or recorded a second one; now torch's TypeError;
* a non-Tensor where an F function takes a Tensor: ``F.dropout(3)``, ``F.tanh(2.0)``, ``F.mse_loss(x, 0)`` answered,
  ~400 others failed in an AttributeError or NumPy's words; now torch's parser TypeError, its "invalid combination
  of arguments" (conv, ctc_loss), or, where torch's F is Python that reads an attribute first, the same
  AttributeError (``_argument_types.FUNCTIONAL_CHECKS``);
* a string, a float or None for a bool, int, float or int-tuple parameter of an F function: ``ceil_mode="no"``
  rounded up, ``eps="0.5"`` and ``F.elu(x, "0.5")`` converted the string, ``ignore_index=1.5`` ignored nothing, a
  float list of CTC lengths was truncated; now torch's parser TypeError (``_argument_types.FUNCTIONAL_SCALARS``);
* integer inputs to losses and unpooling that torch has no kernel for: computed in integers (max_unpool,
  multi_margin_loss, multilabel_margin_loss), cast silently (soft_margin_loss), or made float
  (hinge_embedding_loss: torch keeps int64, and its mean is torch's error).

Each row runs under minilora and torch, which must raise the same exception type with the key words."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def x(L, *shape):
    return L.ones(*shape) if shape else L.ones(2, 3, 6)


def assign(obj, name, value):
    setattr(obj, name, value)


ROWS = [
    # (id, call, exception, phrase)
    ("requires_grad = str", lambda L: assign(L.ones(2), "requires_grad", "no"), RuntimeError, "must be a bool"),
    ("requires_grad = 1", lambda L: assign(L.ones(2), "requires_grad", 1), RuntimeError, "must be a bool"),
    ("requires_grad = None", lambda L: assign(L.ones(2), "requires_grad", None), RuntimeError, "must be a bool"),
    ("int tensor requires_grad = True", lambda L: assign(L.ones(2, dtype=L.int64), "requires_grad", True),
     RuntimeError, "floating point"),
    ("bool tensor requires_grad = True", lambda L: assign(L.ones(2, dtype=L.bool), "requires_grad", True),
     RuntimeError, "floating point"),
    ("int Parameter requires_grad = True",
     lambda L: assign(L.nn.Parameter(L.ones(2, dtype=L.int64), requires_grad=False), "requires_grad", True),
     RuntimeError, "floating point"),
    ("non-leaf requires_grad = False", lambda L: assign(L.ones(2, requires_grad=True) * 2, "requires_grad", False),
     RuntimeError, "leaf variables"),
    ("non-leaf requires_grad = True", lambda L: assign(L.ones(2, requires_grad=True) * 2, "requires_grad", True),
     RuntimeError, "leaf variables"),
    ("del requires_grad", lambda L: delattr(L.ones(2), "requires_grad"), RuntimeError, "must be a bool"),
    ("backward(retain_graph=str)", lambda L: (L.ones(2, requires_grad=True) * 2).sum().backward(retain_graph="no"),
     TypeError, "'str' object cannot be interpreted as an integer"),
    ("backward(create_graph=str)", lambda L: (L.ones(2, requires_grad=True) * 2).sum().backward(create_graph="no"),
     TypeError, "'str' object cannot be interpreted as an integer"),
    ("autograd.grad(allow_unused=str)",
     lambda L: (lambda t: L.autograd.grad((t * 2).sum(), t, allow_unused="no"))(L.ones(2, requires_grad=True)),
     TypeError, "'str' object cannot be interpreted as an integer"),
    ("data = a meta tensor", lambda L: assign(L.ones(2), "data", L.ones(2, device="meta")), RuntimeError,
     "incompatible tensor type"),
    ("grad = itself", lambda L: (lambda t: assign(t, "grad", t))(L.ones(2, requires_grad=True)),
     RuntimeError, "its own grad"),
    ("data = int64 on a tensor requiring grad",
     lambda L: assign(L.nn.Parameter(L.ones(2)), "data", L.ones(2, dtype=L.int64)), RuntimeError, "floating point"),
    ("F.dropout(int)", lambda L: L.nn.functional.dropout(3), TypeError, "must be Tensor, not int"),
    ("F.alpha_dropout(list)", lambda L: L.nn.functional.alpha_dropout([1.0, 2.0]), TypeError, "must be Tensor"),
    ("F.feature_alpha_dropout(None)", lambda L: L.nn.functional.feature_alpha_dropout(None), TypeError,
     "must be Tensor, not NoneType"),
    ("F.hardswish(int)", lambda L: L.nn.functional.hardswish(3), TypeError, "must be Tensor, not int"),
    ("F.gelu(list)", lambda L: L.nn.functional.gelu([1.0]), TypeError, "must be Tensor, not list"),
    ("F.relu(ndarray)", lambda L: L.nn.functional.relu(np.ones(3, np.float32)), TypeError, "must be Tensor"),
    ("F.softplus(input=str)", lambda L: L.nn.functional.softplus(input="a"), TypeError, "must be Tensor, not str"),
    ("F.tanh(int)", lambda L: L.nn.functional.tanh(3), AttributeError, "no attribute 'tanh'"),
    ("F.sigmoid(float)", lambda L: L.nn.functional.sigmoid(2.0), AttributeError, "no attribute 'sigmoid'"),
    ("F.mse_loss(x, int)", lambda L: L.nn.functional.mse_loss(x(L, 4), 3), AttributeError, "no attribute 'size'"),
    ("F.l1_loss(x, int)", lambda L: L.nn.functional.l1_loss(x(L, 4), 3), AttributeError, "no attribute 'size'"),
    ("F.kl_div(x, int)", lambda L: L.nn.functional.kl_div(x(L, 4), 3, reduction="sum"), TypeError, "argument 'target'"),
    ("F.soft_margin_loss(x, int)", lambda L: L.nn.functional.soft_margin_loss(x(L, 4), 3), TypeError,
     "argument 'target'"),
    ("F.poisson_nll_loss(int, x)", lambda L: L.nn.functional.poisson_nll_loss(3, x(L, 4)), TypeError,
     "argument 'input'"),
    ("F.cross_entropy(list, x)", lambda L: L.nn.functional.cross_entropy([1.0], L.tensor([0])), TypeError,
     "must be Tensor, not list"),
    ("F.layer_norm(None, [6])", lambda L: L.nn.functional.layer_norm(None, [6]), TypeError, "must be Tensor"),
    ("F.softmax(str, 0)", lambda L: L.nn.functional.softmax("a", 0), AttributeError, "no attribute 'softmax'"),
    ("F.conv2d(int, w)", lambda L: L.nn.functional.conv2d(3, x(L, 1, 1, 1, 1)), TypeError,
     "invalid combination of arguments"),
    ("F.scaled_dot_product_attention(q, list, v)",
     lambda L: L.nn.functional.scaled_dot_product_attention(x(L, 1, 2, 3), [1.0], x(L, 1, 2, 3)), TypeError,
     "argument 'key'"),
    ("F.pad(int, [1, 1])", lambda L: L.nn.functional.pad(3, [1, 1]), TypeError, "must be Tensor, not int"),
    ("F.embedding(int, w)", lambda L: L.nn.functional.embedding(3, x(L, 4, 3)), TypeError,
     "argument 'indices' (position 2) must be Tensor"),
    ("F.linear(None, w)", lambda L: L.nn.functional.linear(None, x(L, 4, 3)), TypeError,
     "must be Tensor, not NoneType"),
    ("F.batch_norm(x, int, None)", lambda L: L.nn.functional.batch_norm(x(L, 2, 3), 3, None, training=True),
     TypeError, "argument 'running_mean'"),
    # the other parameters torch's parser types
    ("F.max_pool2d(ceil_mode=str)", lambda L: L.nn.functional.max_pool2d(x(L, 1, 4, 4), 2, ceil_mode="no"),
     TypeError, "argument 'ceil_mode'.* must be bool, not str"),
    ("F.avg_pool1d(count_include_pad=None)",
     lambda L: L.nn.functional.avg_pool1d(x(L, 1, 4), 2, count_include_pad=None), TypeError, "must be bool"),
    ("F.avg_pool1d(kernel_size=[1.5])", lambda L: L.nn.functional.avg_pool1d(x(L, 1, 4), [1.5]), TypeError,
     "must be tuple of ints, but found element of type float"),
    ("F.layer_norm(eps=str)", lambda L: L.nn.functional.layer_norm(x(L, 2, 6), [6], eps="0.5"), TypeError,
     "argument 'eps'.* must be float, not str"),
    ("F.elu(x, str)", lambda L: L.nn.functional.elu(x(L, 4), "0.5"), TypeError, "must be Number, not str"),
    ("F.cross_entropy(ignore_index=1.5)",
     lambda L: L.nn.functional.cross_entropy(x(L, 3, 5), L.tensor([0, 4, 2]), ignore_index=1.5), TypeError,
     "argument 'ignore_index'.* must be int, not float"),
    ("F.group_norm(x, 1.5)", lambda L: L.nn.functional.group_norm(x(L, 2, 4, 3), 1.5), TypeError, "must be int"),
    ("F.conv1d(stride=str)", lambda L: L.nn.functional.conv1d(x(L, 1, 2, 5), x(L, 3, 2, 2), stride="1"),
     TypeError, "stride"),
    ("F.scaled_dot_product_attention(is_causal=str)",
     lambda L: L.nn.functional.scaled_dot_product_attention(x(L, 1, 2, 3), x(L, 1, 2, 3), x(L, 1, 2, 3),
                                                           is_causal="no"), TypeError, "must be bool"),
    ("F.ctc_loss(float lengths)",
     lambda L: L.nn.functional.ctc_loss(x(L, 6, 2, 4).log_softmax(2), L.tensor([[1, 2], [3, 1]]), [6.0, 5.0],
                                        [2, 2]), TypeError, "invalid combination of arguments"),
    ("F.avg_pool2d(x, tensor([2, 2]))", lambda L: L.nn.functional.avg_pool2d(x(L, 1, 4, 4), L.tensor([2, 2])),
     TypeError, "must be tuple of ints, not Tensor"),
    ("F.one_hot(t, num_classes=tensor([3]))", lambda L: L.nn.functional.one_hot(L.tensor([0, 1]), L.tensor([3])),
     TypeError, "must be int, not Tensor"),
    ("F.layer_norm(eps=tensor([1e-5]))", lambda L: L.nn.functional.layer_norm(x(L, 2, 6), [6], eps=L.tensor([1e-5])),
     TypeError, "must be float, not Tensor"),
    # integer inputs that no torch kernel takes (NumPy computed them)
    ("F.hinge_embedding_loss(int64)",
     lambda L: L.nn.functional.hinge_embedding_loss(L.tensor([1, 2, 3]), L.tensor([1.0, -1.0, 1.0])), RuntimeError,
     "could not infer output dtype"),
    ("F.soft_margin_loss(int64)", lambda L: L.nn.functional.soft_margin_loss(L.tensor([1, 2]), L.tensor([1.0, -1.0])),
     RuntimeError, "can't be cast to the desired output type Long"),
    ("F.multi_margin_loss(int64)",
     lambda L: L.nn.functional.multi_margin_loss(L.ones(3, 5, dtype=L.int64), L.tensor([0, 4, 2])),
     NotImplementedError, "multi_margin_loss_cpu_kernel"),
    ("F.multilabel_margin_loss(int64)",
     lambda L: L.nn.functional.multilabel_margin_loss(L.ones(2, 4, dtype=L.int64), L.tensor([[0, -1, 0, 0]] * 2)),
     NotImplementedError, "multilabel_margin_loss_forward_out_frame"),
    ("F.max_unpool2d(int64)", lambda L: L.nn.functional.max_unpool2d(L.ones(1, 1, 2, 2, dtype=L.int64),
                                                                    L.zeros(1, 1, 2, 2, dtype=L.int64), 2),
     NotImplementedError, "max_unpool2d"),
    ("F.max_unpool2d(padding=str)", lambda L: L.nn.functional.max_unpool2d(x(L, 1, 1, 2, 2),
                                                                          L.zeros(1, 1, 2, 2, dtype=L.int64), 2,
                                                                          padding="1"), TypeError, "str"),
    ("F.batch_norm(int64)",
     lambda L: L.nn.functional.batch_norm(L.ones(2, 3, dtype=L.int64), L.zeros(3), L.ones(3)),
     NotImplementedError, '"batch_norm" not implemented for \'Long\''),
    ("F.linear(bool, float)", lambda L: L.nn.functional.linear(L.ones(2, 3, dtype=L.bool), x(L, 4, 3)), RuntimeError,
     "expected m1 and m2 to have the same dtype"),
    # the top-level functions and Tensor methods (their sweep: bad dims, flags and dtypes)
    ("aminmax(dim=[0, 1])", lambda L: L.aminmax(x(L, 2, 3), dim=[0, 1]), TypeError, "argument 'dim' must be int"),
    ("nanmedian(dim=[0, 1])", lambda L: L.nanmedian(x(L, 2, 3), dim=[0, 1]), TypeError, "must be int, not list"),
    ("x.kthvalue(1.5)", lambda L: x(L, 2, 3).kthvalue(1.5), TypeError, "argument 'k'.* must be int, not float"),
    ("x.repeat_interleave((1,))", lambda L: x(L, 2, 3).repeat_interleave((1,)), TypeError,
     "invalid combination of arguments"),
    ("x.unique_consecutive(1)", lambda L: x(L, 2, 3).unique_consecutive(1), TypeError,
     "argument 'return_inverse' must be bool"),
    ("optimizer.step() of a parameter whose .data was reshaped after .grad",
     lambda L: step_after_reshaping_data(L), RuntimeError, "size|shape"),
]


def step_after_reshaping_data(L):
    p = L.nn.Parameter(L.ones(3))
    optimizer = L.optim.SGD([p], lr=0.1)  # (SGD: torch's first Adam step takes a second to set up)
    p.grad = L.ones(3)
    p.data = L.ones(4)  # (torch checks a gradient's shape when it is assigned, not when .data changes)
    optimizer.step()


@pytest.mark.parametrize("call,error,phrase", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_refused_as_torch_refuses(call, error, phrase):
    words = phrase.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(error, match=words):  # (the oracle first: torch refuses it so)
        call(torch)
    with pytest.raises(error, match=words):
        call(ml)


def test_flags_are_bools_and_tensors_pass():
    t = ml.ones(2)
    t.requires_grad = True
    t.requires_grad = False  # (a leaf may drop it again)
    c = ml.ones(2, dtype=ml.complex64)
    c.requires_grad = True
    y = ml.ones(2, requires_grad=True) * 2
    assert y.requires_grad and c.requires_grad and not t.requires_grad
    assert ml.nn.functional.relu(input=ml.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]
    assert ml.nn.functional.batch_norm(ml.ones(2, 3), None, None, training=True).shape == (2, 3)
    for library in (torch, ml):  # a NumPy bool is no bool to torch's setter either
        with pytest.raises(RuntimeError, match="must be a bool"):
            library.ones(2).requires_grad = np.bool_(True)


def test_hinge_embedding_loss_of_integers_stays_integer():
    """ATen's ``margin - input`` fills a tensor of the input's dtype: an int64 input's loss is int64 (it was float)."""
    for reduction in ("sum", "none"):
        ours = ml.nn.functional.hinge_embedding_loss(ml.tensor([1, 2, 3]), ml.tensor([1.0, -1.0, 1.0]),
                                                     reduction=reduction)
        theirs = torch.nn.functional.hinge_embedding_loss(torch.tensor([1, 2, 3]), torch.tensor([1.0, -1.0, 1.0]),
                                                          reduction=reduction)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "") and ours.tolist() == theirs.tolist()


def test_sizes_and_numbers_as_torchs_parser_takes_them():
    """A 0-d tensor is a number to torch's parser; ``ignore_index`` of a 0-d tensor made the mask a Tensor, which the
    kernel took for a CuPy array."""
    logits, targets = ml.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 2.0]]), ml.tensor([0, 1])
    loss = ml.nn.functional.cross_entropy(logits, targets, ignore_index=ml.tensor(1))
    theirs = torch.nn.functional.cross_entropy(torch.tensor(logits.numpy()), torch.tensor(targets.numpy()),
                                               ignore_index=torch.tensor(1))
    assert abs(loss.item() - theirs.item()) < 1e-6
    assert ml.nn.functional.elu(ml.tensor([-1.0]), ml.tensor(2.0)).item() == pytest.approx(
        torch.nn.functional.elu(torch.tensor([-1.0]), torch.tensor(2.0)).item())
