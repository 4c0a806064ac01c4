// tests/test_safetensors.cpp — safetensors round trips, byte layout, malformed files, and atomic writes.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include "engine/fileio.h"
#include "engine/safetensors.h"

namespace fs = std::filesystem;

namespace {

// A fresh empty folder, removed with everything in it at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        static int n = 0;
        path = fs::temp_directory_path() / ("peft_st_test." + std::to_string(::getpid()) + "." + std::to_string(n++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { std::error_code ec; fs::remove_all(path, ec); }
    std::string file(const std::string& name) const { return (path / name).string(); }
    std::vector<std::string> listing() const {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        return names;
    }
};

std::string u64le(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[size_t(i)] = char(n >> (8 * i));
    return s;
}

std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A file with header `h` (no padding) and data buffer `data`.
std::string st_file(const std::string& h, const std::string& data) { return u64le(h.size()) + h + data; }

SafeTensors parse(const std::string& bytes) { return parse_safetensors(bytes, "t.st"); }

bool same_bits(const Tensor& a, const Tensor& b) {
    return a.dtype() == b.dtype() && a.shape() == b.shape() &&
           std::memcmp(a.storage().data(), b.storage().data(), a.nbytes()) == 0;
}

}  // namespace

TEST_SUITE("io") {

TEST_CASE("safetensors: F32, I32, zero-size and scalar tensors with metadata round-trip bit-exactly") {
    TempDir dir;
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    Rng rng(7);
    std::vector<std::pair<std::string, Tensor>> ts = {
        {"w", Tensor::randn({3, 5}, rng)},
        {"specials", Tensor::from({nan, -inf, inf, -0.f, 1e-45f}, {5})},
        {"ids", Tensor::from_ints({-7, 0, 2147483647, -2147483647 - 1}, {2, 2})},
        {"empty", Tensor::zeros({2, 0})},
        {"scalar", Tensor::from({3.5f}, Shape{})},
        {"4d", Tensor::randn({2, 1, 3, 2}, rng)},
        {"h\u00e9 \"quoted\"\n\\", Tensor::from({1.f}, {1})},
    };
    const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "12"}, {"note", "caf\u00e9\t\"x\""}};
    save_safetensors(dir.file("m.safetensors"), ts, meta);
    SafeTensors st = load_safetensors(dir.file("m.safetensors"));
    CHECK(st.metadata == meta);
    REQUIRE(st.tensors.size() == ts.size());
    for (const auto& [name, t] : ts) {
        CAPTURE(name);
        CHECK(same_bits(st.at(name), t));
    }
    CHECK(st.at("scalar").ndim() == 0);
    CHECK(st.at("empty").numel() == 0);
    CHECK(st.at("ids").dtype() == DType::I32);
    // file order: sorted by name (all dtypes here are 4-byte aligned)
    CHECK(st.order == std::vector<std::string>{"4d", "empty", "h\u00e9 \"quoted\"\n\\", "ids", "scalar", "specials", "w"});
    CHECK_THROWS_WITH_AS(st.at("nope"), doctest::Contains("m.safetensors: no tensor 'nope'"), FileError);
}

TEST_CASE("safetensors: the header starts with '{', is space-padded to 8 bytes and matches the reference layout") {
    TempDir dir;
    save_safetensors(dir.file("x.st"), {{"b", Tensor::from({1.f, 2.f}, {2})}, {"a", Tensor::from_ints({5}, {1})}},
                     {{"format", "pt"}});
    const std::string bytes = read_file(dir.file("x.st"), 1 << 20);
    const std::string h = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    const size_t n = (h.size() + 7) / 8 * 8;
    CHECK(bytes.substr(0, 8) == u64le(n));
    CHECK(bytes[8] == '{');
    CHECK((8 + n) % 8 == 0);
    CHECK(bytes.substr(8, n) == h + std::string(n - h.size(), ' '));
    CHECK(bytes.substr(8 + n) == std::string("\x05\0\0\0", 4) + f32_bytes({1.f, 2.f}));
}

