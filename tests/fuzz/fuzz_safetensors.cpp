// tests/fuzz/fuzz_safetensors.cpp — libFuzzer target: arbitrary bytes into the safetensors
// parser. The property: it returns tensors or throws FileError; it never crashes, reads out of
// bounds or allocates from an unchecked header value (ASan + UBSan + -rss_limit_mb watch that).
#include <cstdint>
#include <string>
#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
    } catch (const FileError&) {
    }
    return 0;
}
