# Installs this build of moe into a scratch prefix, then configures, builds
# and runs tests/consumer against it; also checks that asking for a version
# the package does not have fails.
# cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -P run.cmake
cmake_minimum_required(VERSION 3.23)
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
  set(last_errors "${err}" PARENT_SCOPE)
endfunction()

# "kernels: <level>; CPU: <level>" from the consumer's output.
function(kernels_and_cpu output kernels_out cpu_out)
  if(NOT output MATCHES "kernels: ([a-z0-9-]+); CPU: ([a-z0-9-]+)")
    message(FATAL_ERROR "the consumer did not say which kernels it ran:\n${output}")
  endif()
  set(${kernels_out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
  set(${cpu_out} "${CMAKE_MATCH_2}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
foreach(f include/moe/moe.hpp share/cmake/moe/moeConfig.cmake share/cmake/moe/moeConfigVersion.cmake
          share/cmake/moe/moeTargets.cmake)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()

run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build" -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=Release)
# The target linked without an ISA flag is named in a warning; the others are not.
set(warning "target 'moe_consumer_baseline' links moe::moe with no ISA flag")
string(FIND "${last_errors}" "${warning}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "configuring the consumer did not warn \"${warning}\":\n${last_errors}")
endif()
foreach(quiet moe_consumer moe_consumer_baseline_ok)
  string(FIND "${last_errors}" "target '${quiet}' links" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "configuring the consumer warned about ${quiet}:\n${last_errors}")
  endif()
endforeach()
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")

# Built from the README with no flag: the best kernels this CPU has.
run("${WORK_DIR}/build/moe_consumer")
message(STATUS "${last_output}")
kernels_and_cpu("${last_output}" kernels cpu)
if(NOT kernels STREQUAL cpu)
  message(FATAL_ERROR "moe_consumer ran the ${kernels} kernels on a CPU that has ${cpu}")
endif()
run("${WORK_DIR}/build/moe_consumer_baseline")
kernels_and_cpu("${last_output}" kernels cpu)
if(NOT kernels STREQUAL "baseline")
  message(FATAL_ERROR "moe_consumer_baseline, built with no flag, ran the ${kernels} kernels")
endif()

# moe::text, when this build has SentencePiece (WITH_TEXT): the target exists and links.
if(WITH_TEXT)
  run("${WORK_DIR}/build/moe_consumer_text")
  message(STATUS "${last_output}")
endif()
if(WITH_BPE)
  run("${WORK_DIR}/build/moe_consumer_bpe")
  message(STATUS "${last_output}")
endif()

# Every level this CPU runs passes, and no AVX code sits where an older CPU could reach it.
run(${CMAKE_COMMAND} -E env MOE_ISA=all "${WORK_DIR}/build/moe_consumer")
string(REGEX MATCHALL "PASSED" passes "${last_output}")
if(NOT passes)
  message(FATAL_ERROR "moe_consumer printed no PASSED:\n${last_output}")
endif()
list(LENGTH passes n)
message(STATUS "moe_consumer: PASSED on ${n} levels")
run(sh "${SOURCE_DIR}/tests/cli/isa_units_check.sh" "${WORK_DIR}/build/moe_consumer" baseline avx2 avx512
    avx512-bf16)
message(STATUS "${last_output}")

execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build-99"
                -DCMAKE_PREFIX_PATH=${prefix} -DMOE_REQUIRED_VERSION=99.0 RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(moe 99.0) succeeded; the version file should refuse it")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
