// torch's CPU sort and topk orders, ties included: ATen sorts (value, index) pairs with libstdc++'s algorithms,
// so the order of equal values is whatever those algorithms leave, and the only way to give the same order is to
// run the same algorithms on the same pairs under the same comparisons (minilora/std_sort.py is the Python port,
// for machines without a C++ compiler, and says step by step what they do).
//   sort(stable=False): std::sort (introsort) under  a < b  (NaN last), or  a > b  (NaN first) descending.
//   topk: k * 64 <= n: std::partial_sort; else std::nth_element to k - 1, then (sorted) std::sort of the first
//         k - 1; under  a > b  with NaN largest (largest=True), or  a < b  with NaN largest (largest=False).
//   kthvalue: ATen's quick_select_template;  mode: std::sort under the values' plain  a < b , then a scan.
// Every argument but the arrays is an int64_t (one ctypes spelling in std_sort.py). Keys arrive as float,
// double or int64 (every other dtype converts to one of them exactly, order and ties kept).
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

template <typename T> using Pair = std::pair<T, int64_t>;
template <typename T> static bool is_nan(T x) { return x != x; }

template <typename T> struct Ascending {
  bool operator()(const Pair<T>& a, const Pair<T>& b) const {
    return (!is_nan(a.first) && is_nan(b.first)) || (a.first < b.first);
  }
};
template <typename T> struct Descending {
  bool operator()(const Pair<T>& a, const Pair<T>& b) const {
    return (is_nan(a.first) && !is_nan(b.first)) || (a.first > b.first);
  }
};

template <typename T> static void load_row(const T* keys, int64_t n, std::vector<Pair<T>>& q) {
  for (int64_t j = 0; j < n; ++j) q[j] = Pair<T>(keys[j], j);
}

// order[r, :] = the indices that sort row r of keys (rows x n, C order).
template <typename T> static void sort_rows(const T* keys, int64_t rows, int64_t n, int descending, int64_t* order) {
  std::vector<Pair<T>> q(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(keys + r * n, n, q);
    if (descending) std::sort(q.begin(), q.end(), Descending<T>());
    else std::sort(q.begin(), q.end(), Ascending<T>());
    for (int64_t j = 0; j < n; ++j) order[r * n + j] = q[j].second;
  }
}

template <typename T, typename Before>
static void select_top(std::vector<Pair<T>>& q, int64_t k, int sorted, Before before) {
  if (k * 64 <= (int64_t)q.size()) {
    std::partial_sort(q.begin(), q.begin() + k, q.end(), before);
  } else {
    std::nth_element(q.begin(), q.begin() + k - 1, q.end(), before);
    if (sorted) std::sort(q.begin(), q.begin() + k - 1, before);
  }
}

// out[r, :k] = topk's indices of row r (k >= 1).
template <typename T>
static void topk_rows(const T* keys, int64_t rows, int64_t n, int64_t k, int largest, int sorted, int64_t* out) {
  std::vector<Pair<T>> q(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(keys + r * n, n, q);
    if (largest) select_top(q, k, sorted, Descending<T>());
    else select_top(q, k, sorted, Ascending<T>());
    for (int64_t j = 0; j < k; ++j) out[r * k + j] = q[j].second;
  }
}

// kthvalue: ATen's own quick_select_template (Sedgewick's, from TH) on a copy of the row, to position k, under
// gt_or_nan (NaN largest); out[r] = the index that lands there.
template <typename T> static bool gt_or_nan(T x, T y) { return (is_nan(x) && !is_nan(y)) || (x > y); }

template <typename T> static void kthvalue_rows(const T* keys, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  std::vector<Pair<T>> q(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(keys + r * n, n, q);
    int64_t L = 0, R = n - 1;
    while (R > L) {
      if (R == L + 1) {
        if (gt_or_nan(q[L].first, q[R].first)) std::swap(q[L], q[R]);
        break;
      }
      std::swap(q[(L + R) >> 1], q[L + 1]);  // the median of three as pivot, at L
      if (gt_or_nan(q[L + 1].first, q[R].first)) std::swap(q[L + 1], q[R]);
      if (gt_or_nan(q[L].first, q[R].first)) std::swap(q[L], q[R]);
      if (gt_or_nan(q[L + 1].first, q[L].first)) std::swap(q[L + 1], q[L]);
      int64_t i = L + 1, j = R;
      T pivot = q[L].first;
      while (true) {
        do i++; while (gt_or_nan(pivot, q[i].first));
        do j--; while (gt_or_nan(q[j].first, pivot));
        if (j < i) break;
        std::swap(q[i], q[j]);
      }
      std::swap(q[L], q[j]);
      if (j <= k) L = i;
      if (j >= k) R = j - 1;
    }
    out[r] = q[k].second;
  }
}

// mode: std::sort of the pairs under the values' plain  a < b  (NaN unordered), then the last index of the first
// longest run of equal values; out[r] = that index.
template <typename T> static void mode_rows(const T* keys, int64_t rows, int64_t n, int64_t* out) {
  std::vector<Pair<T>> q(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(keys + r * n, n, q);
    std::sort(q.begin(), q.end(), [](const Pair<T>& a, const Pair<T>& b) { return a.first < b.first; });
    int64_t run = 0, longest = 0, pick = 0;
    for (int64_t j = 0; j < n; ++j) {
      run++;
      if (j == n - 1 || q[j].first != q[j + 1].first) {
        if (run > longest) {
          pick = q[j].second;
          longest = run;
        }
        run = 0;
      }
    }
    out[r] = pick;
  }
}

extern "C" {
void kthvalue_float32(const float* keys, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  kthvalue_rows(keys, rows, n, k, out);
}
void kthvalue_float64(const double* keys, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  kthvalue_rows(keys, rows, n, k, out);
}
void kthvalue_int64(const int64_t* keys, int64_t rows, int64_t n, int64_t k, int64_t* out) {
  kthvalue_rows(keys, rows, n, k, out);
}
void mode_float32(const float* keys, int64_t rows, int64_t n, int64_t* out) { mode_rows(keys, rows, n, out); }
void mode_float64(const double* keys, int64_t rows, int64_t n, int64_t* out) { mode_rows(keys, rows, n, out); }
void mode_int64(const int64_t* keys, int64_t rows, int64_t n, int64_t* out) { mode_rows(keys, rows, n, out); }

void sort_float32(const float* keys, int64_t rows, int64_t n, int64_t descending, int64_t* order) {
  sort_rows(keys, rows, n, descending, order);
}
void sort_float64(const double* keys, int64_t rows, int64_t n, int64_t descending, int64_t* order) {
  sort_rows(keys, rows, n, descending, order);
}
void sort_int64(const int64_t* keys, int64_t rows, int64_t n, int64_t descending, int64_t* order) {
  sort_rows(keys, rows, n, descending, order);
}
void topk_float32(const float* keys, int64_t rows, int64_t n, int64_t k, int64_t largest, int64_t sorted,
                  int64_t* out) {
  topk_rows(keys, rows, n, k, largest, sorted, out);
}
void topk_float64(const double* keys, int64_t rows, int64_t n, int64_t k, int64_t largest, int64_t sorted,
                  int64_t* out) {
  topk_rows(keys, rows, n, k, largest, sorted, out);
}
void topk_int64(const int64_t* keys, int64_t rows, int64_t n, int64_t k, int64_t largest, int64_t sorted,
                int64_t* out) {
  topk_rows(keys, rows, n, k, largest, sorted, out);
}
}
