// bf16 <-> fp32 conversions and the fixed 8-lane reduction shared by taskspec's AVX2 kernels (bf16_linear.cpp,
// attention.cpp). One copy, so both kernels convert and reduce with bitwise the same operations. Compiled into
// each kernel through an include path (-I, added by build.py); build.py hashes this header with each source.

#ifndef TASKSPEC_BF16_COMMON_H
#define TASKSPEC_BF16_COMMON_H

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace ts {

// bf16 -> fp32: the bf16 bits are the high half of the fp32 (exact).
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// fp32 -> bf16, round to nearest even (NaN -> 0x7FC0, like c10::BFloat16).
inline uint16_t f32_to_bf16_rne(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

// 8 bf16 -> 8 fp32, in order: zero-extend to 32 bits and shift into the high half (exact).
inline __m256 bf16x8_to_f32(const uint16_t* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 16 bf16 loaded as 8 uint32 lanes (`raw`): lane l holds elements 2l (low half) and 2l + 1 (high half).
// evens: elements 0, 2, .., 14 as fp32 (`<< 16`); odds: elements 1, 3, .., 15 (`& 0xffff0000`). Both exact, and
// cheaper than two zero-extends and two shifts.
inline __m256i load_bf16x16(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256 bf16x16_evens(__m256i raw) { return _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)); }
inline __m256 bf16x16_odds(__m256i raw) {
    return _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

// Fixed reduction tree of an 8-lane fp32 accumulator: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)).
inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // [04, 15, 26, 37]
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                          // [04+26, 15+37, ..]
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));                                      // (04+26)+(15+37)
    return _mm_cvtss_f32(s);
}

}  // namespace ts

#endif  // TASKSPEC_BF16_COMMON_H
