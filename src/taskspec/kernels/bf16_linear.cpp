// bf16 x bf16 -> bf16 linear layer for x86-64 CPUs with AVX2 + FMA (no AVX-512 / AMX / bf16 dot instructions).
//
//   out[m, n] = bf16_rne( dot_fp32(x[m, :], w[n, :]) + bias[n] )
//
// Why: on CPUs without native bf16 GEMM support PyTorch computes a bf16 F.linear with M > 1 rows as M
// separate matrix-vector products, each streaming the whole weight matrix from memory. Here each block of R
// weight rows is read from memory once (software-prefetched) and used for all M input rows from L1, so M = 8..32
// rows cost little more than one row while the layer is memory-bandwidth bound.
//
// Batch invariance (what speculative decoding relies on): out[m, n] is computed by exactly the same sequence of
// floating-point operations whatever M is, whatever m's or n's position inside a register block, whatever the
// tiling and whatever the number of threads. With K16 = K rounded down to a multiple of 16 and K8 = K rounded
// down to a multiple of 8:
//   acc (8 fp32 lanes, l = 0..7) = 0
//   for k0 = 0, 16, 32, ... < K16:                        (one vfmadd231ps each)
//       acc[l] = fma(w[n, k0 + 2l],     x[m, k0 + 2l],     acc[l])     even elements
//       acc[l] = fma(w[n, k0 + 2l + 1], x[m, k0 + 2l + 1], acc[l])     odd elements
//   if K16 < K8:  acc[l] = fma(w[n, K16 + l], x[m, K16 + l], acc[l])
//   s = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))          (hsum8)
//   for k = K8 .. K-1: s = fma(w[n, k], x[m, k], s)                     (scalar tail, in order)
//   if bias: s = s + bias[n]
//   out = round-to-nearest-even to bf16 (NaN -> 0x7FC0, like c10::BFloat16)
// A register block only interleaves independent such sequences: one accumulator per output element, no
// reassociation, no K splitting. Compiled with -ffp-contract=off so the compiler fuses nothing on its own (every
// FMA here is explicit). The even/odd split: 16 bf16 weights are loaded as 8 uint32 lanes; `lane << 16` is the
// even element as fp32 and `lane & 0xffff0000` the odd one (2 cheap ops instead of 2 zero-extends + 2 shifts);
// x is converted to fp32 once per call, stored in the matching permuted order.
//
// Exposed with a plain C ABI, built by build.py and loaded with ctypes by bf16_linear.py: no Python or libtorch
// headers needed, so it builds in a couple of seconds. OpenMP: the library's libgomp.so.1 resolves to the runtime
// torch has loaded.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include <omp.h>

#include "bf16_common.h"  // bf16 <-> fp32, hsum8 (shared with attention.cpp)

