// engine/module.cpp — the registry of named parameters, and Linear, LayerNorm, Embedding.
//
// A module creates its weights as leaf tensors (counted as Mem::Params) and hands them to a
// ParamList under dotted names. Registering makes a weight trainable; freezing by pattern
// turns requires_grad off, and then no gradient buffer or optimizer state ever exists for it
// (see Note [Frozen tensors skip gradient storage] in engine/autograd.h).
#include "module.h"
#include "check.h"

// ---- the registry

void ParamList::add(const std::string& name, Tensor t) {
    ENGINE_CHECK(!name.empty(), ValueError, "ParamList::add: a parameter needs a name");
    ENGINE_CHECK(t.defined(), ValueError, "ParamList::add: parameter '{}' is an undefined tensor", name);
    ENGINE_CHECK(find(name) == nullptr, ValueError, "ParamList::add: duplicate parameter name '{}'", name);
    for (const Param& p : params_)   // an optimizer would otherwise update a tied weight twice
        ENGINE_CHECK(p.tensor.impl_ptr() != t.impl_ptr(), ValueError,
                     "ParamList::add: '{}' is the same tensor as '{}' (register a shared weight once)", name, p.name);
    t.storage().set_category(Mem::Params);
    t.set_requires_grad(true);
    params_.push_back({name, std::move(t)});
}

Param* ParamList::find(const std::string& name) {
    for (Param& p : params_)
        if (p.name == name) return &p;
    return nullptr;
}

Tensor& ParamList::get(const std::string& name) {
    Param* p = find(name);
    ENGINE_CHECK(p != nullptr, ValueError, "no parameter named '{}' ({} parameters registered)", name, params_.size());
    return p->tensor;
}

int64_t ParamList::count(bool trainable_only) const {
    int64_t n = 0;
    for (const Param& p : params_)
        if (!trainable_only || p.tensor.requires_grad()) n += p.tensor.numel();
    return n;
}

// Sets requires_grad on every parameter whose name matches; none matching is a typo, so it throws.
static int set_trainable(std::vector<Param>& params, const std::string& pattern, bool on) {
    int n = 0;
    for (Param& p : params)
        if (glob_match(pattern, p.name)) { p.tensor.set_requires_grad(on); n++; }
    if (n == 0) {
        std::string some;
        for (size_t i = 0; i < params.size() && i < 4; i++) some += (i ? ", '" : "'") + params[i].name + "'";
        if (params.size() > 4) some += ", ...";
        throw ValueError(fmt::format("{}: no parameter matches '{}' (names look like {})", on ? "unfreeze" : "freeze",
                                     pattern, params.empty() ? "nothing: the list is empty" : some));
    }
    return n;
}

int ParamList::freeze(const std::string& pattern) { return set_trainable(params_, pattern, false); }
int ParamList::unfreeze(const std::string& pattern) { return set_trainable(params_, pattern, true); }

void ParamList::freeze_all() {
    for (Param& p : params_) p.tensor.set_requires_grad(false);
}

std::vector<Tensor> ParamList::trainable() const {
    std::vector<Tensor> out;
    for (const Param& p : params_)
        if (p.tensor.requires_grad()) out.push_back(p.tensor);
    return out;
}

// '*' matches any run of characters (dots included); everything else matches itself.
// Greedy with backtracking to the last '*': linear in practice, no recursion.
bool glob_match(const std::string& pattern, const std::string& name) {
    size_t i = 0, j = 0, star = std::string::npos, resume = 0;
    while (j < name.size()) {
        if (i < pattern.size() && pattern[i] == '*') { star = i++; resume = j; }
        else if (i < pattern.size() && pattern[i] == name[j]) { i++; j++; }
        else if (star != std::string::npos) { i = star + 1; j = ++resume; }   // let the '*' eat one more
        else return false;
    }
    while (i < pattern.size() && pattern[i] == '*') i++;
    return i == pattern.size();
}

// "h.0.attn" + "weight" -> "h.0.attn.weight"; an empty prefix gives just "weight".
static std::string join(const std::string& prefix, const char* leaf) {
    return prefix.empty() ? leaf : prefix + "." + leaf;
}

// ---- Linear

