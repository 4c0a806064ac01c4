// train/defaults.cpp — the per-method defaults table.
#include "defaults.h"
#include <algorithm>
#include "engine/check.h"

const std::vector<MethodDefaults>& method_defaults_table() {
    static const std::vector<MethodDefaults> rows = {
        // method    lr     steps
        {"full",    3e-4,   800},
        {"lora",    1e-2,   800},
        {"ia3",     3e-1,   800},
        {"adapter", 1e-2,   800},
        {"prefix",  1e-1,   800},
        {"prompt",  3e-1,   800},
        {"ptuning", 1e-2,   800},
        // The LoRA family (DoRA and PiSSA are --method lora): not swept as above; LoRA's rate
        // where the update has LoRA's size, IA³'s order for VeRA's one vector per output.
        {"loha",    1e-2,   800},
        {"lokr",    1e-2,   800},
        {"vera",    1e-1,   800},
        {"oft",     1e-2,   800},
    };
    return rows;
}

const MethodDefaults& method_defaults(const std::string& method) {
    std::string names;
    for (const MethodDefaults& d : method_defaults_table()) {
        if (d.method == method) return d;
        names += (names.empty() ? "" : ", ") + d.method;
    }
    throw ValueError(fmt::format("no defaults for method '{}' (known: {})", method, names));
}

int64_t default_warmup(int64_t steps) { return std::min<int64_t>(50, steps / 10); }
