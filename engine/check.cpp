// engine/check.cpp — where warnings go (engine/check.h).
#include "check.h"
#include <cstdio>
#include <utility>
#include <vector>

static WarnSink& warn_sink() {
    static WarnSink sink;
    return sink;
}
static thread_local std::vector<std::string> warn_contexts;

void warn(const std::string& message) {
    std::string text;
    for (const std::string& c : warn_contexts) text += c + ": ";
    text += message;
    if (warn_sink()) return warn_sink()(text);
    std::fflush(stdout);   // keep the order of what was printed before
    std::fprintf(stderr, "warning: %s\n", text.c_str());
}

WarnSink set_warn_sink(WarnSink sink) {
    std::swap(sink, warn_sink());
    return sink;
}

WarnContext::WarnContext(std::string what) { warn_contexts.push_back(std::move(what)); }
WarnContext::~WarnContext() { warn_contexts.pop_back(); }
