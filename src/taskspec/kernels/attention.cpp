// Batch-invariant masked attention for x86-64 CPUs with AVX2 + FMA: bf16 or fp32 inputs, fp32 arithmetic.
//
//   q [B, Hq, n, D], k / v [B, Hkv, L, D] (strided, last dim contiguous), mask [B or 1, n, L] bool (True = attend),
//   out [B, n, Hq, D] contiguous, in the input dtype. Query head h reads kv head h / (Hq / Hkv) (GQA).
//
// Batch invariance (what greedy speculative decoding relies on): out[b, i, h, :] is a fixed function of q[b, h, i],
// of the *ordered list of visible keys* (those j with mask[i, j], in ascending j) and of their k / v rows, and of
// nothing else: not of n, L, the masked keys (never read, so they may even hold NaN), the other query rows or heads,
// the slots the visible keys sit in, the work split or the number of threads. So a tree node verified at slot
// past + 7 with its ancestors at past + 1, past + 4 gets bitwise the output it gets when decoded alone with those
// ancestors at past, past + 1. For one (b, i, h), with t = 0 .. T-1 the visible keys in ascending order:
//
//   score_t = dot(q, k_t) * scaling                      dot: see below (the bf16 linear kernel's scheme)
//   if softcap > 0: score_t = tanhf(score_t / softcap) * softcap     (Gemma 2 style logit capping)
//   m = max_t score_t
//   w_t = exp8(score_t - m)                              exp8: the fixed AVX2 exp below (w = 1 exactly at the max)
//   sum = (((0 + w_0) + w_1) + ...) + w_{T-1}            ascending t, fp32
//   acc[d] = fma(w_{T-1}, v_{T-1}[d], ... fma(w_1, v_1[d], fma(w_0, v_0[d], 0)))     ascending t, fp32
//   out[d] = round_to_nearest_even_bf16(acc[d] / sum)    (fp32 output: acc[d] / sum)
//   T = 0 (a row that sees nothing): out = 0.
//
// dot(q, k) over D, with D16 = D rounded down to 16: one 8-lane fp32 accumulator a[l] = 0; for each 16-block
// d0 < D16: a[l] = fma(q[e_l], k[e_l], a[l]) then a[l] = fma(q[o_l], k[o_l], a[l]), where for bf16 e_l = d0 + 2l,
// o_l = d0 + 2l + 1 (the 16 bf16 are loaded as 8 uint32: `<< 16` gives the evens, `& 0xffff0000` the odds, exact)
// and for fp32 e_l = d0 + l, o_l = d0 + 8 + l; then s = ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)); then
// s = fma(q[d], k[d], s) for d = D16 .. D-1 in order. bf16 -> fp32 conversions are exact (a shift).
//
// Work split (none of it changes a single operation above): one OpenMP loop over work items = (b, i, kv head,
// block of up to 4 query heads sharing that kv head); an item does everything for its rows (visible-key list, scores,
// max / exp / sum, weighted values, output), so each output element's fma chain runs start to end in one item,
// ascending t. Register blocking (several keys x heads for the scores, several 16-blocks x heads for the values)
// only interleaves independent chains; fewer heads per block when there are fewer items than threads. One barrier
// per call. Compiled with -ffp-contract=off, so every fma is explicit; MXCSR is set to round-to-nearest without
// flush-to-zero / denormals-are-zero in every worker for the call (and restored).
//
// Plain C ABI, loaded with ctypes by attention.py (built by build.py, like bf16_linear.cpp).

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include <omp.h>

#include "bf16_common.h"  // bf16 <-> fp32, hsum8 (shared with bf16_linear.cpp)

namespace {

using namespace ts;

constexpr int64_t KEY_BLOCK = 32;    // values: visible keys per sweep over D (their V rows stay in L1)
constexpr int MAX_HB = 4;            // heads per block (they share a kv head: one K / V load feeds them all)
constexpr int64_t SERIAL_MACS = int64_t(1) << 17;  // below this a call runs on one thread (no effect on results)

// exp(x) for x <= 0, 8 lanes, each lane by the same fixed operations (Cephes expf: range reduction by ln 2 in two
// parts, degree-6 polynomial; ~1-2 ulp). x < -86.5 gives exactly 0 (keeps the results normal: no denormals).
inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-86.5f);
    const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(underflow, y);
}

