#pragma once
/// \file launch.hpp
/// One program for every x86-64 CPU: at start-up, run the copy of the
/// program built for the CPU it finds.
///
/// A multi-ISA program is its sources compiled once per level with that
/// level's flags (each copy a "unit": its `main` renamed, its inline
/// functions and templates made private to it, so no unit ever calls
/// another's AVX-512 code on an AVX2 CPU), plus a start-up unit built for
/// the baseline whose `main` calls launch(). Each unit is the whole
/// program, so nothing but argc/argv crosses between units: no moe type,
/// no exception, no static; a unit's static initialisation runs when the
/// unit is picked, not before main. The CMake function moe_add_isa_executable
/// (installed with the package, in moeIsaUnits.cmake) does all of it:
///
///   find_package(moe REQUIRED)
///   moe_add_isa_executable(my-server SOURCES server.cpp LIBRARIES moe::moe)
///
/// Which unit runs: the one `--isa LEVEL` on the command line asks for,
/// else the MOE_ISA environment variable, else the best this CPU runs
/// ("native"); that is, the highest unit at or below the level asked. A
/// level above the CPU's is an error naming both (exit status 2). `--isa
/// all` runs the program once per unit the CPU runs, lowest first, each
/// with `--isa` set to its level; the exit status is the first nonzero one.

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/backend/cpu/level.hpp"

namespace moe::isa {

/// One copy of the program: the level it was built for, its renamed main,
/// and its static initialisers (what the compiler would have run before
/// main: deferred until this unit is picked, so that a unit built for
/// AVX-512 runs nothing on a CPU without it).
struct Unit {
  using Init = void (*)();
  Level level;
  int (*main)(int argc, char** argv);
  const Init* init_begin = nullptr;
  const Init* init_end = nullptr;

  /// Runs the static initialisers (once), then main.
  int run(int argc, char** argv) const {
    for (const Init* f = init_begin; f != nullptr && f != init_end; ++f) (*f)();
    return main(argc, argv);
  }
};

namespace detail {
/// The index in argv of the value of the last `--isa X` or `--isa=X`
/// (before any `--`), or -1.
inline int isa_argument(int argc, char** argv) {
  int at = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--isa" && i + 1 < argc)
      at = ++i;
    else if (a.starts_with("--isa="))
      at = i;
  }
  return at;
}
}  // namespace detail

/// Runs the unit of `units` for this CPU (or the level asked) and returns its exit status.
inline int launch(int argc, char** argv, std::span<const Unit> units) {
  const auto fail = [&](const std::string& message) {
    std::fprintf(stderr, "%s: %s\n", argc > 0 ? argv[0] : "moe", message.c_str());
    return 2;
  };
  std::string_view asked = "native";
  if (const char* env = std::getenv("MOE_ISA"); env != nullptr && *env != '\0') asked = env;
  const int at = detail::isa_argument(argc, argv);
  const bool joined = at >= 0 && std::string_view(argv[at]).starts_with("--isa=");
  if (at >= 0) asked = std::string_view(argv[at]).substr(joined ? 6 : 0);

  const Level cpu = cpu_level();
  if (asked == "all") {
    int status = 0;
    for (const Unit& unit : units) {
      if (int(unit.level) > int(cpu)) continue;
      std::string value = std::string(joined ? "--isa=" : "") + std::string(name(unit.level));
      std::vector<char*> args(argv, argv + argc);
      args.push_back(nullptr);
      if (at >= 0) args[at] = value.data();
      const int rc = unit.run(argc, args.data());
      if (status == 0) status = rc;
    }
    return status;
  }
  const std::optional<Level> named = asked == "native" ? std::optional<Level>(cpu) : level_named(asked);
  if (!named)
    return fail("--isa / MOE_ISA: expected native, all, baseline, avx2, avx512 or avx512-bf16, got '" +
                std::string(asked) + "'");
  if (int(*named) > int(cpu))
    return fail("ISA " + std::string(name(*named)) + " is not supported by this CPU (it runs " +
                std::string(name(cpu)) + ")");
  const Unit* pick = nullptr;
  for (const Unit& unit : units)
    if (int(unit.level) <= int(*named) && (pick == nullptr || int(unit.level) > int(pick->level))) pick = &unit;
  if (pick == nullptr) return fail("this program has no unit at or below " + std::string(name(*named)));
  return pick->run(argc, argv);
}

}  // namespace moe::isa
