"""Tokenizer calls as transformers / PEFT tutorials write them, with ``return_tensors="pt"``, side by side
with transformers on the same tokenizer.json and the same tiny Llama weights:

* the quicktour / "Generation with LLMs" lines: ``inputs = tokenizer(text, return_tensors="pt")``,
  ``inputs.to(model.device)``, ``{k: v.to(model.device) for k, v in inputs.items()}``,
  ``model(**inputs, labels=inputs["input_ids"])``, ``model.generate(**inputs)``, ``tokenizer.decode(out[0])``,
  ``batch_decode(out[:, n:])``, left-padded batches, ``apply_chat_template(..., return_tensors="pt")``;
* the PEFT README's inference lines and the causal-LM fine-tuning tutorial's collator;
* each tokenizer method's ``return_tensors``, ``decode`` / ``batch_decode`` of every id container,
  ``tokenizer.pad`` as collators call it, ``BatchEncoding``'s methods.

In minilora "pt" means minilora Tensors (int64, on the CPU, as transformers' torch tensors)."""
import copy
import json
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
tokenizers = pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora.tokenizer import BatchEncoding, ByteTokenizer, from_pretrained  # noqa: E402

from test_tutorials_r4 import TINY, llama_pair, same_text  # noqa: E402

WORDS = ("the cat sat on mat a dog ran to hello world lora is small model fine tune it and we you user "
         "assistant said hi yes no big red blue go up down").split()
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} said {{ m['content'] }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}assistant said{% endif %}")


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A word-level tokenizer with TINY's 37 ids (pad 0, bos 1, eos 2), saved as transformers saves one."""
    folder = tmp_path_factory.mktemp("tok37")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    assert len(vocab) == TINY.vocab_size
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE,
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder


@pytest.fixture
def toks(tokenizer_folder):
    """(transformers' tokenizer, minilora's) from the same folder; fresh each test (tests set padding_side)."""
    return transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder)), from_pretrained(tokenizer_folder)


def side_by_side(tutorial, toks, *args):
    """Run ``tutorial(T, tokenizer, model, *args)`` with torch + transformers and with minilora on the same
    weights; every value it returns must print the same (the library's name aside)."""
    reference, model = llama_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = tutorial(torch, toks[0], reference, *args)
        got = tutorial(ml, toks[1], model, *args)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        same_text(str(e), str(g))


def plain(value):
    """A tokenizer output as Python lists, whoever made it."""
    if hasattr(value, "keys"):  # a dict, or transformers' BatchEncoding (a UserDict)
        return {k: plain(value[k]) for k in value.keys()}
    return value.tolist() if hasattr(value, "tolist") else value


# ==================================================================================================
# The tutorials' lines
# ==================================================================================================
def quicktour(T, tokenizer, model):
    inputs = tokenizer("the cat sat on the mat", return_tensors="pt")
    printed = [inputs["input_ids"].dtype, inputs["input_ids"].shape, len(inputs["input_ids"][0]),
               inputs.input_ids.tolist(), inputs.attention_mask.tolist(), sorted(inputs.keys())]
    inputs = inputs.to(model.device)
    with T.no_grad():
        outputs = model(**inputs, labels=inputs["input_ids"])
        probs = T.nn.functional.softmax(outputs.logits, dim=-1)
    printed += [round(outputs.loss.item(), 5), outputs.logits.shape, probs[0, -1].argmax().item()]
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    printed += [out.tolist(), out.dtype, tokenizer.decode(out[0], skip_special_tokens=True),
                tokenizer.decode(out[0]), tokenizer.batch_decode(out, skip_special_tokens=True),
                tokenizer.decode(out[0][inputs["input_ids"].shape[-1]:]), tokenizer.decode(out[0, -1]),
                tokenizer.decode(out), tokenizer.decode(out.numpy()), tokenizer.decode(out.tolist()),
                tokenizer.batch_decode(out.detach().cpu().numpy(), skip_special_tokens=True)[0]]
    return printed


def test_quicktour_inputs_forward_generate_decode_as_transformers(toks):
    side_by_side(quicktour, toks)


