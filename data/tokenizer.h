// data/tokenizer.h — text <-> token ids: a character-level, byte-level or GPT-2 BPE vocabulary.
//
// Character level (nanoGPT's shakespeare_char): the vocabulary is the sorted set of Unicode
// code points found in the training text, ids 0..V-1 in code-point order. Text is UTF-8.
// Byte level: the 256 byte values are the ids; any bytes encode, nothing is ever unknown.
// BPE: GPT-2's byte-level byte-pair encoding (data/bpe.h), loaded from vocab.json + merges.txt;
// any UTF-8 text encodes, and a token may hold part of a character's bytes.
//
// The vocabulary is saved with a checkpoint (serialize / deserialize, the BPE's vocabulary and
// merges included) so that a model fine-tuned later reads text with exactly the ids it was
// trained on, and a checkpoint needs no other file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

class Bpe;

// ---- UTF-8 (strict: no overlong forms, no surrogates, nothing above U+10FFFF)
// The byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t utf8_error_offset(const std::string& s);
// Code points of `s`; throws ValueError "invalid UTF-8 at byte offset N" on bad input.
std::vector<char32_t> utf8_decode(const std::string& s);
void utf8_append(std::string& out, char32_t c);
// `bytes` with each ill-formed sequence replaced by U+FFFD (one per maximal ill-formed part, as
// Python's errors="replace" and Rust's from_utf8_lossy do): always valid UTF-8.
std::string utf8_sanitize(const std::string& bytes);
// A character for an error message: 'a', '\n', '\x07', 'é' — control characters escaped.
std::string describe_char(char32_t c);

class Tokenizer {
public:
    enum class Kind { Char, Byte, Bpe };

    static Tokenizer chars_of(const std::string& text);   // character vocab of a (UTF-8) text
    static Tokenizer bytes();                              // the 256-entry byte vocab
    // GPT-2 BPE from vocab.json + merges.txt (or encoder.json + vocab.bpe): FileError naming the
    // file and the fault (not UTF-8, not JSON, duplicate token or id, ids not 0..N-1, a merge of
    // or into a token not in the vocabulary, a byte without its one-byte token, ...).
    static Tokenizer bpe_files(const std::string& vocab_path, const std::string& merges_path);
    static Tokenizer bpe_folder(const std::string& dir);   // either pair of names in `dir`
    static Tokenizer bpe(std::shared_ptr<const Bpe> bpe);
    // The tokenizer of a tokenizer folder, a model folder holding tokenizer files or a
    // model.safetensors, or a checkpoint file (its "peft.tokenizer" metadata; only the header is read).
    static Tokenizer load(const std::string& path);

    Kind kind() const { return kind_; }
    const char* kind_name() const;   // "char", "byte", "bpe"
    int32_t vocab_size() const;
    // The vocabulary's characters in id order (character level only).
    const std::vector<char32_t>& chars() const { return chars_; }
    const Bpe* bpe_model() const { return bpe_.get(); }   // null unless BPE
    // The end-of-text id ("<|endoftext|>", 50256 for GPT-2), or -1 when the vocabulary has none.
    int32_t eot_id() const;
    // The bytes of one token (a BPE token may end inside a multi-byte character).
    std::string token_bytes(int32_t id) const;

    // Throws ValueError naming the character, its code point and its position for a character
    // outside the vocabulary, and the byte offset for invalid UTF-8 (character level and BPE).
    // BPE encodes "<|endoftext|>" in the text as its characters, like GPT-2's encoder.py.
    std::vector<int32_t> encode(const std::string& text) const;
    // Throws ValueError for an id outside 0..V-1. Byte level returns the raw bytes (which may
    // end inside a multi-byte character); BPE joins the tokens' bytes and replaces what is not
    // UTF-8 by U+FFFD (utf8_sanitize), so its output is always valid text.
    std::string decode(const std::vector<int32_t>& ids) const;
    // The joined bytes of the tokens, unchanged, for every kind.
    std::string decode_bytes(const std::vector<int32_t>& ids) const;

    // ValueError unless every id fits an embedding of `rows` rows (vocab_size <= rows; a padded
    // embedding, e.g. 50304 rows for 50257 tokens, is fine). `what` names the model in the message.
    void check_fits(int64_t rows, const std::string& what) const;

    // {"kind":"char","chars":"\n !,.ab..."}, {"kind":"byte"} or
    // {"kind":"bpe","vocab":[token of id 0, ...],"merges":["a b", ...]}: for checkpoint metadata.
    std::string serialize() const;
    // Throws FileError for malformed JSON, an unknown kind, chars that are not a sorted,
    // duplicate-free, non-empty UTF-8 string, or a BPE vocabulary/merges that do not load.
    static Tokenizer deserialize(const std::string& json);

    bool operator==(const Tokenizer& o) const;
    bool operator!=(const Tokenizer& o) const { return !(*this == o); }

private:
    Tokenizer(Kind k, std::vector<char32_t> chars);
    int32_t id_of(char32_t c) const;   // -1 when not in the vocabulary
    void check_id(int32_t id, size_t position) const;

    Kind kind_ = Kind::Byte;
    std::vector<char32_t> chars_;      // sorted code points (character level); id = index
    std::vector<int32_t> ascii_ids_;   // id of each ASCII character or -1: the common case, no search
    std::shared_ptr<const Bpe> bpe_;   // BPE only; shared by copies (it is large and immutable)
};

// Decoding a model's output one token at a time (generation): put() returns the text that is
// complete so far and holds back the bytes of a character the next token may finish; finish()
// returns the rest, an incomplete tail replaced by U+FFFD. What it prints is always valid UTF-8,
// and the concatenation of everything returned equals utf8_sanitize(decode_bytes(all ids)).
class TextStream {
public:
    explicit TextStream(const Tokenizer& tok) : tok_(tok) {}
    std::string put(int32_t id);
    std::string finish();

private:
    const Tokenizer& tok_;
    std::string pending_;   // bytes not yet returned: at most the start of one character
};
