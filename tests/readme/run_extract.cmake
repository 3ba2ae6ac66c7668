# cmake -DREADME=<file.md> -DOUT=<folder> -P run_extract.cmake: moe_extract_readme_snippets on one file
# (the readme-extract-unnamed test feeds it a block without its name line).
cmake_minimum_required(VERSION 3.23)
include(${CMAKE_CURRENT_LIST_DIR}/extract.cmake)
file(MAKE_DIRECTORY "${OUT}")
moe_extract_readme_snippets("${README}" "${OUT}")
