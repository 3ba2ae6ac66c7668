#!/bin/sh
# isa_units_check.sh must fail on the two hazards it exists for, and pass
# once they are removed. Built here from tests/cli/isa_units_selftest:
#  - main.cpp (baseline) and unit.cpp (AVX-512) share an inline function;
#    linked unit-first and without renaming, the baseline main calls the
#    AVX-512 body (rule 1 must fail);
#  - unit.cpp's static table is built by an AVX-512 initialiser in
#    .init_array (rule 2 must fail once its symbols carry the unit's name);
# The programs' own isa-units-* tests are the passing cases.
# isa_units_selftest.sh CXX SOURCE_DIR WORK_DIR
set -eu
cxx=$1 src=$2 work=$3
here=$src/tests/cli/isa_units_selftest
check=$src/tests/cli/isa_units_check.sh
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$cxx" -O2 -c "$here/main.cpp" -o main.o
"$cxx" -O2 -mavx2 -mfma -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl -fvisibility=hidden \
  -fvisibility-inlines-hidden -c "$here/unit.cpp" -o unit.o

expect_fail() {  # what, program, the failure expected
  if sh "$check" "$2" > out.txt 2>&1; then
    echo "FAIL: the check passed a program with $1:"; cat out.txt; exit 1
  fi
  if ! grep -q "$3" out.txt; then
    echo "FAIL: the check rejected a program with $1, but not for '$3':"; cat out.txt; exit 1
  fi
  grep "$3" out.txt | head -2
  echo "ok: the check rejects a program with $1"
}

"$cxx" unit.o main.o -o shared-body
expect_fail "an AVX-512 body of a shared inline function kept for the baseline caller" shared-body \
  "sum_of_squares.*uses .* but can be entered at level 0"

# Renamed, but the unit's initialiser left in .init_array.
sh "$src/cmake/moe-isa-localize.sh" unit.avx512.o avx512 ld objcopy readelf unit.o
objcopy --rename-section moe_isa_init_avx512=.init_array unit.avx512.o unit-eager.o
"$cxx" main.o unit-eager.o -o eager-init 2> link.txt || true
if [ -x eager-init ]; then
  expect_fail "a unit's static initialiser in .init_array" eager-init "static initialiser .*avx512 of a unit runs before main"
else
  echo "FAIL: could not link the eager-init program:"; cat link.txt; exit 1
fi
