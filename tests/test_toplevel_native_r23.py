"""torch's top-level native_* ops, functional RNN cells and layers, ATen's convolution / sampler / bag spellings,
segment_reduce, sym_*, cond / while_loop / fork / wait and the OOM exception classes (round 23), against torch:
float32 bits where the underlying op is torch's bits already, float64 to rounding, gradients, errors in torch's
words."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402


def M(t, requires_grad=False):
    return ml.tensor(t.detach().numpy().copy(), requires_grad=requires_grad)


def same_bits(mine, theirs):
    mine, theirs = (mine if isinstance(mine, (tuple, list)) else (mine,)), (
        theirs if isinstance(theirs, (tuple, list)) else (theirs,))
    assert len(mine) == len(theirs)
    for m, t in zip(mine, theirs):
        assert tuple(m.shape) == tuple(t.shape) and str(m.dtype) == str(t.dtype).replace("torch.", "")
        m, t = m.detach(), t.detach()
        a, b = m.float().numpy() if "bfloat16" in str(m.dtype) else m.numpy(), \
            t.float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        np.testing.assert_array_equal(a, b)


def close(mine, theirs, rtol=1e-12, atol=1e-12):
    mine, theirs = (mine if isinstance(mine, (tuple, list)) else (mine,)), (
        theirs if isinstance(theirs, (tuple, list)) else (theirs,))
    assert len(mine) == len(theirs)
    for m, t in zip(mine, theirs):
        assert tuple(m.shape) == tuple(t.shape)
        np.testing.assert_allclose(m.detach().numpy(), t.detach().numpy(), rtol=rtol, atol=atol)


def raises_same(mine, theirs):
    with pytest.raises(Exception) as expected:
        theirs()
    with pytest.raises(type(expected.value)) as got:
        mine()
    assert str(got.value) == str(expected.value)


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Once per run, what a first call pays (torch's first backward of a given gradient, bfloat16's import): not one test's time."""
    y = torch.ones(2, requires_grad=True)
    torch.native_dropout(y, 0.5, True)[0].backward(torch.ones(2))  # (a given gradient: torch imports torch.fx)
    ml.ones(2).bfloat16()


@pytest.fixture(scope="module")
def x():
    return torch.Generator().manual_seed(23), torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(23))


# ---- native norms and dropout ------------------------------------------------------------------------
def test_native_layer_norm_outputs_and_statistics_are_torchs_bits(x):
    _, t = x
    w, b = torch.randn(8), torch.randn(8)
    same_bits(ml.native_layer_norm(M(t), [8], M(w), M(b), 1e-5), torch.native_layer_norm(t, [8], w, b, 1e-5))
    same_bits(ml.native_layer_norm(M(t), normalized_shape=(3, 8), weight=None, bias=None, eps=1e-3),
              torch.native_layer_norm(t, normalized_shape=(3, 8), weight=None, bias=None, eps=1e-3))
    same_bits(ml.native_layer_norm(M(t).bfloat16(), [8], None, None, 1e-5),  # 16-bit: mean, rstd in bfloat16
              torch.native_layer_norm(t.bfloat16(), [8], None, None, 1e-5))
    same_bits(ml.native_layer_norm(M(t).bfloat16(), [8], M(w), None, 1e-5),  # float32 weight: float32 statistics
              torch.native_layer_norm(t.bfloat16(), [8], w, None, 1e-5))
    td = t.double().requires_grad_()
    mine, theirs = ml.native_layer_norm(M(td, True), [8], None, None, 1e-5), torch.native_layer_norm(td, [8], None,
                                                                                                    None, 1e-5)
    close(mine, theirs)
    assert not mine[1].requires_grad and mine[0].grad_fn.name() == "NativeLayerNormBackward0"


