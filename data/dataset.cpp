// data/dataset.cpp — loading and checking text files, the two datasets, and the shipped-data lookup.
#include "dataset.h"
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include "data/generate.h"
#include "engine/check.h"
#include "engine/fileio.h"

namespace fs = std::filesystem;

const char* split_name(Split s) { return s == Split::Train ? "train" : "val"; }

static void check_fraction(double f) {
    ENGINE_CHECK(f >= 0 && f < 1, ValueError, "dataset: val_fraction must be in [0, 1), got {}", f);
}

static void check_size(uintmax_t bytes, const std::string& name) {
    ENGINE_CHECK(bytes > 0, FileError, "dataset '{}' is empty", name);
    ENGINE_CHECK(bytes <= uintmax_t(kMaxDatasetBytes), FileError,
                 "dataset '{}' has {} bytes, more than the limit of {} MiB (this engine trains toy models)", name,
                 bytes, kMaxDatasetBytes >> 20);
}

std::string read_text_file(const std::string& path) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    ENGINE_CHECK(fs::exists(st), FileError, "dataset '{}' not found", path);
    ENGINE_CHECK(!fs::is_directory(st), FileError, "dataset '{}' is a directory, not a text file", path);
    const uintmax_t bytes = fs::is_regular_file(st) ? fs::file_size(path, ec) : 0;
    if (!ec && bytes > 0) check_size(bytes, path);   // too large: said before reading
    std::string text;
    try {   // bounded and regular files only (engine/fileio.h); a /proc file says size 0 but is read whole
        text = read_file(path, size_t(kMaxDatasetBytes));
    } catch (const FileError& e) {
        throw FileError(fmt::format("dataset {}", e.what()));
    }
    check_text(text, path);
    return text;
}

void check_text(const std::string& text, const std::string& name) {
    check_size(text.size(), name);
    const size_t nul = text.find('\0');
    ENGINE_CHECK(nul == std::string::npos, FileError, "dataset '{}' looks binary: NUL byte at offset {}", name, nul);
    const size_t bad = utf8_error_offset(text);
    ENGINE_CHECK(bad == std::string::npos, FileError,
                 "dataset '{}' is not UTF-8 text: invalid byte sequence at offset {} (starting with 0x{:02x})", name,
                 bad, unsigned(uint8_t(text[bad])));
}

// ---- TextDataset

static void split_tokens(const std::vector<int32_t>& ids, double val_fraction, std::vector<int32_t>& train,
                         std::vector<int32_t>& val) {
    const size_t n_val = size_t(double(ids.size()) * val_fraction);   // the last n_val tokens
    train.assign(ids.begin(), ids.end() - int64_t(n_val));
    val.assign(ids.end() - int64_t(n_val), ids.end());
}

TextDataset::TextDataset(const std::string& path, double val_fraction)
    : TextDataset(path, read_text_file(path), nullptr, val_fraction) {}

TextDataset::TextDataset(const std::string& path, const Tokenizer& tok, double val_fraction)
    : TextDataset(path, read_text_file(path), &tok, val_fraction) {}

TextDataset TextDataset::from_text(const std::string& text, const std::string& name, const Tokenizer* tok,
                                   double val_fraction) {
    check_text(text, name);
    return TextDataset(name, text, tok, val_fraction);
}

TextDataset::TextDataset(std::string name, const std::string& text, const Tokenizer* tok, double val_fraction)
    : path_(std::move(name)), tok_(tok ? *tok : Tokenizer::chars_of(text)) {
    check_fraction(val_fraction);
    std::vector<int32_t> ids;
    try {
        ids = tok_.encode(text);
    } catch (const ValueError& e) {   // only with a given vocabulary: a built one covers the text
        throw ValueError(fmt::format("dataset '{}': {} (the vocabulary is the model's, fixed when it was trained)",
                                     path_, e.what()));
    }
    split_tokens(ids, val_fraction, train_, val_);
}

