"""``minilora generate``: continue a prompt from the command line.

The generation itself (``generate``, the sampling filters, ``TextStreamer``) lives in
``minilora/nn/generation.py``, next to the models whose ``generate`` method runs it; it is
re-exported here, so ``from minilora.generate import generate`` keeps working.
"""
import argparse
import os

from .nn.generation import (DEFAULTS, GenerationConfig, TextIteratorStreamer, TextStreamer,  # noqa: F401
                            apply_repetition_penalty, generate, sample_next_token, top_k_filter, top_p_filter)

__all__ = ["generate", "sample_next_token", "top_k_filter", "top_p_filter", "apply_repetition_penalty",
           "TextStreamer", "TextIteratorStreamer", "GenerationConfig"]


# ----------------------------------------------------------------------------------------------
# `minilora generate`
# ----------------------------------------------------------------------------------------------
def add_cli_arguments(parser, name):
    from .cli import device_name, non_negative_int, positive_float, positive_int

    def top_p_value(text):
        value = positive_float(text)
        if value > 1:
            raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
        return value
    parser.description = ("Continue a prompt with a model: the base model shipped with minilora, a "
                          "Hugging Face-format Llama folder, and optionally a LoRA adapter on top "
                          "(e.g. the one `minilora demo` or `minilora train` saved).")
    parser.add_argument("prompt", help='the text to continue, e.g. "Q: Where does Dan Vend live?\\nA:"')
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a Llama folder (config.json + model.safetensors); default: the shipped base")
    parser.add_argument("--adapter", default=None, metavar="DIR",
                        help="a LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("--tokenizer", default=None, metavar="FILE",
                        help="a Hugging Face tokenizer.json; default: the --model folder's tokenizer.json if it "
                             "has one, else minilora's byte-level tokenizer")
    parser.add_argument("--max-new-tokens", type=positive_int, default=40,
                        help="how many tokens at most (default 40)")
    parser.add_argument("--sample", action="store_true",
                        help="sample instead of always taking the most likely token (greedy)")
    # One set of sampling defaults: generate()'s (left unset here): the model folder's
    # generation_config.json if it sets them, else transformers' (DEFAULTS, shown in --help).
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help=f"with --sample: < 1 sharper, > 1 flatter (default {DEFAULTS['temperature']})")
    parser.add_argument("--top-k", type=non_negative_int, default=None,
                        help=f"with --sample: keep the k most likely tokens (default {DEFAULTS['top_k']}, "
                             "transformers' default; 0 keeps all)")
    parser.add_argument("--top-p", type=top_p_value, default=None,
                        help="with --sample: keep the smallest set of tokens whose probability adds up to p "
                             f"(default {DEFAULTS['top_p']}: all; a model folder's generation_config.json "
                             "may set other defaults)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed for --sample (default 0)")
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu, emu or cuda (default: $MINILORA_DEVICE or cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64", "auto"],
                        help="the model's dtype (default float32); auto: the one its config.json records, as "
                             "transformers' dtype='auto' (a bfloat16 checkpoint stays bfloat16)")


def _command_tokenizer(args, tokenizers):
    """--tokenizer FILE if given; else the --model folder's own (``tokenizer.model_tokenizer``, the rule
    ``minilora serve`` and transformers follow)."""
    if args.tokenizer is not None:
        return tokenizers.from_file(args.tokenizer)
    return tokenizers.model_tokenizer(args.model)


def cli_main(args):
    from . import models, tokenizer as tokenizers
    from .cli import UsageError

    given = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                      ("--top-p", args.top_p)) if value is not None]
    if given and not args.sample:  # greedy decoding would ignore them: say so before loading anything
        raise UsageError(f"{', '.join(given)} only apply with --sample (greedy decoding takes the most likely token)")
    try:  # the folders and files named on the command line: a missing or broken one is the user's to fix
        model = (models.load_base(dtype=args.dtype, device=args.device) if args.model is None
                 else models.AutoModelForCausalLM.from_pretrained(args.model, dtype=args.dtype, device=args.device))
        if args.adapter is not None:
            from .lora import PeftModel
            model = PeftModel.from_pretrained(model, args.adapter)
        tok = _command_tokenizer(args, tokenizers)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    problem = tokenizers.vocab_mismatch(tok, model.config.vocab_size)
    if problem:
        raise UsageError(f"{problem} (--model {args.model or 'the shipped base'}, "
                         f"--tokenizer {args.tokenizer or 'the byte-level default'})")
    model.eval()
    prompt = args.prompt.replace("\\n", "\n")  # let a typed "\n" mean a newline, as in the examples
    try:  # bytes that are not UTF-8 reach Python as lone surrogates, which no tokenizer can encode
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = os.fsencode(prompt[exc.start:exc.end])
        raise UsageError(f"the prompt is not UTF-8 text (bytes {raw!r} at character {exc.start}); "
                         "check the terminal's encoding") from None
    ids = tok.encode(prompt)
    sampling = {name: value for name, value in (("temperature", args.temperature), ("top_k", args.top_k),
                                                  ("top_p", args.top_p)) if value is not None}
    if tok.eos_token_id is not None:  # (else the model's: None passed would mean "no eos")
        sampling["eos_token_id"] = tok.eos_token_id
    out = generate(model, [ids], max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed,
                   **sampling)  # what is not given keeps generate()'s default
    print(prompt + tok.decode(out.cpu().numpy()[0, len(ids):].tolist(), skip_special_tokens=True))
    return 0
