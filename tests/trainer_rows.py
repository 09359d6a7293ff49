"""The token rows and the padding collator the Trainer tests feed to transformers' Trainer and minilora's
alike (tests/test_trainer_r12.py, tests/test_training_arguments_r14.py). Drawn with torch's generator, so
importing this module skips the calling test file when torch is not installed."""
import warnings

import pytest

torch = pytest.importorskip("torch")

VOCAB = 64


def examples(count=11, ragged=True):
    """Token rows of 5-7 tokens (or 6), each with a "text" column the model does not take and one -100."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(count):
        n = 5 + i % 3 if ragged else 6
        ids = torch.randint(0, VOCAB, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * n, "labels": ids[:2] + [-100] + ids[3:], "text": "x"})
    return rows


def collator(tensor):
    """Right-pads a batch of rows to its longest (ids 0, mask 0, labels -100) with ``tensor`` (torch's or
    minilora's)."""
    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        pad = [n - len(f["input_ids"]) for f in features]
        return {"input_ids": tensor([f["input_ids"] + [0] * p for f, p in zip(features, pad)]),
                "attention_mask": tensor([f["attention_mask"] + [0] * p for f, p in zip(features, pad)]),
                "labels": tensor([f["labels"] + [-100] * p for f, p in zip(features, pad)])}
    return collate


def save_tiny_llama(folder):
    """A one-layer Llama of VOCAB tokens, drawn by transformers from seed 0, saved into ``folder``."""
    import transformers
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder
