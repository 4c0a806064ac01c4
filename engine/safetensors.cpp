// engine/safetensors.cpp — safetensors writer and validating reader (see safetensors.h for the rules).
#include "safetensors.h"
#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>
#include "check.h"
#include "fileio.h"
#include "half.h"
#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using json = nlohmann::json;

static constexpr uint64_t kMaxHeaderBytes = 100000000;         // the reference's MAX_HEADER_SIZE
static constexpr uint64_t kMaxDim = uint64_t(1) << 53;
static constexpr size_t kMaxFileBytes = size_t(1) << 40;       // read_file's limit: the size is known before reading

// ---- dtypes

static const char* dtype_name(DType dt) { return dt == DType::F32 ? "F32" : "I32"; }
static uint64_t dtype_bytes(DType) { return 4; }   // both F32 and I32

// Every dtype the format defines; all but F32 and I32 are valid files this engine cannot use.
static bool is_safetensors_dtype(const std::string& s) {
    static const std::set<std::string> all = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
                                              "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16",
                                              "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"};
    return all.count(s) > 0;
}

// ---- UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF)

static bool valid_utf8(const unsigned char* s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;   // allowed range of the second byte
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return false;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += len;
    }
    return true;
}

// ---- writer

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    auto check_utf8 = [](const std::string& s, const char* what) {
        ENGINE_CHECK(valid_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size()), ValueError,
                     "save_safetensors: {} is not valid UTF-8", what);
    };
    std::vector<std::pair<std::string, Tensor>> sorted = tensors;
    for (const auto& [name, t] : sorted) {
        ENGINE_CHECK(t.defined(), ValueError, "save_safetensors: tensor '{}' is undefined", name);
        ENGINE_CHECK(name != "__metadata__", ValueError, "save_safetensors: '__metadata__' is a reserved name");
        check_utf8(name, "a tensor name");
    }
    for (const auto& [k, v] : metadata) { check_utf8(k, "a metadata key"); check_utf8(v, "a metadata value"); }
    // Alignment (= element size) descending, then name, so every tensor starts aligned to its element size.
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
        const uint64_t sa = dtype_bytes(a.second.dtype()), sb = dtype_bytes(b.second.dtype());
        return sa != sb ? sa > sb : a.first < b.first;
    });
    for (size_t i = 1; i < sorted.size(); i++)
        ENGINE_CHECK(sorted[i].first != sorted[i - 1].first, ValueError, "save_safetensors: tensor name '{}' repeated",
                     sorted[i].first);

    // The header, byte for byte as the reference writes it: __metadata__ first (its keys sorted here,
    // in hash order there), then the tensors in data order, each {"dtype","shape","data_offsets"};
    // compact JSON, strings escaped by nlohmann the way serde_json does.
    std::string h = "{";
    if (!metadata.empty()) h += "\"__metadata__\":" + json(metadata).dump() + ",";
    uint64_t offset = 0;
    for (const auto& [name, t] : sorted) {
        h += json(name).dump() + ":{\"dtype\":\"" + dtype_name(t.dtype()) + "\",\"shape\":[";
        for (int d = 0; d < t.ndim(); d++) h += (d ? "," : "") + std::to_string(t.size(d));
        h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes()) + "]},";
        offset += t.nbytes();
    }
    if (h.size() > 1) h.pop_back();   // the last ','
    h += "}";
    h.append((8 - h.size() % 8) % 8, ' ');   // so the data buffer starts 8-aligned
    ENGINE_CHECK(h.size() <= kMaxHeaderBytes, FileError, "{}: safetensors header of {} bytes exceeds the limit of {}",
                 path, h.size(), kMaxHeaderBytes);

    atomic_write_file(path, [&](FileWriter& w) {
        unsigned char n[8];
        for (int i = 0; i < 8; i++) n[i] = (unsigned char)(uint64_t(h.size()) >> (8 * i));   // little-endian
        w.write(n, 8);
        w.write(h);
        for (const auto& kv : sorted) w.write(kv.second.storage().data(), kv.second.nbytes());
    });
}

// ---- reader

