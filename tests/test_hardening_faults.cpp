// tests/test_hardening_faults.cpp — faults on disk, as docs/FAILURES.md table D lists them: a
// process SIGKILLed while saving, and a full disk. (NaN, extreme inputs and reproducibility
// are in test_hardening_training.cpp.)
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
#include "hardening_helpers.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "models/checkpoint.h"
#include "train/trainer.h"

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

}  // TEST_SUITE