Batch TextDataset::sample(Split s, int64_t B, int64_t T, Rng& rng) const {
    ENGINE_CHECK(B > 0 && T > 0, ValueError, "sample: batch size and block size must be positive, got B={} T={}", B, T);
    const std::vector<int32_t>& toks = tokens(s);
    const int64_t n = int64_t(toks.size());
    ENGINE_CHECK(n >= T + 1, ValueError,
                 "dataset '{}': the {} split has {} tokens; need at least block_size+1 = {} for one window "
                 "(use a smaller block size or a longer file)",
                 path_, split_name(s), n, T + 1);
    Batch b{Tensor::empty({B, T}, DType::I32), Tensor::empty({B, T}, DType::I32)};
    for (int64_t r = 0; r < B; r++) {
        // window toks[start .. start+T]: n − T possible starts, one draw per row
        const int64_t start = int64_t(rng.below(uint64_t(n - T)));
        std::copy_n(toks.begin() + start, T, b.ids.idata() + r * T);
        std::copy_n(toks.begin() + start + 1, T, b.targets.idata() + r * T);
    }
    return b;
}

// ---- TaskDataset

TaskDataset::TaskDataset(const std::string& path, const Tokenizer& tok, int64_t block_size, double val_fraction)
    : TaskDataset(path, read_text_file(path), tok, block_size, val_fraction) {}

TaskDataset TaskDataset::from_text(const std::string& text, const std::string& name, const Tokenizer& tok,
                                   int64_t block_size, double val_fraction) {
    check_text(text, name);
    return TaskDataset(name, text, tok, block_size, val_fraction);
}

TaskDataset::TaskDataset(std::string name, const std::string& text, const Tokenizer& tok, int64_t block_size,
                         double val_fraction)
    : path_(std::move(name)), tok_(tok) {
    check_fraction(val_fraction);
    ENGINE_CHECK(block_size >= 0, ValueError, "task dataset: block_size must be >= 0 (0 = no limit), got {}",
                 block_size);
    const std::string& path = path_;
    std::vector<Example> all;
    int64_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(pos, end - pos);
        pos = end + 1;
        line_no++;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;

        const size_t tab = line.find('\t');
        ENGINE_CHECK(tab != std::string::npos, FileError,
                     "task file '{}' line {}: no TAB between prompt and answer (each line is prompt<TAB>answer)",
                     path, line_no);
        ENGINE_CHECK(line.find('\t', tab + 1) == std::string::npos, FileError,
                     "task file '{}' line {}: more than one TAB (each line is prompt<TAB>answer)", path, line_no);
        Example ex;
        ex.prompt = line.substr(0, tab);
        ex.answer = line.substr(tab + 1);
        ex.line = line_no;
        ENGINE_CHECK(!ex.prompt.empty(), FileError, "task file '{}' line {}: empty prompt", path, line_no);
        ENGINE_CHECK(!ex.answer.empty(), FileError, "task file '{}' line {}: empty answer", path, line_no);
        std::vector<int32_t> answer;
        const char* part = "prompt";
        try {
            ex.tokens = tok_.encode(ex.prompt);
            part = "answer";
            answer = tok_.encode(ex.answer);
        } catch (const ValueError& e) {
            throw ValueError(fmt::format("task file '{}' line {}, in the {}: {}", path, line_no, part, e.what()));
        }
        ex.prompt_len = int64_t(ex.tokens.size());
        ex.tokens.insert(ex.tokens.end(), answer.begin(), answer.end());
        const int64_t row = int64_t(ex.tokens.size()) - 1;
        ENGINE_CHECK(block_size == 0 || row <= block_size, ValueError,
                     "task file '{}' line {}: prompt+answer is {} tokens, a training row of {}, longer than "
                     "the {} positions the model has for it",
                     path, line_no, row + 1, row, block_size);
        max_len_ = std::max(max_len_, row);
        all.push_back(std::move(ex));
    }
    ENGINE_CHECK(!all.empty(), FileError, "task file '{}' has no examples (only empty lines)", path);

    // Example i is in val when the running count i·n_val/n steps up: n_val examples, evenly spread;
    // at least one when there is a validation split at all, so a short file still validates.
    const int64_t n = int64_t(all.size());
    ENGINE_CHECK(n >= 2 || val_fraction == 0, ValueError,
                 "task file '{}' has 1 example: it needs at least 2 (one is held out for validation)", path);
    const int64_t n_val = val_fraction > 0 ? std::max<int64_t>(1, int64_t(double(n) * val_fraction)) : 0;
    for (int64_t i = 0; i < n; i++)
        ((i + 1) * n_val / n > i * n_val / n ? val_ : train_).push_back(std::move(all[size_t(i)]));
}

