// models/generate.cpp — sampling from the GPT, with and without a key/value cache.
//
// Causal attention means a token's keys and values never change once computed: position t's
// k and v depend only on tokens 0..t. So generation keeps them (KVCache, models/gpt.h) and runs
// each new token alone: its q, k, v, its attention over the cached rows plus itself, its MLP,
// and the LM head for that one row. The Linears are called as in forward(), so a LoRA or IA³
// seam applies to the one token's row; prefix tuning's rows are the cache's first rows and
// prompt tuning's virtual tokens go through the first (prompt) step, so the cache holds them.
//
// The plain version is GPT::generate with use_cache = false: the whole context through
// forward() for every new token. Both give the same tokens at temperature 0 (test).
#include <algorithm>
#include <cmath>
#include <cstring>
#include "gpt.h"

// ---- attention of new rows against the cache (no grad)

// q: T new query rows (stride C); K, V: the cache's rows 0..past+T-1 (stride C), the new rows
// last. Query i sees cache rows 0..past+i. y: (T, C), heads side by side. A plain loop per
// (head, query): softmax(q·kᵀ·scale) v, with the running maximum for stability.
static void attend_cached(const float* q, const float* K, const float* V, int64_t past, int64_t T, int64_t C,
                          int64_t H, float scale, float* y) {
    const int64_t D = C / H;
#pragma omp parallel for schedule(static) collapse(2) if (H * T * (past + T) * D >= (1 << 16))
    for (int64_t hh = 0; hh < H; hh++)
        for (int64_t i = 0; i < T; i++) {
            const int64_t n = past + i + 1;
            const float* qi = q + i * C + hh * D;
            std::vector<float> s(static_cast<size_t>(n));
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                const float* kj = K + j * C + hh * D;
                float d = 0.f;
                for (int64_t e = 0; e < D; e++) d += qi[e] * kj[e];
                s[size_t(j)] = d * scale;
                mx = std::max(mx, s[size_t(j)]);
            }
            float z = 0.f;
            for (float& e : s) z += (e = std::exp(e - mx));
            float* yi = y + i * C + hh * D;
            std::fill(yi, yi + D, 0.f);
            for (int64_t j = 0; j < n; j++) {
                const float w = s[size_t(j)] / z, *vj = V + j * C + hh * D;
                for (int64_t e = 0; e < D; e++) yi[e] += w * vj[e];
            }
        }
}

std::vector<float> GPT::decode(const std::vector<int32_t>& ids, KVCache& cache) {
    NoGradGuard no_grad;
    ENGINE_CHECK(!ids.empty(), ValueError, "decode: no tokens");
    const int64_t C = config.n_embd, H = config.n_head, L = config.n_layer;
    const bool first = cache.len == 0;
    if (hooks) hooks->set_training(false);
    if (first) {   // the cache starts with the prefix rows, if a method adds them
        cache.k.assign(size_t(L), std::vector<float>(size_t(config.block_size * C)));
        cache.v.assign(size_t(L), std::vector<float>(size_t(config.block_size * C)));
        const int64_t Pp = hooks ? hooks->n_prefix() : 0;
        for (int64_t l = 0; l < L && Pp > 0; l++) {
            auto [pk, pv] = hooks->prefix_kv(l, 1);   // (1,P,C) each
            std::memcpy(cache.k[size_t(l)].data(), pk.data(), size_t(Pp * C) * sizeof(float));
            std::memcpy(cache.v[size_t(l)].data(), pv.data(), size_t(Pp * C) * sizeof(float));
        }
        cache.len = Pp;
    }
    const int64_t Pv = first && hooks ? hooks->n_virtual() : 0, T = Pv + int64_t(ids.size()), past = cache.len;
    ENGINE_CHECK(past + T <= config.block_size, ShapeError,
                 "decode: {} cached and {} new positions do not fit block_size {}", past, T, config.block_size);

    Tensor x = wte(Tensor::from_ints(ids, {1, int64_t(ids.size())}));
    if (Pv > 0) x = concat_seq(hooks->virtual_tokens(1), x);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; t++) pos[size_t(t)] = int32_t(past + t);   // as forward(): after the prefix
    x = add(x, wpe(Tensor::from_ints(pos, {1, T})));

    for (int64_t l = 0; l < L; l++) {
        Block& b = h[size_t(l)];
        auto [q, k, v] = project_qkv(l, b.ln_1(x));   // (1,T,C) each
        float *Kc = cache.k[size_t(l)].data(), *Vc = cache.v[size_t(l)].data();
        std::memcpy(Kc + past * C, k.data(), size_t(T * C) * sizeof(float));
        std::memcpy(Vc + past * C, v.data(), size_t(T * C) * sizeof(float));
        Tensor y = Tensor::empty({1, T, C});
        attend_cached(q.data(), Kc, Vc, past, T, C, H, 1.0f / std::sqrt(float(C / H)), y.data());
        Tensor f = b.attn.o_proj(y);
        if (hooks) f = hooks->block_output(Site::Attn, l, f);
        x = add(x, f);
        Tensor m = b.mlp.fc_out(gelu(b.mlp.fc_in(b.ln_2(x))));
        if (hooks) m = hooks->block_output(Site::Mlp, l, m);
        x = add(x, m);
    }
    cache.len = past + T;
    Tensor last = ln_f(slice_seq(x, T - 1, 1));   // only the last row's logits are needed
    return linear(last, wte.weight).to_vector();
}

