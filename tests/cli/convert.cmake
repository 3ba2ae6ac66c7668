cmake_minimum_required(VERSION 3.23)
# moe-convert and moe-quantize end to end: the golden tiny Mixtral as llama.cpp writes it to
# GGUF, converted back, must give moe-mixtral the golden folder's logits and
# greedy tokens byte for byte; then the errors a user meets first.
# Run: cmake -DCONVERT=<moe-convert> -DQUANTIZE=<moe-quantize> -DMIXTRAL=<moe-mixtral> -DDATA=<tests/data>
#      -DWORK=<scratch> -P convert.cmake
include(${CMAKE_CURRENT_LIST_DIR}/expect.cmake)
moe_cli_start(CONVERT QUANTIZE MIXTRAL DATA WORK)
set(gguf "${DATA}/cases/gguf/mixtral_tiny_f32.gguf")
set(golden "${DATA}/golden/models/mixtral_tiny_f32")

moe_expect(convert-f32 0 "wrote .*: mixtral, 2 layers, hidden 64, 41 tensors as f32, 4 experts top-2.*no tokenizer written: the file's tokenizer is 'none'"
       "${CONVERT}" "${gguf}" "${WORK}/f32" --dtype f32)
moe_expect(logits-converted 0 "" "${MIXTRAL}" logits --model "${WORK}/f32" --tokens 1,17,200,5 --greedy 4
       --out "${WORK}/converted.safetensors")
moe_expect(logits-golden 0 "" "${MIXTRAL}" logits --model "${golden}" --tokens 1,17,200,5 --greedy 4
       --out "${WORK}/golden.safetensors")
moe_expect(same-logits 0 "" "${CMAKE_COMMAND}" -E compare_files "${WORK}/converted.safetensors"
       "${WORK}/golden.safetensors")
moe_expect(convert-bf16 0 "41 tensors as bf16" "${CONVERT}" "${gguf}" "${WORK}/bf16")
moe_expect(info-bf16 0 "\"torch_dtype\": \"bfloat16\"" "${MIXTRAL}" info --model "${WORK}/bf16")

# A GGUF with a SentencePiece vocabulary: the folder speaks text, tokenised
# as the original tokenizer.model does ("Hello world": BOS and 12 pieces).
moe_expect(convert-with-tokenizer 0 "tokenizer.model: the file's SentencePiece vocabulary \\(400 pieces\\)"
       "${CONVERT}" "${DATA}/cases/gguf/mixtral_spm.gguf" "${WORK}/spm" --dtype f32)
if(SENTENCEPIECE)
  moe_expect(generate-text 0 "prefill: 13 tokens" "${MIXTRAL}" generate --model "${WORK}/spm" --prompt "Hello world"
         --max-new 2)
  # moe-mixtral runs the GGUF itself, its vocabulary included.
  moe_expect(generate-gguf 0 "^Hello world.*prefill: 13 tokens" "${MIXTRAL}" generate
         --model "${DATA}/cases/gguf/mixtral_spm.gguf" --prompt "Hello world" --max-new 2)
  moe_expect(tokenize-spm 0 "^SentencePiece, 13 tokens: 1,341,75,342," "${MIXTRAL}" tokenize
         --model "${DATA}/cases/gguf/spm_vocab.gguf" --prompt "Hello world")
endif()
# A folder with tokenizer.json and no tokenizer.model (what a transformers-5
# save writes): the same vocabulary as transformers saves it (byte-fallback
# BPE), the same ids as SentencePiece's.
if(PCRE2)
  file(REMOVE_RECURSE "${WORK}/spm-json")
  file(COPY "${WORK}/spm/" DESTINATION "${WORK}/spm-json")
  file(REMOVE "${WORK}/spm-json/tokenizer.model")
  file(COPY_FILE "${DATA}/cases/gguf/spm_bpe.tokenizer.json" "${WORK}/spm-json/tokenizer.json")
  file(WRITE "${WORK}/spm-json/tokenizer_config.json" [=[{"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>"}]=])
  moe_expect(tokenize-tokenizer-json 0 "^byte-fallback BPE, 13 tokens: 1,341,75,342,391,391,345,341,372,345,344,391,363\n$"
         "${MIXTRAL}" tokenize --model "${WORK}/spm-json" --prompt "Hello world")
  moe_expect(generate-tokenizer-json 0 "^Hello world.*prefill: 13 tokens" "${MIXTRAL}" generate
         --model "${WORK}/spm-json" --prompt "Hello world" --max-new 2)
