// tests/test_hardening_faults.cpp — faults, as RELIABILITY.md §6 tables D and E list them:
// a process SIGKILLed while saving, a full disk, NaN in the loss or in one gradient, extreme
// logits, constant LayerNorm rows, and reproducibility of a seeded run.
//
// The crash and disk tests fork a child that only saves (no OpenMP region runs in a child:
// GNU libgomp's thread pool does not survive fork), and the parent checks the files.
#include <signal.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include "peft_helpers.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "models/checkpoint.h"
#include "models/train.h"

namespace fs = std::filesystem;

namespace {

// Names in `dir` that contain ".tmp." (atomic_write_file's temp files); removes them if asked.
int temp_files(const std::string& dir, bool remove) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().find(".tmp.") != std::string::npos) {
            n++;
            if (remove) fs::remove(e.path());
        }
    return n;
}

// FNV-1a over the bytes of every tensor of a ParamList.
uint64_t checksum(const ParamList& params) {
    uint64_t h = 1469598103934665603ull;
    for (const Param& p : params.all()) {
        const unsigned char* b = reinterpret_cast<const unsigned char*>(p.tensor.data());
        for (size_t i = 0; i < p.tensor.nbytes(); i++) h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

// About 1.7 MB of parameters, so that one save takes measurable time.
GPTConfig big_config() {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 4; c.n_embd = 128; c.block_size = 64; c.vocab_size = 256;
    return c;
}

double seconds_of(const std::function<void()>& fn, int reps) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; i++) fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

// Forks a child that runs `body(fd)` with the write end of a pipe and then exits; returns its
// pid and, in *read_fd, the read end.
pid_t fork_child(const std::function<void(int)>& body, int* read_fd) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        try { body(fds[1]); } catch (...) {}
        _exit(3);
    }
    ::close(fds[1]);
    *read_fd = fds[0];
    return pid;
}

constexpr int kTrials = 50;

// kTrials times: fork a child that saves the state the file does not hold, then the one it
// holds, and so on, and is SIGKILLed at a random moment of its first two saves (moments spread
// over [0, 2 saves), a save timed in a child); then `load` must succeed and give the checksum of
// a or b. The child arms the kill itself, with a timer that sends SIGKILL: a parent's sleep
// would oversleep on a busy machine. The file starts as state a.
struct KillCounts { int old_state = 0, new_state = 0, temps = 0; double save_seconds = 0; };
KillCounts kill_during_saves(const std::string& dir, const std::function<void()>& save_a, const std::function<void()>& save_b,
                             const std::function<uint64_t()>& load, uint64_t ha, uint64_t hb) {
    KillCounts k;
    int fd;
    pid_t pid = fork_child([&](int out) {
        const double s = seconds_of([&] { save_b(); save_a(); }, 3) / 2;
        if (::write(out, &s, sizeof s) != sizeof s) _exit(2);
        _exit(0);
    }, &fd);
    REQUIRE(::read(fd, &k.save_seconds, sizeof k.save_seconds) == sizeof k.save_seconds);
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
    save_a();
    uint64_t in_file = ha;
    Rng rng(42);
    for (int t = 0; t < kTrials; t++) {
        const int64_t ns = int64_t(rng.uniform(0, 2 * k.save_seconds) * 1e9) + 1;
        pid = fork_child([&](int) {
            struct sigevent ev = {};
            ev.sigev_notify = SIGEV_SIGNAL;
            ev.sigev_signo = SIGKILL;
            timer_t timer;
            struct itimerspec when = {};
            when.it_value.tv_sec = ns / 1000000000;
            when.it_value.tv_nsec = ns % 1000000000;
            if (::timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0 || ::timer_settime(timer, 0, &when, nullptr) != 0) _exit(4);
            for (;;) {
                if (in_file == ha) { save_b(); save_a(); }
                else { save_a(); save_b(); }
            }
        }, &fd);
        ::close(fd);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK_MESSAGE(WIFSIGNALED(status), "trial " << t << ": the saving child exited (a save failed)");
        try {
            const uint64_t h = load();
            CHECK_MESSAGE((h == ha || h == hb), "trial " << t << ": the file holds neither complete state");
            (h == in_file ? k.old_state : k.new_state)++;
            in_file = h;
        } catch (const Error& e) {
            FAIL_CHECK("trial " << t << ": the file does not load after the kill: " << e.what());
        }
        k.temps += temp_files(dir, true);   // stale temp files may stay; the final name is never torn
    }
    return k;
}