def test_native_batch_norm_training_and_eval(x):
    _, t = x
    for training in (True, False):
        b = torch.randn(3)
        rm2, rv2 = torch.randn(3), torch.rand(3) + 0.5
        mrm2, mrv2 = M(rm2), M(rv2)
        theirs = torch.native_batch_norm(t, None, b, rm2, rv2, training, 0.1, 1e-5)
        mine = ml.native_batch_norm(M(t), None, M(b), mrm2, mrv2, training, 0.1, 1e-5)
        same_bits(mine, theirs)  # (eval: two empty statistics)
        same_bits((mrm2, mrv2), (rm2, rv2))
    rm, rv = torch.zeros(3).bfloat16(), torch.ones(3).bfloat16()  # (bfloat16's kernel keeps bfloat16 statistics)
    mrm, mrv = M(rm.float()).bfloat16(), M(rv.float()).bfloat16()
    same_bits(ml.native_batch_norm(M(t).bfloat16(), None, None, mrm, mrv, True, 0.1, 1e-5),
              torch.native_batch_norm(t.bfloat16(), None, None, rm, rv, True, 0.1, 1e-5))
    same_bits((mrm, mrv), (rm, rv))
    close(ml.native_batch_norm(M(t).double(), None, None, None, None, True, 0.1, 1e-5),
          torch.native_batch_norm(t.double(), None, None, None, None, True, 0.1, 1e-5))


def test_native_group_norm_and_its_checks(x):
    _, t = x
    w, b = torch.randn(3), torch.randn(3)
    same_bits(ml.native_group_norm(M(t), M(w), M(b), 4, 3, 8, 3, 1e-5), torch.native_group_norm(t, w, b, 4, 3, 8, 3,
                                                                                                 1e-5))
    close(ml.native_group_norm(M(t).double(), None, None, 4, 3, 8, 1, 1e-5),
          torch.native_group_norm(t.double(), None, None, 4, 3, 8, 1, 1e-5))
    td = t.double().requires_grad_()  # (torch differentiates group norm's mean and rstd too)
    mine_input = M(td, True)
    theirs, mine = torch.native_group_norm(td, None, None, 4, 3, 8, 3, 1e-5), ml.native_group_norm(
        mine_input, None, None, 4, 3, 8, 3, 1e-5)
    (theirs[0] * theirs[0]).sum().add(theirs[1].sum() * 2 + theirs[2].sum()).backward()
    (mine[0] * mine[0]).sum().add(mine[1].sum() * 2 + mine[2].sum()).backward()
    close(mine_input.grad, td.grad)
    raises_same(lambda: ml.native_group_norm(M(t), None, None, 4, 3, 9, 3, 1e-5),
                lambda: torch.native_group_norm(t, None, None, 4, 3, 9, 3, 1e-5))


def test_native_dropout_draws_torchs_mask_and_scales_by_atens_double_reciprocal(x):
    _, t = x
    for p in (0.15, 0.42, 1.0):  # (0.15, 0.42: 1 / (1 - p) in double rounds otherwise than F.dropout's float)
        torch.manual_seed(5)
        theirs = torch.native_dropout(t, p, True)
        ml.manual_seed(5)
        mine = ml.native_dropout(M(t), p, True)
        same_bits(mine, theirs)
    for p in (0.15, 0.3):  # (16-bit: the forward's scale rounded to the dtype, the backward's not: ATen's mul_, mul)
        x16 = t.bfloat16().requires_grad_()
        mine_input = M(t).bfloat16().requires_grad_()
        torch.manual_seed(5)
        theirs = torch.native_dropout(x16, p, True)
        ml.manual_seed(5)
        mine = ml.native_dropout(mine_input, p, True)
        same_bits(mine, theirs)
        g = torch.randn(t.shape).bfloat16()
        theirs[0].backward(g)
        mine[0].backward(M(g.float()).bfloat16())
        same_bits(mine_input.grad, x16.grad)
    out, mask = ml.native_dropout(M(t), 0.5, False)
    assert out.numpy().tolist() == t.detach().numpy().tolist() and mask.numpy().all() and str(mask.dtype) == "bool"
    raises_same(lambda: ml.native_dropout(M(t), 1.5, True), lambda: torch.native_dropout(t, 1.5, True))
    raises_same(lambda: ml.native_dropout(ml.arange(4), 0.5, True), lambda: torch.native_dropout(torch.arange(4), 0.5,
                                                                                                   True))