def generation_with_llms(T, tokenizer, model):
    model_inputs = tokenizer(["the cat sat"], return_tensors="pt").to("cpu")
    generated_ids = model.generate(**model_inputs, do_sample=False)  # transformers' default length
    printed = [generated_ids.shape, tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]]
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model_inputs = tokenizer(["the cat", "a big red dog ran"], return_tensors="pt", padding=True).to("cpu")
    generated_ids = model.generate(**model_inputs, max_new_tokens=4, do_sample=False)
    new_tokens = generated_ids[:, model_inputs.input_ids.shape[1]:]
    printed += [model_inputs.input_ids.tolist(), model_inputs.attention_mask.tolist(), generated_ids.tolist(),
                tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    input_ids = tokenizer.encode("hello world", return_tensors="pt")
    printed += [input_ids.tolist(), model.generate(input_ids, max_new_tokens=3, do_sample=False).tolist()]
    return printed


def test_generation_with_llms_batches_and_encode_as_transformers(toks):
    side_by_side(generation_with_llms, toks)


def chat(T, tokenizer, model):
    messages = [{"role": "user", "content": "hello lora"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    outputs = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    answer = tokenizer.decode(outputs[0][inputs["input_ids"].shape[-1]:], skip_special_tokens=True)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    again = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    return [inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), answer, type(ids).__name__,
            ids.tolist(), again.input_ids.tolist()]


def test_chat_template_with_pt_tensors_as_transformers(toks):
    side_by_side(chat, toks)


def test_peft_readme_inference_lines_as_peft(toks):
    # init_lora_weights=False draws random adapters: copy PEFT's into minilora's model before comparing
    reference, model = llama_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(reference, peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                                                 lora_dropout=0.0, init_lora_weights=False))
        ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                                                lora_dropout=0.0, init_lora_weights=False))
    ours.load_state_dict({k: v.numpy(force=True) for k, v in theirs.state_dict().items()})
    inputs_t, inputs_m = (tok("we fine tune a small model", return_tensors="pt") for tok in toks)
    with torch.no_grad():
        expected = theirs.generate(input_ids=inputs_t["input_ids"].to("cpu"), max_new_tokens=5, do_sample=False)
    got = ours.generate(input_ids=inputs_m["input_ids"].to("cpu"), max_new_tokens=5, do_sample=False)
    assert got.tolist() == expected.tolist() and got.dtype == ml.int64
    assert toks[1].batch_decode(got.detach().cpu().numpy(), skip_special_tokens=True)[0] == \
        toks[0].batch_decode(expected.detach().cpu().numpy(), skip_special_tokens=True)[0]


def causal_lm_fine_tuning(T, tokenizer, model, collator):
    """HF's causal-LM tutorial: tokenize, concatenate and cut into blocks, collate, one training step."""
    examples = tokenizer(["the cat sat on the mat", "a dog ran", "hello world we tune lora"])
    concatenated = {k: sum(examples[k], []) for k in examples.keys()}
    block_size = 4
    total = len(concatenated["input_ids"]) // block_size * block_size
    blocks = [{k: t[i:i + block_size] for k, t in concatenated.items()} for i in range(0, total, block_size)]
    features = [{"input_ids": b["input_ids"][:n]} for b, n in zip(blocks, (4, 2, 3))]  # ragged: padding needed
    batch = collator(tokenizer, features)
    model.train()
    optimizer = T.optim.SGD(model.parameters(), lr=0.1)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    with T.no_grad():
        after = model(**batch).loss
    return [plain(batch), round(loss.item(), 5), round(after.item(), 5)]


def collate_by_hand(tokenizer, features):
    """What DataCollatorForLanguageModeling(mlm=False) does: pad, labels = ids with the pads -100."""
    batch = tokenizer.pad(features, return_tensors="pt")
    labels = batch["input_ids"].clone()
    labels[labels == tokenizer.pad_token_id] = -100
    batch["labels"] = labels
    return batch


def transformers_lm_collator(tokenizer, features):
    return transformers.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)(features)


def transformers_seq2seq_collator(tokenizer, features):
    """Labels given (the ids), padded by the collator with -100."""
    features = [{**f, "labels": list(f["input_ids"])} for f in features]
    return transformers.DataCollatorForSeq2Seq(tokenizer=tokenizer, return_tensors="pt")(features)


@pytest.mark.parametrize("collator", [collate_by_hand, transformers_lm_collator, transformers_seq2seq_collator])
def test_causal_lm_fine_tuning_collates_and_trains_as_transformers(toks, collator):
    """transformers' own collators run on minilora's tokenizer too: they pad with ``tokenizer.pad`` and
    use only Tensor methods torch and minilora share (``clone``, masked assignment)."""
    side_by_side(causal_lm_fine_tuning, toks, collator)


