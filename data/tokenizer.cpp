// data/tokenizer.cpp — strict UTF-8, the character, byte and BPE vocabularies, and their JSON form.
#include "tokenizer.h"
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/bpe.h"
#include "engine/check.h"

namespace fs = std::filesystem;

// ---- UTF-8

// Decodes the character starting at s[i]; on success sets c and advances i. Follows the
// well-formed byte sequences of the Unicode standard (table 3-7): the ranges of the second
// byte exclude overlong forms (E0 80.., F0 80..), surrogates (ED A0..) and > U+10FFFF (F4 90..).
static bool decode_at(const std::string& s, size_t& i, char32_t& c) {
    const auto byte = [&](size_t k) { return k < s.size() ? unsigned(uint8_t(s[k])) : 0u; };   // 0 past the end
    const unsigned b0 = byte(i);
    if (b0 < 0x80) { c = b0; i += 1; return true; }
    int n;             // continuation bytes
    unsigned lo = 0x80, hi = 0xBF;   // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) { n = 1; c = b0 & 0x1F; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { n = 2; c = b0 & 0x0F; if (b0 == 0xE0) lo = 0xA0; if (b0 == 0xED) hi = 0x9F; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { n = 3; c = b0 & 0x07; if (b0 == 0xF0) lo = 0x90; if (b0 == 0xF4) hi = 0x8F; }
    else return false;
    for (int k = 1; k <= n; k++) {
        const unsigned b = byte(i + k);
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return false;
        c = (c << 6) | (b & 0x3F);
    }
    i += size_t(n) + 1;
    return true;
}

size_t utf8_error_offset(const std::string& s) {
    char32_t c;
    for (size_t i = 0; i < s.size();)
        if (!decode_at(s, i, c)) return i;
    return std::string::npos;
}

// The character at s[i], advancing i; ValueError with the byte offset on invalid UTF-8.
static char32_t next_char(const std::string& s, size_t& i) {
    char32_t c = 0;
    const size_t at = i;
    ENGINE_CHECK(decode_at(s, i, c), ValueError, "invalid UTF-8 at byte offset {} (byte 0x{:02x})", at,
                 unsigned(uint8_t(s[at])));
    return c;
}

std::vector<char32_t> utf8_decode(const std::string& s) {
    std::vector<char32_t> out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) out.push_back(next_char(s, i));
    return out;
}

void utf8_append(std::string& out, char32_t c) {
    if (c < 0x80) out += char(c);
    else if (c < 0x800) { out += char(0xC0 | (c >> 6)); out += char(0x80 | (c & 0x3F)); }
    else if (c < 0x10000) {
        out += char(0xE0 | (c >> 12)); out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F));
    } else {
        out += char(0xF0 | (c >> 18)); out += char(0x80 | ((c >> 12) & 0x3F));
        out += char(0x80 | ((c >> 6) & 0x3F)); out += char(0x80 | (c & 0x3F));
    }
}