TEST_CASE("safetensors: a file byte-exact as Python safetensors writes it loads, and we write the same bytes") {
    // save_file({"a": torch.tensor([1.0, -2.5])}, path, metadata={"format": "pt"}): 85-byte JSON + 3 spaces.
    const std::string python =
        std::string("\x58\0\0\0\0\0\0\0", 8) +
        R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})" + "   " +
        std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8);
    SafeTensors st = parse(python);
    CHECK(st.metadata == std::map<std::string, std::string>{{"format", "pt"}});
    CHECK(st.at("a").shape() == Shape{2});
    CHECK(st.at("a").to_vector() == std::vector<float>{1.f, -2.5f});
    TempDir dir;
    save_safetensors(dir.file("a.st"), {{"a", Tensor::from({1.f, -2.5f}, {2})}}, {{"format", "pt"}});
    CHECK(read_file(dir.file("a.st"), 1 << 20) == python);
}

TEST_CASE("safetensors: JSON whitespace around the header, any JSON key order and unaligned data are accepted") {
    // N = 75: the data buffer starts at byte 83, so the F32 data is not 4-aligned (memcpy, not a cast).
    const std::string h = "\n\t {\"b\":{\"data_offsets\":[4,8],\"shape\":[],\"dtype\":\"F32\"},"
                          "\"a\":{\"shape\":[1],\"dtype\":\"I32\",\"data_offsets\":[0,4]}} \r\n";
    SafeTensors st = parse(st_file(h, std::string("\x09\0\0\0", 4) + f32_bytes({0.25f})));
    CHECK(st.at("a").idata()[0] == 9);
    CHECK(st.at("b").item() == 0.25f);
    CHECK(st.order == std::vector<std::string>{"a", "b"});
    // zero-size tensors may sit anywhere, even at the same offset as another tensor's start
    SafeTensors z = parse(st_file(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},)"
                                  R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                  R"("x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                  f32_bytes({1.f, 2.f})));
    CHECK(z.at("z").shape() == Shape{0, 3});
    CHECK(z.at("y").item() == 2.f);
    CHECK(parse(st_file("{}", "")).tensors.empty());
}