@pytest.mark.parametrize("container", ["tensor", "list", "numpy", "torch"])
def test_model_forward_takes_ids_as_tensors_lists_or_arrays(container):
    """transformers needs torch tensors; minilora also takes lists, NumPy arrays and torch tensors
    (transformers' DataCollatorForSeq2Seq makes its labels with torch.tensor): the same numbers."""
    reference, model = llama_pair()
    ids, mask, labels = [[1, 4, 5, 6, 0]], [[1, 1, 1, 1, 0]], [[1, 4, 5, 6, -100]]  # right padded, for training
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             labels=torch.tensor(labels))
    make = {"tensor": ml.tensor, "list": lambda x: x, "numpy": np.array, "torch": torch.tensor}[container]
    with ml.no_grad():
        got = model(input_ids=make(ids), attention_mask=make(mask), labels=make(labels))
    assert got.loss.item() == pytest.approx(expected.loss.item(), abs=1e-5)
    np.testing.assert_allclose(got.logits.numpy(), expected.logits.numpy(), atol=2e-5)
    if container in ("tensor", "torch"):  # an int32 label tensor is refused in torch's words
        int32_labels = make(labels).to(torch.int32 if container == "torch" else ml.int32)
        with pytest.raises(RuntimeError) as theirs:
            reference(input_ids=torch.tensor(ids), labels=torch.tensor(labels, dtype=torch.int32))
        with pytest.raises(RuntimeError) as ours:
            model(input_ids=make(ids), labels=int32_labels)
        assert str(ours.value) == str(theirs.value)
    ids, mask = [[0, 1, 4, 5, 6]], [[0, 1, 1, 1, 1]]  # left padded, for generation
    generated = model.generate(make(ids), attention_mask=make(mask), max_new_tokens=3, do_sample=False)
    assert isinstance(generated, ml.Tensor) and generated.dtype == ml.int64
    assert generated.tolist() == reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                                    max_new_tokens=3, do_sample=False).tolist()


# ==================================================================================================
# return_tensors on every tokenizer method
# ==================================================================================================
CALLS = {
    "call one text": lambda tok, rt: tok("the cat sat", return_tensors=rt),
    "call a batch": lambda tok, rt: tok(["the cat", "a big dog"], padding=True, return_tensors=rt),
    "call truncated": lambda tok, rt: tok(["the cat sat on", "a"], padding="max_length", truncation=True,
                                          max_length=3, return_tensors=rt),
    "encode": lambda tok, rt: tok.encode("hello world", return_tensors=rt),
    "encode max_length": lambda tok, rt: tok.encode("hello world lora", max_length=2, truncation=True,
                                                    return_tensors=rt),
    "encode padded": lambda tok, rt: tok.encode("hello", padding="max_length", max_length=4, return_tensors=rt),
    "pad dict": lambda tok, rt: tok.pad({"input_ids": [[1, 4], [1, 5, 6]]}, return_tensors=rt),
    "pad examples": lambda tok, rt: tok.pad([{"input_ids": [1, 4]}, {"input_ids": [1, 5, 6]}], return_tensors=rt),
    "chat dict": lambda tok, rt: tok.apply_chat_template([{"role": "user", "content": "hi"}], return_tensors=rt),
    "chat ids": lambda tok, rt: tok.apply_chat_template([{"role": "user", "content": "hi"}], return_tensors=rt,
                                                        return_dict=False),
}


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("call", CALLS)
def test_every_method_returns_tensors_as_transformers(toks, call, return_tensors):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, got = (CALLS[call](tok, return_tensors) for tok in toks)
    assert plain(got) == plain(expected)
    kind = {"pt": ml.Tensor, "np": np.ndarray}[return_tensors]
    values = got.values() if isinstance(got, dict) else [got]
    assert isinstance(got, dict) == hasattr(expected, "keys")
    for value in values:
        assert isinstance(value, kind) and str(value.dtype).endswith("int64") and value.ndim == 2
        if return_tensors == "pt":
            assert value.device == ml.device("cpu") and not value.requires_grad


