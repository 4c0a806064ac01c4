// engine/safetensors.cpp — safetensors writer and validating reader (see safetensors.h for the rules).
#include "safetensors.h"
#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>
#include "check.h"
#include "fileio.h"

using json = nlohmann::json;

static constexpr uint64_t kMaxHeaderBytes = 100000000;         // the reference's MAX_HEADER_SIZE
static constexpr uint64_t kMaxDim = uint64_t(1) << 53;
static constexpr size_t kMaxFileBytes = size_t(1) << 40;       // read_file's limit: only bites non-regular files

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
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end, nbytes;
};

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
    ENGINE_CHECK(s == "F32" || s == "I32" || !is_safetensors_dtype(s), FileError,
                 "{}: tensor '{}': unsupported dtype '{}' (this engine reads F32 and I32)", file, name, s);
    ENGINE_CHECK(s == "F32" || s == "I32", FileError, "{}: tensor '{}': unknown dtype '{}'", file, name, s);
    e.dtype = s == "F32" ? DType::F32 : DType::I32;

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
    ENGINE_CHECK(!__builtin_mul_overflow(numel, dtype_bytes(e.dtype), &e.nbytes), FileError,
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

}  // namespace

SafeTensors parse_safetensors(const std::string& bytes, const std::string& file) {
    const uint64_t size = bytes.size();
    ENGINE_CHECK(size >= 8, FileError, "{}: header too small: file has {} bytes, needs at least 8", file, size);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= uint64_t((unsigned char)bytes[size_t(i)]) << (8 * i);
    ENGINE_CHECK(n <= kMaxHeaderBytes, FileError, "{}: header too large: {} bytes (limit {})", file, n, kMaxHeaderBytes);
    uint64_t stop;
    ENGINE_CHECK(!__builtin_add_overflow(n, uint64_t(8), &stop) && stop <= size, FileError,
                 "{}: invalid header length {}: the file has only {} bytes", file, n, size);

    const json root = parse_header(file, bytes.data() + 8, size_t(n));
    SafeTensors st;
    st.source = file;
    std::vector<Entry> entries;
    for (const auto& kv : root.items()) {
        if (kv.key() != "__metadata__") { entries.push_back(parse_entry(file, kv.key(), kv.value())); continue; }
        ENGINE_CHECK(kv.value().is_object(), FileError, "{}: __metadata__ must be an object of strings, got {}", file,
                     show(kv.value()));
        for (const auto& m : kv.value().items()) {
            ENGINE_CHECK(m.value().is_string(), FileError, "{}: __metadata__ value of '{}' must be a string, got {}",
                         file, m.key(), show(m.value()));
            st.metadata[m.key()] = m.value().get<std::string>();
        }
    }

    // In offset order the tensors must tile [0, buffer) exactly. The order in the JSON text does not matter.
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    const uint64_t buffer = size - stop;
    uint64_t pos = 0;
    for (const Entry& e : entries) {
        ENGINE_CHECK(e.begin == pos && e.end >= e.begin && e.end <= buffer, FileError,
                     "{}: tensor '{}': invalid offset [{}, {}]: expected it to start at {} and end within the {}-byte "
                     "data buffer (holes, overlaps and out-of-range offsets are not allowed)",
                     file, e.name, e.begin, e.end, pos, buffer);
        ENGINE_CHECK(e.end - e.begin == e.nbytes, FileError,
                     "{}: tensor '{}': size mismatch: shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}",
                     file, e.name, e.shape.str(), dtype_name(e.dtype), e.nbytes, e.begin, e.end, e.end - e.begin);
        pos = e.end;
    }
    ENGINE_CHECK(pos == buffer, FileError,
                 "{}: data buffer not fully covered: the tensors end at byte {} of {} (trailing bytes)", file, pos, buffer);

    // Only now, with every size bounded by the file's, allocate and copy.
    const char* data = bytes.data() + stop;
    for (const Entry& e : entries) {
        Tensor t = Tensor::empty(e.shape, e.dtype);
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
