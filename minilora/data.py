"""Built-in data, generated from a seed: an invented world, a base corpus about it, and tasks.

Nothing is downloaded. One seed fixes the *world* (who lives where, which country has which capital);
the base model is pretrained on English text about that world (``corpus_documents``: facts in several
phrasings, short stories, lists, small sums), so it *knows* the facts. The downstream tasks then ask
for something the base model has never seen:

* ``qa``   -- the same facts in a new format: ``"Q: Where does Ada Morn live?\\nA:"`` -> ``" Mert"``.
  Fine-tuning uses two thirds of the world's people and evaluation the other third, so
  the eval answers were never shown during fine-tuning: they must come from the knowledge the base model
  got in pretraining. This is the classic reason to fine-tune: teach a format, keep the knowledge.
* ``reverse`` -- a new operation: ``"Reverse: cup kite bread\\n"`` -> ``"bread kite cup"``. The corpus
  teaches copying (every list in it is said twice, in the same order) but never reversing. Train and
  eval phrases are disjoint.
* ``facts`` -- the *base* task, in the corpus's own format: ``"The capital of Lorvia is"`` ->
  ``" Mert"`` (the output is cut at the full stop, so it scores what the model knows, not whether it
  still ends sentences the corpus way). Measured before and after fine-tuning, it shows forgetting of
  knowledge; the held-out corpus loss (``corpus_loss``) shows forgetting of the corpus's language.

Every task is scored by exact match of greedy generations (``evaluate``). The rest of the file turns
text into ``[B, T]`` arrays for training: ``encode_example`` (labels ``-100`` on the prompt, so the loss
is on the answer only), ``pack`` (a long token stream cut into blocks, for pretraining) and
``DataLoader`` (seeded shuffling in which batch ``i`` is a pure function of ``(seed, i)``, which is what
makes a resumed run see exactly the batches the uninterrupted run would have seen).
"""
import dataclasses
import multiprocessing
import os
import warnings
from collections.abc import Mapping

import numpy as np

from .dtypes import int64
from .factories import bernoulli, full, randint
from .random import Generator
from .tensor import no_grad, tensor
from .utils.data import get_worker_info

__all__ = ["World", "make_world", "corpus_documents", "corpus_text", "Example", "Task", "TASKS",
           "get_task", "encode_prompt", "encode_example", "encode_document", "pack", "pad_batch",
           "DataLoader", "task_loader", "corpus_loader", "evaluate", "EvalResult", "predict",
           "mean_loss", "corpus_loss", "IGNORE_INDEX", "DataCollatorForLanguageModeling",
           "DataCollatorWithPadding", "DataCollatorForSeq2Seq", "default_data_collator",
           "DefaultDataCollator"]

IGNORE_INDEX = -100  # label value the loss skips (PyTorch's and transformers' convention)
WORLD_SEED = 1234  # the world the shipped base model was pretrained on

# ----------------------------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------------------------
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kl", "st", "tr", "sh", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "rk", "nd"]
JOBS = ["baker", "farmer", "teacher", "doctor", "painter", "sailor", "miner", "weaver", "potter",
        "singer", "smith", "hunter"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "pink", "grey"]
THINGS = ["apple", "hat", "boat", "book", "bird", "cup", "lamp", "coat", "stone", "kite", "drum",
          "horse", "river", "tree", "door", "bell", "fish", "goat", "pear", "bread", "ring", "shoe",
          "candle", "basket", "rope", "spoon", "chair", "flag", "key", "mirror"]


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    town: str
    job: str
    colour: str


@dataclasses.dataclass(frozen=True)
class World:
    """Countries with capitals and people with a home town, a job and a favourite colour.

    ``qa_split[name]`` says whether a person's questions are for fine-tuning ("train") or
    evaluation ("eval") in the ``qa`` task."""
    capitals: dict  # country -> capital town
    people: tuple   # Person, ...
    qa_split: dict  # person's name -> "train" | "eval"

    @property
    def countries(self):
        return list(self.capitals)

    def residents(self, town):
        return [p for p in self.people if p.town == town]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _word(rng, syllables):
    parts = [_pick(rng, _ONSETS) + _pick(rng, _VOWELS) for _ in range(syllables)]
    return ("".join(parts) + _pick(rng, _CODAS)).capitalize()


def _unique_words(rng, count, syllables, taken):
    out = []
    while len(out) < count:
        w = _word(rng, syllables)
        if w not in taken and 3 <= len(w) <= 9:
            taken.add(w)
            out.append(w)
    return out


def make_world(seed=WORLD_SEED, n_countries=20, n_people=60):
    """The invented world for ``seed``: names from syllables, facts drawn at random."""
    rng = np.random.default_rng(seed)
    taken = set()
    countries = [w + _pick(rng, ["ia", "land", "ora", "ovia"]) for w in
                 _unique_words(rng, n_countries, 1, taken)]
    towns = _unique_words(rng, n_countries, 1, taken)
    firsts = _unique_words(rng, n_people, 1, taken)
    lasts = _unique_words(rng, n_people, 1, taken)
    people = tuple(Person(f"{f} {l}", _pick(rng, towns), _pick(rng, JOBS), _pick(rng, COLOURS))
                   for f, l in zip(firsts, lasts))
    order = rng.permutation(len(people))  # a third of the people are kept for evaluation
    split = {people[i].name: ("eval" if k % 3 == 0 else "train") for k, i in enumerate(order)}
    return World(dict(zip(countries, towns)), people, split)