def test_tensor_types_transformers_refuses_are_refused(toks):
    for tok in toks:
        for name in ("tf", "jax", "torch"):
            with pytest.raises(ValueError, match="not a valid TensorType"):
                tok("hello", return_tensors=name)
    with pytest.raises(NotImplementedError, match="'mlx' is not implemented in minilora"):
        toks[1]("hello", return_tensors="mlx")
    # transformers' TensorType enum names the same two
    assert isinstance(toks[1]("hello", return_tensors=transformers.TensorType.PYTORCH)["input_ids"], ml.Tensor)
    assert isinstance(toks[1].encode("hello", return_tensors=transformers.TensorType.NUMPY), np.ndarray)
    with pytest.raises(ValueError, match="padding=True"):  # ragged rows: transformers' ValueError too
        toks[1](["hello", "hello world"], return_tensors="pt")
    # transformers' second positional argument is text_pair
    assert toks[1].encode("hello", "world") == toks[0].encode("hello", "world")


def test_byte_tokenizer_gives_tensors_too():
    tok = ByteTokenizer()
    inputs = tok(["hi", "hey"], padding=True, return_tensors="pt")
    assert isinstance(inputs.input_ids, ml.Tensor) and inputs.input_ids.dtype == ml.int64
    assert inputs.input_ids.tolist() == [[256, 104, 105, 258], [256, 104, 101, 121]]
    assert tok.encode("hi", return_tensors="pt").tolist() == [[256, 104, 105]]
    assert tok.decode(inputs.input_ids[0], skip_special_tokens=True) == "hi"
    assert tok.decode(inputs.input_ids) == ["<bos>hi<pad>", "<bos>hey"]


# ==================================================================================================
# decode / batch_decode / convert_ids_to_tokens of every id container
# ==================================================================================================
IDS = [[1, 4, 5, 6, 2], [1, 9, 10, 0, 0]]
CONTAINERS = {
    "row list": lambda T: IDS[0], "row array": lambda T: np.array(IDS[0]), "row tensor": lambda T: T.tensor(IDS)[0],
    "one id tensor": lambda T: T.tensor(IDS)[0, 2], "one id int": lambda T: 5, "one id numpy": lambda T: np.int64(5),
    "batch list": lambda T: IDS, "batch array": lambda T: np.array(IDS), "batch tensor": lambda T: T.tensor(IDS),
    "list of tensor rows": lambda T: list(T.tensor(IDS)), "empty": lambda T: [],
}


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("container", CONTAINERS)
def test_decode_every_container_as_transformers(toks, container, skip):
    expected = toks[0].decode(CONTAINERS[container](torch), skip_special_tokens=skip)
    assert toks[1].decode(CONTAINERS[container](ml), skip_special_tokens=skip) == expected


@pytest.mark.parametrize("container", ["batch list", "batch array", "batch tensor", "list of tensor rows", "empty"])
def test_batch_decode_every_container_as_transformers(toks, container):
    expected = toks[0].batch_decode(CONTAINERS[container](torch), skip_special_tokens=True)
    assert toks[1].batch_decode(CONTAINERS[container](ml), skip_special_tokens=True) == expected


@pytest.mark.parametrize("container", ["row list", "row array", "row tensor"])
def test_batch_decode_of_one_sequence_is_a_batch_of_one_with_a_warning(toks, container):
    expected = toks[0].batch_decode(CONTAINERS[container](torch))
    with pytest.warns(FutureWarning, match="single sequence to `batch_decode` is deprecated"):
        assert toks[1].batch_decode(CONTAINERS[container](ml)) == expected == ["<s> the cat sat </s>"]


def test_convert_ids_to_tokens_of_tensors(toks):
    row = ml.tensor(IDS)[0]
    assert toks[1].convert_ids_to_tokens(row) == toks[0].convert_ids_to_tokens(torch.tensor(IDS)[0])
    assert toks[1].convert_ids_to_tokens(row[1]) == toks[0].convert_ids_to_tokens(4) == "the"  # a 0-d tensor: one id
    assert toks[1].convert_ids_to_tokens(np.array(IDS[1]), skip_special_tokens=True) == \
        toks[0].convert_ids_to_tokens(np.array(IDS[1]), skip_special_tokens=True)


