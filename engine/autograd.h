// engine/autograd.h — reverse-mode autodiff on a dynamic tape of layer-sized ops.
//
// Each op computes its forward at once; then, only if grad mode is on and some input
// requires grad, it records a Node: the edges to its inputs' producers and a backward
// closure. backward(loss) runs the nodes once, in reverse topological order, without
// recursion, and accumulates into the .grad of leaves.
//
// Note [Frozen tensors skip gradient storage]
// 1. A tensor with requires_grad == false is never given a gradient buffer: Grads only hands
//    out buffers for inputs whose edge exists, and an edge exists only for inputs that
//    require grad.
// 2. An op computes only the input gradients that are needed: a closure asks
//    `g.needs(i)` before each one (a frozen weight's dW GEMM is never run). An op whose
//    inputs all are frozen records no node at all.
// 3. An op saves an input for backward only if a gradient that will be computed needs it:
//    ops call save(x) under `if (needs_grad(W))`, so a frozen linear does not keep x.
//
// Note [Why closures never capture their output]
// A closure that held its output would hold the output's Node, i.e. itself: a reference
// cycle that never frees. Closures receive the output's gradient `dy` as an argument, and
// what they keep comes from save(), which returns a graph-free handle on the data.
//
// Note [Grad mode]
// The only global state of the engine: a thread-local flag, on by default. NoGradGuard turns
// it off for a scope (evaluation, generation), and then no op records anything.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>
#include "tensor.h"

struct GradMode {
    static bool enabled();
    static void set(bool on);
};
struct NoGradGuard {
    NoGradGuard() : prev_(GradMode::enabled()) { GradMode::set(false); }
    ~NoGradGuard() { GradMode::set(prev_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;
private:
    bool prev_;
};

// True when an op must produce a gradient for t: grad mode is on and t requires grad.
bool needs_grad(const Tensor& t);

// Where a backward closure writes one input's gradient.
//   beta == 0: the buffer is fresh (its contents are garbage): write every element.
//   beta == 1: accumulate (+=) into what earlier nodes put there.
// This saves a memset per gradient; gemm takes beta directly, loops use acc().
struct GradBuf {
    float* p = nullptr;
    float beta = 0.f;
    void acc(int64_t i, float v) const { p[i] = beta == 0.f ? v : p[i] + v; }
};

class Grads {
public:
    bool needs(int i) const;   // does input i need a gradient at all?
    GradBuf buf(int i);        // its gradient buffer (allocated on first call); call once per closure per input
    explicit Grads(struct Node& n) : node_(n) {}
private:
    Node& node_;
};

using BackwardFn = std::function<void(const Tensor& dy, Grads& g)>;

struct Edge {
    std::shared_ptr<Node> node;          // the input was produced by this node ...
    std::shared_ptr<TensorImpl> leaf;    // ... or it is a leaf that requires grad
    bool active() const { return node || leaf; }
};

struct Node {
    const char* name;                    // op name, for error messages
    uint64_t seq = 0;                    // creation order: a later node has a larger seq
    Shape out_shape;
    std::vector<Edge> next;              // one per op input, inactive when it needs no grad
    BackwardFn fn;                       // cleared after it runs: frees what it saved
    std::shared_ptr<Storage> dy;         // gradient of this node's output, filled by consumers
};

// Attach a node to y if grad mode is on and some input requires grad; returns whether it did.
// Call it right after the forward; build the closure's saved tensors with save().
bool record(Tensor& y, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn);
bool record(Tensor& y, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn);

// A handle on t's data for a closure to keep: no graph (so no cycle), counted as saved.
class Saved {
public:
    Saved() = default;
    explicit Saved(const Tensor& t);
    Saved(const Saved& o) : Saved() { *this = o; }
    Saved& operator=(const Saved& o);
    ~Saved();
    const Tensor& operator*() const { return t_; }
    const Tensor* operator->() const { return &t_; }
    float* data() const { return t_.data(); }
    bool defined() const { return t_.defined(); }
private:
    Tensor t_;
};
inline Saved save(const Tensor& t) { return Saved(t); }

void backward(const Tensor& loss);

// Note [Gradient checkpointing]
// checkpoint(fn) runs fn() with grad mode off, so none of its ops keeps anything for backward,
// and records one node whose inputs are every tensor from outside that fn's ops read and that
// requires grad (the region's input, trainable parameters, ...). Its backward calls fn() again,
// now recording, and runs backward through the nodes that call made, and only those, with the
// region output's gradient: gradients reach parameters and the region's inputs exactly as if fn
// had recorded in the first place (same ops, same order, so the same bits), provided fn() computes
// the same thing twice (a caller with dropout inside restores its random stream: see GPT).
// Memory: the region's activations exist only while its own backward runs.
Tensor checkpoint(const std::function<Tensor()>& fn);