# ----------------------------------------------------------------------------------------------
# The base corpus: facts stated in several phrasings, short stories, lists said twice, small sums
# ----------------------------------------------------------------------------------------------
# Several phrasings of every fact: a model that saw each fact one way only can repeat the sentence
# but not *use* the fact in a new format (Allen-Zhu & Li, "Physics of Language Models 3.1").
FACT_TEMPLATES = {
    "capital": ["The capital of {country} is {town}.", "{town} is the capital of {country}.",
                "{country} has its capital at {town}.", "In {country}, the capital city is {town}."],
    "town": ["{name} lives in {town}.", "{name} has a house in {town}.",
             "The home of {name} is in {town}.", "{name} is from the town of {town}."],
    "job": ["{name} works as a {job}.", "{name} is a {job}.", "By trade, {name} is a {job}.",
            "The job of {name} is {job}."],
    "colour": ["The favourite colour of {name} is {colour}.", "{name} likes {colour} best.",
               "{name} loves the colour {colour}.", "Of all colours, {name} likes {colour} most."],
}


def _fact(rng, kind, **slots):
    return _pick(rng, FACT_TEMPLATES[kind]).format(**slots)


def _person_facts(rng, p):
    return [_fact(rng, "town", name=p.name, town=p.town), _fact(rng, "job", name=p.name, job=p.job),
            _fact(rng, "colour", name=p.name, colour=p.colour)]


def _bio(rng, world):
    p = _pick(rng, world.people)
    facts = _person_facts(rng, p)
    rng.shuffle(facts)
    return " ".join(facts)


def _country_doc(rng, world):
    country = _pick(rng, world.countries)
    town = world.capitals[country]
    text = _fact(rng, "capital", country=country, town=town)
    residents = world.residents(town)
    if residents:
        p = _pick(rng, residents)
        text += f" Many people live in {town}. One of them is {p.name}. " + \
                _fact(rng, "town", name=p.name, town=town)
    return text


def _story(rng, world):
    i, j = rng.choice(len(world.people), size=2, replace=False)
    a, b = world.people[i], world.people[j]
    thing = _pick(rng, THINGS)
    x, y = int(rng.integers(2, 10)), int(rng.integers(1, 10))
    lines = [f"One day, {a.name} left {a.town} to visit {b.name} in {b.town}.",
             _fact(rng, "job", name=a.name, job=a.job), _fact(rng, "job", name=b.name, job=b.job),
             f"{b.name} gave {a.name} a {a.colour} {thing}, because {a.colour} is the favourite "
             f"colour of {a.name}.",
             f"{a.name} had {x} apples and got {y} more, so {a.name} had {x + y} apples.",
             f"Then {a.name} went home to {a.town}."]
    return " ".join(lines)


def _phrase(rng, k):
    """``k`` distinct things. (Not colours or jobs: those words answer questions about people, and
    seeing them in random lists would blur what the model knows about who likes or does what.)"""
    return [THINGS[int(i)] for i in rng.choice(len(THINGS), size=k, replace=False)]


def _list_doc(rng, world):
    """A list said twice. Predicting the second copy is only possible by looking back at the first:
    this is what teaches the model to copy from its context (an "induction head")."""
    p = _pick(rng, world.people)
    items = ", ".join(_phrase(rng, int(rng.integers(2, 6))))
    return f"{p.name} wrote a list: {items}. Then {p.name} read the list out loud: {items}."


def _arithmetic(rng, world):
    lines = []
    for _ in range(int(rng.integers(3, 7))):
        a, b = int(rng.integers(0, 10)), int(rng.integers(0, 10))
        if rng.random() < 0.5:
            lines.append(f"{a} + {b} = {a + b}.")
        else:
            a, b = max(a, b), min(a, b)
            lines.append(f"{a} - {b} = {a - b}.")
    return " ".join(lines)


_DOC_KINDS = [(_bio, 0.35), (_country_doc, 0.15), (_story, 0.25), (_list_doc, 0.15), (_arithmetic, 0.1)]


def corpus_documents(n, seed=0, world=None):
    """``n`` base-corpus documents (strings). Different ``seed`` -> different documents about the
    same ``world`` (default: ``make_world()``), which is how held-out text is made."""
    world = world or make_world()
    rng = np.random.default_rng([seed, 7])  # a stream separate from the world's
    kinds, weights = zip(*_DOC_KINDS)
    picks = rng.choice(len(kinds), size=n, p=np.array(weights) / sum(weights))
    return [kinds[k](rng, world) for k in picks]


def corpus_text(n, seed=0, world=None):
    return "\n".join(corpus_documents(n, seed, world))


