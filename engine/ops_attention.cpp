// engine/ops_attention.cpp — causal self-attention with optional prefix keys, as batched GEMMs,
// keeping no T × T matrix for backward.
// Read first: the same math as plain loops, forward and backward, reference::causal_attention
// in engine/reference_ops.cpp (Note [Reference ops]).
//
// q, k and v come as the projections give them, (B, T, C) with C = H·D: head h is the D columns
// [h·D, (h+1)·D) of every row, and the GEMMs read it in place (a row stride of C), so heads are
// never copied out into a (B, H, T, D) tensor and back; y is written the same way.
// For every (batch, head), with q (T, D) and k, v (P+T, D), the first P rows being prefix keys:
//     S = scale · q kᵀ   (T, P+T),   A = softmax(S + mask) row-wise,   y = A v   (T, D)
// where the mask lets query i see all P prefix keys and the keys P..P+i (itself and the past).
//
// Note [Attention in row blocks]
// Query rows [i0, i1) see no key at or beyond P + i1, so each block of rows runs its GEMMs over
// only the first P + i1 keys: at T = 256 with blocks of 64 rows that is 5/8 of the dense work.
// Inside a block the few keys right of the diagonal are computed and then masked (A = 0 there).
//
// Note [Attention without the T × T matrix]
// The backward needs A, but A is cheap to rebuild and expensive to keep (B·H·T·(P+T) floats,
// 576 MiB for GPT-2 at 1024 tokens). As in FlashAttention-2, the forward keeps one number per
// query row and head, its log-sum-exp L_i = log Σ_j exp S_ij, and the backward recomputes a block
// of rows of S = scale · q kᵀ with one GEMM and gets A_ij = exp(S_ij − L_i) without a softmax pass.
// Each block of 64 query rows meets every key it sees at once (on a CPU the row of scores fits in
// cache, so the keys need no second level of blocks and no running max): the memory for scores is
// one 64 × (P+T) block per thread, in forward and backward. The price is that GEMM done twice.
//
// Note [Attention: one head per thread]
// One head's GEMMs are small (T × D × T), too small to split over threads, and a team of
// threads woken for every one of them mostly waits. So the (batch, head) pairs are shared out
// among the threads; each runs its heads' GEMMs and softmax alone (gemm inside a parallel
// region is single-threaded, see engine/parallel.h). Each head is computed by one thread in a
// fixed order, so results do not depend on the thread count.
#include <omp.h>
#include <algorithm>
#include <cmath>
#include "blas.h"
#include "ops.h"
#include "parallel.h"
#include "reference_ops.h"
#include "row_kernels.h"

static constexpr int64_t kRowBlock = 64;

// The keys the GEMMs of query row i reach: all up to the end of i's block of rows.
static int64_t block_keys(int64_t i, int64_t P, int64_t T) {
    return P + std::min(T, (i / kRowBlock + 1) * kRowBlock);
}

static void check_shapes(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head,
                         int64_t n_prefix) {
    ENGINE_CHECK(q.ndim() == 3 && k.ndim() == 3 && k.shape() == v.shape() && n_prefix >= 0 && q.size(1) > 0 &&
                     n_head >= 1 && q.size(2) % n_head == 0 && k.size(0) == q.size(0) && k.size(2) == q.size(2) &&
                     k.size(1) == n_prefix + q.size(1),
                 ShapeError,
                 "{}: q {}, k {} and v {} with n_head {} and n_prefix {} do not match (need q (B,T,C) "
                 "with T ≥ 1 and C divisible by n_head, and k, v (B,n_prefix+T,C))",
                 op, q.shape().str(), k.shape().str(), v.shape().str(), n_head, n_prefix);
}

// Query rows [i0, i1) of one head, their scores in a (ld floats a row, row 0 = query i0), become
// probabilities: row i is a softmax over its P + i + 1 visible keys (≥ 1, so the max is finite),
// and 0 for the masked keys its GEMMs reach. If lse is given, lse[i] = log Σ_j exp(score_ij).
static void masked_softmax(float* a, int64_t i0, int64_t i1, int64_t P, int64_t T, int64_t ld, float* lse) {
    for (int64_t i = i0; i < i1; i++) {
        float* row = a + (i - i0) * ld;
        const int64_t n = P + i + 1;
        const float m = row_max(row, n);
        const double s = row_exp_in_place(row, n, m);
        const float inv = float(1.0 / s);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        std::fill(row + n, row + block_keys(i, P, T), 0.f);
        if (lse) lse[i] = m + float(std::log(s));
    }
}

