// data/generate.cpp — the story grammar behind corpus.txt and the three task generators.
//
// The grammar: a story fixes a cast (a main character and a friend, each with pronouns), a
// place, a treasured object and a favourite activity, then strings together one sentence from
// each part (opening, setup, event, dialogue, numbers, problem, resolution, ending). A sentence
// template names its slots in braces: {A} is the main character, {he}/{his}/{him} their
// pronouns, {B}/{bhe}/... the friend's; other slots draw a fresh word or number each time.
#include "generate.h"
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include "engine/check.h"
#include "engine/rng.h"

namespace {

using Words = std::vector<std::string>;

const Words kGirls = {"Lily", "Mia", "Anna", "Zoe", "Emma", "Ruby", "Sara", "Nora", "Ivy", "Jane", "Rosa", "Kate"};
const Words kBoys = {"Tom", "Ben", "Sam", "Max", "Jack", "Leo", "Finn", "Oscar", "Paul", "Kevin", "Hugo", "Dan"};
const Words kAnimals = {"cat", "dog", "fox", "bird", "rabbit", "frog", "duck", "bear", "mouse", "owl", "squirrel"};
const Words kPlaces = {"park", "forest", "beach", "garden", "school", "market", "river", "hill",
                       "farm", "lake", "library", "zoo", "bakery", "meadow", "harbor", "castle"};
// singular and plural of the objects
const std::vector<std::pair<std::string, std::string>> kObjects = {
    {"ball", "balls"},   {"kite", "kites"},     {"book", "books"},       {"apple", "apples"},  {"box", "boxes"},
    {"jar", "jars"},     {"hat", "hats"},       {"shell", "shells"},     {"map", "maps"},      {"cake", "cakes"},
    {"flower", "flowers"}, {"stone", "stones"}, {"cookie", "cookies"},   {"key", "keys"},      {"boat", "boats"},
    {"puzzle", "puzzles"}, {"cherry", "cherries"}, {"feather", "feathers"}, {"drum", "drums"}, {"quilt", "quilts"}};
const Words kAdjectives = {"big", "little", "shiny", "old", "new", "soft", "tiny", "funny", "strange", "heavy",
                           "bright", "dusty", "fuzzy", "magic", "quiet", "lovely"};
const Words kTraits = {"kind", "brave", "quick", "quiet", "lazy", "funny", "curious", "gentle", "clever", "shy"};
const Words kColors = {"red", "blue", "green", "yellow", "purple", "orange", "white", "brown", "pink", "gray"};
const Words kFeelings = {"happy", "sad", "scared", "excited", "tired", "proud", "angry", "surprised", "worried"};
const Words kGoodFeelings = {"happy", "proud", "calm", "safe", "glad", "warm inside", "joyful"};
const Words kDayTimes = {"sunny morning", "rainy afternoon", "cold winter day", "warm summer evening",
                         "windy day", "quiet night", "bright spring day", "foggy morning"};
const Words kHidingSpots = {"tree", "rock", "bench", "bed", "bush", "table", "bridge", "fence", "door", "wall"};
// an activity: base form, past tense
const std::vector<std::pair<std::string, std::string>> kActivities = {
    {"play", "played"},         {"run", "ran"},         {"jump", "jumped"},           {"swim", "swam"},
    {"sing", "sang"},           {"dance", "danced"},    {"climb trees", "climbed trees"}, {"draw", "drew"},
    {"build a fort", "built a fort"}, {"fly a kite", "flew a kite"}, {"read books", "read books"},
    {"bake cookies", "baked cookies"}, {"paint pictures", "painted pictures"}, {"ride a bike", "rode a bike"},
    {"juggle", "juggled"},      {"hop and skip", "hopped and skipped"}};

// ---- sentence templates, by part of the story
const Words kOpenings = {
    "Once upon a time, there was a {trait} {kind} named {A}.",
    "One {daytime}, {A} went to the {place}.",
    "{A} lived in a {color} house near the {place}.",
    "There was once a {kind} called {A} who loved to {verb}.",
    "It was a {daytime}. {A} and {B} walked to the {place} together.",
    "Long ago, in a small village by the {place2}, lived a {trait} {kind} named {A}.",
    "On {date}, {A} woke up early and ran to the {place}."};
const Words kSetups = {
    "{A} liked to {verb} every day.",
    "{he} had {a_obj} that {he} loved very much.",
    "{his} best friend was {B}, a {trait} {bkind}.",
    "Every morning, {he} woke up at {time} and looked out of the window.",
    "{A} was {n} years old and very {trait}.",
    "{his} mother said, \"Be careful at the {place}, {A}!\"",
    "{B} lived next door and often came to {verb} with {him}."};
const Words kEvents = {
    "One day, {A} found {a_adj} {obj} under a {spot}.",
    "Suddenly, {he} saw {a_animal} near the {place}.",
    "But then, {his} {obj} was gone!",
    "On {date}, something strange happened at the {place}.",
    "The wind was strong, and {his} {obj} flew high into the sky.",
    "{A} heard a quiet noise behind the {spot}.",
    "At {time}, a {color} {animal} jumped out from behind the {spot2} and ran away with the {obj}."};
const Words kDialogues = {
    "\"Hello, {B}!\" said {A}. \"Do you want to {verb} with me?\"",
    "\"Where is my {obj}?\" asked {A}.",
    "{B} smiled and said, \"Let's look for it together.\"",
    "\"I am so {feel}!\" {A} cried.",
    "\"Can we go to the {place2}?\" asked {B}. \"Yes, we can,\" said {A}.",
    "\"Look, {A}! There are {n} {objs2} here!\" said {B}.",
    "\"What time is it?\" asked {A}. \"It is {time},\" said {B}.",
    "\"Why are you {feel}?\" asked {B}. {A} did not answer."};
const Words kNumbers = {
    "{A} counted {n} {objs2} and {n2} {objs3}.",
    "At school, {A} wrote {x}+{y}={z} on the board, and the teacher said it was right.",
    "{B} asked, \"What is {x} plus {y}?\" {A} thought for a moment and said, \"It is {z}.\"",
    "The sign on the road said: {Place} -> {miles} miles.",
    "On the calendar, the date was {sdate}.",
    "The note said: meet me at the {place2} at {time}.",
    "{A} had {big} coins, and {he} gave {n} of them to {B}.",
    "The old clock on the wall showed {time}.",
    "{B} drew an arrow on the map: {Place} -> {Place2}.",
    "The letter was dated {date}, and it came from the {place2}."};
const Words kProblems = {
    "{A} felt {feel} because {he} could not find {his} {obj}.",
    "The path was long, and {A} was very tired.",
    "It started to rain, and the {place} became dark and quiet.",
    "{he} tried to {verb}, but it was too hard.",
    "A {trait} {animal} blocked the way and would not move."};
const Words kResolutions = {
    "Then {B} came and helped {him}.",
    "They looked everywhere, and at last they found the {obj} behind a {spot}.",
    "{A} and {B} {verbed} together until the sun went down.",
    "The {animal} was friendly, and it showed them the way home.",
    "{B} gave {A} a big hug, and {A} felt {good}.",
    "{A} took a deep breath and tried again, and this time it worked."};
const Words kEndings = {
    "In the end, {A} was happy again.",
    "From that day on, {A} and {B} were best friends.",
    "{A} learned that it is good to share.",
    "That night, {A} went to bed with a smile.",
    "The end.",
    "The next day, they {verbed} again at the {place}."};

// One story's fixed choices plus the slot filler.
class StoryWriter {
public:
    explicit StoryWriter(Rng& rng) : rng_(rng) {}

