// cli/cmd_use.cpp — using a trained model: `generate`, `eval`, `forward`, `merge`, `inspect`, `export`.
// Each takes --model (a checkpoint or a Hugging Face GPT-2 folder) and, where it applies,
// --adapter DIR (several: the last is active).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sys/stat.h>
#include "common.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/hf_gpt2.h"
#include "train/trainer.h"
#include "data/generate.h"
#include "peft/mixed.h"
#include "peft/peft.h"
#include "train/run.h"

namespace {

struct Loaded {
    Checkpoint ck;
    std::unique_ptr<PeftModel> peft;
};

// The base checkpoint plus every --adapter folder, the last one active. "--adapter NAME=DIR"
// names an adapter (for --adapter_names); a plain DIR is "default", or "adapterI" among several.
// --quantize: then the base's block Linears are quantised as they are read (nothing here trains);
// a quantised checkpoint (peft quantize) is quantised already.
Loaded load_model(const std::string& ckpt, const std::vector<std::string>& adapters, const std::string& quantize) {
    const std::optional<QType> quant = quantize_format(quantize, "");   // an unknown format: refused before loading
    Loaded l{load_checkpoint(ckpt, quant), nullptr};   // quantised as it is read
    l.peft = std::make_unique<PeftModel>(*l.ck.model);
    Rng rng(0);
    for (size_t i = 0; i < adapters.size(); i++) {
        const size_t eq = adapters[i].find('=');
        const bool named = eq != std::string::npos && eq > 0 && adapters[i].find('/') > eq;
        const std::string name = named ? adapters[i].substr(0, eq)
                                       : adapters.size() == 1 ? "default" : fmt::format("adapter{}", i);
        ENGINE_CHECK(name != kBaseAdapterName, ValueError, "--adapter {}: the name {} stands for the base model", adapters[i],
                     kBaseAdapterName);
        l.peft->add(name, load_adapter(named ? adapters[i].substr(eq + 1) : adapters[i], *l.ck.model, rng));
    }
    return l;
}

struct UseFlags {
    CommonFlags common;
    std::string model, data, text, out;
    std::vector<std::string> adapters, adapter_names, prompts{"\n"};
    std::string quantize;   // generate, eval, forward
    int64_t max_new = 200, top_k = 20, batch = 16, eval_iters = 20, accuracy_examples = 200;
    float temperature = 0.8f;
    bool json_out = false, no_cache = false;
};

void add_model_flags(CLI::App* cmd, UseFlags& f, bool adapters = true, bool quantize = false) {
    f.common.add(*cmd);
    cmd->add_option("--model", f.model, "model checkpoint (model.safetensors) or Hugging Face GPT-2 folder")->required();
    if (adapters) cmd->add_option("--adapter", f.adapters, "adapter folder(s), or NAME=DIR; the last one is active");
    if (quantize) add_quantize_flag(*cmd, f.quantize);
}

// --out must not be, or resolve to, anything this command reads: the model, an adapter folder
// or a file in one. Checked before loading, so a refusal changes nothing.
void refuse_output_over_inputs(const UseFlags& f) {
    const std::string out = canonical_path(f.out);
    std::vector<std::pair<std::string, std::string>> inputs = {{f.model, canonical_path(f.model)}};
    for (const std::string& a : f.adapters)
        for (const char* part : {"", "/adapter_config.json", "/adapter_model.safetensors"})
            inputs.push_back({a + part, canonical_path(a + part)});
    for (const auto& [given, path] : inputs)
        ENGINE_CHECK(out != path, ValueError, "--out {} is an input of this command ({}): write the result elsewhere", f.out, given);
}

// A quantised base written where float32 weights are expected (a merged checkpoint, a GPT-2
// folder): its dequantised values, said in one line. Quantising them again is `peft quantize`.
void dequantize_with_note(GPT& model, const std::string& what) {
    const std::optional<QType> q = model.quantized_as();
    if (!q) return;
    model.dequantize();
    fmt::print(stderr, "note: the base is quantised ({}); {} holds its dequantised float32 weights\n", qtype_name(*q), what);
}

// `peft quantize`: the model with its block Linears as blocks, one safetensors file a quarter
// (q8_0) to an seventh (q4_0, nf4) the size of the float32 one, which every command loads as it is.
void run_quantize(UseFlags& f) {
    f.common.apply();
    const std::optional<QType> quant = quantize_format(f.quantize, "");
    ENGINE_CHECK(quant, ValueError, "--quantize is required: q8_0, q4_0 or nf4");
    refuse_output_over_inputs(f);
    Checkpoint ck = load_checkpoint(f.model, quant);
    save_checkpoint(f.out, *ck.model, ck.tokenizer);
    int64_t blocks = 0;
    for (auto& [name, lin] : ck.model->linears()) blocks += int64_t(lin->qweight->nbytes());
    fmt::print("wrote {}: {} block Linears as {} ({:.1f} MiB of blocks; embeddings, LayerNorms and biases float32)\n",
               f.out, ck.model->linears().size(), qtype_name(*quant), double(blocks) / (1 << 20));
}

// --adapter_names: one per prompt (or one for all), each a loaded adapter's name or __base__.
void run_generate(UseFlags& f) {
    f.common.apply();
    ENGINE_CHECK(f.adapter_names.size() <= 1 || f.adapter_names.size() == f.prompts.size(), ValueError,
                 "--adapter_names: {} names for {} prompts (give one per --prompt, or one for all)", f.adapter_names.size(),
                 f.prompts.size());
    Loaded l = load_model(f.model, f.adapters, f.quantize);
    Rng rng(f.common.seed);
    for (size_t i = 0; i < f.prompts.size(); i++) {
        std::unique_ptr<MixedBatch> mix;
        if (!f.adapter_names.empty())
            mix = std::make_unique<MixedBatch>(*l.peft, std::vector<std::string>{f.adapter_names[f.adapter_names.size() == 1 ? 0 : i]});
        std::vector<int32_t> ids = l.ck.tokenizer.encode(f.prompts[i]);
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> out = l.ck.model->generate(ids, f.max_new, f.temperature, f.top_k, rng, !f.no_cache);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (f.adapter_names.size() > 1) fmt::print("[{}] ", f.adapter_names[i]);
        fmt::print("{}\n", l.ck.tokenizer.decode(out));
        std::fflush(stdout);
        fmt::print(stderr, "{} tokens in {:.2f} s: {:.1f} tokens/s ({})\n", f.max_new, s, s > 0 ? double(f.max_new) / s : 0.0,
                   f.no_cache ? "no cache: the whole context every token" : "KV cache");
    }
}

void run_eval(UseFlags& f) {
    f.common.apply();
    Loaded l = load_model(f.model, f.adapters, f.quantize);
    GPT& m = *l.ck.model;
    // --adapter_names: sample b of every batch runs through adapter_names[b mod n] (a mixed batch)
    std::unique_ptr<MixedBatch> mix;
    if (!f.adapter_names.empty()) mix = std::make_unique<MixedBatch>(*l.peft, f.adapter_names, true);
    const std::string path = resolve_dataset(f.data);
    nlohmann::json j = {{"data", path}};
    std::unique_ptr<TextDataset> text;
    std::unique_ptr<TaskDataset> task;
    if (is_task_file(path)) task = std::make_unique<TaskDataset>(path, l.ck.tokenizer, m.token_room());
    else text = std::make_unique<TextDataset>(path, l.ck.tokenizer);
    TrainData data{text.get(), task.get()};
    j["val_loss"] = evaluate(m, data, f.batch, data_block(m, data, 0), f.eval_iters, f.common.seed);
    fmt::print("validation loss: {:.4f} ({} batches of {})\n", j["val_loss"].get<double>(), f.eval_iters, f.batch);
    if (task) {
        j["accuracy"] = greedy_exact_match(m, *task, Split::Val, f.accuracy_examples);
        fmt::print("task accuracy: {:.1f}% (exact match, greedy)\n", 100 * j["accuracy"].get<double>());
    }
    if (f.json_out) fmt::print("{}\n", j.dump());
}

void run_forward(UseFlags& f) {
    f.common.apply();
    refuse_output_over_inputs(f);
    Loaded l = load_model(f.model, f.adapters, f.quantize);
    std::vector<int32_t> ids = l.ck.tokenizer.encode(f.text);
    ENGINE_CHECK(!ids.empty(), ValueError, "--text is empty");
    NoGradGuard ng;
    Tensor tokens = Tensor::from_ints(ids, {int64_t(ids.size())});
    Tensor logits = l.ck.model->forward(tokens.view_as({1, int64_t(ids.size())}));
    save_safetensors(f.out, {{"tokens", tokens}, {"logits", logits.view_as({int64_t(ids.size()), logits.size(2)})}},
                     {{"format", "pt"}});
    fmt::print("wrote {}: tokens [{}], logits [{}, {}]\n", f.out, ids.size(), ids.size(), logits.size(2));
}

void run_merge(UseFlags& f) {
    f.common.apply();
    ENGINE_CHECK(f.adapters.size() == 1, ValueError, "merge takes exactly one --adapter, got {}", f.adapters.size());
    refuse_output_over_inputs(f);
    Loaded l = load_model(f.model, f.adapters, f.quantize);
    Method* m = l.peft->active();
    ENGINE_CHECK(m->can_merge(), ValueError, "{} adapters cannot be merged into the base weights (LORA, IA3, LOHA, LOKR, VERA and OFT can)",
                 m->peft_type());
    // logits before merging, to state how exactly the merge reproduces them
    std::vector<int32_t> probe;
    for (int64_t i = 0; i < std::min<int64_t>(16, l.ck.model->config.block_size); i++)
        probe.push_back(int32_t(i % l.ck.model->config.vocab_size));
    NoGradGuard ng;
    Tensor ids = Tensor::from_ints(probe, {1, int64_t(probe.size())});
    std::vector<float> before = l.ck.model->forward(ids).to_vector();
    m->merge(*l.ck.model);   // the merged weights are now the base; the adapter's seams are gone
    dequantize_with_note(*l.ck.model, "the merged checkpoint");
    std::vector<float> after = l.ck.model->forward(ids).to_vector();
    double worst = 0;
    for (size_t i = 0; i < before.size(); i++) worst = std::max(worst, double(std::fabs(before[i] - after[i])));
    save_checkpoint(f.out, *l.ck.model, l.ck.tokenizer);
    fmt::print("merged {} into {}: wrote {} (max |logit difference| merged vs unmerged: {:.3g})\n", m->peft_type(),
               f.model, f.out, worst);
}

// A safetensors file from its header alone (any size): each tensor's dtype and shape, the metadata.
void list_tensors(const std::string& file) {
    SafeTensorsFile st(file);
    int64_t total = 0;
    fmt::print("{}: {} tensors\n", st.path(), st.tensors().size());
    for (const TensorInfo& t : st.tensors()) {
        fmt::print("  {:<60} {} {}\n", t.name, t.dtype, t.shape.str());
        total += t.shape.numel();
    }
    fmt::print("{} values in all\nmetadata:\n", total);
    for (auto& [k, v] : st.metadata()) fmt::print("  {}: {}\n", k, v.size() > 300 ? v.substr(0, 300) + "..." : v);
}

void run_inspect(const std::string& path) {
    struct stat st{};
    ENGINE_CHECK(stat(path.c_str(), &st) == 0, FileError, "{}: no such file or folder", path);
    std::string file = path;
    if (is_hf_folder(path)) {   // its config as this engine reads it
        fmt::print("Hugging Face GPT-2 folder {}\nmodel config: {}\n", path, read_hf_gpt2_config(path + "/config.json").to_json());
        file = path + "/model.safetensors";
    } else if (S_ISDIR(st.st_mode)) {
        const std::string cfg = path + "/adapter_config.json";
        fmt::print("adapter folder {}\n{}:\n{}\n", path, cfg, read_file(cfg, 1 << 20));
        file = path + "/adapter_model.safetensors";
    }
    list_tensors(file);
}

// The base (with the adapter merged, when one is given) as a Hugging Face GPT-2 folder.
void run_export(UseFlags& f) {
    f.common.apply();
    ENGINE_CHECK(f.adapters.size() <= 1, ValueError, "export takes at most one --adapter, got {}", f.adapters.size());
    std::vector<std::string> held = run_files::present(f.out);   // a model, an adapter or a run's state
    if (std::filesystem::exists(f.out + "/config.json")) held.push_back("config.json");
    ENGINE_CHECK(held.empty(), ValueError, "--out {} already holds {}: export writes a new folder, never over another model",
                 f.out, fmt::join(held, ", "));
    refuse_output_over_inputs(f);   // e.g. --out the model file itself
    Loaded l = load_model(f.model, f.adapters, f.quantize);
    if (Method* m = l.peft->active()) {
        ENGINE_CHECK(m->can_merge(), ValueError,
                     "{} adapters cannot be merged into the base weights, so they cannot be exported into a GPT-2 "
                     "folder (only LORA and IA3 can)", m->peft_type());
        m->merge(*l.ck.model);
    }
    dequantize_with_note(*l.ck.model, "the GPT-2 folder");
    export_hf_gpt2(f.out, *l.ck.model, l.ck.tokenizer);
    fmt::print("wrote {}: config.json, model.safetensors ({} parameters{}){}\n", f.out, l.ck.model->params.count(),
               f.adapters.empty() ? "" : ", adapter merged",
               l.ck.tokenizer.kind() == Tokenizer::Kind::Byte ? "" : ", tokenizer files");
}

}  // namespace