namespace {

// A JSON value for an error message, cut short: untrusted values can be long.
std::string show(const json& v) {
    std::string s = v.dump();
    if (s.size() <= 60) return s;
    size_t k = 60;
    while (k > 0 && (s[k] & 0xC0) == 0x80) k--;   // cut at a character boundary
    return s.substr(0, k) + "...";
}

struct Entry {
    std::string name, dtype;   // dtype: "F32", "I32", "F16", "BF16" or "U8"
    Shape shape;
    uint64_t begin, end, nbytes;
};

uint64_t element_bytes(const std::string& dtype) { return dtype == "U8" ? 1 : dtype == "F16" || dtype == "BF16" ? 2 : 4; }

// An integer in [0, limit] from a JSON value, or false.
bool as_uint(const json& v, uint64_t limit, uint64_t* out) {
    if (v.is_number_unsigned()) *out = v.get<uint64_t>();
    else if (v.is_number_integer() && v.get<int64_t>() == 0) *out = 0;   // "-0"
    else return false;
    return *out <= limit;
}

Entry parse_entry(const std::string& file, const std::string& name, const json& v) {
    ENGINE_CHECK(v.is_object(), FileError, "{}: tensor '{}': entry must be an object, got {}", file, name, show(v));
    for (const auto& kv : v.items())
        ENGINE_CHECK(kv.key() == "dtype" || kv.key() == "shape" || kv.key() == "data_offsets", FileError,
                     "{}: tensor '{}': unexpected field '{}' (only dtype, shape, data_offsets are allowed)", file,
                     name, kv.key());
    for (const char* k : {"dtype", "shape", "data_offsets"})
        ENGINE_CHECK(v.contains(k), FileError, "{}: tensor '{}': missing field '{}'", file, name, k);

    Entry e;
    e.name = name;
    const json& dt = v["dtype"];
    ENGINE_CHECK(dt.is_string(), FileError, "{}: tensor '{}': dtype must be a string, got {}", file, name, show(dt));
    const std::string s = dt.get<std::string>();
    const bool readable = s == "F32" || s == "I32" || s == "F16" || s == "BF16" || s == "U8";
    ENGINE_CHECK(readable || !is_safetensors_dtype(s), FileError,
                 "{}: tensor '{}': unsupported dtype '{}' (this engine reads F32 and I32)", file, name, s);
    ENGINE_CHECK(readable, FileError, "{}: tensor '{}': unknown dtype '{}'", file, name, s);
    e.dtype = s;

    const json& sh = v["shape"];
    ENGINE_CHECK(sh.is_array(), FileError, "{}: tensor '{}': shape must be an array, got {}", file, name, show(sh));
    ENGINE_CHECK(sh.size() <= size_t(Shape::kMaxDims), FileError,
                 "{}: tensor '{}': shape {} has {} dimensions; the engine supports at most {}", file, name,
                 show(sh), sh.size(), Shape::kMaxDims);
    uint64_t numel = 1;
    for (const json& d : sh) {
        uint64_t x;
        ENGINE_CHECK(as_uint(d, kMaxDim, &x), FileError,
                     "{}: tensor '{}': shape {} entry {} is not an integer in [0, 2^53]", file, name, show(sh), show(d));
        ENGINE_CHECK(!__builtin_mul_overflow(numel, x, &numel), FileError,
                     "{}: tensor '{}': shape {} overflows (element count above 2^64)", file, name, show(sh));
        e.shape.dims[e.shape.ndim++] = int64_t(x);
    }
    ENGINE_CHECK(!__builtin_mul_overflow(numel, element_bytes(e.dtype), &e.nbytes), FileError,
                 "{}: tensor '{}': shape {} overflows (byte size above 2^64)", file, name, show(sh));

    const json& off = v["data_offsets"];
    ENGINE_CHECK(off.is_array() && off.size() == 2 && as_uint(off[0], UINT64_MAX, &e.begin) &&
                     as_uint(off[1], UINT64_MAX, &e.end),
                 FileError, "{}: tensor '{}': data_offsets must be 2 non-negative integers, got {}", file, name,
                 show(off));
    return e;
}

// json::parse with a callback that rejects a key seen twice in one object (at any depth), and
// nesting deeper than a safetensors header has (root {} > tensor {} > shape []): that also keeps
// nlohmann's recursive dump() in error messages away from deep input.
json parse_header(const std::string& file, const char* p, size_t n) {
    ENGINE_CHECK(valid_utf8(reinterpret_cast<const unsigned char*>(p), n), FileError,
                 "{}: header is not valid UTF-8", file);
    // nlohmann stops at a NUL byte as if the input ended there; JSON never has a raw NUL, so refuse it.
    ENGINE_CHECK(std::memchr(p, '\0', n) == nullptr, FileError, "{}: header is not valid JSON: it contains a NUL byte",
                 file);
    size_t first = 0;
    while (first < n && (p[first] == ' ' || p[first] == '\t' || p[first] == '\n' || p[first] == '\r')) first++;
    ENGINE_CHECK(first < n && p[first] == '{', FileError, "{}: header root is not a JSON object (must start with '{{')",
                 file);
    std::vector<std::pair<std::set<std::string>, std::string>> open;   // per open object: keys seen, last key
    auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        using E = json::parse_event_t;
        ENGINE_CHECK(!((ev == E::object_start || ev == E::array_start) && depth >= 3), FileError,
                     "{}: header nests deeper than a safetensors header can", file);
        if (ev == E::object_start) open.emplace_back();
        else if (ev == E::object_end) open.pop_back();
        else if (ev == E::key) {
            std::string k = parsed.get<std::string>();
            const std::string where = open.size() >= 2 ? " in '" + open[open.size() - 2].second + "'" : "";
            ENGINE_CHECK(open.back().first.insert(k).second, FileError, "{}: header has duplicate key '{}'{}", file,
                         k, where);
            open.back().second = std::move(k);
        }
        return true;
    };
    try {
        return json::parse(p, p + n, cb);
    } catch (const json::exception& e) {
        throw FileError(fmt::format("{}: header is not valid JSON: {}", file, e.what()));
    }
}

