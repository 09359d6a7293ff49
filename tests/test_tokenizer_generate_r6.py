"""The tokenizer and generate() options earlier rounds refused or skipped, side by side with transformers 5
on the same files and the same tiny Llama weights:

* the call: ``return_offsets_mapping``, ``return_special_tokens_mask``, ``return_length``,
  ``return_overflowing_tokens`` with ``stride`` (``overflow_to_sample_mapping``), ``text_pair`` with every
  truncation strategy, ``is_split_into_words`` and BatchEncoding's alignment methods, ``padding_side`` /
  ``truncation_side``, ``pad_to_multiple_of``, ``text_target`` -- on a batch of mixed-length texts with
  unicode, emoji and runs of spaces, for a byte-level BPE tokenizer.json and for minilora's byte tokenizer;
* ``apply_chat_template``: ``add_generation_prompt``, ``continue_final_message``, ``return_dict``,
  ``return_assistant_tokens_mask`` (``{% generation %}``), ``tokenize=False``, ``tools``;
* generate(): a 1-D prompt, GenerationConfig's validation and files, a model's generation_config.json,
  ``return_dict_in_generate`` with ``output_scores`` / ``output_logits``, transformers' streamers."""
import dataclasses
import json
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

import minilora as ml  # noqa: E402
from minilora.models import LlamaForCausalLM  # noqa: E402
from minilora.nn.generation import GenerationConfig, TextIteratorStreamer  # noqa: E402
from minilora.tokenizer import ByteTokenizer, from_pretrained  # noqa: E402

# a fixture: a word-level tokenizer of TINY's 37 ids
from test_tokenizer_r5 import tokenizer_folder  # noqa: E402,F401
from test_tutorials_r4 import TINY, llama_pair  # noqa: E402

TEXTS = ["Hello world!", "  spaces  here ", "naïve café 😀 emoji", "日本語のテキスト", "a"]
PAIRS = ["the fox", "x", "quick brown fox jumps over", " 😀😀 ", "日本"]
CORPUS = ["Hello world! naïve café 😀 emoji", "  spaces  here ", "日本語のテキスト", "the quick brown fox jumps"] * 3


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    """A byte-level BPE tokenizer.json (trained here on a few lines) with a pair template, as transformers saves one."""
    folder = tmp_path_factory.mktemp("bpe")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder


@pytest.fixture
def bpe_toks(bpe_folder):
    return transformers.AutoTokenizer.from_pretrained(str(bpe_folder)), from_pretrained(bpe_folder)


@pytest.fixture(params=["bpe", "byte"])
def toks(request, bpe_folder, tmp_path):
    """(transformers' tokenizer, minilora's) from the same files; the byte tokenizer's are its save_pretrained."""
    if request.param == "bpe":
        return transformers.AutoTokenizer.from_pretrained(str(bpe_folder)), from_pretrained(bpe_folder)
    ours = ByteTokenizer()
    ours.save_pretrained(tmp_path / "byte")
    return transformers.AutoTokenizer.from_pretrained(str(tmp_path / "byte")), ours


def plain(value):
    if hasattr(value, "keys"):
        return {k: plain(value[k]) for k in value.keys()}
    return value.tolist() if hasattr(value, "tolist") else value