// One block of rows' softmax backward, in place: d holds dA on entry and dS = A ⊙ (dA − rowsum(dA ⊙ A))
// on exit (the same row layout as masked_softmax).
static void masked_softmax_backward(const float* a, float* d, int64_t i0, int64_t i1, int64_t P, int64_t T,
                                    int64_t ld) {
    for (int64_t i = i0; i < i1; i++) {
        const float* ai = a + (i - i0) * ld;
        float* di = d + (i - i0) * ld;
        const int64_t n = P + i + 1;
        const float dot = float(row_dot(di, ai, n));
#pragma omp simd
        for (int64_t j = 0; j < n; j++) di[j] = ai[j] * (di[j] - dot);
        std::fill(di + n, di + block_keys(i, P, T), 0.f);   // masked: A = 0, so no gradient
    }
}

// q: (B,T,C)  k, v: (B,P+T,C), C = n_head·D  ->  (B,T,C). Keeps q, k, v and L (B,H,T) for backward.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head, int64_t n_prefix,
                        float scale) {
    check_shapes("causal_attention", q, k, v, n_head, n_prefix);
    if (reference_ops()) return reference::causal_attention(q, k, v, n_head, n_prefix, scale);
    const int64_t B = q.size(0), T = q.size(1), C = q.size(2), H = n_head, D = C / H, P = n_prefix, Tk = P + T;
    const int64_t last = (T - 1) / kRowBlock * kRowBlock;   // the start of the last block of rows
    const bool any = needs_grad(q) || needs_grad(k) || needs_grad(v);
    // Head h of batch b starts at column h·D of row b·T (q, y) or b·Tk (k, v); rows are C apart.
    auto at_q = [=](int64_t bh) { return (bh / H) * T * C + (bh % H) * D; };
    auto at_k = [=](int64_t bh) { return (bh / H) * Tk * C + (bh % H) * D; };

    const int64_t nt = std::min<int64_t>(num_threads(), B * H), rb = std::min(T, kRowBlock);
    Tensor y = Tensor::empty(q.shape()), L = any ? Tensor::empty({B, H, T}) : Tensor();
    Tensor scratch = Tensor::empty({nt, rb, Tk});   // per thread: one block of rows of S, then A
    const float *qp = q.data(), *kp = k.data(), *vp = v.data();
    float *yp = y.data(), *lp = any ? L.data() : nullptr;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t bh = 0; bh < B * H; bh++) {
        const float *qb = qp + at_q(bh), *kb = kp + at_k(bh), *vb = vp + at_k(bh);
        float *ab = scratch.data() + omp_get_thread_num() * rb * Tk, *yb = yp + at_q(bh);
        for (int64_t i0 = 0; i0 < T; i0 += kRowBlock) {
            const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
            // S[i0:i1, 0:n] = scale · q[i0:i1] k[0:n]ᵀ;  A = softmax;  y[i0:i1] = A v[0:n]
            gemm_ld(Trans::N, Trans::T, i1 - i0, n, D, scale, qb + i0 * C, C, kb, C, 0.f, ab, Tk);
            masked_softmax(ab, i0, i1, P, T, Tk, lp ? lp + bh * T : nullptr);
            gemm_ld(Trans::N, Trans::N, i1 - i0, D, n, 1.f, ab, Tk, vb, C, 0.f, yb + i0 * C, C);
        }
    }
    Saved qs = any ? save(q) : Saved(), ks = any ? save(k) : Saved(), vs = needs_grad(q) || needs_grad(k) ? save(v) : Saved();
    Saved ls = any ? save(L) : Saved();
    record(y, "causal_attention", {q, k, v},
           [qs, ks, vs, ls, B, H, T, C, P, Tk, last, scale, at_q, at_k](const Tensor& dy, Grads& g) {
        // forward: S = scale q kᵀ, A = softmax(S) per row (masked entries are constant 0), y = A v. So
        //   dv = Aᵀ dy,  dA = dy vᵀ,  dS = A ⊙ (dA − rowsum(dA ⊙ A))  (softmax backward, per row),
        //   dq = scale · dS k,  dk = scale · dSᵀ q,
        // one block of query rows at a time, with A rebuilt as exp(S − L) (Note [Attention without
        // the T × T matrix]). Masked entries have A = 0, hence dS = 0: they pass no gradient. dk and
        // dv rows [0, P+i1) collect from every block of rows at or after them; blocks run last to
        // first, so the first one (which reaches all P+T keys) writes with the buffer's beta and
        // later ones add.
        const int64_t D = C / H;
        const bool need_q = g.needs(0), need_k = g.needs(1), need_v = g.needs(2);
        GradBuf dq = need_q ? g.buf(0) : GradBuf(), dk = need_k ? g.buf(1) : GradBuf();
        GradBuf dv = need_v ? g.buf(2) : GradBuf();
        const int64_t nt = std::min<int64_t>(num_threads(), B * H), rb = std::min(T, kRowBlock);
        Tensor scratch = Tensor::empty({nt, 2, rb, Tk});   // per thread: a block of rows of A, and of dA then dS
        const float *dyp = dy.data(), *qp = qs.data(), *kp = ks.data(), *lp = ls.data();
        const float* vp = vs.defined() ? vs.data() : nullptr;   // only dq and dk need v
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t bh = 0; bh < B * H; bh++) {
            float* a = scratch.data() + omp_get_thread_num() * 2 * rb * Tk;
            float* ds = a + rb * Tk;
            const float *qb = qp + at_q(bh), *kb = kp + at_k(bh), *vb = vp + at_k(bh), *dyb = dyp + at_q(bh);
            const float* lb = lp + bh * T;
            for (int64_t i0 = last; i0 >= 0; i0 -= kRowBlock) {
                const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
                // A[i0:i1, 0:n] = exp(scale · q[i0:i1] k[0:n]ᵀ − L), 0 where masked
                gemm_ld(Trans::N, Trans::T, i1 - i0, n, D, scale, qb + i0 * C, C, kb, C, 0.f, a, Tk);
                for (int64_t i = i0; i < i1; i++) {
                    float* row = a + (i - i0) * Tk;
                    const int64_t seen = P + i + 1;
                    const float li = lb[i];
#pragma omp simd
                    for (int64_t j = 0; j < seen; j++) row[j] = exp_nonpos(row[j] - li);
                    std::fill(row + seen, row + n, 0.f);
                }
                if (need_v)   // dv[0:n] += A[i0:i1, 0:n]ᵀ dy[i0:i1]
                    gemm_ld(Trans::T, Trans::N, n, D, i1 - i0, 1.f, a, Tk, dyb + i0 * C, C,
                            i0 == last ? dv.beta : 1.f, dv.p + at_k(bh), C);
                if (!need_q && !need_k) continue;
                // dA[i0:i1, 0:n] = dy[i0:i1] v[0:n]ᵀ, then dS in place
                gemm_ld(Trans::N, Trans::T, i1 - i0, n, D, 1.f, dyb + i0 * C, C, vb, C, 0.f, ds, Tk);
                masked_softmax_backward(a, ds, i0, i1, P, T, Tk);
                if (need_q)   // dq[i0:i1] = scale · dS[i0:i1, 0:n] k[0:n]
                    gemm_ld(Trans::N, Trans::N, i1 - i0, D, n, scale, ds, Tk, kb, C, dq.beta,
                            dq.p + at_q(bh) + i0 * C, C);
                if (need_k)   // dk[0:n] += scale · dS[i0:i1, 0:n]ᵀ q[i0:i1]
                    gemm_ld(Trans::T, Trans::N, n, D, i1 - i0, scale, ds, Tk, qb + i0 * C, C,
                            i0 == last ? dk.beta : 1.f, dk.p + at_k(bh), C);
            }
        }
    });
    return y;
}

