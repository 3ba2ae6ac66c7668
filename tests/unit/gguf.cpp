// Reading GGUF files: every metadata type, tensor infos and their data, and
// every way a file can be broken giving a moe::Error that names the field
// (truncated at every byte, counts and lengths past the end, overflowing
// sizes, unknown types, misaligned and overlapping tensors); and the
// dequantisation of ggml's block types, bit for bit as the gguf package's.
#include "temp_dir.hpp"
#include "test_support.hpp"

#include <moe/io/gguf.hpp>
#include <moe/io/gguf_convert.hpp>
#include <moe/io/gguf_from_hf.hpp>
#include <moe/quant/ggml_blocks.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace moe;
namespace fs = std::filesystem;
using io::gguf::ValueType;

namespace {

/// Bytes of a GGUF file, written field by field (little-endian, as the format is).
struct Bytes {
  std::vector<unsigned char> b;
  template <class T>
  Bytes& put(T v) {
    unsigned char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof v);
    b.insert(b.end(), raw, raw + sizeof v);
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<std::uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& key(const std::string& k, ValueType t) {
    str(k);
    return put<std::uint32_t>(std::uint32_t(t));
  }
  void pad_to(std::size_t alignment) {
    while (b.size() % alignment != 0) b.push_back(0);
  }
};

/// The start of a GGUF file: magic, version, tensor count, metadata count.
Bytes gguf_start(std::uint32_t version, std::uint64_t tensors, std::uint64_t metadata) {
  Bytes f;
  f.b = {'G', 'G', 'U', 'F'};
  f.put(version).put(tensors).put(metadata);
  return f;
}

/// A valid version-3 file: one metadata value of every type, an array of
/// strings and one of floats, and three tensors (F32 [2, 3], Q8_0 [32, 2],
/// Q4_K [256]) in a data section aligned to 64 bytes.
std::vector<unsigned char> valid_file() {
  Bytes f = gguf_start(3, 3, 16);
  f.key("general.architecture", ValueType::string).str("llama");
  f.key("general.alignment", ValueType::u32).put<std::uint32_t>(64);
  f.key("u8", ValueType::u8).put<std::uint8_t>(200);
  f.key("i8", ValueType::i8).put<std::int8_t>(-100);
  f.key("u16", ValueType::u16).put<std::uint16_t>(60000);
  f.key("i16", ValueType::i16).put<std::int16_t>(-30000);
  f.key("u32", ValueType::u32).put<std::uint32_t>(4000000000u);
  f.key("i32", ValueType::i32).put<std::int32_t>(-2000000000);
  f.key("u64", ValueType::u64).put<std::uint64_t>(1ull << 40);
  f.key("i64", ValueType::i64).put<std::int64_t>(-(1ll << 40));
  f.key("f32", ValueType::f32).put<float>(0.5f);
  f.key("f64", ValueType::f64).put<double>(-1.25);
  f.key("yes", ValueType::boolean).put<std::uint8_t>(1);
  f.key("tokens", ValueType::array).put<std::uint32_t>(std::uint32_t(ValueType::string)).put<std::uint64_t>(3);
  f.str("<s>").str("").str("héllo");
  f.key("scores", ValueType::array).put<std::uint32_t>(std::uint32_t(ValueType::f32)).put<std::uint64_t>(2);
  f.put<float>(-1.5f).put<float>(2.0f);
  f.key("huge", ValueType::u64).put<std::uint64_t>(~0ull);
  // Tensors: name, n_dims, ne..., type, offset.
  f.str("w").put<std::uint32_t>(2).put<std::uint64_t>(3).put<std::uint64_t>(2).put<std::uint32_t>(0).put<std::uint64_t>(
      0);
  f.str("q8").put<std::uint32_t>(2).put<std::uint64_t>(32).put<std::uint64_t>(2).put<std::uint32_t>(8);
  f.put<std::uint64_t>(64);  // after w's 24 bytes, aligned
  f.str("q4k").put<std::uint32_t>(1).put<std::uint64_t>(256).put<std::uint32_t>(12).put<std::uint64_t>(192);
  f.pad_to(64);
  const std::size_t data = f.b.size();
  f.b.resize(data + 192 + 144, 0);
  for (int k = 0; k < 6; ++k) {
    const float v = float(k) + 0.25f;
    std::memcpy(f.b.data() + data + 4 * std::size_t(k), &v, 4);
  }
  f.b[data + 64] = 0x11;   // q8's first byte
  f.b[data + 192] = 0x22;  // q4k's first byte
  return f.b;
}

void write(const fs::path& p, const std::vector<unsigned char>& bytes) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

/// Opening `bytes` must throw bad_file with every fragment in the message.
void expect_bad(const test::TempDir& dir, const std::vector<unsigned char>& bytes,
                std::initializer_list<std::string> fragments) {
  const fs::path p = dir.path / "bad.gguf";
  write(p, bytes);
  test::require_error([&] { io::Gguf g(p); }, ErrorCode::bad_file, fragments);
}

/// The offset of the first occurrence of `text` in `bytes` (for patching a field).
std::size_t find(const std::vector<unsigned char>& bytes, const std::string& text) {
  const auto it = std::search(bytes.begin(), bytes.end(), text.begin(), text.end());
  REQUIRE(it != bytes.end());
  return std::size_t(it - bytes.begin());
}

template <class T>
void patch(std::vector<unsigned char>& bytes, std::size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof v);
}

}  // namespace

