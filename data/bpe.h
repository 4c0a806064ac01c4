// data/bpe.h — GPT-2's byte-level byte-pair encoding (Radford et al. 2019, OpenAI's encoder.py).
//
// Text -> ids in three steps:
//   1. Pre-tokenize: the UTF-8 text is cut into words by one regular expression,
//          's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (contractions; a letter run, a digit run or a punctuation run, each with one optional
//      leading space; whitespace, leaving the last space of a run to the word after it).
//      PCRE2 runs it as written, with Unicode letter/number/space classes (PCRE2_UTF|PCRE2_UCP).
//      Merges never cross a word boundary.
//   2. Bytes: each word is its UTF-8 bytes; every byte value is a token of its own (ids of the
//      256 one-byte tokens), so any text encodes — nothing is ever unknown ("byte fallback").
//   3. Merge: merges.txt lists pairs of tokens in rank order; repeatedly the adjacent pair with
//      the lowest rank is replaced, everywhere in the word, by the token it makes, until no
//      adjacent pair has a rank. merge_word_plain is that loop as written in encoder.py (O(n²)
//      on a long word); merge_word does the same merges with a heap of pairs and a linked list
//      of symbols, O(n log n), so a 1 MB word without spaces takes a second, not hours.
//
// Files: vocab.json maps each token to its id, merges.txt holds one "left right" pair a line
// (after a "#version" line). The token strings are not the bytes themselves: GPT-2 shows every
// byte as a printable character (byte_to_unicode: printable Latin-1 bytes stand for themselves,
// the others for U+0100.. in order, e.g. a space is 'Ġ' U+0120, a newline 'Ċ' U+010A).
// OpenAI's names for the same two files are encoder.json and vocab.bpe.
//
// A Bpe is immutable after loading except for its cache of word -> ids (most words of a text
// repeat); Tokenizer (data/tokenizer.h) shares one Bpe between its copies.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

// GPT-2's bytes_to_unicode: the printable character standing for each byte value.
const std::array<char32_t, 256>& byte_to_unicode();
// The byte a character stands for, or -1 when it stands for none.
int unicode_to_byte(char32_t c);

// Step 1: the words of a valid UTF-8 text (the caller checks UTF-8). Concatenated, they are the text.
std::vector<std::string> gpt2_pretokenize(const std::string& text);

class Bpe {
public:
    // tokens[id]: the token in vocab.json's form; merges[rank]: "left right". Every fault is a
    // FileError starting with `vocab_name` or `merges_name` (a file name or "tokenizer metadata").
    static std::shared_ptr<const Bpe> build(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                                            const std::string& vocab_name, const std::string& merges_name);
    // vocab.json's and merges.txt's contents.
    static std::shared_ptr<const Bpe> parse(const std::string& vocab_json, const std::string& merges_txt,
                                            const std::string& vocab_name, const std::string& merges_name);
    static std::shared_ptr<const Bpe> load(const std::string& vocab_path, const std::string& merges_path);
    // A folder with vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI).
    static std::shared_ptr<const Bpe> load_folder(const std::string& dir);
    // True when the folder holds one of those two pairs of files.
    static bool folder_has_files(const std::string& dir);

    int32_t size() const { return int32_t(bytes_.size()); }
    // The id of "<|endoftext|>" in the vocabulary (50256 in GPT-2's), or -1 when it has none.
    int32_t eot_id() const { return eot_; }
    const std::string& bytes_of(int32_t id) const { return bytes_[size_t(id)]; }
    std::string token(int32_t id) const;   // the vocab.json form
    const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

    // Appends the ids of a valid UTF-8 text (steps 1-3; the caller checks UTF-8).
    void encode(const std::string& text, std::vector<int32_t>& out) const;
    // Step 3 for one word's bytes: the fast loop and the plain one (tested equal).
    void merge_word(const std::string& word, std::vector<int32_t>& out) const;
    void merge_word_plain(const std::string& word, std::vector<int32_t>& out) const;

    // The two files' contents again, for export and checkpoint metadata.
    std::string vocab_json() const;
    std::string merges_txt() const;
    std::vector<std::string> tokens() const;          // token(id) for every id
    std::vector<std::string> merge_lines() const;     // "left right" in rank order

    bool operator==(const Bpe& o) const { return bytes_ == o.bytes_ && merges_ == o.merges_; }

    Bpe() = default;   // use build / parse / load
    Bpe(const Bpe&) = delete;
    Bpe& operator=(const Bpe&) = delete;

private:
    struct Merge { int32_t rank, result; };
    const Merge* find_merge(int32_t left, int32_t right) const;

    std::vector<std::string> bytes_;                       // id -> the token's bytes
    std::array<int32_t, 256> byte_id_{};                   // byte value -> id of its one-byte token
    std::vector<std::pair<int32_t, int32_t>> merges_;      // rank -> (left id, right id)
    std::unordered_map<uint64_t, Merge> merge_of_;         // (left << 32 | right) -> rank, result
    int32_t eot_ = -1;

    // Word -> ids for words up to kCachedWordBytes, cleared when it reaches kCacheEntries.
    static constexpr size_t kCachedWordBytes = 64, kCacheEntries = size_t(1) << 18;
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};
