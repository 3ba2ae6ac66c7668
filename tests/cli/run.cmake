cmake_minimum_required(VERSION 3.23)
# moe-mixtral end to end: the built-in tiny checkpoint, every golden folder,
# and every error path the program promises (missing folder, bad config,
# corrupt file, unknown token ids, a prompt longer than the context).
# Run: cmake -DMIXTRAL=<moe-mixtral> -DMODELS=<golden/models> -DWORK=<scratch> -P run.cmake
include(${CMAKE_CURRENT_LIST_DIR}/expect.cmake)
moe_cli_start(MIXTRAL MODELS WORK)
# expect(<name> <exit code> <regex the output must match> <moe-mixtral args>...)
function(expect name code regex)
  moe_expect(${name} ${code} "${regex}" "${MIXTRAL}" ${ARGN})
  set(failures "${failures}" PARENT_SCOPE)
endfunction()

# The built-in default, as the README runs it (sharded here, to cover the writer).
expect(make-tiny 0 "^wrote [^\n]*vocab[^\n]*\n$" make-tiny --out "${WORK}/tiny" --shards 2)  # one line: no library logs
expect(generate-tiny-text 0 "decode: .* tokens/s.*layer  3:" generate --model "${WORK}/tiny" --prompt "Experts" --max-new 8)
expect(generate-tiny-sampled 0 "8 new tokens" generate --model "${WORK}/tiny" --tokens 1,40,41 --max-new 8
       --temperature 0.7 --top-k 20 --top-p 0.9 --seed 5 --stop 999999)
# The routing picture: a cell per token (prompt + new tokens but the last) and layer.
expect(generate-routing-svg 0 "wrote .*routing.svg: 9 tokens x 4 layers" generate --model "${WORK}/tiny" --tokens
       1,40,41,42 --max-new 6 --stop 999999 --routing-svg "${WORK}/routing.svg")
if(EXISTS "${WORK}/routing.svg")
  file(READ "${WORK}/routing.svg" svg)
  string(REGEX MATCHALL "data-rank='0' data-expert='[0-9]+'" first_choices "${svg}")
  list(LENGTH first_choices cells)
  if(NOT cells EQUAL 36)
    list(APPEND failures "routing.svg: ${cells} first-choice cells, expected 9 tokens x 4 layers = 36")
  endif()
endif()
expect(make-tiny-f32-no-tokenizer 0 "F32" make-tiny --out "${WORK}/tiny-f32" --dtype f32 --no-tokenizer)
expect(info-check-values 0 "values: all [0-9]+ weights finite" info --model "${WORK}/tiny" --check-values)
expect(prompt-without-tokenizer 1 "has no tokenizer.model or tokenizer.json; give --tokens" generate --model "${WORK}/tiny-f32" --prompt "hi")
# Dense Mistral and Llama (one FFN per layer): written, described, generated from.
foreach(family mistral llama)
  expect(make-tiny-${family} 0 "wrote .*: ${family}, .*dense FFN" make-tiny --out "${WORK}/tiny-${family}"
         --family ${family} --no-tokenizer)
  expect(info-tiny-${family} 0 "\"model_type\": \"${family}\"" info --model "${WORK}/tiny-${family}")
  expect(generate-tiny-${family} 0 "6 new tokens.*dense model \\(${family}\\): one FFN per layer"
         generate --model "${WORK}/tiny-${family}" --tokens 1,40,41 --max-new 6 --stop 999999)
  expect(routing-svg-dense-${family} 1 "--routing-svg: a dense model routes nothing" generate --model
         "${WORK}/tiny-${family}" --tokens 1,40 --max-new 1 --routing-svg "${WORK}/dense.svg")
endforeach()

# Every golden checkpoint folder.
file(GLOB folders LIST_DIRECTORIES true "${MODELS}/*")
foreach(dir IN LISTS folders)
  get_filename_component(name "${dir}" NAME)
  expect(generate-${name} 0 "generated ids: [0-9]+(,[0-9]+)*" generate --model "${dir}" --tokens 1,2,3,4 --max-new 5)
  expect(logits-${name} 0 "logits \\[4, 257\\], greedy_ids \\[3\\]" logits --model "${dir}" --tokens 1,2,3,4
         --greedy 3 --out "${WORK}/${name}-logits.safetensors")
  expect(info-${name} 0 "weight bytes" info --model "${dir}")
