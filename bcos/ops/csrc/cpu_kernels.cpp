// Fused CPU kernels for the B-cos convolution (B = 2, one group) and the uncentered batch norm,
// registered as torch.ops.bcos_cpu.*.
//
// Each kernel does in one pass what eager PyTorch does in a chain of element-wise operations, every
// one of which reads and writes a whole activation. Inputs: contiguous NCHW float32/float64 tensors
// (the operators of bcos/ops check and fall back to eager operations otherwise). Work is split over batch
// items and chunks of positions with at::parallel_for, so torch.set_num_threads applies. The build
// targets the instruction set PyTorch itself uses on this machine (see bcos/ops/cpu_kernels.py).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// positions per work item: a few channels of this many floats stay in the L1/L2 cache
constexpr int64_t kChunk = 1024;

int64_t chunks_of(int64_t plane) { return (plane + kChunk - 1) / kChunk; }

template <typename T>
void square_sums_block(const T* x, T* sums, int64_t channels, int64_t plane, int64_t len) {
  for (int64_t p = 0; p < len; ++p) sums[p] = x[p] * x[p];
  for (int64_t c = 1; c < channels; ++c) {
    const T* row = x + c * plane;
    for (int64_t p = 0; p < len; ++p) sums[p] += row[p] * row[p];
  }
}

// sum over the channels of x², [N, C, H, W] -> [N, 1, H, W]
at::Tensor channel_square_sums(const at::Tensor& x) {
  const int64_t n = x.size(0), channels = x.size(1), plane = x.size(2) * x.size(3);
  at::Tensor sums = at::empty({n, 1, x.size(2), x.size(3)}, x.options());
  const int64_t chunks = chunks_of(plane);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_square_sums", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = sums.data_ptr<scalar_t>();
    at::parallel_for(0, n * chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t item = first; item < last; ++item) {
        const int64_t image = item / chunks, begin = (item % chunks) * kChunk;
        const int64_t len = std::min(plane, begin + kChunk) - begin;
        square_sums_block(src + image * channels * plane + begin, dst + image * plane + begin, channels, plane, len);
      }
    });
  });
  return sums;
}

template <typename T>
void scale_plane(T* lin, const T* inv, T scale, int64_t plane) {
  for (int64_t p = 0; p < plane; ++p) {
    const T v = lin[p];
    lin[p] = v * std::abs(v) * inv[p] * scale;
  }
}

// lin <- lin·|lin|·inv (inv [N, 1, H, W]), times scale[c] per channel if scale is given; in place
at::Tensor scale_output_(at::Tensor lin, const at::Tensor& inv, const std::optional<at::Tensor>& scale) {
  const int64_t n = lin.size(0), channels = lin.size(1), plane = lin.size(2) * lin.size(3);
  AT_DISPATCH_FLOATING_TYPES(lin.scalar_type(), "scale_output_", [&] {
    scalar_t* data = lin.data_ptr<scalar_t>();
    const scalar_t* inv_data = inv.const_data_ptr<scalar_t>();
    const scalar_t* scales = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, kChunk * 16 / std::max<int64_t>(plane, 1));
    at::parallel_for(0, n * channels, grain, [&](int64_t first, int64_t last) {
      for (int64_t item = first; item < last; ++item) {
        const int64_t image = item / channels, channel = item % channels;
        const scalar_t s = scales ? scales[channel] : scalar_t(1);
        scale_plane(data + item * plane, inv_data + image * plane, s, plane);
      }
    });
  });
  return lin;
}

template <typename T>
void scale_backward_block(const T* out, const T* grad, const T* inv, const T* scales, T factor,
                                         T* result, T* sums, int64_t channels, int64_t plane, int64_t len) {
  if (sums) std::fill(sums, sums + len, T(0));
  for (int64_t c = 0; c < channels; ++c) {
    const T* o = out + c * plane;
    const T* g = grad + c * plane;
    T* r = result + c * plane;
    const T s = scales ? scales[c] * factor : factor;
    if (sums) {
      for (int64_t p = 0; p < len; ++p) {
        const T ov = o[p], gv = g[p];
        sums[p] += gv * ov;
        r[p] = std::sqrt(std::abs(ov) * inv[p] * s) * gv;
      }
    } else {
      for (int64_t p = 0; p < len; ++p) r[p] = std::sqrt(std::abs(o[p]) * inv[p] * s) * g[p];
    }
  }
}

