"""Round 8: results laid out in memory as torch lays them out.

Layout is not only what ``stride()`` reports: torch draws a dropout mask (and every in-place random
fill) in the tensor's memory order, so a result that minilora lays out differently from torch gets
other masks from the same seed -- silently. PyTorch's own "Language Modeling with nn.Transformer"
tutorial trained to other losses because ``nn.MultiheadAttention``'s output was a transposed view
in minilora and contiguous in torch. Each case here compares the layout of a result (from
contiguous inputs) with torch's, then the tutorial's losses."""
import math

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _elements(array):
    return tuple(s // array.itemsize for s in array.strides)


def _same_layout(ours, theirs):
    """Same contiguity, and where torch's result is not contiguous, the same strides (dimensions of
    size 1 aside: their stride means nothing)."""
    if ours._array.flags.c_contiguous != theirs.is_contiguous():
        return False
    if theirs.is_contiguous():
        return True
    keep = [i for i, n in enumerate(theirs.shape) if n > 1]
    return [_elements(ours._array)[i] for i in keep] == [theirs.stride()[i] for i in keep]


def x(lib, *shape):
    return lib.randn(*shape)


RESULTS = {
    # integer-array indexing and index_select along a later dimension (NumPy keeps the index's
    # dimension outermost in memory)
    "index_select(2)": lambda L: x(L, 2, 3, 4).index_select(2, L.tensor([0, 2, 1])),
    "index_select(1)": lambda L: x(L, 2, 3, 4).index_select(1, L.tensor([0, 2])),
    "x[:, idx]": lambda L: x(L, 2, 3, 4)[:, [0, 2]],
    "x[..., idx]": lambda L: x(L, 2, 3, 4)[..., [0, 2]],
    "x[:, i, j]": lambda L: x(L, 2, 3, 4)[:, [0, 2], [1, 3]],
    "repeat_interleave(dim=1)": lambda L: x(L, 2, 3).repeat_interleave(2, 1),
    "topk indices": lambda L: x(L, 3, 6).topk(2)[1],
    "pad reflect": lambda L: L.nn.functional.pad(x(L, 1, 2, 3, 3), (1, 1, 1, 1), mode="reflect"),
    "interpolate nearest": lambda L: L.nn.functional.interpolate(x(L, 1, 2, 3, 3), scale_factor=2),
    "interpolate linear": lambda L: L.nn.functional.interpolate(x(L, 1, 2, 3), scale_factor=2, mode="linear"),
    "interpolate bicubic": lambda L: L.nn.functional.interpolate(x(L, 1, 2, 3, 3), size=(5, 4), mode="bicubic"),
    "upsample bilinear": lambda L: L.nn.Upsample(scale_factor=2, mode="bilinear")(x(L, 1, 2, 3, 3)),
    # convolutions (an einsum inside)
    "conv1d": lambda L: L.nn.Conv1d(3, 4, 3)(x(L, 2, 3, 6)),
    "conv1d stride 2": lambda L: L.nn.Conv1d(3, 4, 3, stride=2, padding=1)(x(L, 2, 3, 7)),
    "conv1d groups": lambda L: L.nn.Conv1d(4, 4, 3, groups=2)(x(L, 2, 4, 7)),
    "conv2d": lambda L: L.nn.Conv2d(3, 4, 3)(x(L, 2, 3, 6, 6)),
    "conv2d depthwise": lambda L: L.nn.Conv2d(4, 4, 3, groups=4)(x(L, 2, 4, 7, 7)),
    "conv2d padding same": lambda L: L.nn.functional.conv2d(x(L, 2, 3, 5, 5), x(L, 4, 3, 3, 3), padding="same"),
    # attention modules
    "MultiheadAttention": lambda L: L.nn.MultiheadAttention(8, 2)(*(x(L, 5, 2, 8),) * 3)[0],
    "MultiheadAttention batch_first": lambda L: L.nn.MultiheadAttention(8, 2, batch_first=True)(
        *(x(L, 2, 5, 8),) * 3)[0],
    "MultiheadAttention need_weights=False": lambda L: L.nn.MultiheadAttention(8, 2)(
        *(x(L, 5, 2, 8),) * 3, need_weights=False)[0],
    "MultiheadAttention kdim/vdim": lambda L: L.nn.MultiheadAttention(8, 2, kdim=6, vdim=4)(
        x(L, 5, 2, 8), x(L, 7, 2, 6), x(L, 7, 2, 4))[0],
    "MultiheadAttention unbatched": lambda L: L.nn.MultiheadAttention(8, 2)(*(x(L, 5, 8),) * 3)[0],
    "TransformerEncoderLayer": lambda L: L.nn.TransformerEncoderLayer(8, 2, 16)(x(L, 5, 2, 8)),
    "TransformerDecoderLayer": lambda L: L.nn.TransformerDecoderLayer(8, 2, 16)(x(L, 5, 2, 8), x(L, 4, 2, 8)),
    "sdpa": lambda L: L.nn.functional.scaled_dot_product_attention(x(L, 2, 3, 5, 4), x(L, 2, 3, 6, 4),
                                                                   x(L, 2, 3, 6, 4)),
    # already torch's: kept so
    "linear 3-D": lambda L: L.nn.Linear(6, 5)(x(L, 4, 3, 6)),
    "softmax(0)": lambda L: x(L, 6, 3).softmax(0),
    "sum(1)": lambda L: x(L, 2, 6, 3).sum(1),
    "cat(dim=1)": lambda L: L.cat([x(L, 2, 3), x(L, 2, 4)], 1),
    "stack(dim=2)": lambda L: L.stack([x(L, 2, 3), x(L, 2, 3)], 2),
    "LSTM output": lambda L: L.nn.LSTM(4, 6, 2)(x(L, 5, 3, 4))[0],
    "GRU batch_first bidirectional": lambda L: L.nn.GRU(4, 6, 2, batch_first=True, bidirectional=True)(
        x(L, 3, 5, 4))[0],
    "embedding": lambda L: L.nn.Embedding(10, 4)(L.tensor([[1, 2], [3, 4]])),
    "cross_entropy none": lambda L: L.nn.functional.cross_entropy(x(L, 4, 5, 3), L.tensor([[0, 1, 2]] * 4),
                                                                  reduction="none"),
    "transpose view": lambda L: x(L, 3, 4).t(),
    "permute view": lambda L: x(L, 2, 3, 4).permute(2, 0, 1),
}


@pytest.mark.parametrize("name", RESULTS)
def test_result_is_laid_out_as_torch(name):
    make = RESULTS[name]
    torch.manual_seed(0)
    theirs = make(torch)
    minilora.manual_seed(0)
    ours = make(minilora)
    assert _same_layout(ours, theirs), (name, _elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-4, atol=1e-5)


EINSUMS = [("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij,jk->ik", [(3, 4), (4, 5)]),
           ("ij,jk", [(3, 4), (4, 5)]), ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
           ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]), ("bhqk,bhkd->bqhd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
           ("bhqk,bhkd->hbqd", [(2, 3, 4, 6), (2, 3, 6, 5)]), ("bhqk,bhkd->qdbh", [(2, 3, 4, 6), (2, 3, 6, 5)]),
           ("ij,jk->ki", [(3, 4), (4, 5)]), ("bij,bjk->kbi", [(2, 3, 4), (2, 4, 5)]),
           ("bij,bjk->ikb", [(2, 3, 4), (2, 4, 5)]), ("abc,cd->dab", [(2, 3, 4), (4, 5)]),
           ("abc,cd->adb", [(2, 3, 4), (4, 5)]), ("bnd,dh->bnh", [(2, 3, 4), (4, 5)]),
           ("pqa,ra->rqp", [(2, 3, 4), (5, 4)]), ("bxa,bya->ybx", [(2, 3, 4), (2, 5, 4)]),
           ("aij,jk->k", [(2, 3, 4), (4, 5)]), ("i,i->", [(3,), (3,)]), ("bij,bj->bi", [(2, 3, 4), (2, 4)]),
           ("i,j->ij", [(3,), (4,)]), ("bi,bj->bij", [(2, 3), (2, 4)]), ("ij->ji", [(3, 4)]),
           ("ii->i", [(3, 3)]), ("bij->bj", [(2, 3, 4)])]