// What starts at s[i]: a well-formed character of n bytes (returns n), the maximal ill-formed
// part of n bytes, a prefix of no well-formed character (returns -n), or the valid start of a
// character that `s` ends inside (returns 0: more bytes may complete it).
static int scan_char(const std::string& s, size_t i) {
    const unsigned b0 = uint8_t(s[i]);
    if (b0 < 0x80) return 1;
    int n;
    unsigned lo = 0x80, hi = 0xBF;   // same ranges as decode_at
    if (b0 >= 0xC2 && b0 <= 0xDF) n = 1;
    else if (b0 >= 0xE0 && b0 <= 0xEF) { n = 2; if (b0 == 0xE0) lo = 0xA0; if (b0 == 0xED) hi = 0x9F; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { n = 3; if (b0 == 0xF0) lo = 0x90; if (b0 == 0xF4) hi = 0x8F; }
    else return -1;
    for (int k = 1; k <= n; k++) {
        if (i + size_t(k) >= s.size()) return 0;
        const unsigned b = uint8_t(s[i + size_t(k)]);
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -k;
    }
    return n + 1;
}

static const char kReplacement[] = "\xEF\xBF\xBD";   // U+FFFD

// Appends the well-formed text of s[0..] to out, ill-formed parts as U+FFFD; returns where an
// incomplete last character starts (s.size() when there is none).
static size_t append_sanitized(const std::string& s, std::string& out) {
    for (size_t i = 0; i < s.size();) {
        const int r = scan_char(s, i);
        if (r == 0) return i;
        if (r > 0) out.append(s, i, size_t(r));
        else out += kReplacement;
        i += size_t(r > 0 ? r : -r);
    }
    return s.size();
}

std::string utf8_sanitize(const std::string& bytes) {
    std::string out;
    out.reserve(bytes.size());
    if (append_sanitized(bytes, out) < bytes.size()) out += kReplacement;
    return out;
}

std::string describe_char(char32_t c) {
    if (c == '\n') return "'\\n'";
    if (c == '\t') return "'\\t'";
    if (c == '\r') return "'\\r'";
    if (c < 0x20 || c == 0x7F) return fmt::format("'\\x{:02x}'", unsigned(c));
    if (c >= 0x80 && c <= 0x9F) return fmt::format("'\\u{:04x}'", unsigned(c));   // C1 controls
    std::string s = "'";
    utf8_append(s, c);
    return s + "'";
}

// ---- the vocabularies

Tokenizer::Tokenizer(Kind k, std::vector<char32_t> chars) : kind_(k), chars_(std::move(chars)), ascii_ids_(128, -1) {
    for (size_t i = 0; i < chars_.size() && chars_[i] < 128; i++) ascii_ids_[chars_[i]] = int32_t(i);
}

Tokenizer Tokenizer::chars_of(const std::string& text) {
    ENGINE_CHECK(!text.empty(), ValueError, "tokenizer: cannot build a character vocabulary from empty text");
    // One bit per code point up to the highest seen: linear time, and ASCII text allocates and
    // scans 128 bits, not 1.1M (that memset was most of the data fuzzer's time).
    std::vector<bool> seen;
    for (size_t i = 0; i < text.size();) {
        const char32_t c = next_char(text, i);
        if (c >= seen.size()) seen.resize(c + 1);
        seen[c] = true;
    }
    std::vector<char32_t> cs;
    for (char32_t c = 0; c < seen.size(); c++)
        if (seen[c]) cs.push_back(c);
    return Tokenizer(Kind::Char, std::move(cs));
}

Tokenizer Tokenizer::bytes() { return Tokenizer(Kind::Byte, {}); }

Tokenizer Tokenizer::bpe(std::shared_ptr<const Bpe> model) {
    ENGINE_CHECK(model != nullptr, ValueError, "tokenizer: no BPE model given");
    Tokenizer t(Kind::Bpe, {});
    t.bpe_ = std::move(model);
    return t;
}

Tokenizer Tokenizer::bpe_files(const std::string& vocab_path, const std::string& merges_path) {
    return bpe(Bpe::load(vocab_path, merges_path));
}

Tokenizer Tokenizer::bpe_folder(const std::string& dir) { return bpe(Bpe::load_folder(dir)); }

const char* Tokenizer::kind_name() const {
    return kind_ == Kind::Char ? "char" : kind_ == Kind::Byte ? "byte" : "bpe";
}

int32_t Tokenizer::vocab_size() const {
    return kind_ == Kind::Byte ? 256 : kind_ == Kind::Bpe ? bpe_->size() : int32_t(chars_.size());
}

int32_t Tokenizer::eot_id() const { return kind_ == Kind::Bpe ? bpe_->eot_id() : -1; }

bool Tokenizer::operator==(const Tokenizer& o) const {
    if (kind_ != o.kind_ || chars_ != o.chars_) return false;
    return kind_ != Kind::Bpe || bpe_ == o.bpe_ || *bpe_ == *o.bpe_;
}

void Tokenizer::check_fits(int64_t rows, const std::string& what) const {
    ENGINE_CHECK(vocab_size() <= rows, ValueError,
                 "the {} tokenizer has {} tokens but {} has an embedding of only {} rows (vocab_size)", kind_name(),
                 vocab_size(), what, rows);
}

int32_t Tokenizer::id_of(char32_t c) const {
    if (c < 128) return ascii_ids_[c];
    auto it = std::lower_bound(chars_.begin(), chars_.end(), c);
    return it != chars_.end() && *it == c ? int32_t(it - chars_.begin()) : -1;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
    std::vector<int32_t> ids;
    if (kind_ == Kind::Bpe) {
        const size_t bad = utf8_error_offset(text);
        ENGINE_CHECK(bad == std::string::npos, ValueError, "tokenizer: invalid UTF-8 at byte offset {} (byte 0x{:02x})",
                     bad, unsigned(uint8_t(text[bad])));
        ids.reserve(text.size() / 3);
        bpe_->encode(text, ids);
        return ids;
    }
    ids.reserve(text.size());
    if (kind_ == Kind::Byte) {
        for (char b : text) ids.push_back(int32_t(uint8_t(b)));
        return ids;
    }
    int64_t line = 1, col = 1;
    for (size_t i = 0; i < text.size();) {
        const char32_t c = next_char(text, i);
        const int32_t id = id_of(c);
        ENGINE_CHECK(id >= 0, ValueError,
                     "tokenizer: character {} (U+{:04X}) at position {} (line {}, column {}) is not in the "
                     "vocabulary of {} characters",
                     describe_char(c), unsigned(c), ids.size(), line, col, chars_.size());
        ids.push_back(id);
        if (c == '\n') { line++; col = 1; } else col++;
    }
    return ids;
}

void Tokenizer::check_id(int32_t id, size_t position) const {
    ENGINE_CHECK(id >= 0 && id < vocab_size(), ValueError,
                 "tokenizer: id {} at position {} is outside the vocabulary 0..{}", id, position, vocab_size() - 1);
}

std::string Tokenizer::token_bytes(int32_t id) const {
    check_id(id, 0);
    if (kind_ == Kind::Bpe) return bpe_->bytes_of(id);
    if (kind_ == Kind::Byte) return std::string(1, char(uint8_t(id)));
    std::string s;
    utf8_append(s, chars_[size_t(id)]);
    return s;
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids) const {
    std::string out;
    out.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); i++) {
        check_id(ids[i], i);
        if (kind_ == Kind::Byte) out += char(uint8_t(ids[i]));
        else if (kind_ == Kind::Bpe) out += bpe_->bytes_of(ids[i]);
        else utf8_append(out, chars_[size_t(ids[i])]);
    }
    return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    return kind_ == Kind::Bpe ? utf8_sanitize(decode_bytes(ids)) : decode_bytes(ids);
}