TEST_CASE("Gguf: every metadata type, arrays and tensors read back") {
  const test::TempDir dir("gguf");
  write(dir.path / "ok.gguf", valid_file());
  const io::Gguf g(dir.path / "ok.gguf");
  CHECK(g.version() == 3);
  CHECK(g.alignment() == 64);
  CHECK(g.metadata().size() == 16);
  CHECK(g.get_string("general.architecture") == "llama");
  CHECK(g.get_int("u8") == 200);
  CHECK(g.get_int("i8") == -100);
  CHECK(g.get_int("u16") == 60000);
  CHECK(g.get_int("i16") == -30000);
  CHECK(g.get_int("u32") == 4000000000ll);
  CHECK(g.get_int("i32") == -2000000000);
  CHECK(g.get_int("u64") == (1ll << 40));
  CHECK(g.get_int("i64") == -(1ll << 40));
  CHECK(g.get_float("f32") == 0.5);
  CHECK(g.get_float("f64") == -1.25);
  CHECK(g.get_float("u8") == 200.0);  // integers are accepted where a float is asked for
  CHECK(g.get_bool("yes"));
  CHECK(g.get_strings("tokens") == std::vector<std::string>{"<s>", "", "héllo"});
  CHECK(g.get_numbers("scores") == std::vector<double>{-1.5, 2.0});
  CHECK_FALSE(g.get_int_or("absent").has_value());
  CHECK(g.get_int_or("u8") == 200);

  REQUIRE(g.tensors().size() == 3);
  const io::GgufTensor& w = g.tensor("w");
  CHECK(w.type_name() == "F32");
  CHECK(w.ne == std::vector<index_t>{3, 2});
  CHECK(w.shape() == std::vector<index_t>{2, 3});  // row-major, as PyTorch writes it
  CHECK(w.numel() == 6);
  CHECK(w.nbytes == 24);
  float first = 0, last = 0;
  std::memcpy(&first, w.data, 4);
  std::memcpy(&last, w.data + 20, 4);
  CHECK(first == 0.25f);
  CHECK(last == 5.25f);
  const io::GgufTensor& q8 = g.tensor("q8");
  CHECK(q8.type_name() == "Q8_0");
  CHECK(q8.nbytes == 2 * 34);  // two rows of one 32-element block
  CHECK(q8.data[0] == 0x11);
  const io::GgufTensor& q4k = g.tensor("q4k");
  CHECK(q4k.type_name() == "Q4_K");
  CHECK(q4k.nbytes == 144);
  CHECK(q4k.data[0] == 0x22);
  CHECK(q4k.data - w.data == 192);
  CHECK(g.find_tensor("absent") == nullptr);
}

TEST_CASE("Gguf: wrong lookups name the key and what it holds") {
  const test::TempDir dir("gguf-lookup");
  write(dir.path / "ok.gguf", valid_file());
  const io::Gguf g(dir.path / "ok.gguf");
  test::require_error([&] { (void)g.get_string("u8"); }, ErrorCode::bad_file, {"'u8'", "uint8", "expected a string"});
  test::require_error([&] { (void)g.get_int("f32"); }, ErrorCode::bad_file, {"'f32'", "expected an integer"});
  test::require_error([&] { (void)g.get_int("huge"); }, ErrorCode::bad_file, {"'huge'", "over 2^63"});
  test::require_error([&] { (void)g.get_int("absent"); }, ErrorCode::bad_file, {"no metadata key 'absent'"});
  test::require_error([&] { (void)g.get_strings("scores"); }, ErrorCode::bad_file, {"'scores'", "float32"});
  test::require_error([&] { (void)g.get_numbers("tokens"); }, ErrorCode::bad_file, {"'tokens'", "string"});
  test::require_error([&] { (void)g.get_numbers("u8"); }, ErrorCode::bad_file, {"expected an array"});
  test::require_error([&] { (void)g.tensor("nope"); }, ErrorCode::bad_file, {"no tensor named 'nope'"});
}