// The header of a file of `size` bytes whose first 8 + n bytes are at `p` (n read from them):
// every check of safetensors.h, with F16 and BF16 allowed. Entries in offset order.
struct Index {
    std::vector<Entry> entries;
    std::map<std::string, std::string> metadata;
    uint64_t data_start;
};

uint64_t header_length(const unsigned char* first8, uint64_t size, const std::string& file) {
    ENGINE_CHECK(size >= 8, FileError, "{}: header too small: file has {} bytes, needs at least 8", file, size);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= uint64_t(first8[i]) << (8 * i);
    ENGINE_CHECK(n <= kMaxHeaderBytes, FileError, "{}: header too large: {} bytes (limit {})", file, n, kMaxHeaderBytes);
    uint64_t stop;
    ENGINE_CHECK(!__builtin_add_overflow(n, uint64_t(8), &stop) && stop <= size, FileError,
                 "{}: invalid header length {}: the file has only {} bytes", file, n, size);
    return n;
}

Index parse_index(const char* header, uint64_t n, uint64_t size, const std::string& file) {
    const json root = parse_header(file, header, size_t(n));
    Index ix;
    ix.data_start = 8 + n;
    std::vector<Entry>& entries = ix.entries;
    for (const auto& kv : root.items()) {
        if (kv.key() != "__metadata__") { entries.push_back(parse_entry(file, kv.key(), kv.value())); continue; }
        ENGINE_CHECK(kv.value().is_object(), FileError, "{}: __metadata__ must be an object of strings, got {}", file,
                     show(kv.value()));
        for (const auto& m : kv.value().items()) {
            ENGINE_CHECK(m.value().is_string(), FileError, "{}: __metadata__ value of '{}' must be a string, got {}",
                         file, m.key(), show(m.value()));
            ix.metadata[m.key()] = m.value().get<std::string>();
        }
    }

    // In offset order the tensors must tile [0, buffer) exactly. The order in the JSON text does not matter.
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    const uint64_t buffer = size - ix.data_start;
    uint64_t pos = 0;
    for (const Entry& e : entries) {
        ENGINE_CHECK(e.begin == pos && e.end >= e.begin && e.end <= buffer, FileError,
                     "{}: tensor '{}': invalid offset [{}, {}]: expected it to start at {} and end within the {}-byte "
                     "data buffer (holes, overlaps and out-of-range offsets are not allowed)",
                     file, e.name, e.begin, e.end, pos, buffer);
        ENGINE_CHECK(e.end - e.begin == e.nbytes, FileError,
                     "{}: tensor '{}': size mismatch: shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}",
                     file, e.name, e.shape.str(), e.dtype, e.nbytes, e.begin, e.end, e.end - e.begin);
        pos = e.end;
    }
    ENGINE_CHECK(pos == buffer, FileError,
                 "{}: data buffer not fully covered: the tensors end at byte {} of {} (trailing bytes)", file, pos, buffer);
    return ix;
}

}  // namespace