TEST_CASE("safetensors: malformed files are each rejected with a FileError that says what is wrong") {
    const std::string one = f32_bytes({1.f}), two = f32_bytes({1.f, 2.f});
    // a one-tensor file "a" with the given entry body and data
    auto ta = [](const std::string& entry, const std::string& data) { return st_file("{\"a\":" + entry + "}", data); };
    const std::string good_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    struct Case { std::string what, bytes; const char* fragment; };
    const std::vector<Case> cases = {
        {"empty file", "", "header too small"},
        {"7 bytes", std::string(7, '\0'), "header too small"},
        {"N beyond the file", u64le(60) + "{}", "invalid header length 60"},
        {"N = 1e8 beyond the file", u64le(100000000) + "{}", "invalid header length"},
        {"N = 2^64-1", u64le(UINT64_MAX) + "{}", "header too large"},
        {"N > 1e8", u64le(100000001) + "{}", "header too large"},
        {"non-UTF-8 byte", st_file("{\"a\xff\":1}", ""), "not valid UTF-8"},
        {"overlong UTF-8", st_file("{\"\xc0\xaf\":1}", ""), "not valid UTF-8"},
        {"UTF-8 surrogate", st_file("{\"\xed\xa0\x80\":1}", ""), "not valid UTF-8"},
        {"truncated JSON", st_file(R"({"a":{"dtype":"F32")", ""), "not valid JSON"},
        {"junk after the JSON", st_file("{} x", ""), "not valid JSON"},
        {"NUL padding", st_file(std::string("{}\0\0", 4), ""), "NUL byte"},
        {"NUL then junk", st_file(std::string("{}\0{\"a\":1}", 10), ""), "NUL byte"},
        {"root array", st_file("[]", ""), "root is not a JSON object"},
        {"root number", st_file("  7", ""), "root is not a JSON object"},
        {"byte-order mark", st_file("\xef\xbb\xbf{}", ""), "root is not a JSON object"},
        {"entry not an object", ta("[1]", ""), "tensor 'a': entry must be an object"},
        {"unknown dtype", ta(R"({"dtype":"F128","shape":[1],"data_offsets":[0,4]})", one), "tensor 'a': unknown dtype 'F128'"},
        {"lower-case dtype", ta(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", one), "unknown dtype 'f32'"},
        {"unsupported F16", ta(R"({"dtype":"F16","shape":[2],"data_offsets":[0,4]})", one), "tensor 'a': unsupported dtype 'F16'"},
        {"unsupported C64", ta(R"({"dtype":"C64","shape":[1],"data_offsets":[0,8]})", two), "unsupported dtype 'C64'"},
        {"dtype not a string", ta(R"({"dtype":1,"shape":[1],"data_offsets":[0,4]})", one), "dtype must be a string"},
        {"negative shape", ta(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", one), "entry -1 is not an integer"},
        {"fractional shape", ta(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", one), "entry 1.5 is not an integer"},
        {"1.0 in shape", ta(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})", one), "is not an integer"},
        {"string in shape", ta(R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})", one), "is not an integer"},
        {"shape entry > 2^53", ta(R"({"dtype":"F32","shape":[9007199254740993,0],"data_offsets":[0,0]})", ""), "[0, 2^53]"},
        {"shape not an array", ta(R"({"dtype":"F32","shape":4,"data_offsets":[0,4]})", one), "shape must be an array"},
        {"data_offsets of length 3", ta(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,4]})", one), "data_offsets must be 2"},
        {"negative data_offsets", ta(R"({"dtype":"F32","shape":[0],"data_offsets":[-4,-4]})", ""), "data_offsets must be 2"},
        {"numel overflow [2^33,2^33]", ta(R"({"dtype":"F32","shape":[8589934592,8589934592],"data_offsets":[0,4]})", one),
         "tensor 'a': shape [8589934592,8589934592] overflows"},
        {"numel overflow [2^52,2^12]", ta(R"({"dtype":"F32","shape":[4503599627370496,4096],"data_offsets":[0,4]})", one), "overflows"},
        {"byte size overflow [2^31,2^31]", ta(R"({"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,4]})", one),
         "overflows (byte size"},
        // the reference's [2, 2^63-1] overflow case: here each entry is capped at 2^53 first
        {"[2, 2^63-1]", ta(R"({"dtype":"F32","shape":[2,9223372036854775807],"data_offsets":[0,4]})", one), "[0, 2^53]"},
        {"begin > end", ta(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", two), "tensor 'a': invalid offset [8, 0]"},
        {"end beyond the buffer", ta(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})", two), "invalid offset [0, 16]"},
        {"first begin not 0", ta(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})", two), "expected it to start at 0"},
        {"hole", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", f32_bytes({1, 2, 3})),
         "tensor 'b': invalid offset [8, 12]"},
        {"overlap (two tensors, same range)", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", two),
         "tensor 'b': invalid offset [0, 8]"},
        {"trailing bytes (polyglot)", ta(good_entry, two + "PK\x03\x04"), "not fully covered"},
        {"no tensors, but data", st_file("{}", "x"), "not fully covered"},
        {"size mismatch", ta(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", two), "tensor 'a': size mismatch"},
        {"I32 size mismatch", ta(R"({"dtype":"I32","shape":[1],"data_offsets":[0,8]})", two), "size mismatch"},
        {"duplicate tensor key", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                         R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two),
         "duplicate key 'a'"},
        {"duplicate metadata key", st_file(R"({"__metadata__":{"format":"pt","format":"np"}})", ""),
         "duplicate key 'format' in '__metadata__'"},
        {"duplicate field", ta(R"({"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})", two),
         "duplicate key 'dtype' in 'a'"},
        {"metadata value not a string", st_file(R"({"__metadata__":{"step":12}})", ""), "value of 'step' must be a string"},
        {"metadata not an object", st_file(R"({"__metadata__":"pt"})", ""), "__metadata__ must be an object"},
        {"metadata null", st_file(R"({"__metadata__":null})", ""), "__metadata__ must be an object"},
        {"extra field", ta(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"foo":1})", two),
         "tensor 'a': unexpected field 'foo'"},
        {"missing field", ta(R"({"dtype":"F32","data_offsets":[0,8]})", two), "tensor 'a': missing field 'shape'"},
        {"5 dims", ta(R"({"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]})", two),
         "tensor 'a': shape [1,1,1,1,2] has 5 dimensions"},
        {"deep nesting", ta(R"({"dtype":"F32","shape":[[[[[1]]]]],"data_offsets":[0,4]})", one), "nests deeper"},
    };
    CHECK(cases.size() >= 16);
    for (const Case& c : cases) {
        CAPTURE(c.what);
        CHECK_THROWS_WITH_AS(parse(c.bytes), doctest::Contains(c.fragment), FileError);
        try { parse(c.bytes); } catch (const FileError& e) { CHECK(std::string(e.what()).rfind("t.st: ", 0) == 0); }
    }
}

TEST_CASE("safetensors: every truncation and every single-byte corruption of a valid file is a clean FileError or a valid load") {
    TempDir dir;
    Rng rng(3);
    save_safetensors(dir.file("v.st"), {{"w", Tensor::randn({2, 3}, rng)}, {"ids", Tensor::from_ints({1, 2}, {2})},
                                        {"s", Tensor::from({1.f}, Shape{})}}, {{"format", "pt"}});
    const std::string bytes = read_file(dir.file("v.st"), 1 << 20);
    for (size_t len = 0; len < bytes.size(); len++) {
        CAPTURE(len);
        CHECK_THROWS_AS(parse(bytes.substr(0, len)), FileError);
    }
    int loaded = 0, rejected = 0;
    for (size_t i = 0; i < bytes.size(); i++)
        for (unsigned char v : {0x00, 0x20, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x7b, 0x7d, 0x80, 0xff}) {
            std::string b = bytes;
            b[i] = char(v);
            try { parse(b); loaded++; }
            catch (const FileError&) { rejected++; }   // any other exception type fails the test
        }
    CHECK(loaded > 0);
    CHECK(rejected > 0);
}

TEST_CASE("safetensors: saving refuses undefined tensors, repeated or reserved names and non-UTF-8 strings") {
    TempDir dir;
    const std::string p = dir.file("bad.st");
    Tensor t = Tensor::zeros({1});
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", Tensor()}}), doctest::Contains("'a' is undefined"), ValueError);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", t}, {"a", t}}), doctest::Contains("'a' repeated"), ValueError);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"__metadata__", t}}), doctest::Contains("reserved"), ValueError);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a\xff", t}}), doctest::Contains("not valid UTF-8"), ValueError);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", t}}, {{"k", "\xc3"}}), doctest::Contains("not valid UTF-8"), ValueError);
    CHECK(dir.listing().empty());
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains((p + ": cannot open: No such file").c_str()), FileError);
}

