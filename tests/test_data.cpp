// tests/test_data.cpp — tokenizers, the text and task datasets, bad input files, the shipped data.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>
#include "helpers.h"
#include "data/dataset.h"
#include "data/generate.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

TEST_SUITE("data") {

// A scratch folder, removed at the end of the test.
struct TempDir {
    fs::path dir = fs::temp_directory_path() / ("peft_test_data_" + std::to_string(getpid()));
    TempDir() { fs::create_directories(dir); }
    ~TempDir() { std::error_code ec; fs::remove_all(dir, ec); }
    std::string write(const std::string& name, const std::string& bytes) const {
        std::ofstream(dir / name, std::ios::binary) << bytes;
        return (dir / name).string();
    }
};

static std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

static std::vector<int32_t> row(const Tensor& t, int64_t r) {
    const int64_t T = t.size(1);
    return std::vector<int32_t>(t.idata() + r * T, t.idata() + (r + 1) * T);
}

// ---- tokenizer

TEST_CASE("data: the char tokenizer round-trips multi-byte UTF-8 with ids in code-point order") {
    const std::string text = "héllo wörld, 日本 🙂!\n";
    Tokenizer tok = Tokenizer::chars_of(text);
    CHECK(tok.kind() == Tokenizer::Kind::Char);
    CHECK(tok.vocab_size() == 15);   // \n space ! , d h l o r w é ö 日 本 🙂
    for (size_t i = 1; i < tok.chars().size(); i++) CHECK(tok.chars()[i - 1] < tok.chars()[i]);
    const std::vector<int32_t> ids = tok.encode(text);
    CHECK(ids.size() == 19);   // one id per character, not per byte
    CHECK(ids[0] == 5);        // 'h' (after \n, space, !, ',', d)
    CHECK(tok.decode(ids) == text);
}

TEST_CASE("data: the byte tokenizer round-trips every byte value") {
    std::string all;
    for (int b = 0; b < 256; b++) all += char(b);
    Tokenizer tok = Tokenizer::bytes();
    CHECK(tok.vocab_size() == 256);
    const std::vector<int32_t> ids = tok.encode(all);
    CHECK(ids.size() == 256);
    CHECK(ids[255] == 255);
    CHECK(tok.decode(ids) == all);
    CHECK(tok.decode(tok.encode("日本")) == "日本");
}

TEST_CASE("data: an unknown character is named with its code point, position and line") {
    Tokenizer tok = Tokenizer::chars_of("abc\n");
    CHECK_THROWS_WITH_AS(tok.encode("ab\ncé"),
                         doctest::Contains("character 'é' (U+00E9) at position 4 (line 2, column 2)"), ValueError);
    CHECK_THROWS_WITH_AS(tok.encode("a\x07"), doctest::Contains("'\\x07' (U+0007) at position 1"), ValueError);
    CHECK_THROWS_WITH_AS(tok.encode("a\tb"), doctest::Contains("'\\t' (U+0009)"), ValueError);
}

TEST_CASE("data: invalid UTF-8 is rejected with its byte offset") {
    CHECK_THROWS_WITH_AS(Tokenizer::chars_of("ab\xff"), doctest::Contains("byte offset 2"), ValueError);
    Tokenizer tok = Tokenizer::chars_of("abc");
    CHECK_THROWS_WITH_AS(tok.encode("abc\xc3"), doctest::Contains("byte offset 3"), ValueError);   // truncated
    // overlong '/', a surrogate, above U+10FFFF, a lone continuation byte
    for (const char* bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"})
        CHECK(utf8_error_offset(std::string("x") + bad) == 1);
    CHECK(utf8_error_offset("x\xf0\x9f\x99\x82\xe2\x82\xac") == std::string::npos);   // 🙂 €
}

TEST_CASE("data: decoding an id outside the vocabulary is a ValueError") {
    Tokenizer tok = Tokenizer::chars_of("abc");
    CHECK_THROWS_WITH_AS(tok.decode({0, 3}), doctest::Contains("id 3 at position 1"), ValueError);
    CHECK_THROWS_AS(tok.decode({-1}), ValueError);
    CHECK_THROWS_AS(Tokenizer::bytes().decode({256}), ValueError);
}

TEST_CASE("data: a tokenizer serializes to JSON and back, and malformed metadata is a FileError") {
    Tokenizer tok = Tokenizer::chars_of("tab\there \"quoted\" \\ é\n");
    CHECK(Tokenizer::deserialize(tok.serialize()) == tok);
    CHECK(Tokenizer::deserialize(Tokenizer::bytes().serialize()) == Tokenizer::bytes());
    CHECK(Tokenizer::deserialize(R"({"kind":"char","chars":"ab"})").vocab_size() == 2);
    CHECK_THROWS_WITH_AS(Tokenizer::deserialize("not json"), doctest::Contains("not valid JSON"), FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize("[1, 2]"), FileError);
    CHECK_THROWS_WITH_AS(Tokenizer::deserialize(R"({"kind":"wordpiece"})"), doctest::Contains("unknown kind"), FileError);
    CHECK_THROWS_WITH_AS(Tokenizer::deserialize(R"({"kind":"bpe"})"), doctest::Contains("needs an array \"vocab\""),
                         FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize(R"({"kind":"char"})"), FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize(R"({"kind":"char","chars":""})"), FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize(R"({"kind":"char","chars":7})"), FileError);
    CHECK_THROWS_WITH_AS(Tokenizer::deserialize(R"({"kind":"char","chars":"ba"})"), doctest::Contains("sorted"),
                         FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize(R"({"kind":"char","chars":"aa"})"), FileError);
    CHECK_THROWS_AS(Tokenizer::deserialize(R"({"kind":"byte","chars":"ab"})"), FileError);
}

// ---- TextDataset

TEST_CASE("data: the text split is the last 10% and batches are windows with targets shifted by one") {
    TempDir tmp;
    Rng gen(5);   // random text: every 16-character window occurs once, so a row can be located
    std::string text;
    for (int i = 0; i < 3000; i++) text += "abcdefgh \n"[gen.below(10)];
    const std::string path = tmp.write("text.txt", text);
    TextDataset ds(path);
    const std::vector<int32_t> all = ds.tokenizer().encode(text);
    const size_t n = all.size(), n_val = n / 10;
    REQUIRE(ds.size(Split::Val) == int64_t(n_val));
    CHECK(ds.size(Split::Train) == int64_t(n - n_val));
    CHECK(ds.tokens(Split::Val) == std::vector<int32_t>(all.end() - int64_t(n_val), all.end()));

    const int64_t B = 4, T = 16;
    Rng rng(7);
    Batch b = ds.sample(Split::Train, B, T, rng);
    CHECK(b.ids.shape() == Shape{B, T});
    CHECK(b.targets.shape() == Shape{B, T});
    const std::vector<int32_t>& train = ds.tokens(Split::Train);
    for (int64_t r = 0; r < B; r++) {
        const std::vector<int32_t> ids = row(b.ids, r), tg = row(b.targets, r);
        for (int64_t t = 0; t + 1 < T; t++) CHECK(tg[size_t(t)] == ids[size_t(t + 1)]);
        // the row is a window of the train tokens
        auto at = std::search(train.begin(), train.end(), ids.begin(), ids.end());
        REQUIRE(at != train.end());
        CHECK(*(at + T) == tg.back());
    }
}

TEST_CASE("data: text batches are deterministic for a seed and resume from a saved Rng state") {
    TempDir tmp;
    std::string text;
    for (int i = 0; i < 300; i++) text += "word" + std::to_string(i * 7 % 13) + " ";
    TextDataset a(tmp.write("t.txt", text)), b(tmp.write("t.txt", text));
    CHECK(a.tokens(Split::Train) == b.tokens(Split::Train));
    Rng r1(42), r2(42);
    CHECK(a.sample(Split::Train, 3, 8, r1).ids.idata()[5] == b.sample(Split::Train, 3, 8, r2).ids.idata()[5]);
    const Rng saved = r1;   // what a checkpoint keeps (Rng::state)
    Batch next = a.sample(Split::Val, 3, 8, r1);
    Rng r3 = saved;
    Batch again = a.sample(Split::Val, 3, 8, r3);
    for (int64_t r = 0; r < 3; r++) CHECK(row(next.ids, r) == row(again.ids, r));
    // exactly one draw per row
    Rng r4 = saved;
    for (int k = 0; k < 3; k++) r4.next_u64();
    CHECK(r4.state() == r1.state());
}

TEST_CASE("data: bad text files are FileErrors naming the path and the problem") {
    TempDir tmp;
    const std::string missing = (tmp.dir / "nope.txt").string();
    CHECK_THROWS_WITH_AS(TextDataset{missing}, doctest::Contains("nope.txt' not found"), FileError);
    CHECK_THROWS_WITH_AS(TextDataset{tmp.dir.string()}, doctest::Contains("is a directory"), FileError);
    CHECK_THROWS_WITH_AS(TextDataset{tmp.write("empty.txt", "")}, doctest::Contains("empty.txt' is empty"), FileError);
    CHECK_THROWS_WITH_AS(TextDataset{tmp.write("latin1.txt", "caf\xe9 ok")},
                         doctest::Contains("invalid byte sequence at offset 3 (starting with 0xe9)"), FileError);
    CHECK_THROWS_WITH_AS(TextDataset{tmp.write("bin.txt", std::string("ab\0cd", 5))},
                         doctest::Contains("looks binary: NUL byte at offset 2"), FileError);
    const std::string huge = tmp.write("huge.txt", "x");
    fs::resize_file(huge, uint64_t(kMaxDatasetBytes) + 1);   // sparse: no 64 MiB written
    CHECK_THROWS_WITH_AS(TextDataset{huge}, doctest::Contains("more than the limit of 64 MiB"), FileError);
}

TEST_CASE("data: a split shorter than one block is a ValueError stating both numbers") {
    TempDir tmp;
    TextDataset ds(tmp.write("short.txt", std::string(40, 'a') + std::string(10, 'b')));   // 45 train, 5 val
    Rng rng(1);
    CHECK_THROWS_WITH_AS(ds.sample(Split::Val, 2, 8, rng), doctest::Contains("val split has 5 tokens; need at least "
                                                                             "block_size+1 = 9"),
                         ValueError);
    CHECK_THROWS_WITH_AS(ds.sample(Split::Train, 2, 45, rng), doctest::Contains("has 45 tokens; need at least "
                                                                                "block_size+1 = 46"),
                         ValueError);
    CHECK_NOTHROW(ds.sample(Split::Train, 2, 44, rng));
    CHECK_THROWS_AS(TextDataset(tmp.write("x.txt", "abc"), 1.0), ValueError);   // val_fraction must be < 1
}

TEST_CASE("data: a text dataset on a given vocabulary rejects characters outside it") {
    TempDir tmp;
    Tokenizer base = Tokenizer::chars_of("abc \n");
    TextDataset ok(tmp.write("ok.txt", "abc cab\n"), base);
    CHECK(ok.tokenizer() == base);
    CHECK_THROWS_WITH_AS(TextDataset(tmp.write("new.txt", "abc\nabd"), base),
                         doctest::Contains("new.txt': tokenizer: character 'd' (U+0064) at position 6 (line 2"),
                         ValueError);
}

// ---- TaskDataset

static const char* kTasks =
    "add 1 2 =\t 3.\n"
    "add 10 20 =\t 30.\r\n"   // Windows line end
    "\n"                      // skipped
    "add 4 4 =\t 8.\n"
    "add 5 6 =\t 11.";        // no final newline

TEST_CASE("data: task lines become examples whose loss is on the answer only") {
    TempDir tmp;
    Tokenizer tok = Tokenizer::chars_of("add 0123456789=.\n");
    TaskDataset ds(tmp.write("t.tsv", kTasks), tok, 0, 0.25);
    REQUIRE(ds.size(Split::Train) == 3);
    REQUIRE(ds.size(Split::Val) == 1);
    const TaskDataset::Example& e = ds.examples(Split::Train)[1];
    CHECK(e.prompt == "add 10 20 =");
    CHECK(e.answer == " 30.");
    CHECK(e.line == 2);
    CHECK(ds.examples(Split::Val)[0].line == 5);
    CHECK(ds.max_len() == 14);   // "add 10 20 = 30." is 15 characters

    Rng rng(3);
    Batch b = ds.sample(Split::Train, 8, rng);
    const int64_t T = b.ids.size(1);
    CHECK(T <= ds.max_len());
    for (int64_t r = 0; r < 8; r++) {
        const std::vector<int32_t> ids = row(b.ids, r), tg = row(b.targets, r);
        const std::string text = tok.decode(ids);
        const TaskDataset::Example* ex = nullptr;
        for (const auto& c : ds.examples(Split::Train))
            if (text.compare(0, c.prompt.size(), c.prompt) == 0) ex = &c;
        REQUIRE(ex != nullptr);
        const int64_t P = ex->prompt_len, L = int64_t(ex->tokens.size());
        for (int64_t t = 0; t < T; t++) {
            if (t < P - 1 || t >= L - 1) CHECK(tg[size_t(t)] == kIgnoreIndex);       // prompt and padding
            else CHECK(tg[size_t(t)] == ex->tokens[size_t(t + 1)]);                  // answer
            if (t >= L - 1) CHECK(ids[size_t(t)] == 0);                               // pad id
        }
    }
    Batch fixed = ds.sample(Split::Train, 2, rng, 20);
    CHECK(fixed.ids.shape() == Shape{2, 20});
    CHECK_THROWS_WITH_AS(ds.sample(Split::Train, 8, rng, 10), doctest::Contains("does not fit T = 10"), ValueError);
}

TEST_CASE("data: the task val split is every 10th example") {
    TempDir tmp;
    std::string lines;
    for (int i = 0; i < 50; i++) lines += "q" + std::to_string(i) + "\ta\n";
    TaskDataset ds(tmp.write("t.tsv", lines), Tokenizer::chars_of("q0123456789a"));
    REQUIRE(ds.size(Split::Val) == 5);
    for (int k = 0; k < 5; k++) CHECK(ds.examples(Split::Val)[size_t(k)].line == 10 * k + 10);
}

TEST_CASE("data: malformed task files name the file and the line") {
    TempDir tmp;
    Tokenizer tok = Tokenizer::chars_of("abc xyz=.");
    auto load = [&](const std::string& text, int64_t block = 0) {
        TaskDataset(tmp.write("bad.tsv", text), tok, block);
    };
    CHECK_THROWS_WITH_AS(load("a\tb\nabc b\n"), doctest::Contains("bad.tsv' line 2: no TAB"), FileError);
    CHECK_THROWS_WITH_AS(load("a\tb\tc\n"), doctest::Contains("line 1: more than one TAB"), FileError);
    CHECK_THROWS_WITH_AS(load("a\tb\n\nx\t\n"), doctest::Contains("line 3: empty answer"), FileError);
    CHECK_THROWS_WITH_AS(load("\tb\n"), doctest::Contains("line 1: empty prompt"), FileError);
    CHECK_THROWS_WITH_AS(load("\n\n"), doctest::Contains("no examples"), FileError);
    CHECK_THROWS_WITH_AS(load(""), doctest::Contains("is empty"), FileError);
    CHECK_THROWS_WITH_AS(load("a\tb\nabc\tq\n"), doctest::Contains("line 2, in the answer: tokenizer: character 'q'"),
                         ValueError);
    CHECK_THROWS_WITH_AS(load("ab\tc\nabcabc =\t xyz.\n", 8),
                         doctest::Contains("line 2: prompt+answer is 13 tokens, a training row of 12, longer than "
                                           "the 8 positions the model has for it"),
                         ValueError);
}

TEST_CASE("data: from_text gives what the file loaders give, with the same checks naming `name`") {
    TempDir tmp;
    const Tokenizer tok = Tokenizer::chars_of("add 0123456789=.\n");
    const TaskDataset file(tmp.write("t.tsv", kTasks), tok, 0, 0.25);
    const TaskDataset mem = TaskDataset::from_text(kTasks, "t.tsv", tok, 0, 0.25);
    CHECK(mem.path() == "t.tsv");
    REQUIRE(mem.size(Split::Train) == file.size(Split::Train));
    for (int64_t i = 0; i < mem.size(Split::Train); i++)
        CHECK(mem.examples(Split::Train)[size_t(i)].tokens == file.examples(Split::Train)[size_t(i)].tokens);
    const std::string text = "the cat sat on the mat. ";
    CHECK(TextDataset::from_text(text, "c.txt").tokens(Split::Train) == TextDataset(tmp.write("c.txt", text)).tokens(Split::Train));
    CHECK(TextDataset::from_text("add 1 2 = 3.\n", "a.txt", &tok).tokenizer().vocab_size() == tok.vocab_size());
    CHECK_THROWS_WITH_AS(TextDataset::from_text(text, "mem", &tok), doctest::Contains("dataset 'mem': tokenizer: character 't'"),
                         ValueError);
    CHECK_THROWS_WITH_AS(TextDataset::from_text("", "mem"), doctest::Contains("dataset 'mem' is empty"), FileError);
    CHECK_THROWS_WITH_AS(TextDataset::from_text(std::string("ab\0", 3), "mem"), doctest::Contains("'mem' looks binary"), FileError);
    CHECK_THROWS_WITH_AS(TaskDataset::from_text("caf\xe9\tx\n", "mem", tok), doctest::Contains("'mem' is not UTF-8"), FileError);
    CHECK_THROWS_WITH_AS(TaskDataset::from_text("a\tb\tc\n", "mem", tok), doctest::Contains("'mem' line 1: more than one TAB"),
                         FileError);
}

TEST_CASE("data: exact match compares the generated text, cut at a newline, with the answer") {
    TempDir tmp;
    TaskDataset ds(tmp.write("t.tsv", "a\t 1.\nb\t 22.\nc\t 3.\nd\t 4.\n"), Tokenizer::chars_of("abcd 1234."), 0, 0);
    std::vector<size_t> asked;
    auto generate = [&](const std::string& prompt, size_t max_new) -> std::string {
        asked.push_back(max_new);
        if (prompt == "a") return " 1.\nmore";   // right, then a newline and more text
        if (prompt == "b") return " 22.3";       // right: compared over the answer's length
        if (prompt == "c") return " 3";          // too short
        return "\n 4.";                          // the newline ends it first
    };
    CHECK(ds.exact_match(generate, Split::Train) == doctest::Approx(0.5));
    CHECK(asked == std::vector<size_t>{3, 4, 3, 3});   // the answer lengths
    CHECK(ds.exact_match(generate, Split::Train, 2) == doctest::Approx(1.0));
    CHECK_THROWS_AS(ds.exact_match(generate, Split::Val), ValueError);   // val_fraction 0: no val examples
}

// ---- shipped data

TEST_CASE("data: regenerating the shipped datasets gives identical bytes") {
    const std::string dir = data_dir();
    for (const ShippedDataset& d : shipped_datasets()) {
        const std::string path = (fs::path(dir) / d.file).string();
        const std::string shipped = read_bytes(path);
        INFO(path);
        CHECK(shipped.size() < 2u << 20);
        const std::string fresh = d.generate();
        const auto diff = std::mismatch(shipped.begin(), shipped.end(), fresh.begin(), fresh.end());
        const bool same = shipped == fresh;   // a bool: doctest would print both megabyte strings
        CHECK_MESSAGE(same, "first difference at byte " << (diff.first - shipped.begin()) << "; sizes "
                                  << shipped.size() << " and " << fresh.size());
    }
}

TEST_CASE("data: the corpus vocabulary covers every shipped task and each task loads") {
    TextDataset corpus(resolve_dataset("stories"));
    const Tokenizer& tok = corpus.tokenizer();
    const std::string text = read_text_file(resolve_dataset("stories"));
    CHECK(std::all_of(text.begin(), text.end(), [](char c) { return uint8_t(c) < 128; }));   // ASCII only
    for (const char* name : {"add", "reverse", "dates"}) {
        const std::string path = resolve_dataset(name);
        CHECK(is_task_file(path));
        TaskDataset ds(path, tok, 64);
        CHECK(ds.size(Split::Train) == 18000);
        CHECK(ds.size(Split::Val) == 2000);
        CHECK(ds.max_len() < 40);
    }
    for (char c = 'a'; c <= 'z'; c++) CHECK_NOTHROW(tok.encode(std::string(1, c)));
}

TEST_CASE("data: dataset names resolve to shipped files and anything else is a path") {
    CHECK(fs::exists(resolve_dataset("reverse")));
    CHECK(resolve_dataset("my/file.txt") == "my/file.txt");
    CHECK_FALSE(is_task_file(resolve_dataset("stories")));
    CHECK_THROWS_WITH_AS(resolve_dataset("addition"), doctest::Contains("stories, add, reverse, dates"), ValueError);
}

}  // TEST_SUITE