# ==================================================================================================
# tokenizer.pad as collators call it
# ==================================================================================================
PADS = {  # case: (inputs given T, the library (torch or minilora), keyword arguments)
    "examples with labels": (lambda T: [{"input_ids": [1, 4], "labels": [1, 4]},
                                        {"input_ids": [1, 5], "labels": [1, 5]}], {}),
    "ragged labels as lists": (lambda T: [{"input_ids": [1, 4], "labels": [1]},
                                          {"input_ids": [1, 5, 6], "labels": [1, 5]}], {"return_tensors": None}),
    "a given mask keeps its zeros": (lambda T: {"input_ids": [[1, 4], [1, 4, 5]],
                                                "attention_mask": [[0, 1], [1, 1, 1]]}, {}),
    "special tokens mask padded with 1": (lambda T: {"input_ids": [[1, 4], [1, 4, 5]],
                                                     "special_tokens_mask": [[1, 0], [1, 0, 0]]},
                                          {"padding_side": "left"}),
    "one example": (lambda T: {"input_ids": [1, 4]}, {"padding": "max_length", "max_length": 4}),
    "tensor rows": (lambda T: {"input_ids": [T.tensor([1, 4]), T.tensor([1, 4, 5])]}, {}),
    "array rows": (lambda T: {"input_ids": [np.array([1, 4]), np.array([1, 4, 5])]}, {}),
    "a 2-D tensor": (lambda T: {"input_ids": T.tensor([[1, 4], [1, 5]])}, {"pad_to_multiple_of": 4}),
    "no mask": (lambda T: {"input_ids": [[1, 4], [1, 4, 5]]}, {"return_attention_mask": False}),
}


@pytest.mark.parametrize("case", PADS)
def test_pad_as_transformers(toks, case):
    inputs, kwargs = PADS[case]
    kwargs = {"return_tensors": "pt", **kwargs}
    expected, got = (tok.pad(inputs(T), **kwargs) for T, tok in ((torch, toks[0]), (ml, toks[1])))
    assert list(got) == list(expected) and plain(got) == plain(expected)
    assert type(got) is BatchEncoding


def test_pad_refusals_as_transformers(toks):
    ragged = [{"input_ids": [1, 4], "labels": [1]}, {"input_ids": [1, 5, 6], "labels": [1, 5]}]
    for tok in toks:
        with pytest.raises(ValueError, match="labels"):  # labels are not padded: ragged rows are no tensor
            tok.pad(ragged, return_tensors="pt")
        with pytest.raises(ValueError, match="includes input_ids"):
            tok.pad({"attention_mask": [[1, 1]]})


# ==================================================================================================
# BatchEncoding
# ==================================================================================================
def test_batch_encoding_to_moves_tensors_and_returns_itself(toks):
    inputs = toks[1](["hello", "hello world"], padding=True, return_tensors="pt")
    inputs["lengths"] = [1, 2]  # not a tensor: stays as it is, as transformers
    for device in ("cpu", ml.device("cpu"), torch.device("cpu")):
        assert inputs.to(device) is inputs
        assert isinstance(inputs.input_ids, ml.Tensor) and inputs.input_ids.device == ml.device("cpu")
    assert inputs.to("cpu", non_blocking=True) is inputs and inputs["lengths"] == [1, 2]
    with pytest.warns(UserWarning, match="Attempting to cast a BatchEncoding to type"):  # ids stay integers
        assert inputs.to(ml.float16) is inputs
    assert inputs.input_ids.dtype == ml.int64
    moved = {k: v.to("cpu") for k, v in inputs.items() if k != "lengths"}
    assert plain(moved) == plain(toks[0](["hello", "hello world"], padding=True, return_tensors="pt"))
    assert inputs.to("emu").attention_mask.device == ml.device("emu")  # the CUDA emulator's device
    assert inputs.to("cpu").attention_mask.device == ml.device("cpu")
    if ml.cuda.is_available():
        assert inputs.to("cuda").input_ids.device.type == "cuda"


def test_batch_encoding_dict_methods_as_transformers(toks):
    theirs, ours = (tok("hello world", return_tensors="pt") for tok in toks)
    assert list(ours.keys()) == list(theirs.keys()) and len(ours) == len(theirs)
    assert [k for k, _ in ours.items()] == [k for k, _ in theirs.items()]
    assert plain(ours.data) == plain(theirs.data) and type(ours.data) is dict
    assert ours.input_ids is ours["input_ids"] and "input_ids" in ours
    for encoding in (theirs, ours):
        with pytest.raises(AttributeError):
            encoding.labels
    assert ours.is_fast is theirs.is_fast is True and len(ours.encodings) == 1  # the row's tokenizers.Encoding
    for copied in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):  # DataLoader workers pickle batches
        assert type(copied) is BatchEncoding and plain(copied) == plain(ours)
    ours.convert_to_tensors("np")
    assert isinstance(ours["input_ids"], np.ndarray) and ours["input_ids"].tolist() == [[1, 13, 14]]
    lists = toks[1]("hello world")
    assert lists.convert_to_tensors("pt", prepend_batch_axis=True).input_ids.tolist() == [[1, 13, 14]]