def test_native_dropout_gradient_is_grad_times_mask_times_scale():
    t = torch.randn(64, requires_grad=True)
    mt = M(t, True)
    torch.manual_seed(1)
    out, _ = torch.native_dropout(t, 0.15, True)
    ml.manual_seed(1)
    mine, _ = ml.native_dropout(mt, 0.15, True)
    g = torch.randn(64)
    out.backward(g)
    mine.backward(M(g))
    np.testing.assert_array_equal(mt.grad.numpy(), t.grad.numpy())
    assert mine.grad_fn.name() == "NativeDropoutBackward0"


def test_small_native_ops(x):
    _, t = x
    v = torch.randn(3, 4, 5)
    for dim in (-1, 0, 1, 2):
        same_bits(ml.norm_except_dim(M(v), 2, dim), torch.norm_except_dim(v, 2, dim))
    same_bits(ml.norm_except_dim(M(v), pow=3, dim=1), torch.norm_except_dim(v, pow=3, dim=1))
    c = torch.arange(24.).reshape(2, 6, 2)
    same_bits(ml.native_channel_shuffle(M(c), 3), torch.native_channel_shuffle(c, 3))
    rm, rv = torch.randn(3), torch.rand(3)
    mrm, mrv = M(rm), M(rv)
    same_bits(ml.batch_norm_update_stats(M(t), mrm, mrv, 0.1), torch.batch_norm_update_stats(t, rm, rv, 0.1))
    same_bits((mrm, mrv), (rm, rv))
    with pytest.raises(NotImplementedError, match="Could not run 'aten::native_norm' with arguments from the 'CPU'"):
        ml.native_norm(M(t))


def test_sync_batch_norm_pieces_compose_to_torchs_batch_norm():
    """Two 'processes' (halves of a batch): stats, gather, elemt; backward_reduce, elemt -- torch's F.batch_norm."""
    g0 = torch.Generator().manual_seed(3)
    t = torch.randn(6, 3, 5, dtype=torch.float64, generator=g0, requires_grad=True)
    w, b = (torch.randn(3, dtype=torch.float64, generator=g0, requires_grad=True) for _ in range(2))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = torch.nn.functional.batch_norm(t, rm, rv, w, b, True, 0.1, 1e-5)
    g = torch.randn(y.shape, dtype=torch.float64, generator=g0)
    y.backward(g)
    mx, halves = M(t), (slice(0, 2), slice(2, 6))
    stats = [ml.batch_norm_stats(mx[s], 1e-5) for s in halves]
    mrm, mrv = ml.zeros(3, dtype=ml.float64), ml.ones(3, dtype=ml.float64)
    mean, invstd = ml.batch_norm_gather_stats_with_counts(mx, ml.stack([s[0] for s in stats]),
                                                          ml.stack([s[1] for s in stats]), mrm, mrv, 0.1, 1e-5,
                                                          ml.tensor([10.0, 20.0], dtype=ml.float64))
    close(ml.batch_norm_elemt(mx, M(w), M(b), mean, invstd, 1e-5), y)
    close((mrm, mrv), (rm, rv))
    sums = [ml.batch_norm_backward_reduce(M(g)[s], mx[s], mean, invstd, M(w), True, True, True) for s in halves]
    sum_dy, sum_dy_xmu = sums[0][0] + sums[1][0], sums[0][1] + sums[1][1]
    close(ml.batch_norm_backward_elemt(M(g), mx, mean, invstd, M(w), sum_dy, sum_dy_xmu,
                                       ml.tensor([10, 20], dtype=ml.int32)), t.grad)
    close((sums[0][2] + sums[1][2], sums[0][3] + sums[1][3]), (w.grad, b.grad))


# ---- recurrent --------------------------------------------------------------------------------------
def _weights(gates, inputs, hidden=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(gates * hidden, inputs, dtype=torch.float64, generator=g),
            torch.randn(gates * hidden, hidden, dtype=torch.float64, generator=g),
            torch.randn(gates * hidden, dtype=torch.float64, generator=g),
            torch.randn(gates * hidden, dtype=torch.float64, generator=g)]


