#pragma once
/// \file attention.hpp
/// backend::Cpu's attention: moe::attend_reference's result (within fp32
/// rounding) computed in blocks, with SIMD and threads.
///
/// Both paths keep, per query vector, the flash-attention running state
/// (Dao et al. 2022) over blocks of keys:
///
///   m = the largest score so far, l = Σ exp(score − m), acc = Σ exp(score − m)·v
///   for a new block with scores s_j:  m' = max(m, max_j s_j)
///     l   ← l·exp(m − m') + Σ_j exp(s_j − m')
///     acc ← acc·exp(m − m') + Σ_j exp(s_j − m')·v_j
///   context = acc / l
///
/// so the softmax needs neither the whole row of scores nor a second pass.
///
/// Prefill (many query rows): the keys and values are packed once per call,
/// per kv head and block of key_block keys, in the order the kernels read
/// them (keys transposed). A task is one kv head and a block of query rows:
/// the query vectors of every head sharing that kv head (GQA), walking the
/// packed blocks their rows may see. Scores are a small GEMM (8 query
/// vectors × 2 SIMD vectors of keys on AVX-512), the weighted sum a
/// broadcast-FMA over the value rows.
///
/// Decode (a few query rows): nothing to amortise a packing over, and few
/// query vectors to spread over threads. The keys are split into chunks
/// (flash-decoding): a task reads one chunk of the cache in place, every
/// head of it, and leaves a partial state per query vector; the partial
/// states are merged in chunk order. Scores are dot products on the rows.
///
/// Every task writes its own outputs and every merge runs in a fixed order:
/// the result does not depend on the thread count.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moe/backend/cpu/simd.hpp"
#include "moe/core/attention.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend::cpu {