@pytest.mark.parametrize("method, args", [("word_ids", ()), ("tokens", ()), ("char_to_token", (3,)),
                                          ("token_to_chars", (1,)), ("sequence_ids", ()), ("word_to_tokens", (0,))])
def test_batch_encoding_alignment_as_transformers_or_refused_clearly(toks, method, args):
    """A tokenizer.json tokenizer keeps its Encodings as transformers' fast ones; the byte tokenizer's plain
    call keeps none and refuses, naming the problem."""
    theirs, ours = (tok("hello world", return_tensors="pt") for tok in toks)
    assert getattr(ours, method)(*args) == getattr(theirs, method)(*args)
    assert ours[0].ids == theirs[0].ids
    plain_call = ByteTokenizer()("hello world", return_tensors="pt")
    with pytest.raises(ValueError, match=f"{method}\\(\\) is not available"):
        getattr(plain_call, method)(*args)
    with pytest.raises(KeyError, match="index it by name"):
        plain_call[0]


def test_from_pretrained_settings_override_the_config_as_transformers(tokenizer_folder):
    """The "Generation with LLMs" tutorial loads its tokenizer with ``padding_side="left"``."""
    for kwargs in (dict(padding_side="left"), dict(truncation_side="left", model_max_length=3),
                   dict(chat_template="{{ messages[0]['content'] }}")):
        theirs = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder), **kwargs)
        ours = from_pretrained(tokenizer_folder, **kwargs)
        for key in kwargs:
            assert getattr(ours, key) == getattr(theirs, key), key
        texts = ["the cat sat on the mat", "a"]
        assert plain(ours(texts, padding=True, truncation=True)) == plain(theirs(texts, padding=True, truncation=True))
    assert from_pretrained(tokenizer_folder).padding_side == "right"  # the config's, when not overridden
    assert from_pretrained(tokenizer_folder).model_input_names == theirs.model_input_names
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"):
        from_pretrained(tokenizer_folder, padding_side="middle")
    with pytest.raises(TypeError, match="unexpected tokenizer arguments \\['use_slow'\\]"):
        from_pretrained(tokenizer_folder, use_slow=True)


THINKING_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} said {{ m['content'] }}{% endfor %}"
                     "{% if add_generation_prompt %}assistant said{% if enable_thinking %} hi{% endif %}{% endif %}"
                     "{{ eos_token }}")


@pytest.mark.parametrize("kwargs", [dict(), dict(enable_thinking=True), dict(enable_thinking=False),
                                    dict(eos_token="</s> </s>"),
                                    dict(tokenizer_kwargs={"padding_side": "left"}, padding=True)])
def test_chat_template_variables_and_tokenizer_kwargs_as_transformers(toks, kwargs):
    """Keyword arguments apply_chat_template does not know are the template's variables (Qwen3's
    ``enable_thinking=False``); ``tokenizer_kwargs`` go to the tokenizer call."""
    chats = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "hello lora world"}]]
    expected, got = (tok.apply_chat_template(chats, chat_template=THINKING_TEMPLATE, add_generation_prompt=True,
                                             return_tensors="pt" if "padding" in kwargs else None, **kwargs)
                     for tok in toks)
    assert plain(got) == plain(expected)
    text = toks[1].apply_chat_template(chats[0], chat_template=THINKING_TEMPLATE, add_generation_prompt=True,
                                       tokenize=False, **kwargs)
    assert text == toks[0].apply_chat_template(chats[0], chat_template=THINKING_TEMPLATE, add_generation_prompt=True,
                                               tokenize=False, **kwargs)


def test_chat_template_options_not_implemented_are_refused(toks):
    chat = [{"role": "user", "content": "hello"}]
    for option in ("sanitize_control_tokens",):  # return_assistant_tokens_mask: test_tokenizer_generate_r6
        with pytest.raises(NotImplementedError, match=option):
            toks[1].apply_chat_template(chat, **{option: True})
