#pragma once
// A column of numbers handed in by Python for batch ingest: any object with
// the buffer protocol (array.array, numpy arrays, memoryview; read in place,
// any stride) or any sequence of numbers / None (copied once). Built with the
// GIL held; read without it (the buffer view stays held until destruction,
// which needs the GIL again).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "common.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/fields.hpp"
#include "gpucluster/model/sample.hpp"
#include "gpucluster/model/validation.hpp"

namespace gpucluster::python {

class Column {
 public:
  Column() = default;  // absent: every value unavailable

  Column(const py::handle& source, const char* name) : name_(name), present_(!source.is_none()) {
    if (!present_) return;
    if (PyObject_CheckBuffer(source.ptr()) && !PyUnicode_Check(source.ptr()) && !PyBytes_Check(source.ptr())) {
      buffer_ = py::reinterpret_borrow<py::buffer>(source).request();
      if (buffer_.ndim != 1) throw py::value_error(std::string(name) + ": a buffer column must be one-dimensional");
      format_ = buffer_.format;
      if (format_.size() > 1 && (format_[0] == '@' || format_[0] == '=' || format_[0] == '<')) format_.erase(0, 1);
      if (format_.size() != 1 || std::string("dfbBhHiIlLqQn?").find(format_[0]) == std::string::npos) {
        throw py::value_error(std::string(name) + ": unsupported buffer format '" + buffer_.format + "'");
      }
      base_ = static_cast<const char*>(buffer_.ptr);
      stride_ = buffer_.strides.empty() ? buffer_.itemsize : buffer_.strides[0];
      size_ = static_cast<std::size_t>(buffer_.shape[0]);
      return;
    }
    const py::sequence seq = py::reinterpret_borrow<py::sequence>(source);
    size_ = py::len(seq);
    values_.resize(size_);
    ints_.resize(size_);
    kinds_.assign(size_, kMissing);
    for (std::size_t i = 0; i < size_; ++i) {
      const py::object value = seq[i];
      if (value.is_none()) continue;
      if (PyLong_Check(value.ptr())) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
        if (overflow == 0) {
          ints_[i] = v;
          values_[i] = static_cast<double>(v);
          kinds_[i] = kInteger;
          continue;
        }
      }
      values_[i] = PyFloat_AsDouble(value.ptr());
      if (PyErr_Occurred()) throw py::error_already_set();
      kinds_[i] = kFloat;
    }
  }

  bool present() const noexcept { return present_; }
  std::size_t size() const noexcept { return size_; }
  const char* name() const noexcept { return name_; }

  // The value at i, or nullopt when absent/None.
  std::optional<double> at(std::size_t i) const {
    if (!present_) return std::nullopt;
    if (base_ == nullptr) {
      if (kinds_[i] == kMissing) return std::nullopt;
      return values_[i];
    }
    const char* p = base_ + static_cast<std::ptrdiff_t>(i) * stride_;
    switch (format_[0]) {
      case 'd': return load<double>(p);
      case 'f': return static_cast<double>(load<float>(p));
      case 'b': return static_cast<double>(load<signed char>(p));
      case 'B': return static_cast<double>(load<unsigned char>(p));
      case 'h': return static_cast<double>(load<short>(p));
      case 'H': return static_cast<double>(load<unsigned short>(p));
      case 'i': return static_cast<double>(load<int>(p));
      case 'I': return static_cast<double>(load<unsigned int>(p));
      case 'l': return static_cast<double>(load<long>(p));
      case 'L': return static_cast<double>(load<unsigned long>(p));
      case 'q': return static_cast<double>(load<long long>(p));
      case 'Q': return static_cast<double>(load<unsigned long long>(p));
      case 'n': return static_cast<double>(load<Py_ssize_t>(p));
      case '?': return load<bool>(p) ? 1.0 : 0.0;
      default: return std::nullopt;
    }
  }

  // Values [begin, begin + count) as doubles into out (absent column: untouched), with
  // missing[j] = 1 for None entries. The type dispatch happens once per chunk.
  void read_doubles(std::size_t begin, std::size_t count, double* out, std::uint8_t* missing) const {
    if (!present_) return;
    if (base_ == nullptr) {
      for (std::size_t j = 0; j < count; ++j) {
        out[j] = values_[begin + j];
        missing[j] = kinds_[begin + j] == kMissing ? 1 : 0;
      }
      return;
    }
    switch (format_[0]) {
      case 'd': copy_as<double>(begin, count, out); break;
      case 'f': copy_as<float>(begin, count, out); break;
      case 'q': copy_as<long long>(begin, count, out); break;
      case 'l': copy_as<long>(begin, count, out); break;
      case 'i': copy_as<int>(begin, count, out); break;
      default:
        for (std::size_t j = 0; j < count; ++j) out[j] = *at(begin + j);
    }
    std::memset(missing, 0, count);
  }

