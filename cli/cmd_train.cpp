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
#include "engine/safetensors.h"
#include "method_flags.h"
#include "models/checkpoint.h"
#include "models/train.h"
#include "peft/peft.h"
#include "svg.h"

namespace {

struct TrainFlags {
    CommonFlags common;
    MethodFlags method;
    std::string data, out, base, prompt = "\n";
    GPTConfig model;
    TrainConfig train;
    bool resume = false, json_out = false, gradient_checkpointing = false;
    int samples = 200;
    int64_t accuracy_examples = 100;
};

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

void run_train(TrainFlags& f, const CLI::App& cmd) {
    f.common.apply();
    f.train.seed = f.common.seed;
    f.train.validate();
    const bool writer = dist::rank() == 0;   // under MPI only rank 0 writes files
    if (writer) ensure_dir(f.out);
    const std::string path = resolve_dataset(f.data);
    if (dist::size() > 1) {   // every rank reads the data itself: the same bytes?
        const std::string bytes = read_file(path, size_t(kMaxDatasetBytes));
        dist::check_same("the contents of the data file " + path,
                         fmt::format("{:016x}", dist::hash_bytes(bytes.data(), bytes.size())));
    }
    const bool task_data = is_task_file(path);

    // ---- the model: a base checkpoint, this run's own checkpoint (--resume, full), or a new one
    std::unique_ptr<GPT> model;
    Tokenizer tok = Tokenizer::bytes();
    std::unique_ptr<TextDataset> text;
    std::unique_ptr<TaskDataset> task;
    const std::string own_ckpt = f.out + "/model.safetensors", state_file = f.out + "/optimizer.safetensors";
    ENGINE_CHECK(f.method.method == "full" || !f.base.empty(), ValueError,
                 "--method {} fine-tunes a base model: give --base CKPT (pretrain one first with --method full)",
                 f.method.method);
    if (!f.base.empty() || (f.resume && f.method.method == "full")) {
        Checkpoint ck = load_checkpoint(f.resume && f.method.method == "full" ? own_ckpt : f.base);
        model = std::move(ck.model);
        tok = ck.tokenizer;
        for (const char* flag : {"--n_layer", "--n_head", "--n_embd"})
            ENGINE_CHECK(!cmd.count(flag), ValueError, "{} cannot change a loaded model (it is {})", flag, model->config.to_json());
        if (cmd.count("--block")) {   // on a loaded model: the training sequence length (e.g. 256 of GPT-2's 1024)
            ENGINE_CHECK(f.model.block_size <= model->config.block_size, ValueError,
                         "--block {} is larger than the loaded model's block_size {}", f.model.block_size,
                         model->config.block_size);
            f.train.block = f.model.block_size;
        }
        if (cmd.count("--dropout")) model->config.dropout = f.model.dropout;
    } else {
        text = std::make_unique<TextDataset>(path);
        tok = text->tokenizer();
        f.model.vocab_size = tok.vocab_size();
        Rng init(f.common.seed);
        model = std::make_unique<GPT>(f.model, init);
    }

    // ---- the method (or every parameter, for full fine-tuning)
    model->gradient_checkpointing = f.gradient_checkpointing;
    PeftModel peft(*model);
    Method* method = nullptr;
    if (f.method.method != "full") {
        Rng mrng(f.common.seed + 7);
        peft.add("default", f.method.make(cmd, tok, *model, mrng));
        method = peft.active();
    }
    ParamList& trainable = method ? method->params : model->params;
    if (!text && !task) {
        if (task_data) {
            const int64_t room = model->config.block_size - (model->hooks ? model->hooks->n_virtual() + model->hooks->n_prefix() : 0);
            task = std::make_unique<TaskDataset>(path, tok, room);
        } else {
            text = std::make_unique<TextDataset>(path, tok);
        }
    }
    TrainData data{text.get(), task.get()};
    Trainer trainer(*model, trainable, data, f.train);
    if (f.resume) {
        SafeTensors st = load_safetensors(state_file);
        if (method) {   // the method's own tensors were saved beside the optimizer state
            std::map<std::string, Tensor> mine;
            for (auto& [k, t] : st.tensors) if (k.rfind("train.param.", 0) == 0) mine[k.substr(12)] = t;
            method->Method::load_state(mine, state_file);
        }
        std::map<std::string, Tensor> opt;
        for (auto& [k, t] : st.tensors) if (k.rfind("optim.", 0) == 0) opt[k] = t;
        trainer.restore(st.metadata, opt);
        fmt::print("resumed from {} at step {}\n", state_file, trainer.step());
    }

    // ---- say what will happen
    nlohmann::json resolved = {{"data", path}, {"out", f.out}, {"method", f.method.method},
                               {"model", nlohmann::json::parse(model->config.to_json())},
                               {"steps", f.train.steps}, {"batch", f.train.batch}, {"block", trainer.block()},
                               {"ranks", dist::size()}, {"global_batch", f.train.batch * dist::size() * f.train.grad_accum},
                               {"data_streams", f.train.data_streams},
                               {"grad_accum", f.train.grad_accum}, {"lr", f.train.lr}, {"min_lr", f.train.min_lr},
                               {"warmup", f.train.warmup}, {"weight_decay", f.train.weight_decay},
                               {"grad_clip", f.train.grad_clip}, {"eval_every", f.train.eval_every},
                               {"seed", f.common.seed}};
    if (method) resolved["peft_config"] = method->config_json();
    dist::check_same("the settings", resolved.dump());
    fmt::print("config: {}\n", resolved.dump());
    fmt::print("model: {} parameters, vocabulary {} ({})\n", model->params.count(), tok.vocab_size(),
               tok.kind() == Tokenizer::Kind::Char ? "characters" : tok.kind() == Tokenizer::Kind::Byte ? "bytes" : "BPE tokens");
    fmt::print("{}\n", trainable_line(*model, method));
    double acc_before = NAN, acc_after = NAN;
    if (task) {
        acc_before = greedy_exact_match(*model, *task, Split::Val, f.accuracy_examples);
        fmt::print("task accuracy before: {:.1f}% (exact match, {} validation examples)\n", 100 * acc_before,
                   std::min<int64_t>(f.accuracy_examples, task->size(Split::Val)));
    }
    // A task's sample is the greedy answer to a validation prompt, as many tokens as the expected
    // one, shown beside it: what the exact-match accuracy counts. Text data gets a continuation
    // sampled at temperature 0.8.
    auto print_sample = [&](const char* when) {
        if (f.samples <= 0 || !writer) return;
        if (!task)
            return fmt::print("sample {}: {}{}\n", when, f.prompt, sample_text(*model, tok, f.prompt, f.samples, f.common.seed));
        const TaskDataset::Example& ex = task->examples(Split::Val).front();
        Rng rng(f.common.seed);
        const std::vector<int32_t> ids = tok.encode(ex.prompt);
        const std::vector<int32_t> out = model->generate(ids, int64_t(ex.tokens.size()) - ex.prompt_len, 0.f, 0, rng);
        fmt::print("sample {} (greedy): {}{}   (expected{})\n", when, ex.prompt,
                   tok.decode(std::vector<int32_t>(out.begin() + int64_t(ids.size()), out.end())), ex.answer);
    };
    print_sample("before");

    // ---- train, logging every step, checkpointing at every validation
    std::ofstream csv;
    if (writer) csv.open(f.out + "/log.csv", f.resume ? std::ios::app : std::ios::trunc);
    if (!f.resume) csv << "step,train_loss,val_loss,lr,tokens_per_s\n";
    std::vector<std::pair<double, double>> train_pts, val_pts;
    const bool tty = stdout_is_terminal();
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t first = trainer.step();
    const int64_t every = std::max<int64_t>(1, f.train.steps / 20);
    auto save_all = [&]() {
        check_replicas(trainable, trainer.optimizer(), fmt::format("at step {}", trainer.step()));
        std::map<std::string, std::string> meta = trainer.state_metadata();   // gathers every rank's streams
        if (!writer) return;
        NamedTensors state = trainer.optimizer_tensors();
        if (method)
            for (const Param& p : method->params.all()) state.push_back({"train.param." + p.name, p.tensor});
        save_safetensors(state_file, state, meta);
        if (method) save_adapter(f.out, *method, *model);
        else save_checkpoint(own_ckpt, *model, tok, meta);
    };
    LogRow last;
    std::vector<double> step_ms, step_tps, comm_ms;
    trainer.run(
        [&](const LogRow& r) {
            last = r;
            step_ms.push_back(r.ms);
            step_tps.push_back(r.tokens_per_s);
            comm_ms.push_back(r.allreduce_ms);
            csv << fmt::format("{},{:.6f},{},{:.6g},{:.1f}\n", r.step + 1, r.train_loss,
                               std::isnan(r.val_loss) ? std::string() : fmt::format("{:.6f}", r.val_loss), r.lr, r.tokens_per_s);
            train_pts.push_back({double(r.step + 1), r.train_loss});
            if (!std::isnan(r.val_loss)) val_pts.push_back({double(r.step + 1), r.val_loss});
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double eta = el / double(r.step + 1 - first) * double(f.train.steps - r.step - 1);
            std::string line = fmt::format("step {}/{} | loss {:.4f}{} | lr {:.2e} | {:.0f} tok/s{} | ETA {:.0f}s",
                                           r.step + 1, f.train.steps, r.train_loss,
                                           std::isnan(r.val_loss) ? "" : fmt::format(" | val {:.4f}", r.val_loss), r.lr,
                                           r.tokens_per_s,
                                           dist::size() > 1 ? fmt::format(" | all-reduce {} {:.2f} ms", human_bytes(r.allreduce_bytes),
                                                                          r.allreduce_ms) : "",
                                           eta);
            if (tty) fmt::print("\r{:<100}{}", line, std::isnan(r.val_loss) ? "" : "\n");
            else if ((r.step + 1) % every == 0 || !std::isnan(r.val_loss)) fmt::print("{}\n", line);
            std::fflush(stdout);
        },
        [&](const LogRow&) {
            csv.flush();
            save_all();
            if (writer) atomic_write_file(f.out + "/loss.svg",
                              line_chart_svg("loss", "step", "cross-entropy", {{"train", train_pts}, {"val", val_pts}}));
        });
    if (trainer.step() == first) save_all();   // nothing to train (resumed at the end): still leave the files

    // ---- what it learned, and where memory went
    if (task) {
        acc_after = greedy_exact_match(*model, *task, Split::Val, f.accuracy_examples);
        fmt::print("task accuracy after: {:.1f}% (before: {:.1f}%)\n", 100 * acc_after, 100 * acc_before);
    }
    print_sample("after");
    const MemStats ms = mem_stats();
    fmt::print("{}\n", memory_table(ms));
    if (method) {
        const int64_t n = model->params.count();
        fmt::print("full fine-tuning of this model would need: grads {}, optimizer {} (4 and 8 bytes per parameter)\n",
                   mib(4 * n), mib(8 * n));
    }
    fmt::print("wrote {}/{}, log.csv, loss.svg\n", f.out, method ? "adapter_config.json, adapter_model.safetensors" : "model.safetensors");
    int64_t saved_bytes = 0;
    for (const char* name : {"/adapter_model.safetensors", "/model.safetensors"}) {
        struct stat st{};
        if (saved_bytes == 0 && stat((f.out + name).c_str(), &st) == 0) saved_bytes = int64_t(st.st_size);
    }
    fmt::print("saved file size: {}\n", human_bytes(saved_bytes));
    if (f.json_out) {
        auto median = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v.empty() ? 0.0 : v[v.size() / 2]; };
        nlohmann::json j = {{"steps", trainer.step()}, {"train_loss", last.train_loss}, {"val_loss", last.val_loss},
                            {"ms_per_step", median(step_ms)}, {"tokens_per_s", median(step_tps)},
                            {"ranks", dist::size()}, {"global_batch", f.train.batch * dist::size() * f.train.grad_accum},
                            {"allreduce_bytes_per_step", last.allreduce_bytes}, {"allreduce_ms_per_step", median(comm_ms)},
                            {"saved_file_bytes", saved_bytes},
                            {"expected_trainable_params", method ? method->expected_params(model->config) : model->params.count()},
                            {"trainable_params", trainable.count(true)}, {"all_params", model->params.count() + (method ? method->params.count() : 0)},
                            {"method", f.method.method}};
        j.update(memory_json(ms));
        if (task) { j["accuracy_before"] = acc_before; j["accuracy_after"] = acc_after; }
        fmt::print("{}\n", j.dump());
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
    cmd->add_flag("--resume", f->resume, "continue the run in --out exactly where it stopped");
    cmd->add_flag("--json", f->json_out, "print the final results as one JSON object on the last line");
    add_number(cmd, "--n_layer", f->model.n_layer, "transformer blocks", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_head", f->model.n_head, "attention heads", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_embd", f->model.n_embd, "width", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--block", f->model.block_size, "block size (longest sequence); with --base: the training sequence length", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--dropout", f->model.dropout, "dropout probability", 0.0, 0.99)->capture_default_str();
    add_number(cmd, "--steps", f->train.steps, "optimizer steps", 0, 1 << 30)->capture_default_str();
    add_number(cmd, "--batch", f->train.batch, "sequences per micro-batch", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--data_streams", f->train.data_streams,
               "draw each batch as N equal parts from N example streams: the examples `mpirun -np N` takes with --batch/N per rank",
               1, 1 << 16)->capture_default_str();
    add_number(cmd, "--grad_accum", f->train.grad_accum, "micro-batches per step", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--lr", f->train.lr, "peak learning rate", 1e-12, 10.0)->capture_default_str();
    add_number(cmd, "--min_lr", f->train.min_lr, "final learning rate of the cosine decay", 0.0, 10.0)->capture_default_str();
    add_number(cmd, "--warmup", f->train.warmup, "warmup steps", 0, 1 << 30)->capture_default_str();
    add_number(cmd, "--weight_decay", f->train.weight_decay, "AdamW weight decay", 0.0, 10.0)->capture_default_str();
    add_number(cmd, "--grad_clip", f->train.grad_clip, "global-norm clipping (0 = off)", 0.0, 1e6)->capture_default_str();
    add_number(cmd, "--eval_every", f->train.eval_every, "validate and checkpoint every N steps", 0, 1 << 30)->capture_default_str();
    add_number(cmd, "--eval_iters", f->train.eval_iters, "validation batches", 1, 1 << 20)->capture_default_str();
    cmd->add_flag("--gradient_checkpointing", f->gradient_checkpointing,
                  "keep only each block's input and run the block again in backward: less memory, one more forward");
    cmd->add_flag("--skip_nonfinite", f->train.skip_nonfinite, "skip a batch whose loss or gradient is NaN/Inf instead of stopping");
    add_number(cmd, "--samples", f->samples, "characters to sample before and after (a task shows one greedy answer instead; 0: none)", 0, 100000)->capture_default_str();
    cmd->add_option("--prompt", f->prompt, "prompt for the samples (text data)");
    f->method.add(*cmd);
    cmd->callback([f, cmd]() { run_train(*f, *cmd); });
}