namespace attention_detail {

inline constexpr index_t query_rows = 64;     ///< prefill: query rows per task
inline constexpr index_t key_block = 64;      ///< prefill: keys per packed block
inline constexpr index_t decode_rows = 8;     ///< at most this many query rows: the decode path
inline constexpr index_t decode_chunk = 256;  ///< decode: keys per task
inline constexpr index_t decode_slice = 32;   ///< decode: keys per step of a task (a multiple of W)
inline constexpr int max_tile_queries = 8;

/// Register tiles per ISA: the score tile is `score_queries` query vectors
/// × 2 vectors of keys (AVX-512: 8 × 32 keys in 16 of its 32 registers;
/// AVX2 and SSE: 4 × 2 vectors in 8 of 16); the weighted sum adds up to 8
/// query vectors' products over 2 vectors of hd (`sum_cols`) at once.
template <class Isa>
struct Tiles {
  static constexpr index_t W = index_t(floats<Isa>::size);
  static constexpr int score_queries = Isa::avx512 ? 8 : 4;
  static constexpr index_t score_cols = 2 * W;
  static constexpr index_t sum_cols = 2 * W;
  static_assert(key_block % score_cols == 0);
};

/// scores[q][col + c] = scale · Σ_d qt[d][q] · kt[d][c] for the 2·W keys
/// from `col` (kt: [hd][2·W], those keys transposed; qt: [hd][Q], the tile's
/// query vectors transposed: both read in order).
template <class Isa>
inline void score_tile(const float* qt, const float* kt, index_t hd, index_t col, float scale, float* scores) {
  using batch = floats<Isa>;
  constexpr index_t W = Tiles<Isa>::W;
  constexpr int Q = Tiles<Isa>::score_queries;
  batch acc[Q][2];
  for (auto& row : acc)
    for (auto& a : row) a = batch(0.0f);
  for (index_t d = 0; d < hd; ++d) {
    const float* k = kt + d * 2 * W;
    const batch k0 = batch::load_unaligned(k), k1 = batch::load_unaligned(k + W);
    for (int q = 0; q < Q; ++q) {
      const batch qd(qt[d * Q + q]);
      acc[q][0] = xsimd::fma(qd, k0, acc[q][0]);
      acc[q][1] = xsimd::fma(qd, k1, acc[q][1]);
    }
  }
  const batch s(scale);
  for (int q = 0; q < Q; ++q)
    for (int c = 0; c < 2; ++c) (acc[q][c] * s).store_unaligned(scores + q * key_block + col + c * W);
}

/// scores[q][j] = scale · query[q] · k_j for j in [a, b), k_j = keys + j·stride:
/// dot products on the rows where they are (decode: read once, no packing).
/// Each step asks for the key and value rows decode_ahead keys on (below
/// `end`): rows are a cache row's stride apart, a pattern the hardware
/// prefetchers do not follow, so without it every row waits on memory.
inline constexpr int dot_queries = 4;        ///< decode: query vectors per row of dot products
inline constexpr index_t decode_ahead = 16;  ///< decode: keys between a row's prefetch and its use

template <class Isa>
inline void score_dots(const std::array<const float*, max_tile_queries>& query, const float* keys, const float* values,
                       index_t stride, index_t a, index_t b, index_t end, index_t hd, float scale, float* scores,
                       index_t scores_stride) {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  for (index_t j = a; j < b; ++j) {
    if (j + decode_ahead < end)
      for (index_t x = 0; x < hd; x += 64 / index_t(sizeof(float))) {
        __builtin_prefetch(keys + (j + decode_ahead) * stride + x);
        __builtin_prefetch(values + (j + decode_ahead) * stride + x);
      }
    const float* k = keys + j * stride;
    batch acc[dot_queries];
    for (auto& x : acc) x = batch(0.0f);
    index_t d = 0;
    for (; d + W <= hd; d += W) {
      const batch kd = batch::load_unaligned(k + d);
      for (int q = 0; q < dot_queries; ++q)
        acc[q] = xsimd::fma(batch::load_unaligned(query[std::size_t(q)] + d), kd, acc[q]);
    }
    for (int q = 0; q < dot_queries; ++q) {
      float sum = reduce_add(acc[q]);
      for (index_t e = d; e < hd; ++e) sum += query[std::size_t(q)][e] * k[e];
      scores[q * scores_stride + j] = sum * scale;
    }
  }
}

/// Where value (key j, element d) lives: hd is cut into chunks of
/// Tiles::sum_cols elements, each chunk of a key contiguous. Rows in place:
/// key_stride = the row stride, chunk_stride = sum_cols. Packed (prefill):
/// each chunk of every key of the block together, read in order.
struct Values {
  const float* data;
  index_t key_stride, chunk_stride;
};

/// acc[i][0, hd) += Σ_{j in [a, b)} p[i][j] · v_j[0, hd) for NQ query
/// vectors over the same keys.
template <class Isa, int NQ>
inline void weighted_sum(const float* const* p, Values values, index_t a, index_t b, index_t hd, float* const* acc) {
  using batch = floats<Isa>;
  constexpr index_t W = Tiles<Isa>::W, C = Tiles<Isa>::sum_cols;
  const auto at = [&](index_t j, index_t d) {
    return values.data + (d / C) * values.chunk_stride + j * values.key_stride + d % C;
  };
  index_t d = 0;
  for (; d + C <= hd; d += C) {  // NQ × 2 accumulators, 2 value vectors, a broadcast
    batch sum[NQ][2];
    for (int q = 0; q < NQ; ++q)
      for (int c = 0; c < 2; ++c) sum[q][c] = batch::load_unaligned(acc[q] + d + c * W);
    for (index_t j = a; j < b; ++j) {
      const float* v = at(j, d);
      const batch v0 = batch::load_unaligned(v), v1 = batch::load_unaligned(v + W);
      for (int q = 0; q < NQ; ++q) {
        const batch pj(p[q][j]);
        sum[q][0] = xsimd::fma(pj, v0, sum[q][0]);
        sum[q][1] = xsimd::fma(pj, v1, sum[q][1]);
      }
    }
    for (int q = 0; q < NQ; ++q)
      for (int c = 0; c < 2; ++c) sum[q][c].store_unaligned(acc[q] + d + c * W);
  }
  for (; d + W <= hd; d += W) {
    batch sum[NQ];
    for (int q = 0; q < NQ; ++q) sum[q] = batch::load_unaligned(acc[q] + d);
    for (index_t j = a; j < b; ++j) {
      const batch v = batch::load_unaligned(at(j, d));
      for (int q = 0; q < NQ; ++q) sum[q] = xsimd::fma(batch(p[q][j]), v, sum[q]);
    }
    for (int q = 0; q < NQ; ++q) sum[q].store_unaligned(acc[q] + d);
  }
  for (; d < hd; ++d)
    for (int q = 0; q < NQ; ++q)
      for (index_t j = a; j < b; ++j) acc[q][d] += p[q][j] * *at(j, d);
}

/// One query vector's running softmax state (m, l) and its accumulator.
struct RunningSoftmax {
  float max = -INFINITY;
  float sum = 0;
};

/// Folds the scores [a, b) of one block (the others are not this query's)
/// into the state: turns them into exp(s − m') in place (0 outside [a, b),
/// over the aligned span [lo, hi)), rescales acc. False if nothing to add.
template <class Isa>
inline bool fold_block(float* s, index_t lo, index_t hi, index_t a, index_t b, RunningSoftmax& st, float* acc,
                       index_t hd) {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  if (a >= b) return false;
  for (index_t j = lo; j < a; ++j) s[j] = -INFINITY;
  for (index_t j = b; j < hi; ++j) s[j] = -INFINITY;
  batch vmax(-INFINITY);
  for (index_t j = lo; j < hi; j += W) vmax = xsimd::max(vmax, batch::load_unaligned(s + j));
  float block_max = -INFINITY;
  alignas(64) float lanes[W];
  vmax.store_unaligned(lanes);
  for (index_t i = 0; i < W; ++i) block_max = std::max(block_max, lanes[i]);
  const float m = std::max(st.max, block_max);
  if (m == -INFINITY) return false;  // every score −inf: nothing this block can add
  const batch vm(m);
  batch total(0.0f);
  for (index_t j = lo; j < hi; j += W) {
    const batch e = xsimd::exp(batch::load_unaligned(s + j) - vm);
    e.store_unaligned(s + j);
    total += e;
  }
  if (m != st.max) {  // a larger maximum: rescale what the earlier blocks added
    const float correction = st.max == -INFINITY ? 0.0f : std::exp(st.max - m);
    const batch c(correction);
    index_t d = 0;
    for (; d + W <= hd; d += W) (batch::load_unaligned(acc + d) * c).store_unaligned(acc + d);
    for (; d < hd; ++d) acc[d] *= correction;
    st.sum *= correction;
  }
  st.sum += reduce_add(total);
  st.max = m;
  return true;
}

/// The keys of a problem as one sequence, and the range each query row sees.
struct KeyIndex {
  KeySequence sequence;
  std::vector<index_t> lo, hi;  ///< query row t sees keys [lo[t], hi[t])