  // Byte counts [begin, begin + count) into out; exact for integer buffers and ints.
  void read_integers(std::size_t begin, std::size_t count, std::int64_t* out) const {
    if (present_ && base_ != nullptr && stride_ == static_cast<Py_ssize_t>(sizeof(long long)) &&
        (format_[0] == 'q' || (format_[0] == 'l' && sizeof(long) == sizeof(long long)))) {
      std::memcpy(out, base_ + static_cast<std::ptrdiff_t>(begin) * stride_, count * sizeof(std::int64_t));
      return;
    }
    for (std::size_t j = 0; j < count; ++j) out[j] = integer_at(begin + j);
  }

  // An integer at i (byte counts): exact for integer buffers and Python ints;
  // a float must be integral. Throws InputError otherwise.
  std::int64_t integer_at(std::size_t i) const {
    if (present_ && base_ == nullptr && kinds_[i] == kInteger) return ints_[i];
    if (present_ && base_ != nullptr) {
      const char* p = base_ + static_cast<std::ptrdiff_t>(i) * stride_;
      switch (format_[0]) {
        case 'q': return load<long long>(p);
        case 'l': return load<long>(p);
        case 'i': return load<int>(p);
        case 'n': return load<Py_ssize_t>(p);
        default: break;
      }
    }
    const std::optional<double> v = at(i);
    if (!v) throw InputError(std::string(name_) + "[" + std::to_string(i) + "]", "None", "is required");
    if (!std::isfinite(*v) || *v != std::floor(*v) || std::fabs(*v) > 9.2e18) {
      throw InputError(std::string(name_) + "[" + std::to_string(i) + "]", std::to_string(*v),
                       "must be an integer number of bytes");
    }
    return static_cast<std::int64_t>(*v);
  }

 private:
  template <class T>
  void copy_as(std::size_t begin, std::size_t count, double* out) const {
    const char* p = base_ + static_cast<std::ptrdiff_t>(begin) * stride_;
    if (stride_ == static_cast<Py_ssize_t>(sizeof(T))) {
      const T* typed = reinterpret_cast<const T*>(p);
      if constexpr (std::is_same_v<T, double>) {
        std::memcpy(out, typed, count * sizeof(double));
      } else {
        for (std::size_t j = 0; j < count; ++j) out[j] = static_cast<double>(typed[j]);
      }
      return;
    }
    for (std::size_t j = 0; j < count; ++j, p += stride_) out[j] = static_cast<double>(load<T>(p));
  }

  template <class T>
  static T load(const char* p) {
    T value;
    std::memcpy(&value, p, sizeof(T));
    return value;
  }

  const char* name_ = "";
  bool present_ = false;
  py::buffer_info buffer_;
  std::string format_;
  const char* base_ = nullptr;
  Py_ssize_t stride_ = 0;
  std::size_t size_ = 0;
  static constexpr std::uint8_t kMissing = 0, kFloat = 1, kInteger = 2;
  std::vector<double> values_;
  std::vector<std::int64_t> ints_;
  std::vector<std::uint8_t> kinds_;
};

// Reads the columns of one batch in chunks (cache-sized, typed once per chunk)
// and hands each sample to `store(i, sample)`. Runs without the GIL. Throws the
// first error; `done` then holds the index of the sample that failed.
struct BatchColumns {
  const Column* timestamps;
  const Column* used;
  const Column* total;
  // One per optional quantity of the field table (kOptionalQuantities order);
  // a null pointer is an absent column.
  const Column* optional[kOptionalQuantityCount];
};
constexpr std::size_t kOptionalColumns = kOptionalQuantityCount;

inline bool column_present(const Column* c) {
  return c != nullptr && c->present();
}

template <class Store>
void ingest(const BatchColumns& c, std::size_t n, const std::string& device, std::size_t& done, Store&& store) {
  constexpr std::size_t kChunk = 1024;
  double ts[kChunk];
  std::int64_t used[kChunk], total[kChunk];
  double gauge[kOptionalColumns][kChunk];
  std::uint8_t missing[kOptionalColumns][kChunk];
  std::uint8_t ts_missing[kChunk];
  bool present[kOptionalColumns];
  for (std::size_t g = 0; g < kOptionalColumns; ++g) present[g] = column_present(c.optional[g]);
  for (std::size_t begin = 0; begin < n; begin += kChunk) {
    const std::size_t count = std::min(kChunk, n - begin);
    done = begin;
    c.timestamps->read_doubles(begin, count, ts, ts_missing);
    c.used->read_integers(begin, count, used);
    c.total->read_integers(begin, count, total);
    for (std::size_t g = 0; g < kOptionalColumns; ++g) {
      if (present[g]) c.optional[g]->read_doubles(begin, count, gauge[g], missing[g]);
    }
    for (std::size_t j = 0; j < count; ++j) {
      done = begin + j;
      Sample s;
      const double t = ts[j];
      if (ts_missing[j] != 0 || !timestamp_seconds_in_range(t)) {
        s.timestamp = checked_timestamp(ts_missing[j] != 0 ? std::nan("") : t, device);  // throws
      } else {
        s.timestamp = timestamp_from_seconds(t);
      }
      s.memory_used_bytes = used[j];
      s.memory_total_bytes = total[j];
      for (std::size_t g = 0; g < kOptionalColumns; ++g) {
        if (present[g] && missing[g][j] == 0) set_field(s, kOptionalQuantities[g], gauge[g][j]);
      }
      store(s);
    }
  }
  done = n;
}