TEST_CASE("Gguf: a file cut at any byte is an error, never a crash") {
  const test::TempDir dir("gguf-cut");
  const std::vector<unsigned char> full = valid_file();
  int errors = 0;
  for (std::size_t n = 0; n < full.size(); ++n) {
    const fs::path p = dir.path / "cut.gguf";
    write(p, {full.begin(), full.begin() + std::ptrdiff_t(n)});
    try {
      io::Gguf g(p);
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::bad_file);
      ++errors;
    }
  }
  CHECK(errors == int(full.size()));  // every cut loses at least the last tensor's bytes
}

TEST_CASE("Gguf: broken headers name the field") {
  const test::TempDir dir("gguf-bad");
  const std::vector<unsigned char> ok = valid_file();
  std::vector<unsigned char> b;

  b = ok;
  b[0] = 'X';
  expect_bad(dir, b, {"not a GGUF file", "'XGUF'"});
  b = ok;
  patch<std::uint32_t>(b, 4, 1);
  expect_bad(dir, b, {"version 1"});
  b = ok;
  patch<std::uint32_t>(b, 4, 0x03000000u);
  expect_bad(dir, b, {"big-endian"});
  b = ok;
  patch<std::uint32_t>(b, 4, 7);
  expect_bad(dir, b, {"version 7"});
  b = ok;
  patch<std::uint64_t>(b, 16, ~0ull);  // metadata count
  expect_bad(dir, b, {"metadata count 18446744073709551615", "cannot fit"});
  b = ok;
  patch<std::uint64_t>(b, 8, 1ull << 60);  // tensor count
  expect_bad(dir, b, {"tensor count", "cannot fit"});
  b = ok;
  patch<std::uint64_t>(b, 24, 1ull << 62);  // the first key's length
  expect_bad(dir, b, {"metadata key 0", "has length 4611686018427387904"});
  b = ok;
  patch<std::uint32_t>(b, find(b, "u8") + 2, 99);  // the value type after key "u8"
  expect_bad(dir, b, {"metadata 'u8'", "unknown value type 99"});
  b = ok;
  patch<std::uint8_t>(b, find(b, "yes") + 3 + 4, 2);
  expect_bad(dir, b, {"metadata 'yes'", "bool holding 2"});
  b = ok;
  patch<std::uint64_t>(b, find(b, "scores") + 6 + 4 + 4, ~0ull / 2);  // float array length: bytes overflow
  expect_bad(dir, b, {"metadata 'scores'", "exceeds 2^64"});
  b = ok;
  patch<std::uint64_t>(b, find(b, "scores") + 6 + 4 + 4, 1000);  // float array past the end
  expect_bad(dir, b, {"metadata 'scores'", "1000 float32", "truncated"});
  b = ok;
  patch<std::uint64_t>(b, find(b, "tokens") + 6 + 4 + 4, 1ull << 40);  // string array count
  expect_bad(dir, b, {"metadata 'tokens'", "strings"});
  b = ok;
  patch<std::uint32_t>(b, find(b, "tokens") + 6 + 4, std::uint32_t(ValueType::array));
  expect_bad(dir, b, {"metadata 'tokens'", "array of arrays"});
  b = ok;
  patch<std::uint32_t>(b, find(b, "general.alignment") + 17 + 4, 48);
  expect_bad(dir, b, {"general.alignment", "48", "power of two"});
  b = ok;
  const std::size_t u16 = find(b, "u16");  // rename "u16" to "u32": a key twice
  b[u16 + 1] = '3';
  b[u16 + 2] = '2';
  expect_bad(dir, b, {"metadata 'u32' appears twice"});

  // Tensor infos: w's fields follow its name.
  const std::size_t w = find(ok, std::string("\x01\0\0\0\0\0\0\0w", 9)) + 9;
  b = ok;
  patch<std::uint32_t>(b, w, 5);
  expect_bad(dir, b, {"tensor 'w'", "5 dimensions"});
  b = ok;
  patch<std::uint64_t>(b, w + 4, 1ull << 63);
  expect_bad(dir, b, {"tensor 'w'", "dimension 0", "over 2^63"});
  b = ok;
  patch<std::uint64_t>(b, w + 4, 1ull << 62);
  patch<std::uint64_t>(b, w + 12, 1ull << 62);
  expect_bad(dir, b, {"tensor 'w'", "exceeds 2^63"});
  b = ok;
  patch<std::uint32_t>(b, w + 20, 4);
  expect_bad(dir, b, {"tensor 'w'", "ggml type 4", "does not know"});
  b = ok;
  patch<std::uint64_t>(b, w + 24, 8);
  expect_bad(dir, b, {"tensor 'w'", "offset 8", "alignment 64"});
  b = ok;
  patch<std::uint64_t>(b, w + 24, 128);  // w at bytes 128-152, q8 at 64-132
  expect_bad(dir, b, {"overlap"});
  b = ok;
  patch<std::uint64_t>(b, w + 24, 1ull << 40);
  expect_bad(dir, b, {"tensor 'w'", "ends past the data section"});
  b = ok;
  const std::size_t q8 = find(b, "q8") + 2;
  patch<std::uint64_t>(b, q8 + 4, 33);  // a Q8_0 row of 33 elements: not whole blocks
  expect_bad(dir, b, {"tensor 'q8'", "whole blocks of 32"});
}