// Element types: how 16 elements load into two fp32 vectors (lane order of the dot product / accumulators), where
// element r of a 16-block lands in that [a, b] pair, and the output conversion.
struct Bf16 {
    using T = uint16_t;
    static inline void load16(const T* p, __m256& a, __m256& b) {
        const __m256i raw = load_bf16x16(p);
        a = bf16x16_evens(raw);
        b = bf16x16_odds(raw);
    }
    static inline float load1(const T* p) { return bf16_to_f32(*p); }
    static inline int64_t pos(int64_t r) { return (r & 1) ? 8 + (r >> 1) : (r >> 1); }
    static inline void store1(T* p, float f) { *p = f32_to_bf16_rne(f); }
};

struct F32 {
    using T = float;
    static inline void load16(const T* p, __m256& a, __m256& b) {
        a = _mm256_loadu_ps(p);
        b = _mm256_loadu_ps(p + 8);
    }
    static inline float load1(const T* p) { return *p; }
    static inline int64_t pos(int64_t r) { return r; }
    static inline void store1(T* p, float f) { *p = f; }
};

struct Problem {
    const void* q;
    const void* k;
    const void* v;
    const uint8_t* mask;
    void* out;
    int64_t B, Hq, Hkv, n, L, D;
    int64_t qs_b, qs_h, qs_i, ks_b, ks_h, ks_j, vs_b, vs_h, vs_j, ms_b, ms_i;  // element strides
    float scaling, softcap;
    int64_t G, HB, NHB, D16, Lp;  // heads per kv head, heads per block, blocks per kv head, D rounded, padded L
};

// Per-thread scratch for one work item (at most MAX_HB heads).
struct Scratch {
    int32_t* vis;  // [L] visible key indices, ascending
    float* qf;     // [MAX_HB, D] fp32 queries, 16-blocks in the dot product's lane order
    float* sc;     // [MAX_HB, Lp] scores, then weights w_t
    float* acc;    // [MAX_HB, D] output accumulators, same lane order as qf
};

// A work item: one (b, i), one kv head g, one block of hb query heads [h0, h0 + hb) (they share K / V loads).
struct Item {
    int64_t b, i, g, h0;
    int hb;
};

inline Item item_of(const Problem& p, int64_t index) {
    Item r;
    const int64_t blk = index % p.NHB;
    int64_t rest = index / p.NHB;
    r.g = rest % p.Hkv;
    rest /= p.Hkv;
    r.i = rest % p.n;
    r.b = rest / p.n;
    r.h0 = r.g * p.G + blk * p.HB;
    r.hb = static_cast<int>(std::min<int64_t>(p.HB, p.G - blk * p.HB));
    return r;
}

// Scores of visible keys t .. t+KB-1 for HB heads: HB * KB independent dot products sharing the key loads.
template <class E, int HB, int KB>
inline void score_block(const Problem& p, const float* qf, const typename E::T* kbase, const int32_t* vis,
                        float* sc, int64_t t) {
    const typename E::T* kp[KB];
    for (int c = 0; c < KB; ++c) kp[c] = kbase + static_cast<int64_t>(vis[t + c]) * p.ks_j;
    __m256 acc[HB][KB];
    for (int h = 0; h < HB; ++h)
        for (int c = 0; c < KB; ++c) acc[h][c] = _mm256_setzero_ps();
    for (int64_t d0 = 0; d0 < p.D16; d0 += 16) {
        for (int c = 0; c < KB; ++c) {
            __m256 ka, kb;
            E::load16(kp[c] + d0, ka, kb);
            for (int h = 0; h < HB; ++h) {
                acc[h][c] = _mm256_fmadd_ps(_mm256_loadu_ps(qf + h * p.D + d0), ka, acc[h][c]);
                acc[h][c] = _mm256_fmadd_ps(_mm256_loadu_ps(qf + h * p.D + d0 + 8), kb, acc[h][c]);
            }
        }
    }
    for (int h = 0; h < HB; ++h) {
        for (int c = 0; c < KB; ++c) {
            float s = hsum8(acc[h][c]);
            for (int64_t d = p.D16; d < p.D; ++d) s = std::fma(qf[h * p.D + d], E::load1(kp[c] + d), s);
            s = s * p.scaling;
            if (p.softcap > 0.0f) s = std::tanh(s / p.softcap) * p.softcap;
            sc[h * p.Lp + t + c] = s;
        }
    }
}