Batch TaskDataset::sample(Split s, int64_t B, Rng& rng, int64_t T) const {
    ENGINE_CHECK(B > 0 && T >= 0, ValueError, "task sample: need B > 0 and T >= 0 (0 = longest drawn), got B={} T={}",
                 B, T);
    const std::vector<Example>& ex = examples(s);
    ENGINE_CHECK(!ex.empty(), ValueError, "task file '{}': the {} split has no examples ({} in train, {} in val)",
                 path_, split_name(s), train_.size(), val_.size());
    std::vector<const Example*> rows(size_t(B), nullptr);
    int64_t longest = 0;
    for (auto& r : rows) {   // one draw per row
        r = &ex[size_t(rng.below(ex.size()))];
        longest = std::max(longest, int64_t(r->tokens.size()) - 1);
    }
    const int64_t width = T > 0 ? T : longest;
    Batch b{Tensor::empty({B, width}, DType::I32), Tensor::empty({B, width}, DType::I32)};
    for (int64_t r = 0; r < B; r++) {
        const Example& e = *rows[size_t(r)];
        const int64_t L = int64_t(e.tokens.size()), P = e.prompt_len;
        ENGINE_CHECK(L - 1 <= width, ValueError,
                     "task file '{}' line {}: a training row of {} tokens does not fit T = {}", path_, e.line, L - 1,
                     width);
        int32_t* ids = b.ids.idata() + r * width;
        int32_t* tgt = b.targets.idata() + r * width;
        for (int64_t t = 0; t < width; t++) {
            const bool real = t < L - 1;
            ids[t] = real ? e.tokens[size_t(t)] : 0;   // pad id 0: its targets are ignored
            tgt[t] = real && t >= P - 1 ? e.tokens[size_t(t + 1)] : kIgnoreIndex;   // loss on answer tokens only
        }
    }
    return b;
}

double TaskDataset::exact_match(const GenerateFn& generate, Split s, int64_t max_examples) const {
    const std::vector<Example>& ex = examples(s);
    const int64_t n = max_examples > 0 ? std::min<int64_t>(max_examples, int64_t(ex.size())) : int64_t(ex.size());
    ENGINE_CHECK(n > 0, ValueError, "exact_match: the {} split of '{}' has no examples", split_name(s), path_);
    int64_t right = 0;
    for (int64_t i = 0; i < n; i++) {
        const Example& e = ex[size_t(i)];
        std::string out = generate(e.prompt, e.tokens.size() - size_t(e.prompt_len));
        out = out.substr(0, out.find('\n'));
        if (out.compare(0, e.answer.size(), e.answer) == 0) right++;
    }
    return double(right) / double(n);
}

// ---- shipped datasets

std::string data_dir() {
    if (const char* env = std::getenv("PEFT_DATA_DIR"); env && *env) {
        ENGINE_CHECK(fs::is_directory(env), FileError, "PEFT_DATA_DIR '{}' is not a directory", env);
        return env;
    }
    if (fs::exists("data/corpus.txt")) return "data";
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    const fs::path beside = (exe.parent_path().parent_path() / "data").lexically_normal();
    if (!ec && fs::exists(beside / "corpus.txt")) return beside.string();
    throw FileError(fmt::format("cannot find the shipped data folder (tried $PEFT_DATA_DIR, ./data and {}); set "
                                "PEFT_DATA_DIR to the project's data/ folder",
                                ec ? "<program folder>/../data" : beside.string()));
}

std::string resolve_dataset(const std::string& name_or_path) {
    std::string names;
    for (const ShippedDataset& d : shipped_datasets()) {
        if (name_or_path == d.name) return (fs::path(data_dir()) / d.file).string();
        names += std::string(names.empty() ? "" : ", ") + d.name;
    }
    const bool bare_word = name_or_path.find_first_of("/.") == std::string::npos;
    ENGINE_CHECK(!bare_word || fs::exists(name_or_path), ValueError,
                 "unknown dataset '{}': not a file, and not a shipped dataset ({})", name_or_path, names);
    return name_or_path;
}

bool is_task_file(const std::string& path) {
    return path.size() >= 4 && path.compare(path.size() - 4, 4, ".tsv") == 0;
}