SafeTensors parse_safetensors(const std::string& bytes, const std::string& file) {
    const uint64_t n = header_length(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), file);
    Index ix = parse_index(bytes.data() + 8, n, bytes.size(), file);
    SafeTensors st;
    st.source = file;
    st.metadata = std::move(ix.metadata);
    for (const Entry& e : ix.entries)   // a whole-file read makes Tensors: F32 and I32 only
        ENGINE_CHECK(e.dtype == "F32" || e.dtype == "I32", FileError,
                     "{}: tensor '{}': unsupported dtype '{}' (this engine reads F32 and I32)", file, e.name, e.dtype);

    // Only now, with every size bounded by the file's, allocate and copy.
    const char* data = bytes.data() + ix.data_start;
    for (const Entry& e : ix.entries) {
        Tensor t = Tensor::empty(e.shape, e.dtype == "F32" ? DType::F32 : DType::I32);
        if (e.nbytes) std::memcpy(t.storage().data(), data + e.begin, size_t(e.nbytes));
        st.tensors.emplace(e.name, t);
        st.order.push_back(e.name);
    }
    return st;
}

SafeTensors load_safetensors(const std::string& path) { return parse_safetensors(read_file(path, kMaxFileBytes), path); }

const Tensor& SafeTensors::at(const std::string& name) const {
    auto it = tensors.find(name);
    ENGINE_CHECK(it != tensors.end(), FileError, "{}: no tensor '{}'", source, name);
    return it->second;
}

// ---- tensor by tensor

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
    uint64_t size = 0;
    fd_ = open_regular_file(path, &size);   // a FIFO or device is refused, never waited on
    try {
        unsigned char first8[8] = {};
        read_at(0, first8, std::min<uint64_t>(8, size));
        const uint64_t n = header_length(first8, size, path);
        std::string header(size_t(n), '\0');
        read_at(8, header.data(), n);
        Index ix = parse_index(header.data(), n, size, path);
        metadata_ = std::move(ix.metadata);
        data_start_ = ix.data_start;
        for (const Entry& e : ix.entries) tensors_.push_back({e.name, e.dtype, e.shape, e.begin, e.end});
    } catch (...) {
        ::close(fd_);
        throw;
    }
}

SafeTensorsFile::~SafeTensorsFile() { ::close(fd_); }

