#!/usr/bin/env python3
"""bench/suite.py -- `peft bench` over several model shapes and methods, optionally side by side
with a reference trainer (bench/torch_reference.py), as one Markdown table. `make bench` runs it.

Each configuration runs in its own process (`peft bench ... --json`), so each peak RSS is its own.
With --reference, each of our runs is paired with one run of the reference command, given the same
model, batch, steps and threads as flags (--method --layers --heads --embd --block --batch --vocab
--steps --threads --json; its last line must be a JSON object with ms_median and peak_rss_mib).
With --repeats K each pair runs K times, the reference first every second time (so neither side
always follows the other), and the table gives medians: of our runs, of the reference's, and of
the K time ratios, each taken within one pair (a machine that drifts between pairs moves both
sides of a ratio alike), with the ratios' range beside it.

The reference gets the OpenBLAS kernels `peft bench` reports using (OPENBLAS_CORETYPE, see
engine/openblas_core.cpp) unless the environment already names some.

Standard library only; the reference itself needs python3-torch.

    python3 bench/suite.py --configs tiny --methods full,lora --threads 2 \
        --reference "/usr/bin/python3 bench/torch_reference.py" --repeats 3
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

# name: (layers, heads, width, block, batch, vocab, timed steps)
CONFIGS = {
    "tiny": (4, 4, 128, 64, 16, 96, 20),
    "small": (6, 6, 384, 256, 8, 96, 10),
    "gpt2": (12, 12, 768, 128, 4, 50257, 6),
}
# Each method as bench/torch_reference.py builds it: LoRA r 8 on q, k and v; IA3 on k, v and the
# MLP's hidden activations; Houlsby adapters of width 32 with GELU; 16 virtual tokens.
METHODS = {
    "full": "--method full",
    "lora": "--method lora --target_modules q_proj,k_proj,v_proj --lora_dropout 0",
    "ia3": "--method ia3 --target_modules k_proj,v_proj,fc_out --feedforward_modules fc_out",
    "adapter": "--method adapter --placement houlsby --bottleneck_size 32 --non_linearity gelu",
    "prefix": "--method prefix --num_virtual_tokens 16",
    "prompt": "--method prompt --num_virtual_tokens 16",
}


def run_json(cmd, env=None):
    """Runs a shell command, echoing it and its output; returns the JSON object on its last line."""
    print(cmd, flush=True)
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        sys.exit(f"error: `{cmd}` exited with {p.returncode}")
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    try:
        return json.loads(lines[-1].removeprefix("JSON "))
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"error: `{cmd}` printed no JSON object on its last line")


def split_list(text, known, what):
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in known:
            sys.exit(f"error: --{what}: {x} is not one of {', '.join(known)}")
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peft", default="build/peft", help="the program to time")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="model shapes: " + ", ".join(CONFIGS))
    ap.add_argument("--methods", default="full,lora", help="methods: " + ", ".join(METHODS))
    ap.add_argument("--steps", type=int, help="timed steps for every shape (default: 20 / 10 / 6)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", help='a command training the same model elsewhere, e.g. '
                                         '"/usr/bin/python3 bench/torch_reference.py"')
    ap.add_argument("--repeats", type=int, default=1, help="runs of each pair; medians are reported")
    a = ap.parse_args()
    configs = split_list(a.configs, CONFIGS, "configs")
    methods = [m for m in METHODS if m in split_list(a.methods, METHODS, "methods")]  # full first
    if a.repeats < 1:
        sys.exit("error: --repeats must be at least 1")

    ref = bool(a.reference)
    head = ["config (L,H,C,T,B,V)", "method", "trainable", "ms/step", "÷ full", "tokens/s", "GFLOP/s",
            "grads MiB", "optimizer MiB", "saved act. MiB", "peak RSS MiB"]
    if ref:
        head += ["reference ms/step", "time ratio", "reference peak RSS MiB", "RSS ratio"]
    rows = []
    for name in configs:
        L, H, C, T, B, V, steps = CONFIGS[name]
        steps = a.steps or steps
        full_ms = None
        for m in methods:
            ours_cmd = (f"{shlex.quote(a.peft)} bench --n_layer {L} --n_head {H} --n_embd {C} --block {T} "
                        f"--batch {B} --vocab {V} --steps {steps} --threads {a.threads} --json {METHODS[m]}")
            ref_cmd = (f"{a.reference} --method {m} --layers {L} --heads {H} --embd {C} --block {T} --batch {B} "
                       f"--vocab {V} --steps {steps} --threads {a.threads} --json")
            ours, ref_ms, ref_rss, ratios = [], [], [], []
            for rep in range(a.repeats):
                ref_first = ref and rep % 2 == 1
                r = None
                if ref_first:
                    r = run_json(ref_cmd, ref_env(ours))
                ours.append(run_json(ours_cmd))
                if not ref:
                    continue
                if not ref_first:
                    r = run_json(ref_cmd, ref_env(ours))
                if "ms_median" not in r or "peak_rss_mib" not in r:
                    sys.exit(f"error: the reference printed no ms_median and peak_rss_mib: {r}")
                ref_ms.append(r["ms_median"])
                ref_rss.append(r["peak_rss_mib"])
                ratios.append(ours[-1]["ms_per_step"] / r["ms_median"])
            j = sorted(ours, key=lambda o: o["ms_per_step"])[len(ours) // 2]  # our median run
            ms = j["ms_per_step"]
            if m == "full":
                full_ms = ms
            mib = lambda k: j[k] / 2**20
            row = [f"{name} ({L},{H},{C},{T},{B},{V})", m, str(j["trainable_params"]), f"{ms:.1f}",
                   f"{ms / full_ms:.2f}" if full_ms else "–", f"{j['tokens_per_s']:.0f}", f"{j['gflops']:.1f}",
                   f"{mib('peak_grads_bytes'):.2f}", f"{mib('peak_optimizer_bytes'):.2f}",
                   f"{mib('peak_saved_bytes'):.1f}", f"{mib('peak_rss_bytes'):.0f}"]
            if ref:
                spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
                rss = statistics.median(ref_rss)
                row += [f"{statistics.median(ref_ms):.1f}", f"{statistics.median(ratios):.2f}{spread}", f"{rss:.0f}",
                        f"{mib('peak_rss_bytes') / rss:.2f}"]
            rows.append(row)

    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    core = ours[-1].get("blas_core", "?") if rows else "?"
    print(f"\n{a.threads} threads, OpenBLAS {core} kernels. GFLOP/s counts 6·N·B·T per trained and 4·N·B·T per "
          "frozen weight matrix of N entries (no dW GEMM), plus 12·L·C·T²·B for attention; ÷ full: ms/step over "
          "full fine-tuning's at the same shape" +
          (f"; medians of {a.repeats} runs" if a.repeats > 1 else "") +
          ("; time ratio: ours over the reference's, the median of the ratios within each pair, their range "
           "in brackets" if ref and a.repeats > 1 else "; time ratio: ours over the reference's" if ref else "") + ".")


def ref_env(ours):
    """The environment for the reference: our OpenBLAS kernels, unless the caller chose some."""
    env = dict(os.environ)
    if ours and "OPENBLAS_CORETYPE" not in env and "blas_core" in ours[-1]:
        env["OPENBLAS_CORETYPE"] = ours[-1]["blas_core"]
    return env


if __name__ == "__main__":
    main()
