// engine/shape.h — a tensor shape: up to 4 dimensions in PyTorch order.
//
// Shape letters used across the project (llm.c's convention):
//   B batch, T sequence length, C channels (n_embd), V vocabulary, L layers,
//   H heads, D head size (C / H), P virtual tokens (prompt / prefix length).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include "check.h"

struct Shape {
    static constexpr int kMaxDims = 4;
    std::array<int64_t, kMaxDims> dims{};
    int ndim = 0;

    Shape() = default;
    Shape(std::initializer_list<int64_t> d) {
        ENGINE_CHECK(d.size() <= kMaxDims, ShapeError, "shape: at most {} dimensions, got {}", kMaxDims, d.size());
        for (int64_t x : d) {
            ENGINE_CHECK(x >= 0, ShapeError, "shape: negative dimension {}", x);
            dims[ndim++] = x;
        }
    }
    int64_t numel() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; i++) n *= dims[i];
        return n;
    }
    // s[-1] is the last dimension, as in Python.
    int64_t operator[](int i) const {
        int j = i < 0 ? i + ndim : i;
        ENGINE_CHECK(j >= 0 && j < ndim, ShapeError, "shape {}: no dimension {}", str(), i);
        return dims[j];
    }
    int64_t back() const { return (*this)[-1]; }
    // The same shape with the last dimension replaced: (B,T,in) -> (B,T,out).
    Shape with_back(int64_t last) const { Shape s = *this; s.dims[ndim - 1] = last; return s; }
    bool operator==(const Shape& o) const {
        if (ndim != o.ndim) return false;
        for (int i = 0; i < ndim; i++) if (dims[i] != o.dims[i]) return false;
        return true;
    }
    bool operator!=(const Shape& o) const { return !(*this == o); }
    std::string str() const {
        std::string s = "[";
        for (int i = 0; i < ndim; i++) s += (i ? ", " : "") + std::to_string(dims[i]);
        return s + "]";
    }
};