    std::string story() {
        fixed_.clear();
        used_.clear();
        cast("", "A", "kind");
        do cast("b", "B", "bkind"); while (fixed_["B"] == fixed_["A"]);
        fixed_["place"] = pick(kPlaces);
        const auto& obj = kObjects[rng_.below(kObjects.size())];
        fixed_["obj"] = obj.first;
        fixed_["objs"] = obj.second;
        const auto& act = kActivities[rng_.below(kActivities.size())];
        fixed_["verb"] = act.first;
        fixed_["verbed"] = act.second;

        // One statement per draw: the order of calls inside one expression is unspecified in
        // C++, and the order of draws must not depend on the compiler.
        std::string out = say(kOpenings);
        add(out, kSetups, 100);
        add(out, kSetups, 50);
        out += chance(50) ? "\n" : " ";   // one paragraph or two
        out += say(kEvents);
        add(out, kDialogues, 100);
        add(out, kDialogues, 60);
        add(out, kNumbers, 55);
        add(out, kNumbers, 55);
        add(out, kProblems, 70);
        add(out, kResolutions, 100);
        add(out, kResolutions, 40);
        add(out, kEndings, 100);
        return out + "\n";
    }

private:
    bool chance(int percent) { return int(rng_.below(100)) < percent; }
    void add(std::string& out, const Words& part, int percent) {
        if (percent == 100 || chance(percent)) out += " " + say(part);
    }
    const std::string& pick(const Words& w) { return w[rng_.below(w.size())]; }
    std::string number(int lo, int hi) { return std::to_string(lo + int(rng_.below(uint64_t(hi - lo + 1)))); }
    static std::string two(int v) { return (v < 10 ? "0" : "") + std::to_string(v); }
    static std::string article(const std::string& w) { return (std::strchr("aeiou", w[0]) ? "an " : "a ") + w; }
    static std::string capitalized(std::string w) { w[0] = char(std::toupper(uint8_t(w[0]))); return w; }

