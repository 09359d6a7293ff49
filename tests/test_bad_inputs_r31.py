"""Round 31: bad inputs found by rerunning the sweeps (tests/bad_inputs_sweep*.py) and by the new sweep over PEFT's
API (tests/bad_inputs_sweep_peft.py: LoraConfig's fields, get_peft_model, the adapter methods, saved adapters
edited on disk, against peft 0.22.0 on a tiny transformers Llama).

* ``F.bilinear`` of an int64 or bool input1 (or a bias of another dtype) answered -- the product taken in the
  weight's dtype -- where torch refuses: "All tensors must have the same dtype, got input1: long int, ...";
* ``torch.true_divide(a, b, rounding_mode="floor")`` (and the methods) floored the quotient, where torch has no
  ``rounding_mode`` for true_divide (div's alias took div's keyword): torch's TypeErrors;
* LoraConfig (and VeraConfig) fields given a value of another type -- ``lora_alpha="8"``, ``lora_dropout=None``,
  ``layers_to_transform="0"``, ``init_lora_weights=5``, ``alpha_pattern={"q_proj": "8"}``,
  ``trainable_token_indices=[1.5]`` -- were ValueErrors; now TypeErrors as PEFT's (its arithmetic on the value
  fails) and Python's rule (``config.FieldTypeError`` is both, so code catching ValueError still does);
* ``PeftModel.from_pretrained(model, folder, config={...})`` failed in an AttributeError of minilora's code: PEFT's
  ValueError "The input config must be a PeftConfig";
* ``add_weighted_adapter(..., svd_rank=-1)``: torch.empty's "negative dimension" error; PEFT's ValueError;
* the top-level functions whose second parameter is an int[] (reshape, broadcast_to, permute, expand_copy,
  permute_copy, view_copy) took one int (the methods' varargs reading): torch's parser's TypeError
  (``_argument_types.SECOND_SIZE_LISTS``); slice_scatter(step=0), movedim of a float, F.softmin of a list,
  F.gaussian_nll_loss of an int var, gradient(edge_order=1.5), randint_like(x, None), nuclear_norm(dim=10): torch's
  classes where minilora raised others (or an AttributeError);
* ``linalg.matrix_norm`` (and ``linalg.norm`` of two dims, ``nuclear_norm``) and ``linalg.tensorsolve`` (and ``tensordot``: dims=([4], [0]) of a matrix contracted its dim 0) wrapped a
  dim out of range by a modulo: ``matrix_norm(A, dim=(0, 4))`` of a 3-d A was its (0, 1) norm; torch's IndexError;
* ``get_peft_model(peft_model, config)`` (a notebook cell run twice): an AttributeError of minilora's code ("property
  'peft_config' ... has no setter"); now a TypeError naming add_adapter (PEFT nests the wrapper).

Each row runs under minilora and, with torch / PEFT installed, the same call there raises the same class."""
import pytest

import minilora as ml
from minilora import lora as mlora

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

LLAMA = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, max_position_embeddings=32)
BASE = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])


def llama(L):
    if L is torch:
        config = transformers.LlamaConfig(**LLAMA)
        config._attn_implementation = "eager"
        return transformers.LlamaForCausalLM(config)
    return ml.models.LlamaForCausalLM(ml.models.LlamaConfig(**LLAMA))


def sides():
    return [(ml, mlora), (torch, peft)]


# --- F.bilinear and true_divide ------------------------------------------------------------------------------
BILINEAR = [
    ("int64 input1", dict(input1="int64"), "got input1: long int, input2: float, weight: float"),
    ("bool input1", dict(input1="bool"), "got input1: bool, input2: float, weight: float"),
    ("float64 input2", dict(input2="float64"), "got input1: float, input2: double, weight: float"),
    ("float64 bias", dict(bias="float64"), "got input1: float, input2: float, weight: float, bias: double"),
]


def bilinear(L, dtypes):
    dtype = lambda name: getattr(L, dtypes.get(name, "float32"))  # noqa: E731
    return L.nn.functional.bilinear(L.ones(2, 3, dtype=dtype("input1")), L.ones(2, 4, dtype=dtype("input2")),
                                    L.ones(5, 3, 4), L.ones(5, dtype=dtype("bias")))


@pytest.mark.parametrize("name, dtypes, words", BILINEAR, ids=[row[0] for row in BILINEAR])
def test_bilinear_of_mixed_dtypes_is_refused_as_torch(name, dtypes, words):
    for L in (ml, torch):
        with pytest.raises(RuntimeError, match="All tensors must have the same dtype, " + words):
            bilinear(L, dtypes)