TEST_CASE("Gguf: a tensor name twice is refused") {
  const test::TempDir dir("gguf-dup");
  Bytes f = gguf_start(3, 2, 0);
  f.str("w").put<std::uint32_t>(1).put<std::uint64_t>(4).put<std::uint32_t>(0).put<std::uint64_t>(0);
  f.str("w").put<std::uint32_t>(1).put<std::uint64_t>(4).put<std::uint32_t>(0).put<std::uint64_t>(32);
  f.pad_to(32);
  f.b.resize(f.b.size() + 48, 0);
  expect_bad(dir, f.b, {"tensor 'w' appears twice"});
}

TEST_CASE("Gguf: a version-2 file with no tensors and the default alignment") {
  const test::TempDir dir("gguf-v2");
  Bytes f = gguf_start(2, 0, 1);
  f.key("general.name", ValueType::string).str("tiny");
  write(dir.path / "v2.gguf", f.b);
  const io::Gguf g(dir.path / "v2.gguf");
  CHECK(g.version() == 2);
  CHECK(g.alignment() == 32);
  CHECK(g.get_string("general.name") == "tiny");
  CHECK(g.tensors().empty());
}

TEST_CASE("Gguf: a file written by the gguf package reads back as the package reads it") {
  // tests/data/cases/gguf: made by tests/cases/make_gguf_cases.py with the
  // `gguf` package from PyPI (llama.cpp's Python writer), with what its own
  // reader saw in tiny_v3.expected.json.
  const fs::path dir = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
  const io::Gguf g(dir / "tiny_v3.gguf");
  nlohmann::json expected;
  std::ifstream(dir / "tiny_v3.expected.json") >> expected;
  CHECK(g.alignment() == expected["alignment"].get<std::uint64_t>());

  CHECK(g.metadata().size() == expected["metadata"].size());
  for (const auto& [key, e] : expected["metadata"].items()) {
    CAPTURE(key);
    const io::GgufValue* v = g.find(key);
    REQUIRE(v != nullptr);
    const auto upper = [](std::string_view s) {
      std::string u(s);
      for (char& c : u) c = char(std::toupper(static_cast<unsigned char>(c)));
      return u;
    };
    const std::vector<std::string> types = e["types"];
    CHECK(upper(io::gguf::name(v->type)) == types[0]);
    const nlohmann::json& value = e["value"];
    if (v->is_array()) {
      REQUIRE(types.size() == 2);
      CHECK(upper(io::gguf::name(v->element)) == types[1]);
      if (v->element == ValueType::string)
        CHECK(g.get_strings(key) == value.get<std::vector<std::string>>());
      else
        CHECK(g.get_numbers(key) == value.get<std::vector<double>>());
    } else if (v->type == ValueType::string) {
      CHECK(g.get_string(key) == value.get<std::string>());
    } else if (v->type == ValueType::boolean) {
      CHECK(g.get_bool(key) == value.get<bool>());
    } else if (v->type == ValueType::f32 || v->type == ValueType::f64) {
      CHECK(g.get_float(key) == value.get<double>());
    } else {
      CHECK(g.get_int(key) == value.get<std::int64_t>());
    }
  }

  REQUIRE(g.tensors().size() == expected["tensors"].size());
  for (const auto& e : expected["tensors"]) {
    const std::string name = e["name"];
    CAPTURE(name);
    const io::GgufTensor& t = g.tensor(name);
    CHECK(t.type == e["type"].get<std::uint32_t>());
    CHECK(t.type_name() == e["type_name"].get<std::string>());
    CHECK(t.ne == e["ne"].get<std::vector<index_t>>());
    CHECK(t.offset == e["offset"].get<std::uint64_t>());
    CHECK(t.nbytes == e["nbytes"].get<std::size_t>());
    const std::string hex = e["hex"];
    REQUIRE(hex.size() == 2 * t.nbytes);
    std::string ours;
    for (std::size_t k = 0; k < t.nbytes; ++k) {
      static const char digits[] = "0123456789abcdef";
      ours += digits[t.data[k] >> 4];
      ours += digits[t.data[k] & 15];
    }
    CHECK(ours == hex);
  }
}

