// engine/autograd.cpp — recording nodes, and running them backwards.
#include "autograd.h"
#include <algorithm>
#include <unordered_map>
#include "check.h"
#include "profile_hook.h"

static thread_local bool g_grad_enabled = true;
bool GradMode::enabled() { return g_grad_enabled; }
void GradMode::set(bool on) { g_grad_enabled = on; }

bool needs_grad(const Tensor& t) { return GradMode::enabled() && t.defined() && t.requires_grad(); }

static thread_local uint64_t g_seq = 0;                       // the last node's seq
static thread_local std::vector<Tensor>* g_capture = nullptr;  // checkpoint(): inputs from outside

bool record(Tensor& y, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn) {
    return record(y, name, std::vector<Tensor>(inputs), std::move(fn));
}

bool record(Tensor& y, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
    if (profile_hook) profile_hook->op(name, ProfileHook::Forward);   // Note [Profiling hook]
    if (g_capture && !GradMode::enabled())     // inside checkpoint(): note what comes from outside
        for (const Tensor& x : inputs)
            if (x.defined() && x.requires_grad() &&
                std::none_of(g_capture->begin(), g_capture->end(), [&](const Tensor& c) { return c.impl_ptr() == x.impl_ptr(); }))
                g_capture->push_back(x);
    bool any = false;
    for (const Tensor& x : inputs) any = any || needs_grad(x);
    if (!any) return false;   // no trainable input upstream: no node (Note [Frozen tensors ...] 2)
    auto node = std::make_shared<Node>();
    node->name = name;
    node->seq = ++g_seq;
    node->out_shape = y.shape();
    for (const Tensor& x : inputs) {
        Edge e;
        if (needs_grad(x)) {
            if (x.grad_fn()) e.node = x.grad_fn();
            else e.leaf = x.impl_ptr();
        }
        node->next.push_back(std::move(e));
    }
    node->fn = std::move(fn);
    y.impl().requires_grad = true;
    y.impl().grad_fn = std::move(node);
    return true;
}

// ---- saved tensors
Saved::Saved(const Tensor& t) : t_(t.defined() ? t.detach() : Tensor()) {
    if (t_.defined()) t_.storage().add_saved_ref();
}
Saved& Saved::operator=(const Saved& o) {
    if (this == &o) return *this;
    if (t_.defined()) t_.storage().drop_saved_ref();
    t_ = o.t_;
    if (t_.defined()) t_.storage().add_saved_ref();
    return *this;
}
Saved::~Saved() {
    if (t_.defined()) t_.storage().drop_saved_ref();
}

// ---- gradient buffers handed to closures
bool Grads::needs(int i) const { return i < int(node_.next.size()) && node_.next[i].active(); }

GradBuf Grads::buf(int i) {
    ENGINE_CHECK(needs(i), ValueError, "{}: backward asked for the gradient of input {}, which needs none",
                 node_.name, i);
    Edge& e = node_.next[i];
    std::shared_ptr<Storage>& slot = e.node ? e.node->dy : e.leaf->grad;
    const Shape& s = e.node ? e.node->out_shape : e.leaf->shape;
    if (slot) return {static_cast<float*>(slot->data()), 1.f};
    slot = std::make_shared<Storage>(size_t(s.numel()) * 4, e.node ? Mem::Workspace : Mem::Grads);
    return {static_cast<float*>(slot->data()), 0.f};
}

// ---- backward

// Runs the nodes from root back, with dy as root's output gradient; nodes older than min_seq
// are not run (a checkpoint's region stops there): their gradient only accumulates in their dy.
static void run_backward(const std::shared_ptr<Node>& root, std::shared_ptr<Storage> dy, uint64_t min_seq) {
    // Topological order by an explicit-stack depth-first search (no recursion: deep graphs).
    // `order` owns the nodes: clearing a node's edges below must not free the ones before it.
    std::vector<std::shared_ptr<Node>> order;
    std::unordered_map<Node*, bool> seen;
    std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root, 0}};
    seen[root.get()] = true;
    while (!stack.empty()) {
        auto& [n, k] = stack.back();
        if (k < n->next.size()) {
            const std::shared_ptr<Node>& child = n->next[k++].node;
            if (child && child->seq >= min_seq && !seen[child.get()]) {
                seen[child.get()] = true;
                stack.push_back({child, 0});
            }
        } else {
            order.push_back(n);   // post-order: every node after all of its inputs' nodes
            stack.pop_back();
        }
    }

    root->dy = std::move(dy);
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        Node* n = it->get();
        if (n->dy && n->fn) {
            auto impl = std::make_shared<TensorImpl>();
            impl->shape = n->out_shape;
            impl->storage = n->dy;
            Grads g(*n);
            n->fn(Tensor(std::move(impl)), g);
            if (profile_hook) profile_hook->op(n->name, ProfileHook::Backward);
        }
        n->fn = nullptr;   // frees the saved tensors now, not when the loss goes away
        n->dy.reset();     // and this node's output gradient
        n->next.clear();   // and the references to the nodes before it
    }
}

void backward(const Tensor& loss) {
    ENGINE_CHECK(loss.defined() && loss.numel() == 1, ShapeError,
                 "backward: the loss must have one element, got shape {}", loss.defined() ? loss.shape().str() : "none");
    ENGINE_CHECK(loss.requires_grad(), ValueError,
                 "backward: the loss does not require grad (no trainable parameter reaches it, or grad mode was off)");
    const std::shared_ptr<Node>& root = loss.grad_fn();
    if (!root) {   // the loss is itself a trainable leaf: d loss / d loss = 1
        Tensor l = loss;
        if (!l.impl().grad) { l.impl().grad = std::make_shared<Storage>(4, Mem::Grads); *l.grad_data() = 0.f; }
        *l.grad_data() += 1.f;
        return;
    }
    ENGINE_CHECK(root->fn != nullptr, ValueError,
                 "backward: this graph was already run backward and its saved tensors freed; run the forward again");
    auto one = std::make_shared<Storage>(4, Mem::Workspace);
    *static_cast<float*>(one->data()) = 1.f;
    run_backward(root, std::move(one), 0);
}

// ---- checkpoint (Note [Gradient checkpointing])

Tensor checkpoint(const std::function<Tensor()>& fn) {
    if (!GradMode::enabled()) return fn();
    std::vector<Tensor> inputs;
    Tensor y;
    {
        NoGradGuard no_grad;
        std::vector<Tensor>* outer = g_capture;
        g_capture = &inputs;
        try {
            y = fn();
        } catch (...) {
            g_capture = outer;
            throw;
        }
        g_capture = outer;
        if (outer)   // a checkpoint inside a checkpoint: the outer one reads these too
            for (const Tensor& x : inputs)
                if (std::none_of(outer->begin(), outer->end(), [&](const Tensor& c) { return c.impl_ptr() == x.impl_ptr(); }))
                    outer->push_back(x);
    }
    y = y.detach();   // fn's output may be one of its inputs; the node goes on a tensor of its own
    record(y, "checkpoint", inputs, [fn](const Tensor& dy, Grads&) {
        // Inputs' gradients are written by the replayed nodes themselves, straight into the
        // buffers of the nodes and leaves before the region (Grads::buf accumulates there).
        const bool was = GradMode::enabled();
        GradMode::set(true);
        const uint64_t start = g_seq + 1;
        Tensor y2 = fn();
        GradMode::set(was);
        if (!y2.grad_fn() || y2.grad_fn()->seq < start) return;   // nothing recorded: no gradient
        run_backward(y2.grad_fn(), dy.storage_ptr(), start);
    });
    return y;
}
