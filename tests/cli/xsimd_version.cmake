cmake_minimum_required(VERSION 3.23)
# moe_check_xsimd_version (cmake/moeXsimdVersion.cmake): the xsimd versions
# moe builds with pass, the others stop the configure naming what was found.
# Run: cmake -DSOURCE_DIR=<repo> -P xsimd_version.cmake
if(DEFINED ONE)  # one case, in its own process: FATAL_ERROR ends only it
  include(${SOURCE_DIR}/cmake/moeXsimdVersion.cmake)
  set(xsimd_VERSION ${ONE})
  set(xsimd_DIR /somewhere/xsimd)
  moe_check_xsimd_version()
  message(STATUS "accepted ${ONE}")
  return()
endif()
set(failures "")
foreach(case "8.1.0;0" "9.0.1;0" "13.2.0;0" "14.3.0;0" "8.0.5;1" "7.6.0;1" "15.0.0;1")
  list(GET case 0 version)
  list(GET case 1 want_failure)
  execute_process(COMMAND ${CMAKE_COMMAND} -DONE=${version} -DSOURCE_DIR=${SOURCE_DIR} -P ${CMAKE_CURRENT_LIST_FILE}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(want_failure AND (rc EQUAL 0 OR NOT err MATCHES "found xsimd ${version} \\(/somewhere/xsimd\\); moe needs xsimd 8.1"))
    list(APPEND failures "xsimd ${version} was not refused with a clear message: ${err}")
  elseif(NOT want_failure AND NOT rc EQUAL 0)
    list(APPEND failures "xsimd ${version} was refused: ${err}")
  endif()
endforeach()
if(failures)
  message(FATAL_ERROR "${failures}")
endif()
message(STATUS "xsimd version check: all cases as expected")
