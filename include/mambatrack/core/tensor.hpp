// Tensor<T, Device> owns contiguous row-major memory; View<T, Device> is the non-owning
// (pointer, shape) pair that every op takes. Host views index with at(i, j, ...); device views
// are only passed on to kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "mambatrack/core/device.hpp"
#include "mambatrack/core/shape.hpp"

namespace mambatrack {

template <class T, class Device = Host>
struct View {
  T* data = nullptr;
  Shape shape;

  View() = default;
  View(T* d, Shape s) : data(d), shape(s) {}
  // View<T> converts to View<const T>.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  View(const View<U, Device>& other) : data(other.data), shape(other.shape) {}

  int64_t numel() const noexcept { return shape.numel(); }
  int rank() const noexcept { return shape.rank(); }
  int64_t dim(int i) const { return shape[i]; }
  bool empty() const noexcept { return numel() == 0; }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(numel()) * sizeof(T); }

  // Row-major element access on the host: at(i), at(i, j), at(i, j, k), at(i, j, k, l).
  template <class... Idx>
  T& at(Idx... idx) const {
    static_assert(std::is_same_v<Device, Host>, "at() reads host memory only");
    static_assert(sizeof...(Idx) >= 1 && sizeof...(Idx) <= Shape::kMaxRank, "1 to 4 indices");
    const int64_t ids[] = {static_cast<int64_t>(idx)...};
    int64_t offset = 0;
    for (int i = 0; i < static_cast<int>(sizeof...(Idx)); ++i) offset = offset * shape[i] + ids[i];
    return data[offset];
  }
  T& operator[](int64_t i) const {
    static_assert(std::is_same_v<Device, Host>, "operator[] reads host memory only");
    return data[i];
  }

  // The same memory seen with another shape of equal element count.
  View reshape(Shape s) const {
    MAMBATRACK_CHECK_SHAPE(s.numel() == numel(), "cannot reshape ", shape, " to ", s);
    return View(data, s);
  }
  // Rows [begin, end) along the first dimension.
  View rows(int64_t begin, int64_t end) const {
    MAMBATRACK_CHECK_SHAPE(rank() >= 1 && begin >= 0 && begin <= end && end <= shape[0],
                           "rows [", begin, ", ", end, ") of ", shape);
    int64_t row = shape[0] == 0 ? 0 : numel() / shape[0];
    Shape s;
    s.push_back(end - begin);
    for (int i = 1; i < rank(); ++i) s.push_back(shape[i]);
    return View(data + begin * row, s);
  }
};

template <class T, class Device = Host>
class Tensor {
 public:
  using value_type = T;
  using device_type = Device;

  Tensor() = default;
  explicit Tensor(Shape shape) : shape_(shape) {
    data_ = static_cast<T*>(DeviceMemory<Device>::allocate(bytes()));
  }
  ~Tensor() { DeviceMemory<Device>::release(data_); }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor(Tensor&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), shape_(std::exchange(other.shape_, Shape{})) {}
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      DeviceMemory<Device>::release(data_);
      data_ = std::exchange(other.data_, nullptr);
      shape_ = std::exchange(other.shape_, Shape{});
    }
    return *this;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  const Shape& shape() const noexcept { return shape_; }
  int64_t numel() const noexcept { return shape_.numel(); }
  int64_t dim(int i) const { return shape_[i]; }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(numel()) * sizeof(T); }

  View<T, Device> view() noexcept { return View<T, Device>(data_, shape_); }
  View<const T, Device> view() const noexcept { return View<const T, Device>(data_, shape_); }
  operator View<T, Device>() noexcept { return view(); }
  operator View<const T, Device>() const noexcept { return view(); }

  template <class... Idx>
  T& at(Idx... idx) { return view().at(idx...); }
  template <class... Idx>
  const T& at(Idx... idx) const { return view().at(idx...); }
  T& operator[](int64_t i) { return view()[i]; }
  const T& operator[](int64_t i) const { return view()[i]; }

 private:
  T* data_ = nullptr;
  Shape shape_;
};

// Host-to-host copy of equal element counts.
template <class T>
void copy(View<const T, Host> src, View<T, Host> dst) {
  MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "copy of ", src.shape, " into ", dst.shape);
  if (src.numel() > 0) std::memcpy(dst.data, src.data, src.bytes());
}

template <class T>
void fill(View<T, Host> dst, T value) {
  std::fill(dst.data, dst.data + dst.numel(), value);
}

}  // namespace mambatrack