std::string TextStream::put(int32_t id) {
    pending_ += tok_.token_bytes(id);
    std::string out;
    pending_.erase(0, append_sanitized(pending_, out));
    return out;
}

std::string TextStream::finish() {
    std::string out = utf8_sanitize(pending_);
    pending_.clear();
    return out;
}

// ---- checkpoint metadata

std::string Tokenizer::serialize() const {
    nlohmann::json j;
    j["kind"] = kind_name();
    if (kind_ == Kind::Bpe) {
        j["vocab"] = bpe_->tokens();
        j["merges"] = bpe_->merge_lines();
    }
    if (kind_ == Kind::Char) {
        std::string s;
        for (char32_t c : chars_) utf8_append(s, c);
        j["chars"] = s;
    }
    return j.dump();
}

Tokenizer Tokenizer::deserialize(const std::string& text) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw FileError(fmt::format("tokenizer metadata is not valid JSON: {}", e.what()));
    }
    ENGINE_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(), FileError,
                 "tokenizer metadata must be a JSON object with a string \"kind\", got {}", text.substr(0, 80));
    const std::string kind = j["kind"].get<std::string>();
    for (auto& [key, value] : j.items())
        ENGINE_CHECK(key == "kind" || (key == "chars" && kind == "char") ||
                         ((key == "vocab" || key == "merges") && kind == "bpe"),
                     FileError, "tokenizer metadata: unexpected key \"{}\" for kind \"{}\"", key, kind);
    if (kind == "byte") return bytes();
    if (kind == "bpe") {
        const auto strings = [&](const char* key) {
            ENGINE_CHECK(j.contains(key) && j[key].is_array(), FileError,
                         "tokenizer metadata: kind \"bpe\" needs an array \"{}\"", key);
            std::vector<std::string> v;
            for (const auto& e : j[key]) {
                ENGINE_CHECK(e.is_string(), FileError, "tokenizer metadata: \"{}\" holds {}, not a string", key,
                             e.dump().substr(0, 40));
                v.push_back(e.get<std::string>());
            }
            return v;
        };
        std::vector<std::string> vocab = strings("vocab");
        return bpe(Bpe::build(std::move(vocab), strings("merges"), "tokenizer metadata \"vocab\"",
                              "tokenizer metadata \"merges\""));
    }
    ENGINE_CHECK(kind == "char", FileError,
                 "tokenizer metadata: unknown kind \"{}\" (expected \"char\", \"byte\" or \"bpe\")", kind);
    ENGINE_CHECK(j.contains("chars") && j["chars"].is_string(), FileError,
                 "tokenizer metadata: kind \"char\" needs a string \"chars\"");
    std::vector<char32_t> cs;
    try {
        cs = utf8_decode(j["chars"].get<std::string>());
    } catch (const ValueError& e) {
        throw FileError(fmt::format("tokenizer metadata: \"chars\": {}", e.what()));
    }
    ENGINE_CHECK(!cs.empty(), FileError, "tokenizer metadata: \"chars\" is empty");
    for (size_t i = 1; i < cs.size(); i++)
        ENGINE_CHECK(cs[i - 1] < cs[i], FileError,
                     "tokenizer metadata: \"chars\" must be sorted without duplicates; {} (U+{:04X}) at index {} "
                     "follows {} (U+{:04X})",
                     describe_char(cs[i]), unsigned(cs[i]), i, describe_char(cs[i - 1]), unsigned(cs[i - 1]));
    return Tokenizer(Kind::Char, std::move(cs));
}

