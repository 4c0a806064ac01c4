// train/run.cpp — saving a run's folder and continuing from it; log.csv.
#include "run.h"
#include <sys/stat.h>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include "engine/dist.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/data_parallel.h"
#include "peft/peft.h"

static const std::string kParamPrefix = "train.param.";

void save_run(const std::string& dir, const Trainer& trainer, const GPT& model, const Tokenizer& tok,
              const Method* method, const nlohmann::json& settings) {
    check_replicas(method ? method->params : model.params, trainer.optimizer(), fmt::format("at step {}", trainer.step()));
    std::map<std::string, std::string> meta = trainer.state_metadata();   // gathers every rank's streams
    if (dist::rank() != 0) return;
    NamedTensors state = trainer.optimizer_tensors();
    if (method)
        for (const Param& p : method->params.all()) state.push_back({kParamPrefix + p.name, p.tensor});
    if (!settings.is_null()) meta["peft.run_settings"] = settings.dump();
    save_safetensors(run_files::optimizer(dir), state, meta);
    if (method) {
        save_adapter(dir, *method, model);
        save_converted_lora(dir, *method, model);   // PiSSA / OLoRA: also as a plain LoRA (converted_lora/)
    } else save_checkpoint(run_files::model(dir), model, tok, meta);
}

void load_run(const std::string& dir, Trainer& trainer, Method* method) {
    const std::string file = run_files::optimizer(dir);
    SafeTensors st = load_safetensors(file);
    std::map<std::string, Tensor> mine, opt;
    for (auto& [k, t] : st.tensors) {
        if (k.rfind(kParamPrefix, 0) == 0) mine[k.substr(kParamPrefix.size())] = t;
        else if (k.rfind("optim.", 0) == 0) opt[k] = t;
    }
    // The method's tensors by their internal names (Method::load_state, not a subclass's HF-key reader).
    if (method) method->Method::load_state(mine, file);
    trainer.restore(st.metadata, opt);
}

std::vector<std::string> run_files::present(const std::string& dir) {
    std::vector<std::string> found;
    for (const std::string& f : {model(dir), adapter_weights(dir), dir + "/adapter_config.json", optimizer(dir)}) {
        struct stat st{};
        if (::stat(f.c_str(), &st) == 0) found.push_back(f.substr(dir.size() + 1));
    }
    return found;
}

RunState read_run_state(const std::string& dir) {
    RunState rs;
    std::map<std::string, std::string> meta;
    struct stat st{};
    for (const std::string& f : {run_files::optimizer(dir), run_files::model(dir)}) {
        if (::stat(f.c_str(), &st) != 0) continue;
        meta = load_safetensors(f).metadata;
        break;
    }
    auto it = meta.find("peft.train_state");
    if (it == meta.end()) return rs;
    const nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) return rs;
    rs.exists = true;
    rs.step = j["step"].get<int64_t>();
    if (j.contains("steps") && j["steps"].is_number_integer()) rs.steps = j["steps"].get<int64_t>();
    if (meta.count("peft.run_settings")) rs.settings = nlohmann::json::parse(meta.at("peft.run_settings"), nullptr, false);
    if (rs.settings.is_discarded()) rs.settings = nullptr;
    return rs;
}

static const char* kLogHeader = "step,train_loss,val_loss,lr,tokens_per_s\n";

RunLog::RunLog(const std::string& dir, int64_t resume_step) {
    if (dist::rank() != 0) return;   // under MPI rank 0 keeps the log
    const std::string path = run_files::log(dir);
    std::string kept = kLogHeader;
    struct stat st{};
    if (resume_step >= 0 && ::stat(path.c_str(), &st) == 0) {
        std::istringstream in(read_file(path, size_t(1) << 30));
        std::string line;
        std::getline(in, line);   // the header
        while (std::getline(in, line)) {
            std::istringstream row(line);
            std::string step, train, val;
            std::getline(row, step, ',');
            std::getline(row, train, ',');
            std::getline(row, val, ',');
            char* end = nullptr;
            const long long s = std::strtoll(step.c_str(), &end, 10);
            if (step.empty() || *end || s > resume_step || train.empty()) continue;   // trained again after the checkpoint
            kept += line + "\n";
            train_.push_back({double(s), std::strtod(train.c_str(), nullptr)});
            if (!val.empty()) val_.push_back({double(s), std::strtod(val.c_str(), nullptr)});
        }
    }
    atomic_write_file(path, kept);
    csv_.open(path, std::ios::app);
}
void RunLog::add(const LogRow& r) {
    if (dist::rank() != 0) return;
    const bool has_val = !std::isnan(r.val_loss);
    csv_ << fmt::format("{},{:.6f},{},{:.6g},{:.1f}\n", r.step + 1, r.train_loss,
                        has_val ? fmt::format("{:.6f}", r.val_loss) : std::string(), r.lr, r.tokens_per_s);
    train_.push_back({double(r.step + 1), r.train_loss});
    if (has_val) val_.push_back({double(r.step + 1), r.val_loss});
}