const TensorInfo* SafeTensorsFile::find(const std::string& name) const {
    for (const TensorInfo& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

void SafeTensorsFile::read_at(uint64_t offset, void* dst, uint64_t n) const {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
        const ssize_t got = ::pread(fd_, p, size_t(std::min<uint64_t>(n, uint64_t(1) << 30)), off_t(offset));
        if (got < 0 && errno == EINTR) continue;
        ENGINE_CHECK(got > 0, FileError, "{}: read failed at byte {}: {}", path_, offset,
                     got < 0 ? std::strerror(errno) : "the file is shorter than its header says");
        p += got, offset += uint64_t(got), n -= uint64_t(got);
    }
}

void SafeTensorsFile::read_f32_rows(const TensorInfo& t, int64_t row0, int64_t rows, float* dst) const {
    ENGINE_CHECK(t.dtype != "U8" && t.dtype != "I32", FileError, "{}: tensor '{}' is {} where float values (F32, F16, BF16) "
                 "are expected", path_, t.name, t.dtype);
    const int64_t cols = t.shape.ndim >= 2 ? t.shape.numel() / std::max<int64_t>(1, t.shape.dims[0]) : 1;
    const uint64_t eb = t.dtype == "F32" ? 4 : 2, n = uint64_t(rows * cols);
    const uint64_t at = data_start_ + t.begin + uint64_t(row0 * cols) * eb;
    ENGINE_CHECK(row0 >= 0 && at + n * eb <= data_start_ + t.end, FileError, "{}: tensor '{}': rows [{}, {}) out of range",
                 path_, t.name, row0, row0 + rows);
    if (eb == 4) { read_at(at, dst, n * 4); return; }
    // 16-bit values: read into the second half of dst, then widen front to back (never overtaking).
    uint16_t* half = reinterpret_cast<uint16_t*>(dst + n) - n;
    read_at(at, half, n * 2);
    if (t.dtype == "BF16") {
        for (uint64_t i = 0; i < n; i++) {
            const uint32_t bits = uint32_t(half[i]) << 16;
            std::memcpy(dst + i, &bits, 4);
        }
    } else {
        for (uint64_t i = 0; i < n; i++) dst[i] = half_to_float(half[i]);
    }
}

void SafeTensorsFile::read_f32(const TensorInfo& t, float* dst) const {
    read_f32_rows(t, 0, t.shape.ndim >= 1 ? t.shape.dims[0] : 1, dst);
}

void SafeTensorsFile::read_bytes(const TensorInfo& t, void* dst) const {
    ENGINE_CHECK(t.dtype == "U8", FileError, "{}: tensor '{}' is {} where U8 blocks are expected", path_, t.name, t.dtype);
    read_at(data_start_ + t.begin, dst, t.end - t.begin);
}

void save_safetensors_streamed(const std::string& path, const std::vector<StreamedTensor>& tensors,
                               const std::function<void(size_t, void*)>& fill,
                               const std::map<std::string, std::string>& metadata) {
    // The header as save_safetensors writes it (F32 before U8, then names sorted), from shapes alone.
    auto bytes = [&](size_t i) { return uint64_t(tensors[i].shape.numel()) * (tensors[i].u8 ? 1 : 4); };
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return tensors[a].u8 != tensors[b].u8 ? tensors[b].u8 : tensors[a].name < tensors[b].name;
    });
    std::string h = "{";
    if (!metadata.empty()) h += "\"__metadata__\":" + json(metadata).dump() + ",";
    uint64_t offset = 0;
    for (size_t k = 0; k < order.size(); k++) {
        const StreamedTensor& t = tensors[order[k]];
        const std::string& name = t.name;
        const Shape& shape = t.shape;
        ENGINE_CHECK(k == 0 || name != tensors[order[k - 1]].name, ValueError, "save_safetensors: tensor name '{}' repeated", name);
        const uint64_t nbytes = bytes(order[k]);
        h += json(name).dump() + ":{\"dtype\":\"" + (t.u8 ? "U8" : "F32") + "\",\"shape\":[";
        for (int d = 0; d < shape.ndim; d++) h += (d ? "," : "") + std::to_string(shape.dims[d]);
        h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]},";
        offset += nbytes;
    }
    if (h.size() > 1) h.pop_back();
    h += "}";
    h.append((8 - h.size() % 8) % 8, ' ');
    atomic_write_file(path, [&](FileWriter& w) {
        unsigned char n[8];
        for (int i = 0; i < 8; i++) n[i] = (unsigned char)(uint64_t(h.size()) >> (8 * i));
        w.write(n, 8);
        w.write(h);
        std::vector<float> buf;   // floats, so that F32 tensors are aligned
        for (size_t i : order) {
            buf.assign(size_t((bytes(i) + 3) / 4), 0.f);
            fill(i, buf.data());
            w.write(buf.data(), bytes(i));
        }
    });
}