void add_export_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("export", "write a model (adapter merged) as a Hugging Face GPT-2 folder");
    add_model_flags(cmd, *f);
    cmd->add_option("--out", f->out, "output folder (config.json, model.safetensors, tokenizer files)")->required();
    cmd->callback([f]() { run_export(*f); });
}

void add_generate_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("generate", "sample text from a model (optionally with adapters)");
    add_model_flags(cmd, *f, true, true);
    cmd->add_option("--prompt", f->prompts, "text to continue (several: one generation each)");
    cmd->add_option("--adapter_names", f->adapter_names, "the adapter (NAME of --adapter NAME=DIR, or __base__) per --prompt")
        ->delimiter(',');
    add_number(cmd, "--max_new", f->max_new, "tokens to sample", 0, 1 << 20)->capture_default_str();
    add_number(cmd, "--temperature", f->temperature, "0 = greedy", 0.0, 100.0)->capture_default_str();
    add_number(cmd, "--top_k", f->top_k, "sample among the k likeliest (0 = all)", 0, 1 << 20)->capture_default_str();
    cmd->add_flag("--no_cache", f->no_cache, "run the whole context for every new token (the plain path, no KV cache)");
    cmd->callback([f]() { run_generate(*f); });
}

void add_eval_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("eval", "validation loss (and task accuracy) of a model on a dataset");
    add_model_flags(cmd, *f, true, true);
    cmd->add_option("--data", f->data, "dataset name or path")->required();
    cmd->add_option("--adapter_names", f->adapter_names,
                    "adapters mixed in each batch: sample b uses name b mod n (NAME of --adapter NAME=DIR, or __base__)")
        ->delimiter(',');
    add_number(cmd, "--batch", f->batch, "sequences per batch", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--eval_iters", f->eval_iters, "batches", 1, 1 << 20)->capture_default_str();
    add_number(cmd, "--accuracy_examples", f->accuracy_examples, "task examples for accuracy", 1, 1 << 20);
    cmd->add_flag("--json", f->json_out, "print the results as one JSON object on the last line");
    cmd->callback([f]() { run_eval(*f); });
}

