// data/bpe.cpp — GPT-2's byte-level BPE: the byte table, the pre-tokenizer, loading and checking
// vocab.json + merges.txt, and the merge loop (plain and heap-based).
#include "bpe.h"
#include <algorithm>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include "data/tokenizer.h"
#include "engine/check.h"
#include "engine/fileio.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace fs = std::filesystem;

// ---- the byte table

const std::array<char32_t, 256>& byte_to_unicode() {
    static const std::array<char32_t, 256> table = [] {
        std::array<char32_t, 256> t{};
        // Bytes that print as themselves in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their
        // code point; the other 68 (controls, space, DEL, NBSP, soft hyphen) take U+0100.. in order.
        const auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
        char32_t next = 0x100;
        for (int b = 0; b < 256; b++) t[size_t(b)] = printable(b) ? char32_t(b) : next++;
        return t;
    }();
    return table;
}

int unicode_to_byte(char32_t c) {
    static const std::vector<int16_t> inverse = [] {
        std::vector<int16_t> inv(0x100 + 68, -1);
        for (int b = 0; b < 256; b++) inv[byte_to_unicode()[size_t(b)]] = int16_t(b);
        return inv;
    }();
    return c < inverse.size() ? inverse[c] : -1;
}

// ---- step 1: the pre-tokenizer

namespace {

// GPT-2's pattern, with one correction for PCRE2: its \s also matches U+180E (Mongolian vowel
// separator), which Unicode took out of White_Space in 6.3 and which GPT-2's `regex` module
// (and tiktoken) treat as punctuation. So \s is written [^\S\x{180E}] (space, not U+180E),
// [^\s\p{L}\p{N}] gains U+180E, and (?!\S) becomes (?![\S\x{180E}]). With that, \s is exactly
// Unicode's White_Space: tab, LF, VT, FF, CR, space, U+0085, U+00A0, U+1680, U+2000..U+200A,
// U+2028, U+2029, U+202F, U+205F, U+3000.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?(?:[^\s\p{L}\p{N}]|\x{180E})+)"
    R"(|[^\S\x{180E}]+(?![\S\x{180E}])|[^\S\x{180E}]+)";

// The pattern compiled once (thread-safe static), JIT-compiled when PCRE2 has a JIT here.
struct Pattern {
    pcre2_code* code = nullptr;
    Pattern() {
        int err = 0;
        PCRE2_SIZE at = 0;
        code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                             &err, &at, nullptr);
        ENGINE_CHECK(code != nullptr, ValueError, "pre-tokenizer: PCRE2 cannot compile the pattern (error {})", err);
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);   // falls back to the interpreter if it fails
    }
    ~Pattern() { pcre2_code_free(code); }
};

const Pattern& pattern() {
    static const Pattern p;
    return p;
}

// Calls on_word(begin, length) for each match, left to right. Every character is matched by
// some branch (\s, \p{L}, \p{N} or their complement), so the words tile the text.
void for_each_word(const std::string& text, const std::function<void(size_t, size_t)>& on_word) {
    const Pattern& p = pattern();
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(p.code, nullptr), pcre2_match_data_free);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    for (size_t at = 0; at < text.size();) {
        // NO_UTF_CHECK: the caller checked the text, and PCRE2 would otherwise re-check the
        // whole rest of the text at every match (quadratic).
        const int rc = pcre2_match(p.code, subject, text.size(), at, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        ENGINE_CHECK(rc > 0 && ov[0] == at && ov[1] > at, ValueError,
                     "pre-tokenizer: no word at byte offset {} (PCRE2 returned {})", at, rc);
        on_word(at, ov[1] - at);
        at = ov[1];
    }
}

}  // namespace

std::vector<std::string> gpt2_pretokenize(const std::string& text) {
    std::vector<std::string> words;
    for_each_word(text, [&](size_t b, size_t n) { words.push_back(text.substr(b, n)); });
    return words;
}

// ---- loading and checking

namespace {

// A token string in vocab.json's form -> its bytes; FileError naming the token if a character
// stands for no byte.
std::string token_bytes(const std::string& token, int32_t id, const std::string& file) {
    std::string bytes;
    for (char32_t c : utf8_decode(token)) {
        const int b = unicode_to_byte(c);
        ENGINE_CHECK(b >= 0, FileError,
                     "{}: token \"{}\" (id {}) holds {} (U+{:04X}), which stands for no byte in GPT-2's byte table",
                     file, token, id, describe_char(c), unsigned(c));
        bytes += char(uint8_t(b));
    }
    return bytes;
}

void check_utf8(const std::string& text, const std::string& file) {
    const size_t bad = utf8_error_offset(text);
    ENGINE_CHECK(bad == std::string::npos, FileError, "{}: not UTF-8: invalid byte 0x{:02x} at byte offset {}", file,
                 unsigned(uint8_t(text[bad])), bad);
}

uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

}  // namespace

