cmake_minimum_required(VERSION 3.23)
# moe-merge end to end: three tiny dense Mistral models (moe-mixtral
# make-tiny), a mergekit-moe YAML config, the merge, and moe-mixtral running
# the result; then the errors a user meets first.
# Run: cmake -DMERGE=<moe-merge> -DMIXTRAL=<moe-mixtral> -DWORK=<scratch> -P merge.cmake
foreach(var MERGE MIXTRAL WORK)
  if(NOT ${var})
    message(FATAL_ERROR "pass -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(failures "")

# expect(<name> <exit code> <regex the output must match> <program> <args>...)
function(expect name code regex)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(text "${out}${err}")
  if(NOT rc EQUAL code OR NOT text MATCHES "${regex}")
    list(APPEND failures "${name}: exit ${rc} (expected ${code}), output must match '${regex}':\n${text}")
    set(failures "${failures}" PARENT_SCOPE)
  else()
    message(STATUS "ok: ${name}")
  endif()
endfunction()

foreach(seed 1 2 3)
  expect(make-dense-${seed} 0 "mistral, .*dense FFN" "${MIXTRAL}" make-tiny --out "${WORK}/m${seed}" --family mistral
         --seed ${seed} --dtype f32 --no-tokenizer)
endforeach()
file(WRITE "${WORK}/moe.yml" "base_model: ${WORK}/m1
gate_mode: uniform_random
dtype: bfloat16
experts_per_token: 2
experts:
  - source_model: ${WORK}/m1
    positive_prompts: [\"chat\", \"assistant\"]
  - source_model: ${WORK}/m2
    positive_prompts: [\"code\", \"python\"]
  - source_model: ${WORK}/m3
    positive_prompts: [\"story\"]
    residual_scale: 0.5
")
expect(merge 0 "wrote .*Mixtral, 4 layers, 3 experts top-2, gates uniform_random.*in 4 shard"
       "${MERGE}" "${WORK}/moe.yml" "${WORK}/moe" --random-seed 1 --out-shard-size 1M --allow-crimes --device cpu)
expect(merge-warns-power-of-two 0 "3 experts is not a power of two"
       "${MERGE}" "${WORK}/moe.yml" "${WORK}/moe" --random-seed 1 --out-shard-size 1M)
expect(merged-info 0 "\"num_local_experts\": 3.*weight bytes" "${MIXTRAL}" info --model "${WORK}/moe")
expect(merged-generate 0 "6 new tokens.*layer  3:" "${MIXTRAL}" generate --model "${WORK}/moe" --tokens 1,20,30
       --max-new 6 --stop 999999)

# Errors: mergekit's messages, and what mergekit lacks.
file(READ "${WORK}/moe.yml" yml)
string(REPLACE "[\"code\", \"python\"]" "[\"chat\", \"assistant\"]" same_prompts "${yml}")
string(REPLACE "[\"story\"]" "[\"chat\", \"assistant\"]" same_prompts "${same_prompts}")
string(REPLACE "    residual_scale: 0.5\n" "" same_prompts "${same_prompts}")
file(WRITE "${WORK}/same.yml" "${same_prompts}")
expect(identical-prompts 1 "Your positive and negative prompts are identical for all experts" "${MERGE}"
       "${WORK}/same.yml" "${WORK}/bad")
string(REPLACE "${WORK}/m2" "org/some-model" remote "${yml}")
file(WRITE "${WORK}/remote.yml" "${remote}")
expect(remote-model 1 "'org/some-model' is not a local folder" "${MERGE}" "${WORK}/remote.yml" "${WORK}/bad")
string(REPLACE "gate_mode: uniform_random" "gate_mode: hiden" typo "${yml}")
file(WRITE "${WORK}/typo.yml" "${typo}")
expect(gate-mode-typo 1 "typo.yml: gate_mode 'hiden' is not one of" "${MERGE}" "${WORK}/typo.yml" "${WORK}/bad")
expect(missing-config 1 "nowhere.yml: cannot open" "${MERGE}" "${WORK}/nowhere.yml" "${WORK}/bad")
expect(bad-shard-size 1 "--out-shard-size: 'lots' is not a size" "${MERGE}" "${WORK}/moe.yml" "${WORK}/bad"
       --out-shard-size lots)
if(EXISTS "${WORK}/bad")
  list(APPEND failures "a refused merge wrote ${WORK}/bad")
endif()

if(failures)
  list(JOIN failures "\n\n" text)
  message(FATAL_ERROR "${text}")
endif()
