// tests/test_train.cpp — the training loop: learning, exact resume, NaN detection, checkpoints.
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <fstream>
#include "helpers.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "train/trainer.h"

TEST_SUITE("train") {

static std::string temp_dir() {
    char tmpl[] = "/tmp/peft_train_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    return tmpl;
}

static std::string write_corpus(const std::string& dir) {
    std::string text;
    for (int i = 0; i < 300; i++) text += "the cat sat on the mat. the dog ran to the cat. ";
    std::ofstream(dir + "/c.txt") << text;
    return dir + "/c.txt";
}

static GPTConfig small(int64_t V) {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 32; c.block_size = 16; c.vocab_size = V; c.dropout = 0.1f;
    return c;
}

static TrainConfig quick(int64_t steps) {
    TrainConfig t;
    t.steps = steps; t.batch = 4; t.warmup = 2; t.eval_every = 0; t.eval_iters = 2; t.lr = 3e-3f;
    return t;
}

TEST_CASE("train: the loss falls on a small corpus") {
    std::string dir = temp_dir();
    TextDataset ds(write_corpus(dir));
    Rng rng(1);
    GPT m(small(ds.tokenizer().vocab_size()), rng);
    Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(60));
    std::vector<double> losses;
    t.run([&](const LogRow& r) { losses.push_back(r.train_loss); }, nullptr);
    CHECK(losses.size() == 60);
    CHECK(losses.back() < 0.6 * losses.front());
}

TEST_CASE("train: N steps + save + load + M steps gives the unbroken run's losses bit for bit") {
    std::string dir = temp_dir();
    TextDataset ds(write_corpus(dir));
    const GPTConfig cfg = small(ds.tokenizer().vocab_size());
    std::vector<double> unbroken, resumed;
    {
        Rng rng(2);
        GPT m(cfg, rng);
        Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(12));
        t.run([&](const LogRow& r) { unbroken.push_back(r.train_loss); }, nullptr);
    }
    {   // first half, then save model + optimizer + training state
        Rng rng(2);
        GPT m(cfg, rng);
        TrainConfig tc = quick(12);
        Trainer t(m, m.params, TrainData{&ds, nullptr}, tc);
        for (int i = 0; i < 5; i++) resumed.push_back(t.train_step().train_loss);
        save_checkpoint(dir + "/model.safetensors", m, ds.tokenizer(), t.state_metadata());
        save_safetensors(dir + "/optimizer.safetensors", t.optimizer_tensors(), t.state_metadata());
    }
    {   // a new process would do exactly this
        Checkpoint ck = load_checkpoint(dir + "/model.safetensors");
        SafeTensors st = load_safetensors(dir + "/optimizer.safetensors");
        Trainer t(*ck.model, ck.model->params, TrainData{&ds, nullptr}, quick(12));
        t.restore(st.metadata, st.tensors);
        CHECK(t.step() == 5);
        t.run([&](const LogRow& r) { resumed.push_back(r.train_loss); }, nullptr);
    }
    REQUIRE(resumed.size() == unbroken.size());
    for (size_t i = 0; i < unbroken.size(); i++) CHECK(resumed[i] == unbroken[i]);   // exact, dropout included
}

TEST_CASE("train: a NaN loss stops training with the step number, or is skipped on request") {
    std::string dir = temp_dir();
    TextDataset ds(write_corpus(dir));
    Rng rng(3);
    GPT m(small(ds.tokenizer().vocab_size()), rng);
    m.params.get("transformer.ln_f.weight").data()[0] = NAN;   // poisons every logit
    {
        Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(3));
        CHECK_THROWS_WITH_AS(t.train_step(), doctest::Contains("step 0: non-finite value in the loss"), NumericError);
    }
    TrainConfig skip = quick(3);
    skip.skip_nonfinite = true;
    Trainer t(m, m.params, TrainData{&ds, nullptr}, skip);
    const float w = m.params.get("transformer.h.0.attn.q_proj.weight").data()[0];
    t.train_step();
    CHECK(m.params.get("transformer.h.0.attn.q_proj.weight").data()[0] == w);   // no update was applied
}

