#pragma once
/// \file k_quants.hpp
/// fp32 to ggml's k-quant super-blocks (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256
/// values each), byte for byte as llama.cpp quantises them without an
/// importance matrix (its reference quantisers, what llama-quantize runs).
///
/// A super-block holds 16 or 8 sub-blocks, each with its own small integer
/// scale (and, for Q2_K/Q4_K/Q5_K, a min), and those in turn are scaled by
/// one fp16 `d` (and `dmin`). Quantising is a search: per sub-block, the
/// scale (and min) that fits the values best is found by trying a handful
/// of candidates around max/nmax; then the sub-block scales are themselves
/// quantised, and every value is re-quantised with the scale it will
/// actually be decoded with. The block layouts are in block_formats.hpp.
///
/// Exactness needs the same float operations in the same order, and no
/// fused multiply-adds (llama.cpp builds these functions for plain x86-64,
/// where the compiler cannot fuse): contraction is switched off for this
/// header whatever the including file was compiled with.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "moe/quant/block_formats.hpp"
#include "moe/quant/half.hpp"

#if defined(__clang__)
#pragma float_control(push)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace moe::quant {

namespace detail {
/// The value of largest magnitude, signed (the first of equals): what the
/// symmetric types scale by (Q4_0, Q5_0, Q3_K, Q6_K).
inline float signed_max(const float* x, int n) noexcept {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}
}  // namespace detail

