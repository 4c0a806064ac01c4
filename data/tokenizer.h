// data/tokenizer.h — text <-> token ids: a character-level or a byte-level vocabulary.
//
// Character level (nanoGPT's shakespeare_char): the vocabulary is the sorted set of Unicode
// code points found in the training text, ids 0..V-1 in code-point order. Text is UTF-8.
// Byte level: the 256 byte values are the ids; any bytes encode, nothing is ever unknown.
//
// Not a BPE tokenizer: there are no merges, so one token = one character (or one byte).
// The vocabulary is saved with a checkpoint (serialize / deserialize) so that a model
// fine-tuned later reads text with exactly the ids it was trained on.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

// ---- UTF-8 (strict: no overlong forms, no surrogates, nothing above U+10FFFF)
// The byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t utf8_error_offset(const std::string& s);
// Code points of `s`; throws ValueError "invalid UTF-8 at byte offset N" on bad input.
std::vector<char32_t> utf8_decode(const std::string& s);
void utf8_append(std::string& out, char32_t c);
// A character for an error message: 'a', '\n', '\x07', 'é' — control characters escaped.
std::string describe_char(char32_t c);

class Tokenizer {
public:
    enum class Kind { Char, Byte };

    static Tokenizer chars_of(const std::string& text);   // character vocab of a (UTF-8) text
    static Tokenizer bytes();                              // the 256-entry byte vocab

    Kind kind() const { return kind_; }
    int32_t vocab_size() const { return kind_ == Kind::Byte ? 256 : int32_t(chars_.size()); }
    // The vocabulary's characters in id order (character level only).
    const std::vector<char32_t>& chars() const { return chars_; }

    // Throws ValueError naming the character, its code point and its position for a character
    // outside the vocabulary, and the byte offset for invalid UTF-8 (character level only).
    std::vector<int32_t> encode(const std::string& text) const;
    // Throws ValueError for an id outside 0..V-1. Byte level returns the raw bytes (which may
    // end inside a multi-byte character, e.g. when decoding a model's samples one at a time).
    std::string decode(const std::vector<int32_t>& ids) const;

    // {"kind":"char","chars":"\n !,.ab..."} or {"kind":"byte"}: for checkpoint metadata.
    std::string serialize() const;
    // Throws FileError for malformed JSON, an unknown kind, or chars that are not a sorted,
    // duplicate-free, non-empty UTF-8 string.
    static Tokenizer deserialize(const std::string& json);

    bool operator==(const Tokenizer& o) const { return kind_ == o.kind_ && chars_ == o.chars_; }
    bool operator!=(const Tokenizer& o) const { return !(*this == o); }

private:
    Tokenizer(Kind k, std::vector<char32_t> chars);
    int32_t id_of(char32_t c) const;   // -1 when not in the vocabulary

    Kind kind_ = Kind::Byte;
    std::vector<char32_t> chars_;      // sorted code points (character level); id = index
    std::vector<int32_t> ascii_ids_;   // id of each ASCII character or -1: the common case, no search
};