// acc[h][d0 .. d0 + 16*DB) += w[h][t] * v_t[d0 .. d0 + 16*DB) for visible t in [t0, t1), ascending t.
template <class E, int HB, int DB>
inline void accumulate_block(const Problem& p, const float* sc, const typename E::T* vbase, const int32_t* vis,
                             int64_t t0, int64_t t1, int64_t d0, float* acc) {
    __m256 a[HB][DB][2];
    for (int h = 0; h < HB; ++h)
        for (int c = 0; c < DB; ++c) {
            a[h][c][0] = _mm256_loadu_ps(acc + h * p.D + d0 + 16 * c);
            a[h][c][1] = _mm256_loadu_ps(acc + h * p.D + d0 + 16 * c + 8);
        }
    for (int64_t t = t0; t < t1; ++t) {
        const typename E::T* vp = vbase + static_cast<int64_t>(vis[t]) * p.vs_j + d0;
        __m256 wv[HB];
        for (int h = 0; h < HB; ++h) wv[h] = _mm256_broadcast_ss(sc + h * p.Lp + t);
        for (int c = 0; c < DB; ++c) {
            __m256 va, vb;
            E::load16(vp + 16 * c, va, vb);
            for (int h = 0; h < HB; ++h) {
                a[h][c][0] = _mm256_fmadd_ps(wv[h], va, a[h][c][0]);
                a[h][c][1] = _mm256_fmadd_ps(wv[h], vb, a[h][c][1]);
            }
        }
    }
    for (int h = 0; h < HB; ++h)
        for (int c = 0; c < DB; ++c) {
            _mm256_storeu_ps(acc + h * p.D + d0 + 16 * c, a[h][c][0]);
            _mm256_storeu_ps(acc + h * p.D + d0 + 16 * c + 8, a[h][c][1]);
        }
}