namespace kq {

/// Round to nearest, ties to even (ggml's nearest_int, for |v| < 2^22).
inline int nearest_int(float v) noexcept { return static_cast<int>(std::nearbyint(v)); }

inline int clamp(int v, int lo, int hi) noexcept { return v < lo ? lo : v > hi ? hi : v; }

/// Below this, a group of values counts as all zero.
inline constexpr float group_max_eps = 1e-15f;

/// A symmetric scale for n values in [-nmax, nmax - 1], weighted by x²:
/// starting from max/-nmax, 18 nearby scales are tried and the one that
/// maximises (Σ w·x·l)² / Σ w·l² (least weighted squared error) is kept.
/// L gets the levels + nmax. (ggml: make_qx_quants with rmse_type 1.)
inline float fit_symmetric(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  const float max = detail::signed_max(x, n);
  if (std::fabs(max) < group_max_eps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const auto sums = [&](float iscale, float& sumlx, float& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
  };
  const auto levels = [&](float iscale) {
    for (int i = 0; i < n; ++i) L[i] = std::int8_t(nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
  };
  float sumlx, suml2;
  float iscale = float(-nmax) / max;
  sums(iscale, sumlx, suml2);
  levels(iscale);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sums(iscale, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      levels(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/// Q3_K's sub-block fit: levels in [-nmax, nmax - 1] from max/-nmax, then
/// up to 5 rounds of moving single levels while that lowers the x²-weighted
/// error. L gets the levels + nmax. (ggml: make_q3_quants with rmse.)
inline float fit_q3(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  const float max = detail::signed_max(x, n);
  if (std::fabs(max) < group_max_eps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = std::int8_t(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  for (int round = 0; round < 5; ++round) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * float(L[i]) * float(L[i]);
        const int l = clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (l != L[i]) {
          slx += w * x[i] * float(l);
          sl2 += w * float(l) * float(l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = std::int8_t(l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = std::int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/// A scale and a min (x ≈ scale·l − min, l in [0, nmax], min ≥ 0) for n
/// values: from the range (max − min)/nmax, then nstep + 1 scales
/// (nmax + rmin + rdelta·is)/(max − min), each with the weighted
/// least-squares scale and min for its levels, keeping the one with the
/// least weighted error (squared, or absolute with use_mad).
/// (ggml: make_qkx2_quants.)
inline float fit_with_min(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float& the_min,
                          float rmin, float rdelta, int nstep, bool use_mad) noexcept {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    the_min = -min;
    return 0.f;
  }
  const auto error = [&](float e) { return use_mad ? std::fabs(e) : e * e; };
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = std::uint8_t(clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
    best_error += weights[i] * error(scale * float(L[i]) + min - x[i]);
  }
  if (nstep < 1) {
    the_min = -min;
    return scale;
  }
  std::uint8_t Laux[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = std::uint8_t(l);
      const float w = weights[i];
      sum_l += w * float(l);
      sum_l2 += w * float(l) * float(l);
      sum_xl += w * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) cur_error += weights[i] * error(this_scale * float(Laux[i]) + this_min - x[i]);
      if (cur_error < best_error) {
        std::memcpy(L, Laux, std::size_t(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  the_min = -min;
  return scale;
}

/// Packs 256 levels of 2 bits: byte l of each 32-byte group j holds levels
/// j·128 + l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7 (Q2_K, Q3_K).
inline void pack_2bit(const std::uint8_t* L, unsigned char* qs) noexcept {
  for (int j = 0; j < 256; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] =
          static_cast<unsigned char>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/// Q4_K/Q5_K: 8 sub-blocks of 32 with weights av + |x|, their scales and
/// mins quantised to 6 bits against the largest, packed as
/// get_scale_min_k4 reads them; d, dmin stored. Returns the levels in L.
inline void fit_k4_scales(const float* x, int nmax, float rmin, int nstep, unsigned char* b, std::uint8_t* L) noexcept {
  float scales[8], mins[8], weights[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = fit_with_min(32, nmax, x + 32 * j, weights, L + 32 * j, mins[j], rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  unsigned char* sc = b + 4;
  std::memset(sc, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const std::uint8_t ls = std::min<std::uint8_t>(63, std::uint8_t(nearest_int(inv_scale * scales[j])));
    const std::uint8_t lm = std::min<std::uint8_t>(63, std::uint8_t(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = static_cast<unsigned char>((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] = static_cast<unsigned char>(sc[j - 4] | ((ls >> 4) << 6));
      sc[j] = static_cast<unsigned char>(sc[j] | ((lm >> 4) << 6));
    }
  }
  detail::put_half(b, max_scale / 63.f);
  detail::put_half(b + 2, max_min / 63.f);
  const float d = detail::half_at(b), dmin = detail::half_at(b + 2);
  for (int j = 0; j < 8; ++j) {
    int s, m;
    detail::scale_min_k4(j, sc, s, m);
    const float dj = d * float(s);
    if (dj == 0) continue;
    const float mj = dmin * float(m);
    for (int i = 0; i < 32; ++i) L[32 * j + i] = std::uint8_t(clamp(nearest_int((x[32 * j + i] + mj) / dj), 0, nmax));
  }
}

}  // namespace kq

/// 256 values to a Q2_K block (84 bytes).
inline void quantize_q2_k(const float* x, unsigned char* b) noexcept {
  std::uint8_t L[256];
  float scales[16], mins[16], weights[16];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = kq::fit_with_min(16, 3, x + 16 * j, weights, L + 16 * j, mins[j], -0.5f, 0.1f, 15, true);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  unsigned char* sc = b;
  constexpr float q4scale = 15.f;
  std::memset(sc, 0, 16);
  if (max_scale > 0) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < 16; ++j) sc[j] = static_cast<unsigned char>(kq::nearest_int(iscale * scales[j]));
  }
  detail::put_half(b + 80, max_scale > 0 ? max_scale / q4scale : 0.f);
  if (max_min > 0) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < 16; ++j) sc[j] = static_cast<unsigned char>(sc[j] | (kq::nearest_int(iscale * mins[j]) << 4));
  }
  detail::put_half(b + 82, max_min > 0 ? max_min / q4scale : 0.f);
  const float d = detail::half_at(b + 80), dmin = detail::half_at(b + 82);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j] & 0xF);
    if (dj == 0) continue;
    const float mj = dmin * float(sc[j] >> 4);
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] = std::uint8_t(kq::clamp(kq::nearest_int((x[16 * j + i] + mj) / dj), 0, 3));
  }
  kq::pack_2bit(L, b + 16);
}

/// 256 values to a Q3_K block (110 bytes).
inline void quantize_q3_k(const float* x, unsigned char* b) noexcept {
  std::int8_t L[256];
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = kq::fit_q3(16, 4, x + 16 * j, L + 16 * j);
  const float max_scale = detail::signed_max(scales, 16);
  unsigned char *hmask = b, *qs = b + 32, *sc = b + 96;
  std::memset(sc, 0, 12);
  if (max_scale != 0) {
    // 16 6-bit scales (offset 32): low nibbles in bytes 0-7, high 2 bits in 8-11.
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int l = kq::clamp(std::int8_t(kq::nearest_int(iscale * scales[j])), -32, 31) + 32;
      if (j < 8)
        sc[j] = static_cast<unsigned char>(l & 0xF);
      else
        sc[j - 8] = static_cast<unsigned char>(sc[j - 8] | ((l & 0xF) << 4));
      sc[j % 4 + 8] = static_cast<unsigned char>(sc[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
    }
    detail::put_half(b + 108, 1 / iscale);
  } else {
    detail::put_half(b + 108, 0.f);
  }
  const float d_all = detail::half_at(b + 108);
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
    const int s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
    const float dj = d_all * float(s);
    if (dj == 0) continue;
    for (int i = 0; i < 16; ++i) L[16 * j + i] = std::int8_t(kq::clamp(kq::nearest_int(x[16 * j + i] / dj), -4, 3) + 4);
  }
  // The third bit of level j goes to bit j / 32 of hmask byte j % 32.
  std::memset(hmask, 0, 32);
  std::uint8_t low[256];
  for (int j = 0; j < 256; ++j) {
    if (L[j] > 3) hmask[j % 32] = static_cast<unsigned char>(hmask[j % 32] | (1 << (j / 32)));
    low[j] = std::uint8_t(L[j] > 3 ? L[j] - 4 : L[j]);
  }
  kq::pack_2bit(low, qs);
}

/// 256 values to a Q4_K block (144 bytes).
inline void quantize_q4_k(const float* x, unsigned char* b) noexcept {
  std::uint8_t L[256];
  kq::fit_k4_scales(x, 15, -1.f, 20, b, L);
  unsigned char* q = b + 16;
  for (int j = 0; j < 256; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<unsigned char>(L[j + l] | (L[j + l + 32] << 4));
}

/// 256 values to a Q5_K block (176 bytes).
inline void quantize_q5_k(const float* x, unsigned char* b) noexcept {
  std::uint8_t L[256];
  kq::fit_k4_scales(x, 31, -0.5f, 15, b, L);
  unsigned char *qh = b + 16, *ql = b + 48;
  std::memset(qh, 0, 32);
  unsigned char m1 = 1, m2 = 2;
  for (int n = 0; n < 256; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) l1 -= 16, qh[j] = static_cast<unsigned char>(qh[j] | m1);
      if (l2 > 15) l2 -= 16, qh[j] = static_cast<unsigned char>(qh[j] | m2);
      ql[j] = static_cast<unsigned char>(l1 | (l2 << 4));
    }
    m1 = static_cast<unsigned char>(m1 << 2);
    m2 = static_cast<unsigned char>(m2 << 2);
  }
}

/// 256 values to a Q6_K block (210 bytes).
inline void quantize_q6_k(const float* x, unsigned char* b) noexcept {
  std::int8_t L[256];
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = kq::fit_symmetric(16, 32, x + 16 * j, L + 16 * j);
  const float max_scale = detail::signed_max(scales, 16);
  std::memset(b, 0, 210);
  if (std::fabs(max_scale) < kq::group_max_eps) return;  // all zero: d = 0
  unsigned char *ql = b, *qh = b + 128;
  auto* sc = reinterpret_cast<std::int8_t*>(b + 192);
  const float iscale = -128.f / max_scale;
  detail::put_half(b + 208, 1 / iscale);
  for (int j = 0; j < 16; ++j) sc[j] = std::int8_t(std::min(127, kq::nearest_int(iscale * scales[j])));
  const float d = detail::half_at(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j]);
    if (dj == 0) continue;
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] = std::int8_t(kq::clamp(kq::nearest_int(x[16 * j + i] / dj), -32, 31) + 32);
  }
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = static_cast<unsigned char>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<unsigned char>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] = static_cast<unsigned char>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

}  // namespace moe::quant

#if defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
