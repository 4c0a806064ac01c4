// tests/test_data_parallel.cpp — data-parallel training (engine/dist.h, models/data_parallel.h).
//
// The lesson: N ranks with batch B take the same steps as one process with batch N·B over the
// same examples. `--data_streams N` (TrainConfig::data_streams) makes one process draw those
// examples — stream s is what rank s draws — so the two runs can be compared tensor by tensor.
//
// The two-rank cases run `mpirun -np 2` on this machine: this test program itself, with the
// skipped "worker" case selected, trains every method under MPI and rank 0 saves the trained
// tensors; the case that launched it trains the same in one process and compares (≤ 1e-5 after
// 20 steps). Where mpirun is missing they say so and skip (`make test` installs Open MPI).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "helpers.h"
#include "engine/dist.h"
#include "engine/safetensors.h"
#include "train/trainer.h"
#include "peft/peft.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int64_t kSteps = 20;
constexpr int64_t kRankBatch = 2;   // per rank; one process takes 2 ranks' worth
const char* const kMethods[] = {"FULL", "LORA", "IA3", "BOTTLENECK", "PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"};

// Every method's config for the tiny model, dropout off (dropout masks are drawn per rank, so
// with dropout the runs agree in distribution, not in bits).
json method_config(const std::string& type) {
    if (type == "LORA") return {{"peft_type", type}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0}};
    if (type == "PREFIX_TUNING" || type == "PROMPT_TUNING" || type == "P_TUNING")
        return {{"peft_type", type}, {"num_virtual_tokens", 2}};
    return {{"peft_type", type}};
}

// A small addition task; its characters are the vocabulary.
std::string task_text() {
    std::string t;
    for (int a = 0; a < 10; a++)
        for (int b = 0; b < 10; b++) t += std::to_string(a) + "+" + std::to_string(b) + "=\t" + std::to_string(a + b) + ".\n";
    return t;
}

// kSteps of training `type` on a tiny model built from fixed seeds (the same in every process).
// Returns the trainable tensors by name.
std::map<std::string, std::vector<float>> train_method(const std::string& type, int64_t batch, int64_t streams) {
    const std::string text = task_text();
    const Tokenizer tok = Tokenizer::chars_of(text);
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 16; c.block_size = 16; c.vocab_size = tok.vocab_size(); c.dropout = 0.f;
    Rng init(3);
    GPT model(c, init);
    PeftModel peft(model);
    Method* method = nullptr;
    if (type != "FULL") {
        Rng mrng(4);
        peft.add("default", make_method(method_config(type), model, mrng));
        method = peft.active();
    }
    const TaskDataset task = TaskDataset::from_text(text, "add.tsv", tok, c.block_size - (method ? 2 : 0));
    ParamList& trainable = method ? method->params : model.params;
    TrainConfig tc;
    tc.steps = kSteps; tc.batch = batch; tc.data_streams = streams; tc.warmup = 2; tc.eval_every = 0; tc.lr = 1e-2f;
    Trainer trainer(model, trainable, TrainData{nullptr, &task}, tc);
    trainer.run(nullptr, nullptr);
    std::map<std::string, std::vector<float>> out;
    for (const Param& p : trainable.all()) out[p.name] = p.tensor.to_vector();
    return out;
}

// The largest |a − b| over every element of every tensor; `where` gets the tensor's name.
float max_abs_diff(const std::map<std::string, std::vector<float>>& a, const std::map<std::string, std::vector<float>>& b,
                   std::string* where = nullptr) {
    REQUIRE(a.size() == b.size());
    float worst = 0;
    for (const auto& [name, va] : a) {
        REQUIRE(b.count(name));
        const std::vector<float>& vb = b.at(name);
        REQUIRE(va.size() == vb.size());
        for (size_t i = 0; i < va.size(); i++)
            if (std::abs(va[i] - vb[i]) > worst) {
                worst = std::abs(va[i] - vb[i]);
                if (where) *where = name + "[" + std::to_string(i) + "] " + std::to_string(va[i]) + " vs " + std::to_string(vb[i]);
            }
    }
    return worst;
}

