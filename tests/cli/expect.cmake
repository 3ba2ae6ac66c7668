# Shared by the command-line tests (cmake -P scripts).
#   moe_cli_start(<VAR>...) requires each -D<VAR>=..., empties ${WORK} and
# the list of failures.
#   moe_expect(<name> <exit code> <regex the output must match> <command> <args>...)
# runs the command and, unless its exit code and output (stdout and stderr
# together) match, appends a report to the caller's `failures`.
# moe_expect_report(<what>) fails the script if any check failed.
function(moe_expect name code regex)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(text "${out}${err}")
  if(NOT rc EQUAL code OR NOT text MATCHES "${regex}")
    list(APPEND failures "${name}: exit ${rc} (expected ${code}), output must match '${regex}':\n${text}")
    set(failures "${failures}" PARENT_SCOPE)
  else()
    message(STATUS "ok: ${name}")
  endif()
endfunction()

macro(moe_expect_report what)
  if(failures)
    list(JOIN failures "\n\n" moe_expect_all)
    message(FATAL_ERROR "${what} checks failed:\n\n${moe_expect_all}")
  endif()
  message(STATUS "${what}: all checks passed")
endmacro()

macro(moe_cli_start)
  foreach(var ${ARGN})
    if(NOT ${var})
      message(FATAL_ERROR "pass -D${var}=...")
    endif()
  endforeach()
  file(REMOVE_RECURSE "${WORK}")
  file(MAKE_DIRECTORY "${WORK}")
  set(failures "")
endmacro()