// One work item, start to end: visible keys, fp32 queries, scores, max / exp / sum, weighted values, output.
template <class E, int HB>
void attend(const Problem& p, const Item& r, const Scratch& s) {
    using T = typename E::T;
    constexpr int KB = HB == 1 ? 8 : HB == 2 ? 5 : HB == 3 ? 4 : 3;  // scores: ~8-12 independent fma chains
    constexpr int DB = HB == 1 ? 4 : HB == 2 ? 2 : 1;                // outputs: 16-blocks per sweep, ~8 chains

    // visible keys, ascending
    const uint8_t* m = p.mask + r.b * p.ms_b + r.i * p.ms_i;
    int32_t* vis = s.vis;
    int64_t nvis = 0;
    for (int64_t j = 0; j < p.L; ++j) {  // branch-free (tree masks are irregular)
        vis[nvis] = static_cast<int32_t>(j);
        nvis += m[j] != 0;
    }

    // queries -> fp32 in the lane order of the dot product
    const auto* q = static_cast<const T*>(p.q);
    for (int h = 0; h < HB; ++h) {
        const T* src = q + r.b * p.qs_b + (r.h0 + h) * p.qs_h + r.i * p.qs_i;
        float* dst = s.qf + h * p.D;
        for (int64_t d = 0; d < p.D16; ++d) dst[(d & ~int64_t(15)) + E::pos(d & 15)] = E::load1(src + d);
        for (int64_t d = p.D16; d < p.D; ++d) dst[d] = E::load1(src + d);
    }

    // scores
    const auto* kbase = static_cast<const T*>(p.k) + r.b * p.ks_b + r.g * p.ks_h;
    int64_t t = 0;
    for (; t + KB <= nvis; t += KB) score_block<E, HB, KB>(p, s.qf, kbase, vis, s.sc, t);
    for (; t < nvis; ++t) score_block<E, HB, 1>(p, s.qf, kbase, vis, s.sc, t);

    // max, exp, sum (ascending t; HB independent chains)
    float sum[HB];
    for (int h = 0; h < HB; ++h) {
        float* w = s.sc + h * p.Lp;
        // the maximum is exact whatever the order; lanes by ordinal u keep even NaN handling invariant
        __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
        int64_t u = 0;
        for (; u + 8 <= nvis; u += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(w + u));
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, mv);
        float mx = lanes[0];
        for (int l = 1; l < 8; ++l) mx = std::max(mx, lanes[l]);
        for (; u < nvis; ++u) mx = std::max(mx, w[u]);
        mv = _mm256_set1_ps(mx);
        u = 0;
        for (; u + 8 <= nvis; u += 8) _mm256_storeu_ps(w + u, exp8(_mm256_sub_ps(_mm256_loadu_ps(w + u), mv)));
        if (u < nvis) {  // the same operations on a padded copy of the tail
            alignas(32) float tmp[8];
            for (int l = 0; l < 8; ++l) tmp[l] = u + l < nvis ? w[u + l] : mx;
            _mm256_store_ps(tmp, exp8(_mm256_sub_ps(_mm256_load_ps(tmp), mv)));
            for (int64_t l = 0; u + l < nvis; ++l) w[u + l] = tmp[l];
        }
        sum[h] = 0.0f;
    }
    for (int64_t u = 0; u < nvis; ++u)
        for (int h = 0; h < HB; ++h) sum[h] = sum[h] + s.sc[h * p.Lp + u];

    // weighted values: blocks of KEY_BLOCK visible keys (their V rows stay in L1 across the sweeps over D)
    for (int64_t d = 0; d < HB * p.D; ++d) s.acc[d] = 0.0f;
    const auto* vbase = static_cast<const T*>(p.v) + r.b * p.vs_b + r.g * p.vs_h;
    for (int64_t t0 = 0; t0 < nvis; t0 += KEY_BLOCK) {
        const int64_t t1 = std::min(nvis, t0 + KEY_BLOCK);
        int64_t d0 = 0;
        for (; d0 + 16 * DB <= p.D16; d0 += 16 * DB) accumulate_block<E, HB, DB>(p, s.sc, vbase, vis, t0, t1, d0, s.acc);
        for (; d0 + 16 <= p.D16; d0 += 16) accumulate_block<E, HB, 1>(p, s.sc, vbase, vis, t0, t1, d0, s.acc);
        for (int64_t d = p.D16; d < p.D; ++d) {  // scalar tail (D % 16), natural order
            for (int64_t u = t0; u < t1; ++u) {
                const float v = E::load1(vbase + static_cast<int64_t>(vis[u]) * p.vs_j + d);
                for (int h = 0; h < HB; ++h) s.acc[h * p.D + d] = std::fma(s.sc[h * p.Lp + u], v, s.acc[h * p.D + d]);
            }
        }
    }

    // out[b, i, h, :] = acc / sum, rounded once
    for (int h = 0; h < HB; ++h) {
        T* out = static_cast<T*>(p.out) + ((r.b * p.n + r.i) * p.Hq + r.h0 + h) * p.D;
        const float* a = s.acc + h * p.D;
        for (int64_t d = 0; d < p.D; ++d) {
            const int64_t slot = d < p.D16 ? (d & ~int64_t(15)) + E::pos(d & 15) : d;
            E::store1(out + d, nvis ? a[slot] / sum[h] : 0.0f);
        }
    }
}

template <class E>
void attend_item(const Problem& p, const Item& r, const Scratch& s) {
    switch (r.hb) {
        case 1: attend<E, 1>(p, r, s); break;
        case 2: attend<E, 2>(p, r, s); break;
        case 3: attend<E, 3>(p, r, s); break;
        default: attend<E, 4>(p, r, s); break;
    }
}

constexpr unsigned MXCSR_FTZ = 0x8000u, MXCSR_DAZ = 0x0040u, MXCSR_RC = 0x6000u;

