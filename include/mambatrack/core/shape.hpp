// Shape: up to four int64 dimensions of a contiguous row-major tensor. numel() is the product of
// the dimensions (1 for rank 0).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>

#include "mambatrack/core/error.hpp"

namespace mambatrack {

class Shape {
 public:
  static constexpr int kMaxRank = 4;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    MAMBATRACK_CHECK_SHAPE(dims.size() <= kMaxRank, "a shape has at most ", kMaxRank,
                           " dimensions, got ", dims.size());
    for (int64_t d : dims) push_back(d);
  }

  int rank() const noexcept { return rank_; }
  int64_t operator[](int i) const {
    MAMBATRACK_CHECK_SHAPE(i >= 0 && i < rank_, "dimension ", i, " of a rank-", rank_, " shape");
    return dims_[i];
  }
  int64_t numel() const noexcept {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  void push_back(int64_t d) {
    MAMBATRACK_CHECK_SHAPE(rank_ < kMaxRank, "a shape has at most ", kMaxRank, " dimensions");
    MAMBATRACK_CHECK_SHAPE(d >= 0, "negative dimension ", d);
    dims_[rank_++] = d;
  }
  const int64_t* begin() const noexcept { return dims_.data(); }
  const int64_t* end() const noexcept { return dims_.data() + rank_; }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

  // "(4096, 128)"
  std::string str() const {
    std::ostringstream os;
    os << '(';
    for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
    os << ')';
    return os.str();
  }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

}  // namespace mambatrack