// The key bias's gradient is exactly zero in exact arithmetic (adding b to every key adds q·b
// to every score of a row, which softmax ignores): what backward gives is rounding noise, and
// AdamW, dividing by √v, turns any noise into steps of about lr. So full fine-tuning's key
// biases are left out of the comparison, after checking that they stay at noise level.
std::map<std::string, std::vector<float>> without_key_bias(std::map<std::string, std::vector<float>> run) {
    const std::string suffix = "k_proj.bias";
    for (auto it = run.begin(); it != run.end();)
        if (it->first.size() > suffix.size() && it->first.compare(it->first.size() - suffix.size(), suffix.size(), suffix) == 0) {
            for (float v : it->second) CHECK(std::abs(v) < 1e-3f);
            it = run.erase(it);
        } else {
            ++it;
        }
    return run;
}

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// mpirun as root (containers, CI) needs --allow-run-as-root; 2 ranks on fewer cores need
// --oversubscribe; on one machine shared memory is the transport.
std::string mpirun(int np) {
    return "mpirun -np " + std::to_string(np) + " --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader ";
}

std::string temp_dir() {
    char tmpl[] = "/tmp/peft_dp_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    return tmpl;
}

std::string self_path() { return fs::read_symlink("/proc/self/exe").string(); }

}  // namespace

TEST_SUITE("data parallel") {

TEST_CASE("data parallel: without mpirun there is one process and every collective returns its input") {
    if (dist::launched()) return;   // this case describes a plain run
    dist::init();
    CHECK(!dist::active());
    CHECK(dist::rank() == 0);
    CHECK(dist::size() == 1);
    float x[3] = {1.f, -2.f, 3.5f};
    dist::allreduce_sum(x, 3);
    CHECK(x[1] == -2.f);
    CHECK(dist::allgather("abc") == std::vector<std::string>{"abc"});
    CHECK(dist::broadcast(std::string("s")) == "s");
    CHECK_NOTHROW(dist::check_same("anything", "mine"));
    CHECK(dist::who().empty());
}

TEST_CASE("data parallel: the checksum tells buffers apart by every byte, including the tail") {
    std::vector<unsigned char> a(37, 7);
    const uint64_t h = dist::hash_bytes(a.data(), a.size());
    CHECK(h == dist::hash_bytes(a.data(), a.size()));
    for (size_t i : {size_t(0), size_t(8), size_t(36)}) {
        std::vector<unsigned char> b = a;
        b[i] ^= 1;
        CHECK(dist::hash_bytes(b.data(), b.size()) != h);
    }
    CHECK(dist::hash_bytes(a.data(), 36) != h);   // length counts
}

TEST_CASE("data parallel: stream 0 is the one-process stream; --data_streams N stacks N streams' rows") {
    CHECK(stream_seed(1337, 0) == 1337);   // a plain run draws exactly what it drew before
    CHECK(stream_seed(1337, 1) != stream_seed(1337, 2));
    const std::string text = task_text();
    const Tokenizer tok = Tokenizer::chars_of(text);
    const TaskDataset task = TaskDataset::from_text(text, "add.tsv", tok);
    const int64_t T = task.max_len();
    Rng s0(stream_seed(9, 0)), s1(stream_seed(9, 1));
    const Batch a = task.sample(Split::Train, 2, s0, T), b = task.sample(Split::Train, 2, s1, T);
    const Batch ab = concat_batches({a, b});
    CHECK(ab.ids.size(0) == 4);
    std::vector<int32_t> rows(a.ids.idata(), a.ids.idata() + a.ids.numel());
    rows.insert(rows.end(), b.ids.idata(), b.ids.idata() + b.ids.numel());
    CHECK(std::equal(rows.begin(), rows.end(), ab.ids.idata()));
    CHECK(target_tokens(ab) == target_tokens(a) + target_tokens(b));
    // the answer tokens only: "3+4=\t7." has 2 targets ("7", ".")
    CHECK(target_tokens(a) >= 4);
}

TEST_CASE("data parallel: one stream is today's training, and more streams are other examples") {
    const auto one = train_method("LORA", 4, 1), two = train_method("LORA", 4, 2);
    CHECK(max_abs_diff(one, train_method("LORA", 4, 1)) == 0.f);   // deterministic
    CHECK(max_abs_diff(one, two) > 1e-4f);                         // the streams change the examples
}

// Run by the case below through mpirun, never alone (skipped in a plain `build/tests`).
TEST_CASE("data parallel: worker under mpirun" * doctest::skip()) {
    REQUIRE(dist::launched());
    dist::init();
    const char* out = std::getenv("PEFT_DP_OUT");
    REQUIRE(out != nullptr);
    for (const char* type : kMethods) {
        const auto trained = train_method(type, kRankBatch, 1);
        if (dist::rank() != 0) continue;
        std::vector<std::pair<std::string, Tensor>> named;
        for (const auto& [name, v] : trained) named.push_back({name, Tensor::from(v, {int64_t(v.size())})});
        save_safetensors(std::string(out) + "/" + type + ".safetensors", named);
    }
}

TEST_CASE("data parallel: 2 ranks × batch 2 train the parameters of 1 process × batch 4, every method, 20 steps") {
    if (!have_mpirun()) {
        MESSAGE("skipped: mpirun not found (install openmpi-bin; `make test` does)");
        return;
    }
    const std::string dir = temp_dir();
    const std::string cmd = "PEFT_DP_OUT=" + dir + " ASAN_OPTIONS=detect_leaks=0 OMP_NUM_THREADS=1 " + mpirun(2) + "'" +
                            self_path() + "' --no-skip -tc='data parallel: worker under mpirun' >" + dir + "/log.txt 2>&1";
    const int status = std::system(cmd.c_str());
    std::ifstream logf(dir + "/log.txt");
    const std::string log((std::istreambuf_iterator<char>(logf)), std::istreambuf_iterator<char>());
    REQUIRE_MESSAGE(status == 0, cmd << "\n" << log);
    for (const char* type : kMethods) {
        INFO(std::string(type));
        const SafeTensors st = load_safetensors(dir + "/" + type + ".safetensors");
        std::map<std::string, std::vector<float>> ranks;
        for (const auto& [name, t] : st.tensors) ranks[name] = t.to_vector();
        ranks = without_key_bias(ranks);
        const auto one = without_key_bias(train_method(type, 2 * kRankBatch, 2));
        std::string where;
        const float diff = max_abs_diff(ranks, one, &where);
        INFO(where);
        CHECK(diff <= 1e-5f);
        CHECK(max_abs_diff(ranks, without_key_bias(train_method(type, 2 * kRankBatch, 1))) > 1e-3f);   // other examples: the test can fail
    }
    fs::remove_all(dir);
}

}  // TEST_SUITE