// ---- finding a tokenizer

// The "peft.tokenizer" metadata of a safetensors file, reading only its header; "" when absent.
static std::string tokenizer_metadata(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    ENGINE_CHECK(f.is_open(), FileError, "cannot open '{}': {}", path, std::strerror(errno));
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    ENGINE_CHECK(!ec, FileError, "cannot read '{}': {}", path, ec.message());
    unsigned char len[8] = {};
    f.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | len[k];
    ENGINE_CHECK(f.gcount() == 8 && n <= 100000000 && n <= size - 8, FileError,
                 "{}: not a safetensors file (header size {} in a file of {} bytes)", path, n, size);
    std::string header(size_t(n), '\0');
    f.read(&header[0], std::streamsize(n));
    ENGINE_CHECK(f.gcount() == std::streamsize(n), FileError, "cannot read the header of '{}'", path);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception& e) {
        throw FileError(fmt::format("{}: header is not valid JSON: {}", path, e.what()));
    }
    if (!j.is_object() || !j.contains("__metadata__") || !j["__metadata__"].is_object()) return "";
    const auto& meta = j["__metadata__"];
    return meta.contains("peft.tokenizer") && meta["peft.tokenizer"].is_string() ? meta["peft.tokenizer"].get<std::string>()
                                                                                 : "";
}

Tokenizer Tokenizer::load(const std::string& path) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    ENGINE_CHECK(fs::exists(st), FileError, "tokenizer '{}' not found", path);
    if (fs::is_directory(st)) {
        if (Bpe::folder_has_files(path)) return bpe_folder(path);
        const fs::path model = fs::path(path) / "model.safetensors";
        ENGINE_CHECK(fs::is_regular_file(model, ec), FileError,
                     "{}: no tokenizer here: expected vocab.json + merges.txt, encoder.json + vocab.bpe, or a "
                     "model.safetensors checkpoint",
                     path);
        return load(model.string());
    }
    ENGINE_CHECK(fs::is_regular_file(st), FileError, "tokenizer '{}' is not a regular file", path);
    const std::string meta = tokenizer_metadata(path);
    if (!meta.empty()) {
        try {
            return deserialize(meta);
        } catch (const FileError& e) {
            throw FileError(fmt::format("{}: {}", path, e.what()));
        }
    }
    const std::string dir = fs::path(path).parent_path().string();
    ENGINE_CHECK(Bpe::folder_has_files(dir.empty() ? "." : dir), FileError,
                 "{}: no \"peft.tokenizer\" in its metadata and no tokenizer files beside it", path);
    return bpe_folder(dir.empty() ? "." : dir);
}