TEST_CASE("ggml blocks: dequantisation bit for bit as the gguf package's, every type") {
  // tests/data/cases/gguf/dequant.safetensors: random blocks of each type,
  // their fp16 scales set to extremes (±65504, the smallest normal and
  // subnormal, ±0) and random values, and gguf.quants.dequantize's output.
  const io::SafeTensors cases(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "dequant.safetensors");
  const std::vector<std::pair<std::string, std::uint32_t>> types = {
      {"F16", 1},  {"BF16", 30}, {"Q4_0", 2},  {"Q4_1", 3},  {"Q5_0", 6},  {"Q5_1", 7},
      {"Q8_0", 8}, {"Q2_K", 10}, {"Q3_K", 11}, {"Q4_K", 12}, {"Q5_K", 13}, {"Q6_K", 14}};
  for (const auto& [name, code] : types) {
    CAPTURE(name);
    REQUIRE(quant::can_dequantize(code));
    const std::vector<std::uint8_t> blocks = cases.tensor(name + ".blocks").to_vector<std::uint8_t>();
    const std::vector<float> expected = cases.tensor(name + ".values").to_vector<float>();
    const io::gguf::TypeTraits t = *io::gguf::traits(code);
    REQUIRE(index_t(blocks.size()) * t.block == index_t(expected.size()) * t.bytes);
    std::vector<float> ours(expected.size(), -1.0f);
    quant::dequantize(code, t.name, blocks.data(), index_t(ours.size()), ours.data());
    int differ = 0;
    for (std::size_t k = 0; k < ours.size(); ++k) differ += std::memcmp(&ours[k], &expected[k], 4) != 0;
    CHECK(differ == 0);
  }
  test::require_error([] { quant::dequantize(16, "IQ2_XXS", nullptr, 256, nullptr); }, ErrorCode::unsupported,
                      {"IQ2_XXS", "cannot dequantise"});
}

namespace {
/// `x` quantised by quant::quantize as ggml type `code`, beside the blocks
/// the case file holds for it (TYPE.blocks).
struct QuantCase {
  io::gguf::TypeTraits traits;
  std::vector<std::uint8_t> ours, expected;
};
QuantCase quantise_case(const io::SafeTensors& cases, const std::vector<float>& x, const std::string& name,
                        std::uint32_t code) {
  REQUIRE(quant::can_quantize(code));
  QuantCase q{*io::gguf::traits(code), {}, cases.tensor(name + ".blocks").to_vector<std::uint8_t>()};
  REQUIRE(index_t(q.expected.size()) * q.traits.block == index_t(x.size()) * q.traits.bytes);
  q.ours.assign(q.expected.size(), 0xAB);
  quant::quantize(code, q.traits.name, x.data(), index_t(x.size()), q.ours.data());
  return q;
}

/// The blocks where ours and the expected bytes differ.
std::vector<index_t> differing_blocks(const QuantCase& q) {
  std::vector<index_t> differing;
  const auto bytes = std::size_t(q.traits.bytes);
  for (std::size_t b = 0; b < q.ours.size() / bytes; ++b)
    if (std::memcmp(&q.ours[b * bytes], &q.expected[b * bytes], bytes)) differing.push_back(index_t(b));
  return differing;
}
}  // namespace

TEST_CASE("ggml blocks: fp16 to fp32 is exact on every half") {
  // Against Eigen's conversion, on all 65536 bit patterns (NaNs compared as NaNs).
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float ours = quant::half_to_float(std::uint16_t(h));
    const float eigen = float(Eigen::numext::bit_cast<Eigen::half>(std::uint16_t(h)));
    if (std::isnan(eigen)) {
      CHECK(std::isnan(ours));
    } else if (std::memcmp(&ours, &eigen, 4) != 0) {
      FAIL_CHECK("half ", h, ": ", ours, " vs ", eigen);
    }
  }
}

TEST_CASE("ggml blocks: quantisation bit for bit as the gguf package's") {
  // tests/data/cases/gguf/quant.safetensors: fp32 rows (seeded normals at
  // scales 1e-4 … 1e3, and blocks of zeros, constants, one outlier, a
  // negative extreme, values on the rounding boundaries, 1e-30s) and the
  // blocks gguf.quants.quantize makes of them.
  const io::SafeTensors cases(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "quant.safetensors");
  const std::vector<float> x = cases.tensor("input").to_vector<float>();
  const std::vector<std::pair<std::string, std::uint32_t>> types = {{"F16", 1},  {"BF16", 30}, {"Q4_0", 2}, {"Q4_1", 3},
                                                                    {"Q5_0", 6}, {"Q5_1", 7},  {"Q8_0", 8}};
  for (const auto& [name, code] : types) {
    CAPTURE(name);
    const QuantCase q = quantise_case(cases, x, name, code);
    const std::vector<index_t> differing = differing_blocks(q);
    CHECK_MESSAGE(differing.empty(), differing.size(), " blocks differ, the first ",
                  differing.empty() ? -1 : differing.front());
  }
  test::require_error([] { quant::quantize(16, "IQ2_XXS", nullptr, 256, nullptr); }, ErrorCode::unsupported,
                      {"IQ2_XXS", "cannot quantise"});
}