TRUE_DIVIDE = [
    ("torch.true_divide", lambda L, a, b: L.true_divide(a, b, rounding_mode="floor")),
    ("x.true_divide", lambda L, a, b: a.true_divide(b, rounding_mode="floor")),
    ("x.true_divide_", lambda L, a, b: a.true_divide_(b, rounding_mode="trunc")),
]


@pytest.mark.parametrize("name, call", TRUE_DIVIDE, ids=[row[0] for row in TRUE_DIVIDE])
def test_true_divide_takes_no_rounding_mode(name, call):
    for L in (ml, torch):
        a, b = L.tensor([5.0, -5.0]), L.tensor([2.0, 2.0])
        with pytest.raises(TypeError, match="true_divide_?\\(\\) (got an unexpected keyword argument 'rounding_mode'"
                                            "|received an invalid combination of arguments)"):
            call(L, a, b)
        assert L.equal(a, L.tensor([5.0, -5.0]))
    assert ml.equal(ml.true_divide(ml.tensor([5.0]), 2), ml.tensor([2.5]))  # the alias itself still divides


SWEEP_ROWS = [  # (what, call, exception class, words): torch raises the same class
    ("torch.reshape(x, 5)", lambda L: L.reshape(L.ones(5), 5), TypeError,
     r"reshape\(\): argument 'shape' \(position 2\) must be tuple of ints, not int"),
    ("torch.broadcast_to(x, 5)", lambda L: L.broadcast_to(L.ones(1), 5), TypeError,
     r"broadcast_to\(\): argument 'size' \(position 2\) must be tuple of ints, not int"),
    ("torch.expand_copy(x, 5)", lambda L: L.expand_copy(L.ones(1), 5), TypeError, "expand_copy"),
    ("torch.permute(x, 0)", lambda L: L.permute(L.ones(3), 0), TypeError, "must be tuple of ints, not int"),
    ("torch.permute_copy(x, 0)", lambda L: L.permute_copy(L.ones(3), 0), TypeError, "permute_copy"),
    ("torch.view_copy(x, 3)", lambda L: L.view_copy(L.ones(3), 3), TypeError, "view_copy"),
    ("slice_scatter(step=0)", lambda L: L.slice_scatter(L.ones(4), L.ones(2), step=0), RuntimeError,
     "slice step must be positive"),
    ("movedim(x, 0.5, 1)", lambda L: L.movedim(L.ones(2, 3), 0.5, 1), TypeError, "movedim"),
    ("x.moveaxis(1.5, 0)", lambda L: L.ones(2, 3).moveaxis(1.5, 0), TypeError, "moveaxis|movedim"),
    ("F.softmin([1.0])", lambda L: L.nn.functional.softmin([1.0], 0), TypeError, "list"),
    ("gradient(edge_order=1.5)", lambda L: L.gradient(L.ones(5), edge_order=1.5), TypeError, "gradient"),
    ("randint_like(x, None)", lambda L: L.randint_like(L.ones(3), None), TypeError, "randint_like"),
    ("nuclear_norm(dim=10)", lambda L: L.nuclear_norm(L.ones(2, 3, 4), dim=10), IndexError,
     r"Dimension out of range \(expected to be in range of \[-3, 2\], but got 10\)"),
    ("linalg.matrix_norm(dim=(0, 4))", lambda L: L.linalg.matrix_norm(L.ones(2, 3, 4), dim=(0, 4)), IndexError,
     "but got 4"),
    ("linalg.norm(dim=(0, 4))", lambda L: L.linalg.norm(L.ones(2, 3, 4), dim=(0, 4)), IndexError, "but got 4"),
    ("linalg.matrix_norm(dim=(0, -3))", lambda L: L.linalg.matrix_norm(L.ones(2, 3, 4), dim=(0, -3)), RuntimeError,
     r"dims must be different. Got \(0, 0\)"),
    ("linalg.tensorsolve(dims=(5,))", lambda L: L.linalg.tensorsolve(L.eye(6).reshape(2, 3, 6), L.ones(6), dims=(5,)),
     IndexError, "but got 5"),
    ("tensordot(dims=([4], [0]))", lambda L: L.tensordot(L.ones(3, 3), L.ones(3, 2), dims=([4], [0])), IndexError,
     r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 4\)"),
    ("F.glu(dim=3)", lambda L: L.nn.functional.glu(L.ones(2, 4), dim=3), IndexError, "Dimension out of range"),
    ("F.gaussian_nll_loss(var=1)", lambda L: L.nn.functional.gaussian_nll_loss(L.ones(3), L.ones(3), 1), TypeError,
     ""),
]