std::shared_ptr<const Bpe> Bpe::build(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                                      const std::string& vocab_name, const std::string& merges_name) {
    auto bpe = std::make_shared<Bpe>();
    Bpe& m = *bpe;
    ENGINE_CHECK(!tokens.empty(), FileError, "{}: the vocabulary is empty", vocab_name);
    std::unordered_map<std::string, int32_t> id_of;   // bytes -> id
    id_of.reserve(tokens.size());
    m.bytes_.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); i++) {
        ENGINE_CHECK(!tokens[i].empty(), FileError, "{}: token {} is the empty string", vocab_name, i);
        m.bytes_.push_back(token_bytes(tokens[i], int32_t(i), vocab_name));
        const auto [it, fresh] = id_of.emplace(m.bytes_.back(), int32_t(i));
        ENGINE_CHECK(fresh, FileError, "{}: token \"{}\" appears twice (ids {} and {})", vocab_name, tokens[i],
                     it->second, i);
        if (tokens[i] == "<|endoftext|>") m.eot_ = int32_t(i);
    }
    for (int b = 0; b < 256; b++) {
        const auto it = id_of.find(std::string(1, char(uint8_t(b))));
        std::string shown;
        utf8_append(shown, byte_to_unicode()[size_t(b)]);
        ENGINE_CHECK(it != id_of.end(), FileError,
                     "{}: no token for byte 0x{:02x} (\"{}\"): every byte needs one so that any text encodes",
                     vocab_name, b, shown);
        m.byte_id_[size_t(b)] = it->second;
    }
    m.merges_.reserve(merges.size());
    m.merge_of_.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); r++) {
        const std::string& line = merges[r];
        const size_t sp = line.find(' ');
        ENGINE_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
                     FileError, "{}: merge {} \"{}\" is not two tokens separated by one space", merges_name, r + 1, line);
        int32_t ids[2];
        std::string joined;
        for (int k = 0; k < 2; k++) {
            const std::string part = k == 0 ? line.substr(0, sp) : line.substr(sp + 1);
            const std::string bytes = token_bytes(part, -1, merges_name);
            const auto it = id_of.find(bytes);
            ENGINE_CHECK(it != id_of.end(), FileError, "{}: merge {} \"{}\": \"{}\" is not in the vocabulary ({})",
                         merges_name, r + 1, line, part, vocab_name);
            ids[k] = it->second;
            joined += bytes;
        }
        const auto it = id_of.find(joined);
        ENGINE_CHECK(it != id_of.end(), FileError,
                     "{}: merge {} \"{}\" makes \"{}\", which is not in the vocabulary ({})", merges_name, r + 1, line,
                     line.substr(0, sp) + line.substr(sp + 1), vocab_name);
        const auto [dup, fresh] = m.merge_of_.emplace(pair_key(ids[0], ids[1]), Merge{int32_t(r), it->second});
        ENGINE_CHECK(fresh, FileError, "{}: merge {} \"{}\" repeats merge {}", merges_name, r + 1, line,
                     dup->second.rank + 1);
        m.merges_.emplace_back(ids[0], ids[1]);
    }
    return bpe;
}