@pytest.mark.parametrize("name,gates", [("lstm_cell", 4), ("gru_cell", 3), ("rnn_tanh_cell", 1), ("rnn_relu_cell", 1)])
def test_rnn_cells_match_torch_with_gradients(name, gates):
    g = torch.Generator().manual_seed(1)
    x, h, c = (torch.randn(3, n, dtype=torch.float64, generator=g, requires_grad=True) for n in (4, 5, 5))
    w = _weights(gates, 4)
    hx, mhx = ((h, c), (M(h, True), M(c, True))) if name == "lstm_cell" else (h, M(h, True))
    mx = M(x, True)
    theirs = getattr(torch, name)(x, hx, *w)
    mine = getattr(ml, name)(mx, mhx, *(M(t) for t in w))
    close(mine, theirs)
    first = lambda r: r[0] if isinstance(r, tuple) else r  # noqa: E731
    first(theirs).sum().backward()
    first(mine).sum().backward()
    close(mx.grad, x.grad)
    no_bias = getattr(ml, name)(M(x), mhx if name != "lstm_cell" else (M(h), M(c)), M(w[0]), M(w[1]))
    close(no_bias, getattr(torch, name)(x, hx, w[0], w[1]))


def test_rnn_cell_errors_are_torchs():
    x, h, c = torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5)
    wi, wh = torch.randn(20, 4), torch.randn(20, 5)
    for args in (((h,), wi, wh), ((h, c), torch.randn(20, 3), wh), ((h[:2], c), wi, wh), ((h, c[:, :3]), wi, wh)):
        hx, a, b = args
        raises_same(lambda: ml.lstm_cell(M(x), tuple(M(t) for t in hx), M(a), M(b)),
                    lambda: torch.lstm_cell(x, hx, a, b))


@pytest.mark.parametrize("kind,gates", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1), ("rnn_relu", 1)])
def test_functional_rnn_layers_match_torch_both_overloads(kind, gates):
    g = torch.Generator().manual_seed(2)
    params = [p * 0.3 for layer in range(2) for d in range(2) for p in _weights(gates, 4 if layer == 0 else 10,
                                                                                    seed=layer * 2 + d)]
    xs = torch.randn(6, 3, 4, dtype=torch.float64, generator=g)
    h0, c0 = (torch.randn(4, 3, 5, dtype=torch.float64, generator=g) for _ in range(2))
    hx, mhx = ([h0, c0], [M(h0), M(c0)]) if kind == "lstm" else (h0, M(h0))
    mparams = [M(p) for p in params]
    close(getattr(ml, kind)(M(xs), mhx, mparams, True, 2, 0.0, False, True, False),
          getattr(torch, kind)(xs, hx, params, True, 2, 0.0, False, True, False))
    close(getattr(ml, kind)(M(xs.transpose(0, 1)), mhx, mparams, True, 2, 0.0, False, True, True),  # batch_first
          getattr(torch, kind)(xs.transpose(0, 1), hx, params, True, 2, 0.0, False, True, True))
    data, sizes = torch.randn(9, 4, dtype=torch.float64, generator=g), torch.tensor([3, 3, 2, 1])
    close(getattr(ml, kind)(M(data), M(sizes), mhx, mparams, True, 2, 0.0, False, True),
          getattr(torch, kind)(data, sizes, hx, params, True, 2, 0.0, False, True))


def test_nn_lstm_runs_torch_lstm_one_computation():
    """nn.LSTM and torch.lstm with its weights: the same bits (one loop computes both), torch's to rounding."""
    ml.manual_seed(0)
    lstm = ml.nn.LSTM(4, 5, num_layers=2)
    x = ml.randn(6, 2, 4)
    out, (h, c) = lstm(x)
    params = [p for p in lstm.parameters()]
    zeros = ml.zeros(2, 2, 5)
    same_bits(ml.lstm(x, (zeros, zeros), params, True, 2, 0.0, False, False, False), (out, h, c))
    assert out.grad_fn.name() == "MkldnnRnnLayerBackward0"  # (float32 CPU: torch's oneDNN layer node)
    torch_lstm = torch.nn.LSTM(4, 5, num_layers=2)
    torch_lstm.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in lstm.state_dict().items()})
    np.testing.assert_allclose(out.detach().numpy(), torch_lstm(torch.from_numpy(x.numpy()))[0].detach().numpy(),
                               atol=1e-6)