@pytest.mark.parametrize("what, call, error, words", SWEEP_ROWS, ids=[row[0] for row in SWEEP_ROWS])
def test_sweep_rows_raise_torch_s_class(what, call, error, words):
    for L in (ml, torch):
        with pytest.raises(error, match=words):
            call(L)
    assert ml.reshape(ml.ones(2, 3), (6,)).shape == (6,) and ml.ones(2, 3).reshape(6).shape == (6,)  # (the method
    # takes one int: its sizes are varargs)


# --- LoraConfig: a field of the wrong type ----------------------------------------------------------------------
WRONG_TYPES = [  # (field, value, whether PEFT raises a TypeError too: where not, PEFT takes it or fails elsewhere)
    ("lora_alpha", "8", True), ("lora_alpha", None, True), ("lora_dropout", "0.1", True),
    ("lora_dropout", None, True), ("layers_to_transform", "0", True), ("layers_to_transform", 1.5, True),
    ("alpha_pattern", {"q_proj": "8"}, True), ("layers_to_transform", [1.5], False),
    ("init_lora_weights", 5, False), ("trainable_token_indices", "0", True), ("trainable_token_indices", [1.5], False),
]


def adapted(L, P, **changes):
    model = P.get_peft_model(llama(L), P.LoraConfig(**{**BASE, **changes}))
    return model(L.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("field, value, peft_too", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v, _ in WRONG_TYPES])
def test_a_config_field_of_the_wrong_type_is_a_type_error(field, value, peft_too):
    with pytest.raises(TypeError, match=f"{field}.* must be ") as caught:
        mlora.LoraConfig(**{**BASE, field: value})
    assert isinstance(caught.value, ValueError)  # (minilora's class before round 31, still caught by it)
    if peft_too:
        with pytest.raises(TypeError):
            adapted(torch, peft, **{field: value})


@pytest.mark.parametrize("field, value", [("vera_dropout", "0.1"), ("d_initial", None)])
def test_vera_fields_of_the_wrong_type_are_type_errors(field, value):
    with pytest.raises(TypeError, match=f"{field} must be .*, got {value!r}"):
        mlora.VeraConfig(r=2, target_modules=["q_proj"], **{field: value})
    for wrong_value in ({"vera_dropout": 1.5}, {"lora_alpha": float("inf")}, {"layers_to_transform": [-1]}):
        config = mlora.VeraConfig if "vera_dropout" in wrong_value else mlora.LoraConfig
        with pytest.raises(ValueError) as caught:  # a number out of range: a plain ValueError still
            config(r=2, target_modules=["q_proj"], **wrong_value)
        assert not isinstance(caught.value, TypeError)


# --- the PeftModel API ---------------------------------------------------------------------------------------------
def test_from_pretrained_with_a_dict_config_is_peft_value_error(tmp_path):
    for L, P in sides():
        P.get_peft_model(llama(L), P.LoraConfig(**BASE)).save_pretrained(tmp_path / L.__name__)
        with pytest.raises(ValueError, match="The input config must be a PeftConfig, got <class 'dict'>"):
            P.PeftModel.from_pretrained(llama(L), str(tmp_path / L.__name__), config=dict(BASE))


def test_a_negative_svd_rank_is_peft_value_error():
    for L, P in sides():
        model = P.get_peft_model(llama(L), P.LoraConfig(**BASE))
        model.add_adapter("other", P.LoraConfig(**BASE))
        with pytest.raises(ValueError, match="`r` should be a positive integer value but the value passed is -1"):
            model.add_weighted_adapter(["default", "other"], [1.0, 1.0], "x", svd_rank=-1)
        assert "x" not in model.peft_config or P is peft  # (minilora checks first; PEFT keeps a half-made "x")


def test_get_peft_model_of_a_peft_model_names_add_adapter():
    model = mlora.get_peft_model(llama(ml), mlora.LoraConfig(**BASE))
    with pytest.raises(TypeError, match=r"already a PeftModel; add another adapter with "
                                        r"model.add_adapter\(name, config\)"):
        mlora.get_peft_model(model, mlora.LoraConfig(**BASE))
    assert list(model.peft_config) == ["default"]
