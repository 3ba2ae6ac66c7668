// libFuzzer: a safetensors file. Whatever its bytes, SafeTensors either
// refuses it with a moe::Error or gives tensors whose every view is in bounds.
#include "fuzz_support.hpp"

#include <moe/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = moe::fuzz::work_dir() / "input.safetensors";
  moe::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  moe::fuzz::expect_clean([&] {
    const moe::io::SafeTensors f(path);
    for (const moe::io::TensorView& t : f.tensors()) {
      (void)t.numel();
      if (t.nbytes > (1u << 20)) continue;
      if (t.dtype == moe::DType::F32) (void)t.to_vector<float>();
      if (moe::is_weight_dtype(t.dtype) && t.shape.size() == 2) {
        const moe::WeightMatrix m = t.matrix();
        volatile float sink = m.rows > 0 && m.cols > 0 ? m.at(m.rows - 1, m.cols - 1) : 0.0f;
        (void)sink;
      }
    }
  });
  return 0;
}
