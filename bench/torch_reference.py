#!/usr/bin/env python3
"""bench/torch_reference.py -- the same training step as `peft bench`, in PyTorch, for comparison.

The model is peft.cpp's GPT (models/gpt.h): token + position embeddings, pre-LayerNorm blocks
(q, k, v, o projections with bias, causal softmax attention scaled by 1/sqrt(head dim), an MLP
C -> 4C -> C with GPT-2's tanh GELU), a final LayerNorm and an LM head tied to the token
embedding; AdamW on random tokens. The methods are built the way bench/suite.py asks peft.cpp for
them, with the base frozen (requires_grad False, so PyTorch skips its weight gradients too):

  full     every parameter trains
  lora     r 8, alpha 16 on q, k and v:  y = x W^T + b + (alpha/r) (x A^T) B^T,  B = 0 at start
  ia3      learned vectors scale k, v and the input of the MLP's second Linear, ones at start
  adapter  Houlsby: after the attention and after the MLP sub-layer, z + up(gelu(down(z))), width 32
  prefix   16 trained key/value slots per layer and head, seen by every query
  prompt   16 trained embeddings before the tokens, with positions of their own

Needs Debian's python3-torch (and python3-numpy); it is a benchmark tool, never needed to build,
train or test peft.cpp. Prints the median step time and the peak RSS; with --json the last line
is one JSON object (ms_median, peak_rss_mib, tokens_per_s, trainable_params, ...).

    python3 bench/torch_reference.py --method lora --layers 4 --heads 4 --embd 128 --block 64 \
        --batch 16 --vocab 96 --steps 20 --threads 2 --json
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ("full", "lora", "ia3", "adapter", "prefix", "prompt")
VIRTUAL = 16  # prefix slots / prompt tokens
LORA_R, LORA_ALPHA, ADAPTER_WIDTH = 8, 16.0, 32


class LoRALinear(nn.Module):
    """A frozen Linear plus the trained low-rank branch (alpha/r) B A."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base, self.s = base, alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # HF PEFT's init; B = 0 makes the start exact
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.s * F.linear(F.linear(x, self.A), self.B)


class Adapter(nn.Module):
    def __init__(self, C: int, m: int):
        super().__init__()
        self.down, self.up = nn.Linear(C, m), nn.Linear(m, C)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z):
        return z + self.up(F.gelu(self.down(z), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C: int, H: int):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.q, self.k, self.v, self.o = (nn.Linear(C, C) for _ in range(4))
        self.fc_in, self.fc_out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.ia3_k = self.ia3_v = self.ia3_ff = None          # IA3 vectors, when that method is on
        self.attn_adapter = self.mlp_adapter = None          # bottleneck adapters
        self.prefix_k = self.prefix_v = None                 # (H, P, D) prefix slots

    def heads(self, t):  # (B, T, C) -> (B, H, T, D)
        B, T, C = t.shape
        return t.view(B, T, self.H, C // self.H).transpose(1, 2)

    def attention(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.ia3_k is not None:
            k, v = k * self.ia3_k, v * self.ia3_v
        q, k, v = self.heads(q), self.heads(k), self.heads(v)
        T, P = q.shape[2], 0
        if self.prefix_k is not None:
            P = self.prefix_k.shape[1]
            k = torch.cat([self.prefix_k.expand(q.shape[0], -1, -1, -1), k], dim=2)
            v = torch.cat([self.prefix_v.expand(q.shape[0], -1, -1, -1), v], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        # query t sees every prefix slot and the tokens 0..t
        allowed = torch.ones(T, P + T, dtype=torch.bool).tril(diagonal=P)
        att = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(x.shape)
        return self.o(y)

    def mlp(self, x):
        h = F.gelu(self.fc_in(x), approximate="tanh")
        if self.ia3_ff is not None:
            h = h * self.ia3_ff
        return self.fc_out(h)

    def forward(self, x):
        z = self.attention(self.ln_1(x))
        x = x + (self.attn_adapter(z) if self.attn_adapter else z)
        z = self.mlp(self.ln_2(x))
        return x + (self.mlp_adapter(z) if self.mlp_adapter else z)


class GPT(nn.Module):
    def __init__(self, L, H, C, T, V, virtual=0):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T + virtual, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.prompt = None  # (P, C) prompt embeddings

    def loss(self, ids, targets):
        x = self.wte(ids)
        if self.prompt is not None:
            x = torch.cat([self.prompt.expand(ids.shape[0], -1, -1), x], dim=1)
        x = x + self.wpe(torch.arange(x.shape[1]))
        for b in self.h:
            x = b(x)
        x = self.ln_f(x)[:, x.shape[1] - ids.shape[1]:]  # the real tokens' rows
        logits = F.linear(x, self.wte.weight)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def attach(model: GPT, method: str, C: int, H: int):
    """Freezes the base (unless full) and adds the method's trained tensors."""
    if method == "full":
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for b in model.h:
        if method == "lora":
            b.q, b.k, b.v = (LoRALinear(m, LORA_R, LORA_ALPHA) for m in (b.q, b.k, b.v))
        elif method == "ia3":
            b.ia3_k, b.ia3_v = nn.Parameter(torch.ones(C)), nn.Parameter(torch.ones(C))
            b.ia3_ff = nn.Parameter(torch.ones(4 * C))
        elif method == "adapter":
            b.attn_adapter, b.mlp_adapter = Adapter(C, ADAPTER_WIDTH), Adapter(C, ADAPTER_WIDTH)
        elif method == "prefix":
            b.prefix_k = nn.Parameter(0.02 * torch.randn(H, VIRTUAL, C // H))
            b.prefix_v = nn.Parameter(0.02 * torch.randn(H, VIRTUAL, C // H))
    if method == "prompt":
        model.prompt = nn.Parameter(0.02 * torch.randn(VIRTUAL, C))


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference for `peft bench`")
    ap.add_argument("--method", choices=METHODS, default="full")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--block", type=int, default=64, help="real tokens per sequence")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup_steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.manual_seed(1)
    torch.set_num_threads(a.threads)
    virtual = VIRTUAL if a.method == "prompt" else 0
    model = GPT(a.layers, a.heads, a.embd, a.block, a.vocab, virtual)
    attach(model, a.method, a.embd, a.heads)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    times = []
    for step in range(a.warmup_steps + a.steps):
        ids = torch.randint(a.vocab, (a.batch, a.block))
        targets = torch.randint(a.vocab, (a.batch, a.block))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if step >= a.warmup_steps:
            times.append((time.perf_counter() - t0) * 1000)

    ms = statistics.median(times)
    result = {
        "method": a.method, "threads": a.threads, "ms_median": ms, "ms_min": min(times), "ms_max": max(times),
        "tokens_per_s": a.batch * a.block / (ms / 1000),
        "trainable_params": sum(p.numel() for p in trainable),
        "all_params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "torch": torch.__version__,
    }
    print(f"torch {a.method}: median {ms:.1f} ms/step over {len(times)} steps, "
          f"{result['tokens_per_s']:.0f} tokens/s, trainable {result['trainable_params']}, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    if a.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