# ----------------------------------------------------------------------------------------------
# Tasks: (prompt, answer) pairs with disjoint train/eval splits
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Example:
    prompt: str
    answer: str


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: train/eval examples, how to stop generating, and a one-line description.

    ``stop``: the output is cut before this string (and always at EOS). ``downstream`` tasks are the
    fine-tuning targets; the others measure what the base model knows (forgetting)."""
    name: str
    description: str
    train: tuple
    eval: tuple
    stop: str = None
    max_new_tokens: int = 16
    downstream: bool = True


QA_TEMPLATES = {
    "town": "Q: Where does {name} live?\nA:",
    "job": "Q: What is the job of {name}?\nA:",
    "colour": "Q: What is the favourite colour of {name}?\nA:",
}


def _qa_examples(world):
    """Three questions about each person. (Capitals are left out: with 20 countries, the dozen a
    fine-tune would see are too few to learn the mapping from, and eval on them is noise.)"""
    out = {"train": [], "eval": []}
    for p in world.people:
        for kind, value in (("town", p.town), ("job", p.job), ("colour", p.colour)):
            out[world.qa_split[p.name]].append(Example(QA_TEMPLATES[kind].format(name=p.name),
                                                       " " + value))
    return tuple(out["train"]), tuple(out["eval"])


def _reverse_examples(seed, n_train=600, n_eval=100):
    """Two or three words from the corpus vocabulary, to be said in reverse order. The base model
    can copy a list (the corpus says lists twice) but has never reversed one. Eval phrases never
    occur in train."""
    rng = np.random.default_rng([seed, 11])
    phrases = set()
    while len(phrases) < n_train + n_eval:
        phrases.add(" ".join(_phrase(rng, int(rng.integers(2, 4)))))
    phrases = sorted(phrases)
    rng.shuffle(phrases)
    make = lambda ps: tuple(Example(f"Reverse: {p}\n", " ".join(p.split()[::-1])) for p in ps)  # noqa: E731
    return make(phrases[:n_train]), make(phrases[n_train:])


def _facts_examples(world):
    """The base task: the canonical first phrasing of every fact, as a sentence completion (the
    answer is cut at the full stop, see ``Task.stop``)."""
    ex = [Example(f"The capital of {c} is", f" {t}") for c, t in world.capitals.items()]
    for p in world.people:
        ex += [Example(f"{p.name} lives in", f" {p.town}"), Example(f"{p.name} works as a", f" {p.job}"),
               Example(f"The favourite colour of {p.name} is", f" {p.colour}")]
    return (), tuple(ex)


def _build_tasks(seed=WORLD_SEED):
    world = make_world(seed)
    qa_train, qa_eval = _qa_examples(world)
    reverse_train, reverse_eval = _reverse_examples(seed)
    _, facts_eval = _facts_examples(world)
    return {
        "qa": Task("qa", "answer questions about the world's people in a new Q/A format "
                   "(eval asks about people never seen in fine-tuning)",
                   qa_train, qa_eval, max_new_tokens=12),
        "reverse": Task("reverse", "a new operation: say a list of words in reverse order",
                        reverse_train, reverse_eval, max_new_tokens=24),
        "facts": Task("facts", "base task: complete a fact sentence in the corpus's own format",
                      (), facts_eval, stop=".", max_new_tokens=12, downstream=False),
    }


TASKS = _build_tasks()


def get_task(name):
    """``get_task("qa")``; an unknown name raises an error listing the tasks that exist."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}: choose one of {sorted(TASKS)}")
    return TASKS[name]


# ----------------------------------------------------------------------------------------------
# Text -> token arrays
# ----------------------------------------------------------------------------------------------
def _bos(tokenizer):
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


def encode_prompt(tokenizer, text):
    """``[bos] text`` -- how every prompt and document starts."""
    return _bos(tokenizer) + tokenizer.encode(text, add_special_tokens=False)


def encode_example(tokenizer, example):
    """``[bos] prompt answer [eos]`` with labels ``-100`` on ``[bos] prompt``: the loss (and so the
    gradient) comes from the answer and the EOS only -- the model learns to answer and to stop."""
    for field in ("prompt", "answer"):  # (None or a number failed deep in the tokenizer)
        value = getattr(example, field)
        if not isinstance(value, str):
            raise TypeError(f"Example.{field} must be a str, got {type(value).__name__}: {value!r}")
    prompt = encode_prompt(tokenizer, example.prompt)
    answer = tokenizer.encode(example.answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


def encode_document(tokenizer, text):
    return encode_prompt(tokenizer, text) + [tokenizer.eos_token_id]


def pack(token_ids, block_size):
    """Cut one long token stream into ``[N, block_size]`` rows (the tail that does not fill a row
    is dropped). Pretraining packs documents back to back: no padding is wasted."""
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"pack: block_size must be an integer >= 1, got {block_size!r}")
    ids = np.asarray(token_ids, dtype=np.int64)
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"pack: {len(ids)} tokens do not fill one block of {block_size}")
    return ids[:n * block_size].reshape(n, block_size)


