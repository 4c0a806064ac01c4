// tests/fuzz/fuzz_data.cpp — libFuzzer target: arbitrary bytes as a tokenizer description, as
// text to encode, and as a task file and a text corpus (parsed from memory, as the file loaders
// parse what they read). Only the project's Error types may come out.
#include <cstdint>
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
    try {
        TaskDataset task = TaskDataset::from_text(bytes, "fuzz.tsv", tok, 32);
        Rng rng(1);
        if (task.size(Split::Train) > 0) task.sample(Split::Train, 2, rng);
    } catch (const Error&) {
    }
    try {
        TextDataset text = TextDataset::from_text(bytes, "fuzz.txt");
        Rng rng(1);
        text.sample(Split::Train, 1, 4, rng);
    } catch (const Error&) {
    }
    return 0;
}