// For out = r·|r|·inv·scale (r the convolution's result): the gradient with respect to r,
// sqrt(|out|·inv·scale·factor)·grad (factor 4 in training, 1 with a detached scale), and, if asked
// for, Σ_c grad·out per position ([N, 1, H, W]; an empty tensor otherwise)
std::tuple<at::Tensor, at::Tensor> scale_backward(const at::Tensor& out, const at::Tensor& inv, const at::Tensor& grad,
                                                  const std::optional<at::Tensor>& scale, double factor,
                                                  bool need_sums) {
  const int64_t n = out.size(0), channels = out.size(1), plane = out.size(2) * out.size(3);
  at::Tensor result = at::empty_like(out);
  at::Tensor sums = at::empty({need_sums ? n : 0, 1, out.size(2), out.size(3)}, out.options());
  const int64_t chunks = chunks_of(plane);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "scale_backward", [&] {
    const scalar_t* o = out.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* inv_data = inv.const_data_ptr<scalar_t>();
    const scalar_t* scales = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* r = result.data_ptr<scalar_t>();
    scalar_t* s = need_sums ? sums.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, n * chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t item = first; item < last; ++item) {
        const int64_t image = item / chunks, begin = (item % chunks) * kChunk;
        const int64_t len = std::min(plane, begin + kChunk) - begin, offset = image * channels * plane + begin;
        scale_backward_block(o + offset, g + offset, inv_data + image * plane + begin, scales,
                             static_cast<scalar_t>(factor), r + offset, s ? s + image * plane + begin : nullptr,
                             channels, plane, len);
      }
    });
  });
  return {result, sums};
}

// zero-padded box sums over centred (2·rh+1)x(2·rw+1) windows of one [H, W] plane
template <typename T>
void box_sum_plane(const T* src, T* dst, T* rows, int64_t height, int64_t width, int64_t rh, int64_t rw) {
  for (int64_t i = 0; i < height; ++i) {
    const T* in = src + i * width;
    T* row = rows + i * width;
    for (int64_t j = 0; j < width; ++j) row[j] = in[j];
    for (int64_t d = 1; d <= rw && d < width; ++d) {
      for (int64_t j = d; j < width; ++j) row[j] += in[j - d];
      for (int64_t j = 0; j < width - d; ++j) row[j] += in[j + d];
    }
  }
  for (int64_t i = 0; i < height; ++i) {
    T* out = dst + i * width;
    const int64_t top = std::max<int64_t>(0, i - rh), bottom = std::min<int64_t>(height - 1, i + rh);
    const T* first = rows + top * width;
    for (int64_t j = 0; j < width; ++j) out[j] = first[j];
    for (int64_t k = top + 1; k <= bottom; ++k) {
      const T* row = rows + k * width;
      for (int64_t j = 0; j < width; ++j) out[j] += row[j];
    }
  }
}

// sums of q [N, G, H, W] over centred windows of odd size kh x kw, zero padded; the map keeps its size
at::Tensor same_window_sum(const at::Tensor& q, int64_t kh, int64_t kw) {
  const int64_t planes = q.size(0) * q.size(1), height = q.size(2), width = q.size(3);
  at::Tensor sums = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "same_window_sum", [&] {
    const scalar_t* src = q.const_data_ptr<scalar_t>();
    scalar_t* dst = sums.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kChunk * 16 / std::max<int64_t>(height * width, 1));
    at::parallel_for(0, planes, grain, [&](int64_t first, int64_t last) {
      std::vector<scalar_t> rows(height * width);
      for (int64_t plane = first; plane < last; ++plane) {
        const int64_t offset = plane * height * width;
        box_sum_plane(src + offset, dst + offset, rows.data(), height, width, kh / 2, kw / 2);
      }
    });
  });
  return sums;
}

