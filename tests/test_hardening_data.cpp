// tests/test_hardening_data.cpp — bad datasets and configs, as docs/FAILURES.md table C
// lists them: missing, empty, binary, non-UTF-8 and too-short datasets, characters outside the
// vocabulary, and invalid model and training configs.
// Every test asserts the error class and a fragment of the message, which must name the file,
// tensor, field or value at fault; "never a crash" means any other exception fails.
#include <cmath>
#include <filesystem>
#include "hardening_helpers.h"
#include "data/dataset.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

TEST_SUITE("hardening") {

// ---- C: datasets

TEST_CASE("hardening: a missing dataset, or a folder given as one, is a FileError naming the path") {
    TempDir s;
    CHECK_THROWS_WITH_AS(TextDataset(s / "none.txt"), doctest::Contains(("dataset '" + s / "none.txt" + "' not found").c_str()),
                         FileError);
    CHECK_THROWS_WITH_AS(TextDataset(s.path), doctest::Contains("is a directory, not a text file"), FileError);
}

TEST_CASE("hardening: an empty dataset is a FileError saying it is empty") {
    TempDir s;
    write_bytes(s / "e.txt", "");
    CHECK_THROWS_WITH_AS(TextDataset(s / "e.txt"), doctest::Contains(("dataset '" + s / "e.txt" + "' is empty").c_str()),
                         FileError);
}

TEST_CASE("hardening: a binary dataset is a FileError giving the offset of the first NUL byte") {
    TempDir s;
    write_bytes(s / "b.bin", std::string("PK\x03\x04\x00\x01", 6));
    CHECK_THROWS_WITH_AS(TextDataset(s / "b.bin"), doctest::Contains("looks binary: NUL byte at offset 4"), FileError);
}

TEST_CASE("hardening: a dataset that is not UTF-8 is a FileError giving the offset and the byte") {
    TempDir s;
    write_bytes(s / "l1.txt", "caf\xe9 au lait");   // Latin-1
    CHECK_THROWS_WITH_AS(TextDataset(s / "l1.txt"),
                         doctest::Contains("is not UTF-8 text: invalid byte sequence at offset 3 (starting with 0xe9)"), FileError);
    Tokenizer tok = Tokenizer::chars_of("abc");
    CHECK_THROWS_WITH_AS(TaskDataset(s / "l1.txt", tok), doctest::Contains("not UTF-8"), FileError);
}

TEST_CASE("hardening: a dataset shorter than one block is a ValueError stating both numbers") {
    TempDir s;
    write_bytes(s / "short.txt", "abcdefghij");   // 10 tokens: 9 train, 1 val
    TextDataset ds(s / "short.txt");
    Rng rng(1);
    CHECK_THROWS_WITH_AS(ds.sample(Split::Train, 2, 12, rng),
                         doctest::Contains("the train split has 9 tokens; need at least block_size+1 = 13"), ValueError);
    GPTConfig c = tiny_config(ds.tokenizer().vocab_size());
    c.block_size = 16;
    GPT m(c, rng);
    TrainConfig tc;
    tc.steps = 1;
    tc.batch = 1;
    Trainer t(m, m.params, TrainData{&ds, nullptr}, tc);   // block 16, from the model
    CHECK_THROWS_WITH_AS(t.train_step(), doctest::Contains("the train split has 9 tokens; need at least block_size+1 = 17"),
                         ValueError);
}

TEST_CASE("hardening: an unknown character at generation time is a ValueError naming it, never an out-of-range id") {
    const Tokenizer tok = Tokenizer::chars_of("abc\n");
    CHECK_THROWS_WITH_AS(tok.encode("ab\xc3\xa9"), doctest::Contains("character '\xc3\xa9' (U+00E9) at position 2 (line 1, column 3)"),
                         ValueError);
    CHECK_THROWS_WITH_AS(tok.encode("a\x07"), doctest::Contains("(U+0007) at position 1"), ValueError);
    Rng rng(2);
    GPT m(tiny_config(tok.vocab_size()), rng);
    CHECK_THROWS_WITH_AS(m.generate({0, 1, 4}, 2, 0.f, 0, rng),
                         doctest::Contains("embedding: id 4 at position [0, 2] of ids [1, 3] is outside the vocabulary [0, 4)"),
                         ValueError);
    CHECK_THROWS_WITH_AS(tok.decode({1, 9}), doctest::Contains("id 9 at position 1 is outside the vocabulary 0..3"), ValueError);
}

TEST_CASE("hardening: fine-tuning text with a character outside the base vocabulary is refused naming the file") {
    TempDir s;
    write_bytes(s / "ft.txt", "abc abc\nab!");
    CHECK_THROWS_WITH_AS(TextDataset(s / "ft.txt", Tokenizer::chars_of("abc \n")),
                         doctest::Contains("character '!' (U+0021) at position 10 (line 2, column 3)"), ValueError);
    CHECK_THROWS_WITH_AS(TextDataset(s / "ft.txt", Tokenizer::chars_of("abc \n")), doctest::Contains("ft.txt"), ValueError);
}

// ---- C6: configs, through the library's validate()

TEST_CASE("hardening: an invalid model config reports every problem together") {
    GPTConfig c;
    c.n_embd = 30;
    c.n_head = 4;
    c.block_size = 0;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("n_embd 30 is not divisible by n_head 4"), ValueError);
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("block_size must be >= 1, got 0"), ValueError);
    c = GPTConfig();
    c.n_layer = 0;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("n_layer must be >= 1, got 0"), ValueError);
    Rng rng(3);
    CHECK_THROWS_WITH_AS(GPT(c, rng), doctest::Contains("invalid model config"), ValueError);   // before allocating
}

TEST_CASE("hardening: an invalid training config reports batch 0, lr nan or <= 0 and negative steps together") {
    TrainConfig t;
    t.batch = 0;
    t.lr = NAN;
    t.steps = -5;
    for (const char* what : {"--batch must be >= 1, got 0", "--lr must be a finite number > 0, got nan",
                             "--steps must be >= 0, got -5"})
        CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains(what), ValueError);
    for (float lr : {0.f, -1e-3f, INFINITY}) {
        TrainConfig u;
        u.lr = lr;
        CAPTURE(lr);
        CHECK_THROWS_WITH_AS(u.validate(), doctest::Contains("--lr must be a finite number > 0"), ValueError);
    }
}

}  // TEST_SUITE