std::shared_ptr<const Bpe> Bpe::parse(const std::string& vocab_json, const std::string& merges_txt,
                                      const std::string& vocab_name, const std::string& merges_name) {
    using json = nlohmann::json;
    check_utf8(vocab_json, vocab_name);
    check_utf8(merges_txt, merges_name);
    std::string duplicate;   // JSON readers keep the last of two equal keys: we refuse them
    std::unordered_map<std::string, int> seen;
    const json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::key && depth == 1 && duplicate.empty() && seen[parsed.get<std::string>()]++)
            duplicate = parsed.get<std::string>();
        return true;
    };
    json j;
    try {
        j = json::parse(vocab_json, cb);
    } catch (const json::exception& e) {
        throw FileError(fmt::format("{}: not valid JSON: {}", vocab_name, e.what()));
    }
    ENGINE_CHECK(duplicate.empty(), FileError, "{}: token \"{}\" appears twice", vocab_name, duplicate);
    ENGINE_CHECK(j.is_object() && !j.empty(), FileError, "{}: must be a non-empty JSON object {{\"token\": id, ...}}",
                 vocab_name);
    std::vector<std::string> tokens(j.size());
    for (auto& [token, id] : j.items()) {
        ENGINE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < int64_t(j.size()),
                     FileError, "{}: token \"{}\" has id {}; ids must be the integers 0..{} (one per token)",
                     vocab_name, token, id.dump(), j.size() - 1);
        std::string& slot = tokens[size_t(id.get<int64_t>())];
        ENGINE_CHECK(slot.empty(), FileError, "{}: id {} is given to both \"{}\" and \"{}\"", vocab_name, id.dump(),
                     slot, token);
        slot = token;
    }
    std::vector<std::string> merges;
    size_t line_no = 0;
    for (size_t pos = 0; pos < merges_txt.size();) {
        size_t end = merges_txt.find('\n', pos);
        if (end == std::string::npos) end = merges_txt.size();
        std::string line = merges_txt.substr(pos, end - pos);
        pos = end + 1;
        line_no++;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if ((line_no == 1 && line.rfind("#version", 0) == 0) || line.empty()) continue;
        merges.push_back(std::move(line));
    }
    return build(std::move(tokens), merges, vocab_name, merges_name);
}

std::shared_ptr<const Bpe> Bpe::load(const std::string& vocab_path, const std::string& merges_path) {
    constexpr size_t kMaxBytes = size_t(64) << 20;   // GPT-2's files: 1.0 MB and 0.5 MB
    return parse(read_file(vocab_path, kMaxBytes), read_file(merges_path, kMaxBytes), vocab_path, merges_path);
}