# ---- convolution, sampling, bags, CTC, pooling, segment_reduce -------------------------------------
def test_convolution_and_conv_tbc_match_torch():
    g = torch.Generator().manual_seed(4)
    i = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=g)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, generator=g)
    b = torch.randn(3, dtype=torch.float64, generator=g)
    close(ml.convolution(M(i), M(w), M(b), [2, 1], [1, 0], [1, 1], False, [0, 0], 1),
          torch.convolution(i, w, b, [2, 1], [1, 0], [1, 1], False, [0, 0], 1))
    wt = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=g)
    close(ml.convolution(input=M(i), weight=M(wt), bias=None, stride=[2, 2], padding=[1, 0], dilation=[1, 1],
                         transposed=True, output_padding=[1, 0], groups=1),
          torch.convolution(i, wt, None, [2, 2], [1, 0], [1, 1], True, [1, 0], 1))
    i1, w1 = torch.randn(2, 2, 7, dtype=torch.float64, generator=g), torch.randn(4, 1, 3, dtype=torch.float64,
                                                                               generator=g)
    close(ml.convolution(M(i1), M(w1), None, [1], [1], [2], False, [0], 2),
          torch.convolution(i1, w1, None, [1], [1], [2], False, [0], 2))
    t, k, bias = (torch.randn(*s, dtype=torch.float64, generator=g) for s in ((5, 2, 3), (3, 3, 4), (4,)))
    close(ml.conv_tbc(M(t), M(k), M(bias), 1), torch.conv_tbc(t, k, bias, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_bag_returns_atens_four_results(dtype):
    w = torch.randn(10, 3, dtype=dtype, generator=torch.Generator().manual_seed(6))
    ids = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9])
    for offsets, last in ((torch.tensor([0, 4]), False), (torch.tensor([0, 4, 4, 8]), False),
                          (torch.tensor([0, 4, 8]), True)):
        for mode in (0, 1, 2):
            for padding_idx in (None, 2):
                theirs = torch.embedding_bag(w, ids, offsets, False, mode, False, None, last, padding_idx)
                mine = ml.embedding_bag(M(w), M(ids), M(offsets), False, mode, False, None, last, padding_idx)
                same_bits(mine[1:], theirs[1:])
                close(mine[0], theirs[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="argument 'offsets' \\(position 3\\) must be Tensor, not NoneType"):
        ml.embedding_bag(M(w), M(ids), None)


def test_ctc_pool_grid_affine_and_renorm_match_torch():
    g = torch.Generator().manual_seed(7)
    lp = torch.randn(6, 2, 4, dtype=torch.float64, generator=g).log_softmax(-1)
    targets = torch.tensor([[1, 2], [3, 1]])
    for reduction in (0, 1, 2):
        close(ml.ctc_loss(M(lp), M(targets), [6, 5], [2, 1], 0, reduction),
              torch.ctc_loss(lp, targets, [6, 5], [2, 1], 0, reduction))
    close(ml.ctc_loss(M(lp), M(targets), [6, 5], [2, 1]), torch.ctc_loss(lp, targets, [6, 5], [2, 1]))  # (0: none)
    x = torch.randn(1, 2, 7, generator=g)
    same_bits(ml.max_pool1d_with_indices(M(x), 3, 2, 1, 1, True), torch.max_pool1d_with_indices(x, 3, 2, 1, 1, True))
    same_bits(ml.max_pool1d_with_indices(M(x), 3), torch.max_pool1d_with_indices(x, 3))
    theta = torch.randn(2, 2, 3, dtype=torch.float64, generator=g)
    close(ml.affine_grid_generator(M(theta), [2, 1, 3, 4], False), torch.affine_grid_generator(theta, [2, 1, 3, 4],
                                                                                                 False))
    image = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=g)
    grid = torch.rand(1, 2, 2, 2, dtype=torch.float64, generator=g) * 2.4 - 1.2
    for mode in range(3):
        for padding in range(3):
            close(ml.grid_sampler(M(image), M(grid), mode, padding, False),
                  torch.grid_sampler(image, grid, mode, padding, False))
    close(ml.grid_sampler_2d(M(image), M(grid), 0, 1, True), torch.grid_sampler_2d(image, grid, 0, 1, True))
    volume, grid3 = torch.randn(1, 1, 2, 3, 3, dtype=torch.float64, generator=g), torch.rand(
        1, 2, 2, 2, 3, dtype=torch.float64, generator=g) * 2 - 1
    close(ml.grid_sampler_3d(M(volume), M(grid3), 0, 0, False), torch.grid_sampler_3d(volume, grid3, 0, 0, False))
    table = torch.randn(5, 3, generator=g) * 3
    mine = M(table)
    assert ml.embedding_renorm_(mine, M(torch.tensor([0, 2, 2])), 1.0, 2.0) is mine
    torch.embedding_renorm_(table, torch.tensor([0, 2, 2]), 1.0, 2.0)
    same_bits(mine, table)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "prod"])