// Sample i of a batch, read as ingest() reads it; throws the error of a bad
// timestamp (ValidationError) or byte count (InputError), in that order.
inline Sample batch_sample(const BatchColumns& c, std::size_t i, const std::string& device) {
  Sample s;
  const std::optional<double> t = c.timestamps->at(i);
  if (!t || !timestamp_seconds_in_range(*t)) {
    s.timestamp = checked_timestamp(t ? *t : std::nan(""), device);  // throws
  } else {
    s.timestamp = timestamp_from_seconds(*t);
  }
  s.memory_used_bytes = c.used->integer_at(i);
  s.memory_total_bytes = c.total->integer_at(i);
  for (std::size_t g = 0; g < kOptionalColumns; ++g) {
    if (!column_present(c.optional[g])) continue;
    if (const std::optional<double> v = c.optional[g]->at(i)) set_field(s, kOptionalQuantities[g], *v);
  }
  return s;
}

// Checks a whole batch without storing anything and without the GIL: every
// sample's values (as check_sample with `limits`), that each is newer than the
// one before it (the first is not compared with anything) and not newer than
// max_timestamp_ns. Returns how many leading samples pass. When fewer than n,
// either `failure` holds the error of the next one, exactly as recording them
// in turn would raise it, or (failure empty) the next one has valid values but
// is not newer than the one before it or lies past max_timestamp_ns: a
// retransmission, a conflict, out of order or from the future, which only the
// store can settle. The columns are read in cache-sized chunks and checked
// branch-free; a chunk that fails is re-read sample by sample.
inline std::size_t validate_batch(const BatchColumns& c, std::size_t n, const std::string& device,
                                  const ValidationLimits& limits, std::int64_t max_timestamp_ns,
                                  std::exception_ptr& failure) {
  constexpr std::size_t kChunk = 512;
  double ts[kChunk];
  std::int64_t used[kChunk], total[kChunk];
  double gauge[kOptionalColumns][kChunk];
  std::uint8_t missing[kOptionalColumns][kChunk];
  std::uint8_t ts_missing[kChunk];
  // As check_sample's bounds (the field table's ranges under `limits`).
  double low[kOptionalColumns], high[kOptionalColumns];
  bool as_float[kOptionalColumns];
  for (std::size_t g = 0; g < kOptionalColumns; ++g) {
    std::tie(low[g], high[g]) = field_range(kOptionalQuantities[g], limits);
    as_float[g] = is_float_field(kOptionalQuantities[g]);
    if (column_present(c.optional[g])) continue;
    std::memset(missing[g], 1, kChunk);  // an absent column: every value unavailable
    std::memset(gauge[g], 0, sizeof gauge[g]);
  }
  std::int64_t previous = std::numeric_limits<std::int64_t>::min();
  for (std::size_t begin = 0; begin < n; begin += kChunk) {
    const std::size_t count = std::min(kChunk, n - begin);
    c.timestamps->read_doubles(begin, count, ts, ts_missing);
    for (std::size_t g = 0; g < kOptionalColumns; ++g) {
      if (column_present(c.optional[g])) c.optional[g]->read_doubles(begin, count, gauge[g], missing[g]);
    }
    bool integers = true;
    try {
      c.used->read_integers(begin, count, used);
      c.total->read_integers(begin, count, total);
    } catch (const std::exception&) {
      integers = false;  // the slow path below names the sample
    }
    std::size_t j = 0;
    if (integers) {
      for (; j < count; ++j) {
        const double t = ts[j];
        bool ok = (ts_missing[j] == 0) & timestamp_seconds_in_range(t);
        const std::int64_t ns = timestamp_from_seconds(ok ? t : 0.0).time_since_epoch().count();
        ok &= (ns > previous) & (ns <= max_timestamp_ns);
        ok &= (used[j] >= 0) & (total[j] > 0) & (used[j] <= total[j]);
        for (std::size_t g = 0; g < kOptionalColumns; ++g) {
          const double given = gauge[g][j];
          const double v = as_float[g] ? static_cast<double>(static_cast<float>(given)) : given;  // as stored
          ok &= (missing[g][j] != 0) | ((v >= low[g]) & (v <= high[g]));
        }
        if (!ok) break;
        previous = ns;
      }
    }
    for (; j < count; ++j) {  // the slow path: one sample at a time, with the exact error
      try {
        const Sample s = batch_sample(c, begin + j, device);
        if (const auto bad = check_sample(s, limits)) throw make_validation_error(device, *bad);
        const std::int64_t ns = s.timestamp.time_since_epoch().count();
        if (ns <= previous || ns > max_timestamp_ns) return begin + j;  // for the store to settle
        previous = ns;
      } catch (...) {
        failure = std::current_exception();
        return begin + j;
      }
    }
  }
  return n;
}

}  // namespace gpucluster::python
