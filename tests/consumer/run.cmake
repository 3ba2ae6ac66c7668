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
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/moe_consumer")
message(STATUS "${last_output}")

# moe_add_isa_executable from the installed package: every level this CPU runs passes,
# and no AVX code sits where an older CPU could reach it.
run(${CMAKE_COMMAND} -E env MOE_ISA=all "${WORK_DIR}/build/moe_consumer_any_cpu")
string(REGEX MATCHALL "PASSED" passes "${last_output}")
if(NOT passes)
  message(FATAL_ERROR "moe_consumer_any_cpu printed no PASSED:\n${last_output}")
endif()
list(LENGTH passes n)
message(STATUS "moe_consumer_any_cpu: PASSED on ${n} levels")
run(sh "${SOURCE_DIR}/tests/cli/isa_units_check.sh" "${WORK_DIR}/build/moe_consumer_any_cpu" baseline avx2 avx512
    avx512-bf16)
message(STATUS "${last_output}")

execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build-99"
                -DCMAKE_PREFIX_PATH=${prefix} -DMOE_REQUIRED_VERSION=99.0 RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(moe 99.0) succeeded; the version file should refuse it")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
