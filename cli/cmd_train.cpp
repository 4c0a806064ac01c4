// cli/cmd_train.cpp — `peft train`: pretrain a GPT on a corpus, or fine-tune a base
// checkpoint with full fine-tuning or a PEFT method. Writes checkpoints, log.csv, loss.svg.
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <algorithm>
#include <fstream>
#include "common.h"
#include "engine/dist.h"
#include "engine/fileio.h"
#include "engine/parallel.h"
#include "engine/safetensors.h"
#include "method_flags.h"
#include "train_settings.h"
#include "models/checkpoint.h"
#include "train/run.h"
#include "train/trainer.h"
#include "peft/peft.h"
#include "svg.h"
#include "train/defaults.h"
#include <filesystem>
#include <tuple>

namespace fs = std::filesystem;

namespace {

void ensure_dir(const std::string& dir) {
    make_dirs(dir);
    ENGINE_CHECK(access(dir.c_str(), W_OK) == 0, FileError, "--out {}: the folder is not writable", dir);
}

std::string sample_text(GPT& model, const Tokenizer& tok, const std::string& prompt, int n, uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> ids = tok.encode(prompt);
    std::vector<int32_t> out = model.generate(ids, n, 0.8f, 20, rng);
    return tok.decode(std::vector<int32_t>(out.begin() + int64_t(ids.size()), out.end()));
}

// Everything one training run works on, in the order set_up builds it.
struct Run {
    std::string data_path;
    std::unique_ptr<GPT> model;
    Tokenizer tok = Tokenizer::bytes();
    std::unique_ptr<PeftModel> peft;
    Method* method = nullptr;          // null for pretraining / full fine-tuning
    std::unique_ptr<TextDataset> text;
    std::unique_ptr<TaskDataset> task;
    std::unique_ptr<Trainer> trainer;
    std::optional<QType> quantized;    // the base's block Linears are stored in this format
    ParamList& trainable() { return method ? method->params : model->params; }
};

// The model: a base checkpoint, this run's own checkpoint (--resume, full), or a new one
// (pretraining, whose vocabulary comes from the corpus).
void load_or_build_model(TrainFlags& f, const CLI::App& cmd, Run& r) {
    ENGINE_CHECK(f.method.method == "full" || !f.base.empty(), ValueError,
                 "--method {} fine-tunes a base model: give --base CKPT (pretrain one first with --method full)",
                 f.method.method);
    if (!f.base.empty() || (f.resume && f.method.method == "full")) {
        const std::string path = f.resume && f.method.method == "full" ? run_files::model(f.out) : f.base;
        // --quantize: each block Linear quantised as it is read, so the float32 base never exists whole.
        Checkpoint ck = load_checkpoint(path, quantize_format(f.quantize, f.method.method));
        r.model = std::move(ck.model);
        if (const std::optional<QType> q = r.model->quantized_as()) {
            ENGINE_CHECK(f.method.method != "full", ValueError,
                         "--method full: {} is quantised ({}), and quantised weights cannot train; start from the "
                         "float32 model, or train a PEFT method over this one", path, qtype_name(*q));
            r.quantized = q;
        }
        r.tok = ck.tokenizer;
        const GPTConfig& c = r.model->config;
        using Dim = std::tuple<const char*, int64_t, int64_t>;   // flag, given, the loaded model's
        for (auto [flag, given, has] : {Dim{"--n_layer", f.model.n_layer, c.n_layer}, Dim{"--n_head", f.model.n_head, c.n_head},
                                        Dim{"--n_embd", f.model.n_embd, c.n_embd}})
            ENGINE_CHECK(!cmd.count(flag) || given == has, ValueError, "{} {} cannot change a loaded model (it is {})", flag,
                         given, c.to_json());
        if (cmd.count("--block")) {   // on a loaded model: the training sequence length (e.g. 256 of GPT-2's 1024)
            ENGINE_CHECK(f.model.block_size <= c.block_size, ValueError,
                         "--block {} is larger than the loaded model's block_size {}", f.model.block_size, c.block_size);
            f.train.block = f.model.block_size;
        }
        if (cmd.count("--dropout")) r.model->config.dropout = f.model.dropout;
        return;
    }
    r.text = std::make_unique<TextDataset>(r.data_path);
    r.tok = r.text->tokenizer();
    f.model.vocab_size = r.tok.vocab_size();
    Rng init(f.common.seed);
    r.model = std::make_unique<GPT>(f.model, init);
}

// The method of --method (nothing for full fine-tuning), attached to the model.
void attach_method(const TrainFlags& f, const CLI::App& cmd, Run& r) {
    r.peft = std::make_unique<PeftModel>(*r.model);
    if (f.method.method == "full") return;
    Rng mrng(f.common.seed + 7);
    if (!f.resume_peft_config.is_null()) {   // a resumed run: the config it was started with
        WarnContext in_file(run_files::optimizer(f.out));
        r.peft->add("default", make_method(f.resume_peft_config, *r.model, mrng));
    } else {
        r.peft->add("default", f.method.make(cmd, r.tok, *r.model, mrng));
    }
    r.method = r.peft->active();
}

// The dataset in the model's tokenizer (a task's examples must fit the room the method leaves).
void open_data(Run& r) {
    if (r.text) return;
    const int64_t room = r.model->token_room(), taken = r.model->config.block_size - room;
    if (is_task_file(r.data_path)) try {
        r.task = std::make_unique<TaskDataset>(r.data_path, r.tok, room);
    } catch (const ValueError& e) {
        if (taken == 0) throw;
        throw ValueError(fmt::format("{} (block_size {} minus {} virtual tokens leaves {}: lower --num_virtual_tokens)", e.what(),
                                     r.model->config.block_size, taken, room));
    }
    else r.text = std::make_unique<TextDataset>(r.data_path, r.tok);
}

Run set_up(TrainFlags& f, const CLI::App& cmd) {
    Run r;
    r.data_path = resolve_dataset(f.data);
    if (dist::size() > 1) {   // every rank reads the data itself: the same bytes?
        const std::string bytes = read_file(r.data_path, size_t(kMaxDatasetBytes));
        dist::check_same("the contents of the data file " + r.data_path,
                         fmt::format("{:016x}", dist::hash_bytes(bytes.data(), bytes.size())));
    }
    load_or_build_model(f, cmd, r);
    r.model->gradient_checkpointing = f.gradient_checkpointing;
    attach_method(f, cmd, r);
    open_data(r);
    r.trainer = std::make_unique<Trainer>(*r.model, r.trainable(), TrainData{r.text.get(), r.task.get()}, f.train);
    // Block Linears a method made float32 again (PiSSA's residual, modules_to_save's original) go
    // back into blocks; the Trainer has checked that every rank starts from the same base.
    if (r.quantized) r.model->quantize(*r.quantized);
    if (f.resume) {
        ENGINE_CHECK(read_run_state(f.out).exists, ValueError, "--resume: {} holds no run to continue", f.out);
        load_run(f.out, *r.trainer, r.method);
        fmt::print("resumed from {} at step {}\n", run_files::optimizer(f.out), r.trainer->step());
    }
    return r;
}



// The resolved settings, the model's size and what trains.
void print_plan(const TrainFlags& f, Run& r) {
    nlohmann::json resolved = run_settings(f);
    resolved["data"] = r.data_path;
    resolved["out"] = f.out;
    resolved["model"] = nlohmann::json::parse(r.model->config.to_json());
    resolved["block"] = r.trainer->block();
    resolved["threads"] = num_threads();
    resolved["batch"] = f.train.batch;
    resolved["data_streams"] = f.train.data_streams;
    resolved["ranks"] = dist::size();
    resolved["gradient_checkpointing"] = f.gradient_checkpointing;
    if (r.method) resolved["peft_config"] = r.method->config_json();
    nlohmann::json same = resolved;   // what every rank must agree on (threads may differ)
    same.erase("threads");
    dist::check_same("the settings", same.dump());
    fmt::print("config: {}\n", resolved.dump());
    fmt::print("model: {} parameters, vocabulary {} ({})\n", r.model->params.count(), r.tok.vocab_size(),
               r.tok.kind() == Tokenizer::Kind::Char   ? "characters"
               : r.tok.kind() == Tokenizer::Kind::Byte ? "bytes"
                                                       : "BPE tokens");
    fmt::print("{}\n", trainable_line(*r.model, r.method));
    if (f.train.steps > 0 && f.train.warmup >= f.train.steps)
        fmt::print("note: the warmup of {} steps covers the whole run of {}: the learning rate never reaches --lr {}\n",
                   f.train.warmup, f.train.steps, shortest(f.train.lr));
}

double task_accuracy(const TrainFlags& f, Run& r) {
    return r.task ? greedy_exact_match(*r.model, *r.task, Split::Val, f.accuracy_examples) : NAN;
}

// A task's sample is the greedy answer to a validation prompt, as many tokens as the expected
// one, shown beside it: what the exact-match accuracy counts. Text data gets a continuation
// sampled at temperature 0.8.
void print_sample(const TrainFlags& f, Run& r, const char* when) {
    if (f.samples <= 0 || dist::rank() != 0) return;
    if (!r.task) {
        // Default prompt: a newline, or the vocabulary's first symbol for a corpus without one.
        std::string prompt = f.prompt.empty() ? "\n" : f.prompt;
        if (f.prompt.empty()) try { r.tok.encode(prompt); } catch (const ValueError&) { prompt = r.tok.decode({0}); }
        return fmt::print("sample {}: {}{}\n", when, prompt, sample_text(*r.model, r.tok, prompt, f.samples, f.common.seed));
    }
    const TaskDataset::Example& ex = r.task->examples(Split::Val).front();
    Rng rng(f.common.seed);
    const std::vector<int32_t> ids = r.tok.encode(ex.prompt);
    const std::vector<int32_t> out = r.model->generate(ids, int64_t(ex.tokens.size()) - ex.prompt_len, 0.f, 0, rng);
    fmt::print("sample {} (greedy): {}{}   (expected{})\n", when, ex.prompt,
               r.tok.decode(std::vector<int32_t>(out.begin() + int64_t(ids.size()), out.end())), ex.answer);
}

nlohmann::json with_config(nlohmann::json settings, const Run& r) {
    if (r.method) {   // as adapter_config.json holds it, so a resume can rebuild the method
        settings["peft_config"] = r.method->config_json();
        settings["peft_config"]["peft_type"] = r.method->peft_type();
    }
    return settings;
}

// Every step's wall time, tokens/s and all-reduce time (medians go into --json).
struct StepTimes {
    std::vector<double> ms, tokens_per_s, allreduce_ms;
};

// Trains to --steps, logging every step (log.csv, a progress line) and saving the run and the
// loss plot at every validation. Returns the last row and every step's times.

std::pair<LogRow, StepTimes> train_logged(const TrainFlags& f, Run& r) {
    RunLog log(f.out, f.resume ? r.trainer->step() : -1);
    const nlohmann::json settings = run_settings(f);
    const std::string title = fmt::format("loss: {} ({})", f.out, f.method.method);
    const bool tty = stdout_is_terminal();
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t first = r.trainer->step();
    const int64_t every = std::max<int64_t>(1, f.train.steps / 20);
    LogRow last;
    StepTimes times;
    r.trainer->run(
        [&](const LogRow& row) {
            last = row;
            times.ms.push_back(row.ms);
            times.tokens_per_s.push_back(row.tokens_per_s);
            times.allreduce_ms.push_back(row.allreduce_ms);
            log.add(row);
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double eta = el / double(row.step + 1 - first) * double(f.train.steps - row.step - 1);
            std::string line = fmt::format("step {}/{} | loss {:.4f}{} | lr {:.2e} | {:.0f} tok/s{} | ETA {:.0f}s",
                                           row.step + 1, f.train.steps, row.train_loss,
                                           std::isnan(row.val_loss) ? "" : fmt::format(" | val {:.4f}", row.val_loss), row.lr,
                                           row.tokens_per_s,
                                           dist::size() > 1 ? fmt::format(" | all-reduce {} {:.2f} ms", human_bytes(row.allreduce_bytes),
                                                                          row.allreduce_ms)
                                                            : "",
                                           eta);
            if (tty) fmt::print("\r{:<100}{}", line, std::isnan(row.val_loss) ? "" : "\n");
            else if ((row.step + 1) % every == 0 || !std::isnan(row.val_loss)) fmt::print("{}\n", line);
            std::fflush(stdout);
        },
        [&](const LogRow&) {
            log.flush();
            save_run(f.out, *r.trainer, *r.model, r.tok, r.method, with_config(settings, r));
            if (dist::rank() == 0)
                atomic_write_file(f.out + "/loss.svg", line_chart_svg(title, "step", "cross-entropy",
                                                                  {{"train", log.train_points()}, {"val", log.val_points()}}));
        });
    if (r.trainer->step() == first)   // nothing to train: still leave the files
        save_run(f.out, *r.trainer, *r.model, r.tok, r.method, with_config(settings, r));
    return {last, times};
}

// What it learned, where memory went, what was written (and --json's one line).
void report(const TrainFlags& f, Run& r, double acc_before, const LogRow& last, const StepTimes& times) {
    double acc_after = NAN;
    if (r.task) {
        acc_after = task_accuracy(f, r);
        fmt::print("task accuracy after: {:.1f}% (before: {:.1f}%)\n", 100 * acc_after, 100 * acc_before);
    }
    print_sample(f, r, "after");
    const MemStats ms = mem_stats();
    fmt::print("{}\n", memory_table(ms));
    const int64_t n = r.model->params.count();
    if (r.method)
        fmt::print("full fine-tuning of this model would need: grads {}, optimizer {} (4 and 8 bytes per parameter)\n",
                   mib(4 * n), mib(8 * n));
    fmt::print("wrote {}/{}, optimizer.safetensors, log.csv{}\n", f.out,
               r.method ? "adapter_config.json, adapter_model.safetensors" : "model.safetensors",
               std::ifstream(f.out + "/loss.svg").good() ? ", loss.svg" : "");
    int64_t saved_bytes = 0;
    for (const std::string& file : {run_files::adapter_weights(f.out), run_files::model(f.out)}) {
        struct stat st{};
        if (saved_bytes == 0 && stat(file.c_str(), &st) == 0) saved_bytes = int64_t(st.st_size);
    }
    fmt::print("saved file size: {}\n", human_bytes(saved_bytes));
    if (!f.json_out) return;
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v.empty() ? 0.0 : v[v.size() / 2];
    };
    nlohmann::json j = {{"steps", r.trainer->step()}, {"train_loss", last.train_loss}, {"val_loss", last.val_loss},
                        {"ms_per_step", median(times.ms)}, {"tokens_per_s", median(times.tokens_per_s)},
                        {"ranks", dist::size()}, {"global_batch", f.train.batch * dist::size() * f.train.grad_accum},
                        {"allreduce_bytes_per_step", last.allreduce_bytes}, {"allreduce_ms_per_step", median(times.allreduce_ms)},
                        {"saved_file_bytes", saved_bytes},
                        {"expected_trainable_params", r.method ? r.method->expected_params(r.model->config) : n},
                        {"trainable_params", r.trainable().count(true)}, {"all_params", n + (r.method ? r.method->params.count() : 0)},
                        {"method", f.method.method}};
    j.update(memory_json(ms));
    if (r.task) { j["accuracy_before"] = acc_before; j["accuracy_after"] = acc_after; }
    fmt::print("{}\n", j.dump());
}


