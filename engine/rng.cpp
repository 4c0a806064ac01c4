// engine/rng.cpp — restoring a saved generator state.
#include "rng.h"
#include <sstream>

bool Rng::set_state(const std::string& text) {
    std::istringstream in(text);
    std::array<uint64_t, 4> s{};
    for (auto& w : s)
        if (!(in >> w)) return false;
    std::string rest;
    if (in >> rest) return false;
    if ((s[0] | s[1] | s[2] | s[3]) == 0) return false;   // the all-zero state is a fixed point
    s_ = s;
    return true;
}