// Attention as it is usually written: A, all (B, H, T, P+T) probabilities, is kept for backward
// (12 layers × 12 heads × 1024² floats ≈ 576 MiB at GPT-2's shape). causal_attention above gives
// the same values and gradients keeping one float per row instead; this one is what it replaces,
// tested equal to it. q: (B,T,C)  k, v: (B,P+T,C), C = n_head·D  ->  (B,T,C)
Tensor causal_attention_saved_probs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head, int64_t n_prefix,
                                    float scale) {
    check_shapes("causal_attention_saved_probs", q, k, v, n_head, n_prefix);
    const int64_t B = q.size(0), T = q.size(1), C = q.size(2), H = n_head, D = C / H, P = n_prefix, Tk = P + T;
    const int64_t last = (T - 1) / kRowBlock * kRowBlock;   // the start of the last block of rows
    const bool need_q = needs_grad(q), need_k = needs_grad(k), need_v = needs_grad(v);
    const bool any = need_q || need_k || need_v;
    // Head h of batch b starts at column h·D of row b·T (q, y) or b·Tk (k, v); rows are C apart.
    auto at_q = [=](int64_t bh) { return (bh / H) * T * C + (bh % H) * D; };
    auto at_k = [=](int64_t bh) { return (bh / H) * Tk * C + (bh % H) * D; };

    // The probabilities A are kept for backward; without it each thread has one head's worth of scratch.
    const int64_t nt = std::min<int64_t>(num_threads(), B * H);
    Tensor y = Tensor::empty(q.shape()), A = any ? Tensor::empty({B, H, T, Tk}) : Tensor::empty({nt, 1, T, Tk});
    const float *qp = q.data(), *kp = k.data(), *vp = v.data();
    float *yp = y.data(), *ap = A.data();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t bh = 0; bh < B * H; bh++) {
        const float *qb = qp + at_q(bh), *kb = kp + at_k(bh), *vb = vp + at_k(bh);
        float *ab = ap + (any ? bh : omp_get_thread_num()) * T * Tk, *yb = yp + at_q(bh);
        for (int64_t i0 = last; i0 >= 0; i0 -= kRowBlock) {   // S[i0:i1, 0:n] = scale · q[i0:i1] k[0:n]ᵀ
            const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
            gemm_ld(Trans::N, Trans::T, i1 - i0, n, D, scale, qb + i0 * C, C, kb, C, 0.f, ab + i0 * Tk, Tk);
        }
        masked_softmax(ab, 0, T, P, T, Tk, nullptr);
        for (int64_t i0 = last; i0 >= 0; i0 -= kRowBlock) {   // y[i0:i1] = A[i0:i1, 0:n] v[0:n]
            const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
            gemm_ld(Trans::N, Trans::N, i1 - i0, D, n, 1.f, ab + i0 * Tk, Tk, vb, C, 0.f, yb + i0 * C, C);
        }
    }

    // dv needs only A; dq needs k (and v for dA); dk needs q (and v).
    Saved as = any ? save(A) : Saved(), qs = need_k ? save(q) : Saved(), ks = need_q ? save(k) : Saved();
    Saved vs = need_q || need_k ? save(v) : Saved();
    record(y, "causal_attention_saved_probs", {q, k, v},
           [as, qs, ks, vs, B, H, T, C, P, Tk, last, scale, at_q, at_k](const Tensor& dy, Grads& g) {
        // forward: S = scale q kᵀ, A = softmax(S) per row (masked entries are constant 0), y = A v. So
        //   dv = Aᵀ dy,  dA = dy vᵀ,  dS = A ⊙ (dA − rowsum(dA ⊙ A))  (softmax backward, per row),
        //   dq = scale · dS k,  dk = scale · dSᵀ q.
        // Masked entries have A = 0, hence dS = 0: they pass no gradient. dk and dv rows [0, P+i1)
        // collect from every block of rows at or after them; blocks run last to first, so the first
        // one (which reaches all P+T keys) writes with the buffer's beta and later ones add.
        const int64_t D = C / H;
        const bool need_q = g.needs(0), need_k = g.needs(1), need_v = g.needs(2);
        GradBuf dq = need_q ? g.buf(0) : GradBuf(), dk = need_k ? g.buf(1) : GradBuf();
        GradBuf dv = need_v ? g.buf(2) : GradBuf();
        const int64_t nt = std::min<int64_t>(num_threads(), B * H);
        Tensor dS = Tensor::empty({nt, T, Tk});   // per thread: one head's dA, then dS; reused
        const float *dyp = dy.data(), *ap = as.data();
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t bh = 0; bh < B * H; bh++) {
            float* ds = dS.data() + omp_get_thread_num() * T * Tk;
            const float *ab = ap + bh * T * Tk, *dyb = dyp + at_q(bh);
            for (int64_t i0 = last; need_v && i0 >= 0; i0 -= kRowBlock) {   // dv[0:n] += A[i0:i1, 0:n]ᵀ dy[i0:i1]
                const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
                gemm_ld(Trans::T, Trans::N, n, D, i1 - i0, 1.f, ab + i0 * Tk, Tk, dyb + i0 * C, C,
                        i0 == last ? dv.beta : 1.f, dv.p + at_k(bh), C);
            }
            if (!need_q && !need_k) continue;
            const float* vb = vs.data() + at_k(bh);
            for (int64_t i0 = last; i0 >= 0; i0 -= kRowBlock) {   // dA[i0:i1, 0:n] = dy[i0:i1] v[0:n]ᵀ
                const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
                gemm_ld(Trans::N, Trans::T, i1 - i0, n, D, 1.f, dyb + i0 * C, C, vb, C, 0.f, ds + i0 * Tk, Tk);
            }
            masked_softmax_backward(ab, ds, 0, T, P, T, Tk);
            for (int64_t i0 = last; i0 >= 0; i0 -= kRowBlock) {
                const int64_t i1 = std::min(T, i0 + kRowBlock), n = P + i1;
                if (need_q)   // dq[i0:i1] = scale · dS[i0:i1, 0:n] k[0:n]
                    gemm_ld(Trans::N, Trans::N, i1 - i0, D, n, scale, ds + i0 * Tk, Tk, ks.data() + at_k(bh), C,
                            dq.beta, dq.p + at_q(bh) + i0 * C, C);
                if (need_k)   // dk[0:n] += scale · dS[i0:i1, 0:n]ᵀ q[i0:i1]
                    gemm_ld(Trans::T, Trans::N, n, D, i1 - i0, scale, ds + i0 * Tk, Tk, qs.data() + at_q(bh) + i0 * C,
                            C, i0 == last ? dk.beta : 1.f, dk.p + at_k(bh), C);
            }
        }
    });
    return y;
}