namespace {

using namespace ts;

// Register block: R weight rows x C input rows = 12 ymm accumulators, + C x vectors + 1 weight vector = 16 ymm
// registers. (Measured on Zen 3: 4x3 beats 3x4, 2x6, 6x2, 5x2.) Overridable with -D for tuning only.
#ifndef TS_R
#define TS_R 4
#endif
#ifndef TS_C
#define TS_C 3
#endif
constexpr int R = TS_R;
constexpr int C = TS_C;

// Weights are software-prefetched this many register blocks ahead (see rows()).
#ifndef TS_PF
#define TS_PF 1
#endif
constexpr int PF_BLOCKS = TS_PF;

// Weight rows per parallel work item (a multiple of R): small enough to balance tiny N over the threads.
constexpr int64_t ROWS_PER_ITEM = 4 * R;

// Below this many multiply-adds a call runs on one thread (waking threads costs more). Results do not depend
// on it.
constexpr int64_t SERIAL_MACS = 65536;

struct Problem {
    const float* x;        // [M, K] fp32, each 16-block of a row permuted to [evens, odds]
    const uint16_t* w;     // [N, K] bf16
    const uint16_t* bias;  // [N] bf16 or null
    uint16_t* out;         // [M, N] bf16
    int64_t M, N, K;
};

// out[m0 .. m0+CC, n0 .. n0+RR]. The same per-element arithmetic for every (RR, CC); see the top of the file.
// [pf, pf_end): weights to prefetch while running (part of the next block), pf_lines cache lines per iteration.
template <int RR, int CC>
void block(const Problem& p, int64_t n0, int64_t m0, const char* pf, const char* pf_end, int64_t pf_lines) {
    const int64_t K = p.K;
    const int64_t K16 = K & ~int64_t(15);
    const int64_t K8 = K & ~int64_t(7);
    const uint16_t* w[RR];
    const float* x[CC];
    for (int r = 0; r < RR; ++r) w[r] = p.w + (n0 + r) * K;
    for (int c = 0; c < CC; ++c) x[c] = p.x + (m0 + c) * K;

    __m256 acc[RR][CC];
    for (int r = 0; r < RR; ++r)
        for (int c = 0; c < CC; ++c) acc[r][c] = _mm256_setzero_ps();

    for (int64_t k = 0; k < K16; k += 16) {
        if (pf < pf_end) {  // pf_lines cache lines per iteration until pf_end
            for (int64_t i = 0; i < pf_lines; ++i) _mm_prefetch(pf + 64 * i, _MM_HINT_T0);
            pf += 64 * pf_lines;
        }
        __m256 xv[CC];
        for (int c = 0; c < CC; ++c) xv[c] = _mm256_loadu_ps(x[c] + k);  // x[k + 0, 2, .., 14]
        for (int r = 0; r < RR; ++r) {
            const __m256 wv = bf16x16_evens(load_bf16x16(w[r] + k));  // w[k + 0, 2, .., 14]
            for (int c = 0; c < CC; ++c) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
        }
        for (int c = 0; c < CC; ++c) xv[c] = _mm256_loadu_ps(x[c] + k + 8);  // x[k + 1, 3, .., 15]
        for (int r = 0; r < RR; ++r) {
            const __m256 wv = bf16x16_odds(load_bf16x16(w[r] + k));  // w[k + 1, 3, .., 15]
            for (int c = 0; c < CC; ++c) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
    if (K16 < K8) {  // one group of 8, in natural order
        for (int r = 0; r < RR; ++r) {
            const __m256 wv = bf16x8_to_f32(w[r] + K16);
            for (int c = 0; c < CC; ++c)
                acc[r][c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[c] + K16), acc[r][c]);
        }
    }

    for (int r = 0; r < RR; ++r) {
        const float b = p.bias ? bf16_to_f32(p.bias[n0 + r]) : 0.0f;
        for (int c = 0; c < CC; ++c) {
            float s = hsum8(acc[r][c]);
            for (int64_t k = K8; k < K; ++k) s = std::fma(bf16_to_f32(w[r][k]), x[c][k], s);
            if (p.bias) s = s + b;
            p.out[(m0 + c) * p.N + n0 + r] = f32_to_bf16_rne(s);
        }
    }
}

using BlockFn = void (*)(const Problem&, int64_t, int64_t, const char*, const char*, int64_t);

template <int RR, int... CCs>
constexpr void fill_row(BlockFn* row, std::integer_sequence<int, CCs...>) {
    ((row[CCs] = &block<RR, CCs + 1>), ...);
}

template <int... RRs>
struct Table {
    BlockFn fn[R][C];
    constexpr Table(std::integer_sequence<int, RRs...>) : fn{} {
        ((fill_row<RRs + 1>(fn[RRs], std::make_integer_sequence<int, C>{})), ...);
    }
};

// table.fn[rr - 1][cc - 1] = block<rr, cc>: the full R x C block and every smaller one for the N and M tails.
const Table table{std::make_integer_sequence<int, R>{}};

// Output columns [n_begin, n_end) for all M input rows. Each R-row block of weights comes from memory once (it
// was prefetched while the block before it ran) and stays in L1 while all the input rows go past it.
void rows(const Problem& p, int64_t n_begin, int64_t n_end) {
    for (int64_t n0 = n_begin; n0 < n_end; n0 += R) {
        const int rr = static_cast<int>(n_end - n0 < R ? n_end - n0 : R);
        const int64_t n_pf = n0 + PF_BLOCKS * R;
        const char* pf = (PF_BLOCKS > 0 && n_pf + R <= p.N) ? reinterpret_cast<const char*>(p.w + n_pf * p.K)
                                                             : nullptr;
        // ceil(M / C) blocks of input rows with sizes differing by at most one (M = 4 -> 2 + 2, not 3 + 1): a
        // block of 1 row has too few independent FMA chains to keep the FMA units busy
        const int64_t blocks = (p.M + C - 1) / C, base = p.M / blocks, extra = p.M % blocks;
        // The prefetches of the next weight block are spread evenly over all the input-row blocks (a smoother
        // memory stream than a burst during the first one): `chunk` lines each, `lpi` per 16-wide iteration.
        const int64_t iters = p.K / 16;
        const int64_t lines = (R * p.K * 2 + 63) / 64;
        const int64_t chunk = (lines + blocks - 1) / blocks;
        const int64_t lpi = iters ? (chunk + iters - 1) / iters : 0;
        for (int64_t b = 0, m0 = 0; b < blocks; ++b) {
            const int cc = static_cast<int>(base + (b < extra));
            const char* from = pf ? pf + b * chunk * 64 : nullptr;
            const char* to = pf ? pf + std::min((b + 1) * chunk, lines) * 64 : nullptr;
            table.fn[rr - 1][cc - 1](p, n0, m0, from, to, lpi);
            m0 += cc;
        }
    }
}

}  // namespace

extern "C" {

// Version of the C ABI below; the Python side checks it.
int ts_bf16_linear_abi_version() { return 1; }

// x: [M, K] bf16 contiguous, w: [N, K] bf16 contiguous, bias: [N] bf16 or NULL, out: [M, N] bf16 contiguous.
// num_threads <= 0 means OpenMP's default. Returns 0 on success, 1 on bad sizes, 2 when out of memory.
int ts_bf16_linear(const uint16_t* x, const uint16_t* w, const uint16_t* bias, uint16_t* out, int64_t M,
                   int64_t N, int64_t K, int num_threads) {
    if (M < 0 || N < 0 || K < 0) return 1;
    if (M == 0 || N == 0) return 0;

    // x -> fp32 once (M x K is small next to the weights), 16-blocks permuted to [evens, odds].
    const size_t xbytes = static_cast<size_t>(M * K) * sizeof(float);
    float* xf = static_cast<float*>(std::aligned_alloc(64, (xbytes + 63) / 64 * 64 + 64));
    if (!xf) return 2;
    const int64_t K16 = K & ~int64_t(15);
    for (int64_t m = 0; m < M; ++m) {
        const uint16_t* xs = x + m * K;
        float* xd = xf + m * K;
        for (int64_t k = 0; k < K16; k += 16) {  // the same split as the weights' in block()
            const __m256i raw = load_bf16x16(xs + k);
            _mm256_storeu_ps(xd + k, bf16x16_evens(raw));
            _mm256_storeu_ps(xd + k + 8, bf16x16_odds(raw));
        }
        for (int64_t k = K16; k < K; ++k) xd[k] = bf16_to_f32(xs[k]);
    }

    const Problem p{xf, w, bias, out, M, N, K};
    const int64_t items = (N + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM;
    if (num_threads <= 0) num_threads = omp_get_max_threads();
    if (M * N * K < SERIAL_MACS || items < 2) num_threads = 1;

    if (num_threads == 1) {
        rows(p, 0, N);
    } else {
        // static: each thread gets one contiguous range of weight rows (one sequential memory stream)
#pragma omp parallel for schedule(static) num_threads(num_threads)
        for (int64_t i = 0; i < items; ++i) {
            const int64_t n_begin = i * ROWS_PER_ITEM;
            const int64_t n_end = n_begin + ROWS_PER_ITEM < N ? n_begin + ROWS_PER_ITEM : N;
            rows(p, n_begin, n_end);
        }
    }
    std::free(xf);
    return 0;
}

}  // extern "C"