void run_train(TrainFlags& f, const CLI::App& cmd) {
    f.common.apply();
    ENGINE_CHECK(!(f.resume && f.overwrite), ValueError, "--resume continues the run in --out, --overwrite replaces it: choose one");
    if (f.resume) continue_settings(f, cmd);
    apply_defaults(f, cmd);
    f.train.seed = f.common.seed;
    f.train.validate();
    quantize_format(f.quantize, f.method.method);   // an unknown format or full fine-tuning: refused before any write
    check_outputs(f);
    const bool writer = dist::rank() == 0;   // under MPI only rank 0 writes files
    const bool created = writer && !fs::exists(f.out);
    try {
        if (writer) ensure_dir(f.out);
        Run r = set_up(f, cmd);
        print_plan(f, r);
        const double acc_before = task_accuracy(f, r);
        if (r.task)
            fmt::print("task accuracy before: {:.1f}% (exact match, {} validation examples)\n", 100 * acc_before,
                       std::min<int64_t>(f.accuracy_examples, r.task->size(Split::Val)));
        print_sample(f, r, "before");
        auto [last, times] = train_logged(f, r);
        report(f, r, acc_before, last, times);
    } catch (...) {
        std::error_code ec;
        if (created) fs::remove(f.out, ec);   // only when still empty: a failed start leaves no folder behind
        throw;
    }
}

}  // namespace

