#!/usr/bin/env bash
# Proves the Conan recipe: creates the moe package from this checkout and
# builds tests/consumer against it with Conan's CMake integration.
#
# Eigen, xsimd and nlohmann_json come from Debian (platform_requires in the
# profile below): this machine reaches PyPI and Debian, not Conan Center. With
# Conan Center reachable, drop the [platform_requires] section and Conan
# builds them from the recipe's requirements instead.
# (--no-remote keeps Conan from asking an unreachable Conan Center.)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CONAN_HOME="$work/conan-home"

command -v conan >/dev/null || python3 -m pip install -q "conan>=2,<3"
conan profile detect --force >/dev/null
cat > "$work/system-deps" <<'PROFILE'
include(default)
[settings]
compiler.cppstd=20
[platform_requires]
eigen/3.4.0
xsimd/8.1.0
nlohmann_json/3.11.2
PROFILE

conan create "$root" --profile:all "$work/system-deps" --build=missing --no-remote
version=$(sed -n 's/#define MOE_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' "$root/include/moe/version.hpp" | paste -sd.)

# A consumer: conanfile.txt + CMakeToolchain, then plain find_package(moe).
mkdir -p "$work/consumer"
cp "$root"/tests/consumer/{CMakeLists.txt,main.cpp,text.cpp} "$work/consumer/"
cat > "$work/consumer/conanfile.txt" <<TXT
[requires]
moe/$version
[generators]
CMakeToolchain
CMakeDeps
TXT
conan install "$work/consumer" --profile:all "$work/system-deps" --no-remote --output-folder "$work/consumer/build"
cmake -S "$work/consumer" -B "$work/consumer/build" \
      -DCMAKE_TOOLCHAIN_FILE="$work/consumer/build/conan_toolchain.cmake" -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/consumer/build"
"$work/consumer/build/moe_consumer"        # built with no flag: prints the kernels it ran and the CPU's best
"$work/consumer/build/moe_consumer_baseline"
if [ -x "$work/consumer/build/moe_consumer_text" ]; then "$work/consumer/build/moe_consumer_text"; fi
echo "conan package moe/$version: consumer PASSED"