def outcome(call):
    """What ``call()`` gives, or the error it raises (type and first words), warnings silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except Exception as exc:  # noqa: BLE001 -- the error itself is the result compared
        return exc
    except BaseException as exc:  # the tokenizers library's Rust panics (pyo3's PanicException)
        if type(exc).__name__ != "PanicException":
            raise
        return exc


def aligned(out, alignment=True):
    """A call's values and each row's alignment (word ids, sequence ids, tokens), as plain lists; for an
    error, that it is one (the tokenizers library's bare Exception is a ValueError in minilora)."""
    if isinstance(out, BaseException):
        return "error"
    rows = len(out["input_ids"]) if isinstance(out["input_ids"][0], list) or hasattr(out["input_ids"], "shape") \
        else 1
    if not alignment:
        return plain(out)
    return plain(out), [(out.word_ids(i), out.sequence_ids(i), out.tokens(i)) for i in range(rows)]


# ==================================================================================================
# The call's options
# ==================================================================================================
CALLS = [dict(return_offsets_mapping=True), dict(return_special_tokens_mask=True, return_length=True),
         dict(return_overflowing_tokens=True, stride=2, truncation=True, max_length=6),
         dict(return_overflowing_tokens=True, stride=1, truncation=True, max_length=5, padding=True,
              return_tensors="np", return_offsets_mapping=True),
         dict(text_pair=PAIRS, truncation="only_first", max_length=14, padding="max_length"),
         dict(text_pair=PAIRS, truncation="only_first", max_length=30, padding="max_length",
              return_offsets_mapping=True),
         dict(text_pair=PAIRS, truncation="only_second", max_length=14, padding="max_length", padding_side="left"),
         dict(text_pair=PAIRS, truncation="only_second", max_length=30, padding=True, return_special_tokens_mask=True),
         dict(text_pair=PAIRS, truncation="longest_first", max_length=9, return_token_type_ids=True,
              return_overflowing_tokens=True, return_special_tokens_mask=True),
         dict(text_pair=PAIRS, truncation=True, max_length=9, return_overflowing_tokens=True, stride=1),
         dict(padding=True, pad_to_multiple_of=8, return_tensors="pt", return_length=True),
         dict(padding="max_length", max_length=16, truncation=True, pad_to_multiple_of=8, return_tensors="np"),
         dict(text_target=PAIRS, padding=True, return_tensors="pt")]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: "-".join(k for k in c if k not in ("max_length", "stride")))
def test_call_options_as_transformers(toks, call):
    theirs, ours = (outcome(lambda: tok(TEXTS, **call)) for tok in toks)
    alignment = getattr(ours, "is_fast", False)  # the byte tokenizer's plain calls keep none (refused, tested below)
    assert aligned(ours, alignment) == aligned(theirs, alignment)


@pytest.mark.parametrize("sides", [("left", "left"), ("right", "left"), ("left", "right")])
def test_padding_and_truncation_sides_of_pairs_as_transformers(toks, sides):
    for tok in toks:
        tok.padding_side, tok.truncation_side = sides
    for strategy, length in (("longest_first", 14), ("only_first", 30), ("only_second", 30), ("only_second", 14)):
        call = dict(text_pair=PAIRS, truncation=strategy, max_length=length, padding=True, return_offsets_mapping=True,
                    return_overflowing_tokens=True, stride=1)
        theirs, ours = (aligned(outcome(lambda: tok(TEXTS, **call))) for tok in toks)
        assert ours == theirs, strategy


def test_one_text_and_one_pair_as_transformers(toks):
    """One text gives one row (``length`` stays a list of one, as transformers); with overflow, rows."""
    calls = [dict(return_length=True, return_offsets_mapping=True, return_special_tokens_mask=True),
             dict(text_pair="the fox", return_token_type_ids=True),
             dict(return_overflowing_tokens=True, truncation=True, max_length=4, stride=1),
             dict(return_offsets_mapping=True, return_tensors="pt")]
    for call in calls:
        theirs, ours = (aligned(tok("naïve café 😀  x", **call)) for tok in toks)
        assert ours == theirs, call
    assert toks[1].encode("Hello", "the fox") == toks[0].encode("Hello", "the fox")
    for args in (("naïve café 😀",), ("Hello", "the fox")):
        for special in (False, True):
            assert toks[1].tokenize(*args, add_special_tokens=special) == \
                toks[0].tokenize(*args, add_special_tokens=special)
    assert toks[1].encode("Hello", text_pair="x", return_tensors="pt").tolist() == \
        toks[0].encode("Hello", text_pair="x", return_tensors="pt").tolist()


