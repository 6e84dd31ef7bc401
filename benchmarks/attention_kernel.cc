// A fused CPU kernel for the attention core o = softmax(q kᵀ) v and its gradient, one
// window of one head ("map") at a time, for benchmarks/attention_kernel.py.
//
// TensorFlow computes the n×n scores, the softmax and its gradient op by op, each op a pass
// over every map in the batch (1.2 GB for stage 1 of a 16-image NTK at 224 px), so the
// work is bound by memory traffic. Here each row of scores lives only in L1: the forward
// keeps the row's log-sum-exp, the backward recomputes the row's probabilities from it
// (D_i = g_i·o_i replaces the row sum of p ⊙ dp) and accumulates dk, dv over tiles of R
// rows. The head width D is a template parameter so the inner loops vectorize.
//
// Layout: q, k, v, o, g, dq, dk, dv are [N, n, D] row-major; lse is [N, n]. q is already
// scaled; float32 (templates, so a float64 instance is one line). Returns 0, or 1 for a
// head width without an instance.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

typedef int64_t I;
constexpr int R = 4;  // rows per tile of the backward

template <typename T>
void transpose(I rows, I cols, const T* a, T* at) {
  for (I r = 0; r < rows; ++r)
    for (I c = 0; c < cols; ++c) at[c * rows + r] = a[r * cols + c];
}

// s[r][j] = Σ_c x[r][c] yT[c][j] for `rows` rows of x.
template <typename T, int D>
void row_products(I n, const T* x, I rows, const T* yT, T* s) {
  for (I r = 0; r < rows; ++r) {
    T xc[D];
    for (int c = 0; c < D; ++c) xc[c] = x[r * D + c];
    T* sr = s + r * n;
#pragma omp simd
    for (I j = 0; j < n; ++j) {
      T acc = 0;
      for (int c = 0; c < D; ++c) acc += xc[c] * yT[c * n + j];
      sr[j] = acc;
    }
  }
}

template <typename T, int D>
void forward_map(I n, const T* q, const T* k, const T* v, T* o, T* lse, T* work) {
  T *kT = work, *vT = work + n * D, *s = work + 2 * n * D;
  transpose(n, (I)D, k, kT);
  transpose(n, (I)D, v, vT);
  for (I i = 0; i < n; ++i) {
    row_products<T, D>(n, q + i * D, 1, kT, s);
    T m = s[0];
    for (I j = 1; j < n; ++j) m = std::max(m, s[j]);
    T l = 0;
#pragma omp simd reduction(+ : l)
    for (I j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - m);
      l += s[j];
    }
    T acc[D] = {0};
    for (I j = 0; j < n; ++j)
      for (int c = 0; c < D; ++c) acc[c] += s[j] * vT[c * n + j];
    for (int c = 0; c < D; ++c) o[i * D + c] = acc[c] / l;
    lse[i] = m + std::log(l);
  }
}