def test_segment_reduce_values_gradients_and_initial(reduce):
    data = torch.tensor([1.0, 2, 3, 3, 0, 6, 2], dtype=torch.float64, requires_grad=True)
    for initial in (None, 2.0):
        for spelling in ({"lengths": torch.tensor([2, 0, 4, 1])}, {"offsets": torch.tensor([0, 2, 2, 6, 7])}):
            mine_data = M(data, True)
            theirs = torch.segment_reduce(data, reduce, initial=initial, **spelling)
            mine = ml.segment_reduce(mine_data, reduce, initial=initial, **{k: M(v) for k, v in spelling.items()})
            close(mine, theirs)
            g = torch.tensor([1.0, 2, 3, 4], dtype=torch.float64)
            theirs.backward(g)
            mine.backward(M(g))
            close(mine_data.grad, data.grad)
            data.grad = None
    assert mine.grad_fn.name() == "SegmentReduceBackward0"


def test_segment_reduce_float32_sum_in_order_axis_and_errors():
    data = torch.randn(40, 3, generator=torch.Generator().manual_seed(8)) * 1000
    lengths = torch.tensor([17, 0, 23])
    same_bits(ml.segment_reduce(M(data), "sum", lengths=M(lengths)), torch.segment_reduce(data, "sum",
                                                                                          lengths=lengths))
    same_bits(ml.segment_reduce(M(data), "mean", lengths=M(lengths), axis=0),
              torch.segment_reduce(data, "mean", lengths=lengths, axis=0))
    two = torch.arange(12.0).reshape(2, 6)
    rows = torch.tensor([[2, 4], [3, 3]])
    same_bits(ml.segment_reduce(M(two), "sum", lengths=M(rows), axis=1),
              torch.segment_reduce(two, "sum", lengths=rows, axis=1))
    d = torch.ones(6)
    for call in (lambda lib, t: lib.segment_reduce(t(d), "sum", lengths=t(torch.tensor([2, 2]))),
                 lambda lib, t: lib.segment_reduce(t(d), "foo", lengths=t(torch.tensor([6]))),
                 lambda lib, t: lib.segment_reduce(t(d), "sum"),
                 lambda lib, t: lib.segment_reduce(t(two), "sum", lengths=t(torch.tensor([2, 4])), axis=1),
                 lambda lib, t: lib.segment_reduce(t(d), "sum", indices=t(torch.tensor([6])))):
        raises_same(lambda: call(ml, M), lambda: call(torch, lambda v: v))


# ---- sym_*, cond, while_loop, fork / wait, exception classes ----------------------------------------------
def test_sym_functions_on_python_numbers():
    cases = [("sym_int", (2.7,)), ("sym_int", (-2.7,)), ("sym_float", (3,)), ("sym_max", (2, 3.0)), ("sym_max", (1, 1.0)),
             ("sym_max", (np.int64(2), 3)), ("sym_min", (True, 2)), ("sym_min", (2.5, 1)), ("sym_not", (0,)),
             ("sym_ite", (True, 1, 2)), ("sym_ite", (False, 1.0, 2.0)), ("sym_sqrt", (4,)), ("sym_sum", ([1, 2, 3],)),
             ("sym_sum", (1, 2, 3)), ("sym_sum", ([0.5, 1],))]
    for name, args in cases:
        mine, theirs = getattr(ml, name)(*args), getattr(torch, name)(*args)
        assert (mine, type(mine)) == (theirs, type(theirs)), name
    raises_same(lambda: ml.sym_ite(True, 1, 2.0), lambda: torch.sym_ite(True, 1, 2.0))
    raises_same(lambda: ml.sym_ite(1, 1, 2), lambda: torch.sym_ite(1, 1, 2))
    with pytest.raises(AssertionError, match="expected"):
        ml.sym_max("a", 1)