def test_words_and_alignment_methods_as_transformers(toks):
    words = [["Hello", "wörld", "😀"], ["a", "  b", "日本"]]
    theirs, ours = (tok(words, is_split_into_words=True, return_offsets_mapping=True, padding=True) for tok in toks)
    assert aligned(ours) == aligned(theirs)
    assert ours.is_fast and ours.n_sequences == theirs.n_sequences == 1
    for batch in (0, 1):
        for token in range(len(ours["input_ids"][batch])):
            for method in ("token_to_chars", "token_to_word", "token_to_sequence"):
                assert getattr(ours, method)(batch, token) == getattr(theirs, method)(batch, token), (method, token)
        for word in range(3):
            assert ours.word_to_tokens(batch, word) == theirs.word_to_tokens(batch, word)
            assert ours.word_to_chars(batch, word) == theirs.word_to_chars(batch, word)
        for char in range(5):
            assert ours.char_to_token(batch, char) == theirs.char_to_token(batch, char)
            assert ours.char_to_word(batch, char) == theirs.char_to_word(batch, char)
    single = [tok(["Hello", "wörld"], is_split_into_words=True) for tok in toks]  # one example: its words
    assert aligned(single[1]) == aligned(single[0])
    assert single[1].token_to_chars(2) == single[0].token_to_chars(2)
    assert single[1].word_to_tokens(1) == single[0].word_to_tokens(1)
    assert type(single[1].word_to_tokens(1)).__name__ == "TokenSpan" and single[1].word_to_chars(1).end == 5
    pairs = [tok("Hello world", "the fox") for tok in toks]
    assert pairs[1].char_to_token(1, sequence_index=1) == pairs[0].char_to_token(1, sequence_index=1)
    assert pairs[1].n_sequences == pairs[0].n_sequences == 2


