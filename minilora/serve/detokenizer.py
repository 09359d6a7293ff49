"""A request's text, token by token, as vLLM's v1 engine makes it: its incremental detokenizer
(vllm/v1/engine/detokenizer.py, ``SlowIncrementalDetokenizer`` over ``detokenize_incrementally`` of
vllm/tokenizers/detokenizer_utils.py, itself text-generation-inference's), and its stop-string rules
(``BaseIncrementalDetokenizer.update``, ``check_stop_strings``, ``get_next_output_text``).

Each new token is decoded in a short window, not with the whole text again: the ids from
``prefix_offset`` (a few tokens of context: a decoder that strips a word's leading space, or adds
one, sees what came before) to the end, less the text of ``prefix_offset:read_offset``. A window
whose text ends in U+FFFD is a character not complete yet (a byte-level or byte-fallback token):
nothing comes out and the offsets stay, so the next token decodes it whole. The cost of a token is
constant, however long the text (``decoded_ids`` counts the ids decoded, for the tests).
"""

from ..tokenizer import token_bytes

__all__ = ["IncrementalDetokenizer", "check_stop_strings", "token_bytes_or_text"]

# vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET: the prompt tokens that give the first new token
# its context ("5 is an arbitrary value that should work for all tokenizers"); two more are taken in
# case some of them are special tokens that decode to nothing.
INITIAL_OFFSET = 5


class IncrementalDetokenizer:
    """The generated text of one request. ``update(token, stop_terminated)`` adds a token and returns the
    stop string it completed (or None); ``next_delta(finished)`` is the text to send now; ``output_text``
    the text so far."""

    def __init__(self, tokenizer, prompt_ids, skip_special_tokens=True, text_vocab=None, stop=(),
                 include_stop_str_in_output=False, min_tokens=0):
        self.tokenizer, self.skip_special_tokens, self.text_vocab = tokenizer, skip_special_tokens, text_vocab
        self.special = set(getattr(tokenizer, "all_special_ids", ()) or ()) if skip_special_tokens else set()
        # convert_prompt_ids_to_tokens: the prompt's last tokens, read_offset after them, prefix_offset 5 before
        self.ids = self._text_ids(prompt_ids[-(INITIAL_OFFSET + 2):])
        self.context_ids = list(self.ids)  # (the tokens before the first new one, for text offsets)
        self.read_offset = len(self.ids)
        self.prefix_offset = max(self.read_offset - INITIAL_OFFSET, 0)
        self.stop = [s for s in stop if s]
        self.include_stop_str_in_output, self.min_tokens = include_stop_str_in_output, min_tokens
        # vLLM holds back the characters that could still begin an excluded stop string
        self.stop_buffer_length = max(map(len, self.stop)) - 1 if self.stop and not include_stop_str_in_output else 0
        self.output_text = ""
        self.n_output = 0
        self.sent = 0  # characters of output_text already given by next_delta
        self.decoded_ids = 0

    def _text_ids(self, ids):
        """The ids that have text: a skipped special token (convert_ids_to_tokens drops it) and an id past
        the tokenizer (vLLM's "" token) add nothing to a window."""
        vocab = self.text_vocab
        return [i for i in ids if i not in self.special and (vocab is None or i < vocab)]

    def _decode(self, ids):
        self.decoded_ids += len(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def decode_next(self, token):
        """``detokenize_incrementally``: the new text ``token`` adds ("" while a character is incomplete)."""
        if not self._text_ids([token]):
            return ""
        self.ids.append(token)
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # a potential unfinished byte sequence: wait for the bytes after it
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return new_text[len(prefix_text):]

    def update(self, token, stop_terminated):
        """Add ``token``; the stop string it completes, if any (``output_text`` is cut there). A token that
        stopped the request (EOS, a stop_token_id) adds its text only with include_stop_str_in_output;
        stop strings are looked for only after ``min_tokens``, in the text that came after them."""
        self.n_output += 1
        check_from = len(self.output_text)
        if not stop_terminated or self.include_stop_str_in_output:
            self.output_text += self.decode_next(token)
        if self.min_tokens and self.n_output <= self.min_tokens:
            check_from = len(self.output_text)
        if not self.stop or self.n_output <= self.min_tokens:
            return None
        found = check_stop_strings(self.output_text, len(self.output_text) - check_from, self.stop,
                                   self.include_stop_str_in_output)
        if found is None:
            return None
        stop, cut = found
        if cut != -1:
            self.output_text = self.output_text[:cut]
        return stop

    def next_delta(self, finished):
        """``get_next_output_text(finished, delta=True)``: the new text, less the characters held back for
        a stop string until the request is finished."""
        end = len(self.output_text) - (0 if finished else self.stop_buffer_length)
        if end <= self.sent:
            return ""
        delta, self.sent = self.output_text[self.sent:end], end
        return delta


def check_stop_strings(output_text, new_char_count, stop, include_in_output):
    """vLLM's ``check_stop_strings``: ``(stop string, length to cut the text to, -1: none)`` or None. Only
    a stop string that ends in the last ``new_char_count`` characters counts (the text before was
    searched already); of several, the one that ends first, then the first in ``stop``."""
    if not new_char_count or not stop:
        return None
    best, best_at, best_end = None, 0, None
    for candidate in stop:
        at = output_text.find(candidate, max(len(output_text) + 1 - new_char_count - len(candidate), 0))
        if at != -1 and (best_end is None or at + len(candidate) < best_end):
            best, best_at, best_end = candidate, at, at + len(candidate)
    if best is None:
        return None
    if include_in_output:
        return best, (-1 if best_end >= len(output_text) else best_end)
    return best, best_at


def token_bytes_or_text(tokenizer, token, text_vocab=None):
    """The bytes one token stands for, read from its vocabulary entry where the tokenizer has a rule for that
    (a byte, a byte-level BPE token, a byte-fallback <0xNN> -- pieces of a character that decode alone to U+FFFD
    --, a SentencePiece ``▁a`` with its space, which decode drops), else its decoded text's; None for an id the
    tokenizer has no text for (the model's vocabulary padded past it)."""
    if text_vocab is not None and token >= text_vocab:
        return None
    raw = token_bytes(tokenizer, token)
    return raw if raw is not None else tokenizer.decode([token], skip_special_tokens=False).encode("utf-8")