// Runs `save` in a child whose files may not grow past `limit` bytes (SIGXFSZ ignored, so writes
// fail with EFBIG, as on a full disk). Returns the FileError's message, or what went wrong.
std::string save_under_fsize_limit(rlim_t limit, const std::function<void()>& save) {
    int fd;
    const pid_t pid = fork_child([&](int out) {
        ::signal(SIGXFSZ, SIG_IGN);
        struct rlimit r;
        ::getrlimit(RLIMIT_FSIZE, &r);
        r.rlim_cur = limit;
        std::string msg = "setrlimit failed";
        if (::setrlimit(RLIMIT_FSIZE, &r) == 0) {
            try { save(); msg = "the save did not fail"; }
            catch (const FileError& e) { msg = e.what(); }
            catch (const std::exception& e) { msg = std::string("not a FileError: ") + e.what(); }
        }
        if (::write(out, msg.data(), msg.size()) < 0) _exit(2);
        _exit(0);
    }, &fd);
    std::string msg;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
    return msg;
}

// ---- training set-up for the NaN and determinism tests

std::string write_corpus(const TempDir& s) {
    std::string text;
    for (int i = 0; i < 200; i++) text += "the cat sat on the mat. the dog ran to the cat. ";
    std::ofstream(s / "c.txt") << text;
    return s / "c.txt";
}

GPTConfig small_config(int64_t V) {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 32; c.block_size = 16; c.vocab_size = V; c.dropout = 0.1f;
    return c;
}

TrainConfig quick(int64_t steps, uint64_t seed = 1337) {
    TrainConfig t;
    t.steps = steps; t.batch = 4; t.warmup = 2; t.eval_every = 0; t.eval_iters = 1; t.lr = 3e-3f; t.seed = seed;
    return t;
}

// Forward y = x; backward dx = dy, and `victim` gets a gradient that is NaN at element 0 (zero
// elsewhere): exactly one poisoned gradient, as a bad kernel or a bit flip would produce.
Tensor nan_grad_tap(const Tensor& x, const Tensor& victim) {
    Tensor y = x.clone();
    const int64_t n = x.numel(), m = victim.numel();
    record(y, "nan_grad_tap", {x, victim}, [n, m](const Tensor& dy, Grads& g) {
        // forward: y = x, so dx = dy; the victim's gradient is poisoned on purpose
        if (g.needs(0)) {
            GradBuf dx = g.buf(0);
            for (int64_t i = 0; i < n; i++) dx.acc(i, dy.data()[i]);
        }
        if (g.needs(1)) {
            GradBuf dv = g.buf(1);
            for (int64_t i = 0; i < m; i++) dv.acc(i, i == 0 ? NAN : 0.f);
        }
    });
    return y;
}

// Seams that poison layer 1's attention output: its values (NaN loss) or one gradient.
struct Poison : Hooks {
    bool loss = false;
    Tensor victim;
    Tensor block_output(Site site, int64_t layer, const Tensor& f) override {
        if (site != Site::Attn || layer != 1) return f;
        return loss ? scale(f, NAN) : nan_grad_tap(f, victim);
    }
};