    // A character: a girl, a boy or (one in three) an animal, with a name and pronouns.
    void cast(const std::string& p, const std::string& name_key, const std::string& kind_key) {
        const bool girl = chance(50);
        fixed_[name_key] = pick(girl ? kGirls : kBoys);
        fixed_[kind_key] = chance(33) ? pick(kAnimals) : (girl ? "girl" : "boy");
        fixed_[p + "he"] = girl ? "she" : "he";
        fixed_[p + "his"] = girl ? "her" : "his";
        fixed_[p + "him"] = girl ? "her" : "him";
    }

    std::string slot(const std::string& key) {
        auto it = fixed_.find(key);
        if (it != fixed_.end()) return it->second;
        if (key == "trait") return pick(kTraits);
        if (key == "color") return pick(kColors);
        if (key == "feel") return pick(kFeelings);
        if (key == "good") return pick(kGoodFeelings);
        if (key == "daytime") return pick(kDayTimes);
        if (key == "animal") return pick(kAnimals);
        if (key == "a_animal") return article(pick(kAnimals));
        if (key == "a_adj") return article(pick(kAdjectives));
        if (key == "a_obj") return article(fixed_["obj"]);
        if (key == "place2") return pick(kPlaces);
        if (key == "Place" || key == "Place2") return capitalized(pick(kPlaces));
        if (key == "spot" || key == "spot2") return pick(kHidingSpots);
        if (key == "objs2" || key == "objs3") return kObjects[rng_.below(kObjects.size())].second;
        if (key == "n" || key == "n2") return number(2, 12);
        if (key == "big") return number(13, 99);
        if (key == "miles") return number(1, 9);
        if (key == "time") {
            const std::string hour = number(1, 12);
            return hour + ":" + two(int(rng_.below(12)) * 5);
        }
        const int year = 1990 + int(rng_.below(40)), month = 1 + int(rng_.below(12)), day = 1 + int(rng_.below(28));
        if (key == "date") return std::to_string(year) + "-" + two(month) + "-" + two(day);
        if (key == "sdate") return two(day) + "/" + two(month) + "/" + std::to_string(year);
        throw ValueError(fmt::format("story grammar: unknown slot {{{}}}", key));
    }

