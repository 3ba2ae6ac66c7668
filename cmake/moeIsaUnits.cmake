# moe_add_isa_executable: one program that carries moe's kernels for every
# x86-64 level (baseline, AVX2, AVX-512, AVX-512 with BF16/VNNI) and runs
# the best one the CPU has, or the one `--isa LEVEL` / MOE_ISA asks for.
#
#   moe_add_isa_executable(<target> SOURCES <src>...
#                          [LIBRARIES <lib>...] [DEFINITIONS <def>...]
#                          [LEVELS <level>... | native])
#
# The sources are compiled once per level with that level's flags (a
# "unit"); each unit's `main` is renamed and its hidden and local symbols
# get the level as a suffix, so units never share an inline function or a
# template instance built for another level; each unit's static
# initialisation moves to a section of its own. A start-up unit built for
# the baseline picks one unit, runs its static initialisation, then its main
# (moe/backend/cpu/launch.hpp). Each unit is the whole program.
#
# Needs an x86-64 ELF toolchain (GCC or Clang, binutils' ld, objcopy and
# readelf). Elsewhere, or with LEVELS native, the target is built once,
# with -march=native.
set(_moe_isa_module_dir "${CMAKE_CURRENT_LIST_DIR}")

set(MOE_ISA_LEVELS baseline avx2 avx512 avx512-bf16)
set(_moe_isa_flags_baseline "")
set(_moe_isa_flags_avx2 -mavx2 -mfma)
set(_moe_isa_flags_avx512 ${_moe_isa_flags_avx2} -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl)
set(_moe_isa_flags_avx512-bf16 ${_moe_isa_flags_avx512} -mavx512vnni -mavx512bf16)

# Whether this toolchain can build multi-ISA programs; sets <out> TRUE/FALSE.
function(moe_isa_units_supported out)
  set(ok FALSE)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang"
     AND CMAKE_EXECUTABLE_FORMAT STREQUAL "ELF" AND CMAKE_OBJCOPY AND CMAKE_LINKER)
    find_program(MOE_READELF NAMES readelf HINTS ${CMAKE_READELF})
    if(MOE_READELF)
      set(ok TRUE)
    endif()
  endif()
  set(${out} ${ok} PARENT_SCOPE)
endfunction()