  explicit KeyIndex(const AttentionProblem& p) : sequence(p) {
    for (index_t t = 0; t < p.q.rows; ++t) {
      const auto [first, last] = sequence.visible_range(p.first + t);
      lo.push_back(first);
      hi.push_back(last);
    }
  }
};

/// Folds scores [a[i], b[i]) of a block into query vector i's state and
/// adds the weighted values, for the nv query vectors of a tile. The scores
/// (row i at scores + i·score_stride) cover the aligned span [lo, hi).
template <class Isa>
inline void fold_and_sum(float* scores, index_t score_stride, index_t lo, index_t hi, index_t nv, const index_t* a,
                         const index_t* b, RunningSoftmax* const* state, float* const* acc, Values values, index_t hd) {
  std::array<bool, max_tile_queries> adds{};
  std::array<const float*, max_tile_queries> p{};
  for (index_t i = 0; i < nv; ++i) {
    adds[std::size_t(i)] = fold_block<Isa>(scores + i * score_stride, lo, hi, a[i], b[i], *state[i], acc[i], hd);
    p[std::size_t(i)] = scores + i * score_stride;
  }
  // Up to 8 query vectors at once where they see the same keys (GQA: the
  // heads of one row; two rows where both see the whole block).
  const auto same = [&](index_t i, index_t n) {
    if (i + n > nv) return false;
    for (index_t u = i; u < i + n; ++u)
      if (!adds[std::size_t(u)] || a[u] != a[i] || b[u] != b[i]) return false;
    return true;
  };
  for (index_t i = 0; i < nv;) {
    if (!adds[std::size_t(i)]) {
      ++i;
    } else if (max_tile_queries >= 8 && same(i, 8)) {
      weighted_sum<Isa, 8>(p.data() + i, values, a[i], b[i], hd, acc + i);
      i += 8;
    } else if (same(i, 4)) {
      weighted_sum<Isa, 4>(p.data() + i, values, a[i], b[i], hd, acc + i);
      i += 4;
    } else if (same(i, 2)) {
      weighted_sum<Isa, 2>(p.data() + i, values, a[i], b[i], hd, acc + i);
      i += 2;
    } else {
      weighted_sum<Isa, 1>(p.data() + i, values, a[i], b[i], hd, acc + i);
      i += 1;
    }
  }
}

/// Prefill: packed keys and values, tasks of (kv head, query rows).
template <class Isa>
void attend_blocked(moe::detail::ThreadPool& pool, const AttentionProblem& p, const KeyIndex& keys) {
  constexpr int TQ = Tiles<Isa>::score_queries;
  constexpr index_t cols = Tiles<Isa>::score_cols;
  const AttentionShape& s = p.shape;
  const index_t S = p.q.rows, hd = s.head_dim, G = s.group(), nkv = s.num_kv_heads;

  // Pack the keys some row sees, [first, last), per kv head and block of
  // key_block keys: the keys in tiles of `cols` keys transposed ([hd][cols],
  // zero past the end), the values in chunks of vc elements (Values). Both
  // are then read in address order by the kernels.
  const auto transposed = [hd](index_t c, index_t d) { return (c / cols) * hd * cols + d * cols + c % cols; };
  constexpr index_t vc = Tiles<Isa>::sum_cols;  // values: chunks of vc elements, each chunk's keys together
  const index_t first = keys.lo.front(), last = keys.hi.back(), blocks = (last - first + key_block - 1) / key_block;
  std::vector<float> packed_keys(std::size_t(nkv * blocks * hd * key_block));
  const index_t value_block = key_block * ((hd + vc - 1) / vc * vc);  // floats per block of values
  std::vector<float> packed_values(std::size_t(nkv * blocks * value_block));
  pool.parallel_for(nkv * blocks, [&](std::int64_t task, int) {
    const index_t g = index_t(task) / blocks, blk = index_t(task) % blocks;
    float* kt = packed_keys.data() + (g * blocks + blk) * hd * key_block;
    float* vh = packed_values.data() + (g * blocks + blk) * value_block;
    for (index_t c = 0; c < key_block; ++c) {
      const index_t j = first + blk * key_block + c;
      if (j >= last) {
        for (index_t d = 0; d < hd; ++d) kt[transposed(c, d)] = 0.0f;
        continue;
      }
      const auto [r, i] = keys.sequence.locate(j);
      const float* k = p.runs[r].keys + i * p.kv_stride + g * hd;
      const float* v = p.runs[r].values + i * p.kv_stride + g * hd;
      for (index_t d = 0; d < hd; ++d) kt[transposed(c, d)] = k[d];
      for (index_t d = 0; d < hd; ++d) vh[(d / vc) * key_block * vc + c * vc + d % vc] = v[d];
    }
  });

  const index_t row_blocks = (S + query_rows - 1) / query_rows, max_queries = query_rows * G;
  const std::size_t score_size = std::size_t(TQ * key_block), acc_size = std::size_t(max_queries * hd);
  std::vector<std::vector<float>> scratch(std::size_t(pool.size()));
  std::vector<std::vector<RunningSoftmax>> states(std::size_t(pool.size()));
  const float scale = float(1.0 / std::sqrt(double(hd)));

  // Later row blocks see more keys: hand them out first.
  pool.parallel_for(nkv * row_blocks, [&](std::int64_t task, int thread) {
    const index_t g = index_t(task) % nkv, rb = row_blocks - 1 - index_t(task) / nkv;
    const index_t t0 = rb * query_rows, t1 = std::min(S, t0 + query_rows), nq = (t1 - t0) * G;
    std::vector<float>& mem = scratch[std::size_t(thread)];
    mem.resize(score_size + 2 * acc_size + std::size_t(TQ * hd));
    float *scores = mem.data(), *acc = scores + score_size, *qt = acc + acc_size;
    std::vector<RunningSoftmax>& state = states[std::size_t(thread)];
    state.assign(std::size_t(nq), {});
    std::fill(acc, acc + nq * hd, 0.0f);
    // query vector v: row t0 + v / G, head g·G + v % G
    const auto row_of = [&](index_t v) { return t0 + v / G; };
    const auto query = [&](index_t v) { return p.q.row(row_of(v)) + (g * G + v % G) * hd; };
    // The query vectors by tiles of TQ, transposed ([hd][TQ]; a short last
    // tile repeats its last vector).
    for (index_t v0 = 0; v0 < nq; v0 += TQ)
      for (index_t i = 0; i < TQ; ++i) {
        const float* q = query(std::min(v0 + i, nq - 1));
        for (index_t d = 0; d < hd; ++d) qt[v0 * hd + d * TQ + i] = q[d];
      }

    for (index_t blk = (keys.lo[std::size_t(t0)] - first) / key_block;
         first + blk * key_block < keys.hi[std::size_t(t1 - 1)]; ++blk) {
      const index_t jb = first + blk * key_block;
      const float* kt = packed_keys.data() + (g * blocks + blk) * hd * key_block;
      const float* vh = packed_values.data() + (g * blocks + blk) * value_block;
      for (index_t v0 = 0; v0 < nq; v0 += TQ) {
        const index_t nv = std::min<index_t>(TQ, nq - v0);
        // Block-local key range of each query vector, and their union.
        std::array<index_t, max_tile_queries> a{}, b{};
        index_t ua = key_block, ub = 0;
        for (index_t i = 0; i < nv; ++i) {
          const index_t t = row_of(v0 + i);
          a[std::size_t(i)] = std::clamp(keys.lo[std::size_t(t)] - jb, index_t(0), key_block);
          b[std::size_t(i)] = std::clamp(keys.hi[std::size_t(t)] - jb, index_t(0), key_block);
          if (a[std::size_t(i)] < b[std::size_t(i)]) {
            ua = std::min(ua, a[std::size_t(i)]);
            ub = std::max(ub, b[std::size_t(i)]);
          }
        }
        if (ua >= ub) continue;
        const index_t col0 = ua / cols * cols, col1 = (ub + cols - 1) / cols * cols;
        for (index_t col = col0; col < col1; col += cols)
          score_tile<Isa>(qt + v0 * hd, kt + col * hd, hd, col, scale, scores);
        std::array<RunningSoftmax*, max_tile_queries> st{};
        std::array<float*, max_tile_queries> ac{};
        for (index_t i = 0; i < nv; ++i) {
          st[std::size_t(i)] = &state[std::size_t(v0 + i)];
          ac[std::size_t(i)] = acc + (v0 + i) * hd;
        }
        fold_and_sum<Isa>(scores, key_block, col0, col1, nv, a.data(), b.data(), st.data(), ac.data(),
                          Values{vh, vc, key_block * vc}, hd);
      }
    }
    for (index_t v = 0; v < nq; ++v) {
      const float inv = 1.0f / state[std::size_t(v)].sum;
      float* out = p.context.row(row_of(v)) + (g * G + v % G) * hd;
      for (index_t d = 0; d < hd; ++d) out[d] = acc[v * hd + d] * inv;
    }
  });
}

/// Decode: chunks of keys read in place, partial states merged in order.
template <class Isa>
void attend_split_keys(moe::detail::ThreadPool& pool, const AttentionProblem& p, const KeyIndex& keys) {
  constexpr index_t W = index_t(floats<Isa>::size);
  const AttentionShape& s = p.shape;
  const index_t S = p.q.rows, hd = s.head_dim, G = s.group(), nh = s.num_heads;

  // Chunks of at most decode_chunk keys within one run, over the keys some row sees.
  struct Chunk {
    std::size_t run;
    index_t begin, end;  ///< keys of the sequence
  };
  std::vector<Chunk> chunks;
  const index_t first = keys.lo.front(), last = keys.hi.back();
  for (std::size_t r = 0; r < p.runs.size(); ++r) {
    const index_t rb = std::max(first, keys.sequence.run_start(r)),
                  re = std::min(last, keys.sequence.run_start(r) + p.runs[r].count);
    for (index_t j = rb; j < re; j += decode_chunk) chunks.push_back({r, j, std::min(re, j + decode_chunk)});
  }
  const index_t C = index_t(chunks.size()), nq = S * nh;
  std::vector<RunningSoftmax> state(std::size_t(C * nq));
  std::vector<float> acc(std::size_t(C * nq * hd), 0.0f);
  const index_t score_stride = (decode_chunk + W - 1) / W * W;
  std::vector<std::vector<float>> scratch(std::size_t(pool.size()));
  const float scale = float(1.0 / std::sqrt(double(hd)));

  pool.parallel_for(C, [&](std::int64_t c, int thread) {
    const Chunk& ch = chunks[std::size_t(c)];
    const KeyValueRun& run = p.runs[ch.run];
    const index_t n = ch.end - ch.begin;
    const index_t offset = ch.begin - keys.sequence.run_start(ch.run);  // first key's index in the run
    std::vector<float>& scores = scratch[std::size_t(thread)];
    scores.resize(std::size_t(dot_queries * score_stride));
    // One kv head's rows at a time (the heads sharing it together), in
    // slices of keys, each slice's scores folded as it is computed.
    for (index_t h0 = 0; h0 < nh;) {
      const index_t g = h0 / G, nv = std::min<index_t>({dot_queries, nh - h0, (g + 1) * G - h0});
      const float* k = run.keys + offset * p.kv_stride + g * hd;
      const float* v = run.values + offset * p.kv_stride + g * hd;
      for (index_t j0 = 0; j0 < n; j0 += decode_slice) {
        const index_t j1 = std::min(n, j0 + decode_slice), span_end = j0 + (j1 - j0 + W - 1) / W * W;
        for (index_t t = 0; t < S; ++t) {
          std::array<index_t, max_tile_queries> a{}, b{};
          a.fill(std::clamp(keys.lo[std::size_t(t)] - ch.begin, j0, j1));
          b.fill(std::clamp(keys.hi[std::size_t(t)] - ch.begin, j0, j1));
          if (a[0] >= b[0]) continue;
          std::array<const float*, max_tile_queries> qs{};
          for (index_t i = 0; i < dot_queries; ++i) qs[std::size_t(i)] = p.q.row(t) + (h0 + std::min(i, nv - 1)) * hd;
          score_dots<Isa>(qs, k, v, p.kv_stride, a[0], b[0], n, hd, scale, scores.data(), score_stride);
          std::array<RunningSoftmax*, max_tile_queries> st{};
          std::array<float*, max_tile_queries> ac{};
          for (index_t i = 0; i < nv; ++i) {
            const index_t q = c * nq + t * nh + h0 + i;
            st[std::size_t(i)] = &state[std::size_t(q)];
            ac[std::size_t(i)] = acc.data() + q * hd;
          }
          fold_and_sum<Isa>(scores.data(), score_stride, j0, span_end, nv, a.data(), b.data(), st.data(), ac.data(),
                            Values{v, p.kv_stride, Tiles<Isa>::sum_cols}, hd);
        }
      }
      h0 += nv;
    }
  });

  // Merge each query vector's partial states, chunk by chunk in order.
  pool.parallel_for(nq, [&](std::int64_t q, int) {
    float m = -INFINITY;
    for (index_t c = 0; c < C; ++c) m = std::max(m, state[std::size_t(c * nq + q)].max);
    float* out = p.context.row(index_t(q) / nh) + (index_t(q) % nh) * hd;
    std::fill(out, out + hd, 0.0f);
    float sum = 0;
    for (index_t c = 0; c < C; ++c) {
      const RunningSoftmax& part = state[std::size_t(c * nq + q)];
      if (part.sum == 0) continue;  // this chunk holds none of the query's keys
      const float w = std::exp(part.max - m);
      sum += part.sum * w;
      const float* a = acc.data() + (c * nq + q) * hd;
      for (index_t d = 0; d < hd; ++d) out[d] += a[d] * w;
    }
    const float inv = 1.0f / sum;
    for (index_t d = 0; d < hd; ++d) out[d] *= inv;
  });
}

/// context = attend_reference(p)'s context within fp32 rounding, on the
/// threads of `pool`.
template <class Isa>
void attend(moe::detail::ThreadPool& pool, const AttentionProblem& p) {
  if (p.q.rows == 0) return;
  const KeyIndex keys(p);
  if (p.q.rows <= decode_rows)
    attend_split_keys<Isa>(pool, p, keys);
  else
    attend_blocked<Isa>(pool, p, keys);
}

}  // namespace attention_detail

using attention_detail::attend;

}  // namespace moe::backend::cpu