def test_cond_and_while_loop_run_eagerly_with_torchs_checks():
    """(torch.cond and while_loop on tensors compile their functions, seconds each: the values are compared with the
    branch or loop run in torch directly; the argument checks come before torch compiles, and are compared.)"""
    x = torch.tensor([1.0, -2.0])
    for pred in (True, False):
        same_bits(ml.cond(ml.tensor(pred), lambda v: v.abs() + 1, lambda v: v * 3, (M(x),)),
                  x.abs() + 1 if pred else x * 3)
    same_bits(ml.cond(False, lambda v: (v + 1,), lambda v: (v - 1,), [M(x)]),
              torch.cond(False, lambda v: (v + 1,), lambda v: (v - 1,), [x]))
    for pred, t, f, operands in ((torch.tensor([True, False]), abs, abs, (x,)), (torch.tensor(True), abs, 3, (x,)),
                                 (torch.tensor(True), abs, abs, (x, 3)), ("a", abs, abs, (x,))):
        mine_pred = M(pred) if isinstance(pred, torch.Tensor) else pred
        mine_operands = tuple(M(o) if isinstance(o, torch.Tensor) else o for o in operands)
        with pytest.raises(RuntimeError) as expected:
            torch.cond(pred, t, f, operands)
        with pytest.raises(RuntimeError) as got:
            ml.cond(mine_pred, t, f, mine_operands)
        assert str(got.value).split(",")[0] == str(expected.value).split(",")[0]
    same_bits(ml.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2), (ml.tensor(0), M(x))),
              (torch.tensor(3), x * 2 * 2 * 2))
    done = ml.while_loop(lambda v: v.sum() > 100, lambda v: (v + 1,), [M(x)])
    assert isinstance(done, tuple) and done[0].numpy().tolist() == x.tolist()
    with pytest.raises(RuntimeError, match="Expect cond_fn and body_fn to be callable."):
        ml.while_loop(lambda i: i < 3, 3, (ml.tensor(0),))
    with pytest.raises(RuntimeError, match="unsupported cond_fn return type"):  # (torch's tracer's words)
        ml.while_loop(lambda i: (i < 3).float(), lambda i: (i + 1,), (ml.tensor(0),))
    with pytest.raises(AssertionError, match="can only be of"):
        ml.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v), (ml.tensor(0), 2.0))


def test_fork_wait_and_the_out_of_memory_classes():
    future = ml.fork(lambda a, b=1: a + b, 1, b=2)
    assert future.done() and ml.wait(future) == 3 == torch.wait(torch.fork(lambda a, b=1: a + b, 1, b=2))
    assert ml.OutOfMemoryError is ml.cuda.OutOfMemoryError
    assert issubclass(ml.OutOfMemoryError, RuntimeError) and issubclass(ml.AcceleratorError, RuntimeError)
    try:
        raise ml.cuda.OutOfMemoryError("CUDA out of memory")
    except ml.OutOfMemoryError as caught:  # (users write `except torch.OutOfMemoryError`)
        assert str(caught) == "CUDA out of memory"


