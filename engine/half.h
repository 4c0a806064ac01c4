// engine/half.h — IEEE binary16 (fp16) to and from float32, bit by bit: the scales of q8_0 and
// q4_0 blocks (engine/quant.h) and F16 tensors in safetensors files.
//
// binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits; exponent 0 is ±0 and the
// subnormals man · 2⁻²⁴, exponent 31 is ±inf (man 0) and NaN. binary32 has 8 bits (bias 127) and 23.
#pragma once
#include <cstdint>
#include <cstring>

inline float half_to_float(uint16_t h) {   // exact: every fp16 value is a float32 value
    const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0x1F) bits = sign | 0x7F800000 | (man << 13);   // inf, NaN
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);   // 112 = 127 - 15
    else if (man == 0) bits = sign;   // ±0
    else {   // subnormal: man · 2^-24, renormalised
        int e = -1;
        uint32_t m = man;
        do { e++; m <<= 1; } while ((m & 0x400) == 0);
        bits = sign | uint32_t(127 - 15 - e) << 23 | ((m & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Rounded to the nearest fp16, ties to even; beyond 65504 (after rounding) it is ±inf, NaN stays NaN.
inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t abs = x & 0x7FFFFFFF;
    if (abs >= 0x7F800000) return uint16_t(sign | 0x7C00 | (abs > 0x7F800000 ? 0x200 : 0));   // inf, NaN
    const int32_t exp = int32_t(abs >> 23) - 127 + 15;   // the fp16 exponent field, before rounding
    if (exp >= 31) return uint16_t(sign | 0x7C00);        // too large: inf
    uint32_t man = (abs & 0x7FFFFF) | 0x800000;           // 24 significant bits, the leading 1 explicit
    // Keep 11 of them (10 for the field plus the leading 1), or fewer for a subnormal; round the rest.
    const uint32_t shift = exp >= 1 ? 13 : uint32_t(14 - exp);
    if (shift > 24) return uint16_t(sign);                 // below half the smallest subnormal: ±0
    uint32_t h = man >> shift;
    const uint32_t rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1))) h++;     // may carry into the exponent: still right
    // A normal keeps its exponent (the leading 1 sits in bit 10 and adds exactly 1 << 10 to it).
    return uint16_t(sign | (exp >= 1 ? (uint32_t(exp - 1) << 10) + h : h));
}