TEST_CASE("ggml blocks: k-quant quantisation byte for byte as llama.cpp's own quantiser") {
  // tests/data/cases/gguf/k_quant.safetensors: rows of two super-blocks
  // (zeros, constants, one outlier, one-signed blocks, 1e-30s, half-empty
  // blocks, sub-blocks at scales 1e-4 … 1e3, then seeded normals) and the
  // blocks ggml_quantize_chunk (llama.cpp's libggml-base, no importance
  // matrix: what llama-quantize runs) makes of them.
  const io::SafeTensors cases(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "k_quant.safetensors");
  const std::vector<float> x = cases.tensor("input").to_vector<float>();
  for (const auto& [name, code] : std::vector<std::pair<std::string, std::uint32_t>>{
           {"Q2_K", 10}, {"Q3_K", 11}, {"Q4_K", 12}, {"Q5_K", 13}, {"Q6_K", 14}}) {
    CAPTURE(name);
    const QuantCase q = quantise_case(cases, x, name, code);
    const std::vector<std::uint8_t>& ours = q.ours;
    const io::gguf::TypeTraits& t = q.traits;
    const std::vector<index_t> differing = differing_blocks(q);
    CHECK_MESSAGE(differing.empty(), differing.size(), " blocks differ, the first ",
                  differing.empty() ? -1 : differing.front());
    // And they decode to values near the input (the fit is a fit), where the
    // fp16 super-block scale has the resolution for it (|x| ≥ 1e-2).
    std::vector<float> back(x.size());
    quant::dequantize(code, t.name, ours.data(), index_t(x.size()), back.data());
    for (std::size_t b = 0; b < x.size() / 256; ++b) {
      float amax = 0, err = 0;
      for (std::size_t i = b * 256; i < (b + 1) * 256; ++i) {
        amax = std::max(amax, std::fabs(x[i]));
        err = std::max(err, std::fabs(x[i] - back[i]));
      }
      if (amax >= 1e-2f) CHECK(err <= amax * (code == 10 ? 0.6f : 0.25f));
    }
  }
}

TEST_CASE("convert_gguf: a Mixtral GGUF as llama.cpp writes it back to its Hugging Face checkpoint, bit for bit") {
  // tests/data/cases/gguf/mixtral_tiny_f32.gguf: the golden mixtral_tiny_f32
  // folder converted as convert_hf_to_gguf.py converts (q and k permuted,
  // experts stacked), by make_gguf_cases.py with the gguf package.
  const fs::path golden = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models" / "mixtral_tiny_f32";
  const io::Gguf g(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "mixtral_tiny_f32.gguf");
  const test::TempDir dir("gguf-convert");
  io::convert_gguf(g, dir.path, DType::F32);

  const io::SafeTensors ours(dir.path / "model.safetensors"), theirs(golden / "model.safetensors");
  CHECK(ours.tensors().size() == theirs.tensors().size());
  for (const io::TensorView& t : theirs.tensors()) {
    CAPTURE(t.name);
    const io::TensorView* o = ours.find(t.name);
    REQUIRE(o != nullptr);
    CHECK(o->shape == t.shape);
    CHECK(o->to_vector<float>() == t.to_vector<float>());
  }
  nlohmann::json config, original;
  std::ifstream(dir.path / "config.json") >> config;
  std::ifstream(golden / "config.json") >> original;
  for (const char* key : {"model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "num_local_experts",
                          "num_experts_per_tok", "tie_word_embeddings"}) {
    CAPTURE(key);
    CHECK(config[key] == original[key]);
  }
  // The GGUF stores them as float32: the same values to float precision.
  CHECK(float(config["rms_norm_eps"].get<double>()) == float(original["rms_norm_eps"].get<double>()));
  CHECK(float(config["rope_theta"].get<double>()) == float(original["rope_theta"].get<double>()));

  // The decoder on the converted folder gives the golden folder's logits, bit for bit.
  {
    const mixtral::Model<> converted(dir.path), reference(golden);
    const std::vector<std::int32_t> ids = {1, 17, 200, 5, 99, 3};
    auto c1 = converted.new_cache();
    auto c2 = reference.new_cache();
    CHECK(converted.forward(ids, c1).logits == reference.forward(ids, c2).logits);
  }

  // And in bf16: every value the golden fp32 weight rounded to bf16.
  const test::TempDir dir16("gguf-convert-bf16");
  io::convert_gguf(g, dir16.path, DType::BF16);
  const io::SafeTensors half(dir16.path / "model.safetensors");
  const io::TensorView& q = theirs.tensor("model.layers.1.self_attn.q_proj.weight");
  const std::vector<float> want = q.to_vector<float>();
  const io::TensorView& q16 = half.tensor("model.layers.1.self_attn.q_proj.weight");
  CHECK(q16.dtype == DType::BF16);
  std::vector<std::uint16_t> got(q16.nbytes / 2);
  std::memcpy(got.data(), q16.data, q16.nbytes);
  REQUIRE(got.size() == want.size());
  for (std::size_t k = 0; k < got.size(); ++k) CHECK(got[k] == bf16_bits(want[k]));
}