// Returns false when out of memory.
template <class E>
bool run(const Problem& p, int threads) {
    const int64_t items = p.B * p.n * p.Hkv * p.NHB;
    auto round16 = [](int64_t x) { return (x + 15) / 16 * 16; };
    const int64_t vis_n = round16(p.L), qf_n = round16(MAX_HB * p.D), sc_n = round16(MAX_HB * p.Lp);
    const size_t bytes = static_cast<size_t>(vis_n + 2 * qf_n + sc_n) * 4;
    bool ok = true;
#pragma omp parallel num_threads(threads)
    {
        char* mem = static_cast<char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
        if (!mem) {
#pragma omp atomic write
            ok = false;
        }
        Scratch s{};
        if (mem) {
            s.vis = reinterpret_cast<int32_t*>(mem);
            s.qf = reinterpret_cast<float*>(mem) + vis_n;
            s.acc = s.qf + qf_n;
            s.sc = s.acc + qf_n;
        }
        const unsigned csr = _mm_getcsr();
        _mm_setcsr(csr & ~(MXCSR_FTZ | MXCSR_DAZ | MXCSR_RC));  // round to nearest, keep denormals
#pragma omp for schedule(dynamic, 1)
        for (int64_t index = 0; index < items; ++index)
            if (mem) attend_item<E>(p, item_of(p, index), s);
        _mm_setcsr(csr);
        std::free(mem);
    }
    return ok;
}

}  // namespace

extern "C" {

// Version of the C ABI below; the Python side checks it.
int ts_attention_abi_version() { return 1; }

// dtype: 0 = bf16 (uint16 storage), 1 = fp32. q, k, v: element strides in `strides` (q: b, h, i; k: b, h, j;
// v: b, h, j; mask: b, i), unit stride along D (and along L for the mask, 1 byte per bool). out: [B, n, Hq, D]
// contiguous, same dtype. softcap <= 0: none. num_threads <= 0: OpenMP's default.
// Returns 0 on success, 1 on bad sizes, 2 when out of memory, 3 on an unknown dtype.
int ts_attention(int dtype, const void* q, const void* k, const void* v, const uint8_t* mask, void* out, int64_t B,
                 int64_t Hq, int64_t Hkv, int64_t n, int64_t L, int64_t D, const int64_t* strides, float scaling,
                 float softcap, int num_threads) {
    if (B < 0 || Hq < 0 || Hkv <= 0 || n < 0 || L < 0 || D < 0 || Hq % Hkv != 0 || L > INT32_MAX) return 1;
    if (dtype != 0 && dtype != 1) return 3;
    if (B == 0 || Hq == 0 || n == 0 || D == 0) return 0;

    Problem p{};
    p.q = q; p.k = k; p.v = v; p.mask = mask; p.out = out;
    p.B = B; p.Hq = Hq; p.Hkv = Hkv; p.n = n; p.L = L; p.D = D;
    p.qs_b = strides[0]; p.qs_h = strides[1]; p.qs_i = strides[2];
    p.ks_b = strides[3]; p.ks_h = strides[4]; p.ks_j = strides[5];
    p.vs_b = strides[6]; p.vs_h = strides[7]; p.vs_j = strides[8];
    p.ms_b = strides[9]; p.ms_i = strides[10];
    p.scaling = scaling;
    p.softcap = softcap;
    p.G = Hq / Hkv;
    p.D16 = D & ~int64_t(15);
    p.Lp = (L + 7) / 8 * 8 + 8;

    if (num_threads <= 0) num_threads = omp_get_max_threads();
    const int64_t macs = B * n * Hq * L * D;
    if (macs < SERIAL_MACS) num_threads = 1;
    // Heads per block: up to MAX_HB (they share K / V loads); fewer when that would leave threads idle.
    p.HB = std::min<int64_t>(p.G, MAX_HB);
    while (p.HB > 1 && B * n * Hkv * ((p.G + p.HB - 1) / p.HB) < num_threads) p.HB = (p.HB + 1) / 2;
    p.NHB = (p.G + p.HB - 1) / p.HB;

    const bool ok = dtype == 0 ? run<Bf16>(p, num_threads) : run<F32>(p, num_threads);
    return ok ? 0 : 2;
}

}  // extern "C"