endif()
# A byte-level BPE (`gpt2`) vocabulary: digits one by one (the smollm
# pre-tokenizer), and chat markers read as control tokens only with
# --special (llama.cpp's ids: bpe_vocab.expected.json).
if(PCRE2)
  moe_expect(tokenize-bpe 0 "^byte-level BPE, 16 tokens: 90,223,31,223,19,20,21,22,23,223,13,223,24,16,25,26\n$"
         "${MIXTRAL}" tokenize --model "${DATA}/cases/gguf/bpe_vocab.gguf" --prompt "x = 12345 + 6.78")
  moe_expect(tokenize-bpe-special 0 "^byte-level BPE, 8 tokens: 1,87,85,259,201,74,75,2\n$" "${MIXTRAL}" tokenize
         --model "${DATA}/cases/gguf/bpe_vocab.gguf" --prompt "<|im_start|>user\nhi<|im_end|>" --special)
  moe_expect(tokenize-bpe-plain 0 "^byte-level BPE, 26 tokens: 30,94,75," "${MIXTRAL}" tokenize
         --model "${DATA}/cases/gguf/bpe_vocab.gguf" --prompt "<|im_start|>user\nhi<|im_end|>")
endif()
moe_expect(tokenize-none 1 "tokenizer model '\\(none\\)' is not one this reads \\(llama, gpt2\\)" "${MIXTRAL}"
       tokenize --model "${gguf}" --prompt "hi")
moe_expect(info-gguf 0 "\"num_local_experts\": 4.*files: 1, weight bytes: 1019648" "${MIXTRAL}" info
       --model "${gguf}" --check-values)

# moe-quantize: the golden folder to GGUF (F32: the file the gguf package
# writes, byte for byte; Q8_0: back through moe-convert, moe-mixtral runs it).
moe_expect(quantize-f32 0 "wrote .*: f32 \\(general.file_type 0\\), 23 tensors: 23 F32" "${QUANTIZE}" "${golden}"
       "${WORK}/f32.gguf" --type f32)
moe_expect(quantize-f32-same 0 "" "${CMAKE_COMMAND}" -E compare_files "${WORK}/f32.gguf" "${gguf}")
moe_expect(quantize-q8 0 "q8_0 \\(general.file_type 7\\), 23 tensors: 7 F32, 16 Q8_0" "${QUANTIZE}" "${golden}"
       "${WORK}/q8.gguf")
moe_expect(convert-q8 0 "41 tensors as f32" "${CONVERT}" "${WORK}/q8.gguf" "${WORK}/q8" --dtype f32)
moe_expect(logits-q8 0 "" "${MIXTRAL}" logits --model "${WORK}/q8" --tokens 1,17,200,5 --greedy 4
       --out "${WORK}/q8.safetensors")
moe_expect(logits-q8-gguf 0 "greedy_ids \\[4\\]" "${MIXTRAL}" logits --model "${WORK}/q8.gguf" --tokens 1,17,200,5
       --greedy 4 --out "${WORK}/q8-direct.safetensors")
# Q4_K_M on rows of 64 values (not whole 256-value blocks): llama-quantize's
# fallbacks (Q4_K -> Q5_0, Q6_K -> Q8_0); Q2_K's fallback is not written.
moe_expect(quantize-k 0 "q4_k_m \\(general.file_type 15\\), 23 tensors: 7 F32, 13 Q5_0, 3 Q8_0" "${QUANTIZE}"
       "${golden}" "${WORK}/k.gguf" --type q4_k_m)
moe_expect(logits-k-gguf 0 "greedy_ids \\[4\\]" "${MIXTRAL}" logits --model "${WORK}/k.gguf" --tokens 1,17,200,5
       --greedy 4 --out "${WORK}/k-direct.safetensors")
moe_expect(quantize-q2k-narrow 1 "rows of 64 values cannot be Q2_K.*IQ4_NL" "${QUANTIZE}" "${golden}" "${WORK}/q2.gguf"
       --type q2_k)
moe_expect(quantize-unknown 1 "'q4_k_x' is not one this writes; expected one of f32, .*q2_k" "${QUANTIZE}" "${golden}"
       "${WORK}/x.gguf" --type q4_k_x)

moe_expect(not-gguf 1 "config.json: not a GGUF file: starts with '{" "${CONVERT}" "${golden}/config.json" "${WORK}/x")
moe_expect(missing 1 "moe-convert: .*nope.gguf" "${CONVERT}" "${WORK}/nope.gguf" "${WORK}/x")
moe_expect(bad-dtype 105 "--dtype: f8 not in" "${CONVERT}" "${gguf}" "${WORK}/x" --dtype f8)
moe_expect_report("moe-convert")