function(moe_add_isa_executable target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;LIBRARIES;DEFINITIONS;LEVELS")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "moe_add_isa_executable(${target}): no SOURCES")
  endif()
  if(NOT arg_LEVELS)
    set(arg_LEVELS ${MOE_ISA_LEVELS})
  endif()
  moe_isa_units_supported(supported)
  if(arg_LEVELS STREQUAL "native" OR NOT supported)
    add_executable(${target} ${arg_SOURCES})
    target_link_libraries(${target} PRIVATE ${arg_LIBRARIES})
    target_compile_definitions(${target} PRIVATE ${arg_DEFINITIONS})
    target_compile_options(${target} PRIVATE -march=native)
    set_target_properties(${target} PROPERTIES MOE_ISA_DISPATCH ON)
    return()
  endif()

  set(objects "")
  set(declarations "")
  set(units "")
  foreach(level IN LISTS MOE_ISA_LEVELS)  # lowest first: the link keeps the lowest unit's shared symbols
    if(NOT level IN_LIST arg_LEVELS)
      continue()
    endif()
    string(REPLACE "-" "_" tag "${level}")
    set(unit ${target}.${tag})
    add_library(${unit} OBJECT ${arg_SOURCES})
    set_target_properties(${unit} PROPERTIES MOE_ISA_DISPATCH ON)
    target_link_libraries(${unit} PRIVATE ${arg_LIBRARIES})
    target_compile_definitions(${unit} PRIVATE ${arg_DEFINITIONS} MOE_ISA_UNIT=${tag})
    target_compile_options(${unit} PRIVATE ${_moe_isa_flags_${level}} -fvisibility=hidden
                                           -fvisibility-inlines-hidden)
    set(object ${CMAKE_CURRENT_BINARY_DIR}/${unit}.o)
    add_custom_command(
      OUTPUT ${object}
      COMMAND sh ${_moe_isa_module_dir}/moe-isa-localize.sh ${object} ${tag} ${CMAKE_LINKER} ${CMAKE_OBJCOPY}
              ${MOE_READELF} $<TARGET_OBJECTS:${unit}>
      DEPENDS ${unit} $<TARGET_OBJECTS:${unit}> ${_moe_isa_module_dir}/moe-isa-localize.sh
      COMMENT "Making the ${level} unit of ${target} private to itself"
      COMMAND_EXPAND_LISTS VERBATIM)
    list(APPEND objects ${object})
    string(APPEND declarations "int moe_isa_main_${tag}(int, char**);\n"
           "extern moe::isa::Unit::Init const __start_moe_isa_init_${tag}[] __attribute__((weak));\n"
           "extern moe::isa::Unit::Init const __stop_moe_isa_init_${tag}[] __attribute__((weak));\n")
    string(APPEND units "      {moe::isa::Level::${tag}, &moe_isa_main_${tag}, __start_moe_isa_init_${tag},"
           " __stop_moe_isa_init_${tag}},\n")
  endforeach()

  set(launcher ${CMAKE_CURRENT_BINARY_DIR}/${target}.start.cpp)
  configure_file(${_moe_isa_module_dir}/moe-isa-main.cpp.in ${launcher} @ONLY)
  set_source_files_properties(${objects} PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
  add_executable(${target} ${launcher} ${objects})
  target_link_libraries(${target} PRIVATE ${arg_LIBRARIES})
  set_target_properties(${target} PROPERTIES MOE_ISA_DISPATCH ON)
endfunction()

# moe_warn_baseline_targets(): at the end of the configure step, a warning
# for each target that links moe::moe directly with no ISA flag and not
# through moe_add_isa_executable. On x86-64 such a target compiles moe's
# kernels for the baseline (SSE2), about half the speed of the AVX2 or
# AVX-512 kernels the CPU most likely has, and nothing else would say so.
# moeConfig.cmake schedules it once; a target that means it sets
# `MOE_BASELINE_OK ON`, a project sets MOE_NO_BASELINE_WARNING.
function(_moe_isa_collect_targets dir out)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _moe_isa_collect_targets("${sub}" more)
    list(APPEND targets ${more})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

function(_moe_isa_flags_of target out)
  get_target_property(options ${target} COMPILE_OPTIONS)
  get_target_property(flags ${target} COMPILE_FLAGS)
  get_target_property(dir ${target} SOURCE_DIR)
  get_directory_property(cxx_flags DIRECTORY "${dir}" DEFINITION CMAKE_CXX_FLAGS)
  string(TOUPPER "${CMAKE_BUILD_TYPE}" config)
  get_directory_property(config_flags DIRECTORY "${dir}" DEFINITION CMAKE_CXX_FLAGS_${config})
  set(all "${options} ${flags} ${cxx_flags} ${config_flags}")
  get_target_property(links ${target} LINK_LIBRARIES)
  foreach(lib IN LISTS links)
    if(TARGET "${lib}")
      get_target_property(interface "${lib}" INTERFACE_COMPILE_OPTIONS)
      string(APPEND all " ${interface}")
    endif()
  endforeach()
  set(${out} "${all}" PARENT_SCOPE)
endfunction()

function(moe_warn_baseline_targets)
  if(MOE_NO_BASELINE_WARNING OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    return()
  endif()
  _moe_isa_collect_targets("${CMAKE_SOURCE_DIR}" targets)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
      continue()
    endif()
    get_target_property(dispatch ${target} MOE_ISA_DISPATCH)
    get_target_property(ok ${target} MOE_BASELINE_OK)
    get_target_property(links ${target} LINK_LIBRARIES)
    if(dispatch OR ok OR NOT links)
      continue()
    endif()
    if(NOT "moe::moe" IN_LIST links)
      continue()
    endif()
    _moe_isa_flags_of(${target} flags)
    if(flags MATCHES "-march=|-mavx|-mcpu=|/arch:")
      continue()
    endif()
    message(WARNING
            "moe: target '${target}' links moe::moe with no ISA flag, so moe's CPU kernels in it are compiled for "
            "the x86-64 baseline (SSE2), about half the speed of the AVX2 or AVX-512 kernels its users' CPUs "
            "most likely have. Build it with\n"
            "  moe_add_isa_executable(${target} SOURCES ... LIBRARIES moe::moe)\n"
            "(each CPU runs the best kernels it has, picked at start-up), or give it an -march= flag. To keep the "
            "baseline: set_target_properties(${target} PROPERTIES MOE_BASELINE_OK ON).")
  endforeach()
endfunction()
