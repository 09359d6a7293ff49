"""A Llama 7B-config model on the meta device: forward and backward at ``--seq`` tokens (round 22).

    PYTHONPATH=. /usr/bin/time -v python benchmarks/meta_llama.py --seq 4096   # time, and peak RSS (time -v)

Nothing of the model's or the activations' size may be computed or written on meta: the run should take
well under a second and its peak RSS stay near the interpreter's own (round 22, 2 busy cores: forward 0.16-0.22 s,
backward 0.07 s, peak 59 MB; round 21: 0.27-0.38 s, 0.1 s, 149 MB -- the attention mask's [1, 1, 4096, 4096] bias
and the rotary tables built on the host).
"""
import argparse
import time

import minilora as ml
from minilora.nn.llama import LlamaConfig, LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=4096)
    seq = parser.parse_args().seq
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32)
    start = time.perf_counter()
    with ml.device("meta"):
        model = LlamaForCausalLM(config)
    built = time.perf_counter()
    ids = ml.zeros(1, seq, dtype=ml.long, device="meta")
    out = model(ids, attention_mask=ml.ones(1, seq, dtype=ml.long, device="meta"), labels=ids)
    forward = time.perf_counter()
    out.loss.backward()
    backward = time.perf_counter()
    print(f"build {built - start:.2f} s, forward {forward - built:.2f} s, backward {backward - forward:.2f} s; "
          f"logits {tuple(out.logits.shape)}, embedding grad {tuple(model.model.embed_tokens.weight.grad.shape)}")


if __name__ == "__main__":
    main()