Linear::Linear(int64_t in_, int64_t out_, bool has_bias, Rng& rng, float std) : in(in_), out(out_) {
    ENGINE_CHECK(in > 0 && out > 0, ValueError, "Linear: sizes must be positive, got in {} out {}", in, out);
    weight = Tensor::randn({out, in}, rng, std, Mem::Params);
    if (has_bias) bias = Tensor::zeros({out}, DType::F32, Mem::Params);
}

Linear Linear::zeros(int64_t in, int64_t out, bool has_bias) {
    ENGINE_CHECK(in > 0 && out > 0, ValueError, "Linear: sizes must be positive, got in {} out {}", in, out);
    Linear l;
    l.in = in, l.out = out;
    l.weight = Tensor::zeros({out, in}, DType::F32, Mem::Params);
    if (has_bias) l.bias = Tensor::zeros({out}, DType::F32, Mem::Params);
    return l;
}

// x: (..., in) -> (..., out). A PEFT wrap (LoRA, IA³) replaces the whole call.
Tensor Linear::operator()(const Tensor& x) const { return wrap ? wrap->forward(*this, x) : base_forward(x); }

Tensor Linear::base_forward(const Tensor& x) const {
    return quantized() ? quant_linear(x, *qweight, bias) : linear(x, weight, bias);
}

void Linear::quantize(QType type, const std::string& name) {
    ENGINE_CHECK(!weight.requires_grad(), ValueError,
                 "{}: its weight trains, and a quantised weight cannot (no gradient reaches its blocks); freeze it "
                 "first, e.g. by attaching a PEFT method", name);
    if (quantized()) dequantize();
    set_quantized(QWeight::quantize(weight, type, name + ".weight"));   // the float32 values go; the parameter keeps its name and shape
}

void Linear::set_quantized(QWeight q) {
    ENGINE_CHECK(q.rows == out && q.cols == in && !weight.requires_grad(), ShapeError,
                 "set_quantized: blocks of a [{}, {}] weight for a frozen [{}, {}] Linear", q.rows, q.cols, out, in);
    qweight = std::make_shared<const QWeight>(std::move(q));
    weight.impl().storage.reset();
}

void Linear::dequantize() {
    if (!quantized()) return;
    weight.impl().storage = std::make_shared<Storage>(size_t(out * in) * sizeof(float), Mem::Params);
    qweight->dequantize_rows(0, out, weight.data());
    qweight.reset();
}

void Linear::register_params(ParamList& params, const std::string& prefix) {
    params.add(join(prefix, "weight"), weight);
    if (bias.defined()) params.add(join(prefix, "bias"), bias);
}

// ---- LayerNorm

LayerNorm::LayerNorm(int64_t dim_, bool has_bias, float eps_) : dim(dim_), eps(eps_) {
    ENGINE_CHECK(dim > 0, ValueError, "LayerNorm: dim must be positive, got {}", dim);
    weight = Tensor::full({dim}, 1.f, Mem::Params);
    if (has_bias) bias = Tensor::zeros({dim}, DType::F32, Mem::Params);
}

// x: (..., C) -> (..., C)
Tensor LayerNorm::operator()(const Tensor& x) const { return layernorm(x, weight, bias, eps); }

void LayerNorm::register_params(ParamList& params, const std::string& prefix) {
    params.add(join(prefix, "weight"), weight);
    if (bias.defined()) params.add(join(prefix, "bias"), bias);
}

// ---- Embedding

Embedding::Embedding(int64_t num_, int64_t dim_, Rng& rng, float std) : num(num_), dim(dim_) {
    ENGINE_CHECK(num > 0 && dim > 0, ValueError, "Embedding: sizes must be positive, got {} rows of width {}", num, dim);
    weight = Tensor::randn({num, dim}, rng, std, Mem::Params);
}

Embedding Embedding::zeros(int64_t num, int64_t dim) {
    ENGINE_CHECK(num > 0 && dim > 0, ValueError, "Embedding: sizes must be positive, got {} rows of width {}", num, dim);
    Embedding e;
    e.num = num, e.dim = dim;
    e.weight = Tensor::zeros({num, dim}, DType::F32, Mem::Params);
    return e;
}

// ids: int32 (B,T) -> (B,T,C)
Tensor Embedding::operator()(const Tensor& ids) const { return embedding(ids, weight); }

void Embedding::register_params(ParamList& params, const std::string& prefix) {
    params.add(join(prefix, "weight"), weight);
}