TEST_CASE("train: invalid training settings are reported together") {
    TrainConfig t;
    t.batch = 0;
    t.lr = -1;
    CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains("--batch must be >= 1"), ValueError);
    CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains("--lr must be a finite number > 0"), ValueError);
}

TEST_CASE("train: save then load gives identical logits; a tampered checkpoint is refused") {
    std::string dir = temp_dir();
    TextDataset ds(write_corpus(dir));
    Rng rng(4);
    GPT m(small(ds.tokenizer().vocab_size()), rng);
    save_checkpoint(dir + "/m.safetensors", m, ds.tokenizer());
    Checkpoint ck = load_checkpoint(dir + "/m.safetensors");
    Tensor ids = Tensor::from_ints({1, 2, 3, 4, 5, 6}, {1, 6});
    CHECK(m.forward(ids).to_vector() == ck.model->forward(ids).to_vector());
    CHECK(ck.tokenizer == ds.tokenizer());
    // the same file with one tensor missing
    std::vector<std::pair<std::string, Tensor>> some;
    for (const Param& p : m.params.all()) if (p.name != "transformer.ln_f.bias") some.push_back({p.name, p.tensor});
    save_safetensors(dir + "/bad.safetensors", some,
                     {{"peft.model_config", m.config.to_json()}, {"peft.tokenizer", ds.tokenizer().serialize()}});
    CHECK_THROWS_WITH_AS(load_checkpoint(dir + "/bad.safetensors"), doctest::Contains("missing tensor 'transformer.ln_f.bias'"),
                         FileError);
}

// The answers are the model's own greedy continuations for some prompts (right by definition)
// and those continuations with the last character changed for the others (wrong): the one-forward
// exact match must count exactly what token-by-token greedy generation counts.
TEST_CASE("train: greedy_exact_match in one batched forward agrees with greedy generation") {
    std::string dir = temp_dir();
    const Tokenizer tok = Tokenizer::chars_of("abcdefghijklmnopqrstuvwxyz=+ ");
    GPTConfig c = small(tok.vocab_size());
    c.dropout = 0.f;
    c.block_size = 24;
    Rng rng(7);
    GPT model(c, rng);
    const std::vector<std::string> prompts = {"ab", "hello", "x=y", "zz top", "q", "mat", "cat sat", "a+b=", "lo", "k"};
    std::string tsv;
    for (size_t i = 0; i < prompts.size(); i++) {
        std::vector<int32_t> ids = tok.encode(prompts[i]), out = model.generate(ids, 3 + int64_t(i % 4), 0.f, 0, rng);
        std::string answer = tok.decode(std::vector<int32_t>(out.begin() + int64_t(ids.size()), out.end()));
        if (i % 3 == 1) answer.back() = answer.back() == 'a' ? 'b' : 'a';   // now wrong
        tsv += prompts[i] + "\t" + answer + "\n";
    }
    std::ofstream(dir + "/t.tsv") << tsv;
    TaskDataset task(dir + "/t.tsv", tok, c.block_size, 0.0);
    auto generate = [&](const std::string& prompt, size_t n) {
        std::vector<int32_t> ids = tok.encode(prompt), out = model.generate(ids, int64_t(n), 0.f, 0, rng);
        return tok.decode(std::vector<int32_t>(out.begin() + int64_t(ids.size()), out.end()));
    };
    CHECK(task.exact_match(generate, Split::Train) == doctest::Approx(0.7));
    CHECK(greedy_exact_match(model, task, Split::Train) == doctest::Approx(0.7));
    CHECK(greedy_exact_match(model, task, Split::Train, 0, 3) == doctest::Approx(0.7));   // batches of 3, padded
    CHECK(greedy_exact_match(model, task, Split::Train, 4) == doctest::Approx(0.75));   // the first 4 only
}

}  // TEST_SUITE
