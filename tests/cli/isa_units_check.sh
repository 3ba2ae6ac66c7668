#!/bin/sh
# Checks a program built by moe_add_isa_executable for code that could run
# on a CPU without the instructions it uses (it would die with SIGILL on
# the older CPUs the program is meant for):
#  1. Every function that uses AVX (VEX) or AVX-512 (EVEX, mask registers)
#     instructions is reached only from units of that level or above. The
#     disassembly gives each function the lowest level it can be entered at:
#     a unit's main is entered at its own level; any other function at the
#     lowest level of the functions that call it or take its address; one
#     that no code refers to (reached through a vtable or an init section)
#     at the level of the unit its name says (.avx2 ...), or the baseline.
#  2. No unit's static initialiser is in the program's .init_array (which
#     runs before main, on every CPU): each unit's runs once it is picked.
#  3. Each level the program is said to carry has its renamed main.
#
# isa_units_check.sh PROGRAM LEVEL...
set -eu
program=$1
shift
symbols=$(nm "$program")
for level in "$@"; do
  tag=$(echo "$level" | tr - _)
  if ! echo "$symbols" | grep -q " moe_isa_main_$tag\$"; then
    echo "FAIL: $program has no unit for $level (no moe_isa_main_$tag)"
    exit 1
  fi
done
status=0
report=$(mktemp)
trap 'rm -f "$report"' EXIT

# 2. The addresses .init_array holds (in place, or as relocation addends in a
#    position-independent program), named; none may belong to a unit.
init=$(readelf -SW "$program" | sed 's/\[ */[/' | awk '$2 == ".init_array" { print $4, $5, $6 }')
if [ -n "$init" ]; then
  set -- $init
  addr=$((0x$1)) offset=$((0x$2)) size=$((0x$3))
  {
    od -An -tx8 -v -j "$offset" -N "$size" "$program" | tr -s ' ' '\n'
    readelf -rW "$program" | awk -v lo="$addr" -v hi="$((addr + size))" \
      '$3 == "R_X86_64_RELATIVE" { o = sprintf("%d", "0x" $1) + 0; if (o >= lo && o < hi) print $4 }'
  } | grep -v '^$' | while read -r a; do printf '%016x\n' "$((0x$a))"; done | sort -u > "$report.init"
  echo "$symbols" | awk 'NR == FNR { want[$1] = 1; next } ($1 in want) && $3 ~ /\.(baseline|avx2|avx512|avx512_bf16)$/ {
      print "FAIL: static initialiser " $3 " of a unit runs before main, on every CPU"; bad = 1 }
    END { exit bad }' "$report.init" - || status=1
  rm -f "$report.init"
fi

# 1. Levels: instructions used against the level each function is entered at.
objdump -d --no-show-raw-insn "$program" | awk -v program="$program" '
  function suffix_level(f) {
    if (f ~ /(\.|^moe_isa_main_)avx512_bf16$/) return 3
    if (f ~ /(\.|^moe_isa_main_)avx512$/) return 2
    if (f ~ /(\.|^moe_isa_main_)avx2$/) return 1
    return 0
  }
  /^[0-9a-f]+ <.*>:$/ { fn = $2; sub(/^</, "", fn); sub(/>:$/, "", fn); used[fn] = 0; next }
  /^ *[0-9a-f]+:\t/ {
    if (split($0, part, "\t") < 2) next
    ins = part[2]; split(ins, word, " "); m = word[1]; ++instructions
    if ((m ~ /^v/ && m !~ /^ver[rw]/) || m ~ /^k(add|and|mov|not|or|shift|test|unpck|xnor|xor)/) {
      l = (m ~ /^k/ || ins ~ /zmm|%k[1-7]|[xy]mm(1[6-9]|2[0-9]|3[01])|\{1to/) ? 2 : 1
      if (l > used[fn]) { used[fn] = l; example[fn] = m }
    }
    if (match(ins, /<[^<>]+>$/)) {
      t = substr(ins, RSTART + 1, RLENGTH - 2); sub(/\+0x[0-9a-f]+$/, "", t)
      if (t != fn) { ++edges; from[edges] = fn; to[edges] = t; referred[t] = 1 }
    }
  }
  END {
    if (instructions == 0) { print "FAIL: no instructions read from " program; exit 1 }
    for (f in used) {
      fixed[f] = f ~ /^moe_isa_main_/
      entry[f] = (fixed[f] || !(f in referred)) ? suffix_level(f) : 9
    }
    for (changed = 1; changed; ) {
      changed = 0
      for (e = 1; e <= edges; ++e) {
        t = to[e]
        if ((t in used) && !fixed[t] && entry[from[e]] < entry[t]) { entry[t] = entry[from[e]]; changed = 1 }
      }
    }
    failures = 0
    for (f in used) {
      if (entry[f] == 9) entry[f] = suffix_level(f)  # only reached from itself: a loop with no way in
      if (used[f] > entry[f]) {
        printf "FAIL: %s: %s uses %s (%s) but can be entered at level %d\n", program, f, example[f],
               used[f] == 2 ? "AVX-512" : "AVX", entry[f]
        ++failures
      }
    }
    if (failures > 0) exit 1
    printf "PASS: %s: %d instructions; AVX and AVX-512 code reached only from units of their level\n", program,
           instructions
  }' > "$report" || status=1
c++filt < "$report"
[ $status -eq 0 ] && echo "PASS: no unit's static initialiser runs before main"
exit $status
