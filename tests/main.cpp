// tests/main.cpp — the single doctest main. Run `build/tests -ts=ops` or `-tc="*lora*"` to filter.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
