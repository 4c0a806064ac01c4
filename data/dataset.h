// data/dataset.h — training data: a text corpus for next-token prediction and prompt/answer tasks.
//
// TextDataset: one UTF-8 text file, tokenized whole; the last `val_fraction` of the tokens is
// the validation split (contiguous, so no window straddles train and val). sample() draws B
// random windows of T+1 tokens: ids = window[0..T-1], targets = window[1..T] (nanoGPT get_batch).
//
// TaskDataset: a task file, one example per line:
//     prompt<TAB>answer
// e.g. "add 123 456 =\t 579." The model reads prompt+answer and is trained to predict the answer
// only: targets are -1 (kIgnoreIndex, skipped by cross_entropy) on prompt positions and padding.
// Empty lines are skipped and a trailing '\r' (Windows line ends) is dropped. Each line needs
// exactly one TAB, a non-empty prompt and a non-empty answer. Every 10th example (in general,
// an evenly spread `val_fraction` of them) is the validation split, so a sorted file still gets
// a representative one.
//
// Determinism and resume: neither dataset has hidden state. sample() consumes exactly B draws
// of the caller's Rng (one per row), so saving and restoring that Rng (Rng::state) resumes the
// batch sequence exactly.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include "data/tokenizer.h"
#include "engine/rng.h"
#include "engine/tensor.h"

constexpr int32_t kIgnoreIndex = -1;   // target value that contributes no loss
constexpr int64_t kMaxDatasetBytes = int64_t(64) << 20;   // 64 MiB: this engine trains toy models

enum class Split { Train, Val };
const char* split_name(Split s);   // "train" / "val"

struct Batch {
    Tensor ids;       // I32 (B, T) input token ids
    Tensor targets;   // I32 (B, T) next token ids, or kIgnoreIndex
};

// The contents of a UTF-8 text file. FileError naming the path when it is missing, a directory,
// empty, larger than kMaxDatasetBytes, binary (a NUL byte) or not UTF-8 (with the byte offset).
std::string read_text_file(const std::string& path);
// The checks on the contents, for text already in memory: `name` stands for the path in messages.
void check_text(const std::string& text, const std::string& name);

class TextDataset {
public:
    // Builds a character vocabulary from the whole file (train and val).
    explicit TextDataset(const std::string& path, double val_fraction = 0.1);
    // Uses a given vocabulary, e.g. a base model's when fine-tuning; a character outside it is a
    // ValueError naming the file, the character and its position.
    TextDataset(const std::string& path, const Tokenizer& tok, double val_fraction = 0.1);
    // The same from text in memory (check_text applies); `name` stands for the path. The
    // vocabulary is `tok`'s, or built from the text when `tok` is null.
    static TextDataset from_text(const std::string& text, const std::string& name, const Tokenizer* tok = nullptr,
                                 double val_fraction = 0.1);

    const std::string& path() const { return path_; }
    const Tokenizer& tokenizer() const { return tok_; }
    const std::vector<int32_t>& tokens(Split s) const { return s == Split::Train ? train_ : val_; }
    int64_t size(Split s) const { return int64_t(tokens(s).size()); }

    // ids, targets: (B, T). ValueError when the split has fewer than T+1 tokens (names both).
    Batch sample(Split s, int64_t B, int64_t T, Rng& rng) const;

private:
    TextDataset(std::string name, const std::string& text, const Tokenizer* tok, double val_fraction);

    std::string path_;
    Tokenizer tok_;
    std::vector<int32_t> train_, val_;
};

class TaskDataset {
public:
    struct Example {
        std::string prompt, answer;
        std::vector<int32_t> tokens;   // encode(prompt + answer)
        int64_t prompt_len = 0;        // tokens of the prompt
        int64_t line = 0;              // 1-based line in the file
    };

    // block_size > 0: an example whose training row (prompt+answer tokens − 1) is longer is a
    // ValueError naming its line. Characters outside `tok` are a ValueError naming the line.
    TaskDataset(const std::string& path, const Tokenizer& tok, int64_t block_size = 0, double val_fraction = 0.1);
    // The same from text in memory (check_text applies); `name` stands for the path.
    static TaskDataset from_text(const std::string& text, const std::string& name, const Tokenizer& tok,
                                 int64_t block_size = 0, double val_fraction = 0.1);

    const std::string& path() const { return path_; }
    const Tokenizer& tokenizer() const { return tok_; }
    const std::vector<Example>& examples(Split s) const { return s == Split::Train ? train_ : val_; }
    int64_t size(Split s) const { return int64_t(examples(s).size()); }
    // The longest training row (prompt+answer tokens − 1) in either split: a T that fits all.
    int64_t max_len() const { return max_len_; }

    // B examples drawn with the Rng. Row of an example s (L tokens, prompt P tokens):
    //   ids[t] = s[t] for t < L−1, then 0 (padding);   targets[t] = s[t+1] for P−1 ≤ t < L−1, else −1.
    // T = 0 pads to the longest example drawn; T > 0 pads to T (ValueError if one is longer).
    Batch sample(Split s, int64_t B, Rng& rng, int64_t T = 0) const;

    // Fraction of the split's first max_examples examples (all when max_examples ≤ 0) whose answer
    // the model reproduces. generate(prompt, n) continues the prompt by up to n new tokens
    // (n = the answer's length in tokens: characters for a char vocabulary) and returns only the
    // new text. It is cut at its first '\n' and compared with the answer over the answer's length.
    using GenerateFn = std::function<std::string(const std::string& prompt, size_t max_new_chars)>;
    double exact_match(const GenerateFn& generate, Split s, int64_t max_examples = 0) const;

private:
    TaskDataset(std::string name, const std::string& text, const Tokenizer& tok, int64_t block_size, double val_fraction);

    std::string path_;
    Tokenizer tok_;
    std::vector<Example> train_, val_;
    int64_t max_len_ = 0;
};

// ---- shipped datasets

// The folder of shipped data: $PEFT_DATA_DIR if set, else ./data if it holds corpus.txt, else
// <folder of the running program>/../data (build/peft -> data/). FileError listing the places tried.
std::string data_dir();
// A shipped dataset's name ("stories", "add", "reverse", "dates"; see data/README.md) maps to
// its file under data_dir(); anything else is taken as a path. A bare word that is neither a
// name nor an existing file is a ValueError listing the names.
std::string resolve_dataset(const std::string& name_or_path);
// True for task files (".tsv"), false for plain text.
bool is_task_file(const std::string& path);