template <typename T>
void project_row(T* grad, const T* weight, T norm, bool rescale, int64_t len) {
  using acc_t = double;
  acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t k = 0; k < len; ++k) dot += static_cast<acc_t>(grad[k]) * weight[k];
  const T along = static_cast<T>(-dot / (static_cast<acc_t>(norm) * norm));
  const T divide = rescale ? T(1) / norm : T(1);
  for (int64_t k = 0; k < len; ++k) grad[k] = (grad[k] + weight[k] * along) * divide;
}

// grad <- (grad - w·<grad, w>/n²), divided by n unless raw, per filter (n = ||w|| per filter); in place
at::Tensor project_filter_grad_(at::Tensor grad, const at::Tensor& weight, const at::Tensor& norm, bool raw) {
  const int64_t filters = grad.size(0), len = grad.numel() / std::max<int64_t>(filters, 1);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "project_filter_grad_", [&] {
    scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    const scalar_t* n = norm.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kChunk * 16 / std::max<int64_t>(len, 1));
    at::parallel_for(0, filters, grain, [&](int64_t first, int64_t last) {
      for (int64_t o = first; o < last; ++o) project_row(g + o * len, w + o * len, n[o], !raw, len);
    });
  });
  return grad;
}

// Σx and Σx² (double) of channel c of x [N, C, P]
template <typename T>
void channel_moments(const T* x, int64_t n, int64_t channels, int64_t plane, int64_t c, double& sum, double& squares) {
  double s = 0, q = 0;
  for (int64_t image = 0; image < n; ++image) {
    const T* row = x + (image * channels + c) * plane;
#pragma omp simd reduction(+ : s, q)
    for (int64_t p = 0; p < plane; ++p) {
      const double v = row[p];
      s += v;
      q += v * v;
    }
  }
  sum = s;
  squares = q;
}

// Σ g·x and Σ g (double) over channel c of g and x [N, C, P]
template <typename T>
void channel_products(const T* g, const T* x, int64_t n, int64_t channels, int64_t plane, int64_t c, double& gx,
                      double& gs) {
  double s = 0, q = 0;
  for (int64_t image = 0; image < n; ++image) {
    const T* gr = g + (image * channels + c) * plane;
    const T* xr = x + (image * channels + c) * plane;
#pragma omp simd reduction(+ : s, q)
    for (int64_t p = 0; p < plane; ++p) {
      q += static_cast<double>(gr[p]) * xr[p];
      s += gr[p];
    }
  }
  gx = q;
  gs = s;
}

// Training-mode uncentered batch norm over (N, H, W): out = x·w/σ + b with σ = sqrt(var + eps) and
// var the biased (centered) batch variance. Returns out, the mean and 1/σ per channel (float64
// statistics are accumulated, stored in x's dtype).
std::tuple<at::Tensor, at::Tensor, at::Tensor> uncentered_batch_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                                     const std::optional<at::Tensor>& bias, double eps) {
  const int64_t n = x.size(0), channels = x.size(1), plane = x.numel() / std::max<int64_t>(n * channels, 1);
  const double count = static_cast<double>(n * plane);
  at::Tensor out = at::empty_like(x);
  at::Tensor mean = at::empty({channels}, x.options());
  at::Tensor invstd = at::empty({channels}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "uncentered_batch_norm", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    scalar_t* means = mean.data_ptr<scalar_t>();
    scalar_t* invstds = invstd.data_ptr<scalar_t>();
    const scalar_t* w = weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* b = bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;
    std::vector<scalar_t> scales(channels), shifts(channels);
    at::parallel_for(0, channels, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        double sum, squares;
        channel_moments(src, n, channels, plane, c, sum, squares);
        const double mu = sum / count, var = std::max(0.0, squares / count - mu * mu);
        const double inv = 1.0 / std::sqrt(var + eps);
        means[c] = static_cast<scalar_t>(mu);
        invstds[c] = static_cast<scalar_t>(inv);
        scales[c] = static_cast<scalar_t>(w ? inv * w[c] : inv);
        shifts[c] = b ? b[c] : scalar_t(0);
      }
    });
    const int64_t grain = std::max<int64_t>(1, kChunk * 16 / std::max<int64_t>(plane, 1));
    at::parallel_for(0, n * channels, grain, [&](int64_t first, int64_t last) {
      for (int64_t item = first; item < last; ++item) {
        const scalar_t scale = scales[item % channels], shift = shifts[item % channels];
        const scalar_t* in = src + item * plane;
        scalar_t* o = dst + item * plane;
        for (int64_t p = 0; p < plane; ++p) o[p] = in[p] * scale + shift;
      }
    });
  });
  return {out, mean, invstd};
}