void add_train_command(CLI::App& app) {
    auto f = std::make_shared<TrainFlags>();
    CLI::App* cmd = app.add_subcommand("train", "pretrain a GPT on a corpus, or fine-tune --base with --method");
    f->common.add(*cmd);
    cmd->add_option("--data", f->data, "dataset name (stories, add, reverse, dates) or a file path")->required();
    cmd->add_option("--out", f->out, "output folder")->required();
    cmd->add_option("--base", f->base, "base checkpoint or Hugging Face GPT-2 folder to fine-tune");
    cmd->add_flag("--resume", f->resume, "continue the run in --out exactly where it stopped (its settings are kept; "
                                         "--steps, --eval_every, --eval_iters, --skip_nonfinite may change)");
    cmd->add_flag("--overwrite", f->overwrite, "replace the run already in --out");
    cmd->add_flag("--json", f->json_out, "print the final results as one JSON object on the last line");
    add_number(cmd, "--n_layer", f->model.n_layer, "transformer blocks", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_head", f->model.n_head, "attention heads", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_embd", f->model.n_embd, "width", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--block", f->model.block_size, "block size (longest sequence); with --base: the training sequence length", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--dropout", f->model.dropout, "dropout probability", 0.0, 0.99)->capture_default_str();
    add_number(cmd, "--steps", f->train.steps, "optimizer steps (default: 1000 to pretrain; fine-tuning: the method's own)", 0, 1 << 30);
    add_number(cmd, "--batch", f->train.batch, "sequences per micro-batch", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--data_streams", f->train.data_streams,
               "draw each batch as N equal parts from N example streams: the examples `mpirun -np N` takes with --batch/N per rank",
               1, 1 << 16)->capture_default_str();
    add_number(cmd, "--grad_accum", f->train.grad_accum, "micro-batches per step", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--lr", f->train.lr, "peak learning rate (default: 0.001 to pretrain; fine-tuning: the method's own, "
               "full 3e-4, lora 1e-2, ia3 0.3, adapter 1e-2, prefix 0.1, prompt 0.3, ptuning 1e-2)", 1e-12, 10.0);
    add_number(cmd, "--min_lr", f->train.min_lr, "final learning rate of the cosine decay", 0.0, 10.0)->capture_default_str();
    add_number(cmd, "--warmup", f->train.warmup, "warmup steps (default: 50, at most a tenth of --steps)", 0, 1 << 30);
    add_number(cmd, "--weight_decay", f->train.weight_decay, "AdamW weight decay", 0.0, 10.0)->capture_default_str();
    add_number(cmd, "--grad_clip", f->train.grad_clip, "global-norm clipping (0 = off)", 0.0, 1e6)->capture_default_str();
    add_number(cmd, "--eval_every", f->train.eval_every, "validate and checkpoint every N steps", 0, 1 << 30)->capture_default_str();
    add_number(cmd, "--eval_iters", f->train.eval_iters, "validation batches", 1, 1 << 20)->capture_default_str();
    cmd->add_flag("--gradient_checkpointing", f->gradient_checkpointing,
                  "keep only each block's input and run the block again in backward: less memory, one more forward");
    add_quantize_flag(*cmd, f->quantize);
    cmd->add_flag("--skip_nonfinite", f->train.skip_nonfinite, "skip a batch whose loss or gradient is NaN/Inf instead of stopping");
    add_number(cmd, "--samples", f->samples, "characters to sample before and after (a task shows one greedy answer instead; 0: none)", 0, 100000)->capture_default_str();
    cmd->add_option("--prompt", f->prompt, "prompt for the samples (text data; default: a newline, or the vocabulary's first symbol)");
    f->method.add(*cmd);
    cmd->callback([f, cmd]() { run_train(*f, *cmd); });
}