std::vector<double> losses_of_run(const TextDataset& ds, uint64_t seed, int steps) {
    Rng init(seed);
    GPT m(small_config(ds.tokenizer().vocab_size()), init);
    Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(steps, seed));
    std::vector<double> losses;
    t.run([&](const LogRow& r) { losses.push_back(r.train_loss); }, nullptr);
    losses.push_back(double(checksum(m.params)));   // the final weights, bit for bit
    return losses;
}

}  // namespace

TEST_SUITE("hardening") {

// ---- D1: crash during save

TEST_CASE("hardening: kill-during-save: SIGKILL at random moments of save_checkpoint never leaves a torn checkpoint") {
    TempDir s;
    const Tokenizer tok = Tokenizer::bytes();
    Rng r1(1), r2(2);
    GPT a(big_config(), r1), b(big_config(), r2);
    const uint64_t ha = checksum(a.params), hb = checksum(b.params);
    const std::string path = s / "model.safetensors";
    const KillCounts k = kill_during_saves(
        s.path, [&] { save_checkpoint(path, a, tok); }, [&] { save_checkpoint(path, b, tok); },
        [&] { return checksum(load_checkpoint(path).model->params); }, ha, hb);
    MESSAGE("save_checkpoint of " << fs::file_size(path) << " bytes takes " << k.save_seconds * 1e3 << " ms; of "
                                  << kTrials << " kills, " << k.old_state << " left the previous checkpoint, " << k.new_state
                                  << " the new one; " << k.temps << " stale temp files");
    CHECK(k.old_state + k.new_state == kTrials);
}

TEST_CASE("hardening: kill-during-save: SIGKILL at random moments of save_adapter never leaves a torn adapter folder") {
    TempDir s;
    Rng rng(3);
    GPT base(big_config(), rng);
    const json cfg = {{"peft_type", "LORA"}, {"r", 64}, {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"}}};
    auto a = make_method(cfg, base, rng), b = make_method(cfg, base, rng);
    for (const Param& p : b->params.all()) p.tensor.data()[0] = 1.f;   // B = 0 at init: make a and b differ
    const uint64_t ha = checksum(a->params), hb = checksum(b->params);
    const std::string dir = s / "adapter";
    const KillCounts k = kill_during_saves(
        dir, [&] { save_adapter(dir, *a, base); }, [&] { save_adapter(dir, *b, base); },
        [&] { return checksum(load_adapter(dir, base, rng)->params); }, ha, hb);
    MESSAGE("save_adapter of " << fs::file_size(dir + "/adapter_model.safetensors") << " bytes takes " << k.save_seconds * 1e3
                               << " ms; of " << kTrials << " kills, " << k.old_state << " left the previous adapter, "
                               << k.new_state << " the new one; " << k.temps << " stale temp files");
    CHECK(k.old_state + k.new_state == kTrials);
}

// ---- D2: disk full

TEST_CASE("hardening: disk-full: a save past the file-size limit (EFBIG) is a FileError naming the path; the old file stays") {
    TempDir s;
    const Tokenizer tok = Tokenizer::bytes();
    Rng r1(4), r2(5);
    GPT a(big_config(), r1), b(big_config(), r2);
    const std::string path = s / "model.safetensors";
    save_checkpoint(path, a, tok);
    const std::string msg = save_under_fsize_limit(1 << 20, [&] { save_checkpoint(path, b, tok); });
    CHECK_MESSAGE(msg.find(path + ": write failed") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(std::strerror(EFBIG)) != std::string::npos, msg);
    CHECK(checksum(load_checkpoint(path).model->params) == checksum(a.params));
    CHECK(temp_files(s.path, false) == 0);

    // The same for an adapter folder: its weights file is refused, the old adapter still loads.
    const json cfg = {{"peft_type", "LORA"}, {"r", 64}, {"target_modules", {"q_proj", "fc_in", "fc_out"}}};
    auto la = make_method(cfg, a, r1), lb = make_method(cfg, a, r2);
    const std::string dir = s / "adapter";
    save_adapter(dir, *la, a);
    const std::string amsg = save_under_fsize_limit(1 << 19, [&] { save_adapter(dir, *lb, a); });
    CHECK_MESSAGE(amsg.find(dir + "/adapter_model.safetensors: write failed") != std::string::npos, amsg);
    GPT fresh(big_config(), r1);
    CHECK(checksum(load_adapter(dir, fresh, r1)->params) == checksum(la->params));
    CHECK(temp_files(dir, false) == 0);
}

TEST_CASE("hardening: disk-full: a save onto a full tmpfs (ENOSPC) is a FileError naming the path; the old file stays") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: mounting a tmpfs needs root");
        return;
    }
    TempDir s;
    const std::string mnt = s / "mnt";
    fs::create_directory(mnt);
    if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
        MESSAGE("skipped: cannot mount a tmpfs here: " << std::strerror(errno));
        return;
    }
    struct Unmount { std::string p; ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); } } unmount{mnt};
    const Tokenizer tok = Tokenizer::bytes();
    GPTConfig c = big_config();
    c.n_layer = 1;
    c.n_embd = 64;   // about 270 KB: fits
    Rng rng(6);
    GPT small(c, rng), big(big_config(), rng);
    const std::string path = mnt + "/model.safetensors";
    save_checkpoint(path, small, tok);
    std::string msg;
    try {
        save_checkpoint(path, big, tok);
    } catch (const FileError& e) {
        msg = e.what();
    }
    CHECK_MESSAGE(msg.rfind(path + ": ", 0) == 0, msg);
    CHECK_MESSAGE(msg.find(std::strerror(ENOSPC)) != std::string::npos, msg);
    CHECK(checksum(load_checkpoint(path).model->params) == checksum(small.params));
    CHECK(temp_files(mnt, false) == 0);
}

