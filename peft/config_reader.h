// peft/config_reader.h — reading adapter_config.json with HF PEFT's field names and messages.
#pragma once
#include <initializer_list>
#include <set>
#include <string>
#include <vector>
#include "method.h"

// Every method reads its config through a ConfigReader, with HF PEFT's field names: a missing
// or null field keeps the default (HF writes null for "not set"). Each bad value is noted in
// HF's words, e.g.
//     `r` should be a positive integer value but the value passed is 0
// and done() throws one ValueError listing every problem: "invalid LORA config: ...; ...".
// Otherwise done() warns (engine/check.h) about the keys no one read, and loading goes on, as
// HF does with fields from a newer version. Not warned about: HF's bookkeeping keys (the list
// in config_reader.cpp) and keys set to null, false, [] or {}, which ask for nothing.
constexpr int64_t kMaxSize = int64_t(1) << 24;   // the largest size a config may ask for (no overflow)

class ConfigReader {
public:
    // ValueError unless `config` is an object; notes a "peft_type" other than `peft_type`.
    ConfigReader(const json& config, std::string peft_type);
    const json* field(const char* key) const;   // nullptr when missing or null

    // Typed fields: the value, or `def` when the field is missing, null or bad (a bad one is noted).
    int64_t integer(const char* key, int64_t def, int64_t lo, int64_t hi);   // in [lo, hi]; lo is 0 or 1
    double positive_number(const char* key, double def);   // > 0 and a finite float (what the ops use)
    double probability(const char* key, double def);       // in [0, 1), also as a float
    bool boolean(const char* key, bool def);
    std::string text(const char* key, std::string def);
    // One of `choices`; `should` describes them (default "one of A, B, C").
    std::string choice(const char* key, std::string def, const std::vector<std::string>& choices,
                       const char* should = nullptr);
    // Module names; `should` describes them (default "a [non-empty] list of module names (e.g. ...)").
    std::vector<std::string> names(const char* key, std::vector<std::string> def, bool may_be_empty,
                                   const char* should = nullptr);

    // Checks that note a problem:
    void reject(const char* key, const std::string& should);   // a present field: "`key` should be <should> but ..."
    void check(bool ok, const std::string& problem);
    void only(const char* key, const json& value, const char* why);   // "`key` = ... is not supported: <why>"
    void same_as_model(const char* key, const char* what, int64_t want);   // "`key` is .. but the model's <what> is .."
    void refuse(std::initializer_list<const char*> keys);   // HF options that would change the computation
    void done() const;   // throws if anything was noted, else warns about the unread keys
    // `fan_in_fan_out`, as HF decides it from the base layer: true on a "gpt2" base (HF's Conv1D,
    // weights stored (in, out)), where HF turns a false into true with a warning; on a "gpt" base
    // (nn.Linear layout) true is noted as a problem. Returns the value to save.
    bool fan_in_fan_out(const GPTConfig& model);

private:
    const json& j_;
    std::string peft_type_;
    std::vector<std::string> bad_;
    mutable std::set<std::string> read_;   // every key field() was asked for
};
