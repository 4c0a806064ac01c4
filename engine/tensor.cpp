// engine/tensor.cpp — creation, access and the autograd-facing parts of Tensor.
#include "tensor.h"
#include <cstring>
#include "autograd.h"

static Tensor make(const Shape& s, DType dt, Mem cat) {
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = s;
    impl->dtype = dt;
    impl->storage = std::make_shared<Storage>(size_t(s.numel()) * 4, cat);
    return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& s, DType dt, Mem cat) { return make(s, dt, cat); }

Tensor Tensor::zeros(const Shape& s, DType dt, Mem cat) {
    Tensor t = make(s, dt, cat);
    std::memset(t.storage().data(), 0, t.nbytes());
    return t;
}

Tensor Tensor::full(const Shape& s, float value, Mem cat) {
    Tensor t = make(s, DType::F32, cat);
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = value;
    return t;
}

Tensor Tensor::from(const std::vector<float>& values, const Shape& s) {
    ENGINE_CHECK(int64_t(values.size()) == s.numel(), ShapeError, "Tensor::from: {} values for shape {}",
                 values.size(), s.str());
    Tensor t = make(s, DType::F32, Mem::Workspace);
    if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * 4);
    return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, const Shape& s) {
    ENGINE_CHECK(int64_t(values.size()) == s.numel(), ShapeError, "Tensor::from_ints: {} values for shape {}",
                 values.size(), s.str());
    Tensor t = make(s, DType::I32, Mem::Workspace);
    if (!values.empty()) std::memcpy(t.idata(), values.data(), values.size() * 4);
    return t;
}

Tensor Tensor::randn(const Shape& s, Rng& rng, float stddev, Mem cat) {
    Tensor t = make(s, DType::F32, cat);
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = float(rng.normal() * stddev);
    return t;
}

Tensor Tensor::uniform(const Shape& s, Rng& rng, float lo, float hi, Mem cat) {
    Tensor t = make(s, DType::F32, cat);
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = float(rng.uniform(lo, hi));
    return t;
}

TensorImpl& Tensor::impl() const {
    ENGINE_CHECK(impl_ != nullptr, ValueError, "use of an undefined (empty) tensor");
    return *impl_;
}

// The values' bytes. A Linear weight stored quantised (Linear::quantize, engine/quant.h) keeps its
// shape and its place among the parameters but has no float32 storage.
Storage& Tensor::storage() const {
    ENGINE_CHECK(impl().storage != nullptr, ValueError,
                 "tensor {}: its values are stored quantised (a frozen Linear weight), not as float32; dequantise "
                 "the Linear to read or change them", describe(*this));
    return *impl().storage;
}

float* Tensor::data() const {
    ENGINE_CHECK(dtype() == DType::F32, ValueError, "tensor {}: float data requested from an int32 tensor",
                 describe(*this));
    return static_cast<float*>(storage().data());
}

int32_t* Tensor::idata() const {
    ENGINE_CHECK(dtype() == DType::I32, ValueError, "tensor {}: int data requested from a float32 tensor",
                 describe(*this));
    return static_cast<int32_t*>(storage().data());
}

float Tensor::item() const {
    ENGINE_CHECK(numel() == 1, ShapeError, "item: tensor of shape {} has {} elements, not 1", shape().str(), numel());
    return data()[0];
}

std::vector<float> Tensor::to_vector() const {
    const float* p = data();
    return std::vector<float>(p, p + numel());
}

Tensor Tensor::clone(Mem cat) const {
    const void* src = storage().data();
    Tensor t = make(shape(), dtype(), cat);
    std::memcpy(t.storage().data(), src, nbytes());
    return t;
}

Tensor Tensor::detach() const {
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = shape();
    impl->dtype = dtype();
    impl->storage = impl_->storage;
    return Tensor(std::move(impl));
}

Tensor Tensor::view_as(const Shape& s) const {
    ENGINE_CHECK(s.numel() == numel(), ShapeError, "view: cannot view {} as {}", shape().str(), s.str());
    Tensor t = detach();
    t.impl().shape = s;
    return t;
}

Tensor& Tensor::set_requires_grad(bool on) {
    ENGINE_CHECK(is_leaf(), ValueError, "set_requires_grad: only leaf tensors (parameters) can be frozen or unfrozen");
    ENGINE_CHECK(!on || dtype() == DType::F32, ValueError, "set_requires_grad: int32 tensors have no gradient");
    impl().requires_grad = on;
    if (!on) impl().grad.reset();   // a frozen tensor holds no gradient buffer
    return *this;
}

Tensor Tensor::grad() const {
    ENGINE_CHECK(has_grad(), ValueError, "grad: tensor {} has no gradient buffer", describe(*this));
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = shape();
    impl->storage = impl_->grad;
    return Tensor(std::move(impl));
}

float* Tensor::grad_data() const { return has_grad() ? static_cast<float*>(impl().grad->data()) : nullptr; }

void Tensor::zero_grad() { impl().grad.reset(); }

void Tensor::backward() const { ::backward(*this); }

std::string describe(const Tensor& t) {
    if (!t.defined()) return "undefined";
    return std::string(t.dtype() == DType::F32 ? "F32" : "I32") + t.shape().str();
}