def test_autocast_casts_the_new_names_as_torchs_cpu_lists():
    """torch.convolution is on no CPU list (float32 stays float32, where conv2d is bfloat16); grid_sampler and
    ctc_loss are float32 (F.grid_sample and F.ctc_loss are them: a bfloat16 input works); the RNN cells and layers
    are their linears (the LSTM layer oneDNN's, cast whole)."""
    g = torch.Generator().manual_seed(9)
    image, weight = torch.randn(1, 2, 5, 5, generator=g), torch.randn(3, 2, 2, 2, generator=g)
    grid = torch.rand(1, 2, 2, 2, generator=g) * 2 - 1
    log_probs, targets = torch.randn(6, 2, 4, generator=g).log_softmax(-1), torch.tensor([[1, 2], [3, 1]])
    x, h, c = torch.randn(3, 4, generator=g), torch.randn(1, 3, 5, generator=g), torch.randn(1, 3, 5, generator=g)
    params = [torch.randn(20, 4, generator=g), torch.randn(20, 5, generator=g), torch.randn(20, generator=g),
              torch.randn(20, generator=g)]
    calls = [lambda lib, t: lib.convolution(t(image), t(weight), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
             lambda lib, t: lib.nn.functional.grid_sample(t(image).bfloat16(), t(grid), align_corners=False),
             lambda lib, t: lib.grid_sampler(t(image).bfloat16(), t(grid).bfloat16(), 0, 0, False),
             lambda lib, t: lib.nn.functional.ctc_loss(t(log_probs).bfloat16(), t(targets), [6, 5], [2, 1]),
             lambda lib, t: lib.lstm_cell(t(x), (t(h[0]), t(c[0])), *(t(p) for p in params)),
             lambda lib, t: lib.lstm(t(x)[:, None], [t(h[:, :1]), t(c[:, :1])], [t(p) for p in params], True, 1, 0.0,
                                     False, False, False)]
    for call in calls:
        with torch.autocast("cpu"):
            theirs = call(torch, lambda v: v)
        with ml.autocast("cpu"):
            mine = call(ml, M)
        mine, theirs = (mine if isinstance(mine, tuple) else (mine,)), (theirs if isinstance(theirs, tuple) else
                                                                        (theirs,))
        for m, t in zip(mine, theirs):  # (the dtype is the point; the values: MKL's and oneDNN's sums aside)
            assert str(m.dtype) == str(t.dtype).replace("torch.", "")
            np.testing.assert_allclose(m.float().numpy(), t.float().numpy(), atol=1e-5 if t.dtype == torch.float32
                                       else 0.05)


def test_lobpcg_finds_torchs_eigenpairs_from_torchs_draws():
    """Converged, and stopped after 6 steps (``niter``): the same steps from the same draws give the same estimates."""
    g = torch.Generator().manual_seed(10)
    Q = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64, generator=g)).Q
    A = Q @ torch.diag(1.6 ** torch.arange(-6.0, 6.0, dtype=torch.float64)) @ Q.T  # (wide gaps: few steps)
    for kwargs in ({"k": 3}, {"k": 2, "method": "basic"}, {"k": 2, "largest": False, "niter": 6}, {"k": 2, "B": 2 * torch.eye(12,
                                                                                         dtype=torch.float64)}):
        torch.manual_seed(0)
        E, X = torch.lobpcg(A, **kwargs)
        ml.manual_seed(0)
        mE, mX = ml.lobpcg(M(A), **{k: M(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
        close(mE, E, atol=1e-10)
        close(mX.abs(), X.abs(), atol=1e-8)  # (a vector's sign is LAPACK's)
    raises_same(lambda: ml.lobpcg(ml.randn(5, 5), k=2), lambda: torch.lobpcg(torch.randn(5, 5), k=2))
    with pytest.raises(NotImplementedError, match="lobpcg: A requires grad"):
        ml.lobpcg(M(A, True), k=2)


def test_a_number_for_a_tensor_is_torchs_type_error():
    calls = ["native_layer_norm(2.0, [1], None, None, 1e-5)", "native_dropout(2.0, 0.5, True)",
             "native_group_norm(2.0, None, None, 1, 1, 1, 1, 1e-5)", "lstm_cell(2.0, (lib.ones(1, 1),), lib.ones(1, 1),"
             " lib.ones(1, 1))", "gru_cell(lib.ones(1, 1), 2.0, lib.ones(1, 1), lib.ones(1, 1))",
             "convolution(2.0, lib.ones(1, 1, 1), None, [1], [0], [1], False, [0], 1)", "segment_reduce(2.0, 'sum')",
             "norm_except_dim(2.0)", "grid_sampler(lib.ones(1), 3, 0, 0, False)", "affine_grid_generator(2.0, [1], "
             "False)", "conv_tbc(lib.ones(1), 2, lib.ones(1))"]
    for call in calls:
        raises_same(lambda: eval("lib." + call, {"lib": ml}), lambda: eval("lib." + call, {"lib": torch}))
