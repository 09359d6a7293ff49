// torch's CPU sort and topk orders, ties included: ATen sorts (value, index) pairs with libstdc++'s algorithms,
// so the order of equal values is whatever those algorithms leave, and the only way to give the same order is to
// run the same algorithms on the same pairs under the same comparisons (minilora/std_sort.py is the Python port,
// for machines without a C++ compiler, and says step by step what they do).
//   sort(stable=False): std::sort (introsort) under  a < b  (NaN last), or  a > b  (NaN first) descending.
//   topk: k * 64 <= n: std::partial_sort; else std::nth_element to k - 1, then (sorted) std::sort of the first
//         k - 1; under  a > b  with NaN largest (largest=True), or  a < b  with NaN largest (largest=False).
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

extern "C" {
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
