# moe_extract_readme_snippets(<readme> <out_dir> [<language>])
#
# Writes every ```cpp block (or ```<language> block: cuda) of <readme> to
# <out_dir>/<name>.inc, where <name> comes from the `<!-- snippet: name -->`
# line that must come right before the block, with a #line directive so that
# a compiler error points at README.md's own line. Also writes
# <out_dir>/names.inc (cuda: cuda_names.inc): the names, as a list of string
# literals. A block without its marker line is a configure error: every C++
# block of the README is compiled by tests/readme/snippets.cpp, every CUDA
# block by tests/readme/snippets.cu (in a MOE_ENABLE_CUDA build).
# Files are rewritten only when their text changes, so editing prose
# rebuilds nothing.
function(_moe_write_if_changed path text)
  if(EXISTS "${path}")
    file(READ "${path}" old)
    if(old STREQUAL text)
      return()
    endif()
  endif()
  file(WRITE "${path}" "${text}")
endfunction()

function(moe_extract_readme_snippets readme out_dir)
  set(language cpp)
  set(names_file names.inc)
  if(ARGC GREATER 2)
    set(language "${ARGV2}")
    set(names_file "${ARGV2}_names.inc")
  endif()
  file(READ "${readme}" text)
  set(fence "```${language}\n")
  set(names_inc "")
  set(rest "${text}")
  set(consumed 0)  # characters of text before rest
  while(TRUE)
    string(FIND "${rest}" "${fence}" at)
    if(at EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${rest}" 0 ${at} before)
    math(EXPR line_of_fence "${consumed} + ${at}")
    string(SUBSTRING "${text}" 0 ${line_of_fence} prefix)
    string(REGEX MATCHALL "\n" newlines "${prefix}")
    list(LENGTH newlines fence_line)  # the fence is on line fence_line + 1; code starts after it
    math(EXPR code_line "${fence_line} + 2")
    if(NOT before MATCHES "<!-- snippet: ([a-z0-9_]+) -->\n$")
      message(FATAL_ERROR "${readme}:${code_line}: a ```${language} block without a `<!-- snippet: name -->` line "
                          "right before it. Every C++ block of the README is compiled by tests/readme/snippets.cpp "
                          "(CUDA blocks by snippets.cu): name the block, then wrap it there.")
    endif()
    set(name "${CMAKE_MATCH_1}")
    string(LENGTH "${fence}" fence_length)
    math(EXPR code_start "${at} + ${fence_length}")
    string(SUBSTRING "${rest}" ${code_start} -1 rest)
    math(EXPR consumed "${consumed} + ${code_start}")
    string(FIND "${rest}" "\n```" end)
    if(end EQUAL -1)
      message(FATAL_ERROR "${readme}:${code_line}: the ```${language} block '${name}' is never closed")
    endif()
    string(SUBSTRING "${rest}" 0 ${end} code)
    _moe_write_if_changed("${out_dir}/${name}.inc" "#line ${code_line} \"${readme}\"\n${code}\n")
    string(APPEND names_inc "\"${name}\",\n")
    math(EXPR after "${end} + 4")
    string(SUBSTRING "${rest}" ${after} -1 rest)
    math(EXPR consumed "${consumed} + ${after}")
  endwhile()
  _moe_write_if_changed("${out_dir}/${names_file}" "${names_inc}")
endfunction()
