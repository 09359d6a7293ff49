"""Built-in data: deterministic, consistent with its world, disjoint splits, correct batching."""
import os
import re

import numpy as np
import pytest

from minilora import data
from minilora.tokenizer import ByteTokenizer
from minilora.data import (IGNORE_INDEX, DataLoader, Example, corpus_documents, encode_example,
                           get_task, make_world, pack, pad_batch)


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def docs(world):
    return corpus_documents(400, seed=0, world=world)


def test_world_and_corpus_are_deterministic(world):
    assert make_world() == world
    assert make_world(seed=5) != world
    assert corpus_documents(50, seed=3) == corpus_documents(50, seed=3)
    assert corpus_documents(50, seed=3) != corpus_documents(50, seed=4)


def test_world_names_are_unique(world):
    names = world.countries + list(world.capitals.values()) + [p.name for p in world.people]
    assert len(names) == len(set(names))


def test_corpus_states_only_true_facts(world, docs):
    """Every 'X lives in T.' / 'capital of C is T' sentence agrees with the world."""
    text = "\n".join(docs)
    town_of = {p.name: p.town for p in world.people}
    lives = re.findall(r"([A-Z][a-z]+ [A-Z][a-z]+) lives in ([A-Z][a-z]+)\.", text)
    assert lives and all(town_of[name] == town for name, town in lives)
    capitals = re.findall(r"The capital of ([A-Z][a-z]+) is ([A-Z][a-z]+)\.", text)
    assert capitals and all(world.capitals[c] == t for c, t in capitals)
    sums = re.findall(r"(\d+) \+ (\d+) = (\d+)\.", text)
    assert sums and all(int(a) + int(b) == int(c) for a, b, c in sums)


def test_qa_eval_asks_about_entities_never_fine_tuned_on(world):
    task = get_task("qa")
    names = [p.name for p in world.people] + world.countries
    mentioned = lambda examples: {n for n in names for ex in examples if n in ex.prompt}  # noqa: E731
    assert mentioned(task.train) and mentioned(task.eval)
    assert not mentioned(task.train) & mentioned(task.eval)
    assert len(task.eval) >= 50


def test_qa_answers_are_in_the_pretraining_corpus(world):
    """The knowledge is there to transfer: each eval fact is stated somewhere in the corpus."""
    text = "\n".join(corpus_documents(3000, seed=0, world=world))
    for p in world.people:
        assert f"{p.name} lives in {p.town}." in text or f"{p.name} has a house in {p.town}." in text


def test_reverse_is_new_and_its_splits_are_disjoint(docs):
    task = get_task("reverse")
    assert not {ex.prompt for ex in task.train} & {ex.prompt for ex in task.eval}
    assert all(ex.answer.split() == ex.prompt[len("Reverse: "):-1].split()[::-1] for ex in task.eval)
    # The corpus repeats lists in the same order (copying), never reversed.
    lists = re.findall(r"wrote a list: ([a-z, ]+)\. Then .* read the list out loud: ([a-z, ]+)\.",
                       "\n".join(docs))
    assert lists and all(first == second for first, second in lists)


def test_unknown_task_lists_the_choices():
    with pytest.raises(KeyError, match="facts.*qa.*reverse"):
        get_task("translate")


def test_encode_example_puts_the_loss_on_the_answer_only():
    ids, labels = encode_example(ByteTokenizer(), Example("Q: x?\nA:", " ok"))
    assert ids == [256] + list(b"Q: x?\nA:") + list(b" ok") + [257]
    assert labels == [IGNORE_INDEX] * 9 + list(b" ok") + [257]


def test_pad_batch_pads_right_with_ignored_labels():
    ids, labels = pad_batch([[5, 6, 7], [8]], pad_id=0, labels=[[-100, 6, 7], [8]])
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(labels, [[-100, 6, 7], [8, -100, -100]])
    assert ids.dtype == np.int64


def test_pack_cuts_blocks_and_drops_the_tail():
    blocks = pack(range(10), 4)
    np.testing.assert_array_equal(blocks, [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ValueError, match="do not fill one block"):
        pack(range(3), 4)


def test_dataloader_is_a_pure_function_of_seed_and_index():
    items = np.arange(30).reshape(10, 3)
    a, b = DataLoader(items, 4, seed=1), DataLoader(items, 4, seed=1)
    assert [a.batch(i)[0].tolist() for i in (5, 0, 3)] == [b.batch(i)[0].tolist() for i in (5, 0, 3)]
    assert DataLoader(items, 4, seed=2).batch(0)[0].tolist() != a.batch(0)[0].tolist()
    first_epoch = np.concatenate([a.batch(i)[0][:, 0] for i in range(5)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(0, 30, 3))  # each row once per epoch
    assert sorted(np.concatenate([x[:, 0] for x, _ in a]).tolist()) == list(range(0, 30, 3))


def test_task_loader_batches(tmp_path):
    loader = data.task_loader(ByteTokenizer(), "qa", batch_size=8)
    ids, labels = loader.batch(0)
    assert ids.shape == labels.shape and ids.shape[0] == 8
    assert ((labels == IGNORE_INDEX) | (labels == ids)).all()
    assert (labels[:, 0] == IGNORE_INDEX).all()


@pytest.fixture(scope="module")
def base():
    from minilora.models import BASE_DIR, load_base
    if not os.path.isfile(os.path.join(BASE_DIR, "model.safetensors")):
        pytest.skip("the pretrained base is not built yet (python -m minilora.pretrain)")
    return load_base()


@pytest.mark.parametrize("task", [t for t, v in data.TASKS.items() if v.downstream])
def test_shipped_base_cannot_do_the_downstream_tasks(base, task):
    assert data.evaluate(base, ByteTokenizer(), task, n=24).accuracy <= 0.05


def test_shipped_base_knows_its_facts(base):
    assert data.evaluate(base, ByteTokenizer(), "facts", n=24).accuracy >= 0.9