// ---- D7: NaN in the loss or in a gradient

TEST_CASE("hardening: a NaN loss from a poisoned batch stops training at that step, naming the step") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    Rng rng(7);
    GPT m(small_config(ds.tokenizer().vocab_size()), rng);
    Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(10));
    for (int i = 0; i < 3; i++) CHECK(std::isfinite(t.train_step().train_loss));
    Poison poison;
    poison.loss = true;
    m.hooks = &poison;
    CHECK_THROWS_WITH_AS(t.train_step(), doctest::Contains("step 3: non-finite value in the loss"), NumericError);
    m.hooks = nullptr;
}

TEST_CASE("hardening: a NaN in one gradient stops training at that step, naming the tensor; skipping keeps every weight") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    Rng rng(8);
    GPT m(small_config(ds.tokenizer().vocab_size()), rng);
    Poison poison;
    poison.victim = m.params.get("transformer.h.1.mlp.fc_in.bias");
    {
        Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(10));
        t.train_step();
        t.train_step();
        m.hooks = &poison;
        CHECK_THROWS_WITH_AS(t.train_step(),
                             doctest::Contains("step 2: non-finite value in the gradient of 'transformer.h.1.mlp.fc_in.bias'"),
                             NumericError);
        m.hooks = nullptr;
    }
    TrainConfig skip = quick(10);
    skip.skip_nonfinite = true;
    Trainer t(m, m.params, TrainData{&ds, nullptr}, skip);
    const uint64_t before = checksum(m.params);
    m.hooks = &poison;
    t.train_step();   // skipped: no update at all
    m.hooks = nullptr;
    CHECK(checksum(m.params) == before);
    CHECK(std::isfinite(t.train_step().train_loss));
    CHECK(checksum(m.params) != before);   // the next clean batch trains again

    // A PEFT method's tensor is named the same way.
    Rng mrng(9);
    PeftModel peft(m);
    peft.add("lora", make_method({{"peft_type", "LORA"}, {"r", 2}}, m, mrng));
    const std::string name = "base_model.model.transformer.h.1.attn.v_proj.lora_A.weight";
    poison.victim = peft.active()->params.get(name);
    Trainer lt(m, peft.active()->params, TrainData{&ds, nullptr}, quick(10));
    m.hooks = &poison;
    CHECK_THROWS_WITH_AS(lt.train_step(), doctest::Contains(("step 0: non-finite value in the gradient of '" + name + "'").c_str()),
                         NumericError);
    m.hooks = nullptr;
}

