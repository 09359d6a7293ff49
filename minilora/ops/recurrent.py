"""torch's recurrent ops: one step of each cell and the layers' loops over time, as ATen's RNN.cpp composes them.

    h = torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)          # and rnn_relu_cell, gru_cell
    h, c = torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    out, h_n, c_n = torch.lstm(x, (h0, c0), params, True, 2, 0.0, False, False, False)
    out, h_n = torch.gru(data, batch_sizes, h0, params, True, 1, 0.0, False, False)   # a PackedSequence's

A *step* takes the input's projection ``W_ih x + b_ih`` already made (the layers make every time step's at once,
before the loop, as torch's CPU kernel does) and combines it with ``W_hh h + b_hh`` in the order torch's cell does,
so the roundings are torch's. ``nn.RNN``/``GRU``/``LSTM`` and their cells run these functions: one place computes.
A state is ``h``, or the pair ``(h, c)`` for an LSTM.
"""
from .. import amp as _amp, backends
from ..tensor import Tensor, name_node, share_node
from .matmul import linear
from .nn import dropout
from .shape import cat, stack


# ---- one step --------------------------------------------------------------------------------------
def tanh_step(projected, h, w_hh, b_hh):
    return (linear(h, w_hh, b_hh) + projected).tanh()


def relu_step(projected, h, w_hh, b_hh):
    return (linear(h, w_hh, b_hh) + projected).relu()


def gru_step(projected, h, w_hh, b_hh):
    """Gates in torch's order r, z, n: ``n = tanh(x_n + r (W_hn h + b_hn))``, ``h' = (h - n) z + n``."""
    hidden = linear(h, w_hh, b_hh)
    size = hidden.shape[-1] // 3
    h_n, x_n = hidden[..., 2 * size:], projected[..., 2 * size:]
    # torch's cell squashes in place on chunks of the hidden projection: strided rows, which its elementwise kernels
    # run in their scalar loop (a float64 sigmoid: C's exp, not SLEEF's vectors) -- the gates as halves of one sum
    reset, update = (hidden[..., :2 * size] + projected[..., :2 * size]).chunk(2, -1)
    reset, update = reset.sigmoid(), update.sigmoid()
    new = (x_n + h_n * reset).tanh()
    return (h - new) * update + new


def lstm_step(projected, state, w_hh, b_hh, w_hr=None):
    """Gates in torch's order i, f, g, o: ``c' = f c + i g``, ``h' = o tanh(c')`` (``W_hr h'`` with a projection)."""
    h, c = state
    gates = linear(h, w_hh, b_hh) + projected
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c + i * g
    h = o * c.tanh()
    return (h if w_hr is None else linear(h, w_hr)), c


STEPS = {"rnn_tanh": tanh_step, "rnn_relu": relu_step, "gru": gru_step, "lstm": lstm_step}


def output_of(state):
    """What a step hands the next layer: h (an LSTM's state is (h, c))."""
    return state[0] if isinstance(state, tuple) else state


def _rows(state, start, stop):
    return tuple(t[start:stop] for t in state) if isinstance(state, tuple) else state[start:stop]


def _cat_states(states):
    if isinstance(states[0], tuple):
        return tuple(cat([s[k] for s in states], 0) for k in range(len(states[0])))
    return cat(states, 0)


# ---- the cells: torch.rnn_tanh_cell, rnn_relu_cell, gru_cell, lstm_cell ------------------------------
def _check_cell(input, hidden, w_ih, w_hh):
    """ATen's check_rnn_cell_forward_input and _hidden, in its order and words."""
    for name, t in (("input", input), ("hx", hidden[0]), ("w_ih", w_ih), ("w_hh", w_hh)):
        if not isinstance(t, Tensor):
            raise TypeError(f"argument '{name}' must be Tensor, not {type(t).__name__}")
    if input.ndim < 2:
        raise IndexError(f"Dimension out of range (expected to be in range of [-{max(input.ndim, 1)}, "
                         f"{max(input.ndim, 1) - 1}], but got 1)")
    if input.shape[1] != w_ih.shape[1]:
        raise RuntimeError(f"input has inconsistent input_size: got {input.shape[1]} expected {w_ih.shape[1]}")
    for label, h in enumerate(hidden):
        if input.shape[0] != h.shape[0]:
            raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match hidden{label} batch size "
                               f"{h.shape[0]}")
        if h.shape[1] != w_hh.shape[1]:
            raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {h.shape[1]}, expected "
                               f"{w_hh.shape[1]}")