// The backward of uncentered_batch_norm: with A = w/σ and the variance's gradient,
// dL/dx = g·A - (x - μ)·A/σ²·mean(g·x); dL/dw = Σ g·x/σ; dL/db = Σ g. Undefined outputs where not asked.
std::tuple<at::Tensor, at::Tensor, at::Tensor> uncentered_batch_norm_backward(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& weight, const at::Tensor& mean,
    const at::Tensor& invstd, bool need_x, bool need_w, bool need_b) {
  const int64_t n = x.size(0), channels = x.size(1), plane = x.numel() / std::max<int64_t>(n * channels, 1);
  const double count = static_cast<double>(n * plane);
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_w = at::empty({need_w ? channels : 0}, x.options());
  at::Tensor grad_b = at::empty({need_b ? channels : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "uncentered_batch_norm_backward", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    const scalar_t* w = weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* means = mean.const_data_ptr<scalar_t>();
    const scalar_t* invstds = invstd.const_data_ptr<scalar_t>();
    std::vector<scalar_t> a(channels), bcoef(channels), mus(channels);
    at::parallel_for(0, channels, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        double gx, gs;
        channel_products(g, src, n, channels, plane, c, gx, gs);
        const double inv = invstds[c], scale = w ? inv * w[c] : inv;
        if (need_w) grad_w.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(gx * inv);
        if (need_b) grad_b.data_ptr<scalar_t>()[c] = static_cast<scalar_t>(gs);
        a[c] = static_cast<scalar_t>(scale);
        bcoef[c] = static_cast<scalar_t>(-scale * inv * inv * gx / count);
        mus[c] = means[c];
      }
    });
    if (!need_x) return;
    scalar_t* dst = grad_x.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kChunk * 16 / std::max<int64_t>(plane, 1));
    at::parallel_for(0, n * channels, grain, [&](int64_t first, int64_t last) {
      for (int64_t item = first; item < last; ++item) {
        const int64_t c = item % channels;
        const scalar_t ac = a[c], bc = bcoef[c], mu = mus[c];
        const scalar_t* gr = g + item * plane;
        const scalar_t* xr = src + item * plane;
        scalar_t* o = dst + item * plane;
        for (int64_t p = 0; p < plane; ++p) o[p] = gr[p] * ac + (xr[p] - mu) * bc;
      }
    });
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY(bcos_cpu, m) {
  m.def("channel_square_sums(Tensor x) -> Tensor");
  m.def("scale_output_(Tensor(a!) lin, Tensor inv, Tensor? scale) -> Tensor(a!)");
  m.def("scale_backward(Tensor out, Tensor inv, Tensor grad, Tensor? scale, float factor, bool need_sums) -> (Tensor, Tensor)");
  m.def("same_window_sum(Tensor q, int kh, int kw) -> Tensor");
  m.def("project_filter_grad_(Tensor(a!) grad, Tensor weight, Tensor norm, bool raw) -> Tensor(a!)");
  m.def("uncentered_batch_norm(Tensor x, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("uncentered_batch_norm_backward(Tensor grad, Tensor x, Tensor? weight, Tensor mean, Tensor invstd, bool need_x, bool need_w, bool need_b) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(bcos_cpu, CPU, m) {
  m.impl("channel_square_sums", &channel_square_sums);
  m.impl("scale_output_", &scale_output_);
  m.impl("scale_backward", &scale_backward);
  m.impl("same_window_sum", &same_window_sum);
  m.impl("project_filter_grad_", &project_filter_grad_);
  m.impl("uncentered_batch_norm", &uncentered_batch_norm);
  m.impl("uncentered_batch_norm_backward", &uncentered_batch_norm_backward);
}