@pytest.mark.parametrize("equation,shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum_result_is_laid_out_as_torch(equation, shapes):
    """torch's einsum of two operands is one bmm, permuted into the output's order: batch labels,
    then the free labels of the operand whose label comes first in the output, then the other's."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape) for shape in shapes]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    theirs = torch.einsum(equation, *theirs_in)
    ours_in = [minilora.tensor(a, requires_grad=True) for a in arrays]
    ours = minilora.einsum(equation, *ours_in)
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    (theirs * theirs).sum().backward()
    (ours * ours).sum().backward()
    for mine, torch_s in zip(ours_in, theirs_in):
        np.testing.assert_allclose(mine.grad.numpy(), torch_s.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_einsum_gradients_match_torch_with_a_permuted_result():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4, 6)), rng.standard_normal((2, 3, 6, 5))
    weight = rng.standard_normal((2, 4, 3, 5))
    grads = []
    for lib in (torch, minilora):
        ta, tb = (lib.tensor(v, requires_grad=True) for v in (a, b))
        (lib.einsum("bhqk,bhkd->bqhd", ta, tb) * lib.tensor(weight)).sum().backward()
        grads.append((ta.grad.numpy(), tb.grad.numpy()))
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


DROPPED = {
    "after MultiheadAttention": lambda L, x: L.nn.functional.dropout(
        L.nn.MultiheadAttention(8, 2)(x, x, x, need_weights=False)[0], 0.3),
    "after conv1d": lambda L, x: L.nn.functional.dropout(L.nn.Conv1d(2, 4, 3)(x.reshape(5, 2, 8)), 0.3),
    "after einsum attention": lambda L, x: L.nn.functional.dropout(
        L.einsum("qbe,kbe->bqk", x, x).softmax(-1), 0.3),
    "after x[:, idx]": lambda L, x: L.nn.functional.dropout(x[:, [1, 0]], 0.3),
}


@pytest.mark.parametrize("name", DROPPED)
def test_dropout_after_the_op_draws_torch_s_mask(name):
    """The same seed, the same mask: only if the dropped tensor is laid out as torch's."""
    results = []
    for lib in (torch, minilora):
        lib.manual_seed(3)
        inputs = lib.randn(5, 2, 8)
        results.append(DROPPED[name](lib, inputs).detach().numpy())
    np.testing.assert_array_equal(results[1] == 0, results[0] == 0)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


def _transformer_tutorial(lib):
    """PyTorch's "Language Modeling with nn.Transformer and torchtext" tutorial, small: positional
    encoding, a 2-layer TransformerEncoder with dropout, SGD with clip_grad_norm_, StepLR."""
    nn = lib.nn

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=64):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            position = lib.arange(max_len).unsqueeze(1)
            div_term = lib.exp(lib.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = lib.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = lib.sin(position * div_term)
            pe[:, 0, 1::2] = lib.cos(position * div_term)
            self.register_buffer("pe", pe)

        def forward(self, x):
            return self.dropout(x + self.pe[:x.size(0)])

    class TransformerModel(nn.Module):
        def __init__(self, ntoken, d_model, nhead, d_hid, nlayers, dropout):
            super().__init__()
            self.pos_encoder = PositionalEncoding(d_model, dropout)
            layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout)
            self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
            self.embedding = nn.Embedding(ntoken, d_model)
            self.d_model = d_model
            self.linear = nn.Linear(d_model, ntoken)
            self.embedding.weight.data.uniform_(-0.1, 0.1)
            self.linear.bias.data.zero_()
            self.linear.weight.data.uniform_(-0.1, 0.1)

        def forward(self, src):
            src = self.pos_encoder(self.embedding(src) * math.sqrt(self.d_model))
            mask = nn.Transformer.generate_square_subsequent_mask(len(src))
            return self.linear(self.transformer_encoder(src, mask))

    lib.manual_seed(0)
    model = TransformerModel(30, 16, 2, 32, 2, 0.2)
    optimizer = lib.optim.SGD(model.parameters(), lr=5.0)
    scheduler = lib.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.95)
    data = lib.randint(0, 30, (120,)).view(4, 30).t().contiguous()
    losses = []
    for _ in range(2):
        for i in range(0, data.size(0) - 1, 10):
            source, targets = data[i:i + 10], data[i + 1:i + 11].reshape(-1)
            loss = nn.CrossEntropyLoss()(model(source[:len(targets) // 4]).view(-1, 30), targets)
            optimizer.zero_grad()
            loss.backward()
            lib.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    return losses


def test_the_transformer_tutorial_trains_to_torch_s_losses():
    """Dropout in the positional encoding, the attention weights, after attention and in the
    feed-forward block: every mask torch's, so every loss (float32 sums aside)."""
    theirs, ours = _transformer_tutorial(torch), _transformer_tutorial(minilora)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)