void add_forward_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("forward", "write the tokens and logits of a text to a safetensors file");
    add_model_flags(cmd, *f, true, true);
    cmd->add_option("--text", f->text, "input text")->required();
    cmd->add_option("--out", f->out, "output .safetensors file")->required();
    cmd->callback([f]() { run_forward(*f); });
}

void add_merge_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("merge", "merge an adapter (LoRA, DoRA, IA3, LoHa, LoKr, VeRA, OFT) into the base weights");
    add_model_flags(cmd, *f);
    cmd->add_option("--out", f->out, "merged checkpoint file")->required();
    cmd->callback([f]() { run_merge(*f); });
}

void add_quantize_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("quantize", "write a model with its block Linears quantised (q8_0, q4_0, nf4)");
    add_model_flags(cmd, *f, false, true);
    cmd->add_option("--out", f->out, "quantised checkpoint file")->required();
    cmd->callback([f]() { run_quantize(*f); });
}

void add_inspect_command(CLI::App& app) {
    auto f = std::make_shared<UseFlags>();
    CLI::App* cmd = app.add_subcommand("inspect", "show what a checkpoint or adapter folder holds");
    f->common.add(*cmd);
    cmd->add_option("path", f->model, "a .safetensors file, an adapter folder or a Hugging Face GPT-2 folder")->required();
    cmd->callback([f]() {
        f->common.apply();
        run_inspect(f->model);
    });
}