def qa_features(tokenizer, questions, contexts, answers):
    """The question-answering tutorial's preprocessing: long contexts in overlapping windows, each answer's
    characters turned into token positions through offset_mapping and sequence_ids."""
    inputs = tokenizer(questions, contexts, max_length=40, truncation="only_second", stride=4,
                       return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    offset_mapping = inputs.pop("offset_mapping")
    sample_map = inputs.pop("overflow_to_sample_mapping")
    starts, ends = [], []
    for i, offset in enumerate(offset_mapping):
        answer = answers[sample_map[i]]
        start_char, end_char = answer["start"], answer["start"] + len(answer["text"])
        sequence_ids = inputs.sequence_ids(i)
        idx = 0
        while sequence_ids[idx] != 1:
            idx += 1
        context_start = idx
        while idx < len(sequence_ids) and sequence_ids[idx] == 1:
            idx += 1
        context_end = idx - 1
        if offset[context_start][0] > start_char or offset[context_end][1] < end_char:
            starts.append(0), ends.append(0)
            continue
        idx = context_start
        while idx <= context_end and offset[idx][0] <= start_char:
            idx += 1
        starts.append(idx - 1)
        idx = context_end
        while idx >= context_start and offset[idx][1] >= end_char:
            idx -= 1
        ends.append(idx + 1)
    inputs["start_positions"], inputs["end_positions"] = starts, ends
    return plain(inputs), sample_map


def ner_labels(tokenizer, words, tags):
    """The token-classification tutorial's label alignment: -100 for special tokens and a word's later pieces."""
    inputs = tokenizer(words, truncation=True, is_split_into_words=True)
    labels = []
    for i, word_tags in enumerate(tags):
        previous, row = None, []
        for word in inputs.word_ids(batch_index=i):
            row.append(-100 if word is None or word == previous else word_tags[word])
            previous = word
        labels.append(row)
    inputs["labels"] = labels
    return plain(inputs)


def test_question_answering_and_token_classification_tutorials_as_transformers(toks):
    contexts = ["The quick brown fox jumps over the lazy dog near the café 😀 by the river bank today.",
                "日本語のテキスト is here and the answer is naïve, said the fox."]
    questions = ["Who jumps?", "What is the answer?"]
    answers = [{"text": "brown fox", "start": 10}, {"text": "naïve", "start": 35}]
    assert contexts[1][35:40] == "naïve"
    theirs, ours = (qa_features(tok, questions, contexts, answers) for tok in toks)
    assert ours == theirs and any(theirs[0]["start_positions"])
    words = [["EU", "rejects", "German", "café", "😀"], ["日本", "x"]]
    tags = [[3, 0, 7, 0, 1], [5, 0]]
    assert ner_labels(toks[1], words, tags) == ner_labels(toks[0], words, tags)


def test_too_long_rows_are_warned_about_once_and_rows_sliced_as_transformers(toks):
    for tok in toks:
        tok.model_max_length = 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for tok in toks:
            tok(TEXTS), tok(TEXTS), tok(TEXTS, truncation=True)
    assert toks[0].deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")
    ours = [w for w in caught if "Token indices sequence length is longer" in str(w.message)]
    assert len(ours) == 1 and "> 6)" in str(ours[0].message)
    theirs, mine = (tok(TEXTS[:3], return_offsets_mapping=True) for tok in toks)
    assert [e.ids for e in mine[1:3]] == [e.ids for e in theirs[1:3]]  # the rows' Encodings
    plain_rows = ByteTokenizer()(TEXTS[:3])  # no Encodings: a slice of every value, as transformers' Python tokenizers
    assert plain_rows[1:3] == {k: v[1:3] for k, v in plain_rows.items()}


def test_call_errors_as_transformers(toks):
    calls = [lambda tok: tok(TEXTS, PAIRS, truncation="only_first", max_length=5),  # the first text is too short
             lambda tok: tok(TEXTS, truncation="only_second", max_length=4),  # no second text
             lambda tok: tok(TEXTS, PAIRS[:2]),
             lambda tok: tok(TEXTS, "the fox"),
             lambda tok: tok(TEXTS, truncation="only_third"),
             lambda tok: tok(TEXTS, padding="all"),
             lambda tok: tok(TEXTS, padding=True, truncation=True, max_length=10, pad_to_multiple_of=8),
             lambda tok: tok(TEXTS, return_overflowing_tokens=True, truncation=True, max_length=3, stride=3),
             lambda tok: tok(TEXTS, PAIRS, return_overflowing_tokens=True, truncation="only_second", max_length=24,
                             stride=20),  # a Rust panic in transformers (pyo3's PanicException)
             lambda tok: tok(3),
             lambda tok: tok()]
    for call in calls:
        theirs, ours = (outcome(lambda: call(tok)) for tok in toks)
        assert isinstance(theirs, BaseException) and isinstance(ours, Exception), (theirs, ours)
        bare = type(theirs) is Exception or type(theirs).__name__ == "PanicException"
        assert isinstance(ours, type(theirs)) or bare and isinstance(ours, ValueError), \
            (theirs, ours)  # the tokenizers library's bare Exceptions and panics are ValueErrors in minilora
    with pytest.raises(NotImplementedError, match="return_unicorns"):
        toks[1]("x", return_unicorns=True)


def test_a_call_leaves_the_backend_as_it_was(bpe_folder, tmp_path):
    """transformers sets truncation and padding on the backend for a call; minilora puts them back, so
    ``encode`` and the saved tokenizer.json are not cut to the last call's length."""
    ours = from_pretrained(bpe_folder)
    ours(TEXTS, truncation=True, max_length=3, padding="max_length", return_overflowing_tokens=True)
    assert len(ours.encode(TEXTS[2])) > 3 and ours.tokenizer.truncation is None and ours.tokenizer.padding is None
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    byte = ByteTokenizer()
    assert byte("<eos>", return_offsets_mapping=True)["input_ids"] == byte("<eos>")["input_ids"]  # five bytes
    carrying = tokenizers.Tokenizer.from_file(str(bpe_folder / "tokenizer.json"))  # a file that sets its own
    carrying.enable_truncation(max_length=3)
    carrying.enable_padding(length=40, pad_id=0, pad_token="<pad>")
    (tmp_path / "carrying").mkdir()
    carrying.save(str(tmp_path / "carrying" / "tokenizer.json"))
    (tmp_path / "carrying" / "tokenizer_config.json").write_text((bpe_folder / "tokenizer_config.json").read_text())
    theirs, ours = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "carrying")), from_pretrained(
        tmp_path / "carrying")
    for call in (lambda tok: tok(TEXTS[2])["input_ids"], lambda tok: tok.encode(TEXTS[2]),
                 lambda tok: tok.tokenize(TEXTS[2]), lambda tok: tok(TEXTS, padding=True)["input_ids"]):
        assert call(ours) == call(theirs)  # only the call's options cut or pad, as in transformers


