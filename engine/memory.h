// engine/memory.h — every byte the engine allocates, counted by what it is for.
//
// A Storage is one owned, 64-byte-aligned buffer with a category. The accounting keeps the
// current and peak bytes of each category, so `peft train` can say where memory goes:
//   params     model weights (frozen or trainable)
//   grads      .grad buffers of trainable leaves (never of frozen ones)
//   optimizer  AdamW / SGD state (only for trainable parameters)
//   saved      activations a backward closure keeps alive (see Note [Saved activations])
//   workspace  everything else: op outputs not saved, intermediate gradients, scratch
//   quantized  frozen weights stored in blocks of 8 or 4 bits (engine/quant.h), bytes as stored
// plus `cached`: freed memory malloc keeps resident for reuse (not in use, but in the RSS).
//
// Note [Saved activations]
// An op output starts as `workspace`. When a backward closure saves it (engine/autograd.h,
// save()), its bytes move to `saved` until the last closure holding it runs or is dropped.
// Parameters saved by a closure stay `params`: they are alive anyway.
//
// Reuse: first-touching a fresh page costs ~10 µs here, so a training step that got fresh
// pages for its activations each time would spend much of its time in page faults. Freed
// buffers stay resident and the next step reuses them (Note [Keeping freed memory], memory.cpp).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

enum class Mem : int { Params, Grads, Optimizer, Saved, Workspace, Quantized, kCount };
const char* mem_name(Mem m);

class Storage {
public:
    Storage(size_t bytes, Mem category);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return ptr_; }
    size_t bytes() const { return bytes_; }
    Mem category() const { return saved_refs_ > 0 && cat_ == Mem::Workspace ? Mem::Saved : cat_; }
    void set_category(Mem m);   // e.g. a tensor becomes a parameter
    void add_saved_ref();       // a backward closure keeps this buffer
    void drop_saved_ref();

private:
    void* base_ = nullptr;   // what malloc returned; ptr_ is base_ rounded up to 64 bytes
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
    Mem cat_;
    int saved_refs_ = 0;
};

struct MemStats {
    std::array<int64_t, int(Mem::kCount)> current{}, peak{};
    int64_t total_current = 0, total_peak = 0;   // all categories together
    int64_t cached = 0;                          // freed, kept resident by malloc
    int64_t cur(Mem m) const { return current[int(m)]; }
    int64_t pk(Mem m) const { return peak[int(m)]; }
};
MemStats mem_stats();
void mem_reset_peak();                 // peaks := current values
std::string mem_report(const MemStats& s);   // "params 3.1 MiB, grads 0.29 MiB, ... (peak ...)"
int64_t peak_rss_bytes();              // the process's peak resident set (from /proc)
