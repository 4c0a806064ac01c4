// cli/cmd_tokenize.cpp — `peft tokenize`: the ids of a text under a tokenizer, and a small
// encoding benchmark (--bench).
//
//   peft tokenize --tokenizer DIR --text "Hello world" [--json]
//   peft tokenize --tokenizer DIR --bench [--file F] [--bench_mb 4] [--repeats 5]
// DIR is a tokenizer folder (vocab.json + merges.txt or encoder.json + vocab.bpe), a model folder
// holding those files or a model.safetensors, or a checkpoint file.
#include <algorithm>
#include <chrono>
#include "common.h"
#include "data/bpe.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "engine/rng.h"

namespace {

struct TokenizeFlags {
    CommonFlags common;
    std::string tokenizer, text, file;
    bool json_out = false, bench = false;
    double bench_mb = 4;
    int64_t repeats = 5;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// English text (the shipped corpus, or --file) repeated to bench_mb MB, encoded `repeats` times,
// each by a freshly loaded tokenizer (its word cache starts empty); then one line of 1 MB
// without a space or punctuation, one word for the merge loop.
void run_bench(const TokenizeFlags& f) {
    const std::string path = f.file.empty() ? resolve_dataset("stories") : f.file;
    const std::string unit = read_text_file(path);
    std::string text;
    const size_t want = size_t(f.bench_mb * 1e6);
    while (text.size() < want) text += unit;
    text.resize(want);
    while (utf8_error_offset(text) != std::string::npos) text.pop_back();   // cut inside a character
    std::vector<double> rates;
    size_t n_tokens = 0;
    for (int64_t r = 0; r < f.repeats; r++) {
        const Tokenizer tok = Tokenizer::load(f.tokenizer);
        const auto t0 = std::chrono::steady_clock::now();
        n_tokens = tok.encode(text).size();
        rates.push_back(double(text.size()) / 1e6 / seconds_since(t0));
    }
    const Tokenizer tok = Tokenizer::load(f.tokenizer);
    std::string word(1000000, 'a');
    Rng rng(1);
    for (char& c : word) c = char('a' + rng.below(26));
    const auto t0 = std::chrono::steady_clock::now();
    const size_t word_tokens = tok.encode(word).size();
    const double word_s = seconds_since(t0);
    fmt::print("{} tokenizer, {} tokens: {:.2f} MB of {} -> {} tokens ({:.2f} bytes/token)\n", tok.kind_name(),
               tok.vocab_size(), double(text.size()) / 1e6, path, n_tokens, double(text.size()) / double(n_tokens));
    fmt::print("encode, one thread: median {:.2f} MB/s over {} runs (min {:.2f}, max {:.2f})\n", median(rates),
               rates.size(), *std::min_element(rates.begin(), rates.end()), *std::max_element(rates.begin(), rates.end()));
    fmt::print("a 1 MB line of random letters (one word): {:.2f} s -> {} tokens\n", word_s, word_tokens);
    const nlohmann::json j = {{"mb", double(text.size()) / 1e6}, {"tokens", n_tokens},
                              {"mb_per_s_median", median(rates)}, {"mb_per_s_runs", rates},
                              {"long_word_seconds", word_s}, {"long_word_tokens", word_tokens}};
    if (f.json_out) fmt::print("{}\n", j.dump());
}

void run_tokenize(const TokenizeFlags& f) {
    f.common.apply();
    if (f.bench) return run_bench(f);
    ENGINE_CHECK(!f.text.empty() || !f.file.empty(), ValueError, "tokenize: give --text STR or --file F (or --bench)");
    ENGINE_CHECK(f.text.empty() || f.file.empty(), ValueError, "tokenize: give --text or --file, not both");
    const Tokenizer tok = Tokenizer::load(f.tokenizer);
    const std::string text = f.file.empty() ? f.text : read_text_file(f.file);
    std::vector<int32_t> ids;
    try {
        ids = tok.encode(text);
    } catch (const ValueError& e) {
        throw ValueError(fmt::format("{}: {}", f.file.empty() ? "--text" : f.file, e.what()));
    }
    fmt::print("{}\n", fmt::join(ids, " "));
    if (f.json_out) fmt::print("{}\n", nlohmann::json({{"ids", ids}}).dump());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
    auto f = std::make_shared<TokenizeFlags>();
    CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text (or benchmark a tokenizer)");
    f->common.add(*cmd);
    cmd->add_option("--tokenizer", f->tokenizer,
                     "tokenizer folder (vocab.json + merges.txt or encoder.json + vocab.bpe), model folder or checkpoint")
        ->required();
    cmd->add_option("--text", f->text, "text to tokenize");
    cmd->add_option("--file", f->file, "UTF-8 text file to tokenize (with --bench: the text to time)");
    cmd->add_flag("--json", f->json_out, "also print {\"ids\": [...]} (with --bench: the figures) as the last line");
    cmd->add_flag("--bench", f->bench, "time encoding (one thread) and a 1 MB word without spaces");
    add_number(cmd, "--bench_mb", f->bench_mb, "MB of text to encode with --bench", 0.001, 64.0)->capture_default_str();
    add_number(cmd, "--repeats", f->repeats, "runs with --bench (the median is reported)", 1, 100)->capture_default_str();
    cmd->callback([f]() { run_tokenize(*f); });
}