// Skipped by default (builds several 100 MB strings, seconds on a busy machine): run with --no-skip.
TEST_CASE("safetensors: a header over 100,000,000 bytes is refused when saving" * doctest::skip()) {
    TempDir dir;
    const std::map<std::string, std::string> meta = {{"big", std::string(100000000, 'x')}};
    CHECK_THROWS_WITH_AS(save_safetensors(dir.file("big.st"), {}, meta), doctest::Contains("exceeds the limit"), FileError);
    CHECK(dir.listing().empty());
}

TEST_CASE("fileio: atomic_write_file replaces an existing file and leaves no temp file") {
    TempDir dir;
    const std::string p = dir.file("f.bin");
    atomic_write_file(p, std::string("old contents"));
    atomic_write_file(p, std::string("new"));
    CHECK(read_file(p, 100) == "new");
    CHECK(dir.listing() == std::vector<std::string>{"f.bin"});
    atomic_write_file(p, [](FileWriter& w) { w.write("a", 1); w.write(std::string("bc")); CHECK(w.bytes_written() == 3); });
    CHECK(read_file(p, 100) == "abc");
    atomic_write_file(dir.file("empty"), std::string());
    CHECK(read_file(dir.file("empty"), 0).empty());
}

TEST_CASE("fileio: a failing write keeps the old file intact and removes the temp file") {
    TempDir dir;
    const std::string p = dir.file("keep.bin");
    atomic_write_file(p, std::string("precious"));

    SUBCASE("the writer callback throws half-way") {
        auto fill = [](FileWriter& w) { w.write(std::string(1000, 'z')); throw ValueError("serialisation failed"); };
        CHECK_THROWS_WITH_AS(atomic_write_file(p, fill), "serialisation failed", ValueError);
    }
    SUBCASE("the file grows past RLIMIT_FSIZE (EFBIG, like a full disk)") {
        // The soft limit makes write() fail with EFBIG once SIGXFSZ is ignored; restored right after.
        struct rlimit old;
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
        struct rlimit small = old;
        small.rlim_cur = 4096;
        auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
        std::string error;
        try {
            atomic_write_file(p, std::string(1 << 20, 'z'));
        } catch (const FileError& e) {
            error = e.what();
        }
        ::setrlimit(RLIMIT_FSIZE, &old);
        ::signal(SIGXFSZ, old_handler);
        CHECK(error.find(p + ": write failed") != std::string::npos);
        CHECK(error.find(std::strerror(EFBIG)) != std::string::npos);
    }
    SUBCASE("the target is a directory: rename fails") {
        fs::create_directory(dir.path / "sub");
        CHECK_THROWS_WITH_AS(atomic_write_file(dir.file("sub"), std::string("x")),
                             doctest::Contains((dir.file("sub") + ": cannot rename temp file").c_str()), FileError);
        CHECK(fs::is_directory(dir.path / "sub"));
        fs::remove(dir.path / "sub");
    }
    CHECK(read_file(p, 100) == "precious");
    CHECK(dir.listing() == std::vector<std::string>{"keep.bin"});
}

