// engine/rng.h — the project's seeded random generator (xoshiro256**, Box–Muller normals).
//
// Not std::mt19937 + std::normal_distribution: the standard leaves the distributions'
// algorithms to each library, so the same seed would give other weights elsewhere.
// The state is four integers, so a checkpoint can save and restore it exactly.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

class Rng {
public:
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed) {
        uint64_t x = seed;
        for (auto& w : s_) w = splitmix64(x);   // spread the seed over the whole state
    }
    uint64_t next_u64() {
        const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
        s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
        s_[2] ^= t; s_[3] = rotl(s_[3], 45);
        return r;
    }
    double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }   // [0, 1)
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    uint64_t below(uint64_t n) { return n ? next_u64() % n : 0; }     // [0, n); bias < 2^-40 for our n
    double normal() {   // Box–Muller; uses the cosine branch only, so one call = two uniforms
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    // Save / restore, e.g. into a checkpoint's metadata: "s0 s1 s2 s3" in decimal.
    std::string state() const {
        return std::to_string(s_[0]) + " " + std::to_string(s_[1]) + " " + std::to_string(s_[2]) + " " +
               std::to_string(s_[3]);
    }
    bool set_state(const std::string& text);   // false when the text is not four integers

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    static uint64_t splitmix64(uint64_t& x) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    std::array<uint64_t, 4> s_{};
};
