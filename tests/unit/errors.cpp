// The remaining error paths: each must be a moe::Error that names what was
// expected and what came, never a crash.
#include "test_support.hpp"

#include <moe/io/safetensors.hpp>
#include <moe/io/safetensors_writer.hpp>
#include <moe/core/checked.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace moe;
using test::require_error;
namespace fs = std::filesystem;

namespace {
fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("moe-errors-" + std::to_string(::getpid()) + "-" + name);
}

/// Writes a safetensors file with this exact header text and `data_bytes` zero bytes of data.
fs::path raw_file(const std::string& name, std::string header, std::size_t data_bytes) {
  header.append((8 - header.size() % 8) % 8, ' ');
  const fs::path p = temp_file(name);
  std::ofstream out(p, std::ios::binary);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(header.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out << header << std::string(data_bytes, '\0');
  return p;
}

void require_rejected(const std::string& name, const std::string& header, std::size_t data_bytes,
                      std::initializer_list<std::string> fragments) {
  CAPTURE(header);
  const fs::path p = raw_file(name, header, data_bytes);
  require_error([&] { io::SafeTensors f(p); }, ErrorCode::bad_file, fragments);
  fs::remove(p);
}
}  // namespace

TEST_CASE("safetensors: malformed headers, each with its reason") {
  require_rejected("array", "[1, 2]", 0, {"not a JSON object"});
  require_rejected("fields", R"({"a": {"dtype": "F32", "shape": [1]}})", 4, {"'a'", "data_offsets"});
  require_rejected("dtype-type", R"({"a": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", 4, {"dtype is not"});
  require_rejected("shape", R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, {"shape"});
  require_rejected("shape-type", R"({"a": {"dtype": "F32", "shape": 3, "data_offsets": [0, 4]}})", 4, {"not an array"});
  require_rejected("offsets", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})", 4, {"pair"});
  require_rejected("backwards", R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", 4, {"backwards"});
  require_rejected("hole",
                   R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                   12, {"bytes 4 to 8", "belong to no tensor"});
  require_rejected("meta", R"({"__metadata__": {"k": 1}})", 0, {"__metadata__", "not a string"});
  require_rejected("meta-type", R"({"__metadata__": [1]})", 0, {"__metadata__ is not an object"});
  require_error([] { io::SafeTensors f(fs::temp_directory_path()); }, ErrorCode::bad_file, {"not a regular file"});
}

TEST_CASE("safetensors: sizes that overflow or wrap are refused (each was once accepted)") {
  // 4 · (2^62 + 1) wraps to 4 at 2^64: the 4 bytes held looked like enough.
  require_rejected("wrap", R"({"a": {"dtype": "F32", "shape": [4611686018427387905], "data_offsets": [0, 4]}})", 4,
                   {"'a'", "[4611686018427387905]", "exceeds 2^64"});
  // 2^32 · 2^32 elements overflows the element count itself.
  require_rejected("numel", R"({"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 1]}})", 1,
                   {"'a'", "exceeds 2^63 - 1"});
  // 2^64 - 1 is not a dimension (it once read as -1).
  require_rejected("dim", R"({"a": {"dtype": "U8", "shape": [18446744073709551615, 1], "data_offsets": [0, 1]}})", 1,
                   {"'a'", "dimension 18446744073709551615, over 2^63 - 1"});
  // [2^56, 64] F32 is 2^64 bytes: wrapped, it matched an empty data section.
  require_rejected("embed", R"({"e": {"dtype": "F32", "shape": [72057594037927936, 64], "data_offsets": [0, 0]}})", 0,
                   {"'e'", "exceeds 2^64"});
  {  // a zero dimension makes the tensor empty, whatever the others: no overflow on the way
    const fs::path p =
        raw_file("zero", R"({"z": {"dtype": "F32", "shape": [4611686018427387904, 4, 0], "data_offsets": [0, 0]}})", 0);
    const io::SafeTensors f(p);
    CHECK(f.tensor("z").numel() == 0);
    CHECK(f.tensor("z").to_vector<float>().empty());
    fs::remove(p);
  }
  io::TensorView t{.name = "made", .dtype = DType::F32, .shape = {std::int64_t(1) << 62, 4}, .file = "by hand"};
  require_error([&] { (void)t.numel(); }, ErrorCode::bad_file, {"'made'", "exceeds 2^63 - 1"});
  t.shape = {3, -1};
  require_error([&] { (void)t.numel(); }, ErrorCode::bad_file, {"'made'", "negative dimension -1"});
  CHECK(checked::numel(std::vector<index_t>{5, 0, -0}, "x") == 0);
  CHECK(checked::mul(3, 4, "x") == 12);
  require_error([] { (void)checked::add(std::numeric_limits<index_t>::max(), 1, "the sum"); }, ErrorCode::bad_file,
                {"the sum", "exceeds 2^63 - 1"});
}