endforeach()
# --pack runs the panel kernel: the same greedy tokens as on the weight views.
execute_process(COMMAND "${MIXTRAL}" generate --model "${MODELS}/mixtral_tiny_bf16" --tokens 1,2,3,4 --max-new 8
                OUTPUT_VARIABLE views_out)
string(REGEX MATCH "generated ids: [0-9,]+" views_ids "${views_out}")
expect(generate-packed 0 "${views_ids}.*packed experts: [0-9.]+ MiB" generate --model "${MODELS}/mixtral_tiny_bf16"
       --tokens 1,2,3,4 --max-new 8 --pack)
expect(reference-backend 0 "backend reference" generate --model "${MODELS}/mixtral_tiny_f32" --tokens 5,6 --max-new 2
       --backend reference)

# Chat through the model's own template (make-tiny writes Mixtral-Instruct's).
file(WRITE "${WORK}/messages.json" [=[[{"role": "user", "content": "Tell me about experts"}]]=])
expect(chat-messages 0 "\\[27 prompt tokens, 5 new \\(max-new reached\\)" chat --model "${WORK}/tiny" --messages
       "${WORK}/messages.json" --max-new 5)
# Interactive, a turn per line: the second prompt holds the first turn and its reply.
file(WRITE "${WORK}/turns.txt" "Hello there\nWhat are experts?\n/exit\nnot read\n")
execute_process(COMMAND "${MIXTRAL}" chat --model "${WORK}/tiny" --max-new 4 INPUT_FILE "${WORK}/turns.txt"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX MATCHALL "\\[[0-9]+ prompt tokens" turns "${err}")
string(REGEX REPLACE "\\[([0-9]+) prompt tokens" "\\1" turns "${turns}")
list(LENGTH turns count)
if(count EQUAL 2)
  list(GET turns 0 first)
  list(GET turns 1 second)
endif()
# "Hello there" is 26 tokens in the template; the second turn adds the reply, </s> and "[INST] What are experts? [/INST]".
if(NOT rc EQUAL 0 OR NOT count EQUAL 2 OR NOT first EQUAL 26 OR second LESS 45)
  list(APPEND failures "chat-interactive: exit ${rc}, prompt tokens per turn '${turns}' (expected 26, then 45 or more):\n${out}${err}")
