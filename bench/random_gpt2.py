#!/usr/bin/env python3
"""Write a Hugging Face GPT-2 folder with random weights, for timing load and generation.

    python3 bench/random_gpt2.py OUT [--n_layer 12 --n_head 12 --n_embd 768 --n_positions 1024
                                      --vocab_size 50257 --dtype F32|F16 --prefix transformer.]
                                     [--tokenizer DIR]   # copies vocab.json+merges.txt or encoder.json+vocab.bpe

The default shape is GPT-2 124M. Nothing is downloaded and nothing beyond the standard
library is needed: the weights are random bytes with the exponent bits fixed, so every value
is a finite number of magnitude ~0.01 (LayerNorm weights are 1). Only for measuring: a model
with these weights says nothing sensible.
"""
import argparse
import json
import os
import shutil
import struct


def random_values(n, dtype):
    if dtype == "F16":   # sign | exponent 01001 (2^-6) | random mantissa
        raw = bytearray(os.urandom(2 * n))
        raw[1::2] = raw[1::2].translate(bytes(b & 0x83 | 0x24 for b in range(256)))
        return bytes(raw)
    raw = bytearray(os.urandom(4 * n))   # F32: sign | exponent 120 (2^-7) | random mantissa
    raw[3::4] = raw[3::4].translate(bytes(b & 0x80 | 0x3C for b in range(256)))
    raw[2::4] = raw[2::4].translate(bytes(b & 0x7F for b in range(256)))
    return bytes(raw)


def ones(n, dtype):
    return struct.pack("<H", 0x3C00) * n if dtype == "F16" else struct.pack("<f", 1.0) * n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--n_layer", type=int, default=12)
    p.add_argument("--n_head", type=int, default=12)
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--n_positions", type=int, default=1024)
    p.add_argument("--vocab_size", type=int, default=50257)
    p.add_argument("--dtype", choices=["F32", "F16"], default="F32")
    p.add_argument("--prefix", default="", help='"" (the hub\'s keys) or "transformer."')
    p.add_argument("--tokenizer", help="folder with vocab.json+merges.txt or encoder.json+vocab.bpe to copy")
    a = p.parse_args()
    C, V, T = a.n_embd, a.vocab_size, a.n_positions
    tensors = [("wte.weight", [V, C]), ("wpe.weight", [T, C])]
    for i in range(a.n_layer):
        h = f"h.{i}."
        tensors += [(h + "ln_1.weight", [C]), (h + "ln_1.bias", [C]),
                    (h + "attn.c_attn.weight", [C, 3 * C]), (h + "attn.c_attn.bias", [3 * C]),
                    (h + "attn.c_proj.weight", [C, C]), (h + "attn.c_proj.bias", [C]),
                    (h + "ln_2.weight", [C]), (h + "ln_2.bias", [C]),
                    (h + "mlp.c_fc.weight", [C, 4 * C]), (h + "mlp.c_fc.bias", [4 * C]),
                    (h + "mlp.c_proj.weight", [4 * C, C]), (h + "mlp.c_proj.bias", [C])]
    tensors += [("ln_f.weight", [C]), ("ln_f.bias", [C])]
    eb = 2 if a.dtype == "F16" else 4
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        header[a.prefix + name] = {"dtype": a.dtype, "shape": shape, "data_offsets": [offset, offset + n * eb]}
        offset += n * eb
    hs = json.dumps(header, separators=(",", ":"))
    hs += " " * ((8 - len(hs) % 8) % 8)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hs)))
        f.write(hs.encode())
        for name, shape in tensors:
            n = 1
            for d in shape:
                n *= d
            f.write(ones(n, a.dtype) if name.endswith("weight") and "ln_" in name else random_values(n, a.dtype))
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
              "n_embd": C, "n_head": a.n_head, "n_layer": a.n_layer, "n_positions": T, "n_ctx": T,
              "vocab_size": V, "layer_norm_epsilon": 1e-5, "bos_token_id": V - 1, "eos_token_id": V - 1}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if a.tokenizer:
        for pair in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if all(os.path.exists(os.path.join(a.tokenizer, x)) for x in pair):
                for x in pair:
                    shutil.copy(os.path.join(a.tokenizer, x), a.out)
                break
    print(f"wrote {a.out}: {offset / 2**20:.0f} MiB of {a.dtype} weights")


if __name__ == "__main__":
    main()
