#!/bin/sh
# Makes one unit of a multi-ISA program private to itself (see moeIsaUnits.cmake):
# merges its objects into one, then renames every symbol defined in it that is
# local or hidden (moe's inline functions and templates, Eigen's, the
# program's own, and the local names GCC gives some COMDAT groups, such as a
# destructor's D5) to NAME.TAG, and its `main` to moe_isa_main_TAG. Renaming
# a COMDAT group's symbol renames the group, so the linker keeps each unit's
# copy instead of picking one unit's AVX-512 code for all of them. Symbols of
# default visibility (the standard library's) stay shared; the program links
# its lowest unit first so that theirs is the copy kept (every unit that
# calls such a function has a copy of it, so the copy kept is at most the
# level of its lowest caller).
#
# moe-isa-localize.sh OUT TAG LD OBJCOPY READELF OBJECT...
set -eu
out=$1 tag=$2 ld=$3 objcopy=$4 readelf=$5
shift 5
"$ld" -r -o "$out.merged.o" "$@"
"$readelf" -sW "$out.merged.o" | awk -v tag="$tag" '
  NF >= 8 && $7 != "UND" && $7 != "ABS" && $4 != "SECTION" && $4 != "FILE" {
    if ($8 == "main") print "main moe_isa_main_" tag
    else if ($5 == "LOCAL" || $6 == "HIDDEN") print $8, $8 "." tag
  }' | sort -u > "$out.symbols"
# The unit's static initialisation (its .init_array) moves to a section of
# its own, which the start-up unit runs once it has picked this unit: run
# before main, it would execute this unit's instructions on every CPU.
renames=$("$readelf" -SW "$out.merged.o" | sed -n 's/.*\] \(\.init_array[.0-9]*\) .*/\1/p' |
  while read -r section; do printf ' --rename-section %s=moe_isa_init_%s' "$section" "$tag"; done)
# shellcheck disable=SC2086
"$objcopy" --redefine-syms="$out.symbols" $renames "$out.merged.o" "$out"
rm -f "$out.merged.o"