TEST_CASE("files that are not regular files are refused before any blocking open") {
  const fs::path fifo = temp_file("fifo.safetensors");
  fs::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);  // opening it for reading would wait for a writer forever
  require_error([&] { io::SafeTensors f(fifo); }, ErrorCode::bad_file, {"not a regular file (a FIFO)"});
  fs::remove(fifo);
  require_error([] { io::SafeTensors f(fs::temp_directory_path()); }, ErrorCode::bad_file, {"(a directory)"});
  require_error([] { io::SafeTensors f("/dev/null"); }, ErrorCode::bad_file, {"(a character device)"});
  require_error([] { io::SafeTensors f("/nonexistent/x.safetensors"); }, ErrorCode::bad_file, {"cannot open"});
  // Symlinks are followed (the Hugging Face cache is made of them), then checked.
  const fs::path good = raw_file("target", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4);
  const fs::path link = temp_file("link.safetensors"), to_device = temp_file("zero.safetensors");
  fs::remove(link);
  fs::remove(to_device);
  fs::create_symlink(good, link);
  fs::create_symlink("/dev/zero", to_device);
  {
    const io::SafeTensors linked(link);
    CHECK(linked.tensor("a").numel() == 1);
  }
  require_error([&] { io::SafeTensors f(to_device); }, ErrorCode::bad_file, {"(a character device)"});
  for (const fs::path& p : {good, link, to_device}) fs::remove(p);
}

TEST_CASE("safetensors: views check dtype, shape, alignment and slices") {
  // A 2-byte tensor first puts the F32 one at an odd-for-floats offset.
  const fs::path p = raw_file("misaligned",
                              R"({"h": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]},
                                  "m": {"dtype": "F32", "shape": [2, 2], "data_offsets": [2, 18]},
                                  "s": {"dtype": "F32", "shape": [2, 1, 2], "data_offsets": [18, 34]}})",
                              34);
  const io::SafeTensors f(p);
  require_error([&] { (void)f.tensor("m").as<float>(); }, ErrorCode::bad_file, {"'m'", "not aligned"});
  CHECK(f.tensor("m").to_vector<float>().size() == 4);  // the copying path works
  require_error(
      [&] {
        f.tensor("m").expect_shape({2, 3});
      },
      ErrorCode::shape_mismatch, {"'m'", "[2, 2]", "expected [2, 3]"});
  require_error([&] { (void)f.tensor("s").matrix(); }, ErrorCode::shape_mismatch, {"'s'", "expected a matrix"});
  require_error([&] { (void)f.tensor("s").matrix(2); }, ErrorCode::shape_mismatch, {"slice 2"});
  CHECK(f.tensor("s").matrix(1).rows == 1);
  fs::remove(p);
}