// `peft status DIR`: one line saying whether DIR holds a run and whether it reached its last
// step — "finished: step 1500 of 1500", "unfinished: step 250 of 1500", or "none".
void add_status_command(CLI::App& app) {
    auto dir = std::make_shared<std::string>();
    auto common = std::make_shared<CommonFlags>();
    CLI::App* cmd = app.add_subcommand("status", "say whether a run folder holds a finished or an unfinished run");
    common->add(*cmd);
    cmd->add_option("dir", *dir, "a run folder (--out of peft train)")->required();
    cmd->callback([dir, common]() {
        common->apply();
        const RunState rs = read_run_state(*dir);
        if (!rs.exists) return fmt::print("none\n");
        if (rs.steps < 0) return fmt::print("unknown: step {} (the run did not record how many steps it planned)\n", rs.step);
        fmt::print("{}: step {} of {}\n", rs.finished() ? "finished" : "unfinished", rs.step, rs.steps);
    });
}

void add_gen_data_command(CLI::App& app) {
    auto dir = std::make_shared<std::string>("data");
    auto common = std::make_shared<CommonFlags>();
    CLI::App* cmd = app.add_subcommand("gen-data", "regenerate the shipped toy datasets (deterministic)");
    common->add(*cmd);
    cmd->add_option("dir", *dir, "folder to write corpus.txt and tasks/ into")->capture_default_str();
    cmd->callback([dir, common]() {
        common->apply();
        write_shipped_datasets(*dir);
        fmt::print("wrote the shipped datasets into {}\n", *dir);
    });
}