// ---- the program under mpirun: what rank 0 writes, resuming across rank counts, and faults

namespace {

struct Shell {
    int code = -1;
    std::string out, err;
};

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string peft_bin() {
    const char* env = std::getenv("PEFT_BIN");
    return fs::absolute(env && *env ? env : "build/peft").string();
}

// A shell command inside `dir`, stdout and stderr captured.
Shell sh(const std::string& dir, const std::string& cmd) {
    // Open MPI keeps some allocations to exit: under the sanitizers (make test-asan) the leak
    // report would fail every rank.
    const std::string full = "cd '" + dir + "' && OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 " + cmd + " >sh.out 2>sh.err";
    const int status = std::system(full.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/sh.out"), slurp(dir + "/sh.err")};
}

json last_json_line(const std::string& out) {
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return json::parse(s.substr(s.find_last_of('\n') + 1));
}

std::map<std::string, std::vector<float>> tensors_of(const std::string& file) {
    std::map<std::string, std::vector<float>> out;
    for (const auto& [name, t] : load_safetensors(file).tensors) out[name] = t.to_vector();
    return out;
}

// A folder with a corpus, a task file, and a tiny base model pretrained in one process.
struct MpiWorkspace {
    std::string dir, peft;
    MpiWorkspace() : dir(temp_dir()), peft("'" + peft_bin() + "'") {
        std::string corpus;
        for (int i = 0; i < 60; i++) corpus += "the cat sat on the mat. ";
        std::ofstream(dir + "/c.txt") << corpus << "\n0123456789+=.\t\n";
        std::ofstream(dir + "/t.tsv") << task_text();
        const Shell r = sh(dir, peft + " train --data c.txt --out base --steps 2 --n_layer 1 --n_head 2 --n_embd 16 --block 16 "
                                       "--batch 2 --eval_iters 1 --samples 0 --threads 1 --dropout 0");
        REQUIRE_MESSAGE(r.code == 0, r.err);
    }
    ~MpiWorkspace() { std::error_code ec; fs::remove_all(dir, ec); }
    // `peft train` fine-tuning LoRA on the task, with the given extra flags
    std::string lora(const std::string& out, const std::string& flags) const {
        return peft + " train --base base/model.safetensors --method lora --lora_dropout 0 --data t.tsv --out " + out +
               " --eval_iters 2 --samples 0 --threads 1 --json " + flags;
    }
};

}  // namespace

TEST_SUITE("data parallel") {

TEST_CASE("data parallel: peft train under mpirun — rank 0 writes, one process continues it, and back") {
    if (!have_mpirun()) {
        MESSAGE("skipped: mpirun not found (install openmpi-bin; `make test` does)");
        return;
    }
    MpiWorkspace ws;
    // 2 ranks × batch 2, and its one-process twin with batch 4 over the same two streams
    const Shell two = sh(ws.dir, mpirun(2) + ws.lora("two", "--steps 6 --eval_every 3 --batch 2"));
    REQUIRE_MESSAGE(two.code == 0, two.err);
    const Shell one = sh(ws.dir, ws.lora("one", "--steps 6 --eval_every 3 --batch 4 --data_streams 2"));
    REQUIRE_MESSAGE(one.code == 0, one.err);
    const json j2 = last_json_line(two.out), j1 = last_json_line(one.out);
    CHECK(j2["ranks"] == 2);
    CHECK(j2["global_batch"] == 4);
    CHECK(j1["global_batch"] == 4);
    // only trainable gradients on the wire: 4 bytes each, plus the loss/count/flags header
    const int64_t grads = 4 * j2["trainable_params"].get<int64_t>();
    CHECK(j2["allreduce_bytes_per_step"].get<int64_t>() >= grads);
    CHECK(j2["allreduce_bytes_per_step"].get<int64_t>() <= grads + 8 * 64);
    CHECK(j1["allreduce_bytes_per_step"] == 0);
    CHECK(std::abs(j2["val_loss"].get<double>() - j1["val_loss"].get<double>()) < 1e-5);
    CHECK(two.out.find("config:") == two.out.rfind("config:"));   // one rank printed
    CHECK(max_abs_diff(tensors_of(ws.dir + "/two/adapter_model.safetensors"),
                       tensors_of(ws.dir + "/one/adapter_model.safetensors")) <= 1e-5f);
    const std::string log = slurp(ws.dir + "/two/log.csv");
    CHECK(std::count(log.begin(), log.end(), '\n') == 1 + 6);   // the header and 6 steps, written once

    // the 2-rank run continued by one process, and the 1-process run continued by 2 ranks: both
    // keep drawing from streams 0 and 1, so they stay equal
    const Shell r1 = sh(ws.dir, ws.lora("two", "--steps 10 --eval_every 5 --batch 4 --data_streams 2 --resume"));
    REQUIRE_MESSAGE(r1.code == 0, r1.err);
    const Shell r2 = sh(ws.dir, mpirun(2) + ws.lora("one", "--steps 10 --eval_every 5 --batch 2 --resume"));
    REQUIRE_MESSAGE(r2.code == 0, r2.err);
    CHECK(max_abs_diff(tensors_of(ws.dir + "/two/adapter_model.safetensors"),
                       tensors_of(ws.dir + "/one/adapter_model.safetensors")) <= 1e-5f);
}

TEST_CASE("data parallel: ranks started differently refuse to start, naming the difference") {
    if (!have_mpirun()) {
        MESSAGE("skipped: mpirun not found (install openmpi-bin; `make test` does)");
        return;
    }
    MpiWorkspace ws;
    const std::string mpi = "mpirun --allow-run-as-root --oversubscribe --mca pml ob1 --mca btl self,vader ";
    // a flag
    Shell r = sh(ws.dir, mpi + "-np 1 " + ws.lora("o1", "--steps 2 --lr 0.01") + " : -np 1 " + ws.lora("o1", "--steps 2 --lr 0.02"));
    CHECK(r.code != 0);
    CHECK(r.err.find("error: rank 1 differs from rank 0 in the command line: --lr \"0.02\" vs \"0.01\"") != std::string::npos);
    CHECK(!fs::exists(ws.dir + "/o1/adapter_model.safetensors"));
    // the data file's contents: rank 1 runs in another folder whose t.tsv differs
    fs::create_directories(ws.dir + "/other/base");
    fs::copy(ws.dir + "/base/model.safetensors", ws.dir + "/other/base/model.safetensors");
    std::ofstream(ws.dir + "/other/t.tsv") << task_text() << "9+9=\t18!\n";
    r = sh(ws.dir, mpi + "-np 1 " + ws.lora("o2", "--steps 2") + " : -np 1 --wdir other " + ws.lora("o2", "--steps 2"));
    CHECK(r.code != 0);
    CHECK(r.err.find("rank 1 differs from rank 0 in the contents of the data file") != std::string::npos);
    // a rank that cannot read the data says which rank and why
    fs::remove(ws.dir + "/other/t.tsv");
    r = sh(ws.dir, mpi + "-np 1 " + ws.lora("o3", "--steps 2") + " : -np 1 --wdir other " + ws.lora("o3", "--steps 2"));
    CHECK(r.code != 0);
    CHECK(r.err.find("error: rank 1 of 2: ") != std::string::npos);
    CHECK(r.err.find("t.tsv") != std::string::npos);
}

TEST_CASE("data parallel: a rank killed with SIGKILL ends the job non-zero within seconds, files whole") {
    if (!have_mpirun()) {
        MESSAGE("skipped: mpirun not found (install openmpi-bin; `make test` does)");
        return;
    }
    MpiWorkspace ws;
    const std::string cmd = "cd '" + ws.dir + "' && (OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 " + mpirun(2) +
                            ws.lora("k", "--steps 1000000 --eval_every 20 --batch 2") + " >k.out 2>k.err; echo $? >k.rc) &";
    REQUIRE(std::system(cmd.c_str()) == 0);
    // wait for a first save, then kill rank 1 (found by its environment)
    for (int i = 0; i < 600 && !fs::exists(ws.dir + "/k/optimizer.safetensors"); i++) usleep(50000);
    REQUIRE(fs::exists(ws.dir + "/k/optimizer.safetensors"));
    pid_t victim = 0;
    for (const auto& e : fs::directory_iterator("/proc")) {
        const std::string env = slurp(e.path().string() + "/environ"), cmdline = slurp(e.path().string() + "/cmdline");
        if (cmdline.find(ws.dir) == std::string::npos && env.find("PWD=" + ws.dir) == std::string::npos) continue;
        if (cmdline.find("peft") != std::string::npos && env.find(std::string("OMPI_COMM_WORLD_RANK=1") + '\0') != std::string::npos)
            victim = pid_t(std::stoi(e.path().filename().string()));
    }
    REQUIRE(victim > 0);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(kill(victim, SIGKILL) == 0);
    while (!fs::exists(ws.dir + "/k.rc") && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) usleep(50000);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(fs::exists(ws.dir + "/k.rc"));
    usleep(100000);
    CHECK(std::stoi(slurp(ws.dir + "/k.rc")) != 0);
    CHECK(secs < 10);
    // what is under the final names is whole
    CHECK_NOTHROW(load_safetensors(ws.dir + "/k/optimizer.safetensors"));
    CHECK_NOTHROW(load_safetensors(ws.dir + "/k/adapter_model.safetensors"));
}

}  // TEST_SUITE (the program under mpirun)