TEST_CASE("safetensors writer: reserved names, negative dimensions, unwritable paths") {
  io::SafeTensorsWriter w;
  const float v = 1.0f;
  require_error([&] { w.add("__metadata__", DType::F32, {1}, &v); }, ErrorCode::invalid_argument, {"reserved"});
  require_error([&] { w.add("neg", DType::F32, {-1}, &v); }, ErrorCode::shape_mismatch, {"'neg'", "negative"});
  w.add("ok", DType::F32, {1}, &v);
  require_error([&] { w.write("/nonexistent-dir/x.safetensors"); }, ErrorCode::bad_file, {"cannot open"});
}

TEST_CASE("policy parameters out of their domain") {
  require_error([] { NoisyTopK{.min_std = -1.0f}.validate(); }, ErrorCode::invalid_argument, {"min_std"});
  require_error([] { RouterZLoss{.beta = -1.0f}.validate(); }, ErrorCode::invalid_argument, {"beta"});
  require_error([] { ImportanceLoadLoss{.w_importance = NAN}.validate(); }, ErrorCode::invalid_argument, {"weights"});
  require_error([] { (void)WeightStore::random({.d_model = 2, .d_ff = 2, .num_experts = 1}, true, DType::I8, 0); },
                ErrorCode::dtype_mismatch, {"I8"});
  // StoredJitter with factors of the wrong shape.
  const Matrix factors = Matrix::Ones(3, 4), x = random_normal_matrix(5, 4, 1), gate = random_normal_matrix(2, 4, 2);
  const Router<TopK<1>, StoredJitter> router(StoredJitter{factors});
  require_error(
      [&] {
        router.route(x, {weight_view(gate.data(), 2, 4), {}}, {Mode::train, {}});
      },
      ErrorCode::shape_mismatch, {"StoredJitter", "[3, 4]", "[5, 4]"});
}

TEST_CASE("expert weights: gate and up in different dtypes; a padded input with a short stride") {
  const Matrix a = random_normal_matrix(8, 4, 1), b = random_normal_matrix(4, 8, 2);
  std::vector<Eigen::half> h(32);
  const ExpertWeights w{weight_view(a.data(), 8, 4), weight_view(h.data(), 8, 4), weight_view(b.data(), 4, 8)};
  require_error([&] { Expert<SwiGLU>::validate(w, 4, 8, 5); }, ErrorCode::dtype_mismatch,
                {"expert 5", "gate is F32", "up is F16"});

  const LayerConfig c{.d_model = 4, .d_ff = 8, .num_experts = 2};
  const WeightStore store = WeightStore::random(c, true, DType::F32, 1);
  const auto layer = make_layer<presets::Mixtral>(c, store.view());
  std::vector<float> buf(16);
  require_error([&] { layer.forward(MatrixView<const float>(buf.data(), 2, 4, 3)); }, ErrorCode::shape_mismatch,
                {"row stride 3"});
  // A padded view (stride 6 > 4 columns) is fine and reads the right rows.
  const Matrix x = random_normal_matrix(2, 4, 3);
  std::vector<float> padded(12, 99.0f);
  for (int t = 0; t < 2; ++t)
    for (int i = 0; i < 4; ++i) padded[std::size_t(t * 6 + i)] = x(t, i);
  CHECK(layer.forward(MatrixView<const float>(padded.data(), 2, 4, 6)).y == layer.forward(x).y);
}

TEST_CASE("every error code has its name") {
  for (const auto& [code, name] :
       std::initializer_list<std::pair<ErrorCode, std::string_view>>{{ErrorCode::invalid_argument, "invalid_argument"},
                                                                     {ErrorCode::shape_mismatch, "shape_mismatch"},
                                                                     {ErrorCode::dtype_mismatch, "dtype_mismatch"},
                                                                     {ErrorCode::non_finite, "non_finite"},
                                                                     {ErrorCode::bad_file, "bad_file"},
                                                                     {ErrorCode::unsupported, "unsupported"},
                                                                     {ErrorCode::device, "device"}})
    CHECK(to_string(code) == name);
}