TEST_CASE("convert_gguf: weights and a SentencePiece vocabulary together") {
  // mixtral_spm.gguf: a tiny Mixtral over spm_bpe.model's 400 pieces, with
  // its weights in mixtral_spm.safetensors (make_gguf_cases.py).
  const fs::path cases = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
  const io::Gguf g(cases / "mixtral_spm.gguf");
  const test::TempDir dir("gguf-convert-spm");
  CHECK(io::convert_gguf(g, dir.path, DType::F32) == "tokenizer.model");
  CHECK(fs::file_size(dir.path / "tokenizer.model") > 0);
  const io::SafeTensors ours(dir.path / "model.safetensors"), theirs(cases / "mixtral_spm.safetensors");
  CHECK(ours.tensors().size() == theirs.tensors().size());
  for (const io::TensorView& t : theirs.tensors()) {
    CAPTURE(t.name);
    CHECK(ours.tensor(t.name).to_vector<float>() == t.to_vector<float>());
  }
  const mixtral::Model<> model(dir.path);
  CHECK(model.config().vocab_size == 400);
}

TEST_CASE("convert_gguf: what it cannot map is an error naming it") {
  const test::TempDir dir("gguf-convert-bad");
  Bytes f = gguf_start(3, 1, 3);
  f.key("general.architecture", ValueType::string).str("llama");
  f.key("llama.attention.head_count", ValueType::u32).put<std::uint32_t>(2);
  f.key("llama.embedding_length", ValueType::u32).put<std::uint32_t>(4);
  f.str("blk.0.mystery.weight").put<std::uint32_t>(1).put<std::uint64_t>(4).put<std::uint32_t>(0).put<std::uint64_t>(0);
  f.pad_to(32);
  f.b.resize(f.b.size() + 16, 0);
  write(dir.path / "m.gguf", f.b);
  const io::Gguf g(dir.path / "m.gguf");
  test::require_error([&] { (void)io::gguf_hf_tensors(g); }, ErrorCode::unsupported,
                      {"blk.0.mystery.weight", "no Hugging Face name"});
  Bytes other = gguf_start(3, 0, 1);
  other.key("general.architecture", ValueType::string).str("qwen2");
  write(dir.path / "q.gguf", other.b);
  const io::Gguf q(dir.path / "q.gguf");
  test::require_error([&] { (void)io::gguf_hf_config(q); }, ErrorCode::unsupported, {"'qwen2'", "not supported"});
}