// ---- sampling

// The next token from one row of logits: the largest (temperature 0), or a draw from
// softmax(logits / temperature) over the top_k largest (top_k 0 = all), ties to the lower id.
static int32_t sample(const float* logits, int64_t V, float temperature, int64_t top_k, Rng& rng) {
    if (temperature == 0.f) return int32_t(std::max_element(logits, logits + V) - logits);
    std::vector<std::pair<float, int32_t>> cand;
    for (int32_t i = 0; i < V; i++) cand.push_back({logits[i] / temperature, i});
    std::sort(cand.begin(), cand.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    if (top_k > 0 && top_k < V) cand.resize(size_t(top_k));
    double total = 0;
    std::vector<double> p(cand.size());
    for (size_t i = 0; i < cand.size(); i++) total += p[i] = std::exp(double(cand[i].first - cand[0].first));
    double u = rng.uniform() * total;
    size_t i = 0;
    while (i + 1 < cand.size() && u >= p[i]) u -= p[i++];
    return cand[i].second;
}

std::vector<int32_t> GPT::generate(std::vector<int32_t> tokens, int64_t max_new, float temperature, int64_t top_k,
                                   Rng& rng, bool use_cache, const std::function<void(int32_t)>& on_token) {
    ENGINE_CHECK(!tokens.empty(), ValueError, "generate: the prompt is empty");
    ENGINE_CHECK(temperature >= 0.f, ValueError, "generate: temperature must be >= 0, got {}", temperature);
    NoGradGuard no_grad;
    const int64_t window = token_room();
    ENGINE_CHECK(window >= 1, ValueError, "generate: no room left in block_size {}", config.block_size);
    const int64_t V = config.vocab_size;
    KVCache cache;
    std::vector<float> logits;
    for (int64_t step = 0; step < max_new; step++) {
        const int64_t n = int64_t(tokens.size());
        // The cache holds positions 0..window-1; once the context slides past them, every step
        // runs the last `window` tokens again (their positions have all changed).
        if (use_cache && n <= window) {
            logits = step == 0 ? decode(tokens, cache) : decode({tokens.back()}, cache);
        } else {
            const int64_t start = std::max<int64_t>(0, n - window);
            std::vector<int32_t> ctx(tokens.begin() + start, tokens.end());
            Tensor all = forward(Tensor::from_ints(ctx, {1, int64_t(ctx.size())}));
            logits.assign(all.data() + (int64_t(ctx.size()) - 1) * V, all.data() + int64_t(ctx.size()) * V);
        }
        tokens.push_back(sample(logits.data(), V, temperature, top_k, rng));
        if (on_token) on_token(tokens.back());
    }
    return tokens;
}