    // One sentence: fill the slots, then capitalize its first letter (after an opening quote).
    // A template is used at most once per story.
    std::string say(const Words& templates) {
        const std::string* tp;
        do tp = &pick(templates); while (!used_.insert(tp).second);
        const std::string& t = *tp;
        if (t.find("{x}") != std::string::npos) {   // a sum that is right: x + y = z
            const int x = 2 + int(rng_.below(60)), y = 2 + int(rng_.below(40));
            fixed_["x"] = std::to_string(x), fixed_["y"] = std::to_string(y), fixed_["z"] = std::to_string(x + y);
        }
        std::string out;
        for (size_t i = 0; i < t.size(); i++) {
            if (t[i] != '{') { out += t[i]; continue; }
            const size_t close = t.find('}', i);
            out += slot(t.substr(i + 1, close - i - 1));
            i = close;
        }
        const size_t first = out[0] == '"' ? 1 : 0;
        out[first] = char(std::toupper(uint8_t(out[first])));
        return out;
    }

    Rng& rng_;
    std::map<std::string, std::string> fixed_;
    std::set<const std::string*> used_;
};

// `lines` distinct lines from make(rng), in the order first drawn.
template <class Make>
std::string unique_lines(uint64_t seed, int lines, Make make) {
    Rng rng(seed);
    std::set<std::string> seen;
    std::string out;
    while (int(seen.size()) < lines) {
        std::string line = make(rng);
        if (seen.insert(line).second) out += line;
    }
    return out;
}

}  // namespace

std::string generate_corpus(uint64_t seed, size_t target_bytes) {
    Rng rng(seed);
    StoryWriter writer(rng);
    std::string out;
    while (out.size() < target_bytes) out += (out.empty() ? "" : "\n") + writer.story();
    return out;
}

std::string generate_addition(uint64_t seed, int lines) {
    return unique_lines(seed, lines, [](Rng& rng) {
        const int a = 100 + int(rng.below(900)), b = 100 + int(rng.below(900));
        return fmt::format("add {} {} =\t {}.\n", a, b, a + b);
    });
}

std::string generate_reverse(uint64_t seed, int lines) {
    return unique_lines(seed, lines, [](Rng& rng) {
        std::string w(4 + rng.below(5), 'a');
        for (char& c : w) c = char('a' + rng.below(26));
        return fmt::format("reverse: {} =\t {}.\n", w, std::string(w.rbegin(), w.rend()));
    });
}

std::string generate_dates(uint64_t seed, int lines) {
    return unique_lines(seed, lines, [](Rng& rng) {
        const int year = 1900 + int(rng.below(200)), month = 1 + int(rng.below(12));
        const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const int days[12] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        const int day = 1 + int(rng.below(uint64_t(days[month - 1])));
        return fmt::format("date {}-{:02}-{:02} ->\t {:02}/{:02}/{}.\n", year, month, day, day, month, year);
    });
}

const std::vector<ShippedDataset>& shipped_datasets() {
    static const std::vector<ShippedDataset> table = {
        {"stories", "corpus.txt", "simple English stories (~0.8 MB) for pretraining a char-level GPT",
         [] { return generate_corpus(20240601, 800000); }},
        {"add", "tasks/add.tsv", "3-digit addition: \"add 123 456 =\" -> \" 579.\"",
         [] { return generate_addition(101, 20000); }},
        {"reverse", "tasks/reverse.tsv", "reverse a 4-8 letter word: \"reverse: abcde =\" -> \" edcba.\"",
         [] { return generate_reverse(202, 20000); }},
        {"dates", "tasks/dates.tsv", "ISO date to day/month/year: \"date 2024-03-07 ->\" -> \" 07/03/2024.\"",
         [] { return generate_dates(303, 20000); }},
    };
    return table;
}

void write_shipped_datasets(const std::string& dir) {
    for (const ShippedDataset& d : shipped_datasets()) {
        const std::filesystem::path p = std::filesystem::path(dir) / d.file;
        std::error_code ec;
        std::filesystem::create_directories(p.parent_path(), ec);
        std::ofstream f(p, std::ios::binary);
        const std::string text = d.generate();
        f.write(text.data(), std::streamsize(text.size()));
        f.close();
        ENGINE_CHECK(f.good(), FileError, "cannot write dataset '{}'", p.string());
    }
}
