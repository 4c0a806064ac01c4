// models/data_parallel.h — what the Trainer adds to run data-parallel over MPI ranks
// (engine/dist.h): rank-seeded example streams, gradient averaging, and replica checks.
//
// Semantics, as in torchrun/accelerate: --batch is per process; the global batch is
// ranks × batch × grad_accum sequences. Stream s of examples is an Rng seeded from (seed, s);
// rank r draws from stream r only. Every rank starts from the same weights (checked by
// checksum); after backward the trainable gradients are averaged across ranks, so clipping and
// AdamW see the gradient of the whole global batch and every rank takes the same step.
//
// Note [Averaging weighted by target tokens]
// The loss is the mean over the target tokens of a batch (task data ignores prompt and padding
// positions, so batches differ in how many there are). One process with the global batch
// computes L = Σ_tokens ℓ / n. Rank r holds the gradient gᵣ of its own mean Lᵣ over nᵣ tokens,
// and Σᵣ (nᵣ/n)·gᵣ is exactly ∇L, where n = Σᵣ nᵣ. So each rank scales its gradient by nᵣ/n
// before the sum: a plain average (PyTorch DDP's) would be right only when all nᵣ are equal.
// The losses and counts go first in a tiny all-reduce of doubles, with one flag per tensor
// telling whether any rank has its gradient (a tensor no rank touched stays without one, as
// in one process); then the gradients, packed into buckets of one flat float buffer.
//
// Equivalence: `--data_streams N` makes one process draw its batch of N·B as N parts of B from
// streams 0…N−1: the same examples as N ranks with batch B, summed into the same gradient up to
// float rounding (tests/test_data_parallel.cpp checks 1e-5 after 20 steps for every method).
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "data/dataset.h"
#include "engine/module.h"
#include "engine/optim.h"
#include "models/gpt.h"

// The seed of example stream s (stream 0 is the seed itself, so a one-process run is unchanged).
uint64_t stream_seed(uint64_t seed, int64_t s);

// Rows of several batches of equal width, one under the other.
Batch concat_batches(const std::vector<Batch>& parts);

// Target tokens of a batch (targets that are not kIgnoreIndex).
int64_t target_tokens(const Batch& b);

struct AllreduceStats {
    int64_t bytes = 0;   // payload all-reduced in this step (each rank's buffer)
    double ms = 0;       // wall time of packing, all-reducing and unpacking
};

// Averages the trainable gradients over all ranks, weighted by target tokens (Note above), and
// returns the global mean loss given this rank's mean `loss` over `tokens` target tokens.
// Without MPI it returns `loss` and touches nothing.
double average_gradients(const ParamList& trainable, double loss, int64_t tokens, AllreduceStats& stats);

// A hash of the trainable parameters and the optimizer state; under MPI compared across ranks:
// a difference throws dist::MismatchError naming the ranks (weights diverged; nothing is saved).
void check_replicas(const ParamList& trainable, const Optimizer& opt, const std::string& when);
// The same for the starting weights (the whole model, quantised blocks included, and the trainable tensors).
void check_same_start(GPT& model, const ParamList& trainable);