TEST_CASE("fileio: writing into a folder that does not exist names the path and the reason") {
    TempDir dir;
    const std::string p = dir.file("missing/x.st");
    CHECK_THROWS_WITH_AS(atomic_write_file(p, std::string("x")), doctest::Contains((p + ": cannot create temp file").c_str()), FileError);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", Tensor::zeros({1})}}), doctest::Contains("No such file or directory"),
                         FileError);
    CHECK(dir.listing().empty());
}

TEST_CASE("fileio: read_file rejects missing files, directories and files over the limit") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(read_file(dir.file("nope"), 10), doctest::Contains((dir.file("nope") + ": cannot open").c_str()), FileError);
    CHECK_THROWS_WITH_AS(read_file(dir.path.string(), 10), doctest::Contains("is a directory"), FileError);
    atomic_write_file(dir.file("ten"), std::string("0123456789"));
    CHECK(read_file(dir.file("ten"), 10) == "0123456789");
    CHECK_THROWS_WITH_AS(read_file(dir.file("ten"), 9), doctest::Contains("ten: file too large (10 bytes"), FileError);
    // a device has no size up front: the limit is enforced while reading
    CHECK_THROWS_WITH_AS(read_file("/dev/zero", 100000), doctest::Contains("/dev/zero: is a character device, not a regular file"), FileError);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path.string()), doctest::Contains("is a directory"), FileError);
}

}  // TEST_SUITE("io")
