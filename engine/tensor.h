// engine/tensor.h — the Tensor: a cheap handle onto shape + owned contiguous storage.
//
// float32 or int32 (token ids, targets), row-major, PyTorch dimension order, always
// contiguous. A Tensor also carries what autograd needs: `requires_grad`, the Node that
// produced it (`grad_fn`, null for leaves) and, for leaves, the `.grad` buffer.
// Copying a Tensor copies the handle, not the data (like torch.Tensor in Python).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "memory.h"
#include "rng.h"
#include "shape.h"

enum class DType { F32, I32 };
struct Node;

struct TensorImpl {
    Shape shape;
    DType dtype = DType::F32;
    std::shared_ptr<Storage> storage;
    bool requires_grad = false;
    std::shared_ptr<Node> grad_fn;       // set by ops that record a node; null for leaves
    std::shared_ptr<Storage> grad;       // leaves only; allocated by backward, never for frozen tensors
};

class Tensor {
public:
    Tensor() = default;

    // ---- creation (storage category defaults to `other`; parameters are re-tagged by modules)
    static Tensor empty(const Shape& s, DType dt = DType::F32, Mem cat = Mem::Workspace);   // uninitialised
    static Tensor zeros(const Shape& s, DType dt = DType::F32, Mem cat = Mem::Workspace);
    static Tensor full(const Shape& s, float value, Mem cat = Mem::Workspace);
    static Tensor from(const std::vector<float>& values, const Shape& s);
    static Tensor from_ints(const std::vector<int32_t>& values, const Shape& s);
    static Tensor randn(const Shape& s, Rng& rng, float stddev = 1.f, Mem cat = Mem::Workspace);
    static Tensor uniform(const Shape& s, Rng& rng, float lo, float hi, Mem cat = Mem::Workspace);

    // ---- data
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    int ndim() const { return shape().ndim; }
    int64_t size(int d) const { return shape()[d]; }
    int64_t numel() const { return shape().numel(); }
    DType dtype() const { return impl().dtype; }
    float* data() const;            // F32 only (throws otherwise)
    int32_t* idata() const;         // I32 only
    size_t nbytes() const { return size_t(numel()) * 4; }
    float item() const;             // value of a one-element F32 tensor
    std::vector<float> to_vector() const;
    Tensor clone(Mem cat = Mem::Workspace) const;   // deep copy of the data, no graph
    Tensor detach() const;          // shares the data, drops requires_grad and the graph
    Storage& storage() const;       // throws for a Linear weight stored quantised (it has none)
    const std::shared_ptr<Storage>& storage_ptr() const { return impl().storage; }
    // A handle onto the same storage with another shape of equal numel (no graph; see ops reshape).
    Tensor view_as(const Shape& s) const;

    // ---- autograd (see engine/autograd.h)
    bool requires_grad() const { return defined() && impl().requires_grad; }
    Tensor& set_requires_grad(bool on);   // leaves only: parameters are trainable or frozen
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
    bool has_grad() const { return impl().grad != nullptr; }   // false, always, for frozen tensors
    Tensor grad() const;            // a handle onto the .grad buffer (throws if none)
    float* grad_data() const;
    void zero_grad();               // drops the buffer (PyTorch's set_to_none=True)
    void backward() const;          // this must be a one-element loss

    TensorImpl& impl() const;
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

private:
    std::shared_ptr<TensorImpl> impl_;
};

// "F32[2, 3]" — for error messages.
std::string describe(const Tensor& t);