def pad_batch(sequences, pad_id, labels=None):
    """Right-pad variable-length sequences into ``input_ids [B, T]`` and ``labels [B, T]``.

    Padding goes on the right, after every real token, so causal attention never lets a real token
    see a pad, and the pads' labels are ``-100``. ``labels=None`` means "predict every real token"."""
    if not sequences:
        raise ValueError("pad_batch: no sequences")
    for row, seq in enumerate(sequences):
        _check_token_ids(seq, f"sequence {row}")
        if labels is not None:
            _check_token_ids(labels[row], f"labels {row}", length=len(seq))
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    out_labels = np.full((len(sequences), width), IGNORE_INDEX, dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
        out_labels[row, :len(seq)] = seq if labels is None else labels[row]
    return ids, out_labels


def _check_token_ids(values, what, length=None):
    """Refuse what is not a 1-D run of integer token ids (of ``length``): pad_batch would otherwise
    truncate float features to integers, or broadcast a class label along a row, without a word."""
    array = np.asarray(values)
    wrong_kind = array.size and array.dtype.kind not in "iu"  # ([] reads as float64: let it through)
    if array.ndim != 1 or wrong_kind or (length is not None and len(array) != length):
        raise TypeError(f"minilora.data batches token ids: {what} should be a 1-D sequence of integers"
                        f"{'' if length is None else f' of length {length}'}, got {array.dtype} with shape "
                        f"{array.shape}. For torch's DataLoader(dataset, batch_size, shuffle, drop_last) over "
                        "a Dataset of (features, label) samples use minilora.utils.data.DataLoader")


def _check_items(items):
    """What ``DataLoader`` batches: ``[N, T]`` packed rows, or ``(ids, labels)`` pairs of token ids of one
    length. Checked when the loader is made, so a bad item is named before any step, not when first drawn."""
    if isinstance(items, np.ndarray):
        if items.ndim != 2:
            raise ValueError(f"DataLoader: an array of items must be [N, T] packed rows, got shape {items.shape}")
        return
    for index, item in enumerate(items):
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) != 2:
            kind = type(item).__name__ + (f" of length {len(item)}" if hasattr(item, "__len__") else "")
            raise TypeError(f"DataLoader: item {index} should be an (ids, labels) pair, got {kind}")
        _check_token_ids(item[0], f"sequence {index}")
        _check_token_ids(item[1], f"labels {index}", length=len(item[0]))