// ---- E5, E6: extreme inputs to the numerically delicate ops

TEST_CASE("hardening: softmax and cross-entropy of +-1e30 logits are finite, with gradient softmax minus onehot") {
    const float big = 1e30f, inf = INFINITY;
    Tensor logits = Tensor::from({big, -big, 0.f, big,    -big, -big, -big, 5.f,
                                  7.f, 7.f, 7.f, 7.f,     -inf, -inf, 3.f, -inf}, {4, 4});
    logits.set_requires_grad(true);
    const std::vector<float> p = softmax(logits).to_vector();
    const std::vector<float> want = {0.5f, 0, 0, 0.5f, 0, 0, 0, 1, 0.25f, 0.25f, 0.25f, 0.25f, 0, 0, 1, 0};
    for (size_t i = 0; i < p.size(); i++) CHECK(p[i] == doctest::Approx(want[i]).epsilon(1e-6));
    Tensor loss = cross_entropy(logits, Tensor::from_ints({0, 3, 2, 2}, {4}));
    CHECK(std::isfinite(loss.item()));
    CHECK(loss.item() == doctest::Approx((std::log(2.0) + std::log(4.0)) / 4).epsilon(1e-5));
    loss.backward();
    const std::vector<float> g = logits.grad().to_vector();
    const std::vector<float> onehot = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
    for (size_t i = 0; i < g.size(); i++) CHECK(g[i] == doctest::Approx((want[i] - onehot[i]) / 4).epsilon(1e-6));
}

TEST_CASE("hardening: LayerNorm on constant rows and on huge or tiny magnitudes is finite in value and gradient") {
    Rng rng(10);
    std::vector<float> v;
    for (float c : {5.f, 0.f, -1e30f}) for (int j = 0; j < 8; j++) v.push_back(c);             // constant rows
    for (float s : {1e-30f, 1e15f}) for (int j = 0; j < 8; j++) v.push_back(s * float(j - 3));  // tiny and huge spread
    Tensor x = Tensor::from(v, {5, 8});
    x.set_requires_grad(true);
    Tensor w = param({8}, rng), b = param({8}, rng);
    Tensor y = layernorm(x, w, b);
    for (float f : y.to_vector()) CHECK(std::isfinite(f));
    projection_loss(y, Tensor::randn({5, 8}, rng)).backward();
    for (const Tensor& t : {x, w, b})
        for (float f : t.grad().to_vector()) CHECK(std::isfinite(f));
    for (int j = 0; j < 8; j++) CHECK(y.data()[j] == b.data()[j]);   // a constant row normalises to 0, leaving the bias
}

// ---- E11-E13: reproducibility

TEST_CASE("hardening: the same seed twice gives bitwise-identical losses and weights; another seed differs") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    const std::vector<double> first = losses_of_run(ds, 11, 6), again = losses_of_run(ds, 11, 6), other = losses_of_run(ds, 12, 6);
    CHECK(first == again);
    for (size_t i = 0; i < first.size(); i++) CHECK(first[i] != other[i]);
}

TEST_CASE("hardening: 1 and 2 threads give bitwise-identical losses and weights") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    const int threads = num_threads();
    set_num_threads(1);
    const std::vector<double> one = losses_of_run(ds, 13, 6);
    set_num_threads(2);
    const std::vector<double> two = losses_of_run(ds, 13, 6);
    set_num_threads(threads);
    CHECK(one == two);
}

}  // TEST_SUITE