# ==================================================================================================
# apply_chat_template
# ==================================================================================================
TEMPLATE = ("{{ bos_token }}{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}{% for m in messages %}"
            "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}"
            "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
CHAT = [{"role": "user", "content": "Hello wörld 😀"}, {"role": "assistant", "content": "  naïve café "},
        {"role": "user", "content": "日本"}, {"role": "assistant", "content": "ok <b>"}]
TOOLS = [{"type": "function", "function": {"name": "f", "description": "a <b> & c", "parameters": {}}}]
CHAT_CALLS = [dict(), dict(add_generation_prompt=True), dict(continue_final_message=True), dict(return_dict=False),
              dict(tokenize=False, tools=TOOLS), dict(tools=TOOLS, return_tensors="pt"),
              dict(continue_final_message="content", tokenize=False),
              dict(return_assistant_tokens_mask=True), dict(return_assistant_tokens_mask=True, return_tensors="np"),
              dict(return_assistant_tokens_mask=True, truncation=True, max_length=12),
              dict(continue_final_message=True, add_generation_prompt=True),
              dict(return_assistant_tokens_mask=True, tokenize=False),
              dict(return_assistant_tokens_mask=True, continue_final_message=True)]


@pytest.mark.parametrize("call", CHAT_CALLS, ids=lambda c: "-".join(c) or "plain")
def test_chat_template_options_as_transformers(bpe_toks, call):
    """(On the BPE tokenizer: the byte tokenizer reads a special token's text, "<bos>", as bytes.)"""
    toks = bpe_toks
    theirs, ours = (outcome(lambda: tok.apply_chat_template(CHAT, chat_template=TEMPLATE, **call)) for tok in toks)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours)[:40] == str(theirs)[:40]
    else:
        assert plain(ours) == plain(theirs)


def test_chat_template_batch_masks_and_refusals(bpe_toks):
    toks = bpe_toks
    chats = [CHAT, CHAT[:2]]
    theirs, ours = (tok.apply_chat_template(chats, chat_template=TEMPLATE, return_assistant_tokens_mask=True,
                                            padding=True, return_tensors="pt") for tok in toks)
    assert plain(ours) == plain(theirs) and sum(plain(ours)["assistant_masks"][1]) > 0
    with pytest.raises(NotImplementedError, match="tools=\\[a Python function\\]"):
        toks[1].apply_chat_template(CHAT, chat_template=TEMPLATE, tools=[len])
    with pytest.raises(ValueError, match="empty conversation"):
        toks[1].apply_chat_template([], chat_template=TEMPLATE)
    no_blocks = TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.warns(UserWarning, match="does not contain `{% generation %}`"):  # transformers logs the same
        ours = toks[1].apply_chat_template(CHAT, chat_template=no_blocks, return_assistant_tokens_mask=True)
    theirs = toks[0].apply_chat_template(CHAT, chat_template=no_blocks, return_assistant_tokens_mask=True)
    assert plain(ours) == plain(theirs) and not any(ours["assistant_masks"])


