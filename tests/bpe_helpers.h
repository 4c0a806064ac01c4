// tests/bpe_helpers.h — a small GPT-2-style BPE vocabulary the tests build themselves: the 256
// one-byte tokens (id = byte value), the results of a few merges in rank order, then
// "<|endoftext|>". The merges make " the", " hello" and " world" one token each; most other
// text falls back to bytes.
#pragma once
#include <fstream>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "data/bpe.h"
#include "data/tokenizer.h"

struct SmallBpe {
    std::vector<std::string> tokens;   // vocab.json form, index = id
    std::vector<std::string> merges;   // "left right", index = rank
    int32_t id(const std::string& token) const {
        for (size_t i = 0; i < tokens.size(); i++)
            if (tokens[i] == token) return int32_t(i);
        return -1;
    }
};

inline SmallBpe small_bpe() {
    SmallBpe s;
    for (int b = 0; b < 256; b++) {
        std::string t;
        utf8_append(t, byte_to_unicode()[size_t(b)]);
        s.tokens.push_back(t);
    }
    // "Ġ" is the space byte, "Ċ" the newline; "Ã" "©" are the two bytes of 'é' (C3 A9).
    s.merges = {"Ġ t", "Ġ h", "h e", "Ġt he", "l l", "e ll", "ell o", "Ġh ello", "o r", "Ġ w", "Ġw or",
                "l d", "Ġwor ld", "1 2", "' s", "Ã ©", "Ċ Ċ", "Ġ Ġ"};
    for (const std::string& m : s.merges) {
        const size_t sp = m.find(' ');
        s.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    }
    s.tokens.push_back("<|endoftext|>");
    return s;
}

inline std::string small_vocab_json(const SmallBpe& s) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (size_t i = 0; i < s.tokens.size(); i++) j[s.tokens[i]] = i;
    return j.dump();
}

inline std::string small_merges_txt(const SmallBpe& s) {
    std::string t = "#version: 0.2\n";
    for (const std::string& m : s.merges) t += m + "\n";
    return t;
}

// Writes vocab.json + merges.txt (or OpenAI's encoder.json + vocab.bpe) into `dir`.
inline void write_small_bpe(const std::string& dir, bool openai_names = false, const SmallBpe& s = small_bpe()) {
    std::ofstream(dir + (openai_names ? "/encoder.json" : "/vocab.json"), std::ios::binary) << small_vocab_json(s);
    std::ofstream(dir + (openai_names ? "/vocab.bpe" : "/merges.txt"), std::ios::binary) << small_merges_txt(s);
}
