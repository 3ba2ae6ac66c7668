cmake_minimum_required(VERSION 3.23)
# moe-merge end to end: three tiny dense Mistral models (moe-mixtral
# make-tiny), a mergekit-moe YAML config, the merge, and moe-mixtral running
# the result; then the errors a user meets first.
# Run: cmake -DMERGE=<moe-merge> -DMIXTRAL=<moe-mixtral> -DWORK=<scratch> -P merge.cmake
include(${CMAKE_CURRENT_LIST_DIR}/expect.cmake)
moe_cli_start(MERGE MIXTRAL WORK)

foreach(seed 1 2 3)
  moe_expect(make-dense-${seed} 0 "mistral, .*dense FFN" "${MIXTRAL}" make-tiny --out "${WORK}/m${seed}" --family mistral
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
moe_expect(merge 0 "wrote .*Mixtral, 4 layers, 3 experts top-2, gates uniform_random.*in 4 shard"
       "${MERGE}" "${WORK}/moe.yml" "${WORK}/moe" --random-seed 1 --out-shard-size 1M --allow-crimes --device cpu)
moe_expect(merge-warns-power-of-two 0 "3 experts is not a power of two"
       "${MERGE}" "${WORK}/moe.yml" "${WORK}/moe" --random-seed 1 --out-shard-size 1M)
moe_expect(merged-info 0 "\"num_local_experts\": 3.*weight bytes" "${MIXTRAL}" info --model "${WORK}/moe")
moe_expect(merged-generate 0 "6 new tokens.*layer  3:" "${MIXTRAL}" generate --model "${WORK}/moe" --tokens 1,20,30
       --max-new 6 --stop 999999)

# The prompt gate modes: tiny models with a tokenizer.model (when moe-mixtral
# has SentencePiece), the fused layout, text generation from the merge.
if(SENTENCEPIECE)
  foreach(seed 1 2 3)
    moe_expect(make-dense-tok-${seed} 0 "with tokenizer.model" "${MIXTRAL}" make-tiny --out "${WORK}/t${seed}" --family
           mistral --seed ${seed})
  endforeach()
  foreach(mode hidden hidden_avg cheap_embed)
    file(WRITE "${WORK}/${mode}.yml" "base_model: ${WORK}/t1
gate_mode: ${mode}
experts:
  - source_model: ${WORK}/t1
    positive_prompts: [\"A router looks at each token\", \"the experts\"]
  - source_model: ${WORK}/t2
    positive_prompts: [\"Numbers: 0 1 2 3\"]
    negative_prompts: [\"the lazy dog\"]
  - source_model: ${WORK}/t3
    positive_prompts: [\"The quick brown fox\"]
")
    moe_expect(merge-${mode} 0 "3 experts top-2, gates ${mode}" "${MERGE}" "${WORK}/${mode}.yml" "${WORK}/moe-${mode}"
           --fused-experts)
  endforeach()
  moe_expect(merged-fused-info 0 "\"num_local_experts\": 3" "${MIXTRAL}" info --model "${WORK}/moe-hidden")
  moe_expect(merged-text 0 "4 new tokens" "${MIXTRAL}" generate --model "${WORK}/moe-hidden" --prompt "The experts"
         --max-new 4 --stop 999999)
endif()

# Errors: mergekit's messages, and what mergekit lacks.
file(READ "${WORK}/moe.yml" yml)
string(REPLACE "[\"code\", \"python\"]" "[\"chat\", \"assistant\"]" same_prompts "${yml}")
string(REPLACE "[\"story\"]" "[\"chat\", \"assistant\"]" same_prompts "${same_prompts}")
string(REPLACE "    residual_scale: 0.5\n" "" same_prompts "${same_prompts}")
file(WRITE "${WORK}/same.yml" "${same_prompts}")
moe_expect(identical-prompts 1 "Your positive and negative prompts are identical for all experts" "${MERGE}"
       "${WORK}/same.yml" "${WORK}/bad")
string(REPLACE "${WORK}/m2" "org/some-model" remote "${yml}")
file(WRITE "${WORK}/remote.yml" "${remote}")
moe_expect(remote-model 1 "'org/some-model' is not a local folder" "${MERGE}" "${WORK}/remote.yml" "${WORK}/bad")
string(REPLACE "gate_mode: uniform_random" "gate_mode: hiden" typo "${yml}")
file(WRITE "${WORK}/typo.yml" "${typo}")
moe_expect(gate-mode-typo 1 "typo.yml: gate_mode 'hiden' is not one of" "${MERGE}" "${WORK}/typo.yml" "${WORK}/bad")
moe_expect(missing-config 1 "nowhere.yml: cannot open" "${MERGE}" "${WORK}/nowhere.yml" "${WORK}/bad")
moe_expect(bad-shard-size 1 "--out-shard-size: 'lots' is not a size" "${MERGE}" "${WORK}/moe.yml" "${WORK}/bad"
       --out-shard-size lots)
if(EXISTS "${WORK}/bad")
  list(APPEND failures "a refused merge wrote ${WORK}/bad")
endif()

moe_expect_report(moe-merge)