MESSAGE_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}:"
                    "{% if m.thinking %}<think>{{ m.thinking }}</think>{% endif %}"
                    "{% if m.content is string %}{{ m.content }}{% elif m.content %}{% for b in m.content %}"
                    "{{ b.text }}|{% endfor %}{% endif %}{% if m.tool_calls is defined %}TC{% endif %}\n{% endfor %}"
                    "{{ extra }}")


@dataclasses.dataclass
class Message:
    role: str
    content: str


@pytest.mark.parametrize("chat", [
    [{"role": "user", "content": "hi", "tool_calls": None}, {"role": "assistant", "content": "ok", "reasoning": "hm"}],
    [Message("user", "hey"), {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b "}]}],
    [{"role": "assistant", "content": "x", "reasoning_content": "deep"}]], ids=["none-reasoning", "objects-blocks",
                                                                               "reasoning-content"])
@pytest.mark.parametrize("call", [dict(), dict(continue_final_message=True), dict(continue_final_message="reasoning"),
                                  dict(continue_final_message="thinking"), dict(extra=np.int64(3)),
                                  dict(extra=np.bool_(False))], ids=lambda c: "-".join(map(str, c.values())) or "plain")
def test_chat_messages_are_normalized_as_transformers(bpe_toks, chat, call):
    """A None value is no key, reasoning goes by all its names, dataclass messages and NumPy scalars are plain
    data, content blocks can be continued -- what the template sees, as in transformers."""
    theirs, ours = (outcome(lambda: tok.apply_chat_template(chat, chat_template=MESSAGE_TEMPLATE, tokenize=False,
                                                            **call)) for tok in bpe_toks)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours)[:40] == str(theirs)[:40]
    else:
        assert ours == theirs


# ==================================================================================================
# generate()
# ==================================================================================================
IDS = [[1, 5, 9, 13, 4]]


def test_one_d_prompt_is_refused_with_the_fix_as_transformers_fails():
    """transformers fails deep inside on a 1-D prompt (IndexError: tuple index out of range); minilora refuses it
    at the door, naming the fix (round 8: it used to answer a 1-D sequence transformers never gives); the
    [1, n] batch is transformers' row."""
    reference, model = llama_pair()
    with pytest.raises(IndexError):
        reference.generate(torch.tensor(IDS[0]), max_new_tokens=3, do_sample=False)
    with pytest.raises(ValueError, match=r"1-D sequence of shape \(5,\): pass \[ids\]"):
        model.generate(ml.tensor(IDS[0]), max_new_tokens=3, do_sample=False)
    expected = reference.generate(torch.tensor(IDS), max_new_tokens=3, do_sample=False)
    assert model.generate(ml.tensor(IDS), max_new_tokens=3, do_sample=False).tolist() == expected.tolist()


def flagged(config_class, options):
    """What GenerationConfig(**options) does: ("error", type) or the flags strict validation names."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = config_class(**options)
    except ValueError:
        return "error"
    try:
        config.validate(strict=True)
    except ValueError as exc:
        return sorted(line.split("`")[1] for line in str(exc).splitlines() if line.startswith("- `"))
    return []


CONFIGS = [dict(temperature=0.5), dict(do_sample=False, top_p=0.5, top_k=3, min_p=0.1), dict(do_sample=True, top_k=3),
           dict(length_penalty=2.0), dict(num_beams=2, length_penalty=2.0, early_stopping=True),
           dict(early_stopping=True), dict(output_scores=True, output_logits=True),
           dict(return_dict_in_generate=True, output_scores=True), dict(pad_token_id=-1),
           dict(max_new_tokens=0), dict(max_new_tokens=-3), dict(early_stopping="sometimes"),
           dict(num_return_sequences=2), dict(num_return_sequences=3, num_beams=2),
           dict(do_sample=True, num_return_sequences=2), dict(suppress_tokens=[2], forced_eos_token_id=2),
           dict(streamer=object()), dict(typical_p=0.5, eta_cutoff=0.1),
           dict(unknown_option=3)]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(o))
def test_generation_config_is_validated_as_transformers(options):
    """Errors at construction where transformers raises; the same flags named where it warns (minilora warns
    with a UserWarning; strict validation -- what save_pretrained runs -- refuses them in both)."""
    assert flagged(GenerationConfig, options) == flagged(transformers.GenerationConfig, options)
    if flagged(GenerationConfig, options) not in ("error", []):
        with pytest.warns(UserWarning, match="generation flags are not valid"):
            GenerationConfig(**options)


def test_generation_config_files_round_trip_with_transformers(tmp_path):
    options = dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=5, eos_token_id=[2, 3],
                   pad_token_id=0, repetition_penalty=1.2, num_return_sequences=2)
    GenerationConfig(**options).save_pretrained(tmp_path / "ours")  # the folder is made, as transformers makes it
    theirs = transformers.GenerationConfig.from_pretrained(str(tmp_path / "ours"))
    assert {k: getattr(theirs, k) for k in options} == options
    transformers.GenerationConfig(**options).save_pretrained(str(tmp_path / "theirs"))
    back = GenerationConfig.from_pretrained(tmp_path / "theirs")
    assert {k: v for k, v in back.to_dict().items() if k in options} == options
    assert back.other.pop("transformers_version") == transformers.__version__
    assert back == GenerationConfig.from_pretrained(tmp_path / "ours")
    for config_class, folder in ((GenerationConfig, tmp_path / "bad"), (transformers.GenerationConfig, tmp_path / "b")):
        with pytest.warns(UserWarning) if config_class is GenerationConfig else warnings.catch_warnings():
            config = config_class(temperature=0.5)
        with pytest.raises(ValueError, match="Fix these issues to save the configuration"):
            config.save_pretrained(str(folder))
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "generation_config.json").write_text(json.dumps({"temperature": 0.5}))
    for config_class in (GenerationConfig, transformers.GenerationConfig):  # loaded, unchanged: saved back
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = config_class.from_pretrained(str(tmp_path / "file"))
            config.save_pretrained(str(tmp_path / f"again-{config_class.__module__}"))


def scores_of(out):
    return [np.asarray(s.tolist(), dtype=np.float32) for s in out]


@pytest.mark.parametrize("call", [dict(do_sample=False, repetition_penalty=1.3),
                                  dict(do_sample=True, top_k=1, temperature=0.7),
                                  dict(do_sample=True, top_k=4, top_p=0.9, temperature=1e-3),
                                  dict(do_sample=False, num_beams=2),
                                  dict(do_sample=False, num_beams=3, num_return_sequences=2, length_penalty=0.5),
                                  dict(do_sample=True, top_k=1, num_return_sequences=2)],
                         ids=["greedy", "top-k-1", "top-p", "beams", "beams-returned", "sampled-returned"])
def test_return_dict_scores_and_logits_as_transformers(call):
    reference, model = llama_pair()
    ids = [[1, 5, 9, 13], [0, 1, 7, 8]]
    options = dict(max_new_tokens=4, return_dict_in_generate=True, output_scores=True, output_logits=True,
                   attention_mask=[[1, 1, 1, 1], [0, 1, 1, 1]], **call)
    torch.manual_seed(0)
    mask = torch.tensor(options["attention_mask"])
    theirs = reference.generate(torch.tensor(ids), **{**options, "attention_mask": mask})
    ours = model.generate(ml.tensor(ids), **options, seed=0)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits"):
        expected, got = getattr(theirs, name), getattr(ours, name)
        assert len(got) == len(expected) and got[0].shape == tuple(expected[0].shape) and got[0].dtype == ml.float32
        for e, g in zip(scores_of(expected), scores_of(got)):
            np.testing.assert_array_equal(np.isinf(g), np.isinf(e))
            np.testing.assert_allclose(g[np.isfinite(g)], e[np.isfinite(e)], rtol=1e-4, atol=1e-4)
    if call.get("num_beams", 1) > 1:
        np.testing.assert_allclose(scores_of([ours.sequences_scores])[0], scores_of([theirs.sequences_scores])[0],
                                   rtol=1e-4, atol=1e-4)
        assert ours.beam_indices.tolist() == theirs.beam_indices.tolist()


def test_model_generation_config_file_sets_the_dict_output(tmp_path):
    """A model folder's generation_config.json asking for the dict output and scores: generate() with no
    options gives the same as transformers."""
    reference, _ = llama_pair()
    reference.generation_config = transformers.GenerationConfig(
        do_sample=True, top_k=1, max_new_tokens=3, return_dict_in_generate=True, output_scores=True,
        eos_token_id=TINY.eos_token_id, pad_token_id=0)
    reference.save_pretrained(str(tmp_path))
    theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)).generate(torch.tensor(IDS))
    ours = LlamaForCausalLM.from_pretrained(str(tmp_path)).generate(ml.tensor(IDS))
    assert ours.sequences.tolist() == theirs.sequences.tolist() and len(ours.scores) == len(theirs.scores) == 3
    np.testing.assert_allclose(scores_of(ours.scores)[0], scores_of(theirs.scores)[0], rtol=1e-4, atol=1e-4)


def test_model_save_refuses_an_edited_invalid_generation_config_as_transformers(tmp_path):
    """A model folder's file with issues (a published chat model's temperature without do_sample) loads with a
    warning and saves back unchanged; edited, saving it is refused -- by the model's save_pretrained too."""
    reference, _ = llama_pair()
    reference.save_pretrained(str(tmp_path / "model"))
    (tmp_path / "model" / "generation_config.json").write_text(json.dumps({"temperature": 0.5, "eos_token_id": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "model"))
    with pytest.warns(UserWarning, match="generation flags are not valid"):
        ours = LlamaForCausalLM.from_pretrained(str(tmp_path / "model"))
    for model, name in ((theirs, "theirs"), (ours, "ours")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(str(tmp_path / f"again-{name}"))
        model.generation_config.temperature = 0.6
        with pytest.raises(ValueError, match="temperature"):
            model.save_pretrained(str(tmp_path / f"edited-{name}"))
    saved = json.loads((tmp_path / "again-ours" / "generation_config.json").read_text())
    assert saved["temperature"] == 0.5 and saved["eos_token_id"] == 2


class Pieces(transformers.TextStreamer):
    """transformers' TextStreamer, keeping what it would print."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.pieces = []

    def on_finalized_text(self, text, stream_end=False):
        self.pieces.append((text, stream_end))


@pytest.mark.parametrize("skip_prompt", [False, True])
def test_transformers_streamers_take_minilora_tokenizer_and_model(tokenizer_folder, skip_prompt):
    reference, model = llama_pair()
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder))
    ours_tok = from_pretrained(tokenizer_folder)
    options = dict(max_new_tokens=6, do_sample=False)
    expected, got = Pieces(theirs_tok, skip_prompt=skip_prompt), Pieces(ours_tok, skip_prompt=skip_prompt)
    reference.generate(theirs_tok("the cat sat", return_tensors="pt").input_ids, streamer=expected, **options)
    model.generate(ours_tok("the cat sat", return_tensors="pt").input_ids, streamer=got, **options)
    assert got.pieces == expected.pieces and expected.pieces[-1][1] is True
    texts = []
    runs = ((theirs_tok, reference, transformers.TextIteratorStreamer),
            (ours_tok, model, transformers.TextIteratorStreamer),
            (ours_tok, model, TextIteratorStreamer))  # and minilora's own, for an install without transformers
    for tok, lm, streamer_class in runs:
        streamer = streamer_class(tok, skip_prompt=skip_prompt, skip_special_tokens=True, timeout=30)
        ids = tok("a dog ran", return_tensors="pt").input_ids
        thread = threading.Thread(target=lm.generate, kwargs=dict(input_ids=ids, streamer=streamer, **options))
        thread.start()
        texts.append(list(streamer))
        thread.join()
    assert texts[2] == texts[1] == texts[0] and "".join(texts[1])
