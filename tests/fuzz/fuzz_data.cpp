// tests/fuzz/fuzz_data.cpp — libFuzzer target: arbitrary bytes as a tokenizer description, as
// text to encode, and as a task file. Only the project's Error types may come out.
#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <string>
#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    try {
        Tokenizer::deserialize(bytes);
    } catch (const Error&) {
    }
    const Tokenizer tok = Tokenizer::chars_of("abc 0123456789+=.\t\n:->/");
    try {
        tok.decode(tok.encode(bytes));
    } catch (const Error&) {
    }
    static const std::string path = "/tmp/peft_fuzz_task_" + std::to_string(getpid()) + ".tsv";
    if (FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(bytes.data(), 1, bytes.size(), f);
        std::fclose(f);
        try {
            TaskDataset task(path, tok, 32);
            Rng rng(1);
            if (task.size(Split::Train) > 0) task.sample(Split::Train, 2, rng);
        } catch (const Error&) {
        }
        try {
            TextDataset text(path);
            Rng rng(1);
            text.sample(Split::Train, 1, 4, rng);
        } catch (const Error&) {
        }
    }
    return 0;
}
