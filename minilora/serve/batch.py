"""Batched decoding over a ragged KV cache: requests of different lengths advance one token per forward.

Each request is prefilled alone (its whole prompt in one forward), then joins the running batch. The
batch keeps ONE KV cache of shape [rows, kv_heads, L, head_dim] per layer, each row LEFT-padded to
the longest row's length L, and an attention mask [rows, L] of 1 (real) / 0 (padding)::

    row 0 (13 tokens so far):  k k k k k k k k k k k k k
    row 1 ( 5 tokens so far):  . . . . . . . . k k k k k      <- padding on the left, masked out
    row 2 ( 9 tokens so far):  . . . . k k k k k k k k k

A decode step feeds every row its newest token ([rows, 1]) at its OWN position (its count of real
tokens, so a padded row's positions start at 0 as when it ran alone), the mask grows by one column of
ones, and the cache by one position. A row that finishes leaves (its cache row is dropped, and the
columns that only padding still uses are trimmed), a new one joins (the shorter side padded on the
left). Padded keys get -inf in the attention scores, so every row computes what it would alone.

Rows name their adapter: the batch runs ``model(..., adapter_names=[...])`` (ops.bgmv), so rows for
different adapters share every base GEMM. ops.bgmv takes each layer's adapters stacked into one array;
the batch keeps those stacks (``AdapterStacks``) instead of copying every adapter's weights on every
step, and drops them when the adapter set changes (``adapters_changed()``, which the engine calls after
a load or unload). So while a batch serves a model, its adapters change only through the engine;
``close()`` hands the model back (training it afterwards never meets a stale stack).
"""
import numpy as np

from .. import ops
from ..tensor import Tensor, no_grad
from ..lora.layers import BASE_ADAPTER

__all__ = ["RaggedBatch", "AdapterStacks", "last_logits"]


def _pad_left(t, width):
    """``t`` [B, H, L, D] with ``width`` zero positions prepended along L."""
    if width == 0:
        return t
    xp = t.device.xp
    zeros = Tensor._make(xp.zeros((t.shape[0], t.shape[1], width, t.shape[3]), dtype=t.dtype), t.device, False, None)
    return ops.cat([zeros, t], axis=2)


def last_logits(model, ids, adapters, **kwargs):
    """One cached forward of ``ids`` [rows, T], row i through adapter ``adapters[i]`` (None: the base model):
    the last position's logits [rows, vocab] (float64 NumPy) and the cache."""
    if hasattr(model, "peft_config"):  # always name them: else the active adapter would apply
        kwargs["adapter_names"] = [BASE_ADAPTER if a is None else a for a in adapters]
    with no_grad():
        out = model(ids, use_cache=True, **kwargs)
    return out.logits[:, -1, :].numpy(force=True).astype(np.float64), out.past_key_values


class AdapterStacks(dict):
    """``{LoRA layer: its adapters stacked for ops.bgmv}``, one dict shared by the served model's layers
    (their ``stack_cache``). A layer fills its entry on the first forward that needs it; ``builds``
    counts them: once per layer each time the adapter set changes, never per step."""

    def __init__(self):
        super().__init__()
        self.builds = 0

    def __setitem__(self, layer, stacks):
        self.builds += 1
        super().__setitem__(layer, stacks)


class RaggedBatch:
    """The running batch of a server: rows join, step together, and leave.

    ``model`` is a causal LM (a ``PeftModel`` when rows use adapters); ``add(ids, adapter)`` prefills a
    prompt and returns its next-token logits; ``step(tokens)`` feeds each row one token and returns
    the logits [rows, vocab] (float64 NumPy); ``remove(row)`` drops a row. Row numbers shift down
    when an earlier row leaves, as in a list.
    """

    def __init__(self, model):
        self.model = model
        self.adapters = []  # one adapter name (or None: the base model) per row
        self.mask = np.zeros((0, 0), dtype=np.int64)
        self.cache = None
        self.stacks = AdapterStacks()
        self.adapters_changed()

    def adapters_changed(self, model=None):
        """After an adapter was loaded or unloaded (``model``: the model served from now on, if it is
        another object): the stacked adapters are rebuilt on the next step, by every LoRA layer."""
        self.model = self.model if model is None else model
        self.stacks.clear()
        self._attach(self.stacks)

    def close(self):
        """Stop keeping stacks for the model's layers: it may be trained (changed in place) again."""
        self.stacks.clear()
        self._attach(None)

    def _attach(self, stacks):
        for module in self.model.modules():
            if hasattr(module, "stack_cache"):  # a LoRA layer that can serve per-row adapters
                module.stack_cache = stacks

    def __len__(self):
        return len(self.adapters)

    def _forward(self, ids, adapters, **kwargs):
        return last_logits(self.model, ids, adapters, **kwargs)

    def add(self, prompt_ids, adapter=None):
        """Prefill ``prompt_ids`` alone and append it as the last row; returns its next-token logits [vocab]."""
        ids = np.asarray(prompt_ids, dtype=np.int64)[None, :]
        logits, cache = self._forward(ids, [adapter])
        P, L = ids.shape[1], self.mask.shape[1]
        if self.cache is None:
            self.cache, self.mask = cache, np.ones((1, P), dtype=np.int64)
        else:
            width = max(P, L)
            for layer in range(len(cache)):
                for ours, theirs in ((self.cache.keys, cache.keys), (self.cache.values, cache.values)):
                    ours[layer] = ops.cat([_pad_left(ours[layer], width - L), _pad_left(theirs[layer], width - P)], axis=0)
            row = np.concatenate([np.zeros(width - P, np.int64), np.ones(P, np.int64)])
            self.mask = np.concatenate([np.pad(self.mask, ((0, 0), (width - L, 0))), row[None, :]], axis=0)
        self.adapters.append(adapter)
        return logits[0]

    def step(self, tokens):
        """Feed row i the token ``tokens[i]``; returns the next-token logits [rows, vocab]."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(len(self), 1)
        positions = self.mask.sum(axis=1, keepdims=True)  # each row's own next position
        self.mask = np.concatenate([self.mask, np.ones((len(self), 1), np.int64)], axis=1)
        logits, self.cache = self._forward(tokens, self.adapters, attention_mask=self.mask,
                                           position_ids=positions, past_key_values=self.cache)
        return logits

    def remove(self, row):
        """Drop row ``row``; trim the leading cache positions that now hold only padding."""
        keep = np.array([i for i in range(len(self)) if i != row], dtype=np.int64)
        del self.adapters[row]
        if not len(self):
            self.cache, self.mask = None, np.zeros((0, 0), dtype=np.int64)
            return
        start = int(np.argmax(self.mask[keep].any(axis=0)))  # first column some remaining row uses
        self.mask = self.mask[keep, start:]
        index = self.cache.keys[0].device.xp.asarray(keep)
        for layer in range(len(self.cache)):
            self.cache.keys[layer] = self.cache.keys[layer][index][:, :, start:]
            self.cache.values[layer] = self.cache.values[layer][index][:, :, start:]

    def cache_length(self):
        """Positions held per row (the longest row's length: the rest is padding)."""
        return self.mask.shape[1]
