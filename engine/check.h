// engine/check.h — the error types of the whole project and the one macro that throws them.
//
// Library code never asserts, aborts or exits on bad input: it throws one of these, with a
// message that names the op, file, tensor or flag at fault. The CLI catches, prints, exits 1.
// `assert` would vanish under -DNDEBUG; `abort` would make every failure path untestable.
#pragma once
#include <fmt/format.h>
#include <functional>
#include <stdexcept>
#include <string>

struct Error : std::runtime_error { using std::runtime_error::runtime_error; };
struct ShapeError : Error { using Error::Error; };    // shapes that do not fit an op
struct ValueError : Error { using Error::Error; };    // bad argument, config value or flag
struct FileError : Error { using Error::Error; };     // unreadable, malformed or unwritable file
struct NumericError : Error { using Error::Error; };  // NaN or Inf where a finite value is required

// ENGINE_CHECK(cond, ShapeError, "linear: x {} and W {} differ", a, b) throws when !cond.
#define ENGINE_CHECK(cond, ErrorType, ...)                        \
    do {                                                          \
        if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__));   \
    } while (0)

// What library code tolerates but the user should hear about (a config key it does not know)
// goes through warn(): "warning: <message>" on stderr. A test installs a sink to collect the
// warnings instead; a WarnContext prefixes those raised in its scope, e.g. with the file read.
using WarnSink = std::function<void(const std::string&)>;
void warn(const std::string& message);
WarnSink set_warn_sink(WarnSink sink);   // returns the previous sink; an empty one means stderr

struct WarnContext {
    explicit WarnContext(std::string what);   // "what: " before each warning until destroyed
    ~WarnContext();
    WarnContext(const WarnContext&) = delete;
    WarnContext& operator=(const WarnContext&) = delete;
};

#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "peft.cpp must not be built with -ffast-math: it folds isnan/isinf and breaks NaN checks"
#endif