@_amp.autocasts
def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    _check_cell(input, (hx,), w_ih, w_hh)
    return tanh_step(linear(input, w_ih, b_ih), hx, w_hh, b_hh)


@_amp.autocasts
def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    _check_cell(input, (hx,), w_ih, w_hh)
    return relu_step(linear(input, w_ih, b_ih), hx, w_hh, b_hh)


@_amp.autocasts
def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    _check_cell(input, (hx,), w_ih, w_hh)
    return gru_step(linear(input, w_ih, b_ih), hx, w_hh, b_hh)


@_amp.autocasts
def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``(h', c')`` from ``hx = (h, c)``."""
    if len(hx) != 2:
        raise RuntimeError("lstm_cell expects two hidden states")
    _check_cell(input, tuple(hx), w_ih, w_hh)
    return lstm_step(linear(input, w_ih, b_ih), tuple(hx), w_hh, b_hh)


# ---- the layers ------------------------------------------------------------------------------------
def run_layers(kind, input, states, weights, num_layers, dropout_p, train, bidirectional, batch_sizes=None):
    """The layers in turn over ``input`` [L, N, features] (or a PackedSequence's data [sum of lengths, features]
    and its ``batch_sizes``, a list): ``(output, finals)``, ``finals`` each layer's and direction's last state.
    ``states`` and ``weights`` have one entry per layer and direction (weights: ``(w_ih, w_hh, b_ih, b_hh, w_hr)``,
    None where absent); dropout on every layer's output but the last, in training, as ATen's."""
    finals, directions = [], 2 if bidirectional else 1
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            k = layer * directions + d
            sequence, last = _direction(kind, input, states[k], weights[k], d == 1, batch_sizes)
            outputs.append(sequence)
            finals.append(last)
        input = outputs[0] if directions == 1 else cat(outputs, -1)
        if train and dropout_p > 0 and layer < num_layers - 1:
            input = dropout(input, dropout_p, True)
    return input, finals


def _direction(kind, input, state, weights, reverse, batch_sizes=None):
    """One layer in one direction: the outputs [L, N, H] (in time order) and the last state."""
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    step = STEPS[kind]
    cell = (lambda x, s: step(x, s, w_hh, b_hh, w_hr)) if w_hr is not None else (lambda x, s: step(x, s, w_hh, b_hh))
    projected = linear(input, w_ih, b_ih)  # every step's input projection at once
    if batch_sizes is not None:
        return _packed_direction(projected.split(batch_sizes), state, cell, reverse)
    projected, initial = projected.unbind(0), state
    steps = range(len(projected) - 1, -1, -1) if reverse else range(len(projected))
    outputs = [None] * len(projected)
    for t in steps:
        state = cell(projected[t], state)
        outputs[t] = output_of(state)
    output = stack(outputs, 0)
    if kind == "lstm" and _one_onednn_node(input, w_hr):
        name_node(output, "MkldnnRnnLayerBackward0", graph=(input, w_ih, w_hh, b_ih, b_hh, *initial))
        share_node((output, *state))  # (the last (h, c): its outputs 1 and 2, h_n.grad_fn.next_functions)
    return output, state


def _one_onednn_node(input, w_hr):
    """torch's CPU LSTM runs each layer and direction as one oneDNN kernel (``mkldnn_rnn_layer``) on float32
    inputs, unless ``torch.backends.mkldnn.enabled`` is off or the LSTM has a projection (packed sequences
    take torch's native loop, as here; bfloat16 too on CPUs oneDNN runs it on: not claimed here)."""
    return w_hr is None and str(input.dtype) == "float32" and input.device.type == "cpu" and backends.mkldnn.enabled


def _packed_direction(steps, state, cell, reverse):
    """One layer in one direction over a PackedSequence (``steps[t]``: the projected inputs of the sequences still
    running at step t, longest first), as ATen's PackedLayer and ReversedPackedLayer: going forward, the rows of
    the sequences that have ended are set aside, their state final; going backwards, a sequence joins, from its
    initial state, at its last step. Returns the outputs [sum of lengths, H] in the packed order and every
    sequence's last state."""
    size = lambda s: len(output_of(s))  # noqa: E731
    outputs = [None] * len(steps)
    if not reverse:
        ended = []
        for t, x in enumerate(steps):
            if len(x) < size(state):
                ended.append(_rows(state, len(x), size(state)))
                state = _rows(state, 0, len(x))
            state = cell(x, state)
            outputs[t] = output_of(state)
        return cat(outputs, 0), _cat_states([state] + ended[::-1])
    initial, state = state, _rows(state, 0, len(steps[-1]))
    for t in range(len(steps) - 1, -1, -1):
        if len(steps[t]) > size(state):
            state = _cat_states([state, _rows(initial, size(state), len(steps[t]))])
        state = cell(steps[t], state)
        outputs[t] = output_of(state)
    return cat(outputs, 0), state


# ---- torch.lstm, gru, rnn_tanh, rnn_relu: the whole stack of layers ----------------------------------
def _grouped_weights(params, has_biases, layers_and_directions, projections):
    """ATen's gather_params: the flat ``params`` list in (w_ih, w_hh[, b_ih, b_hh][, w_hr]) groups."""
    stride = (4 if has_biases else 2) + (1 if projections else 0)
    params = list(params)
    if len(params) % stride or len(params) // stride != layers_and_directions:
        raise RuntimeError("got an incorrect number of RNN parameters")
    groups = []
    for start in range(0, len(params), stride):
        w_ih, w_hh, *rest = params[start:start + stride]
        b_ih, b_hh = (rest[0], rest[1]) if has_biases else (None, None)
        groups.append((w_ih, w_hh, b_ih, b_hh, rest[-1] if projections else None))
    return groups


def _recurrent(kind, args):
    """Both of torch's overloads: (input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first), and a PackedSequence's (data, batch_sizes, hx, params, has_biases, num_layers, dropout, train,
    bidirectional); told apart as torch's parser does, by what the third argument is (params are a list)."""
    if len(args) != 9:
        raise TypeError(f"{kind}() takes 9 positional arguments ({len(args)} given): (input, hx, params, has_biases, "
                        f"num_layers, dropout, train, bidirectional, batch_first) or (data, batch_sizes, hx, params, "
                        f"has_biases, num_layers, dropout, train, bidirectional)")
    if isinstance(args[1], Tensor) and (isinstance(args[2], Tensor) or kind == "lstm"):  # (batch_sizes, hx)
        data, batch_sizes, hx, params, has_biases, num_layers, dropout_p, train, bidirectional = args
        batch_sizes = [int(b) for b in batch_sizes.tolist()]
        input, batch_first = data, False
    else:
        input, hx, params, has_biases, num_layers, dropout_p, train, bidirectional, batch_first = args
        batch_sizes = None
        if batch_first:
            input = input.transpose(0, 1)
    if kind == "lstm" and batch_sizes is None and _amp.used and _amp.state.active:  # torch's CPU LSTM: one oneDNN
        input, hx = _amp.cast_args("mkldnn_rnn_layer", input, hx)  # kernel a layer, autocast as a whole (as nn.LSTM)
    hidden = list(hx) if kind == "lstm" else [hx]
    if kind == "lstm" and len(hidden) != 2:
        raise RuntimeError("lstm expects two hidden states")
    directions = 2 if bidirectional else 1
    projections = kind == "lstm" and hidden[0].shape[-1] != hidden[1].shape[-1]
    weights = _grouped_weights(params, has_biases, num_layers * directions, projections)
    per_layer = [tuple(h[i] for h in hidden) if kind == "lstm" else hidden[0][i]
                 for i in range(num_layers * directions)]
    output, finals = run_layers(kind, input, per_layer, weights, num_layers, dropout_p, train, bidirectional,
                                batch_sizes)
    if batch_sizes is None and batch_first:
        output = output.transpose(0, 1)
    if kind == "lstm":
        return output, stack([h for h, _ in finals], 0), stack([c for _, c in finals], 0)
    return output, stack(finals, 0)


def lstm(*args):
    """``(output, h_n, c_n)``."""
    return _recurrent("lstm", args)


def gru(*args):
    """``(output, h_n)``."""
    return _recurrent("gru", args)


def rnn_tanh(*args):
    return _recurrent("rnn_tanh", args)


def rnn_relu(*args):
    return _recurrent("rnn_relu", args)