endif()
file(WRITE "${WORK}/system.json" [=[[{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"}]]=])
expect(chat-template-refuses 1 "chat template refuses the messages: Conversation roles must alternate" chat --model
       "${WORK}/tiny" --messages "${WORK}/system.json")
file(WRITE "${WORK}/bad.json" "[{\"role\": ")
expect(chat-bad-json 1 "--messages .*bad.json: not JSON" chat --model "${WORK}/tiny" --messages "${WORK}/bad.json")
expect(chat-no-vocabulary 1 "chat needs the model's vocabulary" chat --model "${WORK}/tiny-f32" --messages
       "${WORK}/messages.json")
file(WRITE "${WORK}/chatml.jinja" "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}</s>{% endfor %}<s>assistant:")
expect(chat-template-file 0 "\\[[0-9]+ prompt tokens, 3 new" chat --model "${WORK}/tiny" --template
       "${WORK}/chatml.jinja" --messages "${WORK}/messages.json" --max-new 3)
file(REMOVE "${WORK}/tiny/tokenizer_config.json")
expect(chat-no-template 1 "has no chat template .*give one with --template FILE" chat --model "${WORK}/tiny"
       --messages "${WORK}/messages.json")

# Perplexity of a text, windows overlapping by half by default.
file(WRITE "${WORK}/text.txt" "A mixture of experts routes each token to a few experts. ")
file(APPEND "${WORK}/text.txt" "The router scores the experts and the top two run.\n")
expect(perplexity-tiny 0 "perplexity [0-9.]+ \\(mean NLL [0-9.]+\\) over [0-9]+ tokens: [0-9]+ windows of at most 16, stride 8"
       perplexity --model "${WORK}/tiny" --text "${WORK}/text.txt" --context 16)
expect(perplexity-stride 1 "1 <= stride <= context" perplexity --model "${WORK}/tiny" --text "${WORK}/text.txt"
       --context 8 --stride 9)
expect(perplexity-no-text 1 "--text: cannot read" perplexity --model "${WORK}/tiny" --text "${WORK}/nowhere.txt")

# Multiple-choice evaluation by log-likelihood.
file(WRITE "${WORK}/tasks.jsonl" [=[{"context": "A mixture of", "choices": [" experts", " frogs"], "gold": 0}
{"context": "The router scores ", "choices": ["the experts", "nothing at all", "x"], "gold": 2}
]=])
expect(eval-tiny 0 "accuracy [0-9.]+ \\([0-2]/2\\), acc_norm [0-9.]+ \\([0-2]/2\\).*wrote .*eval.json" eval --model
       "${WORK}/tiny" --tasks "${WORK}/tasks.jsonl" --out "${WORK}/eval.json")
file(WRITE "${WORK}/bad-tasks.jsonl" "{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 3}\n")
expect(eval-bad-gold 1 "bad-tasks.jsonl:1: expected .*gold" eval --model "${WORK}/tiny" --tasks "${WORK}/bad-tasks.jsonl")

# Errors: each must say what is wrong and where.
expect(missing-folder 1 "nowhere: not a checkpoint folder \\(does not exist\\)"
       generate --model "${WORK}/nowhere" --tokens 1)
file(MAKE_DIRECTORY "${WORK}/bad-config")
file(COPY "${MODELS}/mixtral_tiny_f32/model.safetensors" DESTINATION "${WORK}/bad-config")
file(WRITE "${WORK}/bad-config/config.json" "{\"vocab_size\": 257, \"hidden_size\": ")
expect(bad-config-json 1 "config.json: not valid JSON" generate --model "${WORK}/bad-config" --tokens 1)
file(READ "${MODELS}/mixtral_tiny_f32/config.json" config)
string(REPLACE "\"num_attention_heads\": 4" "\"num_attention_heads\": 3" config "${config}")
file(WRITE "${WORK}/bad-config/config.json" "${config}")
expect(bad-config-heads 1 "num_attention_heads 3" generate --model "${WORK}/bad-config" --tokens 1)
file(MAKE_DIRECTORY "${WORK}/corrupt")
file(COPY "${MODELS}/mixtral_tiny_f32/config.json" DESTINATION "${WORK}/corrupt")
file(WRITE "${WORK}/corrupt/model.safetensors" "")
expect(corrupt-empty-file 1 "model.safetensors: file has 0 bytes" generate --model "${WORK}/corrupt" --tokens 1)
file(WRITE "${WORK}/corrupt/model.safetensors" "this is not a safetensors file at all")
expect(corrupt-garbage 1 "model.safetensors: header length [0-9]+ exceeds" generate --model "${WORK}/corrupt" --tokens 1)
expect(unknown-token 1 "token id 257 at position 1 is outside the vocabulary \\[0, 257\\)"
       generate --model "${MODELS}/mixtral_tiny_f32" --tokens 3,257)
expect(not-a-token 1 "'x' is not a token id" generate --model "${MODELS}/mixtral_tiny_f32" --tokens 3,x)
set(long "1")
foreach(i RANGE 512)
  string(APPEND long ",1")
endforeach()
expect(prompt-too-long 1 "exceed the model's context of 512" logits --model "${MODELS}/mixtral_tiny_f32" --tokens
       "${long}" --out "${WORK}/never.safetensors")
expect(no-prompt 2 "--prompt or --tokens" generate --model "${MODELS}/mixtral_tiny_f32")

moe_expect_report(moe-mixtral)