template <typename T, int D>
void backward_map(I n, const T* q, const T* k, const T* v, const T* o, const T* g,
                  const T* lse, T* dq, T* dk, T* dv, T* work) {
  T *kT = work, *vT = work + n * D, *dkT = work + 2 * n * D, *dvT = work + 3 * n * D;
  T *p = work + 4 * n * D, *ds = p + R * n;
  transpose(n, (I)D, k, kT);
  transpose(n, (I)D, v, vT);
  std::memset(dkT, 0, sizeof(T) * 2 * n * D);  // dkT and dvT
  for (I i0 = 0; i0 < n; i0 += R) {
    const I rows = std::min<I>(R, n - i0);
    row_products<T, D>(n, q + i0 * D, rows, kT, p);   // scores
    row_products<T, D>(n, g + i0 * D, rows, vT, ds);  // dp = g vᵀ
    T qr[R][D] = {{0}}, gr[R][D] = {{0}};
    for (I r = 0; r < rows; ++r) {
      const I i = i0 + r;
      T d_i = 0;
      for (int c = 0; c < D; ++c) {
        qr[r][c] = q[i * D + c];
        gr[r][c] = g[i * D + c];
        d_i += g[i * D + c] * o[i * D + c];
      }
      const T lse_i = lse[i];
      T *pr = p + r * n, *dsr = ds + r * n;
#pragma omp simd
      for (I j = 0; j < n; ++j) {
        const T pj = std::exp(pr[j] - lse_i);
        pr[j] = pj;
        dsr[j] = pj * (dsr[j] - d_i);
      }
      T acc[D] = {0};
      for (I j = 0; j < n; ++j)
        for (int c = 0; c < D; ++c) acc[c] += dsr[j] * kT[c * n + j];
      for (int c = 0; c < D; ++c) dq[i * D + c] = acc[c];
    }
    for (I r = rows; r < R; ++r) {  // a short last tile adds nothing
      std::memset(p + r * n, 0, sizeof(T) * n);
      std::memset(ds + r * n, 0, sizeof(T) * n);
    }
    for (int c = 0; c < D; ++c) {
      T *dkc = dkT + c * n, *dvc = dvT + c * n;
#pragma omp simd
      for (I j = 0; j < n; ++j) {
        T a = dkc[j], b = dvc[j];
        for (int r = 0; r < R; ++r) {
          a += ds[r * n + j] * qr[r][c];
          b += p[r * n + j] * gr[r][c];
        }
        dkc[j] = a;
        dvc[j] = b;
      }
    }
  }
  transpose((I)D, n, dkT, dk);
  transpose((I)D, n, dvT, dv);
}

template <typename T, int D>
void forward(I N, I n, int threads, const T* q, const T* k, const T* v, T* o, T* lse) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> work(3 * n * D + n);
#pragma omp for schedule(static)
    for (I b = 0; b < N; ++b)
      forward_map<T, D>(n, q + b * n * D, k + b * n * D, v + b * n * D, o + b * n * D,
                        lse + b * n, work.data());
  }
}

template <typename T, int D>
void backward(I N, I n, int threads, const T* q, const T* k, const T* v, const T* o,
              const T* g, const T* lse, T* dq, T* dk, T* dv) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> work(4 * n * D + 2 * R * n);
#pragma omp for schedule(static)
    for (I b = 0; b < N; ++b) {
      const I at = b * n * D;
      backward_map<T, D>(n, q + at, k + at, v + at, o + at, g + at, lse + b * n, dq + at,
                         dk + at, dv + at, work.data());
    }
  }
}

}  // namespace

#define HEAD_WIDTHS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(12) X(16)

#define DEFINE(T, SUFFIX)                                                                  \
  extern "C" int attention_forward_##SUFFIX(I N, I n, I d, int threads, const T* q,       \
                                            const T* k, const T* v, T* o, T* lse) {       \
    switch (d) {                                                                           \
      HEAD_WIDTHS(FORWARD_CASE_##SUFFIX)                                                   \
    }                                                                                      \
    return 1;                                                                              \
  }                                                                                        \
  extern "C" int attention_backward_##SUFFIX(I N, I n, I d, int threads, const T* q,      \
                                             const T* k, const T* v, const T* o,          \
                                             const T* g, const T* lse, T* dq, T* dk,      \
                                             T* dv) {                                      \
    switch (d) {                                                                           \
      HEAD_WIDTHS(BACKWARD_CASE_##SUFFIX)                                                  \
    }                                                                                      \
    return 1;                                                                              \
  }

#define FORWARD_CASE_f32(D) \
  case D: forward<float, D>(N, n, threads, q, k, v, o, lse); return 0;
#define BACKWARD_CASE_f32(D) \
  case D: backward<float, D>(N, n, threads, q, k, v, o, g, lse, dq, dk, dv); return 0;

DEFINE(float, f32)