namespace {
const char* const kFilePairs[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
}

bool Bpe::folder_has_files(const std::string& dir) {
    std::error_code ec;
    for (const auto& pair : kFilePairs)
        if (fs::exists(fs::path(dir) / pair[0], ec) && fs::exists(fs::path(dir) / pair[1], ec)) return true;
    return false;
}

std::shared_ptr<const Bpe> Bpe::load_folder(const std::string& dir) {
    std::error_code ec;
    for (const auto& pair : kFilePairs)
        if (fs::exists(fs::path(dir) / pair[0], ec) && fs::exists(fs::path(dir) / pair[1], ec))
            return load((fs::path(dir) / pair[0]).string(), (fs::path(dir) / pair[1]).string());
    throw FileError(fmt::format("{}: no tokenizer files: expected vocab.json + merges.txt or encoder.json + vocab.bpe",
                                dir));
}

// ---- the files again

std::string Bpe::token(int32_t id) const {
    std::string s;
    for (char b : bytes_[size_t(id)]) utf8_append(s, byte_to_unicode()[uint8_t(b)]);
    return s;
}

std::vector<std::string> Bpe::tokens() const {
    std::vector<std::string> t;
    t.reserve(bytes_.size());
    for (int32_t i = 0; i < size(); i++) t.push_back(token(i));
    return t;
}

std::vector<std::string> Bpe::merge_lines() const {
    std::vector<std::string> lines;
    lines.reserve(merges_.size());
    for (const auto& [a, b] : merges_) lines.push_back(token(a) + " " + token(b));
    return lines;
}

std::string Bpe::vocab_json() const {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (int32_t i = 0; i < size(); i++) j[token(i)] = i;
    return j.dump();
}

std::string Bpe::merges_txt() const {
    std::string s = "#version: 0.2\n";
    for (const std::string& line : merge_lines()) s += line + "\n";
    return s;
}

// ---- step 3: merges

const Bpe::Merge* Bpe::find_merge(int32_t left, int32_t right) const {
    const auto it = merge_of_.find(pair_key(left, right));
    return it == merge_of_.end() ? nullptr : &it->second;
}

// encoder.py's loop: find the adjacent pair of lowest rank, replace each of its occurrences
// (left to right, not overlapping) by the merged token, repeat until no pair has a rank.
void Bpe::merge_word_plain(const std::string& word, std::vector<int32_t>& out) const {
    std::vector<int32_t> w;
    for (char b : word) w.push_back(byte_id_[uint8_t(b)]);
    while (w.size() > 1) {
        const Merge* best = nullptr;
        size_t at = 0;
        for (size_t i = 0; i + 1 < w.size(); i++)
            if (const Merge* mg = find_merge(w[i], w[i + 1]); mg && (!best || mg->rank < best->rank)) best = mg, at = i;
        if (!best) break;
        const int32_t first = w[at], second = w[at + 1];
        std::vector<int32_t> next;
        for (size_t i = 0; i < w.size(); i++) {
            if (i + 1 < w.size() && w[i] == first && w[i + 1] == second) { next.push_back(best->result); i++; }
            else next.push_back(w[i]);
        }
        w.swap(next);
    }
    out.insert(out.end(), w.begin(), w.end());
}

// The same merges, O(n log n): symbols in a doubly linked list over the word's positions, and a
// min-heap of (rank, position of the pair's left symbol) for every adjacent pair that has a rank.
// A round pops every entry of the lowest rank r in position order — left to right, as the plain
// loop replaces them — and skips stale ones (a symbol merged away or changed since the push).
// Pairs made by the round are pushed only after it ends, so a new pair of lower rank waits for
// the round, as in the plain loop. (A round never makes a new pair of rank r: it would have to
// contain its own result.)
void Bpe::merge_word(const std::string& word, std::vector<int32_t>& out) const {
    const int32_t n = int32_t(word.size());
    if (n == 0) return;
    constexpr int32_t kGone = -1;
    std::vector<int32_t> id(static_cast<size_t>(n)), prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; i++) {
        id[size_t(i)] = byte_id_[uint8_t(word[size_t(i)])];
        prev[size_t(i)] = i - 1;
        next[size_t(i)] = i + 1;   // n = the end
    }
    const auto entry = [](int32_t rank, int32_t pos) { return uint64_t(uint32_t(rank)) << 32 | uint32_t(pos); };
    std::vector<uint64_t> heap;
    for (int32_t i = 0; i + 1 < n; i++)
        if (const Merge* mg = find_merge(id[size_t(i)], id[size_t(i + 1)])) heap.push_back(entry(mg->rank, i));
    const std::greater<uint64_t> later;   // the heap's top is the smallest (rank, position)
    std::make_heap(heap.begin(), heap.end(), later);
    std::vector<int32_t> merged;   // left positions merged in this round
    while (!heap.empty()) {
        const uint32_t rank = uint32_t(heap.front() >> 32);
        merged.clear();
        while (!heap.empty() && uint32_t(heap.front() >> 32) == rank) {
            const int32_t pos = int32_t(uint32_t(heap.front()));
            std::pop_heap(heap.begin(), heap.end(), later);
            heap.pop_back();
            const int32_t right = next[size_t(pos)];
            if (id[size_t(pos)] == kGone || right == n) continue;
            const Merge* mg = find_merge(id[size_t(pos)], id[size_t(right)]);
            if (!mg || uint32_t(mg->rank) != rank) continue;   // stale
            id[size_t(pos)] = mg->result;
            id[size_t(right)] = kGone;
            next[size_t(pos)] = next[size_t(right)];
            if (next[size_t(pos)] < n) prev[size_t(next[size_t(pos)])] = pos;
            merged.push_back(pos);
        }
        for (int32_t pos : merged) {   // the pairs each merged symbol now makes with its neighbours
            const int32_t l = prev[size_t(pos)], r = next[size_t(pos)];
            if (l >= 0)
                if (const Merge* mg = find_merge(id[size_t(l)], id[size_t(pos)])) {
                    heap.push_back(entry(mg->rank, l));
                    std::push_heap(heap.begin(), heap.end(), later);
                }
            if (r < n)
                if (const Merge* mg = find_merge(id[size_t(pos)], id[size_t(r)])) {
                    heap.push_back(entry(mg->rank, pos));
                    std::push_heap(heap.begin(), heap.end(), later);
                }
        }
    }
    for (int32_t i = 0; i < n; i = next[size_t(i)]) out.push_back(id[size_t(i)]);
}

void Bpe::encode(const std::string& text, std::vector<int32_t>& out) const {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    std::string word;
    for_each_word(text, [&](size_t begin, size_t len) {
        if (len == 1) { out.push_back(byte_id_[uint8_t(text[begin])]); return; }
        if (len > kCachedWordBytes) { merge_word(text.substr(begin, len), out); return; }
        word.assign(text, begin, len);
        auto it = cache_.find(word);
        if (it == cache_.end()) {
            if (cache_.size() >= kCacheEntries) cache_.clear();
            std::vector<int32_t> ids;
            merge_word(word, ids);
            it = cache_.emplace(word, std::move(ids)).first;
        }
        out.insert(out.end(), it->second.begin(), it->second.end());
    });
}