TEST_CASE("write_gguf: a Hugging Face Mixtral as llama.cpp lays it out, byte for byte as the gguf package writes it") {
  // make_gguf_cases.py wrote mixtral_tiny_f32.gguf from the golden folder
  // with the gguf package, as convert_hf_to_gguf.py would (F32 throughout):
  // moe's writer must produce the same file.
  const fs::path golden = fs::path(MOE_TEST_DATA_DIR) / "golden" / "models" / "mixtral_tiny_f32";
  const test::TempDir dir("gguf-write");
  std::size_t reported = 0;
  io::write_gguf(golden, dir.path / "f32.gguf", "f32", [&](std::size_t done, std::size_t total, const std::string&) {
    reported = done;
    CHECK(total == 23);
  });
  CHECK(reported == 23);
  const auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), {});
  };
  CHECK(bytes(dir.path / "f32.gguf") ==
        bytes(fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf" / "mixtral_tiny_f32.gguf"));

  // Q8_0: matrices quantised (norms and router F32), and back within Q8_0's
  // rounding: half a step d = max|x| / 127, plus the scale's own rounding to
  // fp16 (2^-11 of d, times |q| <= 127): under 0.57 d.
  io::write_gguf(golden, dir.path / "q8.gguf", "q8_0");
  const io::Gguf q8(dir.path / "q8.gguf");
  CHECK(q8.tensor("blk.0.attn_q.weight").type_name() == "Q8_0");
  CHECK(q8.tensor("blk.0.ffn_down_exps.weight").type_name() == "Q8_0");
  CHECK(q8.tensor("blk.0.ffn_gate_inp.weight").type_name() == "F32");
  CHECK(q8.tensor("output_norm.weight").type_name() == "F32");
  CHECK(q8.get_int("general.file_type") == 7);
  io::convert_gguf(q8, dir.path / "back", DType::F32);
  const io::SafeTensors back(dir.path / "back" / "model.safetensors"), original(golden / "model.safetensors");
  for (const io::TensorView& t : original.tensors()) {
    CAPTURE(t.name);
    const std::vector<float> a = t.to_vector<float>(), b = back.tensor(t.name).to_vector<float>();
    REQUIRE(a.size() == b.size());
    float amax = 0, diff = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
      amax = std::max(amax, std::fabs(a[k]));
      diff = std::max(diff, std::fabs(a[k] - b[k]));
    }
    CHECK(diff <= amax / 127.0f * 0.57f);
  }
  test::require_error([&] { io::write_gguf(golden, dir.path / "k.gguf", "q2_k"); }, ErrorCode::unsupported,
                      {"rows of 64 values cannot be Q2_K", "IQ4_NL"});
  test::require_error([&] { io::write_gguf(golden, dir.path / "k.gguf", "q4_k_xl"); }, ErrorCode::invalid_argument,
                      {"'q4_k_xl'", "q4_k_m"});
}

TEST_CASE("read_sentencepiece_model: a tokenizer.model as the GGUF stores it, and back through moe-quantize's writer") {
  const fs::path cases = fs::path(MOE_TEST_DATA_DIR) / "cases" / "gguf";
  std::ifstream in(cases / "spm_bpe.model", std::ios::binary);
  const std::string proto((std::istreambuf_iterator<char>(in)), {});
  const io::SentencePieceVocab v = io::read_sentencepiece_model(proto, "spm_bpe.model");
  const io::Gguf python(cases / "spm_vocab.gguf");  // what convert_hf_to_gguf.py stores of it
  CHECK(v.tokens == python.get_strings("tokenizer.ggml.tokens"));
  const std::vector<double> scores = python.get_numbers("tokenizer.ggml.scores"),
                            types = python.get_numbers("tokenizer.ggml.token_type");
  REQUIRE(v.scores.size() == scores.size());
  for (std::size_t k = 0; k < scores.size(); ++k) {
    CHECK(double(v.scores[k]) == scores[k]);
    CHECK(double(v.types[k]) == types[k]);
  }
  CHECK(v.bos_id == python.get_int("tokenizer.ggml.bos_token_id"));
  CHECK(v.eos_id == python.get_int("tokenizer.ggml.eos_token_id"));
  CHECK(v.unk_id == python.get_int("tokenizer.ggml.unknown_token_id"));
  CHECK(v.add_dummy_prefix == python.get_bool("tokenizer.ggml.add_space_prefix"));
  // Cut short anywhere: an error, never a crash or a silent half vocabulary.
  int errors = 0;
  for (std::size_t n = 1; n < proto.size(); n += 97) {
    try {
      (void)io::read_sentencepiece_model(std::string_view(proto).substr(0, n), "cut");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::bad_file);
      ++errors;
    }
  }
  CHECK(errors > 0);

  // GGUF (weights and vocabulary) -> folder -> GGUF: the tokenizer fields survive.
  const io::Gguf g(cases / "mixtral_spm.gguf");
  const test::TempDir dir("gguf-spm-roundtrip");
  io::convert_gguf(g, dir.path / "hf", DType::F32);
  io::write_gguf(dir.path / "hf", dir.path / "again.gguf", "f32");
  const io::Gguf again(dir.path / "again.gguf");
  CHECK(again.get_string("tokenizer.ggml.model") == "llama");
  CHECK(again.get_strings("tokenizer.ggml.tokens") == g.get_strings("tokenizer.ggml.tokens"));
  CHECK(again.get_numbers("tokenizer.ggml.scores") == g.get_numbers("tokenizer.ggml.scores"));
  CHECK(again.get_numbers("tokenizer.ggml.token_type") == g.get_numbers("tokenizer.ggml.token_type"));
  CHECK(again.get_int("tokenizer.ggml.bos_token_id") == g.get_int("tokenizer.ggml.bos_token_id"));
  for (const io::GgufTensor& t : g.tensors()) {
    CAPTURE(t.name);
    const io::GgufTensor& u = again.tensor(t.name);
    CHECK(u.ne == t.ne);
    CHECK(std::memcmp(u.data, t.data, t.nbytes) == 0);
  }
}