class DataLoader:
    """Seeded batches over a list of ``(ids, labels)`` pairs (or an ``[N, T]`` array of packed rows).

    Epoch ``e`` visits the items in the order ``permutation(seed, e)``; batch ``i`` holds stream
    positions ``[i*batch_size, (i+1)*batch_size)``. So ``loader.batch(i)`` needs no hidden state: a
    run resumed at step ``s`` asks for batch ``s`` and gets the very batch it would have had.
    """

    def __init__(self, items, batch_size, seed=0, pad_id=0, shuffle=True, num_replicas=1, rank=0):
        if len(items) == 0:
            raise ValueError("DataLoader: no items")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an integer >= 1, got {batch_size!r}")
        _check_items(items)
        self.items, self.batch_size, self.seed = items, int(batch_size), int(seed)
        self.pad_id, self.shuffle = pad_id, shuffle
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DataLoader: rank must be in [0, num_replicas={num_replicas}), got {rank}")
        # Data parallelism (DistributedSampler's idea): rank r of R takes every R-th stream position
        # from r on, so the R ranks' batches i together are exactly the batch i of size R*batch_size
        # one process would see -- disjoint slices of the same shuffled epochs.
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self._order = (None, None)  # (epoch, permutation) cache

    def __len__(self):
        """Batches per epoch (rounded up)."""
        return -(-len(self.items) // self.batch_size)

    def _index(self, position):
        epoch, offset = divmod(position, len(self.items))
        if not self.shuffle:
            return offset
        if self._order[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
            self._order = (epoch, order)
        return int(self._order[1][offset])

    def batch(self, index):
        """``(input_ids, labels)``, both int64 ``[B, T]`` arrays (batches wrap across epochs)."""
        start = index * self.batch_size
        return self._collate([self.items[self._index(p * self.num_replicas + self.rank)]
                              for p in range(start, start + self.batch_size)])

    def _collate(self, picked):
        if isinstance(self.items, np.ndarray):  # packed rows: every token is a target
            rows = np.stack(picked)
            return rows, rows.copy()
        return pad_batch([ids for ids, _ in picked], self.pad_id, [lab for _, lab in picked])

    def __iter__(self):
        """One epoch in order ``permutation(seed, 0)``, each item once (the last batch may be short)."""
        mine = range(self.rank, len(self.items), self.num_replicas)  # all of them with one process
        for start in range(0, len(mine), self.batch_size):
            yield self._collate([self.items[self._index(p)] for p in mine[start:start + self.batch_size]])


def task_loader(tokenizer, task, split="train", batch_size=16, seed=0, shuffle=True):
    """A ``DataLoader`` over a task's encoded examples."""
    examples = getattr(get_task(task), split)
    if not examples:
        raise ValueError(f"task {get_task(task).name!r} has no {split!r} examples")
    return DataLoader([encode_example(tokenizer, ex) for ex in examples], batch_size, seed,
                      tokenizer.pad_token_id, shuffle)


def corpus_loader(tokenizer, n_documents, block_size=128, batch_size=16, seed=0, world=None):
    """Packed base-corpus blocks for pretraining (documents from ``seed``)."""
    stream = []
    for doc in corpus_documents(n_documents, seed, world):
        stream += encode_document(tokenizer, doc)
    return DataLoader(pack(stream, block_size), batch_size, seed, tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------
# transformers' data collators (transformers.data.data_collator), for the Hugging Face tutorials'
# loops: ``DataLoader(dataset, collate_fn=DataCollatorForLanguageModeling(tokenizer, mlm=False))``.
# They batch what a tokenizer returned: ``return_tensors="pt"`` gives minilora Tensors, "np" arrays.
# ----------------------------------------------------------------------------------------------
def _check_return_tensors(return_tensors):
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"Framework '{return_tensors}' not recognized!")  # transformers' words
    return return_tensors


def _as_returned(array, return_tensors):
    if return_tensors == "np":
        return array
    return tensor(array)


def _collate_ids(examples, tokenizer, pad_to_multiple_of, return_tensors):
    """Rows of ids (lists, arrays or Tensors) as one [B, T] batch (transformers' ``_torch_collate_batch``):
    stacked when of one length (and a multiple of ``pad_to_multiple_of``), else padded with
    ``tokenizer.pad_token_id`` on ``tokenizer.padding_side``. Lists become int64; arrays and Tensors
    keep the first row's dtype."""
    rows = [np.asarray(e, dtype=np.int64) if isinstance(e, (list, tuple)) else np.asarray(_host_array(e))
            for e in examples]
    width = max(len(r) for r in rows)
    if pad_to_multiple_of is not None and width % pad_to_multiple_of:
        width = (width // pad_to_multiple_of + 1) * pad_to_multiple_of
    if all(len(r) == width for r in rows):
        return _as_returned(np.stack(rows), return_tensors)
    if tokenizer.pad_token is None:
        raise ValueError("You are attempting to pad samples but the tokenizer you are using"
                         f" ({type(tokenizer).__name__}) does not have a pad token.")
    batch = np.full((len(rows), width), tokenizer.pad_token_id, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        if tokenizer.padding_side == "right":
            batch[i, :len(row)] = row
        else:
            batch[i, width - len(row):] = row
    return _as_returned(batch, return_tensors)


def _host_array(value):
    return value.cpu().numpy() if hasattr(value, "cpu") else value


@dataclasses.dataclass
class DataCollatorForLanguageModeling:
    """transformers' collator for language modeling. ``mlm=False`` (causal LM, what minilora trains): the
    examples padded into a batch (dicts through ``tokenizer.pad``, plain rows of ids on the tokenizer's
    ``padding_side``; ``pad_to_multiple_of`` rounds the length up), and ``labels`` = a copy of ``input_ids``
    with every ``pad_token_id`` set to -100 -- also real tokens that share the pad's id (after
    ``tokenizer.pad_token = tokenizer.eos_token`` the eos tokens are not learnt, as in transformers).
    The model shifts the labels itself.

    ``mlm=True`` (the default, BERT-style masking; the tokenizer needs a mask token): each token that is not
    special is picked with ``mlm_probability``; labels keep only the picked ones (the rest -100); of the
    picked, ``mask_replace_prob`` become the mask token, ``random_replace_prob`` a random token id, the rest
    stay. The draws are transformers' (``torch_mask_tokens`` / ``numpy_mask_tokens``), in its order, from
    minilora's torch-identical generator (``return_tensors="pt"``) or NumPy's (``"np"``): with ``seed`` (its
    own generator, created on the first call) or the global one, the same masks as there, bit for bit.
    ``whole_word_mask=True``: a picked token takes its whole word with it (tokens whose character spans touch,
    read from each example's ``offset_mapping``: tokenize with ``return_offsets_mapping=True``); only a word's
    first token is drawn, and every picked token becomes the mask token (transformers' warning and rule)."""
    tokenizer: object
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int = None
    return_tensors: str = "pt"
    seed: int = None

    def __post_init__(self):
        if self.mlm:
            if getattr(self.tokenizer, "mask_token", None) is None:
                raise ValueError("This tokenizer does not have a mask token which is necessary for masked language "
                                 "modeling. You should pass `mlm=False` to train on causal language modeling instead.")
            if self.mlm_probability is None or self.mlm_probability < 0 or self.mlm_probability > 1:
                raise ValueError("mlm_probability should be between 0 and 1.")
            self.mlm_probability = float(self.mlm_probability)
        elif self.whole_word_mask:
            raise ValueError("Whole word masking can only be used with mlm=True."
                             "If you want to use whole word masking, please set mlm=True.")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("The sum of mask_replace_prob and random_replace_prob should not exceed 1")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} should be between 0 and 1.")
            setattr(self, name, float(getattr(self, name)))
        if self.whole_word_mask:
            self._whole_words_only()
        # with a seed: this collator's own generator, made on the first call in each process (as transformers)
        self.generator, self._generator_pid = None, None

    def __call__(self, features, return_tensors=None):
        return_tensors = _check_return_tensors(return_tensors or self.return_tensors)
        if isinstance(features[0], Mapping):
            batch = self.tokenizer.pad(features, return_tensors=return_tensors,
                                       pad_to_multiple_of=self.pad_to_multiple_of)
        else:
            batch = {"input_ids": _collate_ids(features, self.tokenizer, self.pad_to_multiple_of, return_tensors)}
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        offset_mapping = batch.pop("offset_mapping", None)
        if self.mlm:
            batch["input_ids"], batch["labels"] = self._mask_tokens(batch["input_ids"], special_tokens_mask,
                                                                    return_tensors, offset_mapping)
            return batch
        labels = batch["input_ids"].clone() if return_tensors == "pt" else np.copy(batch["input_ids"])
        if self.tokenizer.pad_token_id is not None:
            labels[labels == self.tokenizer.pad_token_id] = IGNORE_INDEX
        batch["labels"] = labels
        return batch

    def _whole_words_only(self):
        """transformers' whole-word settings: its warnings, and mask tokens only (no random replacement)."""
        if not getattr(self.tokenizer, "is_fast", True):
            warnings.warn("Whole word masking depends on offset mapping which is only natively available with fast "
                          "tokenizers.", UserWarning)
        if self.mask_replace_prob < 1:
            warnings.warn("Random token replacement is not supported with whole word masking. "
                          "Setting mask_replace_prob to 1.")
            self.mask_replace_prob, self.random_replace_prob = 1.0, 0.0

    def _mask_tokens(self, inputs, special_tokens_mask, return_tensors, offset_mapping=None):
        """BERT's masking, transformers' draws in its order: who is picked (never a special token; with
        whole_word_mask only a word's first token, then the rest of its word joins), who of them becomes
        the mask token, who of the rest a random token. ``inputs`` is changed in place."""
        draws = _TorchDraws(self._generator(return_tensors, _TorchDraws)) if return_tensors == "pt" else \
            _NumpyDraws(self._generator(return_tensors, _NumpyDraws))
        if special_tokens_mask is None:
            special_tokens_mask = [self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                                   for row in inputs.tolist()]
        labels = draws.copy(inputs)
        undrawn = special_tokens_mask
        if self.whole_word_mask:
            word_ids, undrawn = _word_ids_and_undrawn(offset_mapping, special_tokens_mask)
        picked = draws.bernoulli(draws.probabilities(labels.shape, self.mlm_probability, undrawn))
        if self.whole_word_mask:
            picked = draws.as_mask(_whole_words(word_ids, np.asarray(_host_array(picked))))
        labels[~picked] = IGNORE_INDEX
        replaced = draws.bernoulli(draws.probabilities(labels.shape, self.mask_replace_prob)) & picked
        inputs[replaced] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        of_the_rest = self.random_replace_prob / (1 - self.mask_replace_prob)  # 0.1 / 0.2: half of the rest
        randomized = draws.bernoulli(draws.probabilities(labels.shape, of_the_rest)) & picked & ~replaced
        inputs[randomized] = draws.token_ids(len(self.tokenizer), randomized)
        return inputs, labels

    def generator_state(self):
        """minilora's (transformers has no such call): the seeded generator's state, or None (no seed, or no draw
        yet). ``minilora.train`` keeps it in a checkpoint: the masks go on from epoch to epoch, and replaying the
        current epoch's batches from a fresh generator would leave it where the run was only in its first epoch."""
        if self.generator is None:
            return None
        if isinstance(self.generator, Generator):
            return {"pt": self.generator.get_state().numpy()}
        return {"np": self.generator.bit_generator.state}

    def set_generator_state(self, state):
        """Put back what ``generator_state`` returned (in the main process: a DataLoader's workers hold copies)."""
        if state is None:
            self.generator, self._generator_pid = None, None
            return
        (kind, value), = state.items()
        generator = _TorchDraws.seeded(0) if kind == "pt" else _NumpyDraws.seeded(0)
        if kind == "pt":
            generator.set_state(tensor(np.asarray(value, dtype=np.uint8)))
        else:
            generator.bit_generator.state = value
        self.generator, self._generator_pid = generator, (os.getpid(), None)

    def _generator(self, return_tensors, draws):
        """The seeded generator (made once per process, ``seed + worker id`` in a DataLoader worker, as
        transformers), or None: the global one."""
        if self.seed is None:
            return None
        worker = get_worker_info()
        # the process, as transformers tells them apart (os.getpid()); a DataLoader's workers run in this
        # process (utils/data_workers.py), each with its own copy of the collator, so the worker id counts too
        process = (os.getpid(), None if worker is None else worker.id)
        if not isinstance(self.generator, draws.generator_type()) or self._generator_pid != process:
            seed = self.seed
            if worker is not None:
                seed += worker.id
            elif multiprocessing.current_process().name != "MainProcess":
                raise ValueError("Worker process information is not available for seeding the generator: the "
                                 "`seed` parameter works in one process or in a DataLoader's workers")
            self.generator, self._generator_pid = draws.seeded(seed), process
        return self.generator


def _word_ids_and_undrawn(offset_mapping, special_tokens_mask):
    """transformers' ``_calc_word_ids_and_prob_mask``: each token's word number in its row (-1: a special
    token) and the tokens not drawn (all but each word's first). A token starts a word when it is not special
    and either begins where the previous token did not end (a space between) or follows a special token."""
    if offset_mapping is None:
        raise ValueError("whole_word_mask=True needs each example's offset_mapping: tokenize with "
                         "return_offsets_mapping=True (and pad every example to one length)")
    offsets = np.asarray(_host_array(offset_mapping))
    special = np.asarray(_host_array(special_tokens_mask))
    previous_ends = np.roll(offsets[:, :, 1], 1, axis=1)
    previous_ends[:, 0] = -1
    previous_special = np.roll(special, 1, axis=1)
    previous_special[:, 0] = 0
    special = special.astype(bool)
    starts_word = ~special & ((offsets[:, :, 0] != previous_ends) | (previous_special == 1))
    word_ids = np.cumsum(starts_word, axis=1)
    word_ids[special] = -1
    return word_ids, ~starts_word


def _whole_words(word_ids, picked):
    """transformers' ``_whole_word_mask``: every token of a word any of whose tokens was picked (specials never)."""
    words = word_ids != -1
    unique_ids = word_ids + np.arange(word_ids.shape[0])[:, None] * (word_ids.max() + 1)  # one numbering per batch
    return np.isin(unique_ids, unique_ids[picked & words]) & words


class _TorchDraws:
    """transformers' ``torch_mask_tokens`` draws, on minilora's torch-identical generator."""

    def __init__(self, generator):
        self.generator = generator

    @staticmethod
    def generator_type():
        return Generator

    @staticmethod
    def seeded(seed):
        return Generator().manual_seed(seed)

    @staticmethod
    def copy(inputs):
        return inputs.clone()

    @staticmethod
    def probabilities(shape, p, excluded=None):
        chances = full(tuple(shape), p)  # float32, as torch.full(shape, float)
        if excluded is not None:
            excluded = excluded.bool() if hasattr(excluded, "bool") else tensor(excluded, dtype=bool)
            chances.masked_fill_(excluded, 0.0)
        return chances

    def bernoulli(self, chances):
        return bernoulli(chances, generator=self.generator).bool()

    @staticmethod
    def as_mask(picked):
        return tensor(picked, dtype=bool)  # (transformers' torch.BoolTensor of the NumPy mask)

    def token_ids(self, vocabulary, where):
        return randint(vocabulary, tuple(where.shape), dtype=int64, generator=self.generator)[where]


class _NumpyDraws:
    """transformers' ``numpy_mask_tokens`` draws: binomial(1, p) from the seeded ``default_rng`` or NumPy's
    global generator, then only as many token ids as are replaced."""

    def __init__(self, generator):
        self.random = generator if generator is not None else np.random

    @staticmethod
    def generator_type():
        return np.random.Generator

    @staticmethod
    def seeded(seed):
        return np.random.default_rng(seed)

    @staticmethod
    def copy(inputs):
        return np.copy(inputs)

    @staticmethod
    def probabilities(shape, p, excluded=None):
        chances = np.full(shape, p)
        if excluded is not None:
            chances[np.asarray(_host_array(excluded)).astype(bool)] = 0
        return chances

    def bernoulli(self, chances):
        return self.random.binomial(1, chances, size=chances.shape).astype(bool)

    @staticmethod
    def as_mask(picked):
        return picked

    def token_ids(self, vocabulary, where):
        draw = self.random.integers if isinstance(self.random, np.random.Generator) else self.random.randint
        return draw(low=0, high=vocabulary, size=np.count_nonzero(where), dtype=np.int64)


@dataclasses.dataclass
class DataCollatorWithPadding:
    """transformers' collator that pads a list of tokenized examples with ``tokenizer.pad`` (``padding``,
    ``max_length``, ``pad_to_multiple_of`` as there) and renames ``label`` / ``label_ids`` to ``labels``."""
    tokenizer: object
    padding: object = True
    max_length: int = None
    pad_to_multiple_of: int = None
    return_tensors: str = "pt"

    def __call__(self, features):
        batch = self.tokenizer.pad(features, padding=self.padding, max_length=self.max_length,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=self.return_tensors)
        for old in ("label", "label_ids"):
            if old in batch:
                batch["labels"] = batch.pop(old)
        return batch


@dataclasses.dataclass
class DataCollatorForSeq2Seq:
    """transformers' collator for examples that carry their own ``labels`` (supervised fine-tuning with the
    prompt's labels -100, as the Alpaca-LoRA recipe): the other keys padded by ``tokenizer.pad``, the labels
    padded with ``label_pad_token_id`` (-100) on the tokenizer's ``padding_side`` to the same length
    (``max_length`` with ``padding="max_length"``, rounded up to ``pad_to_multiple_of``), as int64. Without
    labels ``batch["labels"]`` is None, as there. ``model`` is taken for transformers' signature: only
    encoder-decoder models (none here) make ``decoder_input_ids`` from it."""
    tokenizer: object
    model: object = None
    padding: object = True
    max_length: int = None
    pad_to_multiple_of: int = None
    label_pad_token_id: int = IGNORE_INDEX
    return_tensors: str = "pt"

    def __call__(self, features, return_tensors=None):
        return_tensors = return_tensors or self.return_tensors
        label_name = "label" if "label" in features[0] else "labels"
        labels = [f[label_name] for f in features] if label_name in features[0] else None
        if labels is not None and all(label is None for label in labels):
            labels = None
        batch = self.tokenizer.pad([{k: v for k, v in f.items() if k != label_name} for f in features],
                                   padding=self.padding, max_length=self.max_length,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=return_tensors)
        if labels is None:
            batch["labels"] = None
            return batch
        rows = [np.asarray(_host_array(label)).tolist() for label in labels]
        if self.padding not in (False, "do_not_pad"):
            width = self.max_length if self.padding == "max_length" and self.max_length is not None else \
                max(len(row) for row in rows)
            if self.pad_to_multiple_of is not None:
                width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
            fill = [[self.label_pad_token_id] * (width - len(row)) for row in rows]
            rows = [row + pad if self.tokenizer.padding_side == "right" else pad + row for row, pad in zip(rows, fill)]
        batch["labels"] = _as_returned(np.array(rows, dtype=np.int64), return_tensors)
        return batch


def default_data_collator(features, return_tensors="pt"):
    """transformers' ``default_data_collator``: examples (dicts, or objects read with ``vars``) of one
    length stacked key by key, no padding; ``label`` (one number per example: int64, or float32 /
    NumPy's float64... as transformers) or ``label_ids`` becomes ``labels``; strings and None are dropped.
    Other keys take the dtype ``torch.tensor`` (``return_tensors="pt"``) or ``np.array`` ("np") infers."""
    if return_tensors not in ("pt", "np"):
        return None  # transformers' function falls through for any other value
    features = [f if isinstance(f, Mapping) else vars(f) for f in features]
    first, batch = features[0], {}
    label_key = next((k for k in ("label", "label_ids") if first.get(k) is not None), None)
    if label_key is not None:
        batch["labels"] = _stacked([f[label_key] for f in features], return_tensors, labels=True)
    for key, value in first.items():
        if key not in ("label", "label_ids") and value is not None and not isinstance(value, str):
            batch[key] = _stacked([f[key] for f in features], return_tensors)
    return batch


def _stacked(values, return_tensors, labels=False):
    """One key's values as a batch: Tensors and arrays stacked with their dtype; Python numbers (lists of
    them) as torch.tensor / np.array infer, except that integer labels are int64 and float labels float32."""
    from .tensor import Tensor, tensor
    if isinstance(values[0], Tensor):
        from .ops import stack
        return stack(values) if return_tensors == "pt" else np.stack([v.numpy() for v in values])
    if isinstance(values[0], np.ndarray):
        return _as_returned(np.stack(values), return_tensors)
    array = np.array(values)
    if labels and array.dtype.kind in "iuf":
        return _as_returned(array.astype(np.int64 if array.dtype.kind in "iu" else np.float32), return_tensors)
    return array if return_tensors == "np" else tensor(values)


@dataclasses.dataclass
class DefaultDataCollator:
    """``default_data_collator`` as an object with its ``return_tensors`` chosen up front."""
    return_tensors: str = "pt"

    def __call__(self, features, return_tensors=None):
        return default_data_collator(features, return_tensors or self.return_tensors)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def _cut(text, stop):
    """``text`` up to (not including) the first ``stop``."""
    return text.split(stop, 1)[0] if stop else text


def predict(model, tokenizer, prompts, max_new_tokens=16, stop=None):
    """Greedy continuations of ``prompts`` (strings), cut at EOS and before ``stop``.

    Prompts of equal length are decoded together as one batch: with no padding there is nothing to
    mask, and a batch of 40 costs about as much as one prompt. A ``stop`` that is one token also
    ends generation early (it is passed to ``generate`` as a second end-of-sequence id)."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    end_ids = [tokenizer.eos_token_id]
    stop_ids = tokenizer.encode(stop, add_special_tokens=False) if stop else []
    if len(stop_ids) == 1:
        end_ids += stop_ids
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    outputs = [None] * len(prompts)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            for length, rows in by_length.items():
                ids = np.array([encoded[i] for i in rows], dtype=np.int64)
                out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=end_ids)
                out = np.asarray(out.numpy(force=True) if hasattr(out, "numpy") else out)
                for row, i in enumerate(rows):
                    new = [int(t) for t in out[row, length:]]
                    if tokenizer.eos_token_id in new:
                        new = new[:new.index(tokenizer.eos_token_id)]
                    outputs[i] = _cut(tokenizer.decode(new, skip_special_tokens=True), stop)
    finally:
        model.train(was_training)
    return outputs


@dataclasses.dataclass
class EvalResult:
    """Exact-match accuracy of greedy generations, with the first few (prompt, target, output)."""
    task: str
    accuracy: float
    correct: int
    total: int
    samples: list

    def __float__(self):
        return self.accuracy

    def __str__(self):
        return f"{self.task}: {self.correct}/{self.total} = {100 * self.accuracy:.1f}% exact match"


def evaluate(model, tokenizer, task, n=None, split="eval", samples=5):
    """Exact-match accuracy of ``model`` on the first ``n`` examples (all if ``None``) of a split.

    An output counts as correct when it equals the answer after stripping surrounding whitespace."""
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise ValueError(f"evaluate: n must be None (all examples) or an integer >= 1, got {n!r}")
    task = get_task(task)
    examples = list(getattr(task, split))[:n]
    if not examples:
        raise ValueError(f"task {task.name!r} has no {split!r} examples")
    outputs = predict(model, tokenizer, [ex.prompt for ex in examples], task.max_new_tokens, task.stop)
    hits = [out.strip() == ex.answer.strip() for out, ex in zip(outputs, examples)]
    shown = [(ex.prompt, ex.answer, out) for ex, out in zip(examples[:samples], outputs)]
    return EvalResult(task.name, sum(hits) / len(hits), sum(hits), len(hits), shown)


def mean_loss(model, loader):
    """Mean next-token loss over one pass of ``loader``, weighted by the number of target tokens
    of each batch, with the model in eval mode and no graph built."""
    was_training = getattr(model, "training", False)
    model.eval()
    total, count = 0.0, 0
    try:
        with no_grad():
            for input_ids, labels in loader:
                n = int((labels[:, 1:] != IGNORE_INDEX).sum())
                total += model(input_ids, labels=labels).loss.item() * n
                count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


def corpus_loss(model, tokenizer, n_documents=200, block_size=128, batch_size=16, seed=10_000):
    """Mean next-token loss on held-out base-corpus text (documents from a seed the pretraining did
    not use). Its rise after fine-tuning measures forgetting; ``exp(loss)`` is the perplexity."""
    return mean_loss(model, corpus_loader(tokenizer, n_documents, block_size, batch_size, seed))
