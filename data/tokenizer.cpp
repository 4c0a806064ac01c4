// data/tokenizer.cpp — strict UTF-8, the character and byte vocabularies, and their JSON form.
#include "tokenizer.h"
#include <algorithm>
#include <nlohmann/json.hpp>
#include "engine/check.h"

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

int32_t Tokenizer::id_of(char32_t c) const {
    if (c < 128) return ascii_ids_[c];
    auto it = std::lower_bound(chars_.begin(), chars_.end(), c);
    return it != chars_.end() && *it == c ? int32_t(it - chars_.begin()) : -1;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
    std::vector<int32_t> ids;
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

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    std::string out;
    out.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); i++) {
        ENGINE_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), ValueError,
                     "tokenizer: id {} at position {} is outside the vocabulary 0..{}", ids[i], i, vocab_size() - 1);
        if (kind_ == Kind::Byte) out += char(uint8_t(ids[i]));
        else utf8_append(out, chars_[size_t(ids[i])]);
    }
    return out;
}

// ---- checkpoint metadata

std::string Tokenizer::serialize() const {
    nlohmann::json j;
    j["kind"] = kind_ == Kind::Char ? "char" : "byte";
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
        ENGINE_CHECK(key == "kind" || (key == "chars" && kind == "char"), FileError,
                     "tokenizer metadata: unexpected key \"{}\" for kind \"{}\"", key, kind);
    if (kind == "byte") return bytes();
    ENGINE_CHECK(kind == "char", FileError, "tokenizer metadata: unknown kind \"{}\" (expected \"char\" or \"byte\")",
                 kind);
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
